//! hookstream on a Redis Cluster (3 primaries, 1 replica each, real `redis-server`s on free
//! ports) with `PARTITIONS=8`: both binaries, the operator commands, and a primary killed with
//! SIGKILL in the middle of the load.

mod common;

use common::*;
use hookstream_tests::fake_api::{FakeApi, Reply};
use hookstream_tests::{eventually, fixture, RedisCluster};
use processor::cli::{self, Command};
use shared::config::Reader;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PARTITIONS: usize = 8;

/// `vars` pointed at the cluster whose seed list is `urls`, with `PARTITIONS` partitions.
fn cluster_vars(mut vars: HashMap<String, String>, urls: &str) -> HashMap<String, String> {
    vars.insert("REDIS_URL".into(), urls.to_string());
    vars.insert("REDIS_MODE".into(), "cluster".into());
    vars.insert("PARTITIONS".into(), PARTITIONS.to_string());
    vars
}

fn forwarding_processor_vars(cluster: &RedisCluster, api: &FakeApi) -> HashMap<String, String> {
    let mut vars = cluster_vars(processor_vars(&cluster.urls(), &api.url()), &cluster.urls());
    vars.insert("FORWARD_URL".into(), format!("{}/downstream", api.url()));
    vars
}

/// How many times each `x-hookstream-id` reached the forward target.
fn forwarded(api: &FakeApi) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for call in api.calls_to("POST", "/downstream") {
        if let Some(id) = call.header("x-hookstream-id") {
            *seen.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    seen
}

fn partition_lengths(cluster: &RedisCluster) -> Vec<u64> {
    let mut con = cluster.con();
    (0..PARTITIONS)
        .map(|i| redis::cmd("XLEN").arg(format!("{{{NS}:{i}}}:events")).query(&mut con).expect("XLEN"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_spread_over_partitions_on_a_cluster_and_every_one_is_processed_once() {
    let cluster = RedisCluster::start(3, 1);
    let api = FakeApi::start().await;
    api.always("POST", "/downstream", Reply::status(200));
    let ingress = start_with(cluster_vars(default_vars(&cluster.urls()), &cluster.urls()), |_| {}).await;
    let body = fixture("meeting-baas/v2/bot_status_change.json");
    const N: usize = 120;
    for i in 0..N {
        let r = post_signed(&ingress, "svix", SECRET, &format!("msg_cluster_{i}"), now(), &body).await;
        assert_eq!(answer(r).await.1["status"], "accepted", "webhook {i}");
    }
    // A retry meets its first copy, in whatever partition that went.
    for i in [0, 57, 119] {
        let r = post_signed(&ingress, "svix", SECRET, &format!("msg_cluster_{i}"), now(), &body).await;
        assert_eq!(answer(r).await.1["status"], "duplicate", "retry of webhook {i}");
    }
    let lengths = partition_lengths(&cluster);
    assert_eq!(lengths.iter().sum::<u64>(), N as u64, "{lengths:?}");
    assert!(lengths.iter().filter(|&&n| n > 0).count() >= 6, "events spread over the partitions: {lengths:?}");

    let _one = start_processor(forwarding_processor_vars(&cluster, &api)).await;
    let _two = start_processor(forwarding_processor_vars(&cluster, &api)).await;
    let seen = eventually("every event forwarded", || {
        let seen = forwarded(&api);
        async move { (seen.len() == N).then_some(seen) }
    })
    .await;
    assert!(seen.values().all(|&n| n == 1), "no event forwarded twice: {seen:?}");

    // The operator commands see every partition, or the one asked for.
    let vars = cluster_vars(processor_vars(&cluster.urls(), &api.url()), &cluster.urls());
    let config = processor::ProcessorConfig::read(&Reader::new(&vars)).expect("valid");
    let status = cli::operate(&config, None, Command::Status).await;
    assert_eq!(status.code, 0, "{status:?}");
    for i in 0..PARTITIONS {
        assert!(status.stdout.contains(&format!("{{{NS}:{i}}}:events")), "partition {i} in status:\n{}", status.stdout);
    }
    let one = cli::operate(&config, Some(3), Command::Status).await.stdout;
    assert!(one.contains("{hookstream:3}:events") && !one.contains("{hookstream:4}:events"), "{one}");
    let bad = cli::operate(&config, Some(8), Command::Status).await;
    assert_eq!(bad.code, 64, "{bad:?}");
    assert!(bad.stderr.contains("0 to 7"), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_killed_mid_load_loses_no_accepted_event() {
    let mut cluster = RedisCluster::start(3, 1);
    let api = FakeApi::start().await;
    api.always("POST", "/downstream", Reply::status(200));
    let mut vars = cluster_vars(default_vars(&cluster.urls()), &cluster.urls());
    vars.insert("MIN_REPLICAS_ACK".into(), "1".into());
    let ingress = start_with(vars, |_| {}).await;
    let processors = [
        start_processor(forwarding_processor_vars(&cluster, &api)).await,
        start_processor(forwarding_processor_vars(&cluster, &api)).await,
        start_processor(forwarding_processor_vars(&cluster, &api)).await,
    ];

    const N: usize = 400;
    const SENDERS: usize = 4;
    let load = Load::start(ingress.webhook_url(), "msg_failover", N, SENDERS);
    // Mid-load, one primary dies as in a crash.
    eventually("a quarter of the load accepted", || {
        let n = load.accepted();
        async move { (n >= N / 4).then_some(()) }
    })
    .await;
    // The victim serves a partition's stream (a primary whose slots hold none would prove nothing).
    let partition_keys: Vec<String> = (0..PARTITIONS).map(|i| format!("{{{NS}:{i}}}:events")).collect();
    let victim = cluster
        .primaries()
        .into_iter()
        .find(|&i| {
            let mut con = cluster.nodes[i].con();
            // One key per command: keys of different slots cannot share one on a cluster node.
            partition_keys.iter().any(|key| redis::cmd("EXISTS").arg(key).query::<u64>(&mut con).unwrap_or(0) > 0)
        })
        .expect("a primary holds a partition");
    let at_kill = load.accepted();
    cluster.nodes[victim].kill();
    // Its replica takes over; then the dead host comes back, as a replica of the new primary
    // (MIN_REPLICAS_ACK=1 needs one behind every primary).
    let _cluster = tokio::task::spawn_blocking({
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        move || {
            while std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                if cluster.primaries().len() == 3 {
                    break;
                }
            }
            assert_eq!(cluster.primaries().len(), 3, "a replica took over the killed primary");
            cluster.nodes[victim].restart();
            cluster.wait_ok();
            cluster
        }
    })
    .await
    .expect("failover");
    let accepted_ids = load.accepted.clone();
    let tries = load.finish().await;
    assert!(at_kill < N, "the primary died while webhooks were still arriving");
    let accepted: HashSet<String> = accepted_ids.lock().unwrap().iter().cloned().collect();
    assert_eq!(accepted.len(), N);
    let seen = eventually("every accepted event forwarded", || {
        let seen = forwarded(&api);
        let all = accepted.iter().all(|id| seen.contains_key(id));
        async move { all.then_some(seen) }
    })
    .await;
    let twice = seen.values().filter(|&&n| n > 1).count();
    eprintln!(
        "{N} accepted ({at_kill} before the kill, {tries} tries), all processed; {twice} processed more than once"
    );
    assert!(seen.values().all(|&n| n <= 2), "an event ran at most twice: {seen:?}");
    drop(processors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_binaries_start_while_the_cluster_is_down_and_work_once_it_is_up() {
    let ports = RedisCluster::reserve_ports(3);
    let urls = ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let api = FakeApi::start().await;
    api.always("POST", "/downstream", Reply::status(200));
    let ingress = start_with(cluster_vars(default_vars(&urls), &urls), |_| {}).await;
    let mut vars = cluster_vars(processor_vars(&urls, &api.url()), &urls);
    vars.insert("FORWARD_URL".into(), format!("{}/downstream", api.url()));
    let _processor = start_processor(vars).await;
    let body = fixture("meeting-baas/v2/bot_status_change.json");
    let r = post_signed(&ingress, "svix", SECRET, "msg_down_0", now(), &body).await;
    assert_error(r, 503, "unavailable").await;

    let _cluster = tokio::task::spawn_blocking(move || RedisCluster::start_on(ports, 0)).await.expect("cluster");
    eventually("webhooks accepted once the cluster is up", || async {
        let r = post_signed(&ingress, "svix", SECRET, "msg_down_0", now(), &body).await;
        (r.status() == 200).then_some(())
    })
    .await;
    eventually("the event processed", || async { forwarded(&api).contains_key("msg_down_0").then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entries_parked_during_an_outage_on_a_cluster_come_back_in_their_partitions() {
    let cluster = RedisCluster::start(3, 0);
    let api = FakeApi::start().await;
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let delivered: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (h, d) = (healthy.clone(), delivered.clone());
    api.route("POST", "/downstream", move |call, _| {
        if !h.load(std::sync::atomic::Ordering::SeqCst) {
            return Reply::status(503);
        }
        *d.lock().unwrap().entry(call.header("x-hookstream-id").unwrap_or("").to_string()).or_default() += 1;
        Reply::status(200)
    });
    let mut vars = forwarding_processor_vars(&cluster, &api);
    for (k, v) in [
        ("RETRY_MAX_ELAPSED_MS", "100"),
        ("RETRY_PARK_INITIAL_MS", "300"),
        ("RETRY_PARK_MAX_MS", "600"),
        ("BREAKER_FAILURES", "3"),
        ("BREAKER_COOLDOWN_MS", "300"),
    ] {
        vars.insert(k.into(), v.into());
    }
    let ingress = start_with(cluster_vars(default_vars(&cluster.urls()), &cluster.urls()), |_| {}).await;
    let body = fixture("meeting-baas/v2/bot_status_change.json");
    const N: usize = 40;
    for i in 0..N {
        let r = post_signed(&ingress, "svix", SECRET, &format!("msg_parked_{i}"), now(), &body).await;
        assert_eq!(answer(r).await.1["status"], "accepted", "webhook {i}");
    }
    let _one = start_processor(vars.clone()).await;
    let _two = start_processor(vars).await;
    let parked = || {
        let mut con = cluster.con();
        (0..PARTITIONS)
            .map(|i| redis::cmd("ZCARD").arg(format!("{{{NS}:{i}}}:retry")).query::<u64>(&mut con).expect("ZCARD"))
            .collect::<Vec<u64>>()
    };
    let spread = eventually("every event parked, in its own partition's retry set", || {
        let p = parked();
        async move { (p.iter().sum::<u64>() == N as u64).then_some(p) }
    })
    .await;
    assert!(spread.iter().filter(|&&n| n > 0).count() >= 4, "{spread:?}");
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = eventually("every event forwarded", || {
        let seen = delivered.lock().unwrap().clone();
        async move { (seen.len() == N).then_some(seen) }
    })
    .await;
    eventually("nothing parked", || async { (parked().iter().sum::<u64>() == 0).then_some(()) }).await;
    let mut con = cluster.con();
    let dead: u64 = (0..PARTITIONS)
        .map(|i| redis::cmd("XLEN").arg(format!("{{{NS}:{i}}}:dead")).query::<u64>(&mut con).unwrap())
        .sum();
    assert_eq!(dead, 0);
    assert!(seen.keys().all(|id| id.starts_with("msg_parked_")), "{seen:?}");
    assert_eq!(delivered.lock().unwrap().values().sum::<usize>(), N, "each forwarded once: {seen:?}");
    ingress.stop().await;
}
