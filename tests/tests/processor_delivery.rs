//! One delivery, one verdict: redirects, lost leases, dead at most once, exact delivery counts,
//! a silent Redis, shutdown inside its grace period.

mod common;

use common::*;
use hookstream_tests::fake_api::{FakeApi, Gate, Reply};
use hookstream_tests::proxy::Proxy;
use hookstream_tests::{eventually, RedisServer};
use processor::replies::StreamEntry;
use processor::stream::Stream;
use std::collections::HashMap;
use std::time::Duration;

fn forward_vars(redis_url: &str, target: &FakeApi) -> HashMap<String, String> {
    let mut vars = processor_vars(redis_url, "http://127.0.0.1:9");
    vars.insert("FORWARD_URL".into(), format!("{}/hook", target.url()));
    vars
}

/// `(consumer, delivery count)` of a pending entry.
fn owner(redis: &RedisServer, id: &str) -> Option<(String, i64)> {
    let reply: redis::Value =
        redis::cmd("XPENDING").arg(EVENTS).arg(GROUP).arg(id).arg(id).arg(1).query(&mut redis.con()).unwrap();
    let redis::Value::Array(rows) = reply else { return None };
    let redis::Value::Array(row) = rows.into_iter().next()? else { return None };
    match (row.get(1), row.get(3)) {
        (Some(redis::Value::BulkString(name)), Some(redis::Value::Int(n))) => {
            Some((String::from_utf8_lossy(name).into_owned(), *n))
        }
        _ => None,
    }
}

#[tokio::test]
async fn a_redirect_from_the_forward_target_is_a_permanent_error_naming_the_location() {
    let redis = RedisServer::start();
    let elsewhere = FakeApi::start().await;
    elsewhere.always("GET", "/hook", Reply::status(200));
    elsewhere.always("POST", "/hook", Reply::status(200));
    let target = FakeApi::start().await;
    let location = format!("{}/hook", elsewhere.url());
    target.always("POST", "/hook", Reply::status(302).header("location", &location));
    let processor = start_processor(forward_vars(&redis.url(), &target)).await;
    add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, "redirected");
    let dead = dead_after(&redis, 1).await;
    processor.stop().await;
    let error = &dead[0].1["error"];
    assert!(error.contains("302") && error.contains(&location), "{error}");
    assert_eq!(target.calls().len(), 1, "a permanent error is not retried");
    assert!(elsewhere.calls().is_empty(), "the redirect was not followed: {:?}", elsewhere.log());
}

#[tokio::test]
async fn a_redirect_from_the_api_is_permanent_and_the_api_key_goes_nowhere_else() {
    let redis = RedisServer::start();
    let elsewhere = FakeApi::start().await;
    let api = FakeApi::start().await;
    let location = format!("{}/calendar_events/x", elsewhere.url());
    api.route("GET", "/calendar_events/e-1", {
        let location = location.clone();
        move |_, _| Reply::status(307).header("location", &location)
    });
    let processor = start_processor(processor_vars(&redis.url(), &api.url())).await;
    let body = br#"{"event":"calendar.sync_events","data":{"calendar_id":"c","last_updated_ts":"t","affected_event_uuids":["e-1"]}}"#;
    add_event(&redis, "calendar.sync_events", body, "sync");
    let dead = dead_after(&redis, 1).await;
    processor.stop().await;
    let error = &dead[0].1["error"];
    assert!(error.contains("307") && error.contains(&location), "{error}");
    assert!(elsewhere.calls().is_empty(), "nothing (and no API key) was sent to the redirect's host");
}

#[tokio::test]
async fn an_owner_that_lost_its_lease_does_not_dead_letter_the_new_owners_entry() {
    let redis = RedisServer::start();
    let gate = Gate::new();
    let target = FakeApi::start().await;
    target.always("POST", "/hook", Reply::json(422, br#"{"error":"no"}"#.to_vec()).held(&gate));
    // The first owner renews its lease only every 20 s; the second reclaims after 400 ms idle.
    let mut vars = forward_vars(&redis.url(), &target);
    vars.insert("CONSUMER_NAME".into(), "slow-owner".into());
    let first = start_processor(vars.clone()).await;
    let id = add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, "contested");
    eventually("the first owner's handler runs", || async { (target.calls().len() == 1).then_some(()) }).await;
    vars.insert("CONSUMER_NAME".into(), "new-owner".into());
    vars.insert("CLAIM_IDLE_MS".into(), "400".into());
    let second = start_processor(vars).await;
    eventually("the new owner reclaimed it and runs its handler", || async {
        (target.calls().len() == 2).then_some(())
    })
    .await;
    assert_eq!(owner(&redis, &id).map(|(c, _)| c).as_deref(), Some("new-owner"));
    // Both handlers fail permanently now. Only the owner's verdict counts.
    gate.open();
    dead_after(&redis, 1).await;
    first.stop().await;
    second.stop().await;
    let dead = dead_entries(&redis);
    assert_eq!(dead.len(), 1, "dead at most once: {dead:?}");
    assert_eq!(dead[0].1["consumer"], "new-owner");
    assert_eq!(group_state(&redis), Some((0, 0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_that_lost_its_lease_does_not_ack_the_new_owners_entry() {
    // The first owner's handler succeeds only after another replica reclaimed the entry; the new
    // owner's handler then fails for good. The first owner's ack must not take the entry from
    // under the new owner: the new owner's verdict (the dead letter) is the one that counts.
    let redis = RedisServer::start();
    let (first_gate, second_gate) = (Gate::new(), Gate::new());
    let target = FakeApi::start().await;
    let (first_reply, second_reply) =
        (Reply::status(200).held(&first_gate), Reply::json(422, br#"{"error":"no"}"#.to_vec()).held(&second_gate));
    target.route("POST", "/hook", move |_, n| if n == 0 { first_reply.clone() } else { second_reply.clone() });
    let mut vars = forward_vars(&redis.url(), &target);
    vars.insert("CONSUMER_NAME".into(), "slow-owner".into());
    let first = start_processor(vars.clone()).await;
    let id = add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, "contested-ack");
    eventually("the first owner's handler runs", || async { (target.calls().len() == 1).then_some(()) }).await;
    vars.insert("CONSUMER_NAME".into(), "new-owner".into());
    vars.insert("CLAIM_IDLE_MS".into(), "400".into());
    let second = start_processor(vars).await;
    eventually("the new owner reclaimed it", || async { (target.calls().len() == 2).then_some(()) }).await;
    let lost = |text: &str| metric(text, "hookstream_processor_leases_lost_total", "");
    let first_metrics = format!("http://{}/metrics", first.metrics);
    let lost_before = lost(&scrape(&first_metrics).await);
    first_gate.open();
    eventually("the first owner's ack is refused", || async {
        (lost(&scrape(&first_metrics).await) > lost_before).then_some(())
    })
    .await;
    assert_eq!(owner(&redis, &id).map(|(c, _)| c).as_deref(), Some("new-owner"), "still the new owner's");
    second_gate.open();
    let dead = dead_after(&redis, 1).await;
    first.stop().await;
    second.stop().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1["consumer"], "new-owner");
    assert_eq!(group_state(&redis), Some((0, 0)));
}

#[tokio::test]
async fn a_lease_found_lost_stops_the_handler_without_a_verdict() {
    let redis = RedisServer::start();
    let gate = Gate::new();
    let target = FakeApi::start().await;
    // The first attempt fails (transiently) once the gate opens; had the handler not been
    // stopped, it would retry and succeed.
    target.sequence("POST", "/hook", vec![Reply::status(503).held(&gate), Reply::status(200)]);
    let mut vars = forward_vars(&redis.url(), &target);
    vars.insert("CLAIM_IDLE_MS".into(), "400".into()); // lease renewed every 133 ms
    let processor = start_processor(vars).await;
    let id = add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, "taken");
    eventually("the handler runs", || async { (target.calls().len() == 1).then_some(()) }).await;
    // Another consumer takes the entry over (as its reclaimer would).
    let _: redis::Value =
        redis::cmd("XCLAIM").arg(EVENTS).arg(GROUP).arg("thief").arg(0).arg(&id).query(&mut redis.con()).unwrap();
    // The lease keeper finds it lost and the handler is stopped: its request is dropped.
    eventually("the handler's request was dropped", || async { (target.in_flight() == 0).then_some(()) }).await;
    gate.open();
    processor.stop().await;
    assert_eq!(target.calls().len(), 1, "no retry after the lease was lost");
    assert_eq!(owner(&redis, &id).map(|(c, _)| c).as_deref(), Some("thief"), "not acked: the new owner decides");
    assert_eq!(xlen_dead(&redis), 0);
}

#[tokio::test]
async fn dead_letters_are_written_once_and_only_by_the_owner() {
    let redis = RedisServer::start();
    create_group(&redis);
    let id = add_event(&redis, "bot.completed", b"{}", "d");
    assert_eq!(ghost_read(&redis, "me", 1), 1);
    let stream = Stream::new(shared::keys::Keys::new(NS), GROUP.into(), "me".into(), conn(&redis));
    let other = Stream::new(shared::keys::Keys::new(NS), GROUP.into(), "other".into(), conn(&redis));
    let entry = StreamEntry { id: id.clone(), fields: Some(vec![("event".into(), b"bot.completed".to_vec())]) };
    assert_eq!(other.dead_letter(&entry, "not mine", 1, 1).await.unwrap(), None, "only the owner");
    assert_eq!(xlen_dead(&redis), 0);
    assert!(stream.dead_letter(&entry, "boom", 1, 1).await.unwrap().is_some());
    // Sent again (as after a timeout whose first send had applied): no second copy.
    assert_eq!(stream.dead_letter(&entry, "boom", 1, 1).await.unwrap(), None);
    assert_eq!(xlen_dead(&redis), 1);
    assert_eq!(group_state(&redis), Some((0, 0)));
    // Acks likewise act only on what the consumer owns.
    let id2 = add_event(&redis, "bot.completed", b"{}", "d2");
    assert_eq!(ghost_read(&redis, "me", 1), 1);
    assert_eq!(other.ack_owned(&[&id2]).await.unwrap(), vec![id2.clone()], "not other's to ack");
    assert_eq!(group_state(&redis), Some((1, 0)));
    assert!(stream.ack_owned(&[&id2]).await.unwrap().is_empty());
    assert_eq!(group_state(&redis), Some((0, 0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poison_cap_reads_each_entrys_own_delivery_count() {
    let redis = RedisServer::start();
    let gate = Gate::new();
    let target = FakeApi::start().await;
    target.always("POST", "/hook", Reply::status(200).held(&gate));
    create_group(&redis);
    let ids: Vec<String> = (0..12)
        .map(|i| add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, &format!("p{i}")))
        .collect();
    // A crashed consumer took everything.
    assert_eq!(ghost_read(&redis, "crashed", 12), 12);
    // The processor's own pending entries lie *between* the two poison ones.
    let claim = |to: &str, id: &str| {
        let _: redis::Value =
            redis::cmd("XCLAIM").arg(EVENTS).arg(GROUP).arg(to).arg(0).arg(id).query(&mut redis.con()).unwrap();
    };
    for id in &ids[1..11] {
        claim("replica-a", id);
    }
    // The first and the last were delivered 4 times each (MAX_DELIVERIES=3).
    for _ in 0..3 {
        claim("crashed", &ids[0]);
        claim("crashed", &ids[11]);
    }
    let mut vars = forward_vars(&redis.url(), &target);
    vars.insert("CONSUMER_NAME".into(), "replica-a".into());
    vars.insert("MAX_DELIVERIES".into(), "3".into());
    vars.insert("CLAIM_IDLE_MS".into(), "600".into());
    let processor = start_processor(vars).await;
    // Its own ten are being handled (held at the gate) when the reclaimer takes the two.
    let dead = dead_after(&redis, 2).await;
    gate.open();
    all_acked(&redis).await;
    processor.stop().await;
    let mut poisoned: Vec<&str> = dead.iter().map(|(_, f)| f["original_id"].as_str()).collect();
    poisoned.sort();
    assert_eq!(poisoned, vec![ids[0].as_str(), ids[11].as_str()]);
    assert!(dead.iter().all(|(_, f)| f["error"].contains("MAX_DELIVERIES=3") && f["attempts"] == "0"), "{dead:?}");
    let forwarded: Vec<String> =
        target.calls().iter().map(|c| c.header("x-hookstream-id").unwrap().to_string()).collect();
    assert!(!forwarded.contains(&"p0".to_string()) && !forwarded.contains(&"p11".to_string()), "{forwarded:?}");
    assert_eq!(forwarded.len(), 10);
}

#[tokio::test]
async fn a_silent_redis_is_given_up_and_processing_resumes_on_a_new_connection() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(format!("127.0.0.1:{}", redis.port()).parse().unwrap()).await;
    let target = FakeApi::start().await;
    target.always("POST", "/hook", Reply::status(200));
    let mut vars = forward_vars(&proxy.redis_url(), &target);
    // An entry Redis delivered into the silence (its answer never arrived) is pending for this
    // consumer: it is reclaimed once idle this long.
    vars.insert("CLAIM_IDLE_MS".into(), "1000".into());
    let processor = start_processor_with(vars, |c| c.timing.command_timeout = Duration::from_millis(500)).await;
    add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, "before");
    all_acked(&redis).await;
    let before = proxy.connections();
    // Redis falls silent on every connection the processor has: no reset, no answer.
    proxy.freeze();
    add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, "after");
    all_acked(&redis).await;
    assert!(proxy.connections() > before, "the processor opened new connections");
    processor.stop().await;
    let ids: Vec<String> = target.calls().iter().map(|c| c.header("x-hookstream-id").unwrap().to_string()).collect();
    assert_eq!(ids, vec!["before", "after"]);
}

#[tokio::test]
async fn shutdown_stays_inside_its_grace_period_when_redis_is_silent() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(format!("127.0.0.1:{}", redis.port()).parse().unwrap()).await;
    let target = FakeApi::start().await;
    target.always("POST", "/hook", Reply::status(200));
    let mut vars = forward_vars(&proxy.redis_url(), &target);
    vars.insert("SHUTDOWN_GRACE_MS".into(), "300".into());
    vars.insert("CLAIM_IDLE_MS".into(), "400".into()); // the reclaimer calls Redis every 200 ms
                                                       // Commands on a silent connection wait a minute before they are given up.
    let processor = start_processor_with(vars, |c| c.timing.command_timeout = Duration::from_secs(60)).await;
    add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, "x");
    all_acked(&redis).await;
    proxy.freeze();
    // Let the reclaimer and the reader get stuck on the silent connections.
    eventually("a command is waiting on the silent Redis", || async {
        let readyz = reqwest::get(format!("http://{}/readyz", processor.metrics));
        tokio::time::timeout(Duration::from_millis(200), readyz).await.is_err().then_some(())
    })
    .await;
    // Every part stops inside the grace period (300 ms), not after the command timeout (60 s).
    let stopped = tokio::time::timeout(Duration::from_secs(20), processor.stop()).await;
    assert!(stopped.is_ok(), "shutdown waited on a silent Redis past SHUTDOWN_GRACE_MS");
}

#[tokio::test]
async fn the_ack_script_acks_only_its_own_entries_across_pages_of_its_pending_list() {
    let redis = RedisServer::start();
    create_group(&redis);
    let ids: Vec<String> = (0..2500).map(|i| add_event(&redis, "bot.completed", b"{}", &format!("a{i}"))).collect();
    assert_eq!(ghost_read(&redis, "me", 2500), 2500);
    // One of them was reclaimed by another consumer.
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(EVENTS)
        .arg(GROUP)
        .arg("other")
        .arg(0)
        .arg(&ids[1700])
        .query(&mut redis.con())
        .unwrap();
    let stream = Stream::new(shared::keys::Keys::new(NS), GROUP.into(), "me".into(), conn(&redis));
    let batch = [ids[2499].as_str(), ids[0].as_str(), ids[1700].as_str(), ids[1999].as_str()];
    let lost = stream.ack_owned(&batch).await.unwrap();
    assert_eq!(lost, vec![ids[1700].clone()], "only the one another consumer owns is refused");
    for acked in [0, 1999, 2499] {
        assert_eq!(owner(&redis, &ids[acked]), None, "{acked} acked");
    }
    assert_eq!(owner(&redis, &ids[1700]).map(|(c, _)| c).as_deref(), Some("other"));
    assert_eq!(owner(&redis, &ids[1000]).map(|(c, _)| c).as_deref(), Some("me"), "the rest still pending");
    assert_eq!(group_state(&redis).map(|(pending, _)| pending), Some(2497));
}

/// SPEC §7: the credentials and the query of `FORWARD_URL` are in no output — not a dead
/// entry's `error`, not a parked record, not the configuration's `Debug`.
#[tokio::test]
async fn forward_url_credentials_and_query_are_never_shown() {
    let redis = RedisServer::start();
    let target = FakeApi::start().await;
    target.always("POST", "/hook", Reply::status(400));
    target.always("POST", "/busy", Reply::status(503));
    let secret_url = |path: &str| target.url().replace("http://", "http://user:pw-s3cret@") + path + "?token=t0k3n";
    let mut vars = forward_vars(&redis.url(), &target);
    vars.insert("FORWARD_URL".into(), secret_url("/hook"));
    vars.insert("MEETING_BAAS_API_KEY".into(), "api-k3y".into());
    let config = processor::ProcessorConfig::read(&shared::config::Reader::new(&vars)).expect("config");
    let debug = format!("{config:?}");
    for secret in ["pw-s3cret", "t0k3n", "api-k3y"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    let processor = start_processor(vars.clone()).await;
    add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, "refused");
    let dead = dead_after(&redis, 1).await;
    processor.stop().await;
    let error = &dead[0].1["error"];
    assert!(error.contains("400") && error.contains("/hook"), "{error}");
    assert!(!error.contains("pw-s3cret") && !error.contains("t0k3n"), "{error}");

    // Transient, parked: the record keeps no secret either (and a connection that fails).
    for path in ["/busy", ":1/closed"] {
        let url = if path.starts_with(':') {
            "http://user:pw-s3cret@127.0.0.1:1/closed?token=t0k3n".to_string()
        } else {
            secret_url(path)
        };
        vars.insert("FORWARD_URL".into(), url);
        vars.insert("RETRY_MAX_ELAPSED_MS".into(), "0".into());
        vars.insert("RETRY_PARK_INITIAL_MS".into(), "600000".into());
        let processor = start_processor(vars.clone()).await;
        add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, path);
        let member = eventually("parked", || async {
            let members: Vec<String> =
                redis::cmd("ZRANGE").arg("{hookstream}:retry").arg(0).arg(-1).query(&mut redis.con()).unwrap();
            members.into_iter().next()
        })
        .await;
        processor.stop().await;
        let _: () = redis::cmd("DEL").arg("{hookstream}:retry").query(&mut redis.con()).unwrap();
        assert!(member.contains("POST http://***@"), "{member}");
        assert!(!member.contains("pw-s3cret") && !member.contains("t0k3n"), "{member}");
    }
}
