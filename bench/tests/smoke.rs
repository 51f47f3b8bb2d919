//! CI's only benchmark step: a 2-second smoke run of `loadgen` against an in-process ingress.
//! It checks that the load generator starts, sends, and reports; it asserts no timing.

use hookstream_tests::RedisServer;
use ingress::{Ingress, IngressConfig};
use shared::config::Reader;
use std::collections::HashMap;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_smoke_run() {
    let redis = RedisServer::start();
    let vars: HashMap<String, String> = [
        ("REDIS_URL", redis.url()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_string()),
        ("MEETING_BAAS_API_KEY", "bench-key".to_string()),
        ("WEBHOOK_SECRETS", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let ingress = Ingress::build(IngressConfig::read(&Reader::new(&vars)).unwrap()).await.unwrap();
    let addr = ingress.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ingress.run_until(async move {
        let _ = rx.await;
    }));

    let out = tokio::task::spawn_blocking(move || {
        hookstream_tests::run_command(
            Command::new(env!("CARGO_BIN_EXE_loadgen"))
                .args(["--url", &format!("http://{addr}"), "--duration", "2", "-n", "1000000", "-c", "4"])
                .args(["--auth", "mixed", "--duplicates", "0.2", "--json"]),
        )
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["requests"].as_u64().unwrap() > 0, "{report}");
    assert!(report["accepted"].as_u64().unwrap() > 0, "{report}");
    assert!(report["answers"]["duplicate"].as_u64().unwrap_or(0) > 0, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["status"]["200"], report["requests"], "{report}");
    assert!(report["latency_ms"]["p99"].as_f64().is_some(), "{report}");

    let _ = tx.send(());
    server.await.unwrap();
}

/// `--null-server` (the HTTP floor in `scripts/bench`) answers every request like the ingress.
#[test]
fn loadgen_null_server_answers_every_request() {
    let addr = format!("127.0.0.1:{}", hookstream_tests::free_port());
    let mut server =
        hookstream_tests::spawn_command(Command::new(env!("CARGO_BIN_EXE_loadgen")).args(["--null-server", &addr]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "the null server did not listen on {addr}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = hookstream_tests::run_command(Command::new(env!("CARGO_BIN_EXE_loadgen")).args([
        "--url",
        &format!("http://{addr}"),
        "-n",
        "200",
        "-c",
        "4",
        "--json",
    ]));
    server.kill();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["answers"]["accepted"], 200, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
}
