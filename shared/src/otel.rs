//! Traces (SPEC §6): OpenTelemetry spans exported over OTLP/HTTP, and the W3C trace context a
//! stream entry carries from the ingress to the processor.
//!
//! **On or off.** Tracing is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-only
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, unless `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none`. Off, [`start`] answers `None` and the binaries hold no
//! [`Traces`]: no span is made, no exporter thread runs, and no trace field is written to an
//! entry — the cost is one `Option` check per request or delivery.
//!
//! **On.** Spans go through the SDK's batch processor, which queues them (a bounded queue,
//! `OTEL_BSP_MAX_QUEUE_SIZE`, 2048 by default; when it is full, spans are dropped, never waited
//! for) and exports them from a thread of its own every `OTEL_BSP_SCHEDULE_DELAY` (5 s): a
//! collector that is slow, down or refusing never holds up a webhook or a delivery. The
//! exporter reads the other standard variables itself (`OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_COMPRESSION` is not built in), the SDK reads
//! `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG` and `OTEL_RESOURCE_ATTRIBUTES`, and
//! `OTEL_SERVICE_NAME` defaults to `hookstream-ingress` / `hookstream-processor`. The only
//! protocol is `http/protobuf`; `grpc` or `http/json` is refused at start (exit 64).
//!
//! **Across the stream.** The ingress stores its producer span's context in the entry as
//! `traceparent` (and `tracestate`, when not empty) — arguments of the dedup+append script, so
//! the append stays one atomic call. The processor's delivery span is that span's child on the
//! entry's first delivery, and a new trace *linked* to it on a re-run (a reclaim, or a parked
//! entry appended again): a retry an hour later is its own trace, one click from the first.
//! Trace context is always W3C Trace Context (`OTEL_PROPAGATORS` is not read).

use crate::vars::{ConfigError, Reader};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Link, SpanBuilder, SpanContext, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::time::Duration;

pub use opentelemetry::trace::{SpanKind, Status};
pub use opentelemetry::KeyValue;

/// Entry field (and HTTP header): the W3C `traceparent`.
pub use crate::entry::TRACEPARENT;
/// Entry field (and HTTP header): the W3C `tracestate`.
pub use crate::entry::TRACESTATE;

/// How long a binary waits, when it exits, for its last spans to be exported.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// The tracing settings read at start (the exporter reads the rest of the `OTEL_*` variables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The variable that turned tracing on and its value, or `None`: tracing is off.
    pub endpoint: Option<(&'static str, String)>,
    /// `OTEL_SERVICE_NAME`, when set.
    pub service_name: Option<String>,
}

impl Settings {
    pub fn read(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let service_name = r.raw("OTEL_SERVICE_NAME");
        let endpoint = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
            .into_iter()
            .find_map(|var| r.raw(var).map(|value| (var, value)));
        let Some((var, value)) = endpoint else { return Ok(Self { endpoint: None, service_name }) };
        let uri: http::Uri =
            value.parse().map_err(|e| ConfigError::new(var, format!("{value:?} is not a URL: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(ConfigError::new(var, format!("{value:?} is not an http:// or https:// URL")));
        }
        for var in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            if let Some(protocol) = r.raw(var).filter(|p| p != "http/protobuf") {
                return Err(ConfigError::new(
                    var,
                    format!(
                        "{protocol:?} is not supported: hookstream exports OTLP over HTTP as protobuf (http/protobuf)"
                    ),
                ));
            }
        }
        let exporter = r.raw("OTEL_TRACES_EXPORTER");
        match exporter.as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(Self { endpoint: None, service_name }),
            Some(other) => {
                return Err(ConfigError::new(
                    "OTEL_TRACES_EXPORTER",
                    format!("{other:?} is not supported: otlp (the default) or none"),
                ))
            }
        }
        // The SDK would warn and fall back on an unknown sampler; a wrong value here is a typo to fix.
        let sampler = r.raw("OTEL_TRACES_SAMPLER");
        match sampler.as_deref() {
            None | Some("always_on" | "always_off" | "parentbased_always_on" | "parentbased_always_off") => {}
            Some("traceidratio" | "parentbased_traceidratio") => {
                if let Some(arg) = r.raw("OTEL_TRACES_SAMPLER_ARG") {
                    if !arg.parse::<f64>().is_ok_and(|ratio| (0.0..=1.0).contains(&ratio)) {
                        return Err(ConfigError::new(
                            "OTEL_TRACES_SAMPLER_ARG",
                            format!("{arg:?} is not a ratio from 0 to 1"),
                        ));
                    }
                }
            }
            Some(other) => {
                return Err(ConfigError::new(
                    "OTEL_TRACES_SAMPLER",
                    format!(
                        "{other:?} is not supported: always_on, always_off, traceidratio or their parentbased_ forms"
                    ),
                ))
            }
        }
        if r.bool("OTEL_SDK_DISABLED", false)? {
            return Ok(Self { endpoint: None, service_name });
        }
        Ok(Self { endpoint: Some((var, value)), service_name })
    }

    pub fn enabled(&self) -> bool {
        self.endpoint.is_some()
    }
}

/// The running exporter: [`Exporter::shutdown`] exports what is still queued.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Exports the spans still queued, waiting at most `timeout` (a collector that does not
    /// answer delays the exit by that much, no more). Blocking: call it outside the runtime.
    pub fn shutdown(self, timeout: Duration) {
        if let Err(err) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!("traces: the last spans were not all exported: {err}");
        }
    }
}

/// Starts the OTLP/HTTP exporter when `settings` turn tracing on. Call it before the tokio
/// runtime starts (the exporter's blocking HTTP client must not be made inside it).
pub fn start(settings: &Settings, default_service: &'static str) -> Result<Option<(Traces, Exporter)>, ConfigError> {
    let Some((var, endpoint)) = &settings.endpoint else { return Ok(None) };
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| ConfigError::new(var, format!("{endpoint:?}: the OTLP exporter cannot be made: {e}")))?;
    let mut resource = Resource::builder();
    if settings.service_name.is_none() {
        resource = resource.with_service_name(default_service);
    }
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    let traces = Traces::from_provider(&provider);
    tracing::info!(endpoint = %endpoint, "traces: exporting spans over OTLP/HTTP");
    Ok(Some((traces, Exporter { provider })))
}

/// [`start`] for in-process tests: spans of `service` go to `traces_url` (the collector's full
/// `/v1/traces` URL), exported every `every` instead of `OTEL_BSP_SCHEDULE_DELAY`.
pub fn start_to(traces_url: &str, service: &'static str, every: Duration) -> Result<(Traces, Exporter), String> {
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(traces_url)
        // Long, so that a test's hanging collector holds one export for the whole test.
        .with_timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(BatchConfigBuilder::default().with_scheduled_delay(every).build())
        .build();
    let resource = Resource::builder_empty().with_service_name(service).build();
    let provider = SdkTracerProvider::builder().with_span_processor(batch).with_resource(resource).build();
    Ok((Traces::from_provider(&provider), Exporter { provider }))
}

/// What makes spans: cheap to clone, one per process (tests make their own over an in-memory
/// exporter).
#[derive(Clone, Debug)]
pub struct Traces {
    tracer: SdkTracer,
}

impl Traces {
    pub fn from_provider(provider: &SdkTracerProvider) -> Self {
        let scope = InstrumentationScope::builder("hookstream").with_version(env!("CARGO_PKG_VERSION")).build();
        Self { tracer: provider.tracer_with_scope(scope) }
    }

    /// Starts a span, child of `parent`'s span (if it has one), as a new context.
    pub fn start(&self, span: SpanBuilder, parent: &Context) -> Context {
        parent.with_span(self.tracer.build_with_context(span, parent))
    }

    /// Starts a span with no parent that links to `linked` (a new trace, one click from the old).
    pub fn start_linked(&self, span: SpanBuilder, linked: SpanContext) -> Context {
        let span = span.with_links(vec![Link::with_context(linked)]);
        Context::new().with_span(self.tracer.build_with_context(span, &Context::new()))
    }
}

/// A span's builder: `name`, `kind` and its first attributes.
pub fn span(name: impl Into<std::borrow::Cow<'static, str>>, kind: SpanKind, attributes: Vec<KeyValue>) -> SpanBuilder {
    SpanBuilder::from_name(name).with_kind(kind).with_attributes(attributes)
}

/// `messaging.system`: no value of the OpenTelemetry messaging conventions names Redis Streams;
/// the conventions allow the system's own name.
pub const MESSAGING_SYSTEM: &str = "redis";

/// The messaging attributes of a span about `stream` (SPEC §2 keys): `operation` is the
/// operation type (`send`, `process`); `partition` is named when there are several.
pub fn messaging(operation: &'static str, stream: &str, partition: Option<usize>) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new("messaging.system", MESSAGING_SYSTEM),
        KeyValue::new("messaging.operation.type", operation),
        KeyValue::new("messaging.operation.name", operation),
        KeyValue::new("messaging.destination.name", stream.to_string()),
    ];
    if let Some(partition) = partition {
        attributes.push(KeyValue::new("messaging.destination.partition.id", partition.to_string()));
    }
    attributes
}

/// The span context carried by a `traceparent` / `tracestate` pair, when it is valid.
pub fn extract(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<SpanContext> {
    let carrier = Pair { traceparent, tracestate };
    let cx = TraceContextPropagator::new().extract(&carrier);
    let span_context = cx.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// The context to continue: the remote span of a valid `traceparent`, else an empty context.
pub fn remote_parent(traceparent: Option<&str>, tracestate: Option<&str>) -> Context {
    match extract(traceparent, tracestate) {
        Some(span_context) => Context::new().with_remote_span_context(span_context),
        None => Context::new(),
    }
}

/// `cx`'s span as `(traceparent, tracestate)`; the trace state is empty when there is none.
pub fn inject(cx: &Context) -> (String, String) {
    let mut carrier = Carrier::default();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    (carrier.traceparent, carrier.tracestate)
}

/// `cx`'s span as HTTP headers for an outgoing request (`traceparent`, and `tracestate` when
/// not empty).
pub fn headers(cx: &Context) -> Vec<(&'static str, String)> {
    let (traceparent, tracestate) = inject(cx);
    let mut headers = Vec::with_capacity(2);
    if !traceparent.is_empty() {
        headers.push((TRACEPARENT, traceparent));
        if !tracestate.is_empty() {
            headers.push((TRACESTATE, tracestate));
        }
    }
    headers
}

struct Pair<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl Extractor for Pair<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent,
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

#[derive(Default)]
struct Carrier {
    traceparent: String,
    tracestate: String,
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = value,
            TRACESTATE => self.tracestate = value,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceId};
    use opentelemetry_sdk::trace::InMemorySpanExporter;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        Settings::read(&Reader::new(&map))
    }

    #[test]
    fn tracing_is_on_only_with_an_endpoint_and_refuses_what_it_cannot_do() {
        assert!(!settings(&[]).expect("valid").enabled());
        assert!(!settings(&[("OTEL_SERVICE_NAME", "x")]).expect("valid").enabled());
        let on = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]).expect("valid");
        assert_eq!(on.endpoint, Some(("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318".to_string())));
        let traces_only = settings(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://c/v1/traces")]).expect("valid");
        assert!(traces_only.enabled());
        let ratio = [("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.25")];
        assert!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ratio[0], ratio[1]])
            .expect("ok")
            .enabled());
        let bad_ratio = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ratio[0], ("OTEL_TRACES_SAMPLER_ARG", "2")];
        assert_eq!(settings(&bad_ratio).expect_err("ratio above 1").var, "OTEL_TRACES_SAMPLER_ARG");
        for off in [("OTEL_SDK_DISABLED", "true"), ("OTEL_TRACES_EXPORTER", "none")] {
            let s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), off]).expect("valid");
            assert!(!s.enabled(), "{off:?}");
        }
        for (var, value) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://c"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            ("OTEL_TRACES_EXPORTER", "jaeger"),
            ("OTEL_SDK_DISABLED", "maybe"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
        ] {
            let mut pairs = vec![(var, value)];
            if var != "OTEL_EXPORTER_OTLP_ENDPOINT" {
                pairs.push(("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"));
            }
            let err = settings(&pairs).expect_err(value);
            assert_eq!(err.var, var, "{var}={value}: {err}");
        }
    }

    #[test]
    fn trace_context_round_trips_and_bad_input_is_no_context() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = extract(Some(tp), Some("vendor=x")).expect("valid");
        assert_eq!(sc.trace_id(), TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"));
        assert_eq!(sc.span_id(), SpanId::from_hex("00f067aa0ba902b7").expect("hex"));
        let (back, state) = inject(&Context::new().with_remote_span_context(sc));
        assert_eq!((back.as_str(), state.as_str()), (tp, "vendor=x"));
        for bad in ["", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "zz-4bf9-00f0-01"] {
            assert!(extract(Some(bad), None).is_none(), "{bad:?}");
        }
        assert!(extract(None, Some("vendor=x")).is_none());
        assert!(headers(&Context::new()).is_empty());
        assert_eq!(inject(&Context::new()).0, "");
    }

    #[test]
    fn a_child_shares_the_trace_and_a_linked_span_starts_a_new_one() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let traces = Traces::from_provider(&provider);
        let producer = traces.start(span("send", SpanKind::Producer, vec![]), &Context::new());
        let (tp, _) = inject(&producer);
        let stored = extract(Some(&tp), None).expect("valid");
        let first = traces.start(span("process", SpanKind::Consumer, vec![]), &remote_parent(Some(&tp), None));
        let rerun = traces.start_linked(span("process", SpanKind::Consumer, vec![]), stored.clone());
        for cx in [&rerun, &first, &producer] {
            cx.span().end();
        }
        let spans = exporter.get_finished_spans().expect("spans");
        let by_name = |name: &str, kind: SpanKind| {
            spans.iter().filter(|s| s.name == name && s.span_kind == kind).cloned().collect::<Vec<_>>()
        };
        let producer = &by_name("send", SpanKind::Producer)[0];
        let consumers = by_name("process", SpanKind::Consumer);
        let first = consumers.iter().find(|s| s.links.is_empty()).expect("first run");
        let rerun = consumers.iter().find(|s| !s.links.is_empty()).expect("re-run");
        assert_eq!(first.span_context.trace_id(), producer.span_context.trace_id());
        assert_eq!(first.parent_span_id, producer.span_context.span_id());
        assert_ne!(rerun.span_context.trace_id(), producer.span_context.trace_id());
        assert_eq!(rerun.parent_span_id, SpanId::INVALID);
        assert_eq!(rerun.links.links[0].span_context, stored);
    }
}
