//! The ingress against slow, many and careless clients: stalled heads and bodies, slow but
//! honest uploads, the connection limit, strangers refused before their body is read, and
//! timestamps no clock will ever show.

mod common;

use common::*;
use hookstream_tests::{eventually, RedisServer};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An ingress with `REQUEST_TIMEOUT_MS` and `MAX_CONNECTIONS` set.
async fn ingress(redis: &RedisServer, timeout_ms: u64, max_connections: usize) -> TestIngress {
    let mut vars = default_vars(&redis.url());
    vars.insert("REQUEST_TIMEOUT_MS".into(), timeout_ms.to_string());
    vars.insert("MAX_CONNECTIONS".into(), max_connections.to_string());
    start_with(vars, |_| {}).await
}

/// The head of a v1 webhook POST announcing `len` bytes of body.
fn head(len: usize, key: &str) -> String {
    format!(
        "POST /webhooks/meeting-baas HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-meeting-baas-api-key: {key}\r\ncontent-length: {len}\r\n\r\n"
    )
}

/// Reads until the server closes the connection; the test's own limit only bounds a failure.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn a_stalled_head_is_disconnected_and_writes_nothing() {
    let redis = RedisServer::start();
    let ingress = ingress(&redis, 300, 4096).await;
    let mut stream = TcpStream::connect(ingress.addr).await.unwrap();
    stream.write_all(b"POST /webhooks/meeting-baas HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    read_to_close(&mut stream).await;
    assert_eq!(dbsize(&redis), 0);
}

#[tokio::test]
async fn a_stalled_body_is_answered_408_and_writes_nothing() {
    let redis = RedisServer::start();
    let ingress = ingress(&redis, 300, 4096).await;
    let mut stream = TcpStream::connect(ingress.addr).await.unwrap();
    stream.write_all(head(100_000, API_KEY).as_bytes()).await.unwrap();
    stream.write_all(br#"{"event":"bot.completed","data":{"#).await.unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");
    assert!(answer.contains("x-request-id"), "{answer}");
    assert_eq!(dbsize(&redis), 0);
}

#[tokio::test]
async fn head_and_body_together_must_arrive_within_the_timeout() {
    let redis = RedisServer::start();
    let ingress = ingress(&redis, 600, 4096).await;
    let body = br#"{"event":"bot.completed","data":{"bot_id":"two-halves"}}"#;
    let head = head(body.len(), API_KEY);
    let (head_start, head_end) = head.as_bytes().split_at(head.len() - 2);
    let mut stream = TcpStream::connect(ingress.addr).await.unwrap();
    // Each half alone fits in 600 ms; both together do not.
    stream.write_all(head_start).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    stream.write_all(head_end).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let _ = stream.write_all(&body[10..]).await;
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(dbsize(&redis), 0);
}

#[tokio::test]
async fn a_slow_upload_that_finishes_in_time_is_accepted() {
    let redis = RedisServer::start();
    let ingress = ingress(&redis, 10_000, 4096).await;
    let body = br#"{"event":"bot.completed","data":{"bot_id":"slow-but-honest"}}"#;
    let mut stream = TcpStream::connect(ingress.addr).await.unwrap();
    stream.write_all(head(body.len(), API_KEY).as_bytes()).await.unwrap();
    for chunk in body.chunks(12) {
        stream.write_all(chunk).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await; // a slow network, not a wait for anything
    }
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.expect("answered").unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains(r#""status":"accepted""#), "{answer}");
    assert_eq!(xlen(&redis), 1);
}

#[tokio::test]
async fn a_stranger_is_refused_before_its_body_is_read() {
    let redis = RedisServer::start();
    // A minute to upload: were the body read before the key is checked, the answer would wait.
    let ingress = ingress(&redis, 60_000, 4096).await;
    let mut stream = TcpStream::connect(ingress.addr).await.unwrap();
    stream.write_all(head(1_000_000, "not-the-key").as_bytes()).await.unwrap();
    stream.write_all(b"{").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.expect("answered").unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(dbsize(&redis), 0);
}

#[tokio::test]
async fn a_normal_webhook_is_served_while_many_uploads_stall() {
    let redis = RedisServer::start();
    let ingress = ingress(&redis, 60_000, 4096).await;
    let mut stalled = Vec::new();
    for _ in 0..100 {
        let mut stream = TcpStream::connect(ingress.addr).await.unwrap();
        stream.write_all(head(100_000, API_KEY).as_bytes()).await.unwrap();
        stream.write_all(&[b' '; 1000]).await.unwrap();
        stalled.push(stream);
    }
    // The stalled uploads have a minute left; this one is answered long before.
    let answered = tokio::time::timeout(
        Duration::from_secs(10),
        post_v1(&ingress, br#"{"event":"bot.completed","data":{"bot_id":"meanwhile"}}"#),
    )
    .await
    .expect("served while others stall");
    assert_eq!(answer(answered).await.1["status"], "accepted");
    assert_eq!(xlen(&redis), 1);
    drop(stalled);
}

#[tokio::test]
async fn past_max_connections_a_client_waits_and_is_served_once_one_closes() {
    let redis = RedisServer::start();
    let ingress = ingress(&redis, 60_000, 2).await;
    // Two connections take both slots (open, idle).
    let first = TcpStream::connect(ingress.addr).await.unwrap();
    let second = TcpStream::connect(ingress.addr).await.unwrap();
    // Make sure both are being served: a request on the second is answered.
    let mut second = second;
    let body = br#"{"event":"bot.completed","data":{"bot_id":"c2"}}"#;
    second.write_all(head(body.len(), API_KEY).as_bytes()).await.unwrap();
    second.write_all(body).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), second.read(&mut buf)).await.expect("answered").unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // A third client connects (the kernel's backlog takes it) but is not served...
    let mut third = TcpStream::connect(ingress.addr).await.unwrap();
    let body = br#"{"event":"bot.completed","data":{"bot_id":"c3"}}"#;
    third.write_all(head(body.len(), API_KEY).as_bytes()).await.unwrap();
    third.write_all(body).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
    assert!(early.is_err(), "served past MAX_CONNECTIONS=2");
    assert_eq!(xlen(&redis), 1);
    // ...until one of the two closes.
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf)).await.expect("served").unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    eventually("the third webhook is stored", || async { (xlen(&redis) == 2).then_some(()) }).await;
}

#[tokio::test]
async fn extreme_signature_timestamps_are_refused_not_a_crash() {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    let body = br#"{"event":"bot.completed","data":{"bot_id":"t"}}"#;
    for timestamp in [0, -1, i64::MAX, i64::MIN] {
        let r = post_signed(&ingress, "webhook", SECRET, "msg_extreme", timestamp, body).await;
        assert_error(r, 401, "unauthorized").await;
    }
    // Still serving.
    let ok = post_signed(&ingress, "webhook", SECRET, "msg_now", now(), body).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(xlen(&redis), 1);
}
