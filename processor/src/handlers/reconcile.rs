//! `hookstream.reconcile` (SPEC §4.1, §4.4): one meeting the reconciler found drifted — payload
//! `{"api": "v1" | "v2", "calendar_id", "event_id"}` (v1: the event's `uuid`; v2 may add
//! `series_id`). It is handled exactly like a webhook about that meeting: the same meeting key
//! (so the same lock), the same current read and the same decision ([`super::decision`]), the
//! write limit, retries and dead letters. The entry only says where to look.

use super::calendar_v1::SyncEvents;
use super::calendar_v2::Calendar;
use super::{parse_payload, Event, Handler, HandlerError, HandlerFuture, Meeting};
use crate::downstream::meeting_baas::require_uuid;
use crate::downstream::meeting_baas::ApiVersion;
use redis::RedisResult;
use serde::Deserialize;
use shared::conn::Conn;
use std::sync::Arc;

/// The event name of the reconciler's entries.
pub const EVENT: &str = "hookstream.reconcile";

const DEAD_SCRIPT: &str = concat!(
    crate::clock::lua_now!(),
    r#"
-- KEYS[1] {ns}:reconcile:dead; ARGV[1] the meeting's dedup identity.
local n = tonumber(string.match(redis.call('HGET', KEYS[1], ARGV[1]) or '', '^(%d+):') or '0') + 1
redis.call('HSET', KEYS[1], ARGV[1], n .. ':' .. now)
return n
"#
);

/// A `hookstream.reconcile` entry about the meeting `dedup_id` was dead-lettered: one more in a
/// row in `key` (`{ns}:reconcile:dead`, [`shared::keys::Keys::reconcile_dead`]): meeting (its
/// reconcile entries' dedup identity) → `"<dead entries in a row>:<when the last died, Unix ms
/// on Redis's clock>"`. The reconciler holds such a meeting back for a delay that doubles with
/// each dead entry (SPEC §4.4), and forgets it once a pass finds it matching its calendar.
pub async fn record_dead(con: &mut Conn, key: &str, dedup_id: &str) -> RedisResult<u64> {
    redis::Script::new(DEAD_SCRIPT).key(key).arg(dedup_id).invoke_async(con).await
}

/// Parses a `{ns}:reconcile:dead` value: dead entries in a row and when the last died (Unix ms).
pub fn parse_dead(value: &str) -> Option<(u32, u64)> {
    let (n, at) = value.split_once(':')?;
    Some((n.parse().ok()?, at.parse().ok()?))
}

/// The payload of a `hookstream.reconcile` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct ReconcilePayload {
    pub api: ApiVersion,
    pub calendar_id: String,
    pub event_id: String,
    #[serde(default)]
    pub series_id: Option<String>,
}

impl ReconcilePayload {
    /// Parses and checks the payload: v2 ids are UUIDs, a v1 event id is not empty.
    pub fn parse(event: &Event) -> Result<Self, HandlerError> {
        let payload: Self = parse_payload(event)?;
        match payload.api {
            ApiVersion::V2 => {
                require_uuid("calendar_id", &payload.calendar_id)?;
                require_uuid("event_id", &payload.event_id)?;
                if let Some(series_id) = &payload.series_id {
                    require_uuid("series_id", series_id)?;
                }
            }
            ApiVersion::V1 if payload.event_id.trim().is_empty() => {
                return Err(HandlerError::permanent(format!("malformed {} payload: the event_id is empty", event.name)))
            }
            ApiVersion::V1 => {}
        }
        Ok(payload)
    }

    /// The meeting's key: the one a webhook about it has, so both share its lock.
    pub fn meeting_key(&self) -> String {
        match self.api {
            ApiVersion::V1 => format!("v1:{}", self.event_id),
            ApiVersion::V2 => format!("v2:{}:{}", self.calendar_id, self.event_id),
        }
    }
}

/// Handles `hookstream.reconcile` entries with the calendar handlers' own reads and decisions.
pub struct Reconcile {
    v1: Arc<SyncEvents>,
    v2: Arc<Calendar>,
}

impl Reconcile {
    pub fn new(v1: Arc<SyncEvents>, v2: Arc<Calendar>) -> Self {
        Self { v1, v2 }
    }
}

impl Handler for Reconcile {
    fn handle<'a>(&'a self, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(async move {
            let p = ReconcilePayload::parse(event)?;
            match p.api {
                ApiVersion::V1 => self.v1.sync_one(&p.event_id).await,
                ApiVersion::V2 => self.v2.decide_one(&p.calendar_id, p.series_id.as_deref(), &p.event_id).await,
            }
        })
    }

    fn meetings(&self, event: &Event) -> Result<Vec<Meeting>, HandlerError> {
        let p = ReconcilePayload::parse(event)?;
        Ok(vec![Meeting { key: p.meeting_key(), payload: Vec::new() }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: &str) -> Event {
        Event { id: "1-0".into(), name: EVENT.into(), dedup_id: "d".into(), payload: payload.as_bytes().to_vec() }
    }

    #[test]
    fn payloads() {
        let cal = "647da78e-783d-4a7a-be5c-117ad3b10d5c";
        let ev = "ad307589-17b9-4f8a-9489-6b4c48f0c40d";
        let v2 = ReconcilePayload::parse(&event(&format!(r#"{{"api":"v2","calendar_id":"{cal}","event_id":"{ev}"}}"#)))
            .expect("valid");
        assert_eq!(v2.meeting_key(), format!("v2:{cal}:{ev}"));
        let v1 =
            ReconcilePayload::parse(&event(r#"{"api":"v1","calendar_id":"c-1","event_id":"e-1"}"#)).expect("valid");
        assert_eq!(v1.meeting_key(), "v1:e-1");
        for bad in [
            r#"{"api":"v3","calendar_id":"c","event_id":"e"}"#,
            r#"{"api":"v2","calendar_id":"c","event_id":"e"}"#,
            r#"{"api":"v1","calendar_id":"c","event_id":" "}"#,
            r#"{"api":"v1","calendar_id":"c"}"#,
            r#"[1]"#,
        ] {
            let err = ReconcilePayload::parse(&event(bad)).expect_err(bad);
            assert!(matches!(err, HandlerError::Permanent(_)), "{bad}");
        }
    }
}
