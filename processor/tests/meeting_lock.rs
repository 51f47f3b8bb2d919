//! A meeting lock's holder killed with SIGKILL frees the meeting within the lock's TTL
//! (`CLAIM_IDLE_MS`): real processes, so the holder can die for real.
#![allow(clippy::unwrap_used)] // test helpers may unwrap: a panic is how a test fails

use hookstream_tests::fake_api::{FakeApi, Gate, Reply};
use hookstream_tests::{eventually, fixture, fixture_json, RedisServer};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const BIN: &str = env!("CARGO_BIN_EXE_processor");
const EVENTS: &str = "{hookstream}:events";
const CAL: &str = "647da78e-783d-4a7a-be5c-117ad3b10d5c";
const EVENT: &str = "ad307589-17b9-4f8a-9489-6b4c48f0c40d";

fn add_created(redis: &RedisServer, dedup_id: &str) {
    let mut body = fixture_json("meeting-baas/v2/calendar_event_created.json");
    body["data"]["instances"].as_array_mut().unwrap().truncate(1);
    hookstream_tests::add_entry(redis, "calendar.event_created", dedup_id, &serde_json::to_vec(&body).unwrap());
}

fn all_acked(redis: &RedisServer) -> Option<()> {
    let info: redis::streams::StreamInfoGroupsReply =
        redis::cmd("XINFO").arg("GROUPS").arg(EVENTS).query(&mut redis.con()).ok()?;
    let g = info.groups.into_iter().next()?;
    (g.pending == 0 && g.lag == Some(0)).then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_holder_killed_with_sigkill_frees_its_meeting_within_the_locks_ttl() {
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let gate = Gate::new();
    let bot = Arc::new(AtomicBool::new(false));
    let get = format!("/v2/calendars/{CAL}/events/{EVENT}");
    let b = bot.clone();
    let held = Reply::status(200).held(&gate).gate;
    api.route("GET", &get, move |_, n| {
        let mut d = fixture_json("meeting-baas/api/v2_event_details.json");
        d["data"]["bot_scheduled"] = json!(b.load(Ordering::SeqCst));
        let mut reply = Reply::json(200, serde_json::to_vec(&d).unwrap());
        if n == 0 {
            reply.gate = held.clone(); // the holder's read never comes back
        }
        reply
    });
    let b = bot.clone();
    api.route("POST", &format!("/v2/calendars/{CAL}/bots"), move |_, _| {
        b.store(true, Ordering::SeqCst);
        Reply::json(201, fixture("meeting-baas/api/v2_create_bots_response.json"))
    });
    let (url, api_url) = (redis.url(), api.url());
    // CLAIM_IDLE_MS: the lock's TTL.
    let vars = |name: &str| hookstream_tests::processor_bin_vars(&url, &api_url, name, &[("CLAIM_IDLE_MS", "1000")]);
    let holder_vars = vars("doomed-holder");
    let refs = hookstream_tests::var_refs(&holder_vars);
    let mut holder = hookstream_tests::spawn_bin(BIN, &refs);
    add_created(&redis, "created");
    eventually("the holder reads the meeting", || async { (api.calls_to("GET", &get).len() == 1).then_some(()) }).await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("{hookstream}:lock:*").query(&mut redis.con()).unwrap();
    assert_eq!(keys.len(), 1, "the holder holds the meeting's lock");
    holder.kill();
    // A dead holder's lock expires within its TTL (CLAIM_IDLE_MS), never later.
    let ttl: i64 = redis::cmd("PTTL").arg(&keys[0]).query(&mut redis.con()).unwrap();
    assert!((-2..=1000).contains(&ttl), "PTTL {ttl} ms");

    // Another replica takes the dead holder's entry over, and a second entry about the same
    // meeting is handled too: the meeting is not blocked.
    let survivor_vars = vars("survivor");
    let refs = hookstream_tests::var_refs(&survivor_vars);
    let mut survivor = hookstream_tests::spawn_bin(BIN, &refs);
    add_created(&redis, "created-again");
    eventually("both entries are done", || async { all_acked(&redis) }).await;
    survivor.kill();
    gate.open();
    assert!(bot.load(Ordering::SeqCst), "the meeting got its bot");
    assert_eq!(api.calls_to("POST", &format!("/v2/calendars/{CAL}/bots")).len(), 1, "one bot: {:?}", api.log());
}
