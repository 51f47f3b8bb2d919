//! A fake OpenTelemetry collector: a [`FakeApi`] answering OTLP/HTTP `POST /v1/traces`, and
//! the spans it received, decoded from their protobuf bodies.

use crate::fake_api::{FakeApi, Gate, Reply};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use std::collections::HashMap;

/// Where the exporter sends spans (below `OTEL_EXPORTER_OTLP_ENDPOINT`).
pub const TRACES_PATH: &str = "/v1/traces";

/// One span as the collector received it; ids in lowercase hex ("" when absent).
#[derive(Debug, Clone)]
pub struct Span {
    pub service: String,
    pub name: String,
    /// `SERVER`, `CLIENT`, `PRODUCER`, `CONSUMER`, `INTERNAL`.
    pub kind: &'static str,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// `(trace id, span id)` of each link.
    pub links: Vec<(String, String)>,
    pub attributes: HashMap<String, String>,
    /// The status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
}

impl Span {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), text(kv.value.as_ref().and_then(|v| v.value.as_ref())))).collect()
}

/// Every span in `api`'s `POST /v1/traces` calls, in the order received.
pub fn spans(api: &FakeApi) -> Vec<Span> {
    let mut out = Vec::new();
    for call in api.calls_to("POST", TRACES_PATH) {
        let request = ExportTraceServiceRequest::decode(call.body.as_slice()).expect("an OTLP protobuf body");
        for resource in request.resource_spans {
            let resource_attributes = resource.resource.map(|r| attributes(&r.attributes)).unwrap_or_default();
            let service = resource_attributes.get("service.name").cloned().unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let kind = match span.kind {
                        1 => "INTERNAL",
                        2 => "SERVER",
                        3 => "CLIENT",
                        4 => "PRODUCER",
                        5 => "CONSUMER",
                        _ => "UNSPECIFIED",
                    };
                    out.push(Span {
                        service: service.clone(),
                        name: span.name,
                        kind,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        links: span.links.iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect(),
                        attributes: attributes(&span.attributes),
                        status: span.status.map(|s| s.code).unwrap_or(0),
                    });
                }
            }
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A collector that accepts every export.
pub async fn start() -> FakeApi {
    let api = FakeApi::start().await;
    let ok = ExportTraceServiceResponse::default().encode_to_vec();
    api.always("POST", TRACES_PATH, Reply::json(200, ok).header("content-type", "application/x-protobuf"));
    api
}

/// A collector that takes every export's request and never answers it (until `gate` opens):
/// the worst a collector can do to its clients.
pub async fn start_hanging(gate: &Gate) -> FakeApi {
    let api = FakeApi::start().await;
    api.always("POST", TRACES_PATH, Reply::status(200).held(gate));
    api
}
