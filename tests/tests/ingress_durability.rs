//! `MIN_REPLICAS_ACK`: the ingress answers 200 only once enough Redis replicas have the event.

mod common;

use common::*;
use hookstream_tests::{eventually, RedisServer};

fn xlen_on(server: &RedisServer) -> u64 {
    redis::cmd("XLEN").arg(EVENTS).query(&mut server.con()).expect("XLEN")
}

#[tokio::test]
async fn an_event_is_accepted_only_once_a_replica_has_it() {
    let primary = RedisServer::start();
    let mut replica = RedisServer::start_replica_of(&primary);
    let mut vars = default_vars(&primary.url());
    vars.insert("MIN_REPLICAS_ACK".into(), "1".into());
    let ingress = start_with(vars, |_| {}).await;

    let first = br#"{"event":"bot.completed","data":{"bot_id":"replicated"}}"#;
    let (status, body) = answer(post_v1(&ingress, first).await).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("accepted")), "{body}");
    // WAIT counted the replica: it has the entry already, no polling needed.
    assert_eq!(xlen_on(&replica), 1);

    // After a script-cache flush (as after a Redis restart) the pipeline loads the script again.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut primary.con()).unwrap();

    // The replica dies: stored on the primary, but not answered 200.
    replica.kill();
    let second = br#"{"event":"bot.completed","data":{"bot_id":"not-yet-replicated"}}"#;
    let refused = post_v1(&ingress, second).await;
    let body = assert_error(refused, 503, "unavailable").await;
    assert!(body["message"].as_str().unwrap().contains("MIN_REPLICAS_ACK=1"), "{body}");
    assert_eq!(xlen_on(&primary), 2, "on the primary, waiting for a replica");

    // The replica comes back and resyncs: the sender's retry is answered, as the duplicate of
    // the copy that is now replicated.
    replica.restart();
    replica.wait_linked(&primary);
    let again = eventually("the retry is answered once replicated", || async {
        let (status, body) = answer(post_v1(&ingress, second).await).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(again["status"], "duplicate", "{again}");
    assert_eq!(xlen_on(&replica), 2);
    assert_eq!(xlen_on(&primary), 2, "nothing appended twice");
}

#[tokio::test]
async fn without_min_replicas_ack_nothing_waits_for_replicas() {
    let primary = RedisServer::start();
    let ingress = start_ingress(&primary.url()).await; // MIN_REPLICAS_ACK defaults to 0
    let (status, body) = answer(post_v1(&ingress, br#"{"event":"bot.completed"}"#).await).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("accepted")), "{body}");
}
