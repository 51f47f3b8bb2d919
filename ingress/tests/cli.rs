//! The `ingress` binary: `--help`, configuration errors (exit 64), `healthcheck`, SIGTERM.

use hookstream_tests::{free_port, RedisServer};
use std::process::Output;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ingress");

fn run(args: &[&str], vars: &[(&str, &str)]) -> Output {
    hookstream_tests::run_bin(BIN, args, vars)
}

#[test]
fn help_lists_every_variable_with_its_default() {
    hookstream_tests::assert_help_lists_spec(BIN, "ingress");
}

#[test]
fn refuses_to_start_without_credentials() {
    let out = run(&[], &[]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    assert!(stderr.contains("ALLOW_UNSIGNED") && stderr.contains("MEETING_BAAS_API_KEY"), "{stderr}");
}

#[test]
fn invalid_values_exit_64_naming_the_variable() {
    for (var, value) in [
        ("MAX_BODY_BYTES", "lots"),
        ("DEDUP_TTL_SECS", "0"),
        ("LISTEN_ADDR", "nowhere"),
        ("REDIS_URL", "postgres://x"),
        ("LOG_FORMAT", "yaml"),
        ("WEBHOOK_SECRETS", "whsec_%%%"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
    ] {
        let out = run(&[], &[("MEETING_BAAS_API_KEY", "k"), (var, value)]);
        assert_eq!(out.status.code(), Some(64), "{var}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var), "{var}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let out = run(&["--no-such-flag"], &[]);
    assert_eq!(out.status.code(), Some(64));
}

fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn healthcheck_and_sigterm() {
    let redis = RedisServer::start();
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let url = redis.url();
    let vars = [("MEETING_BAAS_API_KEY", "k"), ("LISTEN_ADDR", listen.as_str()), ("REDIS_URL", url.as_str())];

    // Nothing listens yet: unhealthy.
    assert_eq!(run(&["healthcheck"], &vars).status.code(), Some(1));

    let child = hookstream_tests::spawn_bin(BIN, &vars);
    wait_for("healthcheck passes", || run(&["healthcheck"], &vars).status.success().then_some(()));
    // A wildcard listen address is probed on loopback.
    let wildcard_addr = format!("0.0.0.0:{port}");
    let wildcard = [("MEETING_BAAS_API_KEY", "k"), ("LISTEN_ADDR", wildcard_addr.as_str())];
    assert!(run(&["healthcheck"], &wildcard).status.success());

    let mut child = child;
    child.signal("TERM");
    let status = child.wait_for_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit");
}

#[test]
fn sigint_is_a_clean_exit_too() {
    let redis = RedisServer::start();
    let listen = format!("127.0.0.1:{}", free_port());
    let url = redis.url();
    let vars = [("MEETING_BAAS_API_KEY", "k"), ("LISTEN_ADDR", listen.as_str()), ("REDIS_URL", url.as_str())];
    let mut child = hookstream_tests::spawn_bin(BIN, &vars);
    wait_for("healthcheck passes", || run(&["healthcheck"], &vars).status.success().then_some(()));
    child.signal("INT");
    assert_eq!(child.wait_for_exit(Duration::from_secs(15)).code(), Some(0), "SIGINT (Ctrl-C) is a clean exit");
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let redis = RedisServer::start();
    let listen = format!("127.0.0.1:{}", free_port());
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ingress.log");
    let vars = [
        ("ALLOW_UNSIGNED", "true"),
        ("LISTEN_ADDR", listen.as_str()),
        ("REDIS_URL", url.as_str()),
        ("LOG_FORMAT", "json"),
    ];
    let mut child = hookstream_tests::spawn_bin_with(BIN, &vars, std::fs::File::create(&log).unwrap());
    wait_for("healthcheck passes", || run(&["healthcheck"], &vars).status.success().then_some(()));
    child.signal("TERM");
    assert_eq!(child.wait_for_exit(Duration::from_secs(15)).code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    // ALLOW_UNSIGNED warns at start-up; every line is an object with a level and a message.
    assert!(lines.len() >= 2, "{text}");
    assert!(lines.iter().all(|l| l["level"].is_string() && l["message"].is_string()), "{text}");
    assert!(
        lines.iter().any(|l| l["level"] == "WARN" && l["message"].as_str().unwrap().contains("ALLOW_UNSIGNED")),
        "{text}"
    );
}

/// A password that must never be printed.
const PASSWORD: &str = "pa55-w0rd-in-the-url";

#[test]
fn no_output_ever_prints_the_redis_password() {
    // Settings the ingress refuses at start-up (exit 64, one line naming the variable): none
    // prints the password, and a line about REDIS_URL names it without.
    let tls_url = format!("rediss://default:{PASSWORD}@127.0.0.1:6380");
    let plain_url = format!("redis://default:{PASSWORD}@127.0.0.1:6380");
    let bad_url = format!("redis://default:{PASSWORD}@[::1");
    for (url, var, value, names) in [
        (tls_url.as_str(), "REDIS_TLS_CA_FILE", "/no/such/ca.pem", "REDIS_TLS_CA_FILE"),
        (tls_url.as_str(), "REDIS_TLS_CA_FILE", "/etc/hostname", "REDIS_TLS_CA_FILE"),
        (tls_url.as_str(), "REDIS_TLS_CERT_FILE", "/etc/hostname", "REDIS_TLS_KEY_FILE"),
        (plain_url.as_str(), "REDIS_TLS_CA_FILE", "/etc/hostname", "default:***@127.0.0.1:6380"),
        (bad_url.as_str(), "LOG_FORMAT", "text", "REDIS_URL"),
    ] {
        let out = run(&[], &[("REDIS_URL", url), ("ALLOW_UNSIGNED", "true"), (var, value)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{var}={value}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(names), "{var}={value}: {stderr}");
        assert!(!stderr.contains(PASSWORD) && !String::from_utf8_lossy(&out.stdout).contains(PASSWORD), "{stderr}");
    }

    // A wrong password for an ACL user: the ingress runs and answers 503, and its log says which
    // Redis refused — without the password.
    let redis = RedisServer::start_args(&["--user", "hookstream", "on", ">the-right-one", "~*", "&*", "+@all"]);
    let url = format!("redis://hookstream:{PASSWORD}@127.0.0.1:{}", redis.port());
    let listen = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ingress.log");
    let vars = [
        ("ALLOW_UNSIGNED", "true"),
        ("LISTEN_ADDR", listen.as_str()),
        ("REDIS_URL", url.as_str()),
        ("LOG_FORMAT", "json"),
    ];
    let mut child = hookstream_tests::spawn_bin_with(BIN, &vars, std::fs::File::create(&log).unwrap());
    wait_for("healthcheck passes", || run(&["healthcheck"], &vars).status.success().then_some(()));
    let webhook = format!("http://{listen}/webhooks/meeting-baas");
    let status = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "content-type: application/json"])
        .args(["-d", r#"{"event":"bot.completed"}"#, &webhook])
        .output()
        .expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&status.stdout), "503", "a Redis that refuses the password is unavailable");
    let help = run(&["--help"], &vars);
    child.signal("TERM");
    assert_eq!(child.wait_for_exit(Duration::from_secs(15)).code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    for output in [text.as_str(), &String::from_utf8_lossy(&help.stdout), &String::from_utf8_lossy(&help.stderr)] {
        assert!(!output.contains(PASSWORD), "the password was printed:\n{output}");
    }
    let shown = format!("hookstream:***@127.0.0.1:{}", redis.port());
    assert!(text.contains(&shown), "the log names the Redis that refused:\n{text}");
}

/// POSTs a v1 webhook (API key `k`) over a plain TCP connection; the status code.
fn post_webhook(listen: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(listen).expect("connect");
    let request = format!(
        "POST /webhooks/meeting-baas HTTP/1.1\r\nhost: {listen}\r\ncontent-type: application/json\r\n\
         x-meeting-baas-api-key: k\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_otlp_endpoint_spans_are_exported_and_a_collector_that_hangs_never_holds_up_intake_or_exit() {
    use hookstream_tests::collector;
    let gate = hookstream_tests::fake_api::Gate::new();
    let (working, hanging) = (collector::start().await, collector::start_hanging(&gate).await);
    for (collector, delay) in [(&working, "600000"), (&hanging, "10")] {
        let redis = RedisServer::start();
        let listen = format!("127.0.0.1:{}", free_port());
        let (url, endpoint) = (redis.url(), collector.url());
        let vars = [
            ("MEETING_BAAS_API_KEY", "k"),
            ("LISTEN_ADDR", listen.as_str()),
            ("REDIS_URL", url.as_str()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            // Working collector: only the exit's flush exports. Hanging: exports start at once.
            ("OTEL_BSP_SCHEDULE_DELAY", delay),
        ];
        let mut child = hookstream_tests::spawn_bin(BIN, &vars);
        hookstream_tests::eventually("the ingress listening", || async {
            std::net::TcpStream::connect(listen.as_str()).is_ok().then_some(())
        })
        .await;
        let status = tokio::task::spawn_blocking({
            let listen = listen.clone();
            move || post_webhook(&listen, r#"{"event":"failed","data":{"bot_id":"b1"}}"#)
        })
        .await
        .unwrap();
        assert_eq!(status, 200);
        if std::ptr::eq(collector, &hanging) {
            hookstream_tests::eventually("an export held", || async { (hanging.in_flight() >= 1).then_some(()) }).await;
            let status = tokio::task::spawn_blocking({
                let listen = listen.clone();
                move || post_webhook(&listen, r#"{"event":"failed","data":{"bot_id":"b2"}}"#)
            })
            .await
            .unwrap();
            assert_eq!(status, 200, "intake goes on while an export hangs");
        }
        child.signal("TERM");
        assert_eq!(child.exited(Duration::from_secs(30)).await.code(), Some(0), "a clean exit, flush or no flush");
        if std::ptr::eq(collector, &working) {
            let spans = collector::spans(&working);
            let server = spans.iter().find(|s| s.kind == "SERVER").unwrap_or_else(|| panic!("{spans:#?}"));
            let producer = spans.iter().find(|s| s.kind == "PRODUCER").unwrap_or_else(|| panic!("{spans:#?}"));
            assert_eq!(server.service, "hookstream-ingress", "OTEL_SERVICE_NAME's default");
            assert_eq!(producer.parent_span_id, server.span_id);
            let entries: redis::streams::StreamRangeReply =
                redis::cmd("XRANGE").arg("{hookstream}:events").arg("-").arg("+").query(&mut redis.con()).unwrap();
            let stored: String = entries.ids[0].get("traceparent").expect("the entry carries its trace");
            assert_eq!(stored, format!("00-{}-{}-01", producer.trace_id, producer.span_id));
        }
    }
    gate.open();
}
