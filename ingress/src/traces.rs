//! The ingress's spans (SPEC §6), made only when tracing is on ([`shared::otel`]):
//!
//! - a `SERVER` span per webhook request, `POST /webhooks/meeting-baas`, with the attributes of
//!   the OpenTelemetry HTTP server conventions; it continues the sender's trace when the
//!   request carries a valid `traceparent`;
//! - inside it, once the request is genuine and about to be stored, a `PRODUCER` span
//!   `send <stream>` around the dedup+append script, with the messaging conventions'
//!   attributes. Its context is what the entry stores as `traceparent`/`tracestate`, so the
//!   processor's delivery span is its child (or links to it).

use crate::metrics::Outcome;
use crate::rejection::Rejection;
use http::{HeaderMap, StatusCode};
use shared::append::Appended;
use shared::otel::{self, KeyValue, SpanKind, Status, Traces};
use std::net::SocketAddr;

pub use opentelemetry::trace::TraceContextExt;
pub use opentelemetry::Context;

/// Starts a webhook request's `SERVER` span.
pub fn request(
    traces: &Traces,
    headers: &HeaderMap,
    path: &str,
    route: &'static str,
    peer: Option<SocketAddr>,
    local_port: u16,
    request_id: &str,
) -> Context {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut attributes = vec![
        KeyValue::new("http.request.method", "POST"),
        KeyValue::new("http.route", route),
        KeyValue::new("url.path", path.to_string()),
        KeyValue::new("url.scheme", "http"),
        KeyValue::new("network.protocol.name", "http"),
        KeyValue::new("network.protocol.version", "1.1"),
        KeyValue::new("server.port", i64::from(local_port)),
        KeyValue::new("hookstream.request_id", request_id.to_string()),
    ];
    if let Some(host) = header("host").and_then(|h| h.rsplit_once(':').map_or(Some(h), |(host, _)| Some(host))) {
        attributes.push(KeyValue::new("server.address", host.to_string()));
    }
    if let Some(peer) = peer {
        attributes.push(KeyValue::new("client.address", peer.ip().to_string()));
        attributes.push(KeyValue::new("client.port", i64::from(peer.port())));
    }
    if let Some(agent) = header("user-agent") {
        attributes.push(KeyValue::new("user_agent.original", agent.to_string()));
    }
    if let Some(len) = header("content-length").and_then(|v| v.parse::<i64>().ok()) {
        attributes.push(KeyValue::new("http.request.body.size", len));
    }
    let parent = otel::remote_parent(header(otel::TRACEPARENT), header(otel::TRACESTATE));
    traces.start(otel::span(format!("POST {route}"), SpanKind::Server, attributes), &parent)
}

/// Ends the `SERVER` span with the answer: 5xx answers are errors (HTTP server conventions:
/// a 4xx is the client's, not the server's).
pub fn answered(cx: &Context, status: StatusCode, outcome: Outcome) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
    span.set_attribute(KeyValue::new("hookstream.outcome", outcome.as_str()));
    if status.is_server_error() {
        span.set_attribute(KeyValue::new("error.type", status.as_u16().to_string()));
        span.set_status(Status::error(outcome.as_str()));
    }
    span.end();
}

/// Starts the `PRODUCER` span of one append to `stream`; child of the request's span.
pub fn send(traces: &Traces, request: &Context, stream: &str, partition: Option<usize>, event: &str) -> Context {
    let mut attributes = otel::messaging("send", stream, partition);
    attributes.push(KeyValue::new("hookstream.event", event.to_string()));
    traces.start(otel::span(format!("send {stream}"), SpanKind::Producer, attributes), request)
}

/// Ends the `PRODUCER` span with what the script did (or why nothing was stored).
pub fn sent(cx: &Context, result: &Result<Appended, Rejection>) {
    let span = cx.span();
    match result {
        Ok(appended) => {
            span.set_attribute(KeyValue::new("messaging.message.id", appended.id().to_string()));
            span.set_attribute(KeyValue::new("hookstream.duplicate", matches!(appended, Appended::Duplicate(_))));
        }
        Err(rejection) => {
            span.set_attribute(KeyValue::new("error.type", rejection.outcome().as_str()));
            span.set_status(Status::error(rejection.to_string()));
        }
    }
    span.end();
}
