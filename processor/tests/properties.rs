//! Property tests: whatever JSON a sender or a broken API puts in an entry, parsing it and
//! splitting it never panics, and a split payload reads back as exactly its one meeting; no
//! `Retry-After` header value panics its parser.
//!
//! `PROPTEST_CASES` sets the number of inputs (256 by default); a long campaign:
//! `PROPTEST_CASES=1000000 cargo test --release -p processor --test properties` (docs/testing.md).

use processor::handlers::calendar_v1::SyncPayload;
use processor::handlers::calendar_v2::Payload;
use processor::handlers::Event;
use processor::http::retry_after;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Field names the payload models read, and some they do not: arbitrary objects built from them
/// reach every branch of the models, not only "missing field".
const KEYS: &[&str] = &[
    "event",
    "data",
    "calendar_id",
    "series_id",
    "event_id",
    "instances",
    "affected_instances",
    "cancelled_instances",
    "events",
    "affected_event_uuids",
    "extra",
    "x",
];

const UUIDS: &[&str] = &[
    "647da78e-783d-4a7a-be5c-117ad3b10d5c",
    "ad307589-17b9-4f8a-9489-6b4c48f0c40d",
    "a6ae6a86-6831-4422-a646-d9442a1b0ec8",
    "487471b7-0149-44ed-840b-97d920e06829",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
        proptest::sample::select(UUIDS).prop_map(|u| Value::String(u.to_string())),
    ];
    leaf.prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..6).prop_map(|pairs| Value::Object(
                pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>()
            )),
        ]
    })
}

/// An arbitrary value, or one shaped like a webhook (`{"event", "data": {...}}`) around one.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        json_value().prop_map(|data| serde_json::to_vec(&json!({"event": "e", "data": data})).unwrap_or_default()),
        (json_value(), json_value()).prop_map(|(a, b)| {
            let data = json!({"calendar_id": UUIDS[0], "instances": a, "events": b, "affected_event_uuids": a});
            serde_json::to_vec(&json!({"event": "e", "data": data})).unwrap_or_default()
        }),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

fn event(name: &str, payload: Vec<u8>) -> Event {
    Event { id: "1-0".into(), name: name.into(), dedup_id: "d".into(), payload }
}

proptest! {
    #[test]
    fn v1_payloads_never_panic_and_split_into_their_meetings(body in payload()) {
        let e = event("calendar.sync_events", body);
        if let Ok(parsed) = SyncPayload::parse(&e) {
            let meetings = parsed.meetings().expect("a parsed payload splits");
            prop_assert_eq!(meetings.len(), parsed.uuids().len());
            if meetings.len() > 1 {
                for m in meetings {
                    let part = SyncPayload::parse(&event("calendar.sync_events", m.payload)).expect("a part parses");
                    let again = part.meetings().expect("a part splits");
                    prop_assert_eq!(again.len(), 1);
                    prop_assert_eq!(&again[0].key, &m.key);
                }
            }
        }
    }

    #[test]
    fn v2_payloads_never_panic_and_split_into_their_meetings(body in payload(), cancelled in any::<bool>()) {
        let name = if cancelled { "calendar.event_cancelled" } else { "calendar.event_updated" };
        let e = event(name, body);
        if let Ok(parsed) = Payload::parse(&e) {
            let meetings = parsed.meetings(cancelled).expect("a parsed payload splits");
            prop_assert_eq!(meetings.len(), parsed.candidates(cancelled).len());
            if meetings.len() > 1 {
                for m in meetings {
                    let part = Payload::parse(&event(name, m.payload)).expect("a part parses");
                    let again = part.meetings(cancelled).expect("a part splits");
                    prop_assert_eq!(again.len(), 1);
                    prop_assert_eq!(&again[0].key, &m.key);
                    prop_assert!(part.candidates(cancelled)[0].series_id.is_some() || parsed.candidates(cancelled).iter().any(|c| c.series_id.is_none()));
                }
            }
        }
    }

    #[test]
    fn retry_after_never_panics(value in proptest::collection::vec(any::<u8>(), 0..48), text in "\\PC{0,40}") {
        for bytes in [value.as_slice(), text.as_bytes()] {
            if let Ok(header) = reqwest::header::HeaderValue::from_bytes(bytes) {
                let mut headers = reqwest::header::HeaderMap::new();
                headers.insert(reqwest::header::RETRY_AFTER, header);
                let _ = retry_after(&headers);
            }
        }
    }
}
