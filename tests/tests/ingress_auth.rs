//! Authenticity over HTTP (SPEC §3.2): each verifier valid, invalid and missing; rotation;
//! stale timestamps; no fallback from a bad signature to another credential.

mod common;

use common::*;
use hookstream_tests::{fixture, RedisServer};

fn v2_body() -> Vec<u8> {
    fixture("meeting-baas/v2/bot_status_change.json")
}

/// POSTs `body` as JSON to the webhook route with `headers`.
async fn post_with(ingress: &TestIngress, headers: &[(&str, &str)], body: Vec<u8>) -> reqwest::Response {
    let mut request = client().post(ingress.webhook_url()).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body).send().await.unwrap()
}

#[tokio::test]
async fn standard_webhooks_signatures_with_svix_and_webhook_headers() {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    let body = v2_body();
    for (i, prefix) in ["svix", "webhook"].into_iter().enumerate() {
        let id = format!("msg_valid_{i}");
        let (status, answer) = answer(post_signed(&ingress, prefix, SECRET, &id, now(), &body).await).await;
        assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{prefix}: {answer}");
    }
    assert_eq!(xlen(&redis), 2);
}

#[tokio::test]
async fn a_rotated_out_secret_still_verifies_while_configured() {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    let r = post_signed(&ingress, "svix", OLD_SECRET, "msg_old_secret", now(), &v2_body()).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn bad_signatures_are_401_and_write_nothing() {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    let body = v2_body();
    let unknown = "whsec_dW5rbm93bnVua25vd251bmtub3du";
    assert_error(post_signed(&ingress, "svix", unknown, "m1", now(), &body).await, 401, "unauthorized").await;
    // Stale both ways.
    // Well past the tolerance, so the test and the server reading the clock a second apart
    // cannot matter (the exact boundary is unit-tested with an injected clock).
    for skew in [-310, 310, -3600] {
        let r = post_signed(&ingress, "webhook", SECRET, "m2", now() + skew, &body).await;
        let answer = assert_error(r, 401, "unauthorized").await;
        assert!(answer["message"].as_str().unwrap().contains("300"), "{answer}");
    }
    // Signed for another body.
    let signature = ingress::auth::sign(SECRET, "m3", now(), b"{}").unwrap();
    let r = post_with(
        &ingress,
        &[("svix-id", "m3"), ("svix-timestamp", &now().to_string()), ("svix-signature", &signature)],
        body.clone(),
    )
    .await;
    assert_error(r, 401, "unauthorized").await;
    assert_eq!(dbsize(&redis), 0);
}

#[tokio::test]
async fn a_wrong_signature_is_refused_even_with_a_valid_api_key() {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    for (header, value) in [("x-meeting-baas-api-key", API_KEY), ("x-mb-secret", CALLBACK_SECRET)] {
        let r = post_with(
            &ingress,
            &[
                (header, value),
                ("svix-id", "msg_forged"),
                ("svix-timestamp", &now().to_string()),
                ("svix-signature", "v1,Zm9yZ2VkIHNpZ25hdHVyZSBmb3JnZWQgc2lnbmF0dXJl"),
            ],
            v2_body(),
        )
        .await;
        assert_error(r, 401, "unauthorized").await;
        // Only part of the signature headers: also no fallback.
        let r = post_with(&ingress, &[(header, value), ("webhook-id", "msg_partial")], v2_body()).await;
        assert_error(r, 401, "unauthorized").await;
    }
    assert_eq!(dbsize(&redis), 0);
}

#[tokio::test]
async fn api_key_and_callback_secret() {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    let body = fixture("meeting-baas/v1/complete.json");
    let send = |header: &'static str, value: &'static str, body: Vec<u8>| {
        client()
            .post(ingress.webhook_url())
            .header("content-type", "application/json")
            .header(header, value)
            .body(body)
            .send()
    };
    assert_error(send("x-meeting-baas-api-key", "wrong", body.clone()).await.unwrap(), 401, "unauthorized").await;
    assert_error(send("x-meeting-baas-api-key", "test-api-ke", body.clone()).await.unwrap(), 401, "unauthorized").await;
    assert_error(send("x-mb-secret", "wrong", body.clone()).await.unwrap(), 401, "unauthorized").await;
    // The API key is not a callback secret, nor the other way round.
    assert_error(send("x-mb-secret", API_KEY, body.clone()).await.unwrap(), 401, "unauthorized").await;
    assert_error(send("x-meeting-baas-api-key", CALLBACK_SECRET, body.clone()).await.unwrap(), 401, "unauthorized")
        .await;
    // No credentials at all.
    let r = post_with(&ingress, &[], body.clone()).await;
    assert_error(r, 401, "unauthorized").await;
    assert_eq!(dbsize(&redis), 0);

    assert_eq!(send("x-meeting-baas-api-key", API_KEY, body.clone()).await.unwrap().status(), 200);
    let callback = fixture("meeting-baas/v2/bot_completed.json");
    assert_eq!(send("x-mb-secret", CALLBACK_SECRET, callback).await.unwrap().status(), 200);
    assert_eq!(xlen(&redis), 2);
}

#[tokio::test]
async fn a_credential_that_is_not_configured_never_matches() {
    let redis = RedisServer::start();
    let mut vars = default_vars(&redis.url());
    vars.remove("CALLBACK_SECRET");
    vars.remove("WEBHOOK_SECRETS");
    let ingress = start_with(vars, |_| {}).await;
    let body = fixture("meeting-baas/v2/bot_completed.json");
    let r = post_with(&ingress, &[("x-mb-secret", "")], body.clone()).await;
    assert_error(r, 401, "unauthorized").await;
    // No secret configured: a signed request cannot be verified, so it is refused.
    assert_error(post_signed(&ingress, "svix", SECRET, "m", now(), &body).await, 401, "unauthorized").await;
    assert_eq!(dbsize(&redis), 0);
}

#[tokio::test]
async fn allow_unsigned_accepts_everything() {
    let redis = RedisServer::start();
    let vars = [("REDIS_URL", redis.url()), ("LISTEN_ADDR", "127.0.0.1:0".into()), ("ALLOW_UNSIGNED", "true".into())]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let ingress = start_with(vars, |_| {}).await;
    let r = post_with(&ingress, &[], fixture("meeting-baas/v1/failed.json")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(xlen(&redis), 1);
}
