//! A nemesis, kept in the suite so the properties it found stay true (the edges issue): the
//! processors' Redis blackholed and then reset through a TCP proxy loses nothing and forwards
//! nothing twice; an API that applies a write and drops the connection before answering gets
//! no second write (v1 and v2). (A processor frozen with SIGSTOP past its lease: see
//! `processor/tests/edges.rs`, which runs the binary.)

mod common;

use common::*;
use hookstream_tests::fake_api::{FakeApi, Reply};
use hookstream_tests::proxy::Proxy;
use hookstream_tests::{eventually, eventually_within, fixture, fixture_json, RedisServer};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_blackholed_then_reset_loses_nothing_and_forwards_nothing_twice() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(format!("127.0.0.1:{}", redis.port()).parse().unwrap()).await;
    let target = FakeApi::start().await;
    target.always("POST", "/hook", Reply::status(200).delayed(Duration::from_millis(20)));
    let mut vars = processor_vars(&proxy.redis_url(), "http://127.0.0.1:9");
    vars.insert("FORWARD_URL".into(), format!("{}/hook", target.url()));
    vars.insert("CONCURRENCY".into(), "4".into());
    // A read whose answer the blackhole swallowed leaves its entries pending under that
    // consumer: it reads them again once it reconnects (see the next test); the reclaimer is the
    // backstop, after CLAIM_IDLE_MS: well past the blackhole (so no live lease is taken over),
    // well inside the test's deadline.
    vars.insert("CLAIM_IDLE_MS".into(), "15000".into());
    let a = start_processor(vars.clone()).await;
    let mut b_vars = vars.clone();
    b_vars.insert("CONSUMER_NAME".into(), format!("{}-b", vars["CONSUMER_NAME"]));
    let b = start_processor(b_vars).await;
    let body = fixture("meeting-baas/v2/bot_completed.json");
    for i in 0..120 {
        add_event(&redis, "bot.completed", &body, &format!("result-{i}"));
    }
    eventually("some forwarded", || async { (target.calls_to("POST", "/hook").len() >= 20).then_some(()) }).await;
    // Blackholed: every open connection falls silent, without a reset, for a while.
    proxy.freeze();
    tokio::time::sleep(Duration::from_secs(6)).await; // the blackhole's length: the scenario
                                                      // Then reset: every connection open now gets an RST.
    proxy.reset();
    eventually_within("every result forwarded", Duration::from_secs(60), || async {
        let ids: std::collections::HashSet<String> = target
            .calls_to("POST", "/hook")
            .iter()
            .filter_map(|c| c.header("x-hookstream-id").map(str::to_string))
            .collect();
        (ids.len() == 120).then_some(())
    })
    .await;
    all_acked(&redis).await;
    a.stop().await;
    b.stop().await;
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for call in target.calls_to("POST", "/hook") {
        *per_id.entry(call.header("x-hookstream-id").unwrap_or_default().to_string()).or_default() += 1;
    }
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "forwarded more than once: {twice:?}");
    assert_eq!(per_id.len(), 120);
    assert_eq!(xlen_dead(&redis), 0, "{:?}", dead_entries(&redis).first());
}

/// A read whose answer is lost — Redis handed the entry to this consumer (it is pending under
/// its name) and the answer never arrived, as when a primary dies right after serving a blocked
/// XREADGROUP — is read again as soon as the consumer reconnects, not left to the reclaimer
/// after `CLAIM_IDLE_MS` (set to ten minutes here, so only the consumer's own re-read explains
/// the forward).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_whose_answer_was_lost_is_read_again_at_reconnect() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(format!("127.0.0.1:{}", redis.port()).parse().unwrap()).await;
    let target = FakeApi::start().await;
    target.always("POST", "/hook", Reply::status(200));
    let mut vars = processor_vars(&proxy.redis_url(), "http://127.0.0.1:9");
    vars.insert("FORWARD_URL".into(), format!("{}/hook", target.url()));
    vars.insert("CLAIM_IDLE_MS".into(), "600000".into());
    vars.insert("BLOCK_MS".into(), "5000".into());
    let consumer = vars["CONSUMER_NAME"].clone();
    let processor = start_processor(vars).await;
    let body = fixture("meeting-baas/v2/bot_completed.json");
    add_event(&redis, "bot.completed", &body, "before");
    all_acked(&redis).await;
    // The reader is blocked in XREADGROUP … > (Redis counts a blocked client): freeze every
    // connection there, so Redis serves the read and its answer goes nowhere.
    eventually("the reader blocked in XREADGROUP", || async {
        let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut redis.con()).unwrap();
        clients.lines().any(|l| l.contains("cmd=xreadgroup") && l.contains("flags=b")).then_some(())
    })
    .await;
    proxy.freeze();
    let lost = add_event(&redis, "bot.completed", &body, "lost");
    // The entry is this consumer's now (the blocked read took it), its answer swallowed.
    eventually("the entry pending under the frozen consumer", || async {
        let pending: redis::streams::StreamPendingCountReply =
            redis::cmd("XPENDING").arg(EVENTS).arg(GROUP).arg("-").arg("+").arg(10).query(&mut redis.con()).unwrap();
        pending.ids.iter().any(|p| p.id == lost && p.consumer == consumer).then_some(())
    })
    .await;
    // The reader gives the silent read up (BLOCK_MS plus a margin), reconnects and finds it.
    eventually_within("the lost read's entry forwarded", Duration::from_secs(30), || async {
        let ids: Vec<String> = target
            .calls_to("POST", "/hook")
            .iter()
            .filter_map(|c| c.header("x-hookstream-id").map(str::to_string))
            .collect();
        ids.iter().any(|id| id == "lost").then_some(())
    })
    .await;
    proxy.reset();
    all_acked(&redis).await;
    processor.stop().await;
    assert_eq!(target.calls_to("POST", "/hook").len(), 2, "each forwarded once");
}

/// v1: the bot's POST is applied (the meeting has its bot now), and the connection is dropped
/// before the answer. The retry reads the current event, sees the bot, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_v1_write_applied_whose_answer_was_lost_is_not_sent_again() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let uuid = "applied-1";
    let has_bot = Arc::new(Mutex::new(false));
    let mut event = fixture_json("meeting-baas/api/v1_calendar_event_upcoming.json");
    event["uuid"] = json!(uuid);
    let (h, e) = (has_bot.clone(), event.clone());
    api.route("GET", &format!("/calendar_events/{uuid}"), move |_, _| {
        let mut e = e.clone();
        if *h.lock().unwrap() {
            e["bot_param"] = json!({"bot_name": "hookstream recorder"});
        }
        Reply::json(200, serde_json::to_vec(&e).unwrap())
    });
    let h = has_bot.clone();
    api.route("POST", &format!("/calendar_events/{uuid}/bot"), move |_, _| {
        *h.lock().unwrap() = true; // applied…
        Reply::dropped() // …and never answered
    });
    let mut vars = processor_vars(&redis.url(), &api.url());
    vars.insert("API_WRITES_PER_SEC".into(), "0".into());
    let processor = start_processor(vars).await;
    add_event(&redis, "calendar.sync_events", &sync_body(&[uuid.to_string()]), "applied");
    all_acked(&redis).await;
    processor.stop().await;
    assert!(*has_bot.lock().unwrap());
    assert_eq!(api.calls_to("POST", &format!("/calendar_events/{uuid}/bot")).len(), 1, "{:?}", api.log());
    assert!(api.calls_to("GET", &format!("/calendar_events/{uuid}")).len() >= 2, "read again: {:?}", api.log());
    assert_eq!(xlen_dead(&redis), 0);
}

/// v2: the same with `POST /v2/calendars/{id}/bots`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_v2_write_applied_whose_answer_was_lost_is_not_sent_again() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let created = fixture_json("meeting-baas/v2/calendar_event_created.json");
    let calendar = created["data"]["calendar_id"].as_str().unwrap().to_string();
    let series = created["data"]["series_id"].as_str().unwrap().to_string();
    let instance = created["data"]["instances"][0].clone();
    let event_id = instance["event_id"].as_str().unwrap().to_string();
    let has_bot = Arc::new(Mutex::new(false));
    let start = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let end = (chrono::Utc::now() + chrono::Duration::hours(25)).to_rfc3339();
    let (h, cal, ser, evt) = (has_bot.clone(), calendar.clone(), series.clone(), event_id.clone());
    api.route("GET", &format!("/v2/calendars/{calendar}/events/{event_id}"), move |_, _| {
        let mut d = fixture_json("meeting-baas/api/v2_event_details.json");
        d["data"]["event_id"] = json!(evt);
        d["data"]["calendar_id"] = json!(cal);
        d["data"]["series_id"] = json!(ser);
        d["data"]["status"] = json!("confirmed");
        d["data"]["meeting_url"] = json!("https://meet.example.com/x");
        d["data"]["start_time"] = json!(start);
        d["data"]["end_time"] = json!(end);
        d["data"]["bot_scheduled"] = json!(*h.lock().unwrap());
        Reply::json(200, serde_json::to_vec(&d).unwrap())
    });
    let h = has_bot.clone();
    api.route("POST", &format!("/v2/calendars/{calendar}/bots"), move |_, _| {
        *h.lock().unwrap() = true;
        Reply::dropped()
    });
    let mut vars = processor_vars(&redis.url(), &api.url());
    vars.insert("API_WRITES_PER_SEC".into(), "0".into());
    let processor = start_processor(vars).await;
    let body = json!({"event": "calendar.event_created",
                      "data": {"calendar_id": calendar, "series_id": series, "instances": [instance]}});
    add_event(&redis, "calendar.event_created", &serde_json::to_vec(&body).unwrap(), "applied-v2");
    all_acked(&redis).await;
    processor.stop().await;
    assert!(*has_bot.lock().unwrap());
    assert_eq!(api.calls_to("POST", &format!("/v2/calendars/{calendar}/bots")).len(), 1, "{:?}", api.log());
    assert_eq!(xlen_dead(&redis), 0);
}
