//! The processor's spans (SPEC §6), made only when tracing is on ([`shared::otel`]):
//!
//! - a `CONSUMER` span `process <stream>` per delivery, from its start to its verdict. On an
//!   entry's first delivery it is the child of the ingress's producer span (the entry's
//!   `traceparent`); on a re-run — a delivery count above 1 (reclaimed from another consumer)
//!   or an entry appended again from the retry set — it starts a new trace that *links* to
//!   that span. An entry without trace context (the ingress traced nothing) starts a trace of
//!   its own.
//! - a `CLIENT` span per downstream HTTP call (Meeting BaaS API, `FORWARD_URL`), child of the
//!   span current where the call is made, with the OpenTelemetry HTTP client conventions'
//!   attributes; the request carries its `traceparent`, so a traced downstream joins in.
//!
//! The delivery's context holds the [`Traces`] as well as its span, and is attached to the
//! delivery's future: the handlers, wherever they call out, find both in
//! [`Context::current`] — and find neither when tracing is off.

use crate::replies::StreamEntry;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use shared::entry::{TRACEPARENT, TRACESTATE};
use shared::otel::{self, KeyValue, SpanKind, Status, Traces};

/// Where a delivery came from, for its span.
pub struct Source<'a> {
    pub stream: &'a str,
    pub group: &'a str,
    pub consumer: &'a str,
    /// The partition, when there are several.
    pub partition: Option<usize>,
}

/// Starts a delivery's `CONSUMER` span; the context to run the delivery in.
pub fn delivery(traces: &Traces, source: &Source<'_>, entry: &StreamEntry, deliveries: u64, rerun: bool) -> Context {
    let mut attributes = otel::messaging("process", source.stream, source.partition);
    attributes.extend([
        KeyValue::new("messaging.consumer.group.name", source.group.to_string()),
        KeyValue::new("messaging.client.id", source.consumer.to_string()),
        KeyValue::new("messaging.message.id", entry.id.clone()),
        KeyValue::new("hookstream.deliveries", deliveries as i64),
    ]);
    if let Some(event) = entry.get(shared::entry::EVENT) {
        attributes.push(KeyValue::new("hookstream.event", event));
    }
    let span = otel::span(format!("process {}", source.stream), SpanKind::Consumer, attributes);
    let stored = otel::extract(
        entry.bytes(TRACEPARENT).and_then(|v| std::str::from_utf8(v).ok()),
        entry.bytes(TRACESTATE).and_then(|v| std::str::from_utf8(v).ok()),
    );
    let cx = match stored {
        Some(parent) if deliveries <= 1 && !rerun => {
            traces.start(span, &Context::new().with_remote_span_context(parent))
        }
        Some(first) => traces.start_linked(span, first),
        None => traces.start(span, &Context::new()),
    };
    cx.with_value(traces.clone())
}

/// Records how the delivery ended (`acked`, `dead`, `parked`, `fanned_out`, `lost`) on the
/// current span; a dead letter is an error.
pub fn outcome(outcome: &'static str, attempts: Option<u32>, error: Option<&str>) {
    let cx = Context::current();
    if cx.get::<Traces>().is_none() {
        return;
    }
    let span = cx.span();
    span.set_attribute(KeyValue::new("hookstream.outcome", outcome));
    if let Some(attempts) = attempts {
        span.set_attribute(KeyValue::new("hookstream.attempts", i64::from(attempts)));
    }
    if let Some(error) = error {
        span.set_attribute(KeyValue::new("hookstream.error", error.to_string()));
    }
    if outcome == "dead" {
        span.set_attribute(KeyValue::new("error.type", "dead_letter"));
        span.set_status(Status::error(error.unwrap_or("dead-lettered").to_string()));
    }
}

/// Starts a `CLIENT` span for `method url` under the current span, when tracing is on: the
/// span, and the headers that carry it.
pub fn call(method: &reqwest::Method, url: &reqwest::Url) -> Option<(Context, Vec<(&'static str, String)>)> {
    let current = Context::current();
    let traces = current.get::<Traces>()?.clone();
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.as_str().to_string()),
        KeyValue::new("url.full", redacted(url)),
    ];
    if let Some(host) = url.host_str() {
        attributes.push(KeyValue::new("server.address", host.to_string()));
    }
    if let Some(port) = url.port_or_known_default() {
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    let cx = traces.start(otel::span(method.as_str().to_string(), SpanKind::Client, attributes), &current);
    let headers = otel::headers(&cx);
    Some((cx.with_value(traces), headers))
}

/// Ends a `CLIENT` span with the answer's status (4xx and 5xx are errors for a client), or the
/// reason there was none.
pub fn answered(cx: &Context, answer: Result<reqwest::StatusCode, &reqwest::Error>) {
    let span = cx.span();
    match answer {
        Ok(status) => {
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
            if status.is_client_error() || status.is_server_error() {
                span.set_attribute(KeyValue::new("error.type", status.as_u16().to_string()));
                span.set_status(Status::error(status.to_string()));
            }
        }
        Err(err) => {
            let kind = match crate::http::RequestFailure::of(err) {
                crate::http::RequestFailure::Timeout => "timeout",
                crate::http::RequestFailure::Connect => "connect",
                crate::http::RequestFailure::Other => "request",
            };
            span.set_attribute(KeyValue::new("error.type", kind));
            span.set_status(Status::error(err.to_string()));
        }
    }
    span.end();
}

/// Sends `request`, inside its `CLIENT` span when there is one (from [`call`]): the span
/// carries the answer's status, or why there was none.
pub async fn send(
    request: reqwest::RequestBuilder,
    span: Option<(Context, Vec<(&'static str, String)>)>,
) -> Result<reqwest::Response, reqwest::Error> {
    let Some((cx, headers)) = span else { return request.send().await };
    let request = headers.into_iter().fold(request, |request, (name, value)| request.header(name, value));
    let answer = request.send().await;
    answered(&cx, answer.as_ref().map(reqwest::Response::status));
    answer
}

/// `url` without user information or query (`url.full` must not carry credentials; a query may).
fn redacted(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_and_query() {
        let url = reqwest::Url::parse("https://user:secret@example.com:8443/hook?token=abc").expect("url");
        assert_eq!(redacted(&url), "https://example.com:8443/hook");
    }

    /// A delivery's span under each history: `(deliveries, re-appended, has trace context)`.
    #[test]
    fn a_first_delivery_continues_the_trace_and_a_rerun_links_to_it() {
        use opentelemetry::trace::SpanId;
        use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let traces = Traces::from_provider(&provider);
        let source = Source { stream: "{hookstream}:events", group: "processors", consumer: "c1", partition: None };
        let stored = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let entry = |traced: bool| StreamEntry {
            id: "1-0".into(),
            fields: Some(
                [("event", "bot.completed"), ("payload", "{}")]
                    .into_iter()
                    .chain(traced.then_some((TRACEPARENT, stored)))
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect(),
            ),
        };
        for (deliveries, reappended, traced, continues, links) in [
            (1, false, true, true, true),    // first run: the ingress's span is the parent
            (2, false, true, false, true),   // reclaimed: a new trace, linked
            (1, true, true, false, true),    // appended again from the retry set: linked
            (1, false, false, false, false), // no trace context: a trace of its own
        ] {
            exporter.reset();
            delivery(&traces, &source, &entry(traced), deliveries, reappended).span().end();
            let spans = exporter.get_finished_spans().expect("spans");
            let span = &spans[0];
            let case = format!("deliveries={deliveries} reappended={reappended} traced={traced}");
            assert_eq!(span.span_kind, SpanKind::Consumer, "{case}");
            let parent = SpanId::from_hex("00f067aa0ba902b7").expect("hex");
            assert_eq!(span.parent_span_id == parent, continues, "{case}");
            assert_eq!(
                span.span_context.trace_id().to_string() == "4bf92f3577b34da6a3ce929d0e0e4736",
                continues,
                "{case}"
            );
            assert_eq!(span.links.links.len(), usize::from(links && !continues), "{case}");
            if !continues {
                assert_eq!(span.parent_span_id, SpanId::INVALID, "{case}");
            }
        }
    }

    #[test]
    fn without_tracing_there_is_no_span_and_no_header() {
        let url = reqwest::Url::parse("http://example.com/x").expect("url");
        assert!(call(&reqwest::Method::POST, &url).is_none());
        outcome("acked", Some(1), None); // no current span: nothing happens, nothing panics
    }
}
