//! The reconciler (SPEC §4.4): missed webhooks repaired within an interval, both ways, for v1
//! and v2, with small pages; converged calendars cost nothing; `--dry-run`; off means off; an
//! API that misbehaves cannot trap the pass.

mod common;

use common::*;
use hookstream_tests::fake_api::{Call, FakeApi, Reply};
use hookstream_tests::openapi::assert_valid;
use hookstream_tests::{eventually, eventually_within, fixture_json, RedisServer};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const CAL_A: &str = "647da78e-783d-4a7a-be5c-117ad3b10d5c";
const CAL_B: &str = "9d1c1f1e-5b7a-4c2e-8f0a-2b1e3c4d5e6f";
const SERIES: &str = "a6ae6a86-6831-4422-a646-d9442a1b0ec8";
/// Wanted, no bot: a webhook about it was lost.
const WANTED: &str = "ad307589-17b9-4f8a-9489-6b4c48f0c40d";
/// Cancelled, still a bot: the cancel webhook was lost.
const CANCELLED: &str = "487471b7-0149-44ed-840b-97d920e06829";
/// Wanted and has its bot: already right.
const MATCHING: &str = "d4e39f93-a128-45f4-9b27-140042a5efa5";

fn later(hours: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::hours(hours)).to_rfc3339()
}

fn cursor(call: &Call) -> Option<String> {
    call.query.as_deref()?.split('&').find_map(|p| p.strip_prefix("cursor=")).map(str::to_string)
}

/// The v2 state: event id → (status, bot).
type V2State = Arc<Mutex<HashMap<&'static str, (&'static str, bool)>>>;

fn v2_event(id: &str, status: &str, bot: bool) -> Value {
    json!({"event_id": id, "series_id": SERIES, "status": status, "start_time": later(24), "end_time": later(25),
           "meeting_url": "https://meet.example.com/x", "calendar_id": CAL_A, "bot_scheduled": bot})
}

/// A stateful v2 API: two pages of calendars, CAL_A's events in pages of two; the calendar's
/// owner organises every meeting.
fn v2_api(api: &FakeApi) -> V2State {
    v2_api_organised(api, true)
}

/// [`v2_api`], where the owner organises the meetings or not (only the details say).
fn v2_api_organised(api: &FakeApi, organizer: bool) -> V2State {
    let state: V2State = Arc::new(Mutex::new(HashMap::from([
        (WANTED, ("confirmed", false)),
        (CANCELLED, ("cancelled", true)),
        (MATCHING, ("confirmed", true)),
    ])));
    api.route("GET", "/v2/calendars", |call, _| {
        let body = match cursor(call).as_deref() {
            None => json!({"success": true, "data": [{"calendar_id": CAL_A}], "cursor": "c2"}),
            Some(_) => json!({"success": true, "data": [{"calendar_id": CAL_B}], "cursor": null}),
        };
        Reply::json(200, serde_json::to_vec(&body).unwrap())
    });
    let s = state.clone();
    api.route("GET", &format!("/v2/calendars/{CAL_A}/events"), move |call, _| {
        let st = s.lock().unwrap();
        let e = |id: &'static str| v2_event(id, st[id].0, st[id].1);
        let body = match cursor(call).as_deref() {
            None => json!({"success": true, "data": [e(WANTED), e(MATCHING)], "cursor": "p2"}),
            Some(_) => json!({"success": true, "data": [e(CANCELLED)], "cursor": null}),
        };
        Reply::json(200, serde_json::to_vec(&body).unwrap())
    });
    api.always(
        "GET",
        &format!("/v2/calendars/{CAL_B}/events"),
        Reply::json(200, br#"{"success":true,"data":[],"cursor":null}"#.to_vec()),
    );
    // No bot ended: the results pass (SPEC §4.5) finds nothing to ask for.
    api.always("GET", "/v2/bots", Reply::json(200, br#"{"success":true,"data":[],"cursor":null}"#.to_vec()));
    for id in [WANTED, CANCELLED, MATCHING] {
        let s = state.clone();
        api.route("GET", &format!("/v2/calendars/{CAL_A}/events/{id}"), move |_, _| {
            let (status, bot) = s.lock().unwrap()[id];
            let mut d = fixture_json("meeting-baas/api/v2_event_details.json");
            d["data"] = v2_event(id, status, bot);
            d["data"]["attendees"] = json!([{"self": true, "organizer": organizer}]);
            Reply::json(200, serde_json::to_vec(&d).unwrap())
        });
    }
    let s = state.clone();
    api.route("POST", &format!("/v2/calendars/{CAL_A}/bots"), move |call, _| {
        let id = call.json()["event_id"].as_str().unwrap().to_string();
        let mut st = s.lock().unwrap();
        if let Some(entry) = st.iter_mut().find(|(k, _)| **k == id) {
            entry.1 .1 = true;
        }
        Reply::json(201, hookstream_tests::fixture("meeting-baas/api/v2_create_bots_response.json"))
    });
    let s = state.clone();
    api.route("DELETE", &format!("/v2/calendars/{CAL_A}/bots"), move |call, _| {
        let id = call.json()["event_id"].as_str().unwrap().to_string();
        let mut st = s.lock().unwrap();
        if let Some(entry) = st.iter_mut().find(|(k, _)| **k == id) {
            entry.1 .1 = false;
        }
        Reply::json(200, br#"{"success":true}"#.to_vec())
    });
    state
}

fn reconcile_vars(redis: &RedisServer, api: &FakeApi, apis: &str, interval: &str) -> HashMap<String, String> {
    let mut vars = processor_vars(&redis.url(), &api.url());
    vars.insert("RECONCILE_INTERVAL_SECS".into(), interval.into());
    vars.insert("RECONCILE_APIS".into(), apis.into());
    vars.insert("RECONCILE_READS_PER_SEC".into(), "1000".into());
    vars
}

fn writes(api: &FakeApi) -> Vec<String> {
    let mut w: Vec<String> = api
        .calls()
        .iter()
        .filter(|c| c.method != "GET")
        .map(|c| format!("{} {}", c.method, c.json()["event_id"].as_str().unwrap_or(&c.path)))
        .collect();
    w.sort();
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missed_v2_webhooks_are_repaired_both_ways_and_a_converged_calendar_costs_nothing() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let state = v2_api(&api);
    let a = start_processor(reconcile_vars(&redis, &api, "v2", "1")).await;
    let b = start_processor(reconcile_vars(&redis, &api, "v2", "1")).await;
    eventually("the drift is repaired", || async {
        let st = state.lock().unwrap();
        (st[WANTED].1 && !st[CANCELLED].1).then_some(())
    })
    .await;
    all_acked(&redis).await;
    let expected = vec![format!("DELETE {CANCELLED}"), format!("POST {WANTED}")];
    assert_eq!(writes(&api), expected, "each drifted meeting fixed once, the matching one left alone");
    // Converged: two more passes list everything and write nothing, append nothing.
    let entries = xlen(&redis);
    let lists = api.calls_to("GET", "/v2/calendars").len();
    eventually("two more passes", || async { (api.calls_to("GET", "/v2/calendars").len() >= lists + 4).then_some(()) })
        .await;
    a.stop().await;
    b.stop().await;
    assert_eq!(writes(&api), expected, "a converged calendar costs no writes");
    assert_eq!(xlen(&redis), entries, "and no entries");
    assert_eq!(xlen_dead(&redis), 0);
    // Two replicas, one pass per interval: each pass lists the calendars in two pages.
    let passes = api.calls_to("GET", "/v2/calendars").iter().filter(|c| cursor(c).is_none()).count();
    let details = api.calls().iter().filter(|c| c.path.ends_with(WANTED) || c.path.ends_with(CANCELLED)).count();
    assert!(details >= 2, "the entries read the current events");
    assert!(passes >= 2);
    for call in api.calls_to("GET", &format!("/v2/calendars/{CAL_A}/events")) {
        let q = call.query.clone().unwrap_or_default();
        assert!(q.contains("show_cancelled=true") && q.contains("start_date="), "{q}");
        // The window ends RECONCILE_HORIZON_HOURS (168) from now: nothing past it is read.
        let url = reqwest::Url::parse(&format!("http://x/?{q}")).unwrap();
        let end = url.query_pairs().find(|(k, _)| k == "end_date").map(|(_, v)| v.to_string()).expect("end_date");
        let end = chrono::DateTime::parse_from_rfc3339(&end).unwrap().with_timezone(&chrono::Utc);
        let hours = (end - chrono::Utc::now()).num_minutes() as f64 / 60.0;
        assert!((167.0..=168.0).contains(&hours), "the window ends {hours} h from now: {q}");
    }
    assert_valid(&api.calls());
}

#[tokio::test]
async fn processor_reconcile_dry_run_prints_the_drift_and_appends_nothing_and_a_pass_appends_it() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let _state = v2_api(&api);
    let vars = reconcile_vars(&redis, &api, "v2", "0");
    let config = processor::ProcessorConfig::read(&shared::config::Reader::new(&vars)).unwrap();
    let dry = processor::cli::operate(&config, None, processor::cli::Command::Reconcile { dry_run: true }).await;
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains(&format!("v2 calendar {CAL_A} event {WANTED}: missing bot")), "{}", dry.stdout);
    assert!(dry.stdout.contains(&format!("v2 calendar {CAL_A} event {CANCELLED}: extra bot")), "{}", dry.stdout);
    assert!(!dry.stdout.contains(MATCHING), "{}", dry.stdout);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis.con()).unwrap();
    assert_eq!(
        keys,
        vec!["{hookstream}:ratelimit:reconcile-reads".to_string()],
        "a dry run appends nothing (only its reads are paced)"
    );
    assert!(writes(&api).is_empty(), "the reconciler never writes to the API");
    let done = processor::cli::operate(&config, None, processor::cli::Command::Reconcile { dry_run: false }).await;
    assert_eq!(done.code, 0, "{done:?}");
    let entries = entries(&redis);
    assert_eq!(entries.len(), 2, "one entry per drifted meeting");
    for (_, fields) in &entries {
        assert_eq!(fields["event"], b"hookstream.reconcile");
        assert_eq!(fields["source"], b"reconciler");
    }
    assert!(writes(&api).is_empty());
    assert_valid(&api.calls());
}

#[tokio::test]
async fn reconcile_exits_69_when_it_cannot_list() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    api.always("GET", "/v2/calendars", Reply::status(401));
    let vars = reconcile_vars(&redis, &api, "v2", "0");
    let config = processor::ProcessorConfig::read(&shared::config::Reader::new(&vars)).unwrap();
    let done = processor::cli::operate(&config, None, processor::cli::Command::Reconcile { dry_run: false }).await;
    assert_eq!(done.code, 69, "{done:?}");
    assert!(done.stderr.contains("401"), "{}", done.stderr);
}

#[tokio::test]
async fn a_repeating_cursor_ends_that_listing_and_the_other_calendars_are_still_reconciled() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let _state = v2_api(&api);
    // CAL_B's events never end: the same cursor again and again.
    api.always(
        "GET",
        &format!("/v2/calendars/{CAL_B}/events"),
        Reply::json(200, br#"{"success":true,"data":[],"cursor":"again"}"#.to_vec()),
    );
    let vars = reconcile_vars(&redis, &api, "v2", "0");
    let config = processor::ProcessorConfig::read(&shared::config::Reader::new(&vars)).unwrap();
    let done = processor::cli::operate(&config, None, processor::cli::Command::Reconcile { dry_run: true }).await;
    assert_eq!(done.code, 0, "{done:?}");
    assert!(done.stderr.contains("repeated the cursor"), "{}", done.stderr);
    assert!(done.stdout.contains(WANTED) && done.stdout.contains(CANCELLED), "{}", done.stdout);
    assert!(api.calls_to("GET", &format!("/v2/calendars/{CAL_B}/events")).len() <= 3, "bounded");
}

#[tokio::test]
async fn missed_v1_webhooks_are_repaired() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    api.always(
        "GET",
        "/calendars/",
        Reply::json(200, br#"[{"uuid":"cal-v1","name":"c","email":"e","google_id":"g","resource_id":"r"}]"#.to_vec()),
    );
    let upcoming = fixture_json("meeting-baas/api/v1_calendar_event_upcoming.json");
    let mut wanted = upcoming.clone();
    wanted["uuid"] = json!("v1-wanted");
    let mut deleted = fixture_json("meeting-baas/api/v1_calendar_event_scheduled.json");
    deleted["uuid"] = json!("v1-deleted");
    deleted["deleted"] = json!(true);
    let (w, d) = (wanted.clone(), deleted.clone());
    api.route("GET", "/calendar_events/", move |call, _| {
        let body = match cursor(call).as_deref() {
            None => json!({"data": [w.clone()], "next": "n2"}),
            Some(_) => json!({"data": [d.clone()], "next": null}),
        };
        Reply::json(200, serde_json::to_vec(&body).unwrap())
    });
    api.always("GET", "/calendar_events/v1-wanted", Reply::json(200, serde_json::to_vec(&wanted).unwrap()));
    api.always("GET", "/calendar_events/v1-deleted", Reply::json(200, serde_json::to_vec(&deleted).unwrap()));
    api.always(
        "POST",
        "/calendar_events/v1-wanted/bot",
        Reply::json(200, hookstream_tests::fixture("meeting-baas/api/v1_schedule_response.json")),
    );
    api.always("DELETE", "/calendar_events/v1-deleted/bot", Reply::json(200, b"{}".to_vec()));
    let processor = start_processor(reconcile_vars(&redis, &api, "v1", "1")).await;
    eventually("both repaired", || async {
        (api.calls_to("POST", "/calendar_events/v1-wanted/bot").len() == 1
            && api.calls_to("DELETE", "/calendar_events/v1-deleted/bot").len() == 1)
            .then_some(())
    })
    .await;
    all_acked(&redis).await;
    processor.stop().await;
    for call in api.calls_to("GET", "/calendar_events/") {
        let q = call.query.clone().unwrap_or_default();
        assert!(
            q.contains("calendar_id=cal-v1") && q.contains("start_date_gte=") && q.contains("start_date_lte="),
            "{q}"
        );
    }
    assert_valid(&api.calls());
}

#[tokio::test]
async fn reconcile_interval_zero_never_lists() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let _state = v2_api(&api);
    let processor = start_processor(reconcile_vars(&redis, &api, "v2", "0")).await;
    // A webhook goes through (so the processor is running) and nothing is listed.
    add_event(&redis, "bot.completed", b"{}", "x");
    all_acked(&redis).await;
    processor.stop().await;
    assert!(api.calls_to("GET", "/v2/calendars").is_empty(), "{:?}", api.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_reconciles_the_versions_whose_calendar_webhooks_were_processed_and_status_shows_the_pass() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let state = v2_api(&api);
    api.always("GET", "/calendars/", Reply::json(200, b"[]".to_vec()));
    let processor = start_processor(reconcile_vars(&redis, &api, "auto", "1")).await;
    // No calendar webhook yet: nothing is listed. Then a v2 webhook is processed.
    add_event(&redis, "bot.completed", b"{}", "not-a-calendar-event");
    all_acked(&redis).await;
    let body = json!({"event": "calendar.event_updated", "data": {"calendar_id": CAL_A, "affected_instances": [{"event_id": MATCHING, "series_id": SERIES}]}});
    add_event(&redis, "calendar.event_updated", &serde_json::to_vec(&body).unwrap(), "v2-webhook");
    eventually("v2 is reconciled", || async { (state.lock().unwrap()[WANTED].1).then_some(()) }).await;
    all_acked(&redis).await;
    // The pass records its metrics once it is over (the entries it queued may be done before).
    let metrics = eventually("the pass recorded", || async {
        let text = scrape(&format!("http://{}/metrics", processor.metrics)).await;
        (metric(&text, "hookstream_reconcile_drift_total", r#"{api="v2",kind="missing_bot"}"#) >= 1.0).then_some(text)
    })
    .await;
    processor.stop().await;
    assert!(api.calls_to("GET", "/calendars/").is_empty(), "v1 was never seen: not listed");
    assert!(metric(&metrics, "hookstream_reconcile_runs_total", r#"{result="ok"}"#) >= 1.0, "{metrics}");
    assert!(
        metric(&metrics, "hookstream_reconcile_drift_total", r#"{api="v2",kind="missing_bot"}"#) >= 1.0,
        "{metrics}"
    );
    assert!(metric(&metrics, "hookstream_reconcile_last_success_timestamp_seconds", "") > 0.0, "{metrics}");
    let vars = reconcile_vars(&redis, &api, "auto", "0");
    let config = processor::ProcessorConfig::read(&shared::config::Reader::new(&vars)).unwrap();
    let status = processor::cli::operate(&config, None, processor::cli::Command::Status).await;
    assert!(status.stdout.contains("reconcile  last pass") && status.stdout.contains("(ok)"), "{}", status.stdout);
}

#[tokio::test]
async fn organizer_policy_on_v2_reads_the_candidates_details_and_decides() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    // The owner organises none of CAL_A's meetings: the list cannot tell (no attendees), the
    // details can.
    let _state = v2_api_organised(&api, false);
    let mut vars = reconcile_vars(&redis, &api, "v2", "0");
    vars.insert("RECORD_POLICY".into(), "organizer".into());
    let config = processor::ProcessorConfig::read(&shared::config::Reader::new(&vars)).unwrap();
    let done = processor::cli::operate(&config, None, processor::cli::Command::Reconcile { dry_run: false }).await;
    assert_eq!(done.code, 0, "{done:?}");
    let processor = start_processor(vars).await;
    all_acked(&redis).await;
    processor.stop().await;
    // Not the owner's: no bot for the wanted one, and the matching one's bot goes (not wanted by
    // this policy); the cancelled one's too.
    let expected = vec![format!("DELETE {CANCELLED}"), format!("DELETE {MATCHING}")];
    assert_eq!(writes(&api), expected, "{:?}", api.log());
    assert!(
        api.calls().iter().any(|c| c.path.ends_with(WANTED) && c.method == "GET" && c.path.contains("/events/")),
        "details read"
    );
    assert_valid(&api.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_lease_holder_blocks_the_pass_until_its_lease_lapses_then_another_replica_reconciles() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let state = v2_api(&api);
    // A replica took this interval's lease and died (SIGKILL): nobody renews or runs it.
    let _: () = redis::cmd("SET")
        .arg("{hookstream}:reconcile")
        .arg("killed-replica")
        .arg("PX")
        .arg(2500)
        .query(&mut redis.con())
        .unwrap();
    let processor = start_processor(reconcile_vars(&redis, &api, "v2", "1")).await;
    eventually("the dead holder's lease lapses", || async {
        let ttl: i64 = redis::cmd("PTTL").arg("{hookstream}:reconcile").query(&mut redis.con()).unwrap();
        if ttl > 200 {
            assert!(api.calls_to("GET", "/v2/calendars").is_empty(), "listed while another replica held the lease");
        }
        (ttl < 0).then_some(())
    })
    .await;
    eventually("another replica reconciled", || async {
        let st = state.lock().unwrap();
        (st[WANTED].1 && !st[CANCELLED].1).then_some(())
    })
    .await;
    processor.stop().await;
}

/// A replica reconciling alone keeps the interval: finding its own lease (left by its last
/// pass, or still running when its jittered sleep ends early) it renews it and reconciles,
/// where it used to skip the interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_finding_its_own_lease_reconciles_instead_of_skipping() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let _state = v2_api(&api);
    let vars = reconcile_vars(&redis, &api, "v2", "1");
    let holder = vars["CONSUMER_NAME"].clone();
    // Its own lease, as its last pass left it, for far longer than the interval.
    let _: () = redis::cmd("SET")
        .arg("{hookstream}:reconcile")
        .arg(&holder)
        .arg("PX")
        .arg(600_000)
        .query(&mut redis.con())
        .unwrap();
    let processor = start_processor(vars).await;
    eventually("a pass under its own lease", || async {
        (!api.calls_to("GET", "/v2/calendars").is_empty()).then_some(())
    })
    .await;
    processor.stop().await;
}

/// A pass longer than the interval keeps the lease (renewed while it runs): a second replica
/// does not start another pass meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pass_longer_than_the_interval_keeps_its_lease() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let gate = hookstream_tests::fake_api::Gate::new();
    api.always(
        "GET",
        "/v2/calendars",
        Reply::json(200, br#"{"success":true,"data":[],"cursor":null}"#.to_vec()).held(&gate),
    );
    let a = start_processor(reconcile_vars(&redis, &api, "v2", "1")).await;
    eventually("a pass is listing", || async { (api.calls_to("GET", "/v2/calendars").len() == 1).then_some(()) }).await;
    let holder: String = redis::cmd("GET").arg("{hookstream}:reconcile").query(&mut redis.con()).unwrap();
    let b = start_processor(reconcile_vars(&redis, &api, "v2", "1")).await;
    // The pass goes on for three intervals: the scenario, not a poll.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let still: Option<String> = redis::cmd("GET").arg("{hookstream}:reconcile").query(&mut redis.con()).unwrap();
    assert_eq!(still.as_deref(), Some(holder.as_str()), "the lease lapsed during the pass");
    assert_eq!(api.calls_to("GET", "/v2/calendars").len(), 1, "a second pass started: {:?}", api.log());
    gate.open();
    a.stop().await;
    b.stop().await;
}

/// A drifted v2 meeting whose write the API refuses (400) every time: the first reconcile
/// entry dies; the meeting is then queued again only after one interval, then two, then four
/// (SPEC §4.4) — not once a pass. Fixed, it is forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_meeting_whose_reconcile_entry_died_is_held_back_with_a_doubling_delay() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let state = v2_api(&api);
    // Only WANTED drifts; its bot is refused until `accept` is set.
    state.lock().unwrap().remove(CANCELLED);
    let s = state.clone();
    api.route("GET", &format!("/v2/calendars/{CAL_A}/events"), move |_, _| {
        let bot = s.lock().unwrap()[WANTED].1;
        let page = json!({"success": true, "data": [v2_event(WANTED, "confirmed", bot)], "cursor": null});
        Reply::json(200, serde_json::to_vec(&page).unwrap())
    });
    let refuse = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (r, s) = (refuse.clone(), state.clone());
    api.route("POST", &format!("/v2/calendars/{CAL_A}/bots"), move |_, _| {
        if r.load(std::sync::atomic::Ordering::SeqCst) {
            return Reply::json(400, br#"{"success":false,"error":"INVALID"}"#.to_vec());
        }
        s.lock().unwrap().get_mut(WANTED).expect("wanted").1 = true;
        Reply::json(201, hookstream_tests::fixture("meeting-baas/api/v2_create_bots_response.json"))
    });
    let processor = start_processor(reconcile_vars(&redis, &api, "v2", "1")).await;
    let passes = || api.calls_to("GET", "/v2/calendars").iter().filter(|c| cursor(c).is_none()).count();
    eventually("eight passes", || async { (passes() >= 8).then_some(()) }).await;
    let dead = xlen_dead(&redis);
    let record: Option<String> = redis::cmd("HGET")
        .arg("{hookstream}:reconcile:dead")
        .arg(format!("reconcile:v2:{CAL_A}:{WANTED}"))
        .query(&mut redis.con())
        .unwrap();
    // Once a pass, it would be one dead entry per pass; held back (1, 2, 4 intervals) it is at
    // most four in eight passes.
    assert!((1..=4).contains(&dead), "{dead} dead entries in {} passes", passes());
    // The record counts the dead entries in a row; read a moment apart from the stream's
    // length, it may differ from it by the one dead-lettered in between.
    let counted: u64 = record.as_deref().and_then(|r| r.split(':').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(counted.abs_diff(dead) <= 1 && counted >= 1, "{record:?} vs {dead} dead");
    // The write works again: the meeting is fixed when its delay is over, then forgotten.
    refuse.store(false, std::sync::atomic::Ordering::SeqCst);
    eventually_within("the meeting gets its bot", std::time::Duration::from_secs(30), || async {
        state.lock().unwrap()[WANTED].1.then_some(())
    })
    .await;
    eventually("forgotten once it matches", || async {
        let n: u64 = redis::cmd("HLEN").arg("{hookstream}:reconcile:dead").query(&mut redis.con()).unwrap();
        (n == 0).then_some(())
    })
    .await;
    processor.stop().await;
}
