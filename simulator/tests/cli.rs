//! The `simulator` binary: `--help`, usage errors (exit 64, one clear message), a port in use,
//! and a run that serves the API and sends a signed webhook, then stops on SIGTERM.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_simulator");

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).env_clear().output().expect("run the simulator")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

#[test]
fn help_names_every_setting_and_its_variable() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "SIM_LISTEN_ADDR",
        "MEETING_BAAS_API_KEY",
        "SIM_WEBHOOK_URL",
        "SIM_WEBHOOK_SECRET",
        "SIM_MEETING_EVERY_SECS",
        "SIM_OUTAGE_AFTER_SECS",
        "SIM_RATE_LIMIT_SHARE",
        "SIM_DROP_WEBHOOKS_SHARE",
    ] {
        assert!(help.contains(var), "--help names {var}:\n{help}");
    }
    let sink = run(&["sink", "--help"]);
    assert!(sink.status.success());
    assert!(String::from_utf8_lossy(&sink.stdout).contains("SINK_LISTEN_ADDR"));
    let version = run(&["--version"]);
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("simulator "));
}

#[test]
fn bad_input_exits_64_with_one_clear_reason() {
    for (args, says) in [
        (vec!["--drop-webhooks-share", "1.5"], "not a share from 0 to 1"),
        (vec!["--rate-limit-share", "lots"], "not a share from 0 to 1"),
        (vec!["--outage-after-secs", "10"], "--outage-for-secs"),
        (vec!["--webhook-url", "not a url"], "is not a URL"),
        (vec!["--webhook-secret", "whsec_!!!"], "not a whsec_ secret"),
        (vec!["--no-such-flag"], "unexpected argument"),
    ] {
        let mut args = args.clone();
        let port = free_port().to_string();
        let listen = format!("127.0.0.1:{port}");
        args.extend(["--listen", listen.as_str()]);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn no_secret_is_printed() {
    // A webhook URL with credentials, a key and a secret: none of them in any output.
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let out = Command::new("timeout")
        .args(["-s", "TERM", "2", BIN, "--listen", &listen, "--meeting-every-secs", "0"])
        .args(["--webhook-url", "http://user:hunter2-pass@127.0.0.1:9/hook"])
        .env_clear()
        .env("MEETING_BAAS_API_KEY", "the-api-key-42")
        .env("SIM_WEBHOOK_SECRET", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
        .output()
        .expect("run the simulator");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("webhooks to"), "{text}");
    for secret in ["hunter2-pass", "the-api-key-42", "C2FVsBQIhrscChlQIMV"] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    let bad = run(&["--webhook-url", "http://user:hunter2-pass@[bad", "--listen", &listen]);
    assert_eq!(bad.status.code(), Some(64));
    assert!(!String::from_utf8_lossy(&bad.stderr).contains("hunter2-pass"));
}

#[test]
fn a_port_in_use_exits_64_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    for args in [vec!["--listen", addr.as_str()], vec!["sink", "--listen", addr.as_str()]] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&addr) && stderr.lines().count() == 1, "{stderr}");
    }
}

/// Started with a webhook URL on a listener of the test's: a calendar's signed
/// `calendar.connection_created` arrives, the API answers, and SIGTERM stops it with 0.
#[test]
fn it_serves_the_api_sends_signed_webhooks_and_stops_on_sigterm() {
    let hooks = TcpListener::bind("127.0.0.1:0").expect("bind");
    let hooks_url = format!("http://{}/webhooks/meeting-baas", hooks.local_addr().expect("addr"));
    let port = free_port();
    let mut child = Command::new(BIN)
        .env_clear()
        .args(["--listen", &format!("127.0.0.1:{port}"), "--v1-calendars", "0", "--v2-calendars", "1"])
        .args(["--meeting-every-secs", "0", "--webhook-url", &hooks_url])
        .env("MEETING_BAAS_API_KEY", "k")
        .env("SIM_WEBHOOK_SECRET", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // The webhook: read one request off the listener, answer 200.
    hooks.set_nonblocking(false).expect("blocking");
    let (mut stream, _) = hooks.accept().expect("a webhook comes");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&request).contains("connection_created") {
        let n = stream.read(&mut buf).expect("read the webhook");
        assert!(n > 0, "the webhook ended early");
        request.extend_from_slice(&buf[..n]);
    }
    use std::io::Write;
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
    assert!(text.contains("webhook-signature: v1,"), "signed:\n{text}");
    assert!(text.contains("webhook-id: msg_"), "{text}");
    // The API answers with the key, and not without it.
    let get = |key: Option<&str>| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let key = key.map(|k| format!("x-meeting-baas-api-key: {k}\r\n")).unwrap_or_default();
        write!(s, "GET /v2/calendars HTTP/1.1\r\nhost: x\r\n{key}connection: close\r\n\r\n").expect("write");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    };
    assert!(get(Some("k")).starts_with("HTTP/1.1 200"));
    assert!(get(None).starts_with("HTTP/1.1 401"));
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "the simulator did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
