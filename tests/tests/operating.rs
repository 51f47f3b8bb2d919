//! Operator tools: `processor dead …`, `processor status`, backpressure, consumer reaping.

mod common;

use clap::Parser;
use common::*;
use hookstream_tests::fake_api::{FakeApi, Reply};
use hookstream_tests::{eventually, RedisServer};
use processor::cli::{self, Cli, Command, Dead, Done};
use processor::ops::Ops;
use std::collections::HashMap;
use std::time::Duration;

fn ops(redis: &RedisServer) -> Ops {
    Ops::new(shared::keys::Keys::new(NS), GROUP.into(), conn(redis))
}

/// Parses `processor dead …` as the binary would.
fn dead_args(args: &[&str]) -> Dead {
    let mut argv = vec!["processor", "dead"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv).expect("valid arguments").command {
        Some(Command::Dead { action }) => action,
        other => panic!("{other:?}"),
    }
}

async fn dead(redis: &RedisServer, args: &[&str]) -> Done {
    cli::dead(&[ops(redis)], dead_args(args)).await
}

/// Dead-letters `n` bot.completed and `m` bot.failed events (the target refuses them), and
/// returns the target so a test can let it accept later.
async fn make_dead(redis: &RedisServer, n: usize, m: usize) -> FakeApi {
    let target = FakeApi::start().await;
    target.always("POST", "/hook", Reply::status(400));
    let mut vars = processor_vars(&redis.url(), "http://127.0.0.1:9");
    vars.insert("FORWARD_URL".into(), format!("{}/hook", target.url()));
    let processor = start_processor(vars).await;
    for i in 0..n {
        add_event(
            redis,
            "bot.completed",
            format!(r#"{{"event":"bot.completed","n":{i}}}"#).as_bytes(),
            &format!("c{i}"),
        );
    }
    for i in 0..m {
        add_event(redis, "bot.failed", format!(r#"{{"event":"bot.failed","n":{i}}}"#).as_bytes(), &format!("f{i}"));
    }
    dead_after(redis, (n + m) as u64).await;
    all_acked(redis).await;
    processor.stop().await;
    target
}

#[tokio::test]
async fn dead_list_and_show() {
    let redis = RedisServer::start();
    // An empty list is not a failure (set -e scripts go on): exit 0.
    assert_eq!(dead(&redis, &["list"]).await.code, 0, "an empty list");
    make_dead(&redis, 3, 2).await;
    let all = dead_entries(&redis);

    let done = dead(&redis, &["list"]).await;
    assert_eq!(done.code, 0);
    let lines: Vec<&str> = done.stdout.lines().collect();
    assert!(lines[0].contains("id") && lines[0].contains("event") && lines[0].contains("error"));
    assert_eq!(lines.len(), 6);
    assert!(lines[1].starts_with(&all[4].0), "newest first: {}", done.stdout);
    assert!(lines[1].contains("bot.failed") && lines[1].contains("400"), "{}", lines[1]);

    let done = dead(&redis, &["list", "--event", "bot.completed", "--count", "2"]).await;
    assert_eq!(done.stdout.lines().count(), 3);
    assert!(!done.stdout.contains("bot.failed"));
    assert_eq!(dead(&redis, &["list", "--event", "nope"]).await.code, 0, "an empty listing, as with no dead entry");

    let done = dead(&redis, &["show", &all[0].0]).await;
    assert_eq!(done.code, 0);
    assert!(done.stdout.contains("original_id: ") && done.stdout.contains("error: "), "{}", done.stdout);
    assert!(done.stdout.contains("payload:\n{\n  \"event\": \"bot.completed\",\n  \"n\": 0\n}"), "{}", done.stdout);
    assert_eq!(dead(&redis, &["show", "1-0"]).await.code, 1);
    assert_eq!(dead(&redis, &["show", "nonsense"]).await.code, 64);
}

#[tokio::test]
async fn replay_moves_entries_back_and_they_get_processed() {
    let redis = RedisServer::start();
    let target = make_dead(&redis, 2, 1).await;
    let all = dead_entries(&redis);
    let before = xlen(&redis);

    let done = dead(&redis, &["replay", &all[0].0]).await;
    assert_eq!(done.code, 0, "{done:?}");
    assert!(done.stdout.ends_with("replayed 1\n"), "{}", done.stdout);
    assert_eq!(xlen_dead(&redis), 2);
    assert_eq!(xlen(&redis), before + 1);
    let replayed = entries(&redis).pop().unwrap().1;
    let mut names: Vec<&str> = replayed.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        vec!["dedup_id", "event", "payload", "received_at", "request_id", "source"],
        "original fields only"
    );
    assert_eq!(replayed["dedup_id"], b"c0");

    // --all --event moves only that event; the rest stays dead.
    let done = dead(&redis, &["replay", "--all", "--event", "bot.failed"]).await;
    assert!(done.stdout.ends_with("replayed 1\n"), "{}", done.stdout);
    assert_eq!(dead_entries(&redis).iter().map(|(_, f)| f["event"].clone()).collect::<Vec<_>>(), vec!["bot.completed"]);
    assert_eq!(dead(&redis, &["replay", "--all", "--event", "bot.failed"]).await.code, 1, "nothing left to match");
    assert_eq!(dead(&redis, &["replay", "1-0"]).await.code, 1);

    // The cause is fixed: a processor picks the replayed entries up.
    target.always("POST", "/hook", Reply::status(200));
    let mut vars = processor_vars(&redis.url(), "http://127.0.0.1:9");
    vars.insert("FORWARD_URL".into(), format!("{}/hook", target.url()));
    let processor = start_processor(vars).await;
    all_acked(&redis).await;
    processor.stop().await;
    let ok: Vec<String> =
        target.calls().iter().skip(3).filter_map(|c| c.header("x-hookstream-id").map(String::from)).collect();
    assert_eq!(ok, vec!["c0", "f0"]);
    assert_eq!(xlen_dead(&redis), 1);
}

#[tokio::test]
async fn an_interrupted_replay_leaves_each_entry_in_exactly_one_stream() {
    let redis = RedisServer::start();
    make_dead(&redis, 5, 0).await;
    let ops = ops(&redis);
    let ids = ops.dead_ids(None).await.unwrap();
    assert_eq!(ids.len(), 5);
    let result = ops.replay(&ids, |n| if n == 2 { Err("operator pressed Ctrl-C") } else { Ok(()) }).await;
    match result {
        Err(processor::ops::ReplayError::Interrupted(moved, _)) => assert_eq!(moved, 2),
        other => panic!("{other:?}"),
    }
    // Every dedup id is in exactly one of the two streams.
    let in_events: Vec<String> =
        entries(&redis).iter().map(|(_, f)| String::from_utf8_lossy(&f["dedup_id"]).into_owned()).collect();
    let in_dead: Vec<String> = dead_entries(&redis).iter().map(|(_, f)| f["dedup_id"].clone()).collect();
    for i in 0..5 {
        let id = format!("c{i}");
        let count = in_events.iter().filter(|d| **d == id).count() - 1 /* the original, acked */ + in_dead.iter().filter(|d| **d == id).count();
        assert_eq!(count, 1, "{id}: events {in_events:?} dead {in_dead:?}");
    }
    assert_eq!(in_dead.len(), 3);
    // Running it again finishes the job.
    let rest = ops.dead_ids(None).await.unwrap();
    assert_eq!(ops.replay(&rest, |_| Ok::<(), ()>(())).await.unwrap().len(), 3);
    assert_eq!(xlen_dead(&redis), 0);
}

#[tokio::test]
async fn purge_by_age_and_by_id() {
    let redis = RedisServer::start();
    make_dead(&redis, 3, 0).await;
    let all = dead_entries(&redis);
    assert_eq!(dead(&redis, &["purge", "--older-than", "7d"]).await.code, 1, "nothing died a week ago");
    let done = dead(&redis, &["purge", &all[0].0]).await;
    assert_eq!((done.code, done.stdout.as_str()), (0, "purged 1\n"));
    assert_eq!(dead(&redis, &["purge", &all[0].0]).await.code, 1, "already gone");
    let done = dead(&redis, &["purge", "--older-than", "0s"]).await;
    assert_eq!((done.code, done.stdout.as_str()), (0, "purged 2\n"));
    assert_eq!(xlen_dead(&redis), 0);
    assert_eq!(dead(&redis, &["purge", "--older-than", "soon"]).await.code, 64);
    assert_eq!(dead(&redis, &["purge", "x-y"]).await.code, 64);
}

#[tokio::test]
async fn purge_older_than_a_duration_longer_than_the_epoch_purges_nothing() {
    let redis = RedisServer::start();
    // A dead entry from 1970 + 10 h (ids are times).
    let _: String = redis::cmd("XADD")
        .arg(DEAD)
        .arg("36000000-0")
        .arg("event")
        .arg("bot.completed")
        .arg("error")
        .arg("old")
        .query(&mut redis.con())
        .unwrap();
    // 213503982335 days is 2^64 ms and 9.6 h: truncated to 64 bits it would read "9.6 h" and
    // purge the entry above. Longer ago than the epoch, nothing died.
    let done = dead(&redis, &["purge", "--older-than", "213503982335d"]).await;
    assert_eq!(done.code, 1, "{done:?}");
    assert_eq!(xlen_dead(&redis), 1);
}

#[test]
fn bad_arguments_are_refused_by_the_parser() {
    for args in [
        vec!["processor", "dead", "replay", "1-0", "--all"],
        vec!["processor", "dead", "replay", "--event", "x"],
        vec!["processor", "dead", "purge", "1-0", "--older-than", "1d"],
        vec!["processor", "dead", "list", "--count", "many"],
        vec!["processor", "dead", "frobnicate"],
    ] {
        assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
    }
}

#[tokio::test]
async fn replay_and_purge_without_targets_are_bad_arguments() {
    let redis = RedisServer::start();
    assert_eq!(dead(&redis, &["replay"]).await.code, 64);
    assert_eq!(dead(&redis, &["purge"]).await.code, 64);
}

#[tokio::test]
async fn status_shows_the_numbers() {
    let redis = RedisServer::start();
    let done = cli::status(&[ops(&redis)], Duration::from_secs(3600)).await;
    assert!(done.stdout.contains("does not exist yet"), "{}", done.stdout);
    make_dead(&redis, 1, 0).await;
    // A crashed consumer holds one entry; two more wait undelivered.
    add_event(&redis, "bot.completed", b"{}", "held");
    assert_eq!(ghost_read(&redis, "crashed", 1), 1);
    add_event(&redis, "bot.completed", b"{}", "w1");
    add_event(&redis, "bot.completed", b"{}", "w2");
    // A consumer with nothing pending (a processor that stopped cleanly removes its own, so one
    // is made here).
    create_consumer(&redis, "idle-one");
    let done = cli::status(&[ops(&redis)], Duration::from_secs(3600)).await;
    assert_eq!(done.code, 0);
    let out = done.stdout;
    assert!(out.contains("4 entries"), "stream length: {out}");
    assert!(out.contains("  1 entry\n"), "dead length: {out}");
    assert!(out.contains("lag 2"), "{out}");
    assert!(out.contains("pending 1"), "{out}");
    let crashed = out.lines().find(|l| l.starts_with("crashed")).expect("the crashed consumer is listed");
    assert!(crashed.split_whitespace().nth(1) == Some("1"), "{crashed}");
    assert!(out.lines().any(|l| l.starts_with("idle-one") && !l.contains("will be reaped")), "{out}");
    // With a reap limit of zero every consumer with nothing pending is marked, whatever its idle
    // time: no race with the clock.
    let idle = cli::status(&[ops(&redis)], Duration::ZERO).await.stdout;
    assert!(idle.lines().any(|l| l.starts_with("idle-one") && l.contains("will be reaped")), "{idle}");
    assert!(!idle.lines().any(|l| l.starts_with("crashed") && l.contains("will be reaped")), "{idle}");
}

#[tokio::test]
async fn backpressure_answers_503_backlog_full_until_the_backlog_drains() {
    let redis = RedisServer::start();
    let mut vars = default_vars(&redis.url());
    vars.insert("MAX_BACKLOG".into(), "3".into());
    let ingress = start_with(vars, |c| c.backlog_refresh = Duration::from_millis(20)).await;
    let body = |i: usize| format!(r#"{{"event":"bot.completed","n":{i}}}"#);
    for i in 0..4 {
        assert_eq!(post_v1(&ingress, body(i).as_bytes()).await.status(), 200);
    }
    // Nobody consumes: once the backlog (4 > 3) is read, the ingress pushes back.
    let refused = eventually("backlog_full", || async {
        let r = post_v1(&ingress, body(99).as_bytes()).await;
        (r.status() == 503).then_some(r)
    })
    .await;
    assert!(refused.headers().contains_key("retry-after"));
    let answer = assert_error(refused, 503, "backlog_full").await;
    assert!(answer["message"].as_str().unwrap().contains("MAX_BACKLOG=3"), "{answer}");
    let stored = xlen(&redis);
    assert_error(post_v1(&ingress, body(100).as_bytes()).await, 503, "backlog_full").await;
    assert_eq!(xlen(&redis), stored, "nothing written while full");

    // A processor drains the backlog: accepted again.
    let api = FakeApi::start().await;
    let processor = start_processor(processor_vars(&redis.url(), &api.url())).await;
    all_acked(&redis).await;
    eventually("accepted again", || async {
        (post_v1(&ingress, body(99).as_bytes()).await.status() == 200).then_some(())
    })
    .await;
    processor.stop().await;
}

#[tokio::test]
async fn backpressure_starts_above_max_backlog_not_at_it() {
    let redis = RedisServer::start();
    // No group yet: the backlog is the stream's length. 21 entries, one more than the limit.
    let ids: Vec<String> = (0..21).map(|i| add_event(&redis, "x", b"{}", &format!("pre{i}"))).collect();
    let mut vars = default_vars(&redis.url());
    vars.insert("MAX_BACKLOG".into(), "20".into());
    let ingress = start_with(vars, |c| c.backlog_refresh = Duration::from_millis(20)).await;
    let body = |i: usize| format!(r#"{{"event":"x","n":{i}}}"#);
    let refused = eventually("21 > 20: backlog_full", || async {
        let r = post_v1(&ingress, body(0).as_bytes()).await;
        (r.status() == 503).then_some(r)
    })
    .await;
    assert_error(refused, 503, "backlog_full").await;
    // Exactly at the limit (20) is not over it: accepted again. (Posts before the ingress first
    // read the backlog were accepted: delete down to exactly 20.)
    let over = xlen(&redis) as usize - 20;
    let _: i64 = redis::cmd("XDEL").arg(EVENTS).arg(&ids[..over]).query(&mut redis.con()).unwrap();
    eventually("20 = MAX_BACKLOG is accepted", || async {
        (post_v1(&ingress, body(1).as_bytes()).await.status() == 200).then_some(())
    })
    .await;
    // That acceptance made it 21 again: refused again.
    eventually("21 > 20 again: backlog_full", || async {
        (post_v1(&ingress, body(2).as_bytes()).await.status() == 503).then_some(())
    })
    .await;
}

#[tokio::test]
async fn idle_consumers_without_pending_entries_are_reaped_and_others_kept() {
    let redis = RedisServer::start();
    create_group(&redis);
    // `gone-with-work` goes idle first, so whenever `gone-idle` is idle long enough to be reaped,
    // so is `gone-with-work`: the pass that reaps one has seen the other past the limit too.
    add_event(&redis, "bot.completed", b"{}", "held");
    assert_eq!(ghost_read(&redis, "gone-with-work", 1), 1);
    create_consumer(&redis, "gone-idle");
    let mut vars: HashMap<String, String> = processor_vars(&redis.url(), "http://127.0.0.1:9");
    vars.insert("CONSUMER_IDLE_REAP_SECS".into(), "1".into());
    let processor = start_processor_with(vars, |c| c.trim_interval = Duration::from_millis(50)).await;
    let ops = ops(&redis);
    eventually("the idle consumer is reaped", || async {
        let names: Vec<String> = ops.consumers().await.unwrap().into_iter().map(|c| c.name).collect();
        (!names.contains(&"gone-idle".to_string())).then_some(())
    })
    .await;
    let consumers = ops.consumers().await.unwrap();
    let with_work =
        consumers.iter().find(|c| c.name == "gone-with-work").expect("a consumer with pending entries is kept");
    assert_eq!(with_work.pending, 1);
    assert!(with_work.idle >= Duration::from_secs(1), "it was idle long enough to be reaped, had it nothing pending");
    assert!(consumers.iter().any(|c| c.name == processor.consumer), "the running processor keeps itself");
    processor.stop().await;
}

/// `DEAD_RETENTION_DAYS` (SPEC §2): dead entries older than it are trimmed, younger ones kept;
/// `0` keeps every one.
#[tokio::test]
async fn dead_entries_past_their_retention_are_trimmed_and_zero_keeps_them() {
    let redis = RedisServer::start();
    create_group(&redis);
    let dead = |id: &str| -> String {
        redis::cmd("XADD").arg(DEAD).arg(id).arg("error").arg("boom").query(&mut redis.con()).unwrap()
    };
    // 31 days old, on Redis's clock, and one just now.
    let (secs, _): (u64, u64) = redis::cmd("TIME").query(&mut redis.con()).unwrap();
    let old = dead(&format!("{}-0", (secs - 31 * 86_400) * 1000));
    // DEAD_RETENTION_DAYS=0: the trim keeps everything.
    let stream = processor::stream::Stream::new(shared::keys::Keys::new(NS), GROUP.into(), "me".into(), conn(&redis));
    assert_eq!(stream.trim_dead(Duration::ZERO).await.unwrap(), 0);
    assert_eq!(xlen_dead(&redis), 1, "DEAD_RETENTION_DAYS=0 keeps every dead entry");
    let mut vars: HashMap<String, String> = processor_vars(&redis.url(), "http://127.0.0.1:9");
    let young = dead("*");
    vars.insert("DEAD_RETENTION_DAYS".into(), "30".into());
    let processor = start_processor_with(vars, |c| c.trim_interval = Duration::from_millis(50)).await;
    eventually("the old dead entry is trimmed", || async { (xlen_dead(&redis) == 1).then_some(()) }).await;
    processor.stop().await;
    let ids: Vec<String> = dead_entries(&redis).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![young], "only the old one ({old}) is trimmed");
}

/// A clean stop leaves no consumer behind: once nothing is pending under its name, a stopping
/// processor removes its own consumer (seven restarts used to leave seven rows in `status`).
#[tokio::test]
async fn a_clean_stop_removes_its_own_consumer() {
    let redis = RedisServer::start();
    let vars: HashMap<String, String> = processor_vars(&redis.url(), "http://127.0.0.1:9");
    let ops = ops(&redis);
    for i in 0..3 {
        let processor = start_processor(vars.clone()).await;
        add_event(&redis, "bot.completed", b"{}", &format!("restart-{i}"));
        all_acked(&redis).await;
        let names: Vec<String> = ops.consumers().await.unwrap().into_iter().map(|c| c.name).collect();
        assert!(names.contains(&processor.consumer), "running: {names:?}");
        processor.stop().await;
        let names: Vec<String> = ops.consumers().await.unwrap().into_iter().map(|c| c.name).collect();
        assert!(names.is_empty(), "after a clean stop: {names:?}");
    }
}
