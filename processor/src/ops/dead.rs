//! The dead stream: list, show, replay (atomically, one entry at a time), purge.

use super::Ops;
use crate::replies::{Entries, StreamEntry};
use crate::stream::DEAD_FIELDS;
use redis::{RedisResult, Script};
use std::fmt::Write as _;
use std::time::Duration;

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

impl Ops {
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
    /// A replayed entry starts its retries afresh: its `first_attempt_at` and `parked` from
    /// earlier parks are left out with the dead-letter fields (or the horizon that killed it
    /// would kill it again at its first failure).
    pub async fn replay_one(&self, id: &str) -> RedisResult<Option<String>> {
        let script = Script::new(REPLAY_SCRIPT);
        let mut invocation = script.key(&self.keys.dead);
        invocation.key(&self.keys.events).arg(id);
        for field in DEAD_FIELDS.iter().chain(&[shared::entry::FIRST_ATTEMPT_AT, shared::entry::PARKED]) {
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
        crate::stream::trim_older_than(&mut self.con(), &self.keys.dead, age).await
    }

    /// Deletes the given dead entries; how many existed.
    pub async fn purge_ids(&self, ids: &[String]) -> RedisResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        redis::cmd("XDEL").arg(&self.keys.dead).arg(ids).query_async(&mut self.con()).await
    }
}

/// Why a replay stopped before the end; the number of entries moved until then.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError<E> {
    #[error("replay interrupted after {0} entries")]
    Interrupted(usize, E),
    #[error("Redis failed after {0} entries: {1}")]
    Redis(usize, redis::RedisError),
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
        let error = shorten(&e.get("error").unwrap_or_default().replace('\n', " "), 160);
        let _ = writeln!(
            out,
            "{}{:<20} {:<26} {:>10} {:<24} {}",
            column(&e.partition.to_string()),
            e.id,
            e.get("event").unwrap_or_default(),
            e.get("deliveries").unwrap_or_default(),
            e.get("failed_at").unwrap_or_default(),
            error
        );
    }
    out
}

/// `text` cut to at most `max` characters at a word boundary, with `…` when cut (`dead show`
/// prints the whole error).
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max).collect();
    let cut = head.rfind(' ').filter(|&i| i > max / 2).unwrap_or(head.len());
    format!("{}…", head[..cut].trim_end())
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
    fn errors_are_shortened_at_a_word_boundary() {
        assert_eq!(shorten("short", 160), "short");
        let long = "POST /calendar_events/abc/bot answered 503 Service Unavailable: upstream is down ".repeat(4);
        let cut = shorten(&long, 60);
        assert!(cut.ends_with('…') && cut.chars().count() <= 61, "{cut}");
        assert!(long.starts_with(cut.trim_end_matches('…')), "{cut}");
        assert!(long[cut.trim_end_matches('…').len()..].starts_with(' '), "cut between words: {cut}");
        let no_spaces = "x".repeat(200);
        assert_eq!(shorten(&no_spaces, 10), format!("{}…", "x".repeat(10)));
    }
}
