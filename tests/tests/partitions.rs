//! `PARTITIONS` on one Redis: the layout a namespace was created with is kept — a different
//! count is refused before anything is appended or read — and `processor repartition` changes
//! it only for a drained namespace.

mod common;

use common::*;
use hookstream_tests::fake_api::{FakeApi, Reply};
use hookstream_tests::{eventually, fixture, RedisServer};
use processor::cli::{self, Command};
use shared::config::Reader;
use std::collections::HashMap;

fn with_partitions(mut vars: HashMap<String, String>, p: usize) -> HashMap<String, String> {
    vars.insert("PARTITIONS".into(), p.to_string());
    vars
}

fn ingress_config(redis: &RedisServer, p: usize) -> ingress::IngressConfig {
    ingress::IngressConfig::read(&Reader::new(&with_partitions(default_vars(&redis.url()), p))).expect("valid")
}

fn processor_config(redis: &RedisServer, api: &FakeApi, p: usize) -> processor::ProcessorConfig {
    let mut vars = with_partitions(processor_vars(&redis.url(), &api.url()), p);
    vars.insert("FORWARD_URL".into(), format!("{}/downstream", api.url()));
    processor::ProcessorConfig::read(&Reader::new(&vars)).expect("valid")
}

async fn refusal(redis: &RedisServer, api: &FakeApi, p: usize) -> (String, String) {
    let ingress = match ingress::Ingress::build(ingress_config(redis, p)).await {
        Ok(_) => panic!("an ingress with PARTITIONS={p} was built"),
        Err(err) => {
            assert!(err.is_configuration(), "{err}");
            err.to_string()
        }
    };
    let processor = match processor::Processor::build(processor_config(redis, api, p), None).await {
        Ok(_) => panic!("a processor with PARTITIONS={p} was built"),
        Err(err) => {
            assert!(err.is_configuration(), "{err}");
            err.to_string()
        }
    };
    (ingress, processor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_partition_count_is_refused_by_both_binaries() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let ingress = start_with(with_partitions(default_vars(&redis.url()), 8), |_| {}).await;
    let layout: String = redis::cmd("GET").arg("{hookstream}:partitions").query(&mut redis.con()).expect("GET");
    assert_eq!(layout, "8", "the first process records the layout");
    let (from_ingress, from_processor) = refusal(&redis, &api, 4).await;
    for message in [from_ingress, from_processor] {
        assert!(message.contains("PARTITIONS=4") && message.contains("created with 8"), "{message}");
    }
    // The recorded count is accepted, and events land in the partitions.
    let body = fixture("meeting-baas/v2/bot_status_change.json");
    for i in 0..16 {
        let r = post_signed(&ingress, "svix", SECRET, &format!("msg_p_{i}"), now(), &body).await;
        assert_eq!(r.status(), 200);
    }
    let lengths: Vec<u64> = (0..8)
        .map(|i| redis::cmd("XLEN").arg(format!("{{hookstream:{i}}}:events")).query(&mut redis.con()).expect("XLEN"))
        .collect();
    assert_eq!(lengths.iter().sum::<u64>(), 16, "{lengths:?}");
    assert!(processor::Processor::build(processor_config(&redis, &api, 8), None).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_refused_while_the_unpartitioned_stream_holds_events() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    // A namespace from before partitions existed: events, no layout record.
    let () = redis::cmd("XADD")
        .arg(EVENTS)
        .arg("*")
        .arg("event")
        .arg("bot.completed")
        .arg("payload")
        .arg("{}")
        .query(&mut redis.con())
        .expect("XADD");
    let (from_ingress, from_processor) = refusal(&redis, &api, 8).await;
    for message in [from_ingress, from_processor] {
        assert!(message.contains(EVENTS) && message.contains("repartition"), "{message}");
    }
    let layout: Option<String> = redis::cmd("GET").arg("{hookstream}:partitions").query(&mut redis.con()).expect("GET");
    assert_eq!(layout, None, "nothing recorded by a refused start");
    // PARTITIONS=1 (no record means one partition) uses it as it is, and records nothing.
    let _ingress = start_ingress(&redis.url()).await;
    let layout: Option<String> = redis::cmd("GET").arg("{hookstream}:partitions").query(&mut redis.con()).expect("GET");
    assert_eq!(layout, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repartition_changes_the_count_of_a_drained_namespace_only() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    api.always("POST", "/downstream", Reply::status(200));
    let ingress = start_ingress(&redis.url()).await;
    let body = fixture("meeting-baas/v2/bot_status_change.json");
    for i in 0..3 {
        let r = post_signed(&ingress, "svix", SECRET, &format!("msg_r_{i}"), now(), &body).await;
        assert_eq!(r.status(), 200);
    }
    let config = processor_config(&redis, &api, 1);
    let refused = cli::operate(&config, None, Command::Repartition { partitions: 4 }).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("not repartitioned") && refused.stderr.contains(EVENTS), "{refused:?}");
    assert_eq!(cli::operate(&config, None, Command::Repartition { partitions: 0 }).await.code, 64);

    // Drained by a processor, the namespace can change its count.
    let mut processor = start_processor_with(HashMap::new(), |c| *c = config.clone()).await;
    eventually("drained", || async { (api.calls_to("POST", "/downstream").len() == 3).then_some(()) }).await;
    let done = eventually("repartitioned once acks landed", || async {
        let done = cli::operate(&config, None, Command::Repartition { partitions: 4 }).await;
        (done.code == 0).then_some(done)
    })
    .await;
    assert!(done.stdout.contains("1 -> 4"), "{done:?}");
    processor.begin_shutdown();
    drop(ingress);
    let layout: String = redis::cmd("GET").arg("{hookstream}:partitions").query(&mut redis.con()).expect("GET");
    assert_eq!(layout, "4");

    // The old count is refused now; the new one works end to end.
    refusal(&redis, &api, 1).await;
    let ingress = start_with(with_partitions(default_vars(&redis.url()), 4), |_| {}).await;
    let _processor = start_processor_with(HashMap::new(), |c| *c = processor_config(&redis, &api, 4)).await;
    for i in 3..9 {
        let r = post_signed(&ingress, "svix", SECRET, &format!("msg_r_{i}"), now(), &body).await;
        assert_eq!(r.status(), 200);
    }
    eventually("the new partitions are processed", || async {
        (api.calls_to("POST", "/downstream").len() == 9).then_some(())
    })
    .await;
}

/// Appends a `bot.completed` entry with dedup identity `id` to `stream`, as the ingress would.
fn append(redis: &RedisServer, stream: &str, id: &str) {
    let () = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("event")
        .arg("bot.completed")
        .arg("dedup_id")
        .arg(id)
        .arg("payload")
        .arg(r#"{"event":"bot.completed","data":{"bot_id":"b"}}"#)
        .query(&mut redis.con())
        .expect("XADD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_in_one_partition_does_not_hold_up_another() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    api.always("POST", "/downstream", Reply::status(200).delayed(std::time::Duration::from_millis(5)));
    const BACKLOG: usize = 200;
    for i in 0..BACKLOG {
        append(&redis, "{hookstream:0}:events", &format!("backlog-{i}"));
    }
    // One handler at a time: the two partitions' readers compete for one slot.
    let mut config = processor_config(&redis, &api, 2);
    config.concurrency = 1;
    config.common.shutdown_grace = std::time::Duration::from_millis(200);
    let _processor = start_processor_with(HashMap::new(), |c| *c = config).await;
    eventually("the backlog is being worked", || async {
        (!api.calls_to("POST", "/downstream").is_empty()).then_some(())
    })
    .await;
    append(&redis, "{hookstream:1}:events", "late");
    let before = eventually("the other partition's entry is handled", || async {
        let calls = api.calls_to("POST", "/downstream");
        calls.iter().position(|c| c.header("x-hookstream-id") == Some("late"))
    })
    .await;
    assert!(before < BACKLOG / 4, "{before} backlog entries ran before the other partition's one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_entries_of_every_partition_are_listed_shown_and_replayed() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let config = processor_config(&redis, &api, 4);
    let () = redis::cmd("SET").arg("{hookstream}:partitions").arg(4).query(&mut redis.con()).expect("SET");
    for (partition, id) in [(1, "1700000000000-0"), (3, "1700000000001-0")] {
        let () = redis::cmd("XADD")
            .arg(format!("{{hookstream:{partition}}}:dead"))
            .arg(id)
            .arg("event")
            .arg("bot.failed")
            .arg("payload")
            .arg("{}")
            .arg("error")
            .arg(format!("died in partition {partition}"))
            .query(&mut redis.con())
            .expect("XADD");
    }
    let dead = |action| cli::operate(&config, None, Command::Dead { action });
    let list = dead(cli::Dead::List { count: 10, event: None }).await;
    assert_eq!(list.code, 0, "{list:?}");
    let rows: Vec<&str> = list.stdout.lines().collect();
    assert!(rows[0].starts_with("partition"), "{}", list.stdout);
    assert!(rows[1].starts_with("3 ") && rows[1].contains("1700000000001-0"), "newest first: {}", list.stdout);
    assert!(rows[2].starts_with("1 ") && rows[2].contains("1700000000000-0"), "{}", list.stdout);

    let show = dead(cli::Dead::Show { id: "1700000000000-0".into() }).await;
    assert!(show.stdout.contains("died in partition 1"), "{show:?}");
    let elsewhere =
        cli::operate(&config, Some(2), Command::Dead { action: cli::Dead::Show { id: "1700000000000-0".into() } })
            .await;
    assert_eq!(elsewhere.code, 1, "not in partition 2: {elsewhere:?}");

    // A replayed entry goes back to its own partition's stream.
    let replay = dead(cli::Dead::Replay { ids: vec![], all: true, event: None }).await;
    assert!(replay.stdout.contains("replayed 2"), "{replay:?}");
    for partition in [1, 3] {
        let len: u64 =
            redis::cmd("XLEN").arg(format!("{{hookstream:{partition}}}:events")).query(&mut redis.con()).expect("XLEN");
        assert_eq!(len, 1, "partition {partition}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_ingress_stops_appending_when_the_layout_changes_under_it() {
    let redis = RedisServer::start();
    let ingress =
        start_with(default_vars(&redis.url()), |c| c.backlog_refresh = std::time::Duration::from_millis(20)).await;
    let body = fixture("meeting-baas/v2/bot_status_change.json");
    assert_eq!(post_signed(&ingress, "svix", SECRET, "msg_before", now(), &body).await.status(), 200);
    // Someone repartitioned the namespace (or started a process with another count).
    let () = redis::cmd("SET").arg("{hookstream}:partitions").arg(8).query(&mut redis.con()).expect("SET");
    let refused = eventually("appends refused", || async {
        let r = post_signed(&ingress, "svix", SECRET, "msg_after", now(), &body).await;
        (r.status() == 503).then_some(r)
    })
    .await;
    let message = assert_error(refused, 503, "unavailable").await;
    assert!(message["message"].as_str().is_some_and(|m| m.contains("PARTITIONS=1")), "{message}");
    // (A post between the change and the ingress's next check was still accepted; from the first
    // refusal on, nothing is appended.)
    let xlen = || -> u64 { redis::cmd("XLEN").arg(EVENTS).query(&mut redis.con()).expect("XLEN") };
    let refused_at = xlen();
    let r = post_signed(&ingress, "svix", SECRET, "msg_refused", now(), &body).await;
    assert_error(r, 503, "unavailable").await;
    assert_eq!(xlen(), refused_at, "nothing appended while refused");
    // Put back, the ingress appends again.
    let () = redis::cmd("DEL").arg("{hookstream}:partitions").query(&mut redis.con()).expect("DEL");
    eventually("appends accepted again", || async {
        let r = post_signed(&ingress, "svix", SECRET, "msg_after", now(), &body).await;
        (r.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_sums_the_lag_of_every_partition() {
    let redis = RedisServer::start();
    let () = redis::cmd("SET").arg("{hookstream}:partitions").arg(4).query(&mut redis.con()).expect("SET");
    // Each partition has the group and a lag of 2 — under MAX_BACKLOG=7 alone, 8 together.
    for partition in 0..4 {
        let stream = format!("{{hookstream:{partition}}}:events");
        let () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg("processors")
            .arg("0")
            .arg("MKSTREAM")
            .query(&mut redis.con())
            .expect("XGROUP");
        for i in 0..2 {
            append(&redis, &stream, &format!("lag-{partition}-{i}"));
        }
    }
    let mut vars = with_partitions(default_vars(&redis.url()), 4);
    vars.insert("MAX_BACKLOG".into(), "7".into());
    let ingress = start_with(vars, |c| c.backlog_refresh = std::time::Duration::from_millis(20)).await;
    let body = fixture("meeting-baas/v2/bot_status_change.json");
    let refused = eventually("8 > 7: backlog_full", || async {
        let r = post_signed(&ingress, "svix", SECRET, "msg_full", now(), &body).await;
        (r.status() == 503).then_some(r)
    })
    .await;
    // (No partition alone holds more than 3: the one webhook posted here, retried as a duplicate,
    // adds at most one. Only the sum is over the limit.)
    let answer = assert_error(refused, 503, "backlog_full").await;
    assert!(answer["message"].as_str().is_some_and(|m| m.contains("MAX_BACKLOG=7")), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_partition_has_its_own_lag_pending_and_parked_gauges() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    api.always("POST", "/downstream", Reply::status(200));
    let processor = start_processor_with(HashMap::new(), |c| *c = processor_config(&redis, &api, 4)).await;
    // Parked entries in partition 2 only (not due for an hour), as a processor leaves them.
    for n in 0..3 {
        let member = format!("{{\"id\":\"{n}-0\"}}");
        let () =
            redis::cmd("ZADD").arg("{hookstream:2}:retry").arg(i64::MAX).arg(member).query(&mut redis.con()).unwrap();
    }
    let text = scrape(&format!("http://{}/metrics", processor.metrics)).await;
    for p in 0..4 {
        let labels = format!("{{partition=\"{p}\"}}");
        assert!(text.contains(&format!("hookstream_partition_lag{labels}")), "partition {p}: {text}");
        assert!(text.contains(&format!("hookstream_partition_pending{labels}")), "partition {p}");
        let parked = if p == 2 { 3.0 } else { 0.0 };
        assert_eq!(metric(&text, "hookstream_partition_parked", &labels), parked, "partition {p}");
    }
    assert_eq!(metric(&text, "hookstream_retry_parked", ""), 3.0);
    processor.stop().await;
}
