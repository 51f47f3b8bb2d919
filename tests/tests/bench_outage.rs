//! The outage benchmark behind `scripts/bench-outage` (ignored in `cargo test`): 300 meetings
//! arrive (one v1 sync each, spread over 45 s) during a 60 s outage of the Meeting BaaS API,
//! with `API_WRITES_PER_SEC=20` and every other setting at its default. Run with the breakers on
//! and off (`BREAKER_FAILURES=0`), it prints the API calls made during the outage and the time
//! from the API's return until the last bot is scheduled, next to what the API's write limit
//! allows (300 ÷ 20 = 15 s) and the park delays in play.

mod common;

use common::*;
use hookstream_tests::fake_api::{FakeApi, Reply};
use hookstream_tests::{eventually_within, fixture, fixture_json, RedisServer};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MEETINGS: usize = 300;
const OUTAGE: Duration = Duration::from_secs(60);
const WRITES_PER_SEC: usize = 20;

struct Report {
    calls_during: usize,
    recovery: Duration,
    refused_429: usize,
    dead: u64,
    bots: usize,
    twice: usize,
}

async fn run(breakers: bool) -> Report {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let down = Arc::new(AtomicBool::new(true));
    let during = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let bots: Arc<Mutex<HashMap<String, (usize, Instant)>>> = Arc::default();
    let writes: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
    let upcoming = fixture_json("meeting-baas/api/v1_calendar_event_upcoming.json");
    let uuids: Vec<String> = (0..MEETINGS).map(|i| format!("bench-{i:04}")).collect();
    for uuid in &uuids {
        let (d, c, b, u, e) = (down.clone(), during.clone(), bots.clone(), uuid.clone(), upcoming.clone());
        api.route("GET", &format!("/calendar_events/{uuid}"), move |_, _| {
            if d.load(Ordering::SeqCst) {
                c.fetch_add(1, Ordering::SeqCst);
                return Reply::status(503);
            }
            let mut event = e.clone();
            event["uuid"] = json!(u);
            if b.lock().unwrap().contains_key(&u) {
                event["bot_param"] = json!({"bot_name": "hookstream recorder"});
            }
            Reply::json(200, serde_json::to_vec(&event).unwrap())
        });
        let (d, c, b, u, w, r) =
            (down.clone(), during.clone(), bots.clone(), uuid.clone(), writes.clone(), refused.clone());
        api.route("POST", &format!("/calendar_events/{uuid}/bot"), move |_, _| {
            if d.load(Ordering::SeqCst) {
                c.fetch_add(1, Ordering::SeqCst);
                return Reply::status(503);
            }
            let now = Instant::now();
            let mut w = w.lock().unwrap();
            while w.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1)) {
                w.pop_front();
            }
            if w.len() >= WRITES_PER_SEC {
                r.fetch_add(1, Ordering::SeqCst);
                return Reply::json(429, fixture("meeting-baas/api/v2_rate_limited.json")).header("retry-after", "1");
            }
            w.push_back(now);
            b.lock().unwrap().entry(u.clone()).or_insert((0, now)).0 += 1;
            Reply::json(200, fixture("meeting-baas/api/v1_schedule_response.json"))
        });
    }
    let mut vars = processor_vars(&redis.url(), &api.url());
    // The defaults, but for the write limit and the breakers.
    for k in ["RETRY_INITIAL_MS", "RETRY_MAX_INTERVAL_MS", "RETRY_MAX_ELAPSED_MS", "HANDLER_TIMEOUT_MS"] {
        vars.remove(k);
    }
    vars.insert("API_WRITES_PER_SEC".into(), WRITES_PER_SEC.to_string());
    vars.insert("RECONCILE_INTERVAL_SECS".into(), "0".into());
    if !breakers {
        vars.insert("BREAKER_FAILURES".into(), "0".into());
    }
    let processor = start_processor(vars).await;
    let started = Instant::now();
    for (i, uuid) in uuids.iter().enumerate() {
        let body = serde_json::to_vec(&json!({
            "event": "calendar.sync_events",
            "data": {"calendar_id": "c", "last_updated_ts": "t", "affected_event_uuids": [uuid]},
        }))
        .unwrap();
        add_event(&redis, "calendar.sync_events", &body, &format!("bench-sync-{i}"));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tokio::time::sleep(OUTAGE.saturating_sub(started.elapsed())).await;
    down.store(false, Ordering::SeqCst);
    let back = Instant::now();
    let calls_during = during.load(Ordering::SeqCst);
    eventually_within("every meeting has a bot", Duration::from_secs(900), || async {
        (bots.lock().unwrap().len() == MEETINGS).then_some(())
    })
    .await;
    let last = bots.lock().unwrap().values().map(|(_, at)| *at).max().unwrap();
    processor.stop().await;
    let bots = bots.lock().unwrap().clone();
    Report {
        calls_during,
        recovery: last.duration_since(back),
        refused_429: refused.load(Ordering::SeqCst),
        dead: xlen_dead(&redis),
        bots: bots.len(),
        twice: bots.values().filter(|(n, _)| *n > 1).count(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: scripts/bench-outage"]
async fn outage_benchmark() {
    println!(
        "outage benchmark: {MEETINGS} meetings arrive during a {} s API outage, API_WRITES_PER_SEC={WRITES_PER_SEC}, \
         defaults otherwise (RETRY_MAX_ELAPSED_MS=120000, RETRY_PARK_INITIAL_MS=60000)",
        OUTAGE.as_secs()
    );
    println!("| breakers | API calls during the outage | API back → last bot | write-limit floor | 429s | bots | twice | dead |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for breakers in [true, false] {
        let r = run(breakers).await;
        println!(
            "| {} | {} | {:.1} s | {:.1} s | {} | {} | {} | {} |",
            if breakers { "on (5 / 30 s)" } else { "off" },
            r.calls_during,
            r.recovery.as_secs_f64(),
            MEETINGS as f64 / WRITES_PER_SEC as f64,
            r.refused_429,
            r.bots,
            r.twice,
            r.dead
        );
    }
}
