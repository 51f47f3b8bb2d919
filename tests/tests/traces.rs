//! Traces (SPEC §6), end to end against a fake OTLP/HTTP collector: the ingress's and the
//! processor's spans of one webhook share its trace, with the right parents; a re-run links to
//! the first trace; a collector that hangs or refuses never slows or fails intake.

mod common;

use common::*;
use hookstream_tests::collector::{self, Span, TRACES_PATH};
use hookstream_tests::fake_api::{FakeApi, Gate, Reply};
use hookstream_tests::{eventually, fixture, RedisServer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the test exporters send their spans (the binaries: `OTEL_BSP_SCHEDULE_DELAY`).
const EVERY: Duration = Duration::from_millis(50);

fn exporter(url: &str, service: &'static str) -> (shared::otel::Traces, shared::otel::Exporter) {
    shared::otel::start_to(url, service, EVERY).expect("the exporter starts")
}

fn one<'a>(spans: &'a [Span], kind: &str, what: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.kind == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} span ({what}): {spans:#?}");
    found[0]
}

/// The `traceparent` field of the stream's only entry.
fn stored_traceparent(redis: &RedisServer) -> String {
    let entries = entries(redis);
    assert_eq!(entries.len(), 1);
    String::from_utf8(entries[0].1.get("traceparent").expect("a traceparent field").clone()).expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_and_its_processing_share_one_trace_from_the_request_to_the_downstream_call() {
    let redis = RedisServer::start();
    let collector = collector::start().await;
    let url = format!("{}{TRACES_PATH}", collector.url());
    let target = FakeApi::start().await;
    target.always("POST", "/hook", Reply::status(200));
    let (traces, _ingress_exporter) = exporter(&url, "hookstream-ingress");
    let ingress = start_traced(default_vars(&redis.url()), |_| {}, Some(traces)).await;

    // The sender's own trace context: the request's span continues it.
    let (sender_trace, sender_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let response = client()
        .post(ingress.webhook_url())
        .header("content-type", "application/json")
        .header("x-meeting-baas-api-key", API_KEY)
        .header("traceparent", format!("00-{sender_trace}-{sender_span}-01"))
        .body(fixture("meeting-baas/v1/failed.json"))
        .send()
        .await
        .expect("request");
    let (status, body) = answer(response).await;
    assert_eq!(status, 200, "{body}");
    let stream_id = body["id"].as_str().expect("id").to_string();
    let traceparent = stored_traceparent(&redis);

    let mut vars = processor_vars(&redis.url(), "http://127.0.0.1:9");
    vars.insert("FORWARD_URL".into(), format!("{}/hook", target.url()));
    let (traces, _processor_exporter) = exporter(&url, "hookstream-processor");
    let _processor = start_processor_traced(vars, |_| {}, Some(traces)).await;
    all_acked(&redis).await;
    let forwarded = eventually("the event forwarded", || async { target.calls_to("POST", "/hook").pop() }).await;

    let spans = eventually("four spans exported", || async {
        let spans = collector::spans(&collector);
        (spans.len() >= 4).then_some(spans)
    })
    .await;
    let server = one(&spans, "SERVER", "the webhook request");
    let producer = one(&spans, "PRODUCER", "the append");
    let consumer = one(&spans, "CONSUMER", "the delivery");
    let call = one(&spans, "CLIENT", "the forward");

    assert_eq!(server.service, "hookstream-ingress");
    assert_eq!(server.name, "POST /webhooks/meeting-baas");
    assert_eq!((server.trace_id.as_str(), server.parent_span_id.as_str()), (sender_trace, sender_span));
    assert_eq!(server.attr("http.request.method"), Some("POST"));
    assert_eq!(server.attr("http.route"), Some("/webhooks/meeting-baas"));
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.attr("hookstream.outcome"), Some("accepted"));

    assert_eq!(producer.service, "hookstream-ingress");
    assert_eq!((producer.trace_id.as_str(), producer.parent_span_id.as_str()), (sender_trace, server.span_id.as_str()));
    assert_eq!(producer.attr("messaging.operation.type"), Some("send"));
    assert_eq!(producer.attr("messaging.destination.name"), Some(EVENTS));
    assert_eq!(producer.attr("messaging.message.id"), Some(stream_id.as_str()));
    // The entry carries the producer span: the processor's delivery continues from there.
    assert_eq!(traceparent, format!("00-{sender_trace}-{}-01", producer.span_id));

    assert_eq!(consumer.service, "hookstream-processor");
    assert_eq!(consumer.name, format!("process {EVENTS}"));
    assert_eq!(
        (consumer.trace_id.as_str(), consumer.parent_span_id.as_str()),
        (sender_trace, producer.span_id.as_str())
    );
    assert!(consumer.links.is_empty(), "a first run continues the trace, it does not link: {consumer:?}");
    assert_eq!(consumer.attr("messaging.operation.type"), Some("process"));
    assert_eq!(consumer.attr("messaging.message.id"), Some(stream_id.as_str()));
    assert_eq!(consumer.attr("messaging.consumer.group.name"), Some(GROUP));
    assert_eq!(consumer.attr("hookstream.outcome"), Some("acked"));

    assert_eq!(call.service, "hookstream-processor");
    assert_eq!((call.trace_id.as_str(), call.parent_span_id.as_str()), (sender_trace, consumer.span_id.as_str()));
    assert_eq!(call.attr("http.request.method"), Some("POST"));
    assert_eq!(call.attr("url.full"), Some(format!("{}/hook", target.url()).as_str()));
    assert_eq!(call.attr("http.response.status_code"), Some("200"));
    // The downstream receives the call's span as its parent.
    assert_eq!(forwarded.header("traceparent"), Some(format!("00-{sender_trace}-{}-01", call.span_id).as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_entry_run_again_starts_a_new_trace_linked_to_its_first() {
    let redis = RedisServer::start();
    let collector = collector::start().await;
    let url = format!("{}{TRACES_PATH}", collector.url());
    let target = FakeApi::start().await;
    let healthy = Arc::new(AtomicBool::new(false));
    let up = healthy.clone();
    target.route("POST", "/hook", move |_, _| Reply::status(if up.load(Ordering::SeqCst) { 200 } else { 503 }));
    let (traces, _ingress_exporter) = exporter(&url, "hookstream-ingress");
    let ingress = start_traced(default_vars(&redis.url()), |_| {}, Some(traces)).await;
    assert_eq!(post_v1(&ingress, &fixture("meeting-baas/v1/failed.json")).await.status(), 200);

    let mut vars = processor_vars(&redis.url(), "http://127.0.0.1:9");
    vars.insert("FORWARD_URL".into(), format!("{}/hook", target.url()));
    for (k, v) in [
        ("RETRY_MAX_ELAPSED_MS", "100"),
        ("RETRY_PARK_INITIAL_MS", "200"),
        ("RETRY_PARK_MAX_MS", "400"),
        ("BREAKER_FAILURES", "0"),
    ] {
        vars.insert(k.into(), v.into());
    }
    let (traces, _processor_exporter) = exporter(&url, "hookstream-processor");
    let _processor = start_processor_traced(vars, |_| {}, Some(traces)).await;
    eventually("the entry parked", || async {
        let parked: u64 = redis::cmd("ZCARD").arg("{hookstream}:retry").query(&mut redis.con()).expect("ZCARD");
        (parked == 1).then_some(())
    })
    .await;
    healthy.store(true, Ordering::SeqCst);
    eventually("the re-run acked and its span exported", || async { up_answered(&collector).then_some(()) }).await;

    let spans = collector::spans(&collector);
    let producer = one(&spans, "PRODUCER", "the append");
    let consumers: Vec<&Span> = spans.iter().filter(|s| s.kind == "CONSUMER").collect();
    let first = consumers.iter().find(|s| s.attr("hookstream.outcome") == Some("parked")).expect("a parked delivery");
    let rerun = consumers.iter().find(|s| s.attr("hookstream.outcome") == Some("acked")).expect("the acked re-run");
    assert_eq!(
        (first.trace_id.as_str(), first.parent_span_id.as_str()),
        (producer.trace_id.as_str(), producer.span_id.as_str())
    );
    assert!(first.links.is_empty());
    assert_ne!(rerun.trace_id, producer.trace_id, "a re-run is a trace of its own");
    assert_eq!(rerun.parent_span_id, "", "a re-run has no parent: {rerun:?}");
    assert_eq!(rerun.links, vec![(producer.trace_id.clone(), producer.span_id.clone())]);
    // Each delivery's calls are its children, in its trace.
    let calls: Vec<&Span> = spans.iter().filter(|s| s.kind == "CLIENT").collect();
    assert!(calls
        .iter()
        .any(|c| c.parent_span_id == first.span_id && c.attr("http.response.status_code") == Some("503")));
    let ok = calls.iter().find(|c| c.attr("http.response.status_code") == Some("200")).expect("the call that worked");
    assert_eq!((ok.trace_id.as_str(), ok.parent_span_id.as_str()), (rerun.trace_id.as_str(), rerun.span_id.as_str()));
}

/// Whether the collector has the span of an acked delivery (the re-run's).
fn up_answered(collector: &FakeApi) -> bool {
    collector::spans(collector).iter().any(|s| s.kind == "CONSUMER" && s.attr("hookstream.outcome") == Some("acked"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_hangs_or_refuses_never_slows_or_fails_intake() {
    let gate = Gate::new();
    let hanging = collector::start_hanging(&gate).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    }; // dropped: connections to it are refused
    for (what, url) in [
        ("hangs", format!("{}{TRACES_PATH}", hanging.url())),
        ("refuses connections", format!("http://{closed}{TRACES_PATH}")),
    ] {
        let redis = RedisServer::start();
        let (traces, exporter) = exporter(&url, "hookstream-ingress");
        let ingress = start_traced(default_vars(&redis.url()), |_| {}, Some(traces)).await;
        assert_eq!(post_v1(&ingress, br#"{"event":"failed","data":{"bot_id":"first"}}"#).await.status(), 200);
        if what == "hangs" {
            // The exporter is stuck in an export that will not end while the webhooks come.
            eventually("an export held by the collector", || async { (hanging.in_flight() >= 1).then_some(()) }).await;
        }
        // More spans (2 per webhook) than the exporter's queue holds (2048): the rest are dropped,
        // never waited for.
        let c = client();
        for i in 0..1_100 {
            let body = format!(r#"{{"event":"failed","data":{{"bot_id":"bot-{i}"}}}}"#);
            let response = c
                .post(ingress.webhook_url())
                .header("content-type", "application/json")
                .header("x-meeting-baas-api-key", API_KEY)
                .body(body)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 200, "collector {what}: webhook {i}");
        }
        assert_eq!(xlen(&redis), 1_101, "collector {what}: every webhook stored");
        if what == "hangs" {
            assert!(hanging.in_flight() >= 1, "the export was still held while every webhook was answered");
        }
        assert!(ingress.stop().await, "collector {what}: the ingress stops in its grace period");
        // The exit flush gives up after its timeout instead of waiting for the collector.
        let flushed = tokio::task::spawn_blocking(move || exporter.shutdown(Duration::from_millis(200)));
        tokio::time::timeout(Duration::from_secs(30), flushed)
            .await
            .unwrap_or_else(|_| panic!("collector {what}: the exporter's shutdown did not end"))
            .expect("shutdown");
    }
    gate.open();
}
