//! The ingress's HTTP contract: routes, validation order (SPEC §3.4), what is stored.

mod common;

use common::*;
use hookstream_tests::{fixture, RedisServer};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405_with_allow() {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    let c = client();

    let body = assert_error(c.get(ingress.url("/nope")).send().await.unwrap(), 404, "not_found").await;
    assert!(body["message"].as_str().unwrap().contains("/nope"));

    let r = c.get(ingress.webhook_url()).send().await.unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    assert_error(r, 405, "method_not_allowed").await;

    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = c.post(ingress.url(path)).send().await.unwrap();
        assert_eq!(r.headers()["allow"], "GET, HEAD", "{path}");
        assert_error(r, 405, "method_not_allowed").await;
    }
    assert_eq!(dbsize(&redis), 0);
}

#[tokio::test]
async fn content_type_must_be_json() {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    let body = fixture("meeting-baas/v1/failed.json");
    for content_type in [None, Some("text/plain"), Some("application/jsonp"), Some("application/x-www-form-urlencoded")]
    {
        let mut req = client().post(ingress.webhook_url()).header("x-meeting-baas-api-key", API_KEY).body(body.clone());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        assert_error(req.send().await.unwrap(), 415, "unsupported_media_type").await;
    }
    for content_type in ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"] {
        let r = client()
            .post(ingress.webhook_url())
            .header("x-meeting-baas-api-key", API_KEY)
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{content_type}");
    }
    assert_eq!(xlen(&redis), 1);
}

#[tokio::test]
async fn oversized_bodies_get_413_and_nothing_is_written() {
    let redis = RedisServer::start();
    let mut vars = default_vars(&redis.url());
    vars.insert("MAX_BODY_BYTES".into(), "64".into());
    let ingress = start_with(vars, |_| {}).await;
    let big = format!(r#"{{"event":"complete","data":{{"bot_id":"{}"}}}}"#, "x".repeat(100));
    assert_error(post_v1(&ingress, big.as_bytes()).await, 413, "payload_too_large").await;

    // Exactly at the limit is fine.
    let at_limit = format!(r#"{{"event":"e","pad":"{}"}}"#, "y".repeat(64 - 22));
    assert_eq!(at_limit.len(), 64);
    assert_eq!(post_v1(&ingress, at_limit.as_bytes()).await.status(), 200);
    assert_eq!(xlen(&redis), 1);
}

/// A chunked body with no length that grows past the limit is refused as soon as the limit is
/// crossed: the request never ends here, yet the answer comes.
#[tokio::test]
async fn chunked_body_is_cut_at_the_limit_without_reading_the_rest() {
    let redis = RedisServer::start();
    let mut vars = default_vars(&redis.url());
    vars.insert("MAX_BODY_BYTES".into(), "1024".into());
    let ingress = start_with(vars, |_| {}).await;
    let mut stream = TcpStream::connect(ingress.addr).await.unwrap();
    let head = format!(
        "POST /webhooks/meeting-baas HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
         x-meeting-baas-api-key: {API_KEY}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = "a".repeat(2000);
    stream.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes()).await.unwrap();
    // No terminating chunk: a server that waits for the whole body would never answer.
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.expect("answered").unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
    assert_eq!(dbsize(&redis), 0);
}

#[tokio::test]
async fn bodies_that_are_not_an_event_object_get_400() {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    for body in [
        &b""[..],
        b"not json",
        b"{\"event\": ",
        b"[{\"event\":\"complete\"}]",
        b"\"complete\"",
        b"{}",
        b"{\"event\": 42}",
        b"{\"event\": null}",
        b"{\"event\": \"x\"} trailing",
        b"\xff\xfe",
        // Bytes that are not UTF-8 in a field the ingress does not read (JSON is UTF-8): kept,
        // they would not survive a park byte for byte.
        b"{\"event\":\"bot.completed\",\"note\":\"caf\xe9\"}",
        b"{\"event\":\"bot.completed\",\"data\":{\"x\":\"\xc3\"}}",
    ] {
        let r = post_v1(&ingress, body).await;
        assert_error(r, 400, "invalid_payload").await;
    }
    assert_eq!(dbsize(&redis), 0, "a rejected request writes nothing");
}

#[tokio::test]
async fn checks_run_in_the_documented_order() {
    let redis = RedisServer::start();
    let mut vars = default_vars(&redis.url());
    vars.insert("MAX_BODY_BYTES".into(), "32".into());
    let ingress = start_with(vars, |_| {}).await;
    let c = client();
    let big_invalid = "z".repeat(100);
    // 415 before 413 before 401 before 400.
    let r = c
        .post(ingress.webhook_url())
        .header("content-type", "text/plain")
        .body(big_invalid.clone())
        .send()
        .await
        .unwrap();
    assert_error(r, 415, "unsupported_media_type").await;
    let r = c
        .post(ingress.webhook_url())
        .header("content-type", "application/json")
        .body(big_invalid)
        .send()
        .await
        .unwrap();
    assert_error(r, 413, "payload_too_large").await;
    let r = c.post(ingress.webhook_url()).header("content-type", "application/json").body("nope").send().await.unwrap();
    assert_error(r, 401, "unauthorized").await;
    assert_error(post_v1(&ingress, b"nope").await, 400, "invalid_payload").await;
    assert_eq!(dbsize(&redis), 0);
}

#[tokio::test]
async fn unknown_events_are_stored_with_every_field_and_the_exact_body() {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    // Odd spacing, escapes, unicode, a number format serde would rewrite: stored byte for byte.
    let body = "{ \"event\" : \"something.new\",\n\t\"data\": {\"n\": 1.0e3, \"s\": \"\\u00e9t\u{e9} \\\"q\\\"\"} }  ";
    let r = client()
        .post(ingress.webhook_url())
        .header("content-type", "application/json")
        .header("x-meeting-baas-api-key", API_KEY)
        .header("x-request-id", "req-abc-123")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-abc-123");
    let (status, answer) = answer(r).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));

    let stored = entries(&redis);
    assert_eq!(stored.len(), 1);
    let (id, fields) = &stored[0];
    assert_eq!(answer["id"].as_str(), Some(id.as_str()));
    assert_eq!(fields["payload"], body.as_bytes(), "payload is byte-identical");
    assert_eq!(fields["event"], b"something.new");
    assert_eq!(fields["source"], b"meeting-baas");
    assert_eq!(fields["request_id"], b"req-abc-123");
    assert_eq!(String::from_utf8_lossy(&fields["dedup_id"]), ingress::identity::body_identity(body.as_bytes()));
    let received_at = String::from_utf8(fields["received_at"].clone()).unwrap();
    let parsed = chrono_like(&received_at);
    assert!(parsed, "received_at {received_at:?} is RFC 3339 UTC with milliseconds");
    assert_eq!(fields.len(), 6, "{:?}", fields.keys());
}

/// `2026-05-19T13:58:02.417Z`.
fn chrono_like(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && b[23] == b'Z'
        && s.chars().filter(|c| c.is_ascii_digit()).count() == 17
}

#[tokio::test]
async fn request_ids_are_generated_when_missing_or_unusable() {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    let a = client().get(ingress.url("/healthz")).send().await.unwrap();
    let b = client().get(ingress.url("/healthz")).send().await.unwrap();
    let (a, b) = (a.headers()["x-request-id"].clone(), b.headers()["x-request-id"].clone());
    assert!(!a.is_empty() && a != b);
    let long = "x".repeat(500);
    let r = client().get(ingress.url("/healthz")).header("x-request-id", &long).send().await.unwrap();
    assert_ne!(r.headers()["x-request-id"], long.as_str());

    let r = post_v1(&ingress, &fixture("meeting-baas/v1/failed.json")).await;
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(r.status(), 200);
    assert_eq!(entries(&redis)[0].1["request_id"], generated.as_bytes());
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    let mut stream = TcpStream::connect(ingress.addr).await.unwrap();
    let mut seen = String::new();
    for i in 0..3 {
        let body = format!(r#"{{"event":"keepalive","n":{i}}}"#);
        let req = format!(
            "POST /webhooks/meeting-baas HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
             x-meeting-baas-api-key: {API_KEY}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 2048];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.expect("answer").unwrap();
        assert!(n > 0, "connection closed after request {i}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(seen.matches("HTTP/1.1 200").count(), 3, "{seen}");
    assert_eq!(xlen(&redis), 3);
}
