//! Every handler path of SPEC §4.1 against a fake Meeting BaaS API.

mod common;

use common::*;
use hookstream_tests::fake_api::{FakeApi, Reply};
use hookstream_tests::openapi::assert_valid;
use hookstream_tests::{fixture, fixture_json, RedisServer};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const UPCOMING: &str = "33c675fe-24f7-44fe-857d-b211810a8d5d";
const DELETED: &str = "03a3c202-018c-43ff-b607-a912a6f00007";
const NO_URL: &str = "299eea56-ba50-4d8d-9bb0-89c4dfce6f73";
const CAL: &str = "647da78e-783d-4a7a-be5c-117ad3b10d5c";
const CREATED_EVENT: &str = "ad307589-17b9-4f8a-9489-6b4c48f0c40d";
const CREATED_SERIES: &str = "a6ae6a86-6831-4422-a646-d9442a1b0ec8";
const RECURRING_SERIES: &str = "361c152f-72fa-4654-84f1-a664584ce3de";
const RECURRING_1: &str = "487471b7-0149-44ed-840b-97d920e06829";
const RECURRING_2: &str = "d4e39f93-a128-45f4-9b27-140042a5efa5";

fn api_fixture(name: &str) -> Vec<u8> {
    fixture(&format!("meeting-baas/api/{name}"))
}

/// The v1 fake: the three events of the sync fixture, schedule and unschedule answers.
fn script_v1(api: &FakeApi) {
    api.always(
        "GET",
        &format!("/calendar_events/{UPCOMING}"),
        Reply::json(200, api_fixture("v1_calendar_event_upcoming.json")),
    );
    api.always(
        "GET",
        &format!("/calendar_events/{DELETED}"),
        Reply::json(200, api_fixture("v1_calendar_event_deleted.json")),
    );
    api.always(
        "GET",
        &format!("/calendar_events/{NO_URL}"),
        Reply::json(200, api_fixture("v1_calendar_event_no_url.json")),
    );
    api.always(
        "POST",
        &format!("/calendar_events/{UPCOMING}/bot"),
        Reply::json(200, api_fixture("v1_schedule_response.json")),
    );
    api.always("DELETE", &format!("/calendar_events/{DELETED}/bot"), Reply::json(200, b"{}".to_vec()));
}

/// The v2 event-details answer for `event_id`, with `bot_scheduled` and whether the calendar's
/// owner organises it.
fn details(event_id: &str, bot_scheduled: bool, organizer: bool) -> Vec<u8> {
    details_with(event_id, bot_scheduled, organizer, |_| {})
}

/// [`details`], with `change` applied to the event (`data`).
fn details_with(event_id: &str, bot_scheduled: bool, organizer: bool, change: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut d = fixture_json("meeting-baas/api/v2_event_details.json");
    d["data"]["event_id"] = json!(event_id);
    d["data"]["bot_scheduled"] = json!(bot_scheduled);
    d["data"]["attendees"][0]["organizer"] = json!(organizer);
    change(&mut d["data"]);
    serde_json::to_vec(&d).unwrap()
}

/// The second instance of the `created` fixture (the webhook shows it without a meeting URL).
const CREATED_NO_URL: &str = "3c25d7e4-dfe0-4ede-a3f0-fb280cac281c";

fn details_path(event_id: &str) -> String {
    format!("/v2/calendars/{CAL}/events/{event_id}")
}

fn bots_path() -> String {
    format!("/v2/calendars/{CAL}/bots")
}

async fn run_one(redis: &RedisServer, vars: std::collections::HashMap<String, String>, fixture_name: &str) {
    let processor = start_processor(vars).await;
    add_fixture(redis, fixture_name);
    all_acked(redis).await;
    assert!(processor.stop().await);
    assert_eq!(xlen_dead(redis), 0, "{:?}", dead_entries(redis));
}

#[tokio::test]
async fn v1_sync_schedules_unschedules_and_skips() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    script_v1(&api);
    let mut vars = processor_vars(&redis.url(), &api.url());
    vars.insert("BOT_CONFIG".into(), r#"{"recording_mode":"audio_only","bot_name":"overridden"}"#.into());
    run_one(&redis, vars, "meeting-baas/v1/calendar_sync_events.json").await;

    // One entry per meeting (fan-out), so meetings interleave; within one, the read comes first.
    let log = api.log();
    let mut sorted = log.clone();
    sorted.sort();
    let mut expected = vec![
        format!("GET /calendar_events/{UPCOMING}"),
        format!("POST /calendar_events/{UPCOMING}/bot"),
        format!("GET /calendar_events/{DELETED}"),
        format!("DELETE /calendar_events/{DELETED}/bot"),
        format!("GET /calendar_events/{NO_URL}"),
    ];
    expected.sort();
    assert_eq!(sorted, expected);
    let at = |call: String| log.iter().position(|c| *c == call).unwrap();
    assert!(at(format!("GET /calendar_events/{UPCOMING}")) < at(format!("POST /calendar_events/{UPCOMING}/bot")));
    assert!(at(format!("GET /calendar_events/{DELETED}")) < at(format!("DELETE /calendar_events/{DELETED}/bot")));
    let post = &api.calls_to("POST", &format!("/calendar_events/{UPCOMING}/bot"))[0];
    assert_eq!(post.json(), json!({"bot_name": "hookstream recorder", "recording_mode": "audio_only"}));
    assert_eq!(post.header("content-type"), Some("application/json"));
    for call in api.calls() {
        assert_eq!(call.header("x-meeting-baas-api-key"), Some(API_KEY), "{} {}", call.method, call.path);
        assert_eq!(call.query, None, "no undeclared query parameters");
    }
    assert_valid(&api.calls());
}

#[tokio::test]
async fn v1_sync_event_gone_is_nothing_to_do() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await; // every GET answers 404
    run_one(&redis, processor_vars(&redis.url(), &api.url()), "meeting-baas/v1/calendar_sync_events.json").await;
    assert_eq!(api.log().len(), 3);
    assert!(api.log().iter().all(|c| c.starts_with("GET ")));
    assert_valid(&api.calls());
}

#[tokio::test]
async fn v1_policies() {
    // organizer: the upcoming event is organised by the owner → scheduled.
    // organizer, not the organiser: not scheduled; if a bot exists, it is removed.
    // none: hookstream leaves every bot as it is (SPEC §4.2): nothing scheduled, nothing removed.
    for (policy, is_organizer, scheduled, expect) in [
        ("organizer", true, false, Some("POST")),
        ("organizer", false, false, None),
        ("organizer", false, true, Some("DELETE")),
        ("none", true, false, None),
        ("none", true, true, None),
        ("all", false, false, Some("POST")),
    ] {
        let redis = RedisServer::start();
        let api = FakeApi::start().await;
        let mut event = fixture_json(if scheduled {
            "meeting-baas/api/v1_calendar_event_scheduled.json"
        } else {
            "meeting-baas/api/v1_calendar_event_upcoming.json"
        });
        event["is_organizer"] = json!(is_organizer);
        api.always(
            "GET",
            &format!("/calendar_events/{UPCOMING}"),
            Reply::json(200, serde_json::to_vec(&event).unwrap()),
        );
        api.always(
            "POST",
            &format!("/calendar_events/{UPCOMING}/bot"),
            Reply::json(200, api_fixture("v1_schedule_response.json")),
        );
        api.always("DELETE", &format!("/calendar_events/{UPCOMING}/bot"), Reply::json(200, b"{}".to_vec()));
        let mut vars = processor_vars(&redis.url(), &api.url());
        vars.insert("RECORD_POLICY".into(), policy.into());
        let processor = start_processor(vars).await;
        add_event(
            &redis,
            "calendar.sync_events",
            format!(r#"{{"event":"calendar.sync_events","data":{{"calendar_id":"c","last_updated_ts":"t","affected_event_uuids":["{UPCOMING}"]}}}}"#).as_bytes(),
            "d",
        );
        all_acked(&redis).await;
        processor.stop().await;
        assert_valid(&api.calls());
        let writes: Vec<String> = api.calls().into_iter().filter(|c| c.method != "GET").map(|c| c.method).collect();
        assert_eq!(
            writes,
            expect.into_iter().map(String::from).collect::<Vec<_>>(),
            "{policy} organizer={is_organizer} scheduled={scheduled}"
        );
    }
}

#[tokio::test]
async fn v1_running_twice_schedules_one_bot() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    // The API's state: after the POST, the event has a bot.
    let scheduled = Arc::new(AtomicBool::new(false));
    let s = scheduled.clone();
    api.route("GET", &format!("/calendar_events/{UPCOMING}"), move |_, _| {
        let name = if s.load(Ordering::SeqCst) {
            "v1_calendar_event_scheduled.json"
        } else {
            "v1_calendar_event_upcoming.json"
        };
        Reply::json(200, api_fixture(name))
    });
    let s = scheduled.clone();
    api.route("POST", &format!("/calendar_events/{UPCOMING}/bot"), move |_, _| {
        s.store(true, Ordering::SeqCst);
        Reply::json(200, api_fixture("v1_schedule_response.json"))
    });
    let processor = start_processor(processor_vars(&redis.url(), &api.url())).await;
    let body = format!(
        r#"{{"event":"calendar.sync_events","data":{{"calendar_id":"c","last_updated_ts":"t","affected_event_uuids":["{UPCOMING}"]}}}}"#
    );
    // The handler runs again for the same event (as after a crash between the effect and the
    // ack, when the entry is redelivered): one bot.
    add_event(&redis, "calendar.sync_events", body.as_bytes(), "same");
    all_acked(&redis).await;
    add_event(&redis, "calendar.sync_events", body.as_bytes(), "same");
    all_acked(&redis).await;
    processor.stop().await;
    assert_eq!(api.calls_to("POST", &format!("/calendar_events/{UPCOMING}/bot")).len(), 1);
    assert_valid(&api.calls());
}

#[tokio::test]
async fn v2_created_schedules_the_confirmed_instance_with_a_url() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    api.always("GET", &details_path(CREATED_EVENT), Reply::json(200, details(CREATED_EVENT, false, true)));
    let no_url = details_with(CREATED_NO_URL, false, true, |d| d["meeting_url"] = Value::Null);
    api.always("GET", &details_path(CREATED_NO_URL), Reply::json(200, no_url));
    api.always("POST", &bots_path(), Reply::json(201, api_fixture("v2_create_bots_response.json")));
    let mut vars = processor_vars(&redis.url(), &api.url());
    vars.insert("BOT_CONFIG".into(), r#"{"recording_mode":"audio_only"}"#.into());
    vars.insert("BOT_NAME".into(), "Notetaker".into());
    run_one(&redis, vars, "meeting-baas/v2/calendar_event_created.json").await;
    // Both instances are read (the webhook only names candidates); the one without a URL in the
    // API's current event gets no bot.
    assert_eq!(api.calls_to("GET", &details_path(CREATED_EVENT)).len(), 1);
    assert_eq!(api.calls_to("GET", &details_path(CREATED_NO_URL)).len(), 1);
    assert_eq!(api.calls_to("POST", &bots_path()).len(), 1);
    let post = &api.calls_to("POST", &bots_path())[0];
    assert_eq!(
        post.json(),
        json!({"bot_name": "Notetaker", "recording_mode": "audio_only", "series_id": CREATED_SERIES, "event_id": CREATED_EVENT, "all_occurrences": false})
    );
    assert_eq!(post.header("x-meeting-baas-api-key"), Some(API_KEY));
    assert_valid(&api.calls());
}

#[tokio::test]
async fn v2_organizer_policy_reads_the_event() {
    for (organizer, posts) in [(true, 1), (false, 0)] {
        let redis = RedisServer::start();
        let api = FakeApi::start().await;
        api.always("GET", &details_path(CREATED_EVENT), Reply::json(200, details(CREATED_EVENT, false, organizer)));
        api.always("POST", &bots_path(), Reply::json(201, api_fixture("v2_create_bots_response.json")));
        let mut vars = processor_vars(&redis.url(), &api.url());
        vars.insert("RECORD_POLICY".into(), "organizer".into());
        run_one(&redis, vars, "meeting-baas/v2/calendar_event_created.json").await;
        assert_eq!(api.calls_to("POST", &bots_path()).len(), posts, "organizer={organizer}");
        assert_valid(&api.calls());
        assert_eq!(api.calls_to("GET", &details_path(CREATED_EVENT)).len(), 1);
    }
}

#[tokio::test]
async fn v2_decisions_come_from_the_current_event_not_the_webhook() {
    // The webhook shows a confirmed instance with a URL and no bot; by the time the entry runs
    // the API shows otherwise, field by field. Only the unchanged one gets a bot.
    let ended = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    type Change = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Change, usize)> = vec![
        ("unchanged", Box::new(|_| {}), 1),
        ("cancelled", Box::new(|d| d["status"] = json!("cancelled")), 0),
        ("tentative", Box::new(|d| d["status"] = json!("tentative")), 0),
        ("no meeting_url", Box::new(|d| d["meeting_url"] = Value::Null), 0),
        ("empty meeting_url", Box::new(|d| d["meeting_url"] = json!("")), 0),
        ("ended", Box::new(move |d| d["end_time"] = json!(ended)), 0),
        ("bot scheduled meanwhile", Box::new(|d| d["bot_scheduled"] = json!(true)), 0),
    ];
    for (what, change, posts) in cases {
        let redis = RedisServer::start();
        let api = FakeApi::start().await;
        api.always(
            "GET",
            &details_path(CREATED_EVENT),
            Reply::json(200, details_with(CREATED_EVENT, false, true, change)),
        );
        api.always("POST", &bots_path(), Reply::json(201, api_fixture("v2_create_bots_response.json")));
        let mut body = fixture_json("meeting-baas/v2/calendar_event_created.json");
        body["data"]["instances"].as_array_mut().unwrap().truncate(1);
        let processor = start_processor(processor_vars(&redis.url(), &api.url())).await;
        add_event(&redis, "calendar.event_created", &serde_json::to_vec(&body).unwrap(), what);
        all_acked(&redis).await;
        processor.stop().await;
        assert_eq!(api.calls_to("POST", &bots_path()).len(), posts, "{what}");
        assert_eq!(xlen_dead(&redis), 0, "{what}");
    }
    // Gone from the API (404): nothing to do.
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    run_one(&redis, processor_vars(&redis.url(), &api.url()), "meeting-baas/v2/calendar_event_created.json").await;
    assert!(api.calls_to("POST", &bots_path()).is_empty());
}

#[tokio::test]
async fn v2_policy_none_schedules_nothing() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let mut vars = processor_vars(&redis.url(), &api.url());
    vars.insert("RECORD_POLICY".into(), "none".into());
    run_one(&redis, vars, "meeting-baas/v2/calendar_event_created.json").await;
    assert!(api.calls().is_empty());
}

#[tokio::test]
async fn v2_updated_skips_instances_that_already_have_a_bot() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    api.always("GET", &details_path(RECURRING_1), Reply::json(200, details(RECURRING_1, false, true)));
    api.always("GET", &details_path(RECURRING_2), Reply::json(200, details(RECURRING_2, true, true)));
    api.always("POST", &bots_path(), Reply::json(201, api_fixture("v2_create_bots_response.json")));
    run_one(&redis, processor_vars(&redis.url(), &api.url()), "meeting-baas/v2/calendar_event_updated.json").await;
    let posts = api.calls_to("POST", &bots_path());
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].json()["event_id"], RECURRING_1);
    assert_eq!(posts[0].json()["series_id"], RECURRING_SERIES);
    assert_eq!(api.calls_to("GET", &details_path(RECURRING_2)).len(), 1, "read: the API's state decides");
    assert_valid(&api.calls());
}

#[tokio::test]
async fn v2_synced_schedules_each_confirmed_instance_of_each_series() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    for id in [RECURRING_1, RECURRING_2] {
        api.always("GET", &details_path(id), Reply::json(200, details(id, false, true)));
    }
    let tentative = "e6d064c0-b2a5-4cb3-bc57-8135123ed791";
    let no_url = "8d77acd8-7f4f-4b33-8a31-387967bcc600";
    api.always(
        "GET",
        &details_path(tentative),
        Reply::json(200, details_with(tentative, false, true, |d| d["status"] = json!("tentative"))),
    );
    api.always(
        "GET",
        &details_path(no_url),
        Reply::json(200, details_with(no_url, false, true, |d| d["meeting_url"] = Value::Null)),
    );
    api.always("POST", &bots_path(), Reply::json(201, api_fixture("v2_create_bots_response.json")));
    run_one(&redis, processor_vars(&redis.url(), &api.url()), "meeting-baas/v2/calendar_events_synced.json").await;
    let mut posted: Vec<String> =
        api.calls_to("POST", &bots_path()).iter().map(|c| c.json()["event_id"].as_str().unwrap().to_string()).collect();
    posted.sort();
    let mut expected = vec![RECURRING_1.to_string(), RECURRING_2.to_string()];
    expected.sort();
    assert_eq!(posted, expected, "tentative and URL-less instances are skipped");
    assert_valid(&api.calls());
}

#[tokio::test]
async fn v2_bot_already_exists_counts_as_done() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    api.always("GET", &details_path(RECURRING_1), Reply::json(200, details(RECURRING_1, false, true)));
    api.always("POST", &bots_path(), Reply::json(201, api_fixture("v2_create_bots_partial.json")));
    run_one(&redis, processor_vars(&redis.url(), &api.url()), "meeting-baas/v2/calendar_event_updated.json").await;
    assert_eq!(api.calls_to("POST", &bots_path()).len(), 1);
    assert_valid(&api.calls());
}

#[tokio::test]
async fn v2_running_twice_schedules_one_bot() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let scheduled = Arc::new(AtomicBool::new(false));
    let s = scheduled.clone();
    api.route("GET", &details_path(CREATED_EVENT), move |_, _| {
        Reply::json(200, details(CREATED_EVENT, s.load(Ordering::SeqCst), true))
    });
    let s = scheduled.clone();
    api.route("POST", &bots_path(), move |_, _| {
        s.store(true, Ordering::SeqCst);
        Reply::json(201, api_fixture("v2_create_bots_response.json"))
    });
    let processor = start_processor(processor_vars(&redis.url(), &api.url())).await;
    add_fixture(&redis, "meeting-baas/v2/calendar_event_created.json");
    all_acked(&redis).await;
    add_fixture(&redis, "meeting-baas/v2/calendar_event_created.json");
    all_acked(&redis).await;
    processor.stop().await;
    assert_eq!(api.calls_to("POST", &bots_path()).len(), 1);
    assert_valid(&api.calls());
}

#[tokio::test]
async fn v2_cancelled_unschedules_and_a_missing_bot_is_fine() {
    for status in [200, 404] {
        let redis = RedisServer::start();
        let api = FakeApi::start().await;
        let current = details_with(CREATED_EVENT, true, true, |d| d["status"] = json!("cancelled"));
        api.always("GET", &details_path(CREATED_EVENT), Reply::json(200, current));
        api.always("DELETE", &bots_path(), Reply::json(status, b"{\"success\":true}".to_vec()));
        run_one(&redis, processor_vars(&redis.url(), &api.url()), "meeting-baas/v2/calendar_event_cancelled.json")
            .await;
        let deletes = api.calls_to("DELETE", &bots_path());
        assert_eq!(deletes.len(), 1);
        assert_eq!(
            deletes[0].json(),
            json!({"series_id": CREATED_SERIES, "event_id": CREATED_EVENT, "all_occurrences": false})
        );
        assert_valid(&api.calls());
        assert_eq!(deletes[0].header("x-meeting-baas-api-key"), Some(API_KEY));
    }
}

#[tokio::test]
async fn v2_cancelled_decides_from_the_current_event() {
    // The webhook says a bot was scheduled; the API says none is (any more), or the event is
    // gone: nothing to delete.
    for current in [Some(details_with(CREATED_EVENT, false, true, |d| d["status"] = json!("cancelled"))), None] {
        let redis = RedisServer::start();
        let api = FakeApi::start().await;
        if let Some(current) = current.clone() {
            api.always("GET", &details_path(CREATED_EVENT), Reply::json(200, current));
        }
        api.always("DELETE", &bots_path(), Reply::json(200, b"{\"success\":true}".to_vec()));
        run_one(&redis, processor_vars(&redis.url(), &api.url()), "meeting-baas/v2/calendar_event_cancelled.json")
            .await;
        assert!(api.calls_to("DELETE", &bots_path()).is_empty(), "found={}", current.is_some());
        assert_eq!(api.calls_to("GET", &details_path(CREATED_EVENT)).len(), 1);
        assert_valid(&api.calls());
    }
    // The webhook says no bot, but the API shows one (scheduled since): it is removed.
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let current = details_with(CREATED_EVENT, true, true, |d| d["status"] = json!("cancelled"));
    api.always("GET", &details_path(CREATED_EVENT), Reply::json(200, current));
    api.always("DELETE", &bots_path(), Reply::json(200, b"{\"success\":true}".to_vec()));
    let mut body = fixture_json("meeting-baas/v2/calendar_event_cancelled.json");
    body["data"]["cancelled_instances"][0]["bot_scheduled"] = json!(false);
    let processor = start_processor(processor_vars(&redis.url(), &api.url())).await;
    add_event(&redis, "calendar.event_cancelled", &serde_json::to_vec(&body).unwrap(), "stale");
    all_acked(&redis).await;
    processor.stop().await;
    assert_eq!(api.calls_to("DELETE", &bots_path()).len(), 1);
}

#[tokio::test]
async fn v2_ids_that_are_not_uuids_are_refused_before_any_call() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let processor = start_processor(processor_vars(&redis.url(), &api.url())).await;
    let mut body = fixture_json("meeting-baas/v2/calendar_event_created.json");
    body["data"]["calendar_id"] = json!("cal-1");
    add_event(&redis, "calendar.event_created", &serde_json::to_vec(&body).unwrap(), "x");
    let dead = dead_after(&redis, 1).await;
    processor.stop().await;
    assert!(dead[0].1["error"].contains("calendar_id"), "{:?}", dead[0].1);
    assert!(api.calls().is_empty());
}

#[tokio::test]
async fn forwarder_posts_the_payload_with_its_headers() {
    let redis = RedisServer::start();
    let target = FakeApi::start().await;
    target.always("POST", "/hook", Reply::status(204));
    let mut vars = processor_vars(&redis.url(), "http://127.0.0.1:9");
    vars.insert("FORWARD_URL".into(), format!("{}/hook", target.url()));
    let processor = start_processor(vars).await;
    let names = [
        "meeting-baas/v2/bot_completed.json",
        // API v2 may put `extra` inside `data`: forwarded as it came, like any other.
        "meeting-baas/v2/bot_completed_extra_in_data.json",
        "meeting-baas/v1/complete.json",
        "meeting-baas/v2/bot_chat_message.json",
    ];
    for name in names {
        add_fixture(&redis, name);
    }
    // A calendar connection event is the calendar's record (SPEC §4.6), not forwarded.
    add_fixture(&redis, "meeting-baas/v2/calendar_connection_created.json");
    all_acked(&redis).await;
    processor.stop().await;
    let calls = target.calls_to("POST", "/hook");
    assert_eq!(calls.len(), names.len());
    for name in names {
        let call = calls.iter().find(|c| c.header("x-hookstream-id") == Some(name)).expect("forwarded");
        assert_eq!(call.body, fixture(name), "payload byte for byte");
        assert_eq!(call.header("content-type"), Some("application/json"));
        assert_eq!(call.header("x-hookstream-event"), fixture_json(name)["event"].as_str());
    }
    assert_eq!(xlen_dead(&redis), 0);
}

#[tokio::test]
async fn without_forward_url_other_events_are_acked() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    run_one(&redis, processor_vars(&redis.url(), &api.url()), "meeting-baas/v2/bot_failed.json").await;
    assert!(api.calls().is_empty());
}

#[test]
fn the_openapi_check_tells_valid_from_invalid_requests() {
    use hookstream_tests::fake_api::Call;
    use hookstream_tests::openapi::check;
    let call = |method: &str, path: &str, query: Option<&str>, body: Value| Call {
        method: method.into(),
        path: path.into(),
        query: query.map(String::from),
        headers: Default::default(),
        body: if body.is_null() { Vec::new() } else { serde_json::to_vec(&body).unwrap() },
        at: std::time::Instant::now(),
    };
    let bot =
        json!({"bot_name": "x", "series_id": CREATED_SERIES, "event_id": CREATED_EVENT, "all_occurrences": false});
    assert_eq!(check(&call("POST", &bots_path(), None, bot.clone())), Ok(()));
    assert!(check(&call("POST", &bots_path(), None, json!({"bot_name": "x"}))).is_err(), "series_id is required");
    assert!(check(&call("POST", "/v2/calendars/cal-1/bots", None, bot.clone())).is_err(), "calendar_id must be a UUID");
    assert!(check(&call("POST", &bots_path(), Some("force=true"), bot)).is_err(), "undeclared query parameter");
    assert!(check(&call("PUT", &bots_path(), None, Value::Null)).is_err(), "no such operation");
    assert_eq!(check(&call("GET", &format!("/calendar_events/{UPCOMING}"), None, Value::Null)), Ok(()));
    assert_eq!(
        check(&call("POST", &format!("/calendar_events/{UPCOMING}/bot"), None, json!({"bot_name": "x"}))),
        Ok(())
    );
    assert!(check(&call("POST", &format!("/calendar_events/{UPCOMING}/bot"), None, json!({"bot_name": 5}))).is_err());
    assert_eq!(
        check(&call("DELETE", &format!("/calendar_events/{UPCOMING}/bot"), Some("all_occurrences=false"), Value::Null)),
        Ok(())
    );
}

#[tokio::test]
async fn payloads_of_the_wrong_shape_are_dead_lettered_with_a_reason_and_no_call() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let processor = start_processor(processor_vars(&redis.url(), &api.url())).await;
    let cases: Vec<(&str, Value)> = vec![
        // `data` an array (measured: it panicked the v1 fan-out split).
        ("calendar.sync_events", json!({"event": "calendar.sync_events", "data": [["u1", "u2"]]})),
        ("calendar.sync_events", json!({"event": "calendar.sync_events", "data": {"affected_event_uuids": [1, 2]}})),
        ("calendar.sync_events", json!({"event": "calendar.sync_events", "data": {"affected_event_uuids": "u1"}})),
        ("calendar.event_created", json!({"event": "calendar.event_created", "data": [{"calendar_id": CAL}]})),
        (
            "calendar.event_created",
            json!({"event": "calendar.event_created", "data": {"calendar_id": CAL, "instances": {"event_id": CREATED_EVENT}}}),
        ),
        (
            "calendar.event_updated",
            json!({"event": "calendar.event_updated", "data": {"calendar_id": CAL, "affected_instances": [{"event_id": 7}, {"event_id": CREATED_EVENT}]}}),
        ),
        (
            "calendar.events_synced",
            json!({"event": "calendar.events_synced", "data": {"calendar_id": CAL, "events": [{"series_id": 5, "instances": [{"event_id": CREATED_EVENT}, {"event_id": RECURRING_1}]}]}}),
        ),
        ("calendar.event_cancelled", json!({"event": "calendar.event_cancelled", "data": {"calendar_id": [CAL]}})),
    ];
    for (n, (event, body)) in cases.iter().enumerate() {
        add_event(&redis, event, &serde_json::to_vec(body).unwrap(), &format!("shape-{n}"));
    }
    let dead = dead_after(&redis, cases.len() as u64).await;
    all_acked(&redis).await;
    processor.stop().await;
    assert_eq!(dead.len(), cases.len(), "each dead once: {dead:?}");
    for (_, fields) in &dead {
        assert!(fields["error"].contains("malformed"), "a reason: {}", fields["error"]);
        assert_eq!(fields["deliveries"], "1", "dead-lettered on its first delivery (no panic, no reclaim)");
    }
    assert!(api.calls().is_empty(), "no call for a malformed payload: {:?}", api.log());
}

#[tokio::test]
async fn v2_ids_that_are_not_uuids_are_dead_lettered_whatever_the_policy() {
    for policy in ["all", "none"] {
        let redis = RedisServer::start();
        let api = FakeApi::start().await;
        let mut vars = processor_vars(&redis.url(), &api.url());
        vars.insert("RECORD_POLICY".into(), policy.into());
        let processor = start_processor(vars).await;
        let body = json!({"event": "calendar.event_created", "data": {"calendar_id": CAL, "instances": [{"event_id": "evt-1"}]}});
        add_event(&redis, "calendar.event_created", &serde_json::to_vec(&body).unwrap(), "not-uuids");
        let dead = dead_after(&redis, 1).await;
        processor.stop().await;
        assert!(dead[0].1["error"].contains("not a UUID"), "{policy}: {}", dead[0].1["error"]);
        assert!(api.calls().is_empty(), "{policy}: {:?}", api.log());
    }
}

/// A v2 `calendar.event_updated` naming `events`, all of one series.
fn updated_body(events: &[&str]) -> Vec<u8> {
    let instances: Vec<Value> = events.iter().map(|e| json!({"event_id": e})).collect();
    serde_json::to_vec(&json!({
        "event": "calendar.event_updated",
        "data": {"calendar_id": CAL, "series_id": CREATED_SERIES, "affected_instances": instances},
    }))
    .unwrap()
}

#[tokio::test]
async fn v2_an_update_unschedules_the_bots_the_calendar_no_longer_wants() {
    // Measured: four meetings that each have a bot; the API's current events show one cancelled,
    // one without a meeting URL, one still wanted and one already over. The bots of the first
    // two go; the other two are left as they are.
    let (cancelled, no_url, wanted, over) = (RECURRING_1, RECURRING_2, CREATED_EVENT, CREATED_NO_URL);
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let in_a_day = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let in_a_day_and_an_hour = (chrono::Utc::now() + chrono::Duration::hours(25)).to_rfc3339();
    let upcoming = |d: &mut Value| {
        d["start_time"] = json!(in_a_day);
        d["end_time"] = json!(in_a_day_and_an_hour);
    };
    let body = |id: &str, change: &dyn Fn(&mut Value)| {
        details_with(id, true, true, |d| {
            upcoming(d);
            change(d)
        })
    };
    api.always(
        "GET",
        &details_path(cancelled),
        Reply::json(200, body(cancelled, &|d| d["status"] = json!("cancelled"))),
    );
    api.always("GET", &details_path(no_url), Reply::json(200, body(no_url, &|d| d["meeting_url"] = Value::Null)));
    api.always("GET", &details_path(wanted), Reply::json(200, body(wanted, &|_| {})));
    api.always(
        "GET",
        &details_path(over),
        Reply::json(
            200,
            body(over, &|d| {
                d["start_time"] = json!("2020-06-11T15:00:00Z");
                d["end_time"] = json!("2020-06-11T15:45:00Z");
                d["meeting_url"] = Value::Null;
            }),
        ),
    );
    api.always("DELETE", &bots_path(), Reply::json(200, br#"{"success":true}"#.to_vec()));
    let processor = start_processor(processor_vars(&redis.url(), &api.url())).await;
    add_event(&redis, "calendar.event_updated", &updated_body(&[cancelled, no_url, wanted, over]), "updated-4");
    all_acked(&redis).await;
    processor.stop().await;
    assert_eq!(xlen_dead(&redis), 0, "{:?}", dead_entries(&redis));
    let mut deleted: Vec<String> = api
        .calls_to("DELETE", &bots_path())
        .iter()
        .map(|c| c.json()["event_id"].as_str().unwrap().to_string())
        .collect();
    deleted.sort();
    let mut expected = vec![cancelled.to_string(), no_url.to_string()];
    expected.sort();
    assert_eq!(deleted, expected, "{:?}", api.log());
    assert!(api.calls_to("POST", &bots_path()).is_empty());
    for call in api.calls_to("DELETE", &bots_path()) {
        assert_eq!(call.json()["series_id"], CREATED_SERIES);
        assert_eq!(call.json()["all_occurrences"], false);
    }
    assert_valid(&api.calls());
}

#[tokio::test]
async fn v2_a_delete_refused_as_too_close_to_the_start_is_done() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let in_a_minute = (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339();
    let details = details_with(CREATED_EVENT, true, true, |d| {
        d["status"] = json!("cancelled");
        d["start_time"] = json!(in_a_minute);
    });
    api.always("GET", &details_path(CREATED_EVENT), Reply::json(200, details));
    api.always("DELETE", &bots_path(), Reply::json(409, br#"{"error":"too close to the start"}"#.to_vec()));
    let processor = start_processor(processor_vars(&redis.url(), &api.url())).await;
    add_event(&redis, "calendar.event_updated", &updated_body(&[CREATED_EVENT]), "too-late");
    all_acked(&redis).await;
    processor.stop().await;
    assert_eq!(xlen_dead(&redis), 0, "a 409 is done, not dead: {:?}", dead_entries(&redis));
    assert_eq!(api.calls_to("DELETE", &bots_path()).len(), 1, "not retried");
}

#[tokio::test]
async fn reconcile_entries_are_decided_like_the_webhooks_about_their_meetings() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    script_v1(&api);
    // v2: a cancelled meeting that still has a bot.
    let cancelled = details_with(RECURRING_1, true, true, |d| {
        d["status"] = json!("cancelled");
        d["start_time"] = json!((chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339());
    });
    api.always("GET", &details_path(RECURRING_1), Reply::json(200, cancelled));
    api.always("DELETE", &bots_path(), Reply::json(200, br#"{"success":true}"#.to_vec()));
    let processor = start_processor(processor_vars(&redis.url(), &api.url())).await;
    let entries = [
        json!({"api": "v1", "calendar_id": "cal-v1", "event_id": UPCOMING}),
        json!({"api": "v1", "calendar_id": "cal-v1", "event_id": DELETED}),
        json!({"api": "v1", "calendar_id": "cal-v1", "event_id": NO_URL}),
        json!({"api": "v2", "calendar_id": CAL, "event_id": RECURRING_1}),
        json!({"api": "v2", "calendar_id": "not-a-uuid", "event_id": RECURRING_1}),
    ];
    for (n, payload) in entries.iter().enumerate() {
        add_event(&redis, "hookstream.reconcile", &serde_json::to_vec(payload).unwrap(), &format!("reconcile-{n}"));
    }
    let dead = dead_after(&redis, 1).await;
    all_acked(&redis).await;
    processor.stop().await;
    assert_eq!(dead.len(), 1, "only the malformed one: {dead:?}");
    assert!(dead[0].1["error"].contains("not a UUID"), "{}", dead[0].1["error"]);
    let writes: Vec<String> =
        api.calls().iter().filter(|c| c.method != "GET").map(|c| format!("{} {}", c.method, c.path)).collect();
    let mut writes = writes;
    writes.sort();
    let mut expected = vec![
        format!("POST /calendar_events/{UPCOMING}/bot"),
        format!("DELETE /calendar_events/{DELETED}/bot"),
        format!("DELETE {}", bots_path()),
    ];
    expected.sort();
    assert_eq!(writes, expected, "{:?}", api.log());
    assert_valid(&api.calls());
}

#[tokio::test]
async fn a_v2_cancel_that_lists_its_events_under_instances_is_dead_lettered_with_the_field_it_lacks() {
    // Tried as a newcomer would: a cancel sent with `instances` was acked with no call and no
    // word. It names no event where a cancel's events are (`cancelled_instances`).
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let processor = start_processor(processor_vars(&redis.url(), &api.url())).await;
    let mut body = hookstream_tests::fixture_json("meeting-baas/v2/calendar_event_cancelled.json");
    let instances = body["data"]["cancelled_instances"].take();
    body["data"]["instances"] = instances;
    body["data"].as_object_mut().unwrap().remove("cancelled_instances");
    add_event(&redis, "calendar.event_cancelled", &serde_json::to_vec(&body).unwrap(), "cancel-wrong-field");
    let dead = dead_after(&redis, 1).await;
    all_acked(&redis).await;
    processor.stop().await;
    assert!(dead[0].1["error"].contains("cancelled_instances"), "{}", dead[0].1["error"]);
    assert!(api.calls().is_empty(), "{:?}", api.log());
}
