//! The edges, with real processes: a replica whose wall clock is off (libfaketime), and a
//! nemesis — a replica frozen past its lease, Redis blackholed and reset, an API that applies a
//! write and drops the connection.
#![allow(clippy::unwrap_used)] // test helpers may unwrap: a panic is how a test fails

use hookstream_tests::fake_api::{flaky_v1, FakeApi, Reply};
use hookstream_tests::{eventually, fixture, fixture_json, RedisServer};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_processor");
const EVENTS: &str = "{hookstream}:events";
const DEAD: &str = "{hookstream}:dead";

/// libfaketime from Debian's `faketime` package; the test fails loudly without it.
fn libfaketime() -> String {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
        .find(|path| path.exists());
    match found {
        Some(path) => path.display().to_string(),
        None => panic!(
            "libfaketime not found (/usr/lib/*/faketime/libfaketime.so.1): install Debian's `faketime` package \
             (apt-get install -y faketime); .ci/run does"
        ),
    }
}

fn xlen(redis: &RedisServer, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query(&mut redis.con()).expect("XLEN")
}

fn add_sync(redis: &RedisServer, uuid: &str) -> String {
    let body = json!({
        "event": "calendar.sync_events",
        "data": {"calendar_id": "c", "last_updated_ts": uuid, "affected_event_uuids": [uuid]},
    });
    hookstream_tests::add_entry(redis, "calendar.sync_events", uuid, &serde_json::to_vec(&body).unwrap())
}

/// The measured case of the edges issue: a processor whose wall clock is 150 s ahead
/// (monotonic time untouched) retries entries another processor first attempted, while the API
/// answers 503; `RETRY_HORIZON_SECS=60`. The horizon is read on Redis's clock, so nothing is
/// dead after seconds: each meeting gets its bot once the API is back.
///
/// The order is fixed so that the skewed replica surely reads times the other wrote: the
/// on-time replica makes every first attempt and parks the entries, then stops; the skewed one
/// starts and runs them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_whose_clock_is_ahead_dead_letters_nothing() {
    let faketime = libfaketime();
    let redis = RedisServer::start();
    let uuids: Vec<String> = (0..6).map(|i| format!("skew-{i}")).collect();
    let fake = flaky_v1(&uuids).await;
    let (url, api) = (redis.url(), fake.api.url());
    let common = [
        ("REDIS_URL", url.as_str()),
        ("MEETING_BAAS_API_URL", api.as_str()),
        ("MEETING_BAAS_API_KEY", "k"),
        ("METRICS_ADDR", "127.0.0.1:0"),
        ("BLOCK_MS", "100"),
        ("API_WRITES_PER_SEC", "0"),
        ("RECONCILE_INTERVAL_SECS", "0"),
        ("BREAKER_FAILURES", "0"),
        ("RETRY_INITIAL_MS", "50"),
        ("RETRY_MAX_ELAPSED_MS", "200"),
        ("RETRY_PARK_INITIAL_MS", "1500"),
        ("RETRY_PARK_MAX_MS", "1500"),
        ("RETRY_HORIZON_SECS", "60"),
    ];
    let mut on_time = common.to_vec();
    on_time.push(("CONSUMER_NAME", "on-time"));
    let mut ahead = common.to_vec();
    ahead.extend([
        ("CONSUMER_NAME", "ahead"),
        ("LD_PRELOAD", faketime.as_str()),
        ("FAKETIME", "+150"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ]);
    let mut a = hookstream_tests::spawn_bin(BIN, &on_time);
    for uuid in &uuids {
        add_sync(&redis, uuid);
    }
    eventually("the on-time replica parks every entry", || async {
        let parked: u64 = redis::cmd("ZCARD").arg("{hookstream}:retry").query(&mut redis.con()).expect("ZCARD");
        (parked == uuids.len() as u64).then_some(())
    })
    .await;
    a.signal("TERM");
    assert_eq!(a.exited(Duration::from_secs(15)).await.code(), Some(0));
    let before = fake.calls_while_down.load(Ordering::SeqCst);
    let mut b = hookstream_tests::spawn_bin(BIN, &ahead);
    // The skewed replica runs each parked entry again, several times, while the API is down.
    eventually("the skewed replica retries while the API is down", || async {
        let retried = fake.calls_while_down.load(Ordering::SeqCst) >= before + 4 * uuids.len();
        (retried || xlen(&redis, DEAD) > 0).then_some(())
    })
    .await;
    let dead = xlen(&redis, DEAD);
    fake.down.store(false, Ordering::SeqCst);
    eventually("every meeting has its bot", || async {
        (fake.bots.lock().unwrap().len() == uuids.len() || xlen(&redis, DEAD) > 0).then_some(())
    })
    .await;
    let dead_entries: Vec<redis::Value> =
        redis::cmd("XRANGE").arg(DEAD).arg("-").arg("+").query(&mut redis.con()).expect("XRANGE");
    b.signal("TERM");
    assert_eq!(b.exited(Duration::from_secs(15)).await.code(), Some(0));
    assert_eq!(dead, 0, "dead-lettered during a short outage: {dead_entries:?}");
    assert!(dead_entries.is_empty(), "{dead_entries:?}");
    let bots = fake.bots.lock().unwrap().clone();
    assert!(bots.len() == uuids.len() && bots.values().all(|n| *n == 1), "one bot per meeting: {bots:?}");
}

/// The nemesis's first property: a processor frozen (SIGSTOP) between its read and its write,
/// past its lease, then thawed with that stale read in hand, writes nothing — another replica
/// took the entry and the meeting meanwhile and did the work once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_processor_frozen_past_its_lease_and_thawed_writes_nothing() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let uuid = "frozen-1";
    let gate = hookstream_tests::fake_api::Gate::new();
    let has_bot = Arc::new(AtomicBool::new(false));
    let mut event = fixture_json("meeting-baas/api/v1_calendar_event_upcoming.json");
    event["uuid"] = json!(uuid);
    let (h, e, g) = (has_bot.clone(), event.clone(), Arc::new(gate));
    let held = g.clone();
    api.route("GET", &format!("/calendar_events/{uuid}"), move |_, n| {
        let mut e = e.clone();
        if h.load(Ordering::SeqCst) {
            e["bot_param"] = json!({"bot_name": "hookstream recorder"});
        }
        let reply = Reply::json(200, serde_json::to_vec(&e).unwrap());
        // The first read is answered only once its reader is frozen: a stale read.
        if n == 0 {
            reply.held(&held)
        } else {
            reply
        }
    });
    let h = has_bot.clone();
    api.route("POST", &format!("/calendar_events/{uuid}/bot"), move |_, _| {
        h.store(true, Ordering::SeqCst);
        Reply::json(200, fixture("meeting-baas/api/v1_schedule_response.json"))
    });
    let (url, api_url) = (redis.url(), api.url());
    let extra = [("API_WRITES_PER_SEC", "0"), ("CLAIM_IDLE_MS", "1000"), ("LOG_FORMAT", "json")];
    let vars = |name: &str| hookstream_tests::processor_bin_vars(&url, &api_url, name, &extra);
    let (a_vars, b_vars) = (vars("frozen"), vars("other"));
    let a_vars = hookstream_tests::var_refs(&a_vars);
    let b_vars = hookstream_tests::var_refs(&b_vars);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("frozen.log");
    let mut a = hookstream_tests::spawn_bin_with(BIN, &a_vars, std::fs::File::create(&log).unwrap());
    add_sync(&redis, uuid);
    eventually("the first replica is reading", || async {
        (api.calls_to("GET", &format!("/calendar_events/{uuid}")).len() == 1).then_some(())
    })
    .await;
    a.signal("STOP");
    g.open(); // the stale answer waits in the frozen replica's socket
    let mut b = hookstream_tests::spawn_bin(BIN, &b_vars);
    eventually("the other replica reclaims the entry and schedules the bot", || async {
        let pending: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg(EVENTS)
            .arg("processors")
            .arg("-")
            .arg("+")
            .arg(10)
            .query(&mut redis.con())
            .unwrap();
        (has_bot.load(Ordering::SeqCst) && pending.is_empty()).then_some(())
    })
    .await;
    a.signal("CONT");
    eventually("the thawed replica finds it lost the entry", || async {
        std::fs::read_to_string(&log).unwrap().contains("lost").then_some(())
    })
    .await;
    a.signal("TERM");
    b.signal("TERM");
    assert_eq!(a.exited(Duration::from_secs(15)).await.code(), Some(0));
    assert_eq!(b.exited(Duration::from_secs(15)).await.code(), Some(0));
    assert_eq!(api.calls_to("POST", &format!("/calendar_events/{uuid}/bot")).len(), 1, "{:?}", api.log());
    assert_eq!(xlen(&redis, DEAD), 0);
}
