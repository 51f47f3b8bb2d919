//! Effects that match the calendar: one meeting at a time across replicas, the shared API write
//! limit, per-meeting progress (fan-out). (A lock holder killed with SIGKILL: processor/tests.)

mod common;

use common::*;
use hookstream_tests::fake_api::{FakeApi, Gate, Reply};
use hookstream_tests::{eventually, fixture, fixture_json, RedisServer};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CAL: &str = "647da78e-783d-4a7a-be5c-117ad3b10d5c";
const EVENT: &str = "ad307589-17b9-4f8a-9489-6b4c48f0c40d";

/// The API's state of one v2 meeting.
#[derive(Debug, Clone)]
struct V2Meeting {
    status: &'static str,
    bot: bool,
}

/// A stateful fake of the v2 calendar API for one event: GET shows the state, POST bots adds a
/// bot, DELETE bots removes it. `first_get_held` holds the answer to the first GET (computed
/// when the request arrives, as a slow API would: stale by the time it is delivered).
fn v2_api(api: &FakeApi, state: Arc<Mutex<V2Meeting>>, first_get_held: Option<&Gate>) {
    let details = |m: &V2Meeting| {
        let mut d = fixture_json("meeting-baas/api/v2_event_details.json");
        d["data"]["status"] = json!(m.status);
        d["data"]["bot_scheduled"] = json!(m.bot);
        serde_json::to_vec(&d).unwrap()
    };
    let held = first_get_held.map(|g| Reply::status(200).held(g).gate);
    let s = state.clone();
    api.route("GET", &format!("/v2/calendars/{CAL}/events/{EVENT}"), move |_, n| {
        let mut reply = Reply::json(200, details(&s.lock().unwrap()));
        if n == 0 {
            reply.gate = held.clone().flatten();
        }
        reply
    });
    let s = state.clone();
    api.route("POST", &format!("/v2/calendars/{CAL}/bots"), move |_, _| {
        s.lock().unwrap().bot = true;
        Reply::json(201, fixture("meeting-baas/api/v2_create_bots_response.json"))
    });
    let s = state;
    api.route("DELETE", &format!("/v2/calendars/{CAL}/bots"), move |_, _| {
        s.lock().unwrap().bot = false;
        Reply::json(200, br#"{"success":true}"#.to_vec())
    });
}

/// The `created` fixture narrowed to its one confirmed instance.
fn created_body() -> Vec<u8> {
    let mut body = fixture_json("meeting-baas/v2/calendar_event_created.json");
    body["data"]["instances"].as_array_mut().unwrap().truncate(1);
    serde_json::to_vec(&body).unwrap()
}

fn lock_waits(text: &str) -> f64 {
    metric(text, "hookstream_processor_lock_waits_total", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn created_then_cancelled_while_deciding_ends_with_no_bot_on_two_replicas() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let gate = Gate::new();
    let state = Arc::new(Mutex::new(V2Meeting { status: "confirmed", bot: false }));
    v2_api(&api, state.clone(), Some(&gate));
    let a = start_processor(processor_vars(&redis.url(), &api.url())).await;
    let b = start_processor(processor_vars(&redis.url(), &api.url())).await;
    let metrics = format!("http://{}/metrics", a.metrics);
    let waits_before = lock_waits(&scrape(&metrics).await);

    // `created` is read while the meeting is still confirmed; the answer is slow.
    add_event(&redis, "calendar.event_created", &created_body(), "created");
    let get = format!("/v2/calendars/{CAL}/events/{EVENT}");
    eventually("the created entry is reading", || async { (api.calls_to("GET", &get).len() == 1).then_some(()) }).await;
    // Meanwhile the meeting is cancelled, and the webhook about it arrives.
    state.lock().unwrap().status = "cancelled";
    add_fixture(&redis, "meeting-baas/v2/calendar_event_cancelled.json");
    // The cancel entry either waits for the meeting's lock or (were there no lock) reads at once.
    eventually("the cancel entry waits for the meeting, or has read it", || async {
        let waited = lock_waits(&scrape(&metrics).await) > waits_before;
        (waited || api.calls_to("GET", &get).len() >= 2).then_some(())
    })
    .await;
    gate.open();
    all_acked(&redis).await;
    a.stop().await;
    b.stop().await;
    assert!(!state.lock().unwrap().bot, "a bot on a cancelled meeting: {:?}", api.log());
    assert_eq!(xlen_dead(&redis), 0);
    hookstream_tests::openapi::assert_valid(&api.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_before_created_runs_ends_with_no_bot() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let state = Arc::new(Mutex::new(V2Meeting { status: "cancelled", bot: false }));
    v2_api(&api, state.clone(), None);
    let a = start_processor(processor_vars(&redis.url(), &api.url())).await;
    let b = start_processor(processor_vars(&redis.url(), &api.url())).await;
    // The cancel entry runs first; the created one (stale: the webhook still says confirmed)
    // runs after, and must not schedule a bot on the cancelled meeting.
    add_fixture(&redis, "meeting-baas/v2/calendar_event_cancelled.json");
    all_acked(&redis).await;
    add_event(&redis, "calendar.event_created", &created_body(), "created");
    all_acked(&redis).await;
    a.stop().await;
    b.stop().await;
    assert!(!state.lock().unwrap().bot, "{:?}", api.log());
    assert!(api.calls_to("POST", &format!("/v2/calendars/{CAL}/bots")).is_empty());
}

/// A v1 API for `uuids`: every event upcoming; POST schedules a bot (counted), refused with 429
/// when more than `limit` writes arrived in the last second.
struct V1Api {
    api: FakeApi,
    bots: Arc<Mutex<HashMap<String, usize>>>,
    refused: Arc<Mutex<usize>>,
}

async fn v1_api(uuids: &[String], limit: usize, fail: HashMap<String, Vec<u16>>) -> V1Api {
    v1_api_failing_posts(uuids, limit, fail, HashMap::new()).await
}

/// [`v1_api`], where the first POSTs of some meetings answer the statuses in `post_fail`.
async fn v1_api_failing_posts(
    uuids: &[String],
    limit: usize,
    fail: HashMap<String, Vec<u16>>,
    post_fail: HashMap<String, Vec<u16>>,
) -> V1Api {
    let api = FakeApi::start().await;
    let bots: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let refused: Arc<Mutex<usize>> = Arc::default();
    let writes: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
    let upcoming = fixture_json("meeting-baas/api/v1_calendar_event_upcoming.json");
    for uuid in uuids {
        let (b, u, event) = (bots.clone(), uuid.clone(), upcoming.clone());
        let failures = fail.get(uuid).cloned().unwrap_or_default();
        api.route("GET", &format!("/calendar_events/{uuid}"), move |_, n| {
            if let Some(status) = failures.get(n) {
                return Reply::status(*status);
            }
            let mut e = event.clone();
            e["uuid"] = json!(u);
            if b.lock().unwrap().contains_key(&u) {
                e["bot_param"] = json!({"bot_name": "hookstream recorder"});
            }
            Reply::json(200, serde_json::to_vec(&e).unwrap())
        });
        let (b, u, w, r) = (bots.clone(), uuid.clone(), writes.clone(), refused.clone());
        let post_failures = post_fail.get(uuid).cloned().unwrap_or_default();
        api.route("POST", &format!("/calendar_events/{uuid}/bot"), move |_, n| {
            if let Some(status) = post_failures.get(n) {
                return Reply::status(*status);
            }
            let now = Instant::now();
            let mut w = w.lock().unwrap();
            while w.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1)) {
                w.pop_front();
            }
            if w.len() >= limit {
                *r.lock().unwrap() += 1;
                return Reply::json(429, fixture("meeting-baas/api/v2_rate_limited.json")).header("retry-after", "1");
            }
            w.push_back(now);
            *b.lock().unwrap().entry(u.clone()).or_default() += 1;
            Reply::json(200, fixture("meeting-baas/api/v1_schedule_response.json"))
        });
    }
    V1Api { api, bots, refused }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_the_api_write_limit_and_every_meeting_gets_one_bot() {
    let redis = RedisServer::start();
    let all = uuids("m", 30);
    let fake = v1_api(&all, 15, HashMap::new()).await;
    let mut vars = processor_vars(&redis.url(), &fake.api.url());
    vars.insert("API_WRITES_PER_SEC".into(), "15".into());
    let a = start_processor(vars.clone()).await;
    vars.insert("CONSUMER_NAME".into(), "second-replica".into());
    let b = start_processor(vars).await;
    // Six sync webhooks of five meetings each.
    for (i, chunk) in all.chunks(5).enumerate() {
        add_event(&redis, "calendar.sync_events", &sync_body(chunk), &format!("sync-{i}"));
    }
    eventually("every meeting has a bot", || async { (fake.bots.lock().unwrap().len() == 30).then_some(()) }).await;
    all_acked(&redis).await;
    a.stop().await;
    b.stop().await;
    let bots = fake.bots.lock().unwrap().clone();
    assert!(bots.values().all(|n| *n == 1), "one bot per meeting: {bots:?}");
    let refused = *fake.refused.lock().unwrap();
    assert!(refused <= 2, "{refused} writes refused with 429: the replicas did not share the limit");
    assert_eq!(xlen_dead(&redis), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_sync_completes_at_the_limits_pace_without_timing_out() {
    let redis = RedisServer::start();
    let all = uuids("big", 80);
    let fake = v1_api(&all, 1000, HashMap::new()).await;
    let mut vars = processor_vars(&redis.url(), &fake.api.url());
    vars.insert("API_WRITES_PER_SEC".into(), "40".into());
    // 80 writes at 40/s take 2 s: far longer than one attempt may take, and than the whole
    // retry budget. Waiting for the limit must count as neither.
    vars.insert("HANDLER_TIMEOUT_MS".into(), "500".into());
    vars.insert("RETRY_MAX_ELAPSED_MS".into(), "1000".into());
    let processor = start_processor(vars).await;
    add_event(&redis, "calendar.sync_events", &sync_body(&all), "big-sync");
    eventually("every meeting has a bot", || async { (fake.bots.lock().unwrap().len() == 80).then_some(()) }).await;
    all_acked(&redis).await;
    processor.stop().await;
    assert!(fake.bots.lock().unwrap().values().all(|n| *n == 1), "no meeting handled twice");
    assert_eq!(xlen_dead(&redis), 0, "{:?}", dead_entries(&redis).first());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_for_the_write_limit_does_not_spend_the_retry_budget() {
    // Measured: 12 meetings, 4 writes/s shared, a 1.5 s retry budget, and every meeting's first
    // POST answers 502 once. The 24 writes take 6 s at the limit's pace, so most meetings wait
    // far longer than their budget for a slot; that wait is not theirs (SPEC §4) and must not
    // end their retries.
    let redis = RedisServer::start();
    let all = uuids("w", 12);
    let post_fail = all.iter().map(|u| (u.clone(), vec![502])).collect();
    let fake = v1_api_failing_posts(&all, 1000, HashMap::new(), post_fail).await;
    let mut vars = processor_vars(&redis.url(), &fake.api.url());
    vars.insert("API_WRITES_PER_SEC".into(), "4".into());
    vars.insert("RETRY_MAX_ELAPSED_MS".into(), "1500".into());
    let processor = start_processor(vars).await;
    add_event(&redis, "calendar.sync_events", &sync_body(&all), "limited-sync");
    all_acked(&redis).await;
    processor.stop().await;
    assert_eq!(xlen_dead(&redis), 0, "{:?}", dead_entries(&redis));
    let bots = fake.bots.lock().unwrap().clone();
    assert_eq!(bots.len(), 12, "every meeting has its bot: {bots:?}");
    assert!(bots.values().all(|n| *n == 1));
}

#[tokio::test]
async fn one_failing_meeting_leaves_the_others_done_and_the_dead_stream_names_it() {
    let redis = RedisServer::start();
    let all = uuids("f", 4);
    // f-0001 is refused for good; f-0002 fails twice, then works.
    let fail = HashMap::from([(all[1].clone(), vec![400]), (all[2].clone(), vec![503, 503])]);
    let fake = v1_api(&all, 1000, fail).await;
    let mut vars = processor_vars(&redis.url(), &fake.api.url());
    vars.insert("API_WRITES_PER_SEC".into(), "0".into());
    let processor = start_processor(vars).await;
    let original = add_event(&redis, "calendar.sync_events", &sync_body(&all), "sync-with-a-bad-one");
    let dead = dead_after(&redis, 1).await;
    all_acked(&redis).await;
    processor.stop().await;
    let bots = fake.bots.lock().unwrap().clone();
    let mut scheduled: Vec<&String> = bots.keys().collect();
    scheduled.sort();
    assert_eq!(scheduled, vec![&all[0], &all[2], &all[3]], "the others are done");
    assert!(bots.values().all(|n| *n == 1), "a retry of one meeting repeats no other: {bots:?}");
    assert_eq!(dead.len(), 1);
    let f = &dead[0].1;
    assert_eq!(f["meeting"], format!("v1:{}", all[1]), "the dead entry names its meeting");
    assert_eq!(f["fanout_of"], original);
    assert!(f["error"].contains("400"), "{}", f["error"]);
    assert_eq!(f["dedup_id"], "sync-with-a-bad-one");
    let payload: Value = serde_json::from_str(&f["payload"]).unwrap();
    assert_eq!(payload["data"]["affected_event_uuids"], json!([all[1]]), "narrowed to its meeting");
}

#[tokio::test]
async fn a_429_pauses_every_replicas_writes_for_its_retry_after() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let upcoming = fixture("meeting-baas/api/v1_calendar_event_upcoming.json");
    api.always("GET", "/calendar_events/e-429", Reply::json(200, upcoming));
    let limited = Reply::json(429, fixture("meeting-baas/api/v2_rate_limited.json")).header("retry-after", "2");
    let scheduled = Reply::json(200, fixture("meeting-baas/api/v1_schedule_response.json"));
    api.sequence("POST", "/calendar_events/e-429/bot", vec![limited, scheduled]);
    let mut vars = processor_vars(&redis.url(), &api.url());
    // Waited for in place, and shared, only within RETRY_MAX_INTERVAL_MS (a longer one parks
    // the entry and pauses the others no longer than that: outages.rs).
    vars.insert("RETRY_MAX_INTERVAL_MS".into(), "3000".into());
    let processor = start_processor(vars).await;
    add_event(&redis, "calendar.sync_events", &sync_body(&["e-429".to_string()]), "limited");
    eventually("the API answered 429", || async {
        (api.calls_to("POST", "/calendar_events/e-429/bot").len() == 1).then_some(())
    })
    .await;
    let (secs, micros): (String, String) = redis::cmd("TIME").query(&mut redis.con()).unwrap();
    let now_us: i64 = secs.parse::<i64>().unwrap() * 1_000_000 + micros.parse::<i64>().unwrap();
    // The shared limiter's next slot moves past Retry-After (2 s): no replica writes before.
    eventually("the write limit is paused for every replica", || async {
        let next: Option<String> =
            redis::cmd("GET").arg("{hookstream}:ratelimit:api-writes").query(&mut redis.con()).unwrap();
        let paused = next.and_then(|n| n.parse::<i64>().ok()).filter(|n| *n >= now_us + 1_500_000);
        // Seen before the entry's own retry (after its Retry-After), which takes a slot anyway.
        assert_eq!(api.calls_to("POST", "/calendar_events/e-429/bot").len(), 1, "the pause came only with the retry");
        paused.map(|_| ())
    })
    .await;
    all_acked(&redis).await;
    processor.stop().await;
    assert_eq!(api.calls_to("POST", "/calendar_events/e-429/bot").len(), 2, "retried once, after the pause");
    assert_eq!(xlen_dead(&redis), 0);
}

/// The meeting lock keys in Redis and their values.
fn meeting_locks(redis: &RedisServer) -> Vec<(String, String)> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("{hookstream}:lock:*").query(&mut redis.con()).unwrap();
    keys.into_iter()
        .filter_map(|k| {
            let v: Option<String> = redis::cmd("GET").arg(&k).query(&mut redis.con()).unwrap();
            v.map(|v| (k, v))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_whose_release_failed_after_an_attempt_timeout_is_not_renewed_for_ever() {
    // The attempt times out while it holds the meeting's lock, and Redis is down at that moment,
    // so the release fails and the lock stays in Redis (AOF). The dropped attempt's lock must not
    // be renewed any more: its TTL frees the meeting and the entry's next attempt goes on.
    let mut redis = RedisServer::start_persistent();
    let api = FakeApi::start().await;
    let upcoming = fixture("meeting-baas/api/v1_calendar_event_upcoming.json");
    let slow = Reply::json(200, upcoming.clone()).delayed(Duration::from_secs(5));
    api.sequence("GET", "/calendar_events/stale-1", vec![slow, Reply::json(200, upcoming)]);
    api.always(
        "POST",
        "/calendar_events/stale-1/bot",
        Reply::json(200, fixture("meeting-baas/api/v1_schedule_response.json")),
    );
    let mut vars = processor_vars(&redis.url(), &api.url());
    vars.insert("HANDLER_TIMEOUT_MS".into(), "500".into());
    vars.insert("CLAIM_IDLE_MS".into(), "3000".into());
    vars.insert("RETRY_MAX_ELAPSED_MS".into(), "60000".into());
    let processor = start_processor(vars).await;
    add_event(&redis, "calendar.sync_events", &sync_body(&["stale-1".to_string()]), "stale");
    eventually("the first attempt is reading the meeting", || async {
        (api.calls_to("GET", "/calendar_events/stale-1").len() == 1 && !meeting_locks(&redis).is_empty()).then_some(())
    })
    .await;
    redis.kill();
    eventually("the attempt timed out and dropped its request", || async { (api.in_flight() == 0).then_some(()) })
        .await;
    redis.restart();
    assert_eq!(meeting_locks(&redis).len(), 1, "the lock outlived the failed release");
    all_acked(&redis).await;
    processor.stop().await;
    assert_eq!(api.calls_to("POST", "/calendar_events/stale-1/bot").len(), 1);
    assert_eq!(xlen_dead(&redis), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_is_never_sent_after_the_meeting_lock_was_lost() {
    // With a write limit the lock is confirmed inside the limiter's script; without one, by the
    // renewal script on its own.
    for limit in ["5", "0"] {
        write_after_a_lost_lock(limit).await;
    }
}

async fn write_after_a_lost_lock(limit: &str) {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let gate = Gate::new();
    let upcoming = fixture("meeting-baas/api/v1_calendar_event_upcoming.json");
    api.sequence(
        "GET",
        "/calendar_events/lost-1",
        vec![Reply::json(200, upcoming.clone()).held(&gate), Reply::json(200, upcoming)],
    );
    api.always(
        "POST",
        "/calendar_events/lost-1/bot",
        Reply::json(200, fixture("meeting-baas/api/v1_schedule_response.json")),
    );
    let mut vars = processor_vars(&redis.url(), &api.url());
    vars.insert("API_WRITES_PER_SEC".into(), limit.into());
    let processor = start_processor(vars).await;
    let metrics = format!("http://{}/metrics", processor.metrics);
    let waits_before = lock_waits(&scrape(&metrics).await);
    add_event(&redis, "calendar.sync_events", &sync_body(&["lost-1".to_string()]), "lost");
    eventually("the attempt is reading the meeting", || async {
        (api.calls_to("GET", "/calendar_events/lost-1").len() == 1).then_some(())
    })
    .await;
    // The lock expired while the read stalled, and another replica holds it now.
    let locks = meeting_locks(&redis);
    assert_eq!(locks.len(), 1);
    let _: () = redis::cmd("SET")
        .arg(&locks[0].0)
        .arg("another-replica")
        .arg("PX")
        .arg(60_000)
        .query(&mut redis.con())
        .unwrap();
    gate.open();
    // The stale read would schedule a bot; the attempt finds the lock lost and fails instead,
    // and its retry waits for the meeting.
    eventually("the retry waits for the meeting's lock, or a write went out", || async {
        let waited = lock_waits(&scrape(&metrics).await) > waits_before;
        (waited || !api.calls_to("POST", "/calendar_events/lost-1/bot").is_empty()).then_some(())
    })
    .await;
    assert!(
        api.calls_to("POST", "/calendar_events/lost-1/bot").is_empty(),
        "written without the lock: {:?}",
        api.log()
    );
    // The other holder is done: the entry's retry reads the meeting again and schedules.
    let _: () = redis::cmd("DEL").arg(&locks[0].0).query(&mut redis.con()).unwrap();
    all_acked(&redis).await;
    processor.stop().await;
    assert_eq!(api.calls_to("POST", "/calendar_events/lost-1/bot").len(), 1);
    assert_eq!(xlen_dead(&redis), 0);
}
