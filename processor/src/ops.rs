//! Operator tools behind `processor dead …` and `processor status`, and consumer reaping.
//!
//! Every function returns what it did (and the text to print) instead of printing, so tests can
//! call them directly; `main` prints and picks the exit code: 0 done, 1 nothing matched,
//! 64 bad arguments.

use crate::replies::{Consumers, Entries, PendingRows, StreamEntry};
use crate::stream::{parse_id, DEAD_FIELDS};
use redis::streams::StreamInfoGroupsReply;
use redis::{RedisResult, Script};
use shared::conn::Conn;
use shared::keys::Keys;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A bad command-line argument (exit 64).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadArgs(pub String);

/// Parses `7d`, `12h`, `30m`, `45s` (a whole number and a unit).
pub fn parse_duration(text: &str) -> Result<Duration, BadArgs> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| BadArgs(format!("{text:?} is not a duration like 7d, 12h, 30m or 45s")))?;
    let secs = match unit {
        "d" => n.checked_mul(86_400),
        "h" => n.checked_mul(3_600),
        "m" => n.checked_mul(60),
        "s" => Some(n),
        _ => None,
    }
    .ok_or_else(|| BadArgs(format!("{text:?} is not a duration like 7d, 12h, 30m or 45s")))?;
    Ok(Duration::from_secs(secs))
}

/// Checks a stream id argument (`1716200000000-0`).
pub fn check_id(id: &str) -> Result<(), BadArgs> {
    match id.split_once('-').and_then(|_| parse_id(id)) {
        Some(_) => Ok(()),
        None => Err(BadArgs(format!("{id:?} is not a stream entry id like 1716200000000-0"))),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// One dead entry: id and fields in stream order.
#[derive(Debug, Clone)]
pub struct DeadEntry {
    pub id: String,
    pub fields: Vec<(String, Vec<u8>)>,
    /// The partition whose dead stream holds it (0 without partitions).
    pub partition: usize,
}

impl DeadEntry {
    pub fn get(&self, name: &str) -> Option<String> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

impl From<StreamEntry> for DeadEntry {
    fn from(e: StreamEntry) -> Self {
        Self { id: e.id, fields: e.fields.unwrap_or_default(), partition: 0 }
    }
}

/// The dead stream and the tools on it.
pub struct Ops {
    pub keys: Keys,
    pub group: String,
    con: Conn,
}

const REPLAY_SCRIPT: &str = r#"
-- KEYS[1] dead stream, KEYS[2] events stream; ARGV[1] dead entry id; ARGV[2..] dead-letter field names
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return false
end
local skip = {}
for i = 2, #ARGV do skip[ARGV[i]] = true end
local fields = found[1][2]
local keep = {}
for i = 1, #fields, 2 do
  if not skip[fields[i]] then
    keep[#keep + 1] = fields[i]
    keep[#keep + 1] = fields[i + 1]
  end
end
if #keep == 0 then
  return redis.error_reply('dead entry ' .. ARGV[1] .. ' has no original fields')
end
local id = redis.call('XADD', KEYS[2], '*', unpack(keep))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
"#;

const REAP_SCRIPT: &str = r#"
-- KEYS[1] stream; ARGV[1] group, ARGV[2] consumer
-- Deletes the consumer only while it has no pending entry: XGROUP DELCONSUMER would drop its
-- pending entries from the group, and they would never be processed.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"#;

impl Ops {
    pub fn new(keys: Keys, group: String, con: Conn) -> Self {
        Self { keys, group, con }
    }

    fn con(&self) -> Conn {
        self.con.clone()
    }

    fn dead_entry(&self, e: StreamEntry) -> DeadEntry {
        DeadEntry { partition: self.keys.partition, ..DeadEntry::from(e) }
    }

    /// Dead entries, newest first: at most `count`, only `event` when given.
    pub async fn dead_list(&self, count: usize, event: Option<&str>) -> RedisResult<Vec<DeadEntry>> {
        let mut out = Vec::new();
        let mut end = "+".to_string();
        loop {
            let page: Entries = redis::cmd("XREVRANGE")
                .arg(&self.keys.dead)
                .arg(&end)
                .arg("-")
                .arg("COUNT")
                .arg(500)
                .query_async(&mut self.con())
                .await?;
            let page: Vec<DeadEntry> = page.0.into_iter().map(|e| self.dead_entry(e)).collect();
            let Some(last) = page.last() else { break };
            end = format!("({}", last.id);
            let full = page.len() < 500;
            for entry in page {
                if event.is_none_or(|e| entry.get("event").as_deref() == Some(e)) {
                    out.push(entry);
                    if out.len() >= count {
                        return Ok(out);
                    }
                }
            }
            if full {
                break;
            }
        }
        Ok(out)
    }

    pub async fn dead_show(&self, id: &str) -> RedisResult<Option<DeadEntry>> {
        let found: Entries =
            redis::cmd("XRANGE").arg(&self.keys.dead).arg(id).arg(id).query_async(&mut self.con()).await?;
        Ok(found.0.into_iter().next().map(|e| self.dead_entry(e)))
    }

    /// Every dead entry id, oldest first, only `event` when given.
    pub async fn dead_ids(&self, event: Option<&str>) -> RedisResult<Vec<String>> {
        let mut all = self.dead_list(usize::MAX, event).await?;
        all.reverse();
        Ok(all.into_iter().map(|e| e.id).collect())
    }

    /// Moves one dead entry back to `{ns}:events` with its original fields, atomically (one
    /// script): afterwards it is in exactly one of the two streams. `None` when no such entry.
    pub async fn replay_one(&self, id: &str) -> RedisResult<Option<String>> {
        let script = Script::new(REPLAY_SCRIPT);
        let mut invocation = script.key(&self.keys.dead);
        invocation.key(&self.keys.events).arg(id);
        for field in DEAD_FIELDS {
            invocation.arg(*field);
        }
        invocation.invoke_async(&mut self.con()).await
    }

    /// Replays `ids` one by one; `before_each(n)` runs before the n-th (tests use it to stop a
    /// replay half-way). Returns the ids that moved, as (dead id, new id).
    pub async fn replay<E>(
        &self,
        ids: &[String],
        mut before_each: impl FnMut(usize) -> Result<(), E>,
    ) -> Result<Vec<(String, String)>, ReplayError<E>> {
        let mut moved = Vec::new();
        for (n, id) in ids.iter().enumerate() {
            before_each(n).map_err(|e| ReplayError::Interrupted(moved.len(), e))?;
            if let Some(new_id) = self.replay_one(id).await.map_err(|e| ReplayError::Redis(moved.len(), e))? {
                moved.push((id.clone(), new_id));
            }
        }
        Ok(moved)
    }

    /// Deletes dead entries that died more than `age` ago; how many.
    pub async fn purge_older_than(&self, age: Duration) -> RedisResult<u64> {
        // Saturating: an age longer than since the epoch purges nothing (never a wrapped value).
        let cutoff = now_ms().saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
        redis::cmd("XTRIM")
            .arg(&self.keys.dead)
            .arg("MINID")
            .arg(format!("{cutoff}-0"))
            .query_async(&mut self.con())
            .await
    }

    /// Deletes the given dead entries; how many existed.
    pub async fn purge_ids(&self, ids: &[String]) -> RedisResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        redis::cmd("XDEL").arg(&self.keys.dead).arg(ids).query_async(&mut self.con()).await
    }

    /// Deletes consumers of the group that have no pending entry and have been idle longer than
    /// `idle` (never `keep`, this process's own name). Returns the names deleted.
    pub async fn reap_consumers(&self, idle: Duration, keep: &str) -> RedisResult<Vec<String>> {
        let consumers = match self.consumers().await {
            Ok(c) => c,
            Err(err) if err.code() == Some("NOGROUP") => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let script = Script::new(REAP_SCRIPT);
        let mut reaped = Vec::new();
        for c in consumers {
            if c.name == keep || c.pending > 0 || c.idle < idle {
                continue;
            }
            let deleted: i64 =
                script.key(&self.keys.events).arg(&self.group).arg(&c.name).invoke_async(&mut self.con()).await?;
            if deleted == 1 {
                reaped.push(c.name);
            }
        }
        Ok(reaped)
    }

    /// XINFO CONSUMERS of the group.
    pub async fn consumers(&self) -> RedisResult<Vec<ConsumerInfo>> {
        let reply: Consumers = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&self.keys.events)
            .arg(&self.group)
            .query_async(&mut self.con())
            .await?;
        Ok(reply.0)
    }

    /// The numbers behind `processor status`, as text for a person.
    pub async fn status(&self, reap_after: Duration) -> RedisResult<String> {
        let (stream_len, dead_len) = crate::stream::lengths(&mut self.con(), &self.keys).await?;
        let mut out = String::new();
        let _ = writeln!(out, "stream  {}  {}", self.keys.events, entries(stream_len));
        let _ = writeln!(out, "dead    {}  {}", self.keys.dead, entries(dead_len));
        let groups: Option<StreamInfoGroupsReply> =
            redis::cmd("XINFO").arg("GROUPS").arg(&self.keys.events).query_async(&mut self.con()).await.ok();
        let Some(group) = groups.and_then(|g| g.groups.into_iter().find(|g| g.name == self.group)) else {
            let _ = writeln!(out, "group   {}  does not exist yet (no processor has started)", self.group);
            return Ok(out);
        };
        let lag = group.lag.map(|l| l.to_string()).unwrap_or_else(|| "unknown".into());
        let _ = writeln!(
            out,
            "group   {}  lag {lag} (not yet delivered)  pending {} (delivered, not acked)  last delivered {}",
            self.group, group.pending, group.last_delivered_id
        );
        let consumers = self.consumers().await?;
        let _ = writeln!(out, "\n{:<32} {:>8} {:>22} {:>12}", "consumer", "pending", "oldest pending age", "idle");
        let now = now_ms();
        for c in &consumers {
            let oldest: PendingRows = redis::cmd("XPENDING")
                .arg(&self.keys.events)
                .arg(&self.group)
                .arg("-")
                .arg("+")
                .arg(1)
                .arg(&c.name)
                .query_async(&mut self.con())
                .await?;
            let age = oldest
                .0
                .first()
                .and_then(|row| parse_id(&row.id))
                .map(|(ms, _)| human(Duration::from_millis(now.saturating_sub(ms))))
                .unwrap_or_else(|| "-".into());
            let mark = if c.pending == 0 && c.idle >= reap_after { "  (idle: will be reaped)" } else { "" };
            let _ = writeln!(out, "{:<32} {:>8} {:>22} {:>12}{mark}", c.name, c.pending, age, human(c.idle));
        }
        if consumers.is_empty() {
            let _ = writeln!(out, "(no consumers)");
        }
        Ok(out)
    }
}

/// The partition count recorded for namespace `ns` (`{ns}:partitions`), if any.
pub async fn recorded_partitions(con: &mut Conn, ns: &str) -> RedisResult<Option<usize>> {
    let stored: Option<String> = redis::cmd("GET").arg(&Keys::new(ns).layout).query_async(con).await?;
    Ok(stored.and_then(|s| s.parse().ok()))
}

/// Why `processor repartition` refused.
#[derive(Debug, thiserror::Error)]
pub enum RepartitionError {
    #[error("{0}")]
    NotDrained(String),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// `processor repartition N`: records `new` partitions for namespace `ns`, only when every
/// stream of the current layout is drained — nothing undelivered (lag 0) and nothing pending
/// in any consumer group, and an empty dead stream — so no event is left where the new layout
/// would never look. Every ingress must be stopped first (an append after the check would land
/// in the old layout); processors are restarted with the new `PARTITIONS` afterwards.
pub async fn repartition(con: &mut Conn, ns: &str, new: usize) -> Result<String, RepartitionError> {
    let old = recorded_partitions(con, ns).await?.unwrap_or(1);
    if old == new {
        return Ok(format!("the namespace already has {new} partition(s); nothing to do\n"));
    }
    for keys in shared::keys::Partitions::new(ns, old).all() {
        let groups: RedisResult<StreamInfoGroupsReply> =
            redis::cmd("XINFO").arg("GROUPS").arg(&keys.events).query_async(con).await;
        let groups = match groups {
            Ok(groups) => groups.groups,
            Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => Vec::new(),
            Err(err) => return Err(err.into()),
        };
        let length: u64 = redis::cmd("XLEN").arg(&keys.events).query_async(con).await?;
        if groups.is_empty() && length > 0 {
            return Err(RepartitionError::NotDrained(format!(
                "{} holds {length} entries and no consumer group has read them; start the processors and let them drain it",
                keys.events
            )));
        }
        for group in &groups {
            if group.pending > 0 || group.lag != Some(0) {
                let lag = group.lag.map(|l| l.to_string()).unwrap_or_else(|| "unknown".into());
                return Err(RepartitionError::NotDrained(format!(
                    "{} group {}: lag {lag}, pending {}; stop every ingress and let the processors finish first",
                    keys.events, group.name, group.pending
                )));
            }
        }
        let dead: u64 = redis::cmd("XLEN").arg(&keys.dead).query_async(con).await?;
        if dead > 0 {
            return Err(RepartitionError::NotDrained(format!(
                "{} holds {dead} dead entries; replay or purge them first (processor dead …)",
                keys.dead
            )));
        }
    }
    let () = redis::cmd("SET").arg(&Keys::new(ns).layout).arg(new).query_async(con).await?;
    Ok(format!(
        "partitions: {old} -> {new}; the old streams are drained. Start every ingress and processor with PARTITIONS={new}.\n"
    ))
}

pub use crate::replies::ConsumerInfo;

/// Why a replay stopped before the end; the number of entries moved until then.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError<E> {
    #[error("replay interrupted after {0} entries")]
    Interrupted(usize, E),
    #[error("Redis failed after {0} entries: {1}")]
    Redis(usize, redis::RedisError),
}

/// `1 entry`, `2 entries`.
fn entries(n: u64) -> String {
    if n == 1 {
        "1 entry".into()
    } else {
        format!("{n} entries")
    }
}

/// `1d 2h`, `3h 4m`, `5m 6s`, `7s`, `120ms`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{s}s"),
        60..=3_599 => format!("{}m {}s", s / 60, s % 60),
        3_600..=86_399 => format!("{}h {}m", s / 3_600, (s % 3_600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3_600),
    }
}

/// The `dead list` table; `partitions`: with a partition column (the namespace has several).
pub fn format_list(entries: &[DeadEntry], partitions: bool) -> String {
    let column = |p: &str| if partitions { format!("{p:<10} ") } else { String::new() };
    let mut out = format!(
        "{}{:<20} {:<26} {:>10} {:<24} {}\n",
        column("partition"),
        "id",
        "event",
        "deliveries",
        "failed_at",
        "error"
    );
    for e in entries {
        let error: String = e.get("error").unwrap_or_default().chars().take(120).collect();
        let _ = writeln!(
            out,
            "{}{:<20} {:<26} {:>10} {:<24} {}",
            column(&e.partition.to_string()),
            e.id,
            e.get("event").unwrap_or_default(),
            e.get("deliveries").unwrap_or_default(),
            e.get("failed_at").unwrap_or_default(),
            error.replace('\n', " ")
        );
    }
    out
}

/// The `dead show` text: every field, the payload pretty-printed when it is JSON.
pub fn format_entry(entry: &DeadEntry) -> String {
    let mut out = format!("id: {}\n", entry.id);
    for (k, v) in &entry.fields {
        if k == shared::entry::PAYLOAD {
            continue;
        }
        let _ = writeln!(out, "{k}: {}", String::from_utf8_lossy(v));
    }
    if let Some((_, payload)) = entry.fields.iter().find(|(k, _)| k == shared::entry::PAYLOAD) {
        let pretty = serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned());
        let _ = writeln!(out, "payload:\n{pretty}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        for bad in ["", "7", "d", "7w", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids() {
        assert!(check_id("1716200000000-0").is_ok());
        for bad in ["1716200000000", "abc-0", "1-x", "", "-"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(120)), "120ms");
        assert_eq!(human(Duration::from_secs(7)), "7s");
        assert_eq!(human(Duration::from_secs(62)), "1m 2s");
        assert_eq!(human(Duration::from_secs(3_660)), "1h 1m");
        assert_eq!(human(Duration::from_secs(90_000)), "1d 1h");
    }
}
