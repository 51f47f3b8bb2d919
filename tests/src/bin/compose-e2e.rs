//! The driver of `tests/compose/e2e.sh`: load, a processor killed mid-load, a Redis restart,
//! and the checks. Needs the stack up (the script does that) and these variables:
//!
//! - `INGRESS_URL`: the ingress as published on the host (`http://127.0.0.1:PORT`);
//! - `FAKE_URL`: the fake API as published on the host (for its call log);
//! - `COMPOSE`: the compose command with its project and files (`docker-compose -p … -f …`);
//! - `API_KEY`, `SECRET`: the ingress's `MEETING_BAAS_API_KEY` and one `WEBHOOK_SECRETS` entry.
//!
//! With `E2E_MODE=demo` it checks the demo profile (`--profile demo`; `INGRESS_URL` is the
//! demo's ingress, `FAKE_URL` the sink, `SIM_URL` the simulator): bots scheduled and results
//! forwarded; then an API outage with half the webhooks lost and meetings created meanwhile,
//! after which every upcoming meeting has its bot (a cancelled one none) and every v2 result
//! has been forwarded exactly once.
//!
//! With `E2E_MODE=cluster` it checks the stack of `compose.cluster.yaml` instead (Redis Cluster,
//! `PARTITIONS=8`, `MIN_REPLICAS_ACK=1`): load with duplicates, every event processed exactly
//! once, and `processor status` covering every partition.
//!
//! Exits non-zero with a message on the first failed check.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const UNIQUE: usize = 400;
const DUPLICATES: usize = 100;
const CONCURRENCY: usize = 8;
const EVENTS: &str = "{hookstream}:events";
const DEAD: &str = "{hookstream}:dead";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| fail(&format!("{name} is not set")))
}

fn fail(message: &str) -> ! {
    eprintln!("e2e: FAILED: {message}");
    std::process::exit(1)
}

fn check(ok: bool, message: &str) {
    if !ok {
        fail(message);
    }
    println!("e2e: ok: {message}");
}

fn sh(command: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(command).output().unwrap_or_else(|e| fail(&format!("{command}: {e}")));
    if !out.status.success() {
        fail(&format!("{command}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn redis_cli(compose: &str, args: &str) -> String {
    sh(&format!("{compose} exec -T redis redis-cli --raw {args}"))
}

/// XINFO GROUPS of the events stream: group name → field → value.
fn groups(compose: &str) -> HashMap<String, HashMap<String, String>> {
    let out = redis_cli(compose, &format!("XINFO GROUPS '{EVENTS}'"));
    let lines: Vec<&str> = out.lines().collect();
    let mut groups = HashMap::new();
    let mut current: HashMap<String, String> = HashMap::new();
    for pair in lines.chunks(2) {
        if pair.len() < 2 {
            break;
        }
        if pair[0] == "name" && !current.is_empty() {
            let name = current.get("name").cloned().unwrap_or_default();
            groups.insert(name, std::mem::take(&mut current));
        }
        current.insert(pair[0].to_string(), pair[1].to_string());
    }
    if let Some(name) = current.get("name").cloned() {
        groups.insert(name, current);
    }
    groups
}

fn xlen(compose: &str, key: &str) -> u64 {
    redis_cli(compose, &format!("XLEN '{key}'")).trim().parse().unwrap_or_else(|_| fail("XLEN did not answer a number"))
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn sign(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    hookstream_tests::sign_webhook(secret, id, ts, body)
}

/// One webhook to send: v1 (API key) for even numbers, v2 (signed) for odd ones. Copies of
/// the same number are the same event (same fields / same message id).
#[derive(Clone)]
struct Webhook {
    n: usize,
    dedup_id: String,
    /// The Standard Webhooks message id of a signed one.
    message_id: String,
    body: String,
    signed: bool,
}

fn webhook(n: usize) -> Webhook {
    if n % 2 == 0 {
        let body = format!(
            r#"{{"event":"bot.status_change","data":{{"bot_id":"e2e-bot-{n}","status":{{"code":"joining_call","created_at":"2026-05-19T13:58:02.417Z"}}}}}}"#
        );
        Webhook {
            n,
            dedup_id: format!("bot.status_change:e2e-bot-{n}:joining_call:2026-05-19T13:58:02.417Z"),
            message_id: String::new(),
            body,
            signed: false,
        }
    } else {
        let body = format!(r#"{{"event":"bot.completed","data":{{"bot_id":"e2e-bot-{n}"}}}}"#);
        // A bot's final result: its dedup identity is the bot's, whatever the message id
        // (SPEC §3.3 rule 1).
        Webhook {
            n,
            dedup_id: format!("bot.completed:e2e-bot-{n}"),
            message_id: format!("msg_e2e_{n}"),
            body,
            signed: true,
        }
    }
}

async fn send(client: &reqwest::Client, url: &str, key: &str, secret: &str, w: &Webhook) -> (u16, String) {
    for attempt in 0..50 {
        let mut req = client.post(url).header("content-type", "application/json").body(w.body.clone());
        if w.signed {
            let ts = now();
            req = req
                .header("webhook-id", &w.message_id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sign(secret, &w.message_id, ts, w.body.as_bytes()));
        } else {
            req = req.header("x-meeting-baas-api-key", key);
        }
        match req.send().await {
            Ok(r) if r.status().as_u16() == 503 => {} // a sender retries after Retry-After
            Ok(r) => {
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                return (status, body["status"].as_str().unwrap_or("").to_string());
            }
            Err(err) if attempt == 49 => fail(&format!("request {} failed: {err}", w.n)),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fail(&format!("request {} never accepted", w.n))
}

async fn wait_ready(client: &reqwest::Client, ingress: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while client.get(format!("{ingress}/readyz")).send().await.map(|r| r.status().as_u16()).ok() != Some(200) {
        if Instant::now() > deadline {
            fail("the ingress never became ready");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many times each dedup id reached the fake API's `/forward`.
async fn forwarded(client: &reqwest::Client, fake: &str) -> HashMap<String, usize> {
    let log: Vec<serde_json::Value> = client
        .get(format!("{fake}/_calls"))
        .send()
        .await
        .unwrap_or_else(|e| fail(&e.to_string()))
        .json()
        .await
        .unwrap_or_default();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for call in &log {
        if call["path"] == "/forward" {
            *counts.entry(call["id"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        }
    }
    counts
}

/// The cluster stack: 200 events and 40 copies; each processed once, over the partitions.
async fn cluster(client: reqwest::Client, ingress: String, fake: String, compose: String, key: String, secret: String) {
    const EVENTS: usize = 200;
    let url = format!("{ingress}/webhooks/meeting-baas");
    for n in 0..EVENTS {
        // "duplicate" too: a 503 (a replica not yet caught up after the cluster formed) is
        // retried by `send`, and the retry finds the stored first copy.
        let (status, answer) = send(&client, &url, &key, &secret, &webhook(n)).await;
        let stored = status == 200 && (answer == "accepted" || answer == "duplicate");
        if !stored {
            fail(&format!("webhook {n} not stored ({status} {answer})"));
        }
    }
    for n in (0..EVENTS).step_by(5) {
        let (status, answer) = send(&client, &url, &key, &secret, &webhook(n)).await;
        if status != 200 || answer != "duplicate" {
            fail(&format!("copy of webhook {n} answered {status} {answer}, not duplicate"));
        }
    }
    println!("e2e: ok: cluster: {EVENTS} webhooks stored, {} copies answered duplicate", EVENTS / 5);
    let expected: HashSet<String> = (0..EVENTS).map(|n| webhook(n).dedup_id).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let counts = loop {
        let counts = forwarded(&client, &fake).await;
        if counts.keys().cloned().collect::<HashSet<_>>() == expected {
            break counts;
        }
        if Instant::now() > deadline {
            fail(&format!("{} of {EVENTS} events processed", counts.len()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    check(counts.values().all(|&n| n == 1), "every event processed exactly once");
    // Every partition's group drains to lag 0 and pending 0, as `processor status` shows it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = sh(&format!("{compose} exec -T processor processor status"));
        let partitions = (0..8).filter(|i| status.contains(&format!("{{hookstream:{i}}}:events"))).count();
        check(partitions == 8, &format!("processor status covers the 8 partitions ({partitions} seen)"));
        let groups: Vec<&str> = status.lines().filter(|l| l.starts_with("group ")).collect();
        if groups.len() == 8 && groups.iter().all(|l| l.contains("lag 0 (") && l.contains("pending 0 (")) {
            break;
        }
        if Instant::now() > deadline {
            fail(&format!("partitions not drained:\n{status}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    check(true, "every partition drained (lag 0, pending 0)");
}

#[tokio::main]
async fn main() {
    let (ingress, fake, compose) = (env("INGRESS_URL"), env("FAKE_URL"), env("COMPOSE"));
    let (key, secret) = (env("API_KEY"), env("SECRET"));
    let client = reqwest::Client::new();
    wait_ready(&client, &ingress).await;
    if std::env::var("E2E_MODE").as_deref() == Ok("cluster") {
        return cluster(client, ingress, fake, compose, key, secret).await;
    }
    if std::env::var("E2E_MODE").as_deref() == Ok("demo") {
        return demo(client, env("SIM_URL"), fake).await;
    }

    // 400 events and 100 copies of some of them, interleaved (a fixed shuffle).
    let mut plan: Vec<Webhook> = (0..UNIQUE).map(webhook).collect();
    plan.extend((0..DUPLICATES).map(|i| webhook((i * 7) % UNIQUE)));
    let mut seed: u64 = 0x5eed;
    for i in (1..plan.len()).rev() {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        plan.swap(i, (seed >> 33) as usize % (i + 1));
    }
    // Copies must come after their original for the answers to be predictable.
    let mut seen = HashSet::new();
    let mut originals = Vec::new();
    let mut copies = Vec::new();
    for w in plan {
        if seen.insert(w.n) {
            originals.push(w)
        } else {
            copies.push(w)
        }
    }
    let plan: Vec<Webhook> = originals.into_iter().chain(copies).collect();

    let url = Arc::new(format!("{ingress}/webhooks/meeting-baas"));
    let (key, secret) = (Arc::new(key), Arc::new(secret));
    let mut answers: Vec<(u16, String)> = Vec::new();
    // The killed processor's container, consumer name and how many entries it held unacked.
    let mut killed: Option<(String, String, usize)> = None;
    for (i, chunk) in plan.chunks(CONCURRENCY).enumerate() {
        let tasks: Vec<_> = chunk
            .iter()
            .cloned()
            .map(|w| {
                let (client, url, key, secret) = (client.clone(), url.clone(), key.clone(), secret.clone());
                tokio::spawn(async move { send(&client, &url, &key, &secret, &w).await })
            })
            .collect();
        for t in tasks {
            answers.push(t.await.unwrap_or_else(|e| fail(&e.to_string())));
        }
        if i == 25 && killed.is_none() {
            // Mid-load: kill one processor (SIGKILL, no goodbye).
            let container =
                sh(&format!("{compose} ps -q processor")).lines().next().unwrap_or_default().trim().to_string();
            let hostname = sh(&format!("docker inspect -f '{{{{.Config.Hostname}}}}' {container}")).trim().to_string();
            sh(&format!("docker kill {container}"));
            // Its consumer name is `<hostname>-<pid>`: found in the group, never guessed (a guess
            // that missed would make the checks below pass without testing anything).
            let consumers = redis_cli(&compose, &format!("XINFO CONSUMERS '{EVENTS}' processors"));
            let prefix = format!("{hostname}-");
            let consumer =
                consumers.lines().map(str::trim).find(|l| l.starts_with(&prefix)).map(str::to_string).unwrap_or_else(
                    || fail(&format!("no consumer of the killed container ({prefix}*) in:\n{consumers}")),
                );
            let held =
                redis_cli(&compose, &format!("XPENDING '{EVENTS}' processors - + 100000 {consumer}")).lines().count()
                    / 4;
            println!("e2e: killed processor {consumer} mid-load, holding {held} unacked entries");
            killed = Some((container, consumer, held));
        }
    }
    let accepted = answers.iter().filter(|(s, a)| *s == 200 && a == "accepted").count();
    let duplicate = answers.iter().filter(|(s, a)| *s == 200 && a == "duplicate").count();
    check(accepted == UNIQUE, &format!("{accepted} of {UNIQUE} unique webhooks accepted"));
    check(duplicate == DUPLICATES, &format!("{duplicate} of {DUPLICATES} copies answered duplicate"));

    // Redis restarts: AOF (appendfsync always) keeps every accepted event.
    sh(&format!("{compose} restart redis"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("sh").arg("-c").arg(format!("{compose} exec -T redis redis-cli ping")).output();
        if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG")) {
            break;
        }
        if Instant::now() > deadline {
            fail("Redis did not come back");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stored = xlen(&compose, EVENTS);
    check(stored == UNIQUE as u64, &format!("after the Redis restart the stream holds all {stored} accepted events"));

    // Processing resumes by itself and finishes.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let g = groups(&compose);
        let done = g.get("processors").is_some_and(|g| {
            g.get("pending").map(String::as_str) == Some("0") && g.get("lag").map(String::as_str) == Some("0")
        });
        if done {
            break;
        }
        if Instant::now() > deadline {
            fail(&format!("entries still unprocessed: {g:?}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    check(true, "every entry acked (group pending 0, lag 0)");
    check(xlen(&compose, DEAD) == 0, "the dead stream is empty");

    // The fake API's log: each unique event forwarded; only entries the killed processor held
    // may have run twice (at-least-once after a crash).
    let counts = forwarded(&client, &fake).await;
    let expected: HashSet<String> = (0..UNIQUE).map(|n| webhook(n).dedup_id).collect();
    let got: HashSet<String> = counts.keys().cloned().collect();
    check(
        got == expected,
        &format!("all {} unique events were processed, none lost ({} seen)", expected.len(), got.len()),
    );
    // An entry can run twice only if the killed processor had taken it and not acked it: those
    // are exactly its pending entries at the moment of the kill (the ones it was handling, had
    // handled but not yet acked, or had read ahead).
    let twice = counts.values().filter(|c| **c > 1).count();
    let held = killed.as_ref().map_or(0, |(_, _, held)| *held);
    check(
        twice <= held,
        &format!("{twice} events ran twice (at most the {held} entries the killed processor held unacked)"),
    );
    if let Some((_, consumer, _)) = killed {
        let pending = redis_cli(&compose, &format!("XPENDING '{EVENTS}' processors - + 100 {consumer}"));
        check(pending.trim().is_empty(), &format!("the killed consumer {consumer} has nothing pending: reclaimed"));
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    match client.get(url).send().await {
        Ok(r) => r.json().await.unwrap_or(serde_json::Value::Null),
        Err(_) => serde_json::Value::Null,
    }
}

async fn post_ok(client: &reqwest::Client, url: &str) {
    let ok = client.post(url).send().await.is_ok_and(|r| r.status().is_success());
    check(ok, &format!("POST {url}"));
}

/// How many times the sink received each forwarded identity.
async fn sink_results(client: &reqwest::Client, sink: &str) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    let log = get_json(client, &format!("{sink}/_calls")).await;
    for call in log.as_array().into_iter().flatten() {
        if call["path"] == "/results" && call["method"] == "POST" {
            if let Some(id) = call["id"].as_str() {
                *seen.entry(id.to_string()).or_insert(0) += 1;
            }
        }
    }
    seen
}

/// Polls `check` every half second until it holds, or fails after `secs`.
async fn wait_until<F, Fut>(what: &str, secs: u64, mut check_once: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match check_once().await {
            Ok(()) => {
                check(true, what);
                return;
            }
            Err(why) if Instant::now() > deadline => fail(&format!("{what}: {why}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// The demo profile (see the module docs).
async fn demo(client: reqwest::Client, sim: String, sink: String) {
    wait_until("the demo schedules bots and forwards their results", 180, || async {
        let state = get_json(&client, &format!("{sim}/_sim/state")).await;
        let scheduled = state["bots_scheduled_total"].as_u64().unwrap_or(0);
        let results = sink_results(&client, &sink).await;
        let finals =
            results.keys().filter(|id| id.starts_with("bot.completed:") || id.starts_with("complete:")).count();
        if scheduled >= 3 && finals >= 2 {
            Ok(())
        } else {
            Err(format!("{scheduled} bots scheduled, {finals} results forwarded"))
        }
    })
    .await;

    // The bad day: the API down for 15 s, half the webhooks lost, six meetings created meanwhile
    // (far enough ahead to still be upcoming when it is over).
    post_ok(&client, &format!("{sim}/_sim/misbehave?drop_webhooks_share=0.5")).await;
    post_ok(&client, &format!("{sim}/_sim/outage?secs=15")).await;
    post_ok(&client, &format!("{sim}/_sim/meetings?count=6&lead_secs=240&length_secs=3")).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    // Webhooks come again before the API does, so no result asked for again is lost with them.
    post_ok(&client, &format!("{sim}/_sim/misbehave?drop_webhooks_share=0")).await;
    wait_until("the outage is over", 60, || async {
        let state = get_json(&client, &format!("{sim}/_sim/state")).await;
        if state["api_down"] == false {
            Ok(())
        } else {
            Err("the API is still down".into())
        }
    })
    .await;
    post_ok(&client, &format!("{sim}/_sim/pause")).await;
    let state = get_json(&client, &format!("{sim}/_sim/state")).await;
    check(
        state["webhooks_dropped_total"].as_u64().unwrap_or(0) > 0
            && state["api_answered_down_total"].as_u64().unwrap_or(0) > 0,
        &format!(
            "the bad day happened: {} webhooks lost, {} calls answered 503",
            state["webhooks_dropped_total"], state["api_answered_down_total"]
        ),
    );

    wait_until(
        "everything converges: every upcoming meeting as its calendar says, every v2 result forwarded",
        180,
        || async {
            let state = get_json(&client, &format!("{sim}/_sim/state")).await;
            let (missing, extra) = (state["upcoming_missing_bot"].as_u64(), state["upcoming_extra_bot"].as_u64());
            if missing != Some(0) || extra != Some(0) {
                return Err(format!("upcoming meetings without their bot: {missing:?}, cancelled with one: {extra:?}"));
            }
            let bots = get_json(&client, &format!("{sim}/_sim/bots")).await;
            let results = sink_results(&client, &sink).await;
            let ended: Vec<String> = bots
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| b["api"] == "v2" && (b["status"] == "completed" || b["status"] == "failed"))
                .map(|b| {
                    format!(
                        "bot.{}:{}",
                        b["status"].as_str().unwrap_or_default(),
                        b["bot_id"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            let absent: Vec<&String> = ended.iter().filter(|id| !results.contains_key(*id)).collect();
            if !absent.is_empty() {
                return Err(format!("{} of {} v2 results not forwarded yet", absent.len(), ended.len()));
            }
            Ok(())
        },
    )
    .await;
    let results = sink_results(&client, &sink).await;
    let twice: Vec<(&String, &usize)> = results.iter().filter(|(_, n)| **n > 1).collect();
    check(twice.is_empty(), &format!("no result forwarded twice ({twice:?})"));
}
