//! The fields of a stream entry in `{ns}:events` (and, with more fields, in `{ns}:dead`).

/// Field: the event name (`calendar.sync_events`, `bot.completed`, …).
pub const EVENT: &str = "event";
/// Field: where the event came from; always [`SOURCE_MEETING_BAAS`] today.
pub const SOURCE: &str = "source";
/// Field: the dedup identity, before hashing.
pub const DEDUP_ID: &str = "dedup_id";
/// Field: the request body, byte for byte.
pub const PAYLOAD: &str = "payload";
/// Field: when the ingress received the request (RFC 3339 UTC, milliseconds).
pub const RECEIVED_AT: &str = "received_at";
/// Field: the request's `x-request-id`, or a generated one.
pub const REQUEST_ID: &str = "request_id";

/// Field, when tracing is on (SPEC §6): the W3C `traceparent` of the ingress's producer span.
pub const TRACEPARENT: &str = "traceparent";
/// Field, when tracing is on and the trace has vendor state: the W3C `tracestate`.
pub const TRACESTATE: &str = "tracestate";

/// Field of a fan-out entry (written by a processor, never by the ingress): the id of the entry
/// about several meetings that it was split from. Its other fields are the original's, with the
/// payload narrowed to one meeting.
pub const FANOUT_OF: &str = "fanout_of";
/// Field of a fan-out entry: the meeting it is about (`v1:<uuid>`, `v2:<calendar>:<event>`).
pub const MEETING: &str = "meeting";

/// Field of an entry re-appended from the retry set `{ns}:retry` (SPEC §4.3): handler attempts
/// so far, over every delivery.
pub const ATTEMPTS: &str = "attempts";
/// Field of a re-appended entry: when its first attempt began (RFC 3339 UTC).
pub const FIRST_ATTEMPT_AT: &str = "first_attempt_at";
/// Field of a re-appended entry: how many times it was parked (its next park waits longer).
pub const PARKED: &str = "parked";

/// The value of [`SOURCE`] for Meeting BaaS webhooks.
pub const SOURCE_MEETING_BAAS: &str = "meeting-baas";

/// An event about to be appended to the stream.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub event: &'a str,
    pub source: &'a str,
    pub dedup_id: &'a str,
    pub payload: &'a [u8],
    pub received_at: &'a str,
    pub request_id: &'a str,
    /// `(traceparent, tracestate)` when tracing is on; an empty trace state is not written.
    pub trace: Option<(&'a str, &'a str)>,
}

impl<'a> NewEntry<'a> {
    /// The entry as XADD field/value pairs, in the order of the SPEC.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &'a [u8])> {
        let trace = self.trace.into_iter().flat_map(|(traceparent, tracestate)| {
            let state = (!tracestate.is_empty()).then_some((TRACESTATE, tracestate.as_bytes()));
            std::iter::once((TRACEPARENT, traceparent.as_bytes())).chain(state)
        });
        [
            (EVENT, self.event.as_bytes()),
            (SOURCE, self.source.as_bytes()),
            (DEDUP_ID, self.dedup_id.as_bytes()),
            (PAYLOAD, self.payload),
            (RECEIVED_AT, self.received_at.as_bytes()),
            (REQUEST_ID, self.request_id.as_bytes()),
        ]
        .into_iter()
        .chain(trace)
    }
}

/// Now as RFC 3339 UTC with milliseconds (`2026-05-19T13:58:02.417Z`).
pub fn timestamp_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
