//! Retries, the dead stream, timeouts and malformed entries.

mod common;

use common::*;
use hookstream_tests::fake_api::{FakeApi, Reply};
use hookstream_tests::{fixture, RedisServer};
use std::time::Duration;

fn forward_vars(redis: &RedisServer, target: &FakeApi) -> std::collections::HashMap<String, String> {
    let mut vars = processor_vars(&redis.url(), "http://127.0.0.1:9");
    vars.insert("FORWARD_URL".into(), format!("{}/hook", target.url()));
    vars
}

#[tokio::test]
async fn transient_errors_are_retried_then_acked() {
    let redis = RedisServer::start();
    let target = FakeApi::start().await;
    target.sequence(
        "POST",
        "/hook",
        vec![Reply::status(503), Reply::status(502), Reply::status(429), Reply::status(200)],
    );
    let processor = start_processor(forward_vars(&redis, &target)).await;
    add_fixture(&redis, "meeting-baas/v2/bot_completed.json");
    all_acked(&redis).await;
    processor.stop().await;
    let calls = target.calls();
    assert_eq!(calls.len(), 4);
    assert_eq!(xlen_dead(&redis), 0);
    // The receiver can drop repeats: every retry carries the same id, the dedup identity.
    let ids: Vec<Option<&str>> = calls.iter().map(|c| c.header("x-hookstream-id")).collect();
    assert_eq!(ids, vec![Some("meeting-baas/v2/bot_completed.json"); 4]);
}

#[tokio::test]
async fn network_errors_are_transient() {
    let redis = RedisServer::start();
    // A target that drops the first two connections without a word, then answers 200.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                drop(socket); // closed before any answer: a network error for the client
                continue;
            }
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            });
        }
    });
    let mut vars = processor_vars(&redis.url(), "http://127.0.0.1:9");
    vars.insert("FORWARD_URL".into(), format!("http://{addr}/hook"));
    let processor = start_processor(vars).await;
    add_fixture(&redis, "meeting-baas/v2/bot_completed.json");
    all_acked(&redis).await;
    processor.stop().await;
    server.abort();
    assert_eq!(xlen_dead(&redis), 0, "retried, not dead-lettered");
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) >= 3, "two failed connections, then success");
}

#[tokio::test]
async fn a_permanent_error_dead_letters_with_every_field() {
    let redis = RedisServer::start();
    let target = FakeApi::start().await;
    target.always("POST", "/hook", Reply::json(422, br#"{"error":"unprocessable"}"#.to_vec()));
    let processor = start_processor(forward_vars(&redis, &target)).await;
    let id = add_fixture(&redis, "meeting-baas/v2/bot_failed.json");
    let dead = dead_after(&redis, 1).await;
    all_acked(&redis).await;
    processor.stop().await;
    assert_eq!(target.calls().len(), 1, "a permanent error is not retried");
    let (_, f) = &dead[0];
    assert_eq!(f["original_id"], id);
    assert!(f["error"].contains("422"), "{}", f["error"]);
    assert_eq!(f["attempts"], "1");
    assert_eq!(f["deliveries"], "1");
    assert!(f["consumer"].starts_with("test-consumer-"));
    assert!(chrono_ok(&f["failed_at"]), "{}", f["failed_at"]);
    // The original fields, unchanged.
    assert_eq!(f["event"], "bot.failed");
    assert_eq!(f["source"], "meeting-baas");
    assert_eq!(f["dedup_id"], "meeting-baas/v2/bot_failed.json");
    assert_eq!(f["payload"].as_bytes(), fixture("meeting-baas/v2/bot_failed.json"));
    assert_eq!(f["request_id"], "test-request");
    assert!(f.contains_key("received_at"));
}

fn chrono_ok(s: &str) -> bool {
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T'
}

#[tokio::test]
async fn retries_exhausted_dead_letter() {
    let redis = RedisServer::start();
    let target = FakeApi::start().await;
    target.always("POST", "/hook", Reply::status(500));
    let mut vars = forward_vars(&redis, &target);
    vars.insert("RETRY_MAX_ELAPSED_MS".into(), "1000".into());
    // No parking and no breaker: the in-place budget is the whole story (outages.rs has the rest).
    vars.insert("RETRY_HORIZON_SECS".into(), "0".into());
    vars.insert("BREAKER_FAILURES".into(), "0".into());
    let processor = start_processor(vars).await;
    add_fixture(&redis, "meeting-baas/v2/bot_completed.json");
    let dead = dead_after(&redis, 1).await;
    processor.stop().await;
    let f = &dead[0].1;
    assert!(f["error"].contains("retries exhausted"), "{}", f["error"]);
    assert!(f["error"].contains("500"), "{}", f["error"]);
    let attempts: usize = f["attempts"].parse().unwrap();
    assert!(attempts > 1);
    assert_eq!(attempts, target.calls().len());
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let redis = RedisServer::start();
    let target = FakeApi::start().await;
    let limited = Reply::json(429, fixture("meeting-baas/api/v2_rate_limited.json")).header("retry-after", "1");
    target.sequence("POST", "/hook", vec![limited, Reply::status(200)]);
    let mut vars = forward_vars(&redis, &target);
    // A Retry-After within RETRY_MAX_INTERVAL_MS is waited for in place (a longer one parks).
    vars.insert("RETRY_MAX_INTERVAL_MS".into(), "2000".into());
    let processor = start_processor(vars).await;
    add_fixture(&redis, "meeting-baas/v2/bot_completed.json");
    all_acked(&redis).await;
    processor.stop().await;
    let calls = target.calls();
    assert_eq!(calls.len(), 2);
    let waited = calls[1].at - calls[0].at;
    assert!(waited >= Duration::from_millis(950), "the retry came after {waited:?}, before Retry-After: 1");
}

#[tokio::test]
async fn a_slow_attempt_times_out_and_is_retried() {
    let redis = RedisServer::start();
    let target = FakeApi::start().await;
    target.sequence("POST", "/hook", vec![Reply::status(200).delayed(Duration::from_secs(5)), Reply::status(200)]);
    let mut vars = forward_vars(&redis, &target);
    vars.insert("HANDLER_TIMEOUT_MS".into(), "200".into());
    let processor = start_processor(vars).await;
    add_fixture(&redis, "meeting-baas/v2/bot_completed.json");
    all_acked(&redis).await;
    processor.stop().await;
    assert_eq!(target.calls().len(), 2);
    assert_eq!(xlen_dead(&redis), 0);
}

#[tokio::test]
async fn malformed_entries_and_payloads_are_dead_lettered() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let processor = start_processor(processor_vars(&redis.url(), &api.url())).await;
    // No payload field (not written by the ingress, e.g. by hand).
    let _: String =
        redis::cmd("XADD").arg(EVENTS).arg("*").arg("event").arg("complete").query(&mut redis.con()).unwrap();
    // No event field.
    let _: String = redis::cmd("XADD").arg(EVENTS).arg("*").arg("payload").arg("{}").query(&mut redis.con()).unwrap();
    // A payload its handler cannot read.
    add_event(&redis, "calendar.sync_events", b"not json at all", "bad-payload");
    add_event(&redis, "calendar.event_created", br#"{"event":"calendar.event_created","data":{}}"#, "no-calendar");
    let dead = dead_after(&redis, 4).await;
    all_acked(&redis).await;
    processor.stop().await;
    let errors: Vec<&str> = dead.iter().map(|(_, f)| f["error"].as_str()).collect();
    assert!(errors[0].contains("payload"), "{errors:?}");
    assert!(errors[1].contains("event"), "{errors:?}");
    assert!(errors[2].contains("malformed calendar.sync_events payload"), "{errors:?}");
    assert!(errors[3].contains("calendar_id"), "{errors:?}");
    assert!(dead.iter().all(|(_, f)| f["attempts"] == "0" || f["attempts"] == "1"));
    assert!(api.calls().is_empty());
}
