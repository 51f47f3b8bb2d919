//! Every result arrives, and a broken calendar is seen (SPEC §1.8, §4.5, §4.6): a final webhook
//! that never came is asked for again and forwarded once; one that came, one still in its grace
//! period or outside the lookback is not; calendar connections kept from webhooks and from the
//! calendar list, counted, listed, and a calendar back to `active` caught up at once.

mod common;

use common::*;
use hookstream_tests::fake_api::{EndedBot, FakeApi, Reply, ServeResults};
use hookstream_tests::openapi::assert_valid;
use hookstream_tests::{eventually, fixture, fixture_json, RedisServer};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CAL: &str = "647da78e-783d-4a7a-be5c-117ad3b10d5c";
const MISSING: &str = "e8570526-3b2c-4776-ad1c-1303ccb5bc2d";
const CAME: &str = "0a5624f6-4c44-4497-83a6-af4f1220adf6";
const IN_GRACE: &str = "5b1f8f0e-2d7c-4a55-9a43-8c3f9d1e7a21";
const TOO_OLD: &str = "9f2d4c6b-1a3e-4b5f-8c7d-2e4f6a8b0c1d";

/// A processor reconciling v2 every second, forwarding to `api`'s `/hook`.
fn vars(redis: &RedisServer, api: &FakeApi) -> HashMap<String, String> {
    let mut vars = processor_vars(&redis.url(), &api.url());
    for (k, v) in [
        ("RECONCILE_INTERVAL_SECS", "1"),
        ("RECONCILE_APIS", "v2"),
        ("RECONCILE_READS_PER_SEC", "1000"),
        ("API_WRITES_PER_SEC", "0"),
    ] {
        vars.insert(k.into(), v.into());
    }
    vars.insert("FORWARD_URL".into(), format!("{}/hook", api.url()));
    vars
}

/// One calendar, listed with `status`, and no events.
fn one_calendar(api: &FakeApi, status: &'static str) {
    let status = Arc::new(Mutex::new(status));
    calendar_with_status(api, status);
}

fn calendar_with_status(api: &FakeApi, status: Arc<Mutex<&'static str>>) {
    api.route("GET", "/v2/calendars", move |_, _| {
        let body = json!({"success": true, "cursor": null,
            "data": [{"calendar_id": CAL, "calendar_platform": "google", "status": *status.lock().unwrap()}]});
        Reply::json(200, serde_json::to_vec(&body).unwrap())
    });
    api.always(
        "GET",
        &format!("/v2/calendars/{CAL}/events"),
        Reply::json(200, br#"{"success":true,"data":[],"cursor":null}"#.to_vec()),
    );
}

fn passes(api: &FakeApi) -> usize {
    api.calls_to("GET", "/v2/calendars").len()
}

fn forwarded(api: &FakeApi, identity: &str) -> usize {
    api.calls_to("POST", "/hook").iter().filter(|c| c.header("x-hookstream-id") == Some(identity)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_result_that_never_came_is_asked_for_once_and_forwarded_once() {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    let api = FakeApi::start().await;
    api.always("POST", "/hook", Reply::status(200));
    one_calendar(&api, "active");
    let hour = Duration::from_secs(3_600);
    let bots = vec![
        EndedBot::ended(MISSING, "completed", hour),
        EndedBot::ended(CAME, "failed", hour),
        EndedBot::ended(IN_GRACE, "completed", Duration::from_secs(60)),
        EndedBot::ended(TOO_OLD, "completed", 30 * hour),
    ];
    // The one whose result came: its final webhook reached the ingress (a per-bot callback).
    let came = bots[1].final_webhook();
    let r = post_signed(&ingress, "svix", SECRET, "msg_came", now(), &came).await;
    assert_eq!(r.status(), 200);
    let results = api.serve_results(bots, ingress.webhook_url(), SECRET.into());
    let processor = start_processor(vars(&redis, &api)).await;
    eventually("the missing result is resent and forwarded", || async {
        (forwarded(&api, &format!("bot.completed:{MISSING}")) == 1).then_some(())
    })
    .await;
    // More passes: the bot's result is known now, and the hour has not passed either way.
    let seen = passes(&api);
    eventually("three more passes", || async { (passes(&api) >= seen + 3).then_some(()) }).await;
    // Converged: even with the hour's hold gone, a pass asks nothing (the result came).
    let _: i64 = redis::cmd("DEL").arg(format!("{{hookstream}}:resend:{MISSING}")).query(&mut redis.con()).unwrap();
    let seen = passes(&api);
    eventually("two more passes", || async { (passes(&api) >= seen + 2).then_some(()) }).await;
    processor.stop().await;
    ingress.stop().await;
    assert_eq!(results.resent(), vec![MISSING.to_string()], "only the missing one, once");
    assert_eq!(forwarded(&api, &format!("bot.completed:{MISSING}")), 1);
    assert_eq!(forwarded(&api, &format!("bot.failed:{CAME}")), 1, "the one that came, forwarded once");
    assert_eq!(xlen_dead(&redis), 0);
    // Every request valid for the v2 OpenAPI document; the bot list asked with its filters.
    let lists = api.calls_to("GET", "/v2/bots");
    assert!(!lists.is_empty());
    for call in &lists {
        let q = call.query.clone().unwrap_or_default();
        assert!(
            q.contains("status=completed%2Cfailed") && q.contains("ended_after=") && q.contains("limit=250"),
            "{q}"
        );
    }
    assert_valid(&api.calls().into_iter().filter(|c| c.path != "/hook").collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bot_list_is_read_page_by_page_at_the_api_s_minimum() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    one_calendar(&api, "active");
    // 600 ended bots whose results all came (their dedup keys are there): 3 pages of 250.
    let hour = Duration::from_secs(3_600);
    let ids: Vec<String> = (0..600).map(|i| format!("00000000-0000-4000-8000-{i:012}")).collect();
    let bots: Vec<EndedBot> = ids.iter().map(|id| EndedBot::ended(id, "completed", hour)).collect();
    for id in &ids {
        let key = shared::keys::Keys::new("hookstream").dedup(&format!("bot.completed:{id}"));
        let _: () = redis::cmd("SET").arg(key).arg("1-0").query(&mut redis.con()).unwrap();
    }
    let results = api.serve_results(bots, "http://127.0.0.1:9/".into(), SECRET.into());
    let mut vars = vars(&redis, &api);
    vars.insert("RECONCILE_INTERVAL_SECS".into(), "0".into());
    let config = processor::ProcessorConfig::read(&shared::config::Reader::new(&vars)).unwrap();
    let done = processor::cli::operate(&config, None, processor::cli::Command::Reconcile { dry_run: false }).await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert!(done.stdout.contains("600 bots ended, 0 missing results"), "{}", done.stdout);
    assert_eq!(
        api.calls_to("GET", "/v2/bots").len(),
        3,
        "⌈600 ÷ 250⌉ = 3 pages: the API's minimum (the last one answers no cursor)"
    );
    assert!(results.resent().is_empty(), "a converged pass asks nothing");
    assert_eq!(xlen(&redis), 0, "and appends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dry_run_names_missing_results_and_appends_nothing() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    one_calendar(&api, "active");
    let results = api.serve_results(
        vec![EndedBot::ended(MISSING, "completed", Duration::from_secs(3_600))],
        "http://127.0.0.1:9/".into(),
        SECRET.into(),
    );
    let mut vars = vars(&redis, &api);
    vars.insert("RECONCILE_INTERVAL_SECS".into(), "0".into());
    let config = processor::ProcessorConfig::read(&shared::config::Reader::new(&vars)).unwrap();
    let dry = processor::cli::operate(&config, None, processor::cli::Command::Reconcile { dry_run: true }).await;
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(dry.stdout.contains(&format!("v2 bot {MISSING} missing result")), "{}", dry.stdout);
    assert_eq!(xlen(&redis), 0);
    let real = processor::cli::operate(&config, None, processor::cli::Command::Reconcile { dry_run: false }).await;
    assert!(real.stdout.contains(&format!("v2 bot {MISSING} missing result")), "{}", real.stdout);
    let entries = entries(&redis);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].1["event"], b"hookstream.resend");
    let payload: serde_json::Value = serde_json::from_slice(&entries[0].1["payload"]).unwrap();
    assert_eq!(payload, json!({"api": "v2", "bot_id": MISSING}));
    // Within the hour, another pass does not ask again.
    let again = processor::cli::operate(&config, None, processor::cli::Command::Reconcile { dry_run: false }).await;
    assert!(!again.stdout.contains("missing result\n"), "{}", again.stdout);
    assert_eq!(xlen(&redis), 1);
    assert!(results.resent().is_empty(), "the entry is what asks, once processed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_hours_zero_lists_no_bots() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    one_calendar(&api, "active");
    api.serve_results(
        vec![EndedBot::ended(MISSING, "completed", Duration::from_secs(3_600))],
        String::new(),
        SECRET.into(),
    );
    let mut vars = vars(&redis, &api);
    vars.insert("RECONCILE_RESULTS_HOURS".into(), "0".into());
    let processor = start_processor(vars).await;
    eventually("three passes", || async { (passes(&api) >= 3).then_some(()) }).await;
    processor.stop().await;
    assert!(api.calls_to("GET", "/v2/bots").is_empty(), "{:?}", api.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resend_answered_404_or_409_is_done() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    api.always("POST", &format!("/v2/bots/{MISSING}/resend-webhook"), Reply::status(404));
    api.always(
        "POST",
        &format!("/v2/bots/{CAME}/resend-webhook"),
        Reply::json(409, br#"{"error":"not ended"}"#.to_vec()),
    );
    let mut vars = vars(&redis, &api);
    vars.insert("RECONCILE_INTERVAL_SECS".into(), "0".into());
    let processor = start_processor(vars).await;
    for bot in [MISSING, CAME] {
        let payload = serde_json::to_vec(&json!({"api": "v2", "bot_id": bot})).unwrap();
        add_event(&redis, "hookstream.resend", &payload, &format!("resend:{bot}"));
    }
    all_acked(&redis).await;
    processor.stop().await;
    assert_eq!(xlen_dead(&redis), 0, "{:?}", dead_entries(&redis));
    assert_eq!(api.calls().len(), 2, "each asked once: {:?}", api.log());
}

fn calendar_record(redis: &RedisServer) -> Option<serde_json::Value> {
    let raw: Option<String> =
        redis::cmd("HGET").arg("{hookstream}:calendars").arg(CAL).query(&mut redis.con()).unwrap();
    raw.map(|r| serde_json::from_str(&r).unwrap())
}

async fn connections(metrics: &std::net::SocketAddr, status: &str) -> f64 {
    let text = scrape(&format!("http://{metrics}/metrics")).await;
    metric(&text, "hookstream_calendar_connections", &format!("{{status=\"{status}\"}}"))
}

/// A calendar's connection breaks (a webhook says so): counted, named by its status, listed by
/// `processor status`; back to active (another webhook): cleared, and its drift fixed at once —
/// not at the next pass an hour away.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_calendar_is_seen_and_caught_up_when_it_returns() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    // One meeting that wants a bot and has none: the webhooks sent while the calendar was broken
    // never came.
    let wanted = "ad307589-17b9-4f8a-9489-6b4c48f0c40d";
    let bot = Arc::new(Mutex::new(false));
    let in_a_day = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let in_a_day_and_an_hour = (chrono::Utc::now() + chrono::Duration::hours(25)).to_rfc3339();
    let event = move |bot: bool| {
        json!({"event_id": wanted, "series_id": "a6ae6a86-6831-4422-a646-d9442a1b0ec8", "status": "confirmed",
               "start_time": in_a_day, "end_time": in_a_day_and_an_hour, "calendar_id": CAL,
               "meeting_url": "https://meet.example.com/x", "bot_scheduled": bot})
    };
    let (b, e) = (bot.clone(), event.clone());
    api.route("GET", &format!("/v2/calendars/{CAL}/events"), move |_, _| {
        let page = json!({"success": true, "data": [e(*b.lock().unwrap())], "cursor": null});
        Reply::json(200, serde_json::to_vec(&page).unwrap())
    });
    let (b, e) = (bot.clone(), event.clone());
    api.route("GET", &format!("/v2/calendars/{CAL}/events/{wanted}"), move |_, _| {
        let mut d = fixture_json("meeting-baas/api/v2_event_details.json");
        d["data"] = e(*b.lock().unwrap());
        Reply::json(200, serde_json::to_vec(&d).unwrap())
    });
    let b = bot.clone();
    api.route("POST", &format!("/v2/calendars/{CAL}/bots"), move |_, _| {
        *b.lock().unwrap() = true;
        Reply::json(201, fixture("meeting-baas/api/v2_create_bots_response.json"))
    });
    let mut vars = vars(&redis, &api);
    // Passes an hour apart: only the return to active can explain a fix within this test.
    vars.insert("RECONCILE_INTERVAL_SECS".into(), "3600".into());
    let processor = start_processor(vars.clone()).await;
    add_event(&redis, "calendar.connection_error", &fixture("meeting-baas/v2/calendar_connection_error.json"), "c1");
    all_acked(&redis).await;
    let record = calendar_record(&redis).expect("recorded");
    assert_eq!(record["status"], "error");
    assert_eq!(record["message"], "OAuth token refresh failed");
    assert_eq!(connections(&processor.metrics, "error").await, 1.0);
    let config = processor::ProcessorConfig::read(&shared::config::Reader::new(&vars)).unwrap();
    let status = processor::cli::operate(&config, None, processor::cli::Command::Status).await;
    assert!(status.stdout.contains(&format!("calendar  {CAL}  error")), "{}", status.stdout);
    assert!(!*bot.lock().unwrap(), "a connection event changes no bot");

    add_event(
        &redis,
        "calendar.connection_updated",
        &fixture("meeting-baas/v2/calendar_connection_updated_active.json"),
        "c2",
    );
    eventually("the calendar's drift is fixed at once", || async { bot.lock().unwrap().then_some(()) }).await;
    all_acked(&redis).await;
    assert_eq!(calendar_record(&redis).expect("recorded")["status"], "active");
    assert_eq!(connections(&processor.metrics, "error").await, 0.0);
    assert_eq!(connections(&processor.metrics, "active").await, 1.0);
    let status = processor::cli::operate(&config, None, processor::cli::Command::Status).await;
    assert!(status.stdout.contains("calendars  1 known, 0 not active"), "{}", status.stdout);
    assert!(passes(&api) == 0, "no pass ran: the calendar was caught up on its own");

    add_event(
        &redis,
        "calendar.connection_deleted",
        &fixture("meeting-baas/v2/calendar_connection_deleted.json"),
        "c3",
    );
    all_acked(&redis).await;
    processor.stop().await;
    assert!(calendar_record(&redis).is_none(), "a deleted connection is forgotten");
    assert_eq!(xlen_dead(&redis), 0, "{:?}", dead_entries(&redis));
}

/// A status change that no webhook reported — only the calendar list shows it — is recorded
/// and counted by the next pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_status_change_seen_only_in_the_calendar_list_is_counted() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let status = Arc::new(Mutex::new("active"));
    calendar_with_status(&api, status.clone());
    let processor = start_processor(vars(&redis, &api)).await;
    eventually("recorded active", || async {
        (calendar_record(&redis).is_some_and(|r| r["status"] == "active")).then_some(())
    })
    .await;
    *status.lock().unwrap() = "revoked";
    eventually("recorded revoked", || async {
        (calendar_record(&redis).is_some_and(|r| r["status"] == "revoked")).then_some(())
    })
    .await;
    assert_eq!(connections(&processor.metrics, "revoked").await, 1.0);
    assert_eq!(connections(&processor.metrics, "active").await, 0.0);
    processor.stop().await;
}
