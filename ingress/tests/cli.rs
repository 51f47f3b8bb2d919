//! The `ingress` binary: `--help`, configuration errors (exit 64), `healthcheck`, SIGTERM.

use hookstream_tests::{free_port, RedisServer};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ingress");

fn run(args: &[&str], vars: &[(&str, &str)]) -> Output {
    hookstream_tests::run_bin(BIN, args, vars)
}

#[test]
fn help_lists_every_variable_with_its_default() {
    hookstream_tests::assert_help_lists(BIN, ingress::config::all_vars().into_iter().map(|v| (v.name, v.default)));
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

    let mut child = hookstream_tests::spawn_bin(BIN, &vars);
    wait_for("healthcheck passes", || run(&["healthcheck"], &vars).status.success().then_some(()));
    // A wildcard listen address is probed on loopback.
    let wildcard_addr = format!("0.0.0.0:{port}");
    let wildcard = [("MEETING_BAAS_API_KEY", "k"), ("LISTEN_ADDR", wildcard_addr.as_str())];
    assert!(run(&["healthcheck"], &wildcard).status.success());

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let status = wait_for("ingress exits", || child.try_wait().expect("wait"));
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit");
}
