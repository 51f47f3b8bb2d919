//! No processor running is visible (SPEC §6): the ingress exports `hookstream_group_lag`, the
//! consumer groups' lag summed over partitions, which it reads anyway for `MAX_BACKLOG` — the
//! lag and pending gauges of the processors are gone when every processor is. (Its own test
//! binary: the metrics recorder is process-wide.)

mod common;

use common::*;
use hookstream_tests::{eventually, RedisServer};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_reports_the_lag_nothing_consumes() {
    let redis = RedisServer::start();
    let mut vars = default_vars(&redis.url());
    vars.insert("PARTITIONS".into(), "2".into());
    let ingress = start_with(vars, |c| c.backlog_refresh = Duration::from_millis(20)).await;
    // A group exists (processors ran once), none runs now; five webhooks arrive.
    for partition in 0..2 {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(format!("{{hookstream:{partition}}}:events"))
            .arg("processors")
            .arg("0")
            .arg("MKSTREAM")
            .query(&mut redis.con())
            .unwrap();
    }
    for i in 0..5 {
        let body = format!(r#"{{"event":"bot.status_change","data":{{"n":{i}}}}}"#);
        let r = post_signed(&ingress, "svix", SECRET, &format!("msg_lag_{i}"), now(), body.as_bytes()).await;
        assert_eq!(r.status(), 200);
    }
    let url = ingress.url("/metrics");
    eventually("the ingress's metrics show the lag over both partitions", || async {
        let text = scrape(&url).await;
        (metric(&text, "hookstream_group_lag", "") == 5.0).then_some(())
    })
    .await;
    ingress.stop().await;
}
