//! The reconcile benchmark behind `scripts/bench-reconcile` (ignored in `cargo test`): an
//! account of 200 calendars × 40 events in the fake v2 API, 2 % drifted (wanted, no bot). It
//! prints the API reads of a pass next to the minimum the API allows, the pass's duration next
//! to reads ÷ RECONCILE_READS_PER_SEC, the detail reads and writes the drifted meetings' entries
//! cost, and the Redis commands of a pass once everything matches. Results (SPEC §4.5): 2,000
//! bots ended in the last day, 1 % of whose final webhooks never came — the bot list's reads next
//! to the API's minimum, resends = missing, none in a converged pass.

mod common;

use common::*;
use hookstream_tests::fake_api::{EndedBot, FakeApi, Reply, ServeResults};
use hookstream_tests::RedisServer;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

const CALENDARS: usize = 200;
const EVENTS: usize = 40;
const BOTS: usize = 2_000;

fn uuid(kind: u32, n: usize) -> String {
    format!("{kind:08x}-0000-4000-8000-{n:012x}")
}

fn commands(redis: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut redis.con()).unwrap();
    info.lines()
        .filter_map(|l| l.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: scripts/bench-reconcile"]
async fn reconcile_benchmark() {
    let reads_per_sec: u32 = std::env::var("RECONCILE_READS_PER_SEC").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let calendars: Vec<String> = (0..CALENDARS).map(|c| uuid(1, c)).collect();
    let bots: Arc<Mutex<HashMap<String, bool>>> = Arc::default();
    let series = uuid(3, 0);
    let (start, end) = (
        (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
        (chrono::Utc::now() + chrono::Duration::hours(25)).to_rfc3339(),
    );
    for (c, cal) in calendars.iter().enumerate() {
        for e in 0..EVENTS {
            // Every 50th event across the account has no bot: 2 % drifted.
            bots.lock().unwrap().insert(uuid(2, c * EVENTS + e), (c * EVENTS + e) % 50 != 0);
        }
        let (b, cal2, series, start, end) = (bots.clone(), cal.clone(), series.clone(), start.clone(), end.clone());
        let event = move |id: &str, bot: bool| {
            json!({"event_id": id, "series_id": series, "status": "confirmed", "start_time": start, "end_time": end,
                   "meeting_url": "https://meet.example.com/x", "calendar_id": cal2, "bot_scheduled": bot})
        };
        let (ev, bb) = (event.clone(), b.clone());
        api.route("GET", &format!("/v2/calendars/{cal}/events"), move |_, _| {
            let st = bb.lock().unwrap();
            let data: Vec<_> = (0..EVENTS)
                .map(|e| {
                    let id = uuid(2, c * EVENTS + e);
                    ev(&id, st[&id])
                })
                .collect();
            Reply::json(200, serde_json::to_vec(&json!({"success": true, "data": data, "cursor": null})).unwrap())
        });
        for e in 0..EVENTS {
            let id = uuid(2, c * EVENTS + e);
            let (ev, bb) = (event.clone(), b.clone());
            api.route("GET", &format!("/v2/calendars/{cal}/events/{id}"), move |_, _| {
                let mut d = ev(&id, bb.lock().unwrap()[&id]);
                d["attendees"] = json!([]);
                Reply::json(200, serde_json::to_vec(&json!({"success": true, "data": d})).unwrap())
            });
        }
        let bb = b.clone();
        api.route("POST", &format!("/v2/calendars/{cal}/bots"), move |call, _| {
            bb.lock().unwrap().insert(call.json()["event_id"].as_str().unwrap().to_string(), true);
            Reply::json(201, hookstream_tests::fixture("meeting-baas/api/v2_create_bots_response.json"))
        });
    }
    let cals = calendars.clone();
    api.route("GET", "/v2/calendars", move |call, _| {
        let page: usize = call
            .query
            .as_deref()
            .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("cursor=")))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let data: Vec<_> = cals.iter().skip(page * 100).take(100).map(|c| json!({"calendar_id": c})).collect();
        let next = if (page + 1) * 100 < cals.len() { json!((page + 1).to_string()) } else { json!(null) };
        Reply::json(200, serde_json::to_vec(&json!({"success": true, "data": data, "cursor": next})).unwrap())
    });
    // 2,000 bots ended an hour ago; every 100th one's final webhook never came (1 %).
    let ingress = start_ingress(&redis.url()).await;
    let ended: Vec<EndedBot> =
        (0..BOTS).map(|n| EndedBot::ended(&uuid(4, n), "completed", std::time::Duration::from_secs(3_600))).collect();
    for (n, bot) in ended.iter().enumerate().filter(|(n, _)| n % 100 != 0) {
        let key = shared::keys::Keys::new("hookstream").dedup(&format!("bot.completed:{}", bot.bot_id));
        let _: () = redis::cmd("SET").arg(key).arg(format!("{n}-0")).query(&mut redis.con()).unwrap();
    }
    let missing = BOTS / 100;
    let results = api.serve_results(ended, ingress.webhook_url(), SECRET.into());
    let mut vars = processor_vars(&redis.url(), &api.url());
    vars.insert("RECONCILE_APIS".into(), "v2".into());
    vars.insert("RECONCILE_INTERVAL_SECS".into(), "0".into());
    vars.insert("RECONCILE_READS_PER_SEC".into(), reads_per_sec.to_string());
    vars.insert("API_WRITES_PER_SEC".into(), "0".into());
    let config = processor::ProcessorConfig::read(&shared::config::Reader::new(&vars)).unwrap();
    let pass = || processor::cli::operate(&config, None, processor::cli::Command::Reconcile { dry_run: false });

    let started = Instant::now();
    let done = pass().await;
    let took = started.elapsed();
    assert_eq!(done.code, 0, "{done:?}");
    let reads = api.calls().len();
    let bot_reads = api.calls_to("GET", "/v2/bots").len();
    let appended = xlen(&redis) as usize;
    let drifted = appended - missing;
    let minimum = CALENDARS.div_ceil(100) + CALENDARS * EVENTS.div_ceil(250) + BOTS.div_ceil(250);
    let processor = start_processor(vars.clone()).await;
    // The resends deliver the missing webhooks to the ingress, which appends them: processed too.
    hookstream_tests::eventually("every missing result resent and accepted", || async {
        (xlen(&redis) as usize == appended + missing).then_some(())
    })
    .await;
    all_acked(&redis).await;
    processor.stop().await;
    ingress.stop().await;
    let resends = results.resent().len();
    // The hour's hold on a second resend is not what keeps a converged pass quiet: drop it.
    for bot in results.resent().iter() {
        let _: i64 = redis::cmd("DEL").arg(format!("{{hookstream}}:resend:{bot}")).query(&mut redis.con()).unwrap();
    }
    let appended = xlen(&redis);
    let detail_reads = api.calls().iter().filter(|c| c.method == "GET" && c.path.matches('/').count() == 5).count();
    let writes = api.calls().iter().filter(|c| c.method == "POST" && c.path.ends_with("/bots")).count();

    let before = commands(&redis);
    let calls_before = api.calls().len();
    let converged = pass().await;
    let redis_commands = commands(&redis) - before - 1; // less this INFO's own call
    assert_eq!(converged.code, 0);
    println!("reconcile benchmark: {CALENDARS} calendars x {EVENTS} events, {} drifted, RECONCILE_READS_PER_SEC={reads_per_sec}", CALENDARS * EVENTS / 50);
    println!("| figure | value | next to |");
    println!("|---|---|---|");
    println!("| API list reads in a pass | {reads} | the minimum the API allows: {minimum} (⌈{CALENDARS}/100⌉ calendar pages + {CALENDARS} × ⌈{EVENTS}/250⌉ event pages + ⌈{BOTS}/250⌉ bot pages) |");
    println!("| of which the bot list (results) | {bot_reads} | ⌈{BOTS}/250⌉ = {} |", BOTS.div_ceil(250));
    println!("| resends (results asked for again) | {resends} | missing results: {missing} |");
    println!(
        "| pass duration, s | {:.2} | reads ÷ RECONCILE_READS_PER_SEC: {:.2} |",
        took.as_secs_f64(),
        reads as f64 / f64::from(reads_per_sec)
    );
    println!("| reconcile entries appended | {drifted} | drifted meetings: {} |", CALENDARS * EVENTS / 50);
    println!("| detail reads by those entries | {detail_reads} | one per drifted meeting: {drifted} |");
    println!("| API writes | {writes} | one per drifted meeting: {drifted} |");
    println!("| converged pass: API reads | {} | the same listing: {reads} |", api.calls().len() - calls_before);
    println!(
        "| converged pass: Redis commands | {redis_commands} | (INFO commandstats, commands inside scripts included: the read limiter's script per read, and its retries while it waits; no entry appended) |"
    );
    println!("| converged pass: resends | {} | none |", results.resent().len() - resends);
    assert_eq!(xlen(&redis), appended, "a converged pass appends nothing");
    assert_eq!(resends, missing, "one resend per missing result");
    assert_eq!(results.resent().len(), resends, "a converged pass asks for nothing");
}
