//! `calendar.connection_created`, `_updated`, `_error`, `_deleted` (API v2; SPEC §4.1, §4.6):
//! the calendar's connection record in `{ns}:calendars` ([`crate::calendars`]); `_deleted`
//! forgets it. No bot is changed.

use super::{parse_payload, Event, Handler, HandlerError, HandlerFuture};
use crate::calendars::Connections;
use crate::downstream::meeting_baas::require_uuid;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Payload {
    data: Data,
}

#[derive(Debug, Deserialize)]
struct Data {
    calendar_id: String,
    #[serde(default)]
    calendar_platform: Option<String>,
    #[serde(default)]
    status: Option<String>,
    /// Why the connection failed (`calendar.connection_error`).
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Keeps the connection records.
pub struct Connection {
    connections: Connections,
}

impl Connection {
    pub fn new(connections: Connections) -> Self {
        Self { connections }
    }
}

impl Handler for Connection {
    fn handle<'a>(&'a self, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(async move {
            let payload: Payload = parse_payload(event)?;
            let d = payload.data;
            require_uuid("calendar_id", &d.calendar_id)?;
            let redis =
                |e: redis::RedisError| HandlerError::transient(format!("recording the calendar connection: {e}"));
            if event.name == "calendar.connection_deleted" {
                self.connections.remove(&d.calendar_id).await.map_err(redis)?;
                return Ok(());
            }
            let status = match (d.status.as_deref(), event.name.as_str()) {
                (Some(status), _) => status,
                (None, "calendar.connection_error") => "error",
                (None, _) => "active",
            };
            let message = d.error.or(d.message).unwrap_or_default();
            let platform = d.calendar_platform.unwrap_or_default();
            self.connections.record(&d.calendar_id, status, &platform, &message, true).await.map_err(redis)?;
            Ok(())
        })
    }
}
