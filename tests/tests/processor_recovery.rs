//! Failure paths: crashed consumers, poison entries, leases, a vanished group, Redis restarts,
//! shutdown, trimming.

mod common;

use common::*;
use hookstream_tests::fake_api::{FakeApi, Gate, Reply};
use hookstream_tests::{eventually, RedisServer};
use processor::stream::Stream;
use std::collections::HashMap;
use std::time::Duration;

fn forward_vars(redis: &RedisServer, target: &FakeApi) -> HashMap<String, String> {
    let mut vars = processor_vars(&redis.url(), "http://127.0.0.1:9");
    vars.insert("FORWARD_URL".into(), format!("{}/hook", target.url()));
    vars
}

/// A forward target answering every call with `reply`, and processor variables pointing at it.
async fn forward_target(redis: &RedisServer, reply: Reply) -> (FakeApi, HashMap<String, String>) {
    let target = FakeApi::start().await;
    target.always("POST", "/hook", reply);
    let vars = forward_vars(redis, &target);
    (target, vars)
}

/// A forward target answering 200 after `delay`.
async fn slow_target(redis: &RedisServer, delay: Duration) -> (FakeApi, HashMap<String, String>) {
    forward_target(redis, Reply::status(200).delayed(delay)).await
}

/// The `x-hookstream-id` of every forward the target received, in arrival order.
fn forwarded_ids(target: &FakeApi) -> Vec<String> {
    target.calls().iter().map(|c| c.header("x-hookstream-id").unwrap().to_string()).collect()
}

fn pending_of(redis: &RedisServer, consumer: &str) -> usize {
    let reply: redis::Value = redis::cmd("XPENDING")
        .arg(EVENTS)
        .arg(GROUP)
        .arg("-")
        .arg("+")
        .arg(1000)
        .arg(consumer)
        .query(&mut redis.con())
        .unwrap();
    match reply {
        redis::Value::Array(rows) => rows.len(),
        _ => 0,
    }
}

#[tokio::test]
async fn entries_of_a_crashed_consumer_are_reclaimed_and_finished() {
    let redis = RedisServer::start();
    let (target, mut vars) = forward_target(&redis, Reply::status(200)).await;
    create_group(&redis);
    for i in 0..5 {
        add_event(
            &redis,
            "bot.completed",
            format!(r#"{{"event":"bot.completed","n":{i}}}"#).as_bytes(),
            &format!("d{i}"),
        );
    }
    assert_eq!(ghost_read(&redis, "crashed-replica", 5), 5);
    assert_eq!(pending_of(&redis, "crashed-replica"), 5);

    vars.insert("CLAIM_IDLE_MS".into(), "400".into());
    let processor = start_processor(vars).await;
    all_acked(&redis).await;
    processor.stop().await;
    let mut ids = forwarded_ids(&target);
    ids.sort();
    assert_eq!(ids, vec!["d0", "d1", "d2", "d3", "d4"], "each entry handled once");
    assert_eq!(xlen_dead(&redis), 0);
}

#[tokio::test]
async fn own_pending_entries_are_read_first_after_a_restart() {
    let redis = RedisServer::start();
    let (target, mut vars) = forward_target(&redis, Reply::status(200)).await;
    create_group(&redis);
    add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, "mine");
    assert_eq!(ghost_read(&redis, "replica-a", 1), 1);
    // The same consumer name comes back (CLAIM_IDLE_MS is long: only its own re-read helps).
    vars.insert("CONSUMER_NAME".into(), "replica-a".into());
    let processor = start_processor(vars).await;
    all_acked(&redis).await;
    processor.stop().await;
    assert_eq!(target.calls().len(), 1);
}

#[tokio::test]
async fn poison_entries_are_dead_lettered_without_running_the_handler() {
    let redis = RedisServer::start();
    let (target, mut vars) = forward_target(&redis, Reply::status(200)).await;
    create_group(&redis);
    let id = add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, "poison");
    ghost_read(&redis, "ghost", 1);
    for _ in 0..2 {
        // Each XCLAIM (without JUSTID) counts one more delivery.
        let _: redis::Value =
            redis::cmd("XCLAIM").arg(EVENTS).arg(GROUP).arg("ghost").arg(0).arg(&id).query(&mut redis.con()).unwrap();
    }
    vars.insert("MAX_DELIVERIES".into(), "3".into());
    vars.insert("CLAIM_IDLE_MS".into(), "400".into());
    let processor = start_processor(vars).await;
    let dead = dead_after(&redis, 1).await;
    all_acked(&redis).await;
    processor.stop().await;
    let f = &dead[0].1;
    assert_eq!(f["original_id"], id);
    assert_eq!(f["deliveries"], "4");
    assert_eq!(f["attempts"], "0");
    assert!(f["error"].contains("MAX_DELIVERIES=3"), "{}", f["error"]);
    assert!(target.calls().is_empty(), "the handler never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_keeps_a_slow_entry_from_being_reclaimed() {
    let redis = RedisServer::start();
    // The one call is held until the test has seen the lease at work for several idle limits.
    let gate = Gate::new();
    let (target, mut vars) = forward_target(&redis, Reply::status(200).held(&gate)).await;
    vars.insert("CLAIM_IDLE_MS".into(), "600".into());
    let first = start_processor(vars.clone()).await;
    vars.insert("CONSUMER_NAME".into(), "second-replica".into());
    let second = start_processor(vars).await;
    let id = add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, "slow");
    eventually("the handler is running", || async { (!target.calls().is_empty()).then_some(()) }).await;
    // The entry's idle time is reset again and again (XPENDING shows it falling back) while its
    // delivery count stays 1: the lease, not a reclaim.
    let mut resets = 0;
    let mut last_idle = 0;
    eventually("the lease reset the idle time five times", || {
        let (idle, deliveries) = pending_entry(&redis, &id).expect("still pending");
        assert_eq!(deliveries, 1, "the entry was never delivered again (reclaimed)");
        if idle < last_idle {
            resets += 1;
        }
        last_idle = idle;
        let done = resets >= 5;
        async move { done.then_some(()) }
    })
    .await;
    gate.open();
    all_acked(&redis).await;
    first.stop().await;
    second.stop().await;
    assert_eq!(target.calls().len(), 1, "the API saw one call");
    assert_eq!(xlen_dead(&redis), 0);
}

/// `(idle ms, delivery count)` of one pending entry.
fn pending_entry(redis: &RedisServer, id: &str) -> Option<(u64, u64)> {
    let reply: redis::Value =
        redis::cmd("XPENDING").arg(EVENTS).arg(GROUP).arg(id).arg(id).arg(1).query(&mut redis.con()).unwrap();
    let redis::Value::Array(rows) = reply else { return None };
    let redis::Value::Array(row) = rows.into_iter().next()? else { return None };
    match (row.get(2), row.get(3)) {
        (Some(redis::Value::Int(idle)), Some(redis::Value::Int(n))) => Some((*idle as u64, *n as u64)),
        _ => None,
    }
}

#[tokio::test]
async fn a_vanished_group_is_recreated() {
    let redis = RedisServer::start();
    let (target, vars) = forward_target(&redis, Reply::status(200)).await;
    let processor = start_processor(vars).await;
    eventually("the group exists", || async { group_state(&redis).map(|_| ()) }).await;
    let _: i64 = redis::cmd("XGROUP").arg("DESTROY").arg(EVENTS).arg(GROUP).query(&mut redis.con()).unwrap();
    add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, "after-destroy");
    eventually("the entry is processed", || async { (target.calls().len() == 1).then_some(()) }).await;
    all_acked(&redis).await;
    processor.stop().await;
}

#[tokio::test]
async fn processing_resumes_after_a_redis_restart() {
    for persistent in [true, false] {
        let mut redis = if persistent { RedisServer::start_persistent() } else { RedisServer::start() };
        let (target, vars) = forward_target(&redis, Reply::status(200)).await;
        let processor = start_processor(vars).await;
        add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, "before");
        all_acked(&redis).await;

        redis.kill();
        let readyz = format!("http://{}/readyz", processor.metrics);
        eventually("readyz reports Redis down", || async {
            let r = reqwest::get(&readyz).await.ok()?;
            (r.status() == 503).then_some(())
        })
        .await;
        redis.restart();
        // Without persistence the group is gone too (NOGROUP): it is recreated.
        add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, "after");
        all_acked(&redis).await;
        processor.stop().await;
        let ids = forwarded_ids(&target);
        assert_eq!(ids, vec!["before", "after"], "persistent={persistent}");
    }
}

#[tokio::test]
async fn shutdown_finishes_the_entry_in_flight() {
    let redis = RedisServer::start();
    let (target, vars) = slow_target(&redis, Duration::from_millis(500)).await;
    let mut processor = start_processor(vars).await;
    add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, "in-flight");
    eventually("the handler is running", || async { (!target.calls().is_empty()).then_some(()) }).await;
    processor.begin_shutdown();
    assert!(processor.join().await, "finished within the grace period");
    assert_eq!(group_state(&redis), Some((0, 0)), "acked before exit");
}

#[tokio::test]
async fn shutdown_leaves_an_unfinished_entry_pending() {
    let redis = RedisServer::start();
    let (target, mut vars) = slow_target(&redis, Duration::from_secs(20)).await;
    vars.insert("SHUTDOWN_GRACE_MS".into(), "200".into());
    vars.insert("HANDLER_TIMEOUT_MS".into(), "30000".into());
    let mut processor = start_processor(vars).await;
    add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, "stuck");
    eventually("the handler is running", || async { (!target.calls().is_empty()).then_some(()) }).await;
    processor.begin_shutdown();
    assert!(!processor.join().await, "cut off at the grace period");
    assert_eq!(group_state(&redis), Some((1, 0)), "still pending, for another replica to reclaim");
    assert_eq!(xlen_dead(&redis), 0);
}

#[tokio::test]
async fn concurrency_bounds_the_handlers_running_at_once() {
    let redis = RedisServer::start();
    // Every call is held until all the slots are known to be busy: then the fake API has exactly
    // as many calls in flight as handlers run at once.
    let gate = Gate::new();
    let (target, mut vars) = forward_target(&redis, Reply::status(200).held(&gate)).await;
    vars.insert("CONCURRENCY".into(), "2".into());
    create_group(&redis);
    for i in 0..6 {
        add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, &format!("c{i}"));
    }
    let processor = start_processor(vars).await;
    eventually("two handlers are running", || async { (target.calls().len() == 2).then_some(()) }).await;
    // Give a third handler every chance to start if the bound were broken: the processor holds
    // six entries (read ahead) and nothing else to wait for.
    eventually("all six entries are delivered", || async {
        (group_state(&redis).map(|(_, lag)| lag) == Some(0)).then_some(())
    })
    .await;
    assert_eq!(target.calls().len(), 2, "a third handler started while two were running");
    gate.open();
    all_acked(&redis).await;
    processor.stop().await;
    assert_eq!(target.calls().len(), 6);
    assert_eq!(target.max_in_flight(), 2, "CONCURRENCY=2 handlers ran at once, never more");
}

#[tokio::test]
async fn entries_read_ahead_stay_pending_at_shutdown_and_are_finished_once() {
    let redis = RedisServer::start();
    let (target, mut vars) = slow_target(&redis, Duration::from_millis(200)).await;
    vars.insert("CONCURRENCY".into(), "1".into());
    vars.insert("BATCH_SIZE".into(), "2".into());
    vars.insert("CONSUMER_NAME".into(), "replica-a".into());
    create_group(&redis);
    for i in 0..6 {
        add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, &format!("r{i}"));
    }
    let mut processor = start_processor(vars.clone()).await;
    eventually("the first handler is running", || async { (!target.calls().is_empty()).then_some(()) }).await;
    processor.begin_shutdown();
    assert!(processor.join().await, "the running entry finished within the grace period");
    let handled = target.calls().len();
    assert!(handled < 6, "shut down before everything was handled");
    // Entries read ahead but never started are still pending for this consumer, not lost:
    // every entry is handled, pending or not yet delivered.
    let (pending, lag) = group_state(&redis).unwrap();
    assert!(pending_of(&redis, "replica-a") >= 1, "the entries read ahead are pending");
    assert_eq!(handled as u64 + pending + lag, 6);
    assert_eq!(xlen_dead(&redis), 0);

    // The same consumer comes back, reads its own pending entries first and finishes everything.
    let processor = start_processor(vars).await;
    all_acked(&redis).await;
    processor.stop().await;
    let mut ids = forwarded_ids(&target);
    ids.sort();
    assert_eq!(ids, vec!["r0", "r1", "r2", "r3", "r4", "r5"], "each entry handled exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_hands_the_entries_read_ahead_back_at_once() {
    // Measured: the old replica has read twelve entries ahead with CONCURRENCY=1 and a slow
    // target, and is told to stop once its first call starts. Its consumer name never comes
    // back. Without the hand-back the new replica would wait CLAIM_IDLE_MS (ten minutes here)
    // for eleven of them.
    let redis = RedisServer::start();
    let (target, mut vars) = slow_target(&redis, Duration::from_secs(1)).await;
    vars.insert("CLAIM_IDLE_MS".into(), "600000".into());
    create_group(&redis);
    for i in 0..12 {
        add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, &format!("h{i:02}"));
    }
    let mut old_vars = vars.clone();
    old_vars.insert("CONCURRENCY".into(), "1".into());
    old_vars.insert("CONSUMER_NAME".into(), "old-replica".into());
    let mut old = start_processor(old_vars).await;
    eventually("the old replica's first call started", || async { (!target.calls().is_empty()).then_some(()) }).await;
    old.begin_shutdown();
    vars.insert("CONSUMER_NAME".into(), "new-replica".into());
    let new = start_processor(vars).await;
    assert!(old.join().await, "the running entry finished within the grace period");
    eventually("every entry forwarded", || async {
        let mut ids = forwarded_ids(&target);
        ids.sort();
        ids.dedup();
        (ids.len() == 12).then_some(())
    })
    .await;
    all_acked(&redis).await;
    new.stop().await;
    assert_eq!(forwarded_ids(&target).len(), 12, "each entry handled once: {:?}", forwarded_ids(&target));
    assert_eq!(xlen_dead(&redis), 0);
}

#[tokio::test]
async fn trimming_never_removes_unacked_entries() {
    let redis = RedisServer::start();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("stream-node-max-entries").arg(2).query(&mut redis.con()).unwrap();
    let (_target, mut vars) = forward_target(&redis, Reply::status(200)).await;
    create_group(&redis);
    let ids: Vec<String> =
        (0..6).map(|i| add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, &format!("t{i}"))).collect();
    // A crashed replica holds the first two; the processor handles the other four.
    assert_eq!(ghost_read(&redis, "ghost", 2), 2);
    vars.insert("STREAM_RETENTION_SECS".into(), "0".into());
    let processor = start_processor(vars.clone()).await;
    eventually("four handled", || async { (group_state(&redis) == Some((2, 0))).then_some(()) }).await;
    processor.stop().await;

    let config = processor::ProcessorConfig::read(&shared::config::Reader::new(&vars)).unwrap();
    let stream = Stream::new(shared::keys::Keys::new(NS), GROUP.into(), "trimmer".into(), conn(&redis));
    assert_eq!(stream.trim_point(config.stream_retention).await.unwrap().as_deref(), Some(ids[0].as_str()));
    stream.trim(config.stream_retention).await.unwrap();
    assert_eq!(xlen(&redis), 6, "the oldest pending entry bounds the trim");

    // A second group that has read nothing protects everything.
    let _: () = redis::cmd("XGROUP").arg("CREATE").arg(EVENTS).arg("audit").arg("0").query(&mut redis.con()).unwrap();
    let _: i64 = redis::cmd("XACK").arg(EVENTS).arg(GROUP).arg(&ids[0]).arg(&ids[1]).query(&mut redis.con()).unwrap();
    assert_eq!(stream.trim_point(config.stream_retention).await.unwrap().as_deref(), Some("0-0"));
    stream.trim(config.stream_retention).await.unwrap();
    assert_eq!(xlen(&redis), 6);

    // Once every group has everything, processed entries go (whole nodes only: `~`).
    let _: i64 = redis::cmd("XGROUP").arg("DESTROY").arg(EVENTS).arg("audit").query(&mut redis.con()).unwrap();
    assert_eq!(stream.trim_point(config.stream_retention).await.unwrap().as_deref(), Some(ids[5].as_str()));
    stream.trim(config.stream_retention).await.unwrap();
    let left: Vec<String> = entries(&redis).into_iter().map(|(id, _)| id).collect();
    assert!(left.contains(&ids[5]), "the last delivered entry stays");
    assert!(left.len() < 6, "processed entries were trimmed: {left:?}");

    // A retention window keeps recent entries even when processed.
    assert!(stream.trim_point(Duration::from_secs(3600)).await.unwrap().unwrap() < ids[0]);
}

#[tokio::test]
async fn the_trimmer_runs_by_itself() {
    let redis = RedisServer::start();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("stream-node-max-entries").arg(2).query(&mut redis.con()).unwrap();
    let (_target, mut vars) = forward_target(&redis, Reply::status(200)).await;
    vars.insert("STREAM_RETENTION_SECS".into(), "0".into());
    let processor = start_processor_with(vars, |c| c.trim_interval = Duration::from_millis(50)).await;
    for i in 0..6 {
        add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, &format!("t{i}"));
    }
    all_acked(&redis).await;
    eventually("processed entries are trimmed", || async { (xlen(&redis) < 6).then_some(()) }).await;
    processor.stop().await;
}

/// Three entries pending under `consumer`, the second deleted from the stream by hand (XDEL);
/// a processor started with `vars` changed by `adjust` handles the others and leaves nothing
/// pending.
async fn a_deleted_pending_entry(prefix: &str, consumer: &str, adjust: impl FnOnce(&mut HashMap<String, String>)) {
    let redis = RedisServer::start();
    let (target, mut vars) = forward_target(&redis, Reply::status(200)).await;
    create_group(&redis);
    let ids: Vec<String> = (0..3)
        .map(|i| add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, &format!("{prefix}{i}")))
        .collect();
    assert_eq!(ghost_read(&redis, consumer, 3), 3);
    let _: i64 = redis::cmd("XDEL").arg(EVENTS).arg(&ids[1]).query(&mut redis.con()).unwrap();
    adjust(&mut vars);
    let processor = start_processor(vars).await;
    all_acked(&redis).await;
    processor.stop().await;
    let mut forwarded = forwarded_ids(&target);
    forwarded.sort();
    assert_eq!(
        forwarded,
        vec![format!("{prefix}0"), format!("{prefix}2")],
        "the others are handled; the deleted one is not"
    );
    assert_eq!(pending_of(&redis, consumer), 0, "the deleted entry is acked, not left pending for ever");
    assert_eq!(xlen_dead(&redis), 0);
}

#[tokio::test]
async fn reclaimed_entries_that_were_deleted_from_the_stream_are_dropped() {
    // Someone deletes a pending entry by hand (XDEL): XAUTOCLAIM reports it as deleted.
    a_deleted_pending_entry("x", "crashed", |vars| {
        vars.insert("CLAIM_IDLE_MS".into(), "400".into());
    })
    .await;
}

#[tokio::test]
async fn own_pending_entries_that_were_deleted_are_acked_on_the_re_read() {
    // Deleted while pending: the re-read from id 0 returns its id with no fields. (CLAIM_IDLE_MS
    // stays long, so no XAUTOCLAIM cleans it up instead.)
    a_deleted_pending_entry("y", "replica-a", |vars| {
        vars.insert("CONSUMER_NAME".into(), "replica-a".into());
    })
    .await;
}

#[tokio::test]
async fn more_pending_entries_than_batch_size_are_all_reclaimed_and_re_read() {
    let redis = RedisServer::start();
    let (target, mut vars) = forward_target(&redis, Reply::status(200)).await;
    create_group(&redis);
    for i in 0..10 {
        add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, &format!("a{i}"));
    }
    for i in 0..10 {
        add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, &format!("b{i}"));
    }
    // Ten entries of a crashed consumer (XAUTOCLAIM's cursor must be followed), ten of this
    // consumer's own from before a restart (the re-read from id 0 must page on).
    assert_eq!(ghost_read(&redis, "crashed", 10), 10);
    assert_eq!(ghost_read(&redis, "replica-a", 10), 10);
    vars.insert("BATCH_SIZE".into(), "3".into());
    vars.insert("CLAIM_IDLE_MS".into(), "400".into());
    vars.insert("CONSUMER_NAME".into(), "replica-a".into());
    let processor = start_processor(vars).await;
    all_acked(&redis).await;
    processor.stop().await;
    let mut forwarded = forwarded_ids(&target);
    forwarded.sort();
    let mut expected: Vec<String> = (0..10).flat_map(|i| [format!("a{i}"), format!("b{i}")]).collect();
    expected.sort();
    assert_eq!(forwarded, expected, "each entry handled once");
}

#[tokio::test]
async fn a_custom_namespace_and_group_are_used_throughout() {
    let redis = RedisServer::start();
    let mut ingress_vars = default_vars(&redis.url());
    ingress_vars.insert("HOOKSTREAM_NAMESPACE".into(), "acme".into());
    let ingress = start_with(ingress_vars, |_| {}).await;
    let target = FakeApi::start().await;
    target.always("POST", "/hook", Reply::status(200));
    let mut vars = forward_vars(&redis, &target);
    vars.insert("HOOKSTREAM_NAMESPACE".into(), "acme".into());
    vars.insert("CONSUMER_GROUP".into(), "workers".into());
    let processor = start_processor(vars).await;
    let (status, body) = answer(post_v1(&ingress, br#"{"event":"bot.completed","n":1}"#).await).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("accepted")), "{body}");
    eventually("forwarded", || async { (target.calls().len() == 1).then_some(()) }).await;
    let acked = || async {
        let info: redis::streams::StreamInfoGroupsReply =
            redis::cmd("XINFO").arg("GROUPS").arg("{acme}:events").query(&mut redis.con()).ok()?;
        let g = info.groups.into_iter().find(|g| g.name == "workers")?;
        (g.pending == 0 && g.lag == Some(0)).then_some(())
    };
    eventually("acked by the group `workers` on {acme}:events", acked).await;
    processor.stop().await;
    ingress.stop().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis.con()).unwrap();
    assert!(keys.iter().all(|k| k.starts_with("{acme}:")), "every key in the namespace: {keys:?}");
    assert!(keys.contains(&"{acme}:events".to_string()), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("{acme}:dedup:")), "{keys:?}");
}
