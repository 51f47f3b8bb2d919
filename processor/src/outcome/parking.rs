//! Parked retries (SPEC §4.3): entries whose retries must wait longer than a delivery should
//! hold a `CONCURRENCY` slot wait in Redis instead, in the retry set `{ns}:retry` (per
//! partition `{ns:i}:retry`), a sorted set scored by due time (Unix ms, Redis's clock).
//!
//! - **Park.** The worker acks the entry and adds its [`Record`] in one script, after the same
//!   ack-if-owned preamble as the dead letter ([`crate::stream`]): only the consumer whose ack
//!   removed the entry from the pending list parks it, so it is parked at most once per delivery.
//! - **Re-append.** Every replica runs `housekeeping::forward_due` for each partition: one script moves the
//!   due members back to the stream, each as a new entry with its fields plus `attempts`,
//!   `first_attempt_at` and `parked`. The member leaves the set in the same script that appends
//!   it, so whichever replicas race, it is appended exactly once.
//!
//! The shape is asynq's `retry` set and its forwarder script; here the member is the whole
//! record (JSON) rather than a task id beside a hash, so one member is one key's worth of state
//! and `redis-cli ZRANGE {hookstream}:retry 0 -1 WITHSCORES` shows everything.

use crate::replies::StreamEntry;
use serde::{Deserialize, Serialize};
use shared::entry::{ATTEMPTS, FIRST_ATTEMPT_AT, PARKED};

/// One member of the retry set: the entry as it was parked. Numbers are strings, as stream
/// fields are, so the re-append script copies them without a Lua number in between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The entry's id when it was parked (the re-appended entry gets a new one).
    pub id: String,
    pub event: String,
    /// Its fields, in stream order, without `attempts`, `first_attempt_at` and `parked`.
    pub fields: Vec<(String, String)>,
    /// Handler attempts so far, every delivery's.
    pub attempts: String,
    /// When the first attempt began (RFC 3339 UTC).
    pub first_attempt_at: String,
    /// How many times it has been parked, this time included.
    pub parked: String,
    /// The last error.
    pub error: String,
    /// When it was parked (RFC 3339 UTC).
    pub parked_at: String,
    /// The downstream (`meeting_baas`, `forward`) whose open breaker refused it: it is made due
    /// as soon as that breaker closes, whatever its due time ([`crate::downstream::breaker`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits_for: Option<String>,
}

/// What an entry carries from its earlier deliveries (its re-appended fields), if anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub attempts: u32,
    pub first_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    pub parked: u32,
}

impl History {
    /// Reads `attempts`, `first_attempt_at` and `parked`; a field that cannot be read counts as
    /// absent (the entry is then treated as new, never refused for it).
    pub fn of(entry: &StreamEntry) -> Self {
        let get = |name: &str| {
            entry
                .fields
                .iter()
                .flatten()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
                .map(str::to_string)
        };
        Self {
            attempts: get(ATTEMPTS).and_then(|v| v.parse().ok()).unwrap_or(0),
            first_attempt_at: get(FIRST_ATTEMPT_AT)
                .and_then(|v| chrono::DateTime::parse_from_rfc3339(&v).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
            parked: get(PARKED).and_then(|v| v.parse().ok()).unwrap_or(0),
        }
    }
}

impl Record {
    /// The record of `entry` parked after `attempts` attempts in all, the `parked`-th time.
    pub fn new(
        entry: &StreamEntry,
        event: &str,
        attempts: u32,
        first_attempt_at: chrono::DateTime<chrono::Utc>,
        parked: u32,
        error: &str,
    ) -> Self {
        let fields = entry
            .fields
            .iter()
            .flatten()
            .filter(|(k, _)| k != ATTEMPTS && k != FIRST_ATTEMPT_AT && k != PARKED)
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        Self {
            id: entry.id.clone(),
            event: event.to_string(),
            fields,
            attempts: attempts.to_string(),
            first_attempt_at: first_attempt_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            parked: parked.to_string(),
            error: error.chars().take(2_000).collect(),
            parked_at: crate::clock::timestamp(),
            waits_for: None,
        }
    }

    /// The member of the retry set.
    pub fn to_member(&self) -> String {
        // A struct of strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_member(member: &str) -> Option<Self> {
        serde_json::from_str(member).ok()
    }
}

/// How often each replica looks for due entries: a quarter of `RETRY_PARK_INITIAL_MS`, between
/// 50 ms and 1 s (one cheap script per partition when nothing is due).
pub fn poll_every(park_initial: std::time::Duration) -> std::time::Duration {
    (park_initial / 4).clamp(std::time::Duration::from_millis(50), std::time::Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> StreamEntry {
        StreamEntry {
            id: "5-0".into(),
            fields: Some(fields.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()),
        }
    }

    #[test]
    fn a_record_round_trips_and_leaves_its_history_fields_out() {
        let e =
            entry(&[("event", "bot.completed"), ("payload", "{\"a\":\"é\\n\"}"), ("attempts", "3"), ("parked", "1")]);
        let first = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00.000Z").expect("time").to_utc();
        let record = Record::new(&e, "bot.completed", 7, first, 2, "boom");
        assert_eq!(
            record.fields,
            vec![("event".to_string(), "bot.completed".to_string()), ("payload".into(), "{\"a\":\"é\\n\"}".into())]
        );
        assert_eq!((record.attempts.as_str(), record.parked.as_str()), ("7", "2"));
        assert_eq!(record.first_attempt_at, "2026-12-01T10:00:00.000Z");
        assert_eq!(Record::from_member(&record.to_member()), Some(record));
        assert_eq!(Record::from_member("not json"), None);
    }

    #[test]
    fn history_is_read_leniently() {
        let h = History::of(&entry(&[
            ("attempts", "4"),
            ("first_attempt_at", "2026-12-01T10:00:00.000Z"),
            ("parked", "2"),
        ]));
        assert_eq!((h.attempts, h.parked), (4, 2));
        assert!(h.first_attempt_at.is_some());
        assert_eq!(History::of(&entry(&[("attempts", "many"), ("first_attempt_at", "yesterday")])), History::default());
    }
}
