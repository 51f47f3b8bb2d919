//! Dedup identity (SPEC §3.3) and the atomic dedup+append under concurrency.

mod common;

use common::*;
use futures::future::join_all;
use hookstream_tests::{eventually, fixture, fixture_json, RedisServer};
use std::collections::{HashMap, HashSet};

fn s(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The identity the Meeting BaaS guidance gives for each v1 fixture.
fn expected_v1_identity(name: &str) -> String {
    let json = fixture_json(&format!("meeting-baas/v1/{name}"));
    let data = &json["data"];
    match json["event"].as_str().unwrap() {
        "calendar.sync_events" => {
            format!("calendar.sync_events:{}:{}", s(&data["calendar_id"]), s(&data["last_updated_ts"]))
        }
        "bot.status_change" => format!(
            "bot.status_change:{}:{}:{}",
            s(&data["bot_id"]),
            s(&data["status"]["code"]),
            s(&data["status"]["created_at"])
        ),
        event => format!("{event}:{}", s(&data["bot_id"])),
    }
}

const V1_FIXTURES: &[&str] = &[
    "calendar_sync_events.json",
    "bot_status_change_joining.json",
    "bot_status_change_recording.json",
    "bot_status_change_meeting_error.json",
    "complete.json",
    "failed.json",
    "transcription_complete.json",
];

#[tokio::test]
async fn every_v1_fixture_gets_its_documented_identity_and_dedups() {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    let mut ids = HashMap::new();
    for name in V1_FIXTURES {
        let body = fixture(&format!("meeting-baas/v1/{name}"));
        let (status, first) = answer(post_v1(&ingress, &body).await).await;
        assert_eq!((status, first["status"].as_str()), (200, Some("accepted")), "{name}: {first}");
        ids.insert(first["id"].as_str().unwrap().to_string(), expected_v1_identity(name));

        // The same event re-serialised (other bytes, same fields) is the same identity.
        let reserialised = serde_json::to_vec(&fixture_json(&format!("meeting-baas/v1/{name}"))).unwrap();
        assert_ne!(reserialised, body);
        let (status, dup) = answer(post_v1(&ingress, &reserialised).await).await;
        assert_eq!((status, dup["status"].as_str()), (200, Some("duplicate")), "{name}: {dup}");
        assert_eq!(dup["id"], first["id"], "a duplicate answers the first copy's id");
    }
    // Sanity: the expected identities are the documented shapes.
    assert!(ids
        .values()
        .any(|i| i == "calendar.sync_events:aa98aa89-07ae-4a23-b441-48725f0386e6:2026-05-20T08:41:17Z"));
    assert!(ids.values().any(|i| i == "complete:ef1f203a-2a58-45bd-9215-bda2881656ae"));

    let stored = entries(&redis);
    assert_eq!(stored.len(), V1_FIXTURES.len());
    for (id, fields) in stored {
        assert_eq!(String::from_utf8_lossy(&fields["dedup_id"]), ids[&id], "entry {id}");
    }
}

#[tokio::test]
async fn dedup_key_holds_the_first_id_with_the_configured_ttl() {
    let redis = RedisServer::start();
    let mut vars = default_vars(&redis.url());
    vars.insert("DEDUP_TTL_SECS".into(), "1".into());
    let ingress = start_with(vars, |_| {}).await;
    let body = fixture("meeting-baas/v1/failed.json");
    let (_, first) = answer(post_v1(&ingress, &body).await).await;
    let key = shared::keys::Keys::new(NS).dedup(&expected_v1_identity("failed.json"));
    let mut con = redis.con();
    let (value, ttl): (String, i64) = redis::pipe().cmd("GET").arg(&key).cmd("PTTL").arg(&key).query(&mut con).unwrap();
    assert_eq!(value, first["id"].as_str().unwrap());
    assert!(ttl > 0 && ttl <= 1000, "ttl {ttl}");

    // After the TTL the same event is a first copy again.
    eventually("the dedup key expires", || {
        let exists: bool = redis::cmd("EXISTS").arg(&key).query(&mut redis.con()).unwrap();
        async move { (!exists).then_some(()) }
    })
    .await;
    let (_, again) = answer(post_v1(&ingress, &body).await).await;
    assert_eq!(again["status"], "accepted");
    assert_ne!(again["id"], first["id"]);
    assert_eq!(xlen(&redis), 2);
}

#[tokio::test]
async fn signed_events_dedup_on_the_message_id() {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    // Not a bot's final result (rule 1 would name those by their bot): the message id decides.
    let a = fixture("meeting-baas/v2/bot_status_change.json");
    let b = fixture("meeting-baas/v2/bot_chat_message.json");
    let (_, first) = answer(post_signed(&ingress, "svix", SECRET, "msg_same", now(), &a).await).await;
    assert_eq!(first["status"], "accepted");
    // Same message id (a retry, re-signed later): duplicate, even with other bytes.
    let (_, dup) = answer(post_signed(&ingress, "webhook", SECRET, "msg_same", now(), &b).await).await;
    assert_eq!((dup["status"].as_str(), &dup["id"]), (Some("duplicate"), &first["id"]));
    // Another message id with the same body: a different event.
    let (_, other) = answer(post_signed(&ingress, "svix", SECRET, "msg_other", now(), &a).await).await;
    assert_eq!(other["status"], "accepted");
    let stored = entries(&redis);
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].1["dedup_id"], b"msg_same");
    assert_eq!(stored[1].1["dedup_id"], b"msg_other");
}

#[tokio::test]
async fn v2_callbacks_without_a_message_id_dedup_on_the_body_hash() {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    let body = fixture("meeting-baas/v2/bot_chat_message.json");
    let send = || {
        client()
            .post(ingress.webhook_url())
            .header("content-type", "application/json")
            .header("x-mb-secret", CALLBACK_SECRET)
            .body(body.clone())
            .send()
    };
    let (_, first) = answer(send().await.unwrap()).await;
    let (_, second) = answer(send().await.unwrap()).await;
    assert_eq!((first["status"].as_str(), second["status"].as_str()), (Some("accepted"), Some("duplicate")));
    assert_eq!(entries(&redis)[0].1["dedup_id"], ingress::identity::body_identity(&body).as_bytes());
}

/// SPEC §3.3 rule 1: a bot's final result is accepted once, whichever message carries it — the
/// first webhook, Meeting BaaS's retry with a new message id, a resend, the per-bot callback.
#[tokio::test]
async fn one_result_per_bot_whichever_message_carries_it() {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    let body = fixture("meeting-baas/v2/bot_completed.json");
    let bot_id =
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["data"]["bot_id"].as_str().unwrap().to_string();
    let (_, first) = answer(post_signed(&ingress, "svix", SECRET, "msg_first", now(), &body).await).await;
    assert_eq!(first["status"], "accepted");
    let (_, resent) = answer(post_signed(&ingress, "webhook", SECRET, "msg_resent", now(), &body).await).await;
    assert_eq!((resent["status"].as_str(), &resent["id"]), (Some("duplicate"), &first["id"]));
    let callback = client()
        .post(ingress.webhook_url())
        .header("content-type", "application/json")
        .header("x-mb-secret", CALLBACK_SECRET)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let (_, callback) = answer(callback).await;
    assert_eq!(callback["status"], "duplicate");
    // The same bot's other final event is its own result.
    let mut failed: serde_json::Value = serde_json::from_slice(&fixture("meeting-baas/v2/bot_failed.json")).unwrap();
    failed["data"]["bot_id"] = serde_json::json!(bot_id);
    let failed = serde_json::to_vec(&failed).unwrap();
    let (_, other) = answer(post_signed(&ingress, "svix", SECRET, "msg_failed", now(), &failed).await).await;
    assert_eq!(other["status"], "accepted");
    let stored = entries(&redis);
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].1["dedup_id"], format!("bot.completed:{bot_id}").as_bytes());
    assert_eq!(stored[1].1["dedup_id"], format!("bot.failed:{bot_id}").as_bytes());
}

/// N distinct events, each sent M times at once: exactly N entries, N "accepted" and N×(M−1)
/// "duplicate" answers, and every duplicate names its first copy's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicates_under_concurrency() {
    const N: usize = 25;
    const M: usize = 8;
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    let c = client();
    let mut requests = Vec::new();
    for copy in 0..M {
        for event in 0..N {
            let body = format!(r#"{{"event":"complete","data":{{"bot_id":"bot-{event}"}},"copy":{copy}}}"#);
            let req = c
                .post(ingress.webhook_url())
                .header("content-type", "application/json")
                .header("x-meeting-baas-api-key", API_KEY)
                .body(body);
            requests.push(async move { (event, answer(req.send().await.unwrap()).await) });
        }
    }
    let answers = join_all(requests).await;
    let mut accepted: HashMap<usize, String> = HashMap::new();
    let mut duplicates = Vec::new();
    for (event, (status, body)) in answers {
        assert_eq!(status, 200, "{body}");
        let id = body["id"].as_str().unwrap().to_string();
        match body["status"].as_str().unwrap() {
            "accepted" => assert!(accepted.insert(event, id).is_none(), "event {event} accepted twice"),
            "duplicate" => duplicates.push((event, id)),
            other => panic!("status {other}"),
        }
    }
    assert_eq!(accepted.len(), N);
    assert_eq!(duplicates.len(), N * (M - 1));
    for (event, id) in duplicates {
        assert_eq!(accepted[&event], id, "duplicate of event {event}");
    }
    assert_eq!(xlen(&redis), N as u64);
    let ids: HashSet<String> = entries(&redis).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, accepted.into_values().collect());
}
