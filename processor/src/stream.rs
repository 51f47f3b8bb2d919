//! How the processor uses the Redis stream.
//!
//! - **Group.** Every replica reads `{ns}:events` through one consumer group (`CONSUMER_GROUP`),
//!   each under its own consumer name. XREADGROUP `>` hands each new entry to exactly one
//!   consumer and records it in the group's pending entries list (PEL) under that consumer until
//!   XACK removes it. A group that is missing (first start, or Redis lost its data) is created
//!   at id `0` with MKSTREAM, so nothing already in the stream is skipped.
//! - **Own pending first.** A replica that restarts under the same name first re-reads its own
//!   PEL (XREADGROUP from id `0`), the entries it had taken but not acked.
//! - **Reclaim.** Entries idle longer than `CLAIM_IDLE_MS` in any consumer's PEL (its owner
//!   died) are taken over with XAUTOCLAIM; the cursor is followed to the end, and ids whose
//!   entries were deleted from the stream are dropped from the PEL by Redis and reported.
//! - **Lease.** While an entry is held (waiting for a slot, or being handled) its owner resets
//!   the entry's idle time (XCLAIM … JUSTID with min-idle 0, which does not count a delivery)
//!   every `CLAIM_IDLE_MS / 3`, so a slow handler is never mistaken for a dead one. One script
//!   call leases every held entry older than that, and only those this consumer still owns, so
//!   it never steals an entry another replica has reclaimed.
//! - **Deliveries.** The PEL counts how often each entry was delivered; past `MAX_DELIVERIES`
//!   an entry is a poison entry and goes to the dead stream without running the handler.
//! - **Dead letters.** XADD to `{ns}:dead` and XACK in one MULTI/EXEC: an entry is either still
//!   pending or dead, never neither.
//! - **Trim.** XTRIM MINID ~ the oldest of every group's oldest pending id, every group's
//!   last-delivered id, and now − retention: never an entry some group has not acked.

use redis::aio::ConnectionManager;
use redis::streams::StreamInfoGroupsReply;
use redis::{RedisResult, Script, Value};
use shared::keys::Keys;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An entry's fields, in stream order.
pub type Fields = Vec<(String, Vec<u8>)>;

/// An entry as read from the stream; `fields` is `None` when the entry was deleted from the
/// stream while still pending.
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub id: String,
    pub fields: Option<Fields>,
}

/// The fields a dead-letter entry adds to the original ones.
pub const DEAD_FIELDS: &[&str] = &["original_id", "error", "attempts", "deliveries", "failed_at", "consumer"];

const LEASE_SCRIPT: &str = r#"
-- KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3..] entry ids
-- Resets the idle time of each entry this consumer still owns; returns the ids it does not.
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 0 or p[1][2] ~= ARGV[2] then
    lost[#lost + 1] = ARGV[i]
  else
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  end
end
return lost
"#;

/// The stream as one consumer of one group sees it.
#[derive(Clone)]
pub struct Stream {
    pub keys: Keys,
    pub group: String,
    pub consumer: String,
    con: ConnectionManager,
    lease_script: Script,
}

/// Whether an error is "the group (or the stream) does not exist".
pub fn is_nogroup(err: &redis::RedisError) -> bool {
    err.code() == Some("NOGROUP")
}

/// A Redis reply value as text (bulk or simple string, integer).
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn bytes(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

/// Parses `[[id, [field, value, …] | nil], …]`.
fn parse_entries(v: Value) -> Vec<RawEntry> {
    let Value::Array(items) = v else { return Vec::new() };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut pair) = item else { return None };
            if pair.len() < 2 {
                return None;
            }
            let fields_value = pair.pop()?;
            let id = text(&pair.pop()?)?;
            let fields = match fields_value {
                Value::Array(flat) => {
                    let mut fields = Vec::with_capacity(flat.len() / 2);
                    let mut it = flat.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        fields.push((text(&k).unwrap_or_default(), bytes(v)));
                    }
                    Some(fields)
                }
                Value::Map(map) => {
                    Some(map.into_iter().map(|(k, v)| (text(&k).unwrap_or_default(), bytes(v))).collect())
                }
                _ => None,
            };
            Some(RawEntry { id, fields })
        })
        .collect()
}

/// `ms-seq` as a pair, for ordering stream ids.
pub fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// XLEN of the events and the dead stream, in one round trip.
pub async fn lengths(con: &mut ConnectionManager, keys: &Keys) -> RedisResult<(u64, u64)> {
    redis::pipe().cmd("XLEN").arg(&keys.events).cmd("XLEN").arg(&keys.dead).query_async(con).await
}

/// The numbers behind the gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    pub stream_length: u64,
    pub dead_length: u64,
    pub group_pending: u64,
    pub group_lag: u64,
}

impl Stream {
    pub fn new(keys: Keys, group: String, consumer: String, con: ConnectionManager) -> Self {
        Self { keys, group, consumer, con, lease_script: Script::new(LEASE_SCRIPT) }
    }

    fn con(&self) -> ConnectionManager {
        self.con.clone()
    }

    /// The shared command connection (for the operator tools).
    pub fn connection(&self) -> ConnectionManager {
        self.con.clone()
    }

    /// XGROUP CREATE … 0 MKSTREAM; an existing group is fine.
    pub async fn ensure_group(&self) -> RedisResult<()> {
        let created: RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.events)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.con())
            .await;
        match created {
            Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// XREADGROUP from `from` (`>` for new entries, an id for this consumer's pending ones), on
    /// `reader`, a connection used for nothing else (a blocking read stalls its connection).
    pub async fn read(
        &self,
        reader: &mut ConnectionManager,
        from: &str,
        count: usize,
        block: Option<Duration>,
    ) -> RedisResult<Vec<RawEntry>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(&self.group).arg(&self.consumer).arg("COUNT").arg(count);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.keys.events).arg(from);
        let reply: Value = cmd.query_async(reader).await?;
        let streams = match reply {
            Value::Array(streams) => streams,
            Value::Map(map) => map.into_iter().map(|(k, v)| Value::Array(vec![k, v])).collect(),
            _ => return Ok(Vec::new()),
        };
        Ok(streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .flat_map(parse_entries)
            .collect())
    }

    /// Delivery counts of `ids` in this consumer's PEL.
    pub async fn delivery_counts(&self, ids: &[&str]) -> RedisResult<HashMap<String, u64>> {
        let (Some(first), Some(last)) =
            (ids.iter().min_by_key(|id| parse_id(id)), ids.iter().max_by_key(|id| parse_id(id)))
        else {
            return Ok(HashMap::new());
        };
        let reply: Value = redis::cmd("XPENDING")
            .arg(&self.keys.events)
            .arg(&self.group)
            .arg(*first)
            .arg(*last)
            .arg(ids.len().max(1) * 2)
            .arg(&self.consumer)
            .query_async(&mut self.con())
            .await?;
        let mut counts = HashMap::new();
        if let Value::Array(rows) = reply {
            for row in rows {
                if let Value::Array(cols) = row {
                    if let (Some(id), Some(Value::Int(n))) = (cols.first().and_then(text), cols.get(3)) {
                        counts.insert(id, *n as u64);
                    }
                }
            }
        }
        Ok(counts)
    }

    pub async fn ack(&self, id: &str) -> RedisResult<()> {
        self.ack_many(&[id]).await
    }

    /// One XACK for many ids.
    pub async fn ack_many(&self, ids: &[&str]) -> RedisResult<()> {
        redis::cmd("XACK").arg(&self.keys.events).arg(&self.group).arg(ids).query_async::<i64>(&mut self.con()).await?;
        Ok(())
    }

    /// XADD `{ns}:dead` (original fields + the reason) and XACK, in one MULTI/EXEC.
    pub async fn dead_letter(
        &self,
        entry: &RawEntry,
        error: &str,
        attempts: u32,
        deliveries: u64,
    ) -> RedisResult<String> {
        let failed_at = shared::entry::timestamp_now();
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&self.keys.dead).arg("*");
        for (field, value) in entry.fields.iter().flatten() {
            if !DEAD_FIELDS.contains(&field.as_str()) {
                xadd.arg(field).arg(value.as_slice());
            }
        }
        xadd.arg("original_id")
            .arg(&entry.id)
            .arg("error")
            .arg(error)
            .arg("attempts")
            .arg(attempts)
            .arg("deliveries")
            .arg(deliveries)
            .arg("failed_at")
            .arg(&failed_at)
            .arg("consumer")
            .arg(&self.consumer);
        let mut xack = redis::cmd("XACK");
        xack.arg(&self.keys.events).arg(&self.group).arg(&entry.id);
        let (dead_id, _acked): (String, i64) =
            redis::pipe().atomic().add_command(xadd).add_command(xack).query_async(&mut self.con()).await?;
        Ok(dead_id)
    }

    /// Resets the idle time of the entries this consumer still owns, in one script call;
    /// returns the ids it no longer owns (another consumer reclaimed them).
    pub async fn lease(&self, ids: &[&str]) -> RedisResult<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.lease_script.key(&self.keys.events);
        invocation.arg(&self.group).arg(&self.consumer).arg(ids);
        invocation.invoke_async(&mut self.con()).await
    }

    /// One XAUTOCLAIM call: `(next cursor, claimed entries, deleted ids)`.
    pub async fn autoclaim(
        &self,
        min_idle: Duration,
        cursor: &str,
        count: usize,
    ) -> RedisResult<(String, Vec<RawEntry>, Vec<String>)> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.keys.events)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(min_idle.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.con())
            .await?;
        let Value::Array(mut parts) = reply else { return Ok(("0-0".into(), Vec::new(), Vec::new())) };
        let deleted = if parts.len() >= 3 {
            match parts.pop() {
                Some(Value::Array(ids)) => ids.iter().filter_map(text).collect(),
                _ => Vec::new(),
            }
        } else {
            Vec::new()
        };
        let claimed = parts.pop().map(parse_entries).unwrap_or_default();
        let next = parts.pop().as_ref().and_then(text).unwrap_or_else(|| "0-0".into());
        Ok((next, claimed, deleted))
    }

    /// The id below which every entry is processed by every group and older than `retention`;
    /// `None` when the stream has no group (nothing is known to be processed).
    pub async fn trim_point(&self, retention: Duration) -> RedisResult<Option<String>> {
        let groups: StreamInfoGroupsReply =
            match redis::cmd("XINFO").arg("GROUPS").arg(&self.keys.events).query_async(&mut self.con()).await {
                Ok(groups) => groups,
                Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
                    return Ok(None); // no such stream
                }
                Err(err) => return Err(err),
            };
        if groups.groups.is_empty() {
            return Ok(None);
        }
        let cutoff_ms = now_ms().saturating_sub(retention.as_millis() as u64);
        let mut oldest = (cutoff_ms, 0u64);
        for group in &groups.groups {
            if let Some(last) = parse_id(&group.last_delivered_id) {
                oldest = oldest.min(last);
            }
            if group.pending > 0 {
                let summary: Value =
                    redis::cmd("XPENDING").arg(&self.keys.events).arg(&group.name).query_async(&mut self.con()).await?;
                if let Value::Array(parts) = summary {
                    if let Some(min) = parts.get(1).and_then(text).and_then(|id| parse_id(&id)) {
                        oldest = oldest.min(min);
                    }
                }
            }
        }
        Ok(Some(format!("{}-{}", oldest.0, oldest.1)))
    }

    /// XTRIM MINID ~ [`Self::trim_point`]; the number of entries removed.
    pub async fn trim(&self, retention: Duration) -> RedisResult<u64> {
        let Some(min_id) = self.trim_point(retention).await? else { return Ok(0) };
        redis::cmd("XTRIM").arg(&self.keys.events).arg("MINID").arg("~").arg(min_id).query_async(&mut self.con()).await
    }

    /// Stream length, dead length, and this group's pending count and lag.
    pub async fn gauges(&self) -> RedisResult<Gauges> {
        let (stream_length, dead_length) = lengths(&mut self.con(), &self.keys).await?;
        let mut gauges = Gauges { stream_length, dead_length, ..Gauges::default() };
        let groups: RedisResult<StreamInfoGroupsReply> =
            redis::cmd("XINFO").arg("GROUPS").arg(&self.keys.events).query_async(&mut self.con()).await;
        if let Some(group) = groups.ok().and_then(|g| g.groups.into_iter().find(|g| g.name == self.group)) {
            gauges.group_pending = group.pending as u64;
            gauges.group_lag = group.lag.unwrap_or(0) as u64;
        }
        Ok(gauges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_numerically() {
        assert!(parse_id("1000-2") < parse_id("1000-10"));
        assert!(parse_id("999-99") < parse_id("1000-0"));
        assert_eq!(parse_id("5"), Some((5, 0)));
        assert_eq!(parse_id("x-1"), None);
    }

    #[test]
    fn entries_parse_with_deleted_ones() {
        let v = Value::Array(vec![
            Value::Array(vec![
                Value::BulkString(b"1-0".to_vec()),
                Value::Array(vec![Value::BulkString(b"event".to_vec()), Value::BulkString(b"x".to_vec())]),
            ]),
            Value::Array(vec![Value::BulkString(b"2-0".to_vec()), Value::Nil]),
        ]);
        let entries = parse_entries(v);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].fields.as_deref(), Some(&[("event".to_string(), b"x".to_vec())][..]));
        assert!(entries[1].fields.is_none());
    }
}
