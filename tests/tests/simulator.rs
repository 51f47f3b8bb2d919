//! The Meeting BaaS simulator (`simulator/`) with the real ingress and processor: its meetings
//! get bots and lose them when cancelled, its bots' results are forwarded, and after an outage
//! with every webhook lost the reconciler brings the bots and the results back. Every request
//! hookstream sends it, and every answer it gives, is valid for the OpenAPI documents.

mod common;

use common::*;
use hookstream_tests::fake_api::{FakeApi, Reply};
use hookstream_tests::openapi::{assert_answers_valid, assert_valid};
use hookstream_tests::{eventually, eventually_within, RedisServer};
use simulator::timeline::{self, Plan};
use simulator::world::Bot;
use simulator::{Api, Simulator};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A plan that connects one v2 and one v1 calendar and creates nothing by itself: the test
/// creates the meetings (bots still join and end on the timeline).
fn quiet_plan() -> Plan {
    Plan { v2_calendars: 1, v1_calendars: 1, calendar_every: None, meeting_every: None, ..Plan::default() }
}

fn meetings_plan(lead: u64, length: u64) -> Plan {
    Plan { lead: Duration::from_secs(lead), length: Duration::from_secs(length), ..quiet_plan() }
}

/// The identity a bot's result is forwarded under (SPEC §3.3).
fn result_id(bot: &Bot) -> String {
    match bot.api {
        Api::V2 => format!("bot.completed:{}", bot.id),
        Api::V1 => format!("complete:{}", bot.id),
    }
}

/// How many times each identity reached the sink.
fn forwarded(sink: &FakeApi) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for call in sink.calls_to("POST", "/results") {
        *seen.entry(call.header("x-hookstream-id").unwrap_or_default().to_string()).or_insert(0) += 1;
    }
    seen
}

struct Stack {
    redis: RedisServer,
    ingress: TestIngress,
    api: FakeApi,
    sink: FakeApi,
    sim: Arc<Simulator>,
}

async fn stack() -> Stack {
    let redis = RedisServer::start();
    let ingress = start_ingress(&redis.url()).await;
    let api = FakeApi::start().await;
    let sim = Simulator::new(Some(API_KEY.into()), Some(ingress.webhook_url()), Some(SECRET.into()));
    sim.install(&api);
    let sink = FakeApi::start().await;
    sink.always("POST", "/results", Reply::status(200));
    Stack { redis, ingress, api, sink, sim }
}

impl Stack {
    fn processor_vars(&self, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut vars = processor_vars(&self.redis.url(), &self.api.url());
        vars.insert("FORWARD_URL".into(), format!("{}/results", self.sink.url()));
        vars.insert("API_WRITES_PER_SEC".into(), "0".into());
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        vars
    }

    async fn calendars(&self, n: usize) {
        eventually("the calendars are connected", || async {
            (self.sim.world.lock().calendars.len() >= n).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_simulator_s_meetings_get_bots_cancelled_ones_lose_them_and_results_are_forwarded() {
    let s = stack().await;
    let processor = start_processor(s.processor_vars(&[("RECONCILE_INTERVAL_SECS", "0")])).await;
    // Meetings far enough ahead that a cancellation is handled before they start.
    let plan = meetings_plan(8, 1);
    let timeline = tokio::spawn(timeline::run(s.sim.clone(), plan.clone()));
    s.calendars(2).await;
    let meetings: Vec<_> = (0..6).filter_map(|turn| s.sim.create_meeting(plan.lead, plan.length, turn)).collect();
    assert_eq!(meetings.len(), 6);
    assert!(meetings.iter().any(|m| m.api == Api::V1) && meetings.iter().any(|m| m.api == Api::V2));
    eventually("every meeting has a bot", || async {
        let account = s.sim.world.lock();
        meetings.iter().all(|m| account.meeting(&m.id).is_some_and(|m| m.bot_id.is_some())).then_some(())
    })
    .await;
    // One meeting of each API is cancelled: its bot goes.
    let cancelled: Vec<String> = [Api::V1, Api::V2]
        .iter()
        .filter_map(|api| meetings.iter().find(|m| m.api == *api).map(|m| m.id.clone()))
        .collect();
    for id in &cancelled {
        s.sim.cancel(id);
    }
    eventually("the cancelled meetings' bots are unscheduled", || async {
        let account = s.sim.world.lock();
        cancelled.iter().all(|id| account.meeting(id).is_some_and(|m| m.bot_id.is_none())).then_some(())
    })
    .await;
    // The four left are recorded: their bots end with the meetings, and each result is
    // forwarded once.
    // Their meetings end about 9 s after they were made: a deadline of its own, past that.
    let bots: Vec<Bot> = eventually_within("the four bots end", Duration::from_secs(60), || async {
        let account = s.sim.world.lock();
        let ended: Vec<Bot> = account.bots.iter().filter(|b| b.ended()).cloned().collect();
        (ended.len() == 4).then_some(ended)
    })
    .await;
    eventually("each result is forwarded", || async {
        let seen = forwarded(&s.sink);
        bots.iter().all(|b| seen.contains_key(&result_id(b))).then_some(())
    })
    .await;
    processor.stop().await;
    s.ingress.stop().await;
    timeline.abort();
    let seen = forwarded(&s.sink);
    for bot in &bots {
        assert_eq!(seen.get(&result_id(bot)), Some(&1), "{} forwarded once", result_id(bot));
    }
    assert_eq!(s.sim.world.lock().stats.webhooks_failed, 0, "the ingress took every webhook");
    let calls: Vec<_> = s.api.calls().into_iter().filter(|c| !c.path.starts_with("/_")).collect();
    assert!(!calls.is_empty());
    assert_valid(&calls);
    assert_answers_valid(&s.api.answered());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_an_outage_with_every_webhook_lost_the_reconciler_brings_bots_and_results_back() {
    let s = stack().await;
    let timeline = tokio::spawn(timeline::run(s.sim.clone(), quiet_plan()));
    s.calendars(2).await;
    // The bad day: the API down, and no webhook reaches hookstream.
    s.sim.world.lock().misbehaviour.drop_webhooks_share = 1.0;
    s.sim.world.outage(3);
    let plan = meetings_plan(600, 30);
    let meetings: Vec<_> = (0..4).filter_map(|turn| s.sim.create_meeting(plan.lead, plan.length, turn)).collect();
    // Two v2 recordings ended an hour ago; their results never came.
    let ended: Vec<String> = (0..2).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    {
        let mut account = s.sim.world.lock();
        let at = chrono::Utc::now() - chrono::Duration::hours(1);
        for id in &ended {
            account.add_ended_bot(id, false, at);
        }
    }
    let processor = start_processor(s.processor_vars(&[
        ("RECONCILE_INTERVAL_SECS", "1"),
        ("RECONCILE_APIS", "v1,v2"),
        ("RECONCILE_READS_PER_SEC", "1000"),
        ("RECONCILE_RESULTS_GRACE_SECS", "1"),
        ("RETRY_MAX_ELAPSED_MS", "500"),
        ("RETRY_PARK_INITIAL_MS", "500"),
        ("BREAKER_COOLDOWN_MS", "500"),
    ]))
    .await;
    eventually("the reconciler met the outage", || async {
        (s.sim.world.lock().stats.answered_down > 0).then_some(())
    })
    .await;
    eventually("the outage ends", || async { (!s.sim.world.lock().is_down()).then_some(()) }).await;
    // Webhooks come again (a resend among them): everything converges.
    s.sim.world.lock().misbehaviour.drop_webhooks_share = 0.0;
    eventually("every meeting has its bot", || async {
        let account = s.sim.world.lock();
        meetings.iter().all(|m| account.meeting(&m.id).is_some_and(|m| m.bot_id.is_some())).then_some(())
    })
    .await;
    eventually("both results are forwarded", || async {
        let seen = forwarded(&s.sink);
        ended.iter().all(|id| seen.contains_key(&format!("bot.completed:{id}"))).then_some(())
    })
    .await;
    processor.stop().await;
    s.ingress.stop().await;
    timeline.abort();
    let account = s.sim.world.lock();
    assert!(account.stats.webhooks_dropped >= 4, "the webhooks were lost: {:?}", account.stats);
    for m in &meetings {
        let bots = account.bots.iter().filter(|b| b.meeting_id == m.id).count();
        assert_eq!(bots, 1, "one bot on meeting {}", m.id);
    }
    let seen = forwarded(&s.sink);
    for id in &ended {
        assert_eq!(seen.get(&format!("bot.completed:{id}")), Some(&1), "{id}'s result forwarded once");
    }
    let calls: Vec<_> = s.api.calls().into_iter().filter(|c| !c.path.starts_with("/_")).collect();
    assert_valid(&calls);
    assert_answers_valid(&s.api.answered());
}

/// The simulator's API on its own: the key, misbehaviour, paging and 404s.
#[tokio::test]
async fn the_simulated_api_checks_the_key_misbehaves_on_request_and_pages() {
    let api = FakeApi::start().await;
    let sim = Simulator::new(Some(API_KEY.into()), None, None);
    sim.install(&api);
    for _ in 0..3 {
        sim.world.add_calendar(Api::V2);
    }
    let client = client();
    let get = |path: &str, key: Option<&str>| {
        let mut r = client.get(format!("{}{path}", api.url()));
        if let Some(key) = key {
            r = r.header("x-meeting-baas-api-key", key);
        }
        r.send()
    };
    assert_eq!(get("/v2/calendars", None).await.unwrap().status(), 401, "no key");
    assert_eq!(get("/v2/calendars", Some("wrong")).await.unwrap().status(), 401, "a wrong key");
    // Paging: two pages of two and one, the cursor of the first naming the second.
    let first: serde_json::Value = get("/v2/calendars?limit=2", Some(API_KEY)).await.unwrap().json().await.unwrap();
    assert_eq!(first["data"].as_array().map(Vec::len), Some(2));
    let cursor = first["cursor"].as_str().expect("a next cursor").to_string();
    let second: serde_json::Value =
        get(&format!("/v2/calendars?limit=2&cursor={cursor}"), Some(API_KEY)).await.unwrap().json().await.unwrap();
    assert_eq!(second["data"].as_array().map(Vec::len), Some(1));
    assert!(second["cursor"].is_null());
    assert_eq!(get("/v2/calendars?cursor=nonsense", Some(API_KEY)).await.unwrap().status(), 400);
    let cal = sim.world.lock().calendars[0].id.clone();
    let missing = uuid::Uuid::new_v4();
    assert_eq!(get(&format!("/v2/calendars/{cal}/events/{missing}"), Some(API_KEY)).await.unwrap().status(), 404);
    // An outage: 503 to everything, and answers again once it is over.
    sim.world.outage(60);
    assert_eq!(get("/v2/calendars", Some(API_KEY)).await.unwrap().status(), 503);
    sim.world.outage(0);
    assert_eq!(get("/v2/calendars", Some(API_KEY)).await.unwrap().status(), 200);
    // 429s, with Retry-After, for the share asked for (all of them here).
    let r = client.post(format!("{}/_sim/misbehave?rate_limit_share=1", api.url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = get("/v2/calendars", Some(API_KEY)).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    // Bad control input is refused and changes nothing.
    let r = client.post(format!("{}/_sim/misbehave?rate_limit_share=2", api.url())).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(sim.world.lock().misbehaviour.rate_limit_share, 1.0);
    let state: serde_json::Value =
        client.get(format!("{}/_sim/state", api.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(state["calendars"], 3);
    assert_eq!(state["api_answered_429_total"], 1);
    assert_answers_valid(&api.answered());
}

/// A newcomer's first command against the simulator: `processor reconcile --dry-run` lists the
/// meetings whose webhooks never came (here: none was sent) and exits 0 — not 69.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_reconcile_dry_run_against_the_simulator_lists_the_meetings_without_a_bot() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    // No webhook URL: Meeting BaaS's side happens, and no webhook reaches hookstream.
    let sim = Simulator::new(Some(API_KEY.into()), None, None);
    sim.install(&api);
    sim.connect(Api::V2);
    sim.connect(Api::V1);
    let meetings: Vec<_> =
        (0..4).filter_map(|turn| sim.create_meeting(Duration::from_secs(600), Duration::from_secs(60), turn)).collect();
    let mut vars = processor_vars(&redis.url(), &api.url());
    vars.insert("RECONCILE_APIS".into(), "v1,v2".into());
    let config = processor::ProcessorConfig::read(&shared::config::Reader::new(&vars)).unwrap();
    let dry = processor::cli::operate(&config, None, processor::cli::Command::Reconcile { dry_run: true }).await;
    assert_eq!(dry.code, 0, "{dry:?}");
    for m in &meetings {
        let line = format!("{} calendar {} event {}: missing bot", m.api.name(), m.calendar_id, m.id);
        assert!(dry.stdout.contains(&line), "{line} in:\n{}", dry.stdout);
    }
    let drift = dry.stdout.lines().filter(|l| l.ends_with("missing bot") || l.ends_with("extra bot")).count();
    assert_eq!(drift, 4, "one line per meeting, nothing else drifted:\n{}", dry.stdout);
    assert_valid(&api.calls());
    assert_answers_valid(&api.answered());
}

/// A calendar whose connection breaks: hookstream records it, the meetings made meanwhile send
/// no webhook, and when the connection is back the calendar is caught up at once (SPEC §4.6) —
/// with passes an hour apart, only the return to `active` can explain the bots.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_calendar_whose_connection_broke_is_caught_up_at_once_when_it_is_back() {
    let s = stack().await;
    let processor = start_processor(s.processor_vars(&[
        ("RECONCILE_INTERVAL_SECS", "3600"),
        ("RECONCILE_APIS", "v2"),
        ("RECONCILE_READS_PER_SEC", "1000"),
    ]))
    .await;
    let calendar = s.sim.connect(Api::V2);
    let record = || {
        let raw: Option<String> =
            redis::cmd("HGET").arg("{hookstream}:calendars").arg(&calendar.id).query(&mut s.redis.con()).unwrap();
        raw.and_then(|r| serde_json::from_str::<serde_json::Value>(&r).ok())
    };
    eventually("the calendar is known, active", || async { record().filter(|r| r["status"] == "active") }).await;
    s.sim.set_connection(&calendar.id, "revoked").expect("a v2 calendar");
    eventually("hookstream saw it revoked", || async { record().filter(|r| r["status"] == "revoked") }).await;
    let plan = meetings_plan(600, 30);
    let meetings: Vec<_> = (0..2).filter_map(|turn| s.sim.create_meeting(plan.lead, plan.length, turn)).collect();
    assert_eq!(s.sim.world.lock().stats.webhooks_unsynced, 2, "a broken calendar sends no webhook");
    s.sim.set_connection(&calendar.id, "active").expect("a v2 calendar");
    eventually("the meetings made while it was broken get their bots", || async {
        let account = s.sim.world.lock();
        meetings.iter().all(|m| account.meeting(&m.id).is_some_and(|m| m.bot_id.is_some())).then_some(())
    })
    .await;
    processor.stop().await;
    s.ingress.stop().await;
    assert!(s.api.calls_to("GET", "/v2/calendars").is_empty(), "no pass ran: the return to active caught it up");
    assert_valid(&s.api.calls().into_iter().filter(|c| !c.path.starts_with("/_")).collect::<Vec<_>>());
    assert_answers_valid(&s.api.answered());
}
