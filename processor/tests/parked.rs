//! Parked entries live in Redis, not in a process (SPEC §4.3): one survives its processor's
//! SIGKILL and a Redis restart (AOF), and replicas racing to re-append due entries append each
//! exactly once. Breakers are shared by every replica.
#![allow(clippy::unwrap_used)] // test helpers may unwrap: a panic is how a test fails

use hookstream_tests::fake_api::{FakeApi, Reply};
use hookstream_tests::{eventually, fixture, spawn_bin, RedisServer};
use processor::downstream::breaker::{Breaker, Downstream, Pass, Settings};
use processor::handlers::HandlerError;
use processor::outcome::parking::Record;
use processor::replies::StreamEntry;
use processor::stream::Stream;
use shared::conn::Conn;
use shared::keys::Keys;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_processor");
const EVENTS: &str = "{hookstream}:events";
const RETRY: &str = "{hookstream}:retry";

fn conn(redis: &RedisServer) -> Conn {
    Conn::new(shared::conn::client(&redis.url()).unwrap(), Duration::from_secs(5)).unwrap()
}

fn zcard(redis: &RedisServer) -> u64 {
    redis::cmd("ZCARD").arg(RETRY).query(&mut redis.con()).unwrap()
}

fn pending(redis: &RedisServer) -> Option<u64> {
    let info: redis::streams::StreamInfoGroupsReply =
        redis::cmd("XINFO").arg("GROUPS").arg(EVENTS).query(&mut redis.con()).ok()?;
    info.groups.into_iter().next().map(|g| g.pending as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_entry_survives_a_processor_sigkill_and_a_redis_restart() {
    let mut redis = RedisServer::start_persistent();
    let target = FakeApi::start().await;
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    target.route("POST", "/hook", move |_, _| Reply::status(if h.load(Ordering::SeqCst) { 200 } else { 503 }));
    let url = redis.url();
    let forward = format!("{}/hook", target.url());
    let vars = |name: &str| {
        let extra = [
            ("FORWARD_URL", forward.as_str()),
            ("RETRY_INITIAL_MS", "10"),
            ("RETRY_MAX_INTERVAL_MS", "20"),
            ("RETRY_MAX_ELAPSED_MS", "100"),
            ("RETRY_PARK_INITIAL_MS", "1500"),
            ("RETRY_PARK_MAX_MS", "1500"),
            ("BREAKER_FAILURES", "0"),
        ];
        hookstream_tests::processor_bin_vars(&url, "http://127.0.0.1:9", name, &extra)
    };
    let owned = vars("first");
    let refs = hookstream_tests::var_refs(&owned);
    let mut first = spawn_bin(BIN, &refs);
    let id = hookstream_tests::add_entry(
        &redis,
        "bot.completed",
        "survivor",
        &fixture("meeting-baas/v2/bot_completed.json"),
    );
    eventually("parked", || async { (zcard(&redis) == 1).then_some(()) }).await;
    first.kill();
    // Acked when parked: nothing pending for a reclaim to find; the set alone holds it.
    assert_eq!(pending(&redis), Some(0));
    redis.restart();
    assert_eq!(zcard(&redis), 1, "the parked entry survived the restart");
    let member: Vec<String> = redis::cmd("ZRANGE").arg(RETRY).arg(0).arg(-1).query(&mut redis.con()).unwrap();
    let record = Record::from_member(&member[0]).expect("a readable record");
    assert_eq!((record.id.as_str(), record.event.as_str()), (id.as_str(), "bot.completed"));
    assert!(record.attempts.parse::<u32>().unwrap() >= 2, "{record:?}");

    healthy.store(true, Ordering::SeqCst);
    let owned = vars("second");
    let refs = hookstream_tests::var_refs(&owned);
    let _second = spawn_bin(BIN, &refs);
    eventually("forwarded after the restart", || async {
        let ok = target.calls_to("POST", "/hook").len();
        (zcard(&redis) == 0 && pending(&redis) == Some(0) && ok > 0 && healthy.load(Ordering::SeqCst)).then_some(())
    })
    .await;
    let dead: u64 = redis::cmd("XLEN").arg("{hookstream}:dead").query(&mut redis.con()).unwrap();
    assert_eq!(dead, 0);
    // The re-appended entry carries its history.
    let reply: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(EVENTS).arg("-").arg("+").query(&mut redis.con()).unwrap();
    let again = reply.ids.iter().find(|e| e.map.contains_key("first_attempt_at")).expect("a re-appended entry");
    let attempts: String = redis::from_redis_value(again.map["attempts"].clone()).unwrap();
    assert_eq!(attempts, record.attempts);
    let dedup: String = redis::from_redis_value(again.map["dedup_id"].clone()).unwrap();
    assert_eq!(dedup, "survivor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_racing_to_reappend_due_entries_append_each_exactly_once() {
    let redis = RedisServer::start();
    let keys = Keys::new("hookstream");
    // 300 due records, and one not a record at all.
    let first = chrono::Utc::now();
    for i in 0..300 {
        let entry = StreamEntry {
            id: format!("{i}-0"),
            fields: Some(vec![
                ("event".into(), b"bot.completed".to_vec()),
                ("dedup_id".into(), format!("race-{i}").into_bytes()),
                ("payload".into(), br#"{"event":"bot.completed","data":{"note":"\u00e9\n"}}"#.to_vec()),
            ]),
        };
        let member = Record::new(&entry, "bot.completed", 3, first, 1, "503").to_member();
        let _: () = redis::cmd("ZADD").arg(RETRY).arg(1).arg(member).query(&mut redis.con()).unwrap();
    }
    let _: () = redis::cmd("ZADD").arg(RETRY).arg(1).arg("garbage").query(&mut redis.con()).unwrap();
    // Eight "replicas", each on its own connection, racing.
    let mut racers = Vec::new();
    for n in 0..8 {
        let stream = Stream::new(keys.clone(), "processors".into(), format!("racer-{n}"), conn(&redis));
        racers.push(tokio::spawn(async move {
            let (mut appended, mut unreadable) = (0, 0);
            loop {
                let (a, u) = stream.reappend_due(7).await.unwrap();
                appended += a;
                unreadable += u;
                if a + u == 0 {
                    return (appended, unreadable);
                }
            }
        }));
    }
    let (mut appended, mut unreadable) = (0, 0);
    for racer in racers {
        let (a, u) = racer.await.unwrap();
        appended += a;
        unreadable += u;
    }
    assert_eq!((appended, unreadable), (300, 1));
    assert_eq!(zcard(&redis), 0);
    let reply: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(EVENTS).arg("-").arg("+").query(&mut redis.con()).unwrap();
    let mut ids: Vec<String> =
        reply.ids.iter().map(|e| redis::from_redis_value::<String>(e.map["dedup_id"].clone()).unwrap()).collect();
    assert_eq!(ids.len(), 300);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 300, "no entry appended twice");
    let payload: Vec<u8> = redis::from_redis_value(reply.ids[0].map["payload"].clone()).unwrap();
    assert_eq!(payload, br#"{"event":"bot.completed","data":{"note":"\u00e9\n"}}"#.to_vec(), "byte for byte");
    let dead: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg("{hookstream}:dead").arg("-").arg("+").query(&mut redis.con()).unwrap();
    assert_eq!(dead.ids.len(), 1);
    let record: String = redis::from_redis_value(dead.ids[0].map["record"].clone()).unwrap();
    assert_eq!(record, "garbage", "an unreadable member is kept, in the dead stream");
}

fn settings() -> Settings {
    Settings { failures: 3, cooldown: Duration::from_millis(300), probe_timeout: Duration::from_secs(5) }
}

fn transient() -> Result<(), HandlerError> {
    Err(HandlerError::transient("503"))
}

#[tokio::test]
async fn a_breaker_is_shared_by_replicas_and_lets_one_probe_through() {
    let redis = RedisServer::start();
    let key = Keys::new("hookstream").breaker("forward");
    // Two replicas' breakers on one key.
    let a = Breaker::new(Downstream::Forward, key.clone(), conn(&redis), settings(), Vec::new());
    let b = Breaker::new(Downstream::Forward, key.clone(), conn(&redis), settings(), Vec::new());
    for breaker in [&a, &b, &a] {
        let pass = breaker.admit().await.unwrap();
        breaker.record(pass, &transient()).await;
    }
    // Opened by three failures in a row over both replicas: neither calls now.
    for breaker in [&a, &b] {
        match breaker.admit().await {
            Err(processor::downstream::breaker::Refused { wait, .. }) => assert!(wait <= Duration::from_millis(300)),
            other => panic!("{other:?}"),
        }
    }
    let state = processor::downstream::breaker::state(&mut conn(&redis), &key).await.unwrap();
    assert!(state.is_open(), "{state}");
    // After the cooldown, one probe: the other replica is refused meanwhile.
    let probe = eventually("the cooldown ends", || async { a.admit().await.ok() }).await;
    assert_eq!(probe, Pass::Probe);
    assert!(b.admit().await.is_err(), "one probe at a time");
    // A failed probe opens it again; a successful one closes it for everyone.
    a.record(probe, &transient()).await;
    assert!(a.admit().await.is_err());
    let probe = eventually("the second cooldown ends", || async { b.admit().await.ok() }).await;
    assert_eq!(probe, Pass::Probe);
    b.record(probe, &Ok::<(), HandlerError>(())).await;
    let state = processor::downstream::breaker::state(&mut conn(&redis), &key).await.unwrap();
    assert!(!state.is_open(), "{state}");
    // `a` remembered "open" until its own deadline; then it asks again and finds it closed.
    let pass = eventually("a sees it closed", || async { a.admit().await.ok() }).await;
    assert_eq!(pass, Pass::Closed);
    // A success between failures resets the count: "in a row".
    for result in [transient(), transient(), Ok(()), transient(), transient()] {
        let pass = a.admit().await.unwrap();
        a.record(pass, &result).await;
    }
    assert!(a.admit().await.is_ok(), "never three failures in a row");
    // BREAKER_FAILURES=0: no breaker.
    let off = Breaker::new(Downstream::Forward, key, conn(&redis), Settings { failures: 0, ..settings() }, Vec::new());
    assert_eq!(off.admit().await.unwrap(), Pass::Free);
}
