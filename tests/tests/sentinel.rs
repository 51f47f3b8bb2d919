//! hookstream behind Redis Sentinel (SPEC §7): one primary, one replica and three Sentinels,
//! real `redis-server`s on free ports. Webhooks flow through the ingress and two processors
//! while the primary is SIGKILLed; the Sentinels promote the replica; every connection — the
//! blocking readers' included — finds the new primary; with `MIN_REPLICAS_ACK=1` no accepted
//! event is lost.

mod common;

use common::*;
use hookstream_tests::fake_api::{FakeApi, Reply};
use hookstream_tests::{eventually, RedisServer, Sentinels};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn sentinel_vars(mut vars: HashMap<String, String>, sentinels: &Sentinels) -> HashMap<String, String> {
    vars.insert("REDIS_URL".into(), sentinels.urls());
    vars.insert("REDIS_MODE".into(), "sentinel".into());
    vars
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_primary_killed_mid_load_loses_no_accepted_event() {
    let mut primary = RedisServer::start_args(&["--appendonly", "yes"]);
    let replica = RedisServer::start_replica_of(&primary);
    let sentinels = Sentinels::start(&primary, 3, 1);
    assert_eq!(sentinels.primary_port(), Some(primary.port()));

    let delivered: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let api = FakeApi::start().await;
    let d = delivered.clone();
    api.route("POST", "/downstream", move |call, _| {
        *d.lock().unwrap().entry(call.header("x-hookstream-id").unwrap_or("").to_string()).or_default() += 1;
        Reply::status(200)
    });
    let mut vars = sentinel_vars(default_vars(&sentinels.urls()), &sentinels);
    vars.insert("MIN_REPLICAS_ACK".into(), "1".into());
    let ingress = start_with(vars, |_| {}).await;
    let processor = |_| {
        let mut vars = sentinel_vars(processor_vars(&sentinels.urls(), &api.url()), &sentinels);
        vars.insert("FORWARD_URL".into(), format!("{}/downstream", api.url()));
        vars
    };
    let one = start_processor(processor(1)).await;
    let two = start_processor(processor(2)).await;

    const N: usize = 200;
    const SENDERS: usize = 4;
    let load = Load::start(ingress.webhook_url(), "msg_sentinel", N, SENDERS);
    eventually("a quarter of the load accepted", || {
        let n = load.accepted();
        async move { (n >= N / 4).then_some(()) }
    })
    .await;
    let at_kill = load.accepted();
    primary.kill();
    // The Sentinels promote the replica; the dead host comes back, and the Sentinels make it a
    // replica of the new primary (MIN_REPLICAS_ACK=1 needs one behind it).
    let promoted = replica.port();
    let primary = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while sentinels.primary_port() != Some(promoted) {
            assert!(std::time::Instant::now() < deadline, "the Sentinels did not promote the replica");
            std::thread::sleep(Duration::from_millis(100));
        }
        primary.restart();
        (primary, sentinels)
    })
    .await
    .expect("failover");
    let accepted_ids = load.accepted.clone();
    let tries = load.finish().await;
    assert!(at_kill < N, "the primary died while webhooks were still arriving");
    let accepted: HashSet<String> = accepted_ids.lock().unwrap().iter().cloned().collect();
    assert_eq!(accepted.len(), N);
    let seen = eventually("every accepted event forwarded", || {
        let seen = delivered.lock().unwrap().clone();
        let all = accepted.iter().all(|id| seen.contains_key(id));
        async move { all.then_some(seen) }
    })
    .await;
    let twice = seen.values().filter(|&&n| n > 1).count();
    eprintln!("{N} accepted ({at_kill} before the kill, {tries} tries), all processed; {twice} more than once");
    assert!(seen.values().all(|&n| n <= 2), "an event ran at most twice: {seen:?}");
    // The replica is the primary now, with everything.
    let stream: u64 = redis::cmd("XLEN").arg(EVENTS).query(&mut replica.con()).unwrap();
    assert!(stream >= N as u64 || delivered.lock().unwrap().len() >= N, "{stream}");
    one.stop().await;
    two.stop().await;
    ingress.stop().await;
    drop(primary.0);
}
