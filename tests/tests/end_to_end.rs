//! End to end: a webhook POSTed to the ingress ends as the right Meeting BaaS API calls and an
//! acked entry.

mod common;

use common::*;
use hookstream_tests::fake_api::{FakeApi, Reply};
use hookstream_tests::{fixture, fixture_json, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_become_api_calls_and_acked_entries() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let upcoming = "33c675fe-24f7-44fe-857d-b211810a8d5d";
    api.always(
        "GET",
        &format!("/calendar_events/{upcoming}"),
        Reply::json(200, fixture("meeting-baas/api/v1_calendar_event_upcoming.json")),
    );
    api.always(
        "POST",
        &format!("/calendar_events/{upcoming}/bot"),
        Reply::json(200, fixture("meeting-baas/api/v1_schedule_response.json")),
    );
    let cal = "647da78e-783d-4a7a-be5c-117ad3b10d5c";
    let event = "ad307589-17b9-4f8a-9489-6b4c48f0c40d";
    api.always(
        "GET",
        &format!("/v2/calendars/{cal}/events/{event}"),
        Reply::json(200, fixture("meeting-baas/api/v2_event_details.json")),
    );
    api.always(
        "POST",
        &format!("/v2/calendars/{cal}/bots"),
        Reply::json(201, fixture("meeting-baas/api/v2_create_bots_response.json")),
    );
    api.always("POST", "/downstream", Reply::status(200));

    let ingress = start_ingress(&redis.url()).await;
    let mut vars = processor_vars(&redis.url(), &api.url());
    vars.insert("FORWARD_URL".into(), format!("{}/downstream", api.url()));
    let processor = start_processor(vars).await;

    // v1 with the API key (twice: the copy is a duplicate), v2 signed, a v2 callback.
    let sync = fixture("meeting-baas/v1/calendar_sync_events.json");
    assert_eq!(answer(post_v1(&ingress, &sync).await).await.1["status"], "accepted");
    assert_eq!(answer(post_v1(&ingress, &sync).await).await.1["status"], "duplicate");
    let created = fixture("meeting-baas/v2/calendar_event_created.json");
    assert_eq!(
        answer(post_signed(&ingress, "svix", SECRET, "msg_e2e_1", now(), &created).await).await.1["status"],
        "accepted"
    );
    let completed = fixture("meeting-baas/v2/bot_completed.json");
    let r = client()
        .post(ingress.webhook_url())
        .header("content-type", "application/json")
        .header("x-mb-secret", CALLBACK_SECRET)
        .body(completed.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    all_acked(&redis).await;
    assert!(processor.stop().await);
    assert!(ingress.stop().await);

    assert_eq!(api.calls_to("POST", &format!("/calendar_events/{upcoming}/bot")).len(), 1);
    let v2 = api.calls_to("POST", &format!("/v2/calendars/{cal}/bots"));
    assert_eq!(v2.len(), 1);
    assert_eq!(v2[0].json()["event_id"], event);
    let forwarded = api.calls_to("POST", "/downstream");
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0].body, completed);
    assert_eq!(forwarded[0].header("x-hookstream-event"), Some("bot.completed"));
    let meeting_baas: Vec<_> = api.calls().into_iter().filter(|c| c.path != "/downstream").collect();
    hookstream_tests::openapi::assert_valid(&meeting_baas);
    // The three accepted webhooks, and the entries the two about several meetings were split
    // into (one per meeting, each naming its original).
    let all = entries(&redis);
    let originals: Vec<&String> = all.iter().filter(|(_, f)| !f.contains_key("fanout_of")).map(|(id, _)| id).collect();
    assert_eq!(originals.len(), 3);
    let sync_meetings = fixture_json("meeting-baas/v1/calendar_sync_events.json")["data"]["affected_event_uuids"]
        .as_array()
        .unwrap()
        .len();
    let created_meetings =
        fixture_json("meeting-baas/v2/calendar_event_created.json")["data"]["instances"].as_array().unwrap().len();
    let expected_children = [sync_meetings, created_meetings].iter().filter(|n| **n > 1).sum::<usize>();
    assert_eq!(all.len(), 3 + expected_children);
    for (_, f) in all.iter().filter(|(_, f)| f.contains_key("fanout_of")) {
        assert!(originals.iter().any(|id| id.as_bytes() == f["fanout_of"].as_slice()));
        assert!(f.contains_key("meeting") && f.contains_key("dedup_id") && f.contains_key("request_id"));
    }
    assert_eq!(xlen_dead(&redis), 0);
}
