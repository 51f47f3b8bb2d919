//! Calendar connections (SPEC §4.6): the connection status of every v2 calendar, kept in
//! `{ns}:calendars` (a hash: calendar id → `{"status", "platform", "message", "since"}`), from
//! the `calendar.connection_*` webhooks and from each reconcile pass's calendar list — so a
//! lost connection webhook is repaired too.
//!
//! A calendar whose OAuth access expired or was revoked stops syncing: its webhooks stop and
//! its bots stop matching it. Leaving `active` logs one `warn` line, returning one `info` line
//! (logged by the replica whose write changed the status: the change is one script). A
//! calendar that is created or returns to `active` is queued in `{ns}:reconcile:now`, a set the
//! reconciler of every replica polls, so that calendar is reconciled at once — the webhooks sent
//! while it was broken may never come.

use redis::RedisResult;
use serde::{Deserialize, Serialize};
use shared::conn::Conn;
use shared::keys::Keys;

/// The connection statuses Meeting BaaS reports; any other is kept as `error` (the label set of
/// `hookstream_calendar_connections` stays these four).
pub const STATUSES: [&str; 4] = ["active", "error", "revoked", "permission_denied"];

/// One calendar's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub status: String,
    #[serde(default)]
    pub platform: String,
    #[serde(default)]
    pub message: String,
    /// When it entered this status (RFC 3339, Redis's clock).
    #[serde(default)]
    pub since: String,
}

/// `status` as one of [`STATUSES`].
pub fn normalise(status: &str) -> &'static str {
    STATUSES.iter().find(|s| s.eq_ignore_ascii_case(status.trim())).copied().unwrap_or("error")
}

const RECORD_SCRIPT: &str = r#"
-- KEYS[1] {ns}:calendars; ARGV[1] calendar id, ARGV[2] status, ARGV[3] platform, ARGV[4]
-- message, ARGV[5] now (RFC 3339). Writes the record, keeping `since` while the status stays;
-- returns the previous status ('' for a calendar not known before).
local prev, since = '', ARGV[5]
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local ok, rec = pcall(cjson.decode, old)
  if ok and type(rec) == 'table' and type(rec.status) == 'string' then
    prev = rec.status
    if prev == ARGV[2] and type(rec.since) == 'string' then since = rec.since end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({status = ARGV[2], platform = ARGV[3], message = ARGV[4], since = since}))
return prev
"#;

/// What a record changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The status is what it was.
    Same,
    /// A calendar not known before.
    New,
    /// It left `active` (or is new and not active).
    LeftActive,
    /// It returned to `active`.
    Returned,
    /// From one not-active status to another.
    Other,
}

/// The connection records of a namespace.
#[derive(Clone)]
pub struct Connections {
    con: Conn,
    key: String,
    /// `{ns}:reconcile:now`, when the reconciler is on: where a calendar back to `active` is
    /// queued to be reconciled at once.
    reconcile_now: Option<String>,
}

impl Connections {
    /// The records of the namespace of `keys`; `reconcile` says whether the reconciler is on.
    pub fn new(con: Conn, keys: &Keys, reconcile: bool) -> Self {
        Self { con, key: keys.calendars.clone(), reconcile_now: reconcile.then(|| keys.reconcile_now.clone()) }
    }

    /// Records calendar `id`'s connection: logs a change of status, and — when `catch_up` (a
    /// webhook said so; a pass reconciles the calendars it lists anyway) — queues a calendar
    /// that is new and active, or back to active, to be reconciled at once.
    pub async fn record(
        &self,
        id: &str,
        status: &str,
        platform: &str,
        message: &str,
        catch_up: bool,
    ) -> RedisResult<Change> {
        let status = normalise(status);
        let prev: String = redis::Script::new(RECORD_SCRIPT)
            .key(&self.key)
            .arg(id)
            .arg(status)
            .arg(platform)
            .arg(message)
            .arg(crate::clock::timestamp())
            .invoke_async(&mut self.con.clone())
            .await?;
        let change = match (prev.as_str(), status) {
            (p, s) if p == s => Change::Same,
            ("", "active") => Change::New,
            (_, "active") => Change::Returned,
            ("" | "active", _) => Change::LeftActive,
            _ => Change::Other,
        };
        match change {
            Change::LeftActive | Change::Other => tracing::warn!(
                calendar_id = %id,
                status,
                previous = %prev,
                message = %message,
                "calendar connection is not active: its webhooks stop and its bots drift until the user \
                 re-authorises it"
            ),
            Change::Returned => {
                tracing::info!(calendar_id = %id, previous = %prev, "calendar connection active again; reconciling it now")
            }
            Change::New | Change::Same => {}
        }
        if catch_up && matches!(change, Change::New | Change::Returned) {
            if let Some(queue) = &self.reconcile_now {
                let _: i64 = redis::cmd("SADD").arg(queue).arg(id).query_async(&mut self.con.clone()).await?;
            }
        }
        Ok(change)
    }

    /// Forgets calendar `id` (its connection was deleted).
    pub async fn remove(&self, id: &str) -> RedisResult<bool> {
        let removed: i64 = redis::cmd("HDEL").arg(&self.key).arg(id).query_async(&mut self.con.clone()).await?;
        if removed > 0 {
            tracing::info!(calendar_id = %id, "calendar connection deleted; forgotten");
        }
        Ok(removed > 0)
    }

    /// Every record (a record that cannot be read is left out).
    pub async fn all(&self) -> RedisResult<Vec<(String, Connection)>> {
        all(&mut self.con.clone(), &self.key).await
    }
}

/// Every record of `{ns}:calendars` at `key`, by calendar id.
pub async fn all(con: &mut Conn, key: &str) -> RedisResult<Vec<(String, Connection)>> {
    let raw: Vec<(String, String)> = redis::cmd("HGETALL").arg(key).query_async(con).await?;
    let mut records: Vec<(String, Connection)> =
        raw.into_iter().filter_map(|(id, json)| serde_json::from_str(&json).ok().map(|c| (id, c))).collect();
    records.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(records)
}

/// How many calendars are in each of [`STATUSES`].
pub fn count(records: &[(String, Connection)]) -> [(&'static str, u64); 4] {
    STATUSES.map(|status| (status, records.iter().filter(|(_, c)| normalise(&c.status) == status).count() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_four() {
        assert_eq!(normalise("Active"), "active");
        assert_eq!(normalise("permission_denied"), "permission_denied");
        assert_eq!(normalise("expired-ish"), "error");
        let c = |s: &str| Connection {
            status: s.into(),
            platform: String::new(),
            message: String::new(),
            since: String::new(),
        };
        let records = vec![("a".into(), c("active")), ("b".into(), c("revoked")), ("c".into(), c("revoked"))];
        assert_eq!(count(&records), [("active", 1), ("error", 0), ("revoked", 2), ("permission_denied", 0)]);
    }
}
