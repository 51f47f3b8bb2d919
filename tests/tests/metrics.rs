//! Metrics, checked by value: each test reads the counters before and after and asserts the
//! change per label. The Prometheus recorder is global to a process, so these tests live in a
//! binary of their own, where nothing else moves the same series (the ingress and processor
//! tests here touch disjoint metric names).

mod common;

use common::*;
use hookstream_tests::fake_api::{FakeApi, Reply};
use hookstream_tests::{fixture, RedisServer};

/// Held for the whole of each test here: the Prometheus recorder is global to the process, and
/// the alert-rules test moves the same counters (a webhook accepted, an entry acked) that the
/// others read before and after — run side by side, their deltas would count each other's.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn forward_vars(redis: &RedisServer, target: &FakeApi) -> std::collections::HashMap<String, String> {
    let mut vars = processor_vars(&redis.url(), "http://127.0.0.1:9");
    vars.insert("FORWARD_URL".into(), format!("{}/hook", target.url()));
    vars
}

#[tokio::test]
async fn ingress_health_readiness_and_metrics_by_outcome() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut redis = RedisServer::start();
    let mut vars = default_vars(&redis.url());
    vars.insert("MAX_BODY_BYTES".into(), "4096".into());
    let ingress = start_with(vars, |_| {}).await;
    let c = client();
    let (status, body) = answer(c.get(ingress.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = answer(c.get(ingress.url("/readyz")).send().await.unwrap()).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));

    let metrics = ingress.url("/metrics");
    let before = scrape(&metrics).await;
    let body = fixture("meeting-baas/v1/failed.json");
    assert_eq!(post_v1(&ingress, &body).await.status(), 200); // accepted
    assert_eq!(post_v1(&ingress, &body).await.status(), 200); // duplicate
    assert_eq!(post_v1(&ingress, b"[]").await.status(), 400); // invalid
    assert_eq!(post_v1(&ingress, &vec![b' '; 5000]).await.status(), 413); // too_large
    let plain = c.post(ingress.webhook_url()).header("content-type", "text/plain").body("{}").send().await.unwrap();
    assert_eq!(plain.status(), 415); // unsupported
    let anonymous =
        c.post(ingress.webhook_url()).header("content-type", "application/json").body(body.clone()).send().await;
    assert_eq!(anonymous.unwrap().status(), 401); // unauthorized
    redis.kill();
    assert_eq!(post_v1(&ingress, br#"{"event":"x"}"#).await.status(), 503); // unavailable
    let after = scrape(&metrics).await;
    let delta = |outcome: &str| {
        let labels = format!(r#"{{outcome="{outcome}"}}"#);
        metric(&after, "hookstream_ingress_requests_total", &labels)
            - metric(&before, "hookstream_ingress_requests_total", &labels)
    };
    for outcome in ["accepted", "duplicate", "invalid", "too_large", "unsupported", "unauthorized", "unavailable"] {
        assert_eq!(delta(outcome), 1.0, "{outcome}:\n{after}");
    }
    let count = |text: &str| metric(text, "hookstream_ingress_request_duration_seconds_count", "");
    assert_eq!(count(&after) - count(&before), 7.0, "one duration per webhook request:\n{after}");
}

#[tokio::test]
async fn health_and_metrics() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let target = FakeApi::start().await;
    target.sequence("POST", "/hook", vec![Reply::status(503), Reply::status(200), Reply::status(422)]);
    let vars = forward_vars(&redis, &target);
    let processor = start_processor(vars).await;
    let base = format!("http://{}", processor.metrics);
    let before = scrape(&format!("{base}/metrics")).await;
    // One entry acked after a transient error, then one dead (permanent).
    add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, "m1");
    all_acked(&redis).await;
    add_event(&redis, "bot.completed", br#"{"event":"bot.completed"}"#, "m2");
    dead_after(&redis, 1).await;
    all_acked(&redis).await;
    assert_eq!(reqwest::get(format!("{base}/healthz")).await.unwrap().status(), 200);
    assert_eq!(reqwest::get(format!("{base}/readyz")).await.unwrap().status(), 200);
    let after = scrape(&format!("{base}/metrics")).await;
    let delta = |name: &str, labels: &str| metric(&after, name, labels) - metric(&before, name, labels);
    assert_eq!(delta("hookstream_processor_entries_total", r#"{outcome="acked"}"#), 1.0, "{after}");
    assert_eq!(delta("hookstream_processor_entries_total", r#"{outcome="dead"}"#), 1.0, "{after}");
    assert_eq!(delta("hookstream_processor_entries_total", r#"{outcome="reclaimed"}"#), 0.0, "{after}");
    assert_eq!(delta("hookstream_processor_attempts_total", r#"{result="ok"}"#), 1.0, "{after}");
    assert_eq!(delta("hookstream_processor_attempts_total", r#"{result="transient"}"#), 1.0, "{after}");
    assert_eq!(delta("hookstream_processor_attempts_total", r#"{result="permanent"}"#), 1.0, "{after}");
    assert_eq!(
        delta("hookstream_processor_handler_duration_seconds_count", r#"{event="bot.completed"}"#),
        2.0,
        "one duration per handled entry: {after}"
    );
    for (gauge, value) in [
        ("hookstream_stream_length", 2.0),
        ("hookstream_dead_length", 1.0),
        ("hookstream_group_pending", 0.0),
        ("hookstream_group_lag", 0.0),
    ] {
        assert!(after.lines().any(|l| l.starts_with(&format!("{gauge} "))), "{gauge} missing:\n{after}");
        assert_eq!(metric(&after, gauge, ""), value, "{gauge}");
    }
    assert_eq!(reqwest::get(format!("{base}/nope")).await.unwrap().status(), 404);

    // Senders choose event names: they never grow the `event` label set.
    let other = |text: &str| metric(text, "hookstream_processor_handler_duration_seconds_count", r#"{event="other"}"#);
    let before = scrape(&format!("{base}/metrics")).await;
    for i in 0..30 {
        add_event(&redis, &format!("made.up.{i}"), br#"{"event":"x"}"#, &format!("odd{i}"));
    }
    all_acked(&redis).await;
    let after = scrape(&format!("{base}/metrics")).await;
    assert_eq!(other(&after) - other(&before), 30.0, "{after}");
    assert!(!after.contains("made.up"), "a sender's event name became a label:\n{after}");
    for line in after.lines().filter(|l| l.contains("event=\"")) {
        let value = line.split("event=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap();
        assert!(value == "other" || processor::events::position(value).is_some(), "unbounded label value {value:?}");
    }
    processor.stop().await;
}

#[tokio::test]
async fn writes_that_wait_for_the_shared_limit_are_counted() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let api = FakeApi::start().await;
    let upcoming = hookstream_tests::fixture("meeting-baas/api/v1_calendar_event_upcoming.json");
    let scheduled = hookstream_tests::fixture("meeting-baas/api/v1_schedule_response.json");
    let uuids = ["wait-a", "wait-b", "wait-c"];
    for uuid in uuids {
        api.always("GET", &format!("/calendar_events/{uuid}"), Reply::json(200, upcoming.clone()));
        api.always("POST", &format!("/calendar_events/{uuid}/bot"), Reply::json(200, scheduled.clone()));
    }
    let mut vars = processor_vars(&redis.url(), &api.url());
    vars.insert("API_WRITES_PER_SEC".into(), "2".into());
    let processor = start_processor(vars).await;
    let url = format!("http://{}/metrics", processor.metrics);
    let waits = |text: &str| metric(text, "hookstream_processor_api_write_waits_total", "");
    let before = waits(&scrape(&url).await);
    let body = serde_json::json!({"event": "calendar.sync_events", "data": {"affected_event_uuids": uuids}});
    add_event(&redis, "calendar.sync_events", &serde_json::to_vec(&body).unwrap(), "three-writes");
    all_acked(&redis).await;
    let after = waits(&scrape(&url).await);
    processor.stop().await;
    // Three writes at 2/s: the first goes at once, the later ones wait for their slot.
    assert!(after - before >= 2.0, "write waits counted: {before} -> {after}");
    assert_eq!(api.calls().iter().filter(|c| c.method == "POST").count(), 3);
}

/// Every metric the alert rules (`deploy/prometheus/alerts.yaml`) and the dashboard
/// (`deploy/grafana/*.json`, when there is one) read is one the binaries export: scraped from
/// both `/metrics` after one webhook went through, so the rules cannot drift from the code.
#[tokio::test]
async fn the_alert_rules_read_only_metrics_the_binaries_export() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let target = FakeApi::start().await;
    target.always("POST", "/hook", Reply::status(200));
    let ingress = start_ingress(&redis.url()).await;
    let processor = start_processor(forward_vars(&redis, &target)).await;
    let r = post_v1(&ingress, &fixture("meeting-baas/v2/bot_completed.json")).await;
    assert_eq!(r.status(), 200);
    all_acked(&redis).await;
    let mut exported = std::collections::HashSet::new();
    for url in [ingress.url("/metrics"), format!("http://{}/metrics", processor.metrics)] {
        for line in scrape(&url).await.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            // A histogram's series are <name>_bucket, _sum, _count.
            for suffix in ["_bucket", "_sum", "_count", ""] {
                if let Some(base) = name.strip_suffix(suffix) {
                    exported.insert(base.to_string());
                }
            }
        }
    }
    processor.stop().await;
    ingress.stop().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("deploy");
    let mut files = vec![root.join("prometheus").join("alerts.yaml")];
    if let Ok(dir) = std::fs::read_dir(root.join("grafana")) {
        files.extend(dir.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")));
    }
    let mut used = std::collections::BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut rest = text.as_str();
        while let Some(at) = rest.find("hookstream_") {
            let tail = &rest[at..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            used.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    assert!(used.len() >= 8, "the rules read the hookstream metrics: {used:?}");
    let missing: Vec<&String> = used.iter().filter(|name| !exported.contains(*name)).collect();
    assert!(missing.is_empty(), "read by {files:?} but not exported: {missing:?}; exported: {exported:?}");
}
