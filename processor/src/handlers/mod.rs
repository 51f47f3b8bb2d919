//! What the processor does with each event.
//!
//! A [`Handler`] does the work for one event name; the [`Registry`] maps names to handlers, with
//! the forwarder as the fallback for every name without one. Which handler does which name is
//! the table in [`crate::events`]: to add a handler, write a type that implements [`Handler`] in
//! a file of this folder, name its family there, and add its rows.
//!
//! Handlers may run more than once for one entry (a crash, a reclaim, a retry after a partial
//! success), so each one reads the current state before acting and treats "already done" as done.
//!
//! Errors are classified where they arise ([`HandlerError::from_answer`],
//! [`HandlerError::from_request`]): transient for network errors, timeouts, HTTP 408, 425, 429
//! and 5xx; permanent for other 4xx and for payloads that cannot be understood. The retry loop
//! only reads the class.

pub mod calendar_v1;
pub mod calendar_v2;
pub mod connection;
pub mod decision;
pub mod forward;
pub mod reconcile;
pub mod resend;

pub use crate::http::HandlerError;

use crate::events::Family;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A stream entry as handlers see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The entry id in `{ns}:events`.
    pub id: String,
    /// The `event` field.
    pub name: String,
    /// The `dedup_id` field (the entry id when the entry has none).
    pub dedup_id: String,
    /// The `payload` field, byte for byte.
    pub payload: Vec<u8>,
}

/// One meeting an event is about (see [`Handler::meetings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meeting {
    /// The meeting's identity across entries, the key of its lock ([`crate::downstream::lock`]): v1
    /// `v1:<event uuid>`, v2 `v2:<calendar_id>:<event_id>`.
    pub key: String,
    /// The event's payload narrowed to this one meeting: the payload of its fan-out entry.
    /// Empty when the event is about this meeting alone (it is handled as it is: no fan-out).
    pub payload: Vec<u8>,
}

/// The boxed future a handler returns.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

/// Does the work one event asks for.
pub trait Handler: Send + Sync {
    fn handle<'a>(&'a self, event: &'a Event) -> HandlerFuture<'a>;

    /// The meetings the event is about, in payload order (none: the event is not about
    /// meetings, e.g. a forwarded bot result). An entry about one meeting is handled under that
    /// meeting's lock; an entry about several is first fanned out into one entry per meeting
    /// (see [`crate::delivery::worker`]). A payload that cannot be read is a permanent error.
    fn meetings(&self, _event: &Event) -> Result<Vec<Meeting>, HandlerError> {
        Ok(Vec::new())
    }
}

/// What the built-in handlers need: the API client's settings, `RECORD_POLICY`, `FORWARD_URL`
/// and `HANDLER_TIMEOUT_MS` (the HTTP client's timeout).
#[derive(Debug, Clone)]
pub struct Settings {
    pub api: crate::downstream::meeting_baas::Settings,
    pub policy: decision::RecordPolicy,
    pub forward_url: Option<reqwest::Url>,
    pub timeout: Duration,
}

/// Event name → handler, with a fallback.
#[derive(Clone)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
    fallback: Arc<dyn Handler>,
}

impl Registry {
    pub fn new(fallback: Arc<dyn Handler>) -> Self {
        Self { handlers: HashMap::new(), fallback }
    }

    pub fn register(&mut self, event: &str, handler: Arc<dyn Handler>) -> &mut Self {
        self.handlers.insert(event.to_string(), handler);
        self
    }

    pub fn get(&self, event: &str) -> &Arc<dyn Handler> {
        self.handlers.get(event).unwrap_or(&self.fallback)
    }

    /// The built-in handlers of SPEC §4.1; their API writes go through `limiter`, every call
    /// to a downstream through its breaker. `seen` records the API versions handled, for
    /// `RECONCILE_APIS=auto`.
    pub fn standard(
        settings: &Settings,
        limiter: crate::downstream::limiter::WriteLimiter,
        seen: Option<crate::downstream::meeting_baas::Seen>,
        breakers: crate::downstream::breaker::Breakers,
        connections: crate::calendars::Connections,
    ) -> Result<Self, reqwest::Error> {
        let http = crate::http::http_client(settings.timeout)?;
        let api = Arc::new(crate::downstream::meeting_baas::Api::new(
            http.clone(),
            &settings.api,
            limiter,
            seen,
            breakers.meeting_baas,
        ));
        let forward: Arc<dyn Handler> =
            Arc::new(forward::Forward::new(http, settings.forward_url.clone(), breakers.forward));
        let policy = settings.policy;
        let sync = Arc::new(calendar_v1::SyncEvents::new(api.clone(), policy));
        let calendar = Arc::new(calendar_v2::Calendar::new(api.clone(), policy, false));
        let reconcile: Arc<dyn Handler> = Arc::new(reconcile::Reconcile::new(sync.clone(), calendar.clone()));
        let (v1, v2): (Arc<dyn Handler>, Arc<dyn Handler>) = (sync, calendar);
        let v2_cancelled: Arc<dyn Handler> = Arc::new(calendar_v2::Calendar::new(api.clone(), policy, true));
        let resend: Arc<dyn Handler> = Arc::new(resend::Resend::new(api));
        let connection: Arc<dyn Handler> = Arc::new(connection::Connection::new(connections));
        let mut registry = Self::new(forward.clone());
        for known in crate::events::EVENTS {
            let handler = match known.family {
                Family::CalendarV1 => &v1,
                Family::CalendarV2 => &v2,
                Family::CalendarV2Cancelled => &v2_cancelled,
                Family::Reconcile => &reconcile,
                Family::Forward => &forward,
                Family::Connection => &connection,
                Family::Resend => &resend,
            };
            registry.register(known.name, handler.clone());
        }
        Ok(registry)
    }
}

/// Parses a payload leniently (unknown fields ignored); an unreadable one is permanent.
pub fn parse_payload<'a, T: serde::Deserialize<'a>>(event: &'a Event) -> Result<T, HandlerError> {
    serde_json::from_slice(&event.payload)
        .map_err(|e| HandlerError::permanent(format!("malformed {} payload: {e}", event.name)))
}
