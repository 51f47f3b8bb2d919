//! Redis failures and graceful shutdown.

mod common;

use common::*;
use hookstream_tests::{eventually, fixture, RedisServer};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn redis_down_is_503_with_retry_after_and_service_resumes_by_itself() {
    let mut redis = RedisServer::start_persistent();
    let ingress = start_ingress(&redis.url()).await;
    let (_, first) = answer(post_v1(&ingress, &fixture("meeting-baas/v1/complete.json")).await).await;
    assert_eq!(first["status"], "accepted");

    redis.kill();
    let r = post_v1(&ingress, &fixture("meeting-baas/v1/failed.json")).await;
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u32>().unwrap() > 0);
    assert_error(r, 503, "unavailable").await;
    let r = client().get(ingress.url("/readyz")).send().await.unwrap();
    assert!(r.headers().contains_key("retry-after"));
    assert_error(r, 503, "unavailable").await;
    // Liveness does not depend on Redis.
    assert_eq!(client().get(ingress.url("/healthz")).send().await.unwrap().status(), 200);
    // A client's own mistake is still its 4xx, not a 503: it must not retry what cannot succeed.
    let send = |content_type: &'static str, key: &'static str, body: &'static [u8]| {
        client()
            .post(ingress.webhook_url())
            .header("content-type", content_type)
            .header("x-meeting-baas-api-key", key)
            .body(body)
            .send()
    };
    assert_error(send("text/plain", API_KEY, b"{}").await.unwrap(), 415, "unsupported_media_type").await;
    assert_error(send("application/json", "wrong-key", br#"{"event":"x"}"#).await.unwrap(), 401, "unauthorized").await;
    assert_error(send("application/json", API_KEY, b"not json").await.unwrap(), 400, "invalid_payload").await;
    assert_error(send("application/json", API_KEY, br#"{"no_event":1}"#).await.unwrap(), 400, "invalid_payload").await;

    redis.restart();
    // The same ingress process serves again, with no restart; the script cache is empty after a
    // Redis restart, so this also exercises loading the script again.
    let again = eventually("the ingress accepts again after Redis is back", || async {
        let (status, body) = answer(post_v1(&ingress, &fixture("meeting-baas/v1/failed.json")).await).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(again["status"], "accepted");
    assert_eq!(client().get(ingress.url("/readyz")).send().await.unwrap().status(), 200);
    // The event accepted before the crash is still there (AOF), and its copy is a duplicate.
    assert_eq!(xlen(&redis), 2);
    let (_, dup) = answer(post_v1(&ingress, &fixture("meeting-baas/v1/complete.json")).await).await;
    assert_eq!((dup["status"].as_str(), &dup["id"]), (Some("duplicate"), &first["id"]));
}

#[tokio::test]
async fn redis_down_at_start_does_not_stop_the_ingress() {
    let mut redis = RedisServer::start();
    redis.kill();
    let ingress = start_ingress(&redis.url()).await;
    assert_error(post_v1(&ingress, &fixture("meeting-baas/v1/failed.json")).await, 503, "unavailable").await;
    redis.restart();
    eventually("accepted once Redis is up", || async {
        (post_v1(&ingress, &fixture("meeting-baas/v1/failed.json")).await.status() == 200).then_some(())
    })
    .await;
}

/// Starts a webhook request whose body is only half sent, and returns once the server is
/// reading that body: `Expect: 100-continue` makes the server say so ("100 Continue" is sent
/// when the handler starts reading the body).
async fn half_sent_request(ingress: &TestIngress, body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(ingress.addr).await.unwrap();
    let head = format!(
        "POST /webhooks/meeting-baas HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
         x-meeting-baas-api-key: {API_KEY}\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n =
            tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await.expect("100 Continue").unwrap();
        assert_eq!(n, 1, "connection closed before 100 Continue");
        interim.push(byte[0]);
    }
    assert!(interim.starts_with(b"HTTP/1.1 100"), "{}", String::from_utf8_lossy(&interim));
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    stream
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight() {
    let redis = RedisServer::start();
    let mut ingress = start_ingress(&redis.url()).await;
    // An idle keep-alive connection must not hold the shutdown up.
    let idle = TcpStream::connect(ingress.addr).await.unwrap();
    let body = fixture("meeting-baas/v1/transcription_complete.json");
    let mut stream = half_sent_request(&ingress, &body).await;
    let addr = ingress.addr;

    ingress.begin_shutdown();
    eventually("the listener is closed", || async move { TcpStream::connect(addr).await.is_err().then_some(()) }).await;

    stream.write_all(&body[body.len() / 2..]).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await.expect("answered").unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"accepted\""), "{text}");
    assert!(ingress.join().await, "every connection finished within the grace period");
    assert_eq!(xlen(&redis), 1);
    drop(idle);
}

#[tokio::test]
async fn shutdown_gives_up_after_the_grace_period() {
    let redis = RedisServer::start();
    let mut vars = default_vars(&redis.url());
    vars.insert("SHUTDOWN_GRACE_MS".into(), "200".into());
    let mut ingress = start_with(vars, |_| {}).await;
    let body = fixture("meeting-baas/v1/failed.json");
    let _stuck = half_sent_request(&ingress, &body).await;
    ingress.begin_shutdown();
    let finished =
        tokio::time::timeout(Duration::from_secs(10), ingress.join()).await.expect("returns after the grace");
    assert!(!finished, "a request that never completes is cut off at the grace period");
    assert_eq!(xlen(&redis), 0);
}

/// A Redis command error (here: the stream key holds a string) is a 503, and the script leaves
/// no dedup key behind: the sender's retry, once the problem is fixed, is a first copy.
#[tokio::test]
async fn a_redis_error_is_503_and_leaves_no_dedup_key() {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    let _: () = redis::cmd("SET").arg(EVENTS).arg("not a stream").query(&mut redis.con()).unwrap();
    let body = fixture("meeting-baas/v1/complete.json");
    assert_error(post_v1(&ingress, &body).await, 503, "unavailable").await;
    assert_eq!(dbsize(&redis), 1, "only the key the test set; no dedup key");

    let _: () = redis::cmd("DEL").arg(EVENTS).query(&mut redis.con()).unwrap();
    let (_, answer) = answer(post_v1(&ingress, &body).await).await;
    assert_eq!(answer["status"], "accepted");
}
