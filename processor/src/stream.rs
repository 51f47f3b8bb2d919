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
//!   it never steals an entry another replica has reclaimed; the ones it no longer owns are
//!   reported, and their deliveries end without a verdict (see [`crate::delivery`]).
//! - **One owner's verdict.** XACK removes an id from the PEL whoever owns it, so an ack is
//!   always a script that acks only the ids this consumer still owns: a consumer that lost an
//!   entry can never pull it from under the new owner.
//! - **Hand back.** Shutting down, the entries this consumer read ahead and never started (and,
//!   after the grace, the ones it aborted) are made reclaimable at once — XCLAIM to itself with
//!   `IDLE` far past `CLAIM_IDLE_MS` and `JUSTID` (no delivery counted) — so a rolling restart
//!   delays none of them by `CLAIM_IDLE_MS`.
//! - **Deliveries.** The PEL counts how often each entry was delivered; past `MAX_DELIVERIES`
//!   an entry is a poison entry and goes to the dead stream without running the handler. The
//!   count is read per entry (XPENDING id id), never guessed.
//! - **Dead letters.** One script: if this consumer owns the entry, XACK it, and only if that
//!   XACK removed it, XADD the dead copy to `{ns}:dead`. An entry is either still pending or dead,
//!   never neither, and dead at most once — even when the script is sent again after a timeout
//!   whose first send had applied.
//! - **Trim.** XTRIM MINID ~ the oldest of every group's oldest pending id, every group's
//!   last-delivered id, and now − retention: never an entry some group has not acked.

use crate::replies::{AutoClaim, PendingRows, PendingSummary, ReadReply, StreamEntry};
use redis::streams::StreamInfoGroupsReply;
use redis::{RedisResult, Script};
use shared::conn::Conn;
use shared::keys::Keys;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

const ACK_SCRIPT: &str = r#"
-- KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3..] entry ids
-- XACKs the ids this consumer still owns; returns the ids it does not own (acked already, or
-- reclaimed by another consumer, whose verdict it is now).
local mine, lost = {}, {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    mine[#mine + 1] = ARGV[i]
  else
    lost[#lost + 1] = ARGV[i]
  end
end
if #mine > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(mine))
end
return lost
"#;

const HAND_BACK_SCRIPT: &str = r#"
-- KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3] idle ms, ARGV[4..] ids still running
-- Makes every entry pending under this consumer that is not running reclaimable at once: its
-- idle time is set to ARGV[3] (XCLAIM to itself with IDLE and JUSTID: no delivery counted).
-- Returns how many were handed back.
local running = {}
for i = 4, #ARGV do running[ARGV[i]] = true end
local n, start = 0, '-'
while true do
  local rows = redis.call('XPENDING', KEYS[1], ARGV[1], start, '+', 100, ARGV[2])
  if #rows == 0 then break end
  for _, row in ipairs(rows) do
    if not running[row[1]] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, row[1], 'IDLE', ARGV[3], 'JUSTID')
      n = n + 1
    end
  end
  start = '(' .. rows[#rows][1]
end
return n
"#;

/// How idle a handed-back entry looks: past any replica's `CLAIM_IDLE_MS` (30 days).
const HANDED_BACK_IDLE_MS: u64 = 30 * 86_400_000;

/// The start of the scripts that settle one entry (ARGV[1] group, ARGV[2] consumer, ARGV[3] id):
/// ack it if this consumer owns it, and go on only if that ack removed it from the pending
/// list; otherwise answer nil. What follows runs at most once per entry.
macro_rules! ack_if_owned {
    () => {
        r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then
  return false
end
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[3]) == 0 then
  return false
end
"#
    };
}

const DEAD_LETTER_SCRIPT: &str = concat!(
    ack_if_owned!(),
    r#"
-- KEYS[1] stream, KEYS[2] dead stream; ARGV[1] group, ARGV[2] consumer, ARGV[3] entry id,
-- ARGV[4..] the dead entry's fields and values.
-- Acks the entry if this consumer owns it and, only if that ack removed it, adds the dead copy.
-- Returns the dead entry's id, or nil when nothing was done (not owned, or already settled).
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
"#
);

const FAN_OUT_SCRIPT: &str = concat!(
    ack_if_owned!(),
    r#"
-- KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3] entry id, ARGV[4] n, ARGV[5..4+n]
-- the fields and values every new entry shares, then (payload, meeting) for each new entry.
-- Acks the entry if this consumer owns it and, only if that ack removed it, appends one entry
-- per meeting: exactly once, even when sent again. Returns the new ids, or nil.
local n = tonumber(ARGV[4])
local ids = {}
for i = 5 + n, #ARGV, 2 do
  local fields = {}
  for j = 5, 4 + n do
    fields[#fields + 1] = ARGV[j]
  end
  fields[#fields + 1] = 'payload'
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = 'meeting'
  fields[#fields + 1] = ARGV[i + 1]
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', unpack(fields))
end
return ids
"#
);

/// The stream as one consumer of one group sees it.
#[derive(Clone)]
pub struct Stream {
    pub keys: Keys,
    pub group: String,
    pub consumer: String,
    con: Conn,
    lease_script: Script,
    ack_script: Script,
    dead_letter_script: Script,
    fan_out_script: Script,
    hand_back_script: Script,
}

/// Whether an error is "the group (or the stream) does not exist".
pub fn is_nogroup(err: &redis::RedisError) -> bool {
    err.code() == Some("NOGROUP")
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
pub async fn lengths(con: &mut Conn, keys: &Keys) -> RedisResult<(u64, u64)> {
    redis::pipe().cmd("XLEN").arg(&keys.events).cmd("XLEN").arg(&keys.dead).query_async(con).await
}

/// Remembers whether Redis answered last time, so an outage is logged once when it starts and
/// once when it ends, not once per attempt.
#[derive(Default)]
pub struct RedisState {
    down: std::sync::atomic::AtomicBool,
}

impl RedisState {
    pub fn failed(&self, what: &str, err: &redis::RedisError) {
        if !self.down.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tracing::warn!(error = %err, "Redis unreachable ({what}); retrying with backoff");
        }
    }

    pub fn ok(&self) {
        if self.down.swap(false, std::sync::atomic::Ordering::SeqCst) {
            tracing::info!("Redis reachable again");
        }
    }
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
    pub fn new(keys: Keys, group: String, consumer: String, con: Conn) -> Self {
        Self {
            keys,
            group,
            consumer,
            con,
            lease_script: Script::new(LEASE_SCRIPT),
            ack_script: Script::new(ACK_SCRIPT),
            dead_letter_script: Script::new(DEAD_LETTER_SCRIPT),
            fan_out_script: Script::new(FAN_OUT_SCRIPT),
            hand_back_script: Script::new(HAND_BACK_SCRIPT),
        }
    }

    fn con(&self) -> Conn {
        self.con.clone()
    }

    /// The shared command connection (for the operator tools).
    pub fn connection(&self) -> Conn {
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
        reader: &mut Conn,
        from: &str,
        count: usize,
        block: Option<Duration>,
    ) -> RedisResult<Vec<StreamEntry>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(&self.group).arg(&self.consumer).arg("COUNT").arg(count);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.keys.events).arg(from);
        let reply: ReadReply = cmd.query_async(reader).await?;
        Ok(reply.0)
    }

    /// Each entry's own delivery count, from its own PEL row (one XPENDING per id, pipelined);
    /// an id that is no longer pending is absent from the answer.
    pub async fn delivery_counts(&self, ids: &[&str]) -> RedisResult<HashMap<String, u64>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("XPENDING").arg(&self.keys.events).arg(&self.group).arg(*id).arg(*id).arg(1);
        }
        let rows: Vec<PendingRows> = pipe.query_async(&mut self.con()).await?;
        Ok(rows.into_iter().flat_map(|r| r.0).map(|row| (row.id, row.deliveries)).collect())
    }

    /// Acks the ids this consumer still owns, in one script call; returns the ids it did not
    /// own (see [`ACK_SCRIPT`]).
    pub async fn ack_owned(&self, ids: &[&str]) -> RedisResult<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.ack_script.key(&self.keys.events);
        invocation.arg(&self.group).arg(&self.consumer).arg(ids);
        invocation.invoke_async(&mut self.con()).await
    }

    /// The dead-letter script (see the module docs): `Some(dead id)` when this call moved the
    /// entry to `{ns}:dead`, `None` when it was not this consumer's to move (any more).
    pub async fn dead_letter(
        &self,
        entry: &StreamEntry,
        error: &str,
        attempts: u32,
        deliveries: u64,
    ) -> RedisResult<Option<String>> {
        let failed_at = shared::entry::timestamp_now();
        let mut invocation = self.dead_letter_script.key(&self.keys.events);
        invocation.key(&self.keys.dead).arg(&self.group).arg(&self.consumer).arg(&entry.id);
        for (field, value) in entry.fields.iter().flatten() {
            if !DEAD_FIELDS.contains(&field.as_str()) {
                invocation.arg(field).arg(value.as_slice());
            }
        }
        invocation
            .arg("original_id")
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
        invocation.invoke_async(&mut self.con()).await
    }

    /// Splits `entry` into one entry per meeting — `(payload, meeting key)` each, with the
    /// original's other fields and `fanout_of` — and acks it, in one script (see
    /// [`FAN_OUT_SCRIPT`]): `Some(new ids)` when done by this call, `None` when the entry was not
    /// this consumer's to split (any more).
    pub async fn fan_out(
        &self,
        entry: &StreamEntry,
        meetings: &[(Vec<u8>, String)],
    ) -> RedisResult<Option<Vec<String>>> {
        use shared::entry::{FANOUT_OF, MEETING, PAYLOAD};
        let shared: Vec<(&str, &[u8])> = entry
            .fields
            .iter()
            .flatten()
            .filter(|(k, _)| k != PAYLOAD && k != MEETING && k != FANOUT_OF)
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .chain(std::iter::once((FANOUT_OF, entry.id.as_bytes())))
            .collect();
        let mut invocation = self.fan_out_script.key(&self.keys.events);
        invocation.arg(&self.group).arg(&self.consumer).arg(&entry.id).arg(shared.len() * 2);
        for (field, value) in &shared {
            invocation.arg(*field).arg(*value);
        }
        for (payload, meeting) in meetings {
            invocation.arg(payload.as_slice()).arg(meeting);
        }
        invocation.invoke_async(&mut self.con()).await
    }

    /// Hands back every entry pending under this consumer except `running`: their idle time is
    /// set far past `CLAIM_IDLE_MS`, so another replica's reclaimer takes them at its next scan
    /// instead of after `CLAIM_IDLE_MS` (shutting down, see [`crate::service`]). How many.
    pub async fn hand_back(&self, running: &[&str]) -> RedisResult<u64> {
        let mut invocation = self.hand_back_script.key(&self.keys.events);
        invocation.arg(&self.group).arg(&self.consumer).arg(HANDED_BACK_IDLE_MS).arg(running);
        invocation.invoke_async(&mut self.con()).await
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

    /// One XAUTOCLAIM call.
    pub async fn autoclaim(&self, min_idle: Duration, cursor: &str, count: usize) -> RedisResult<AutoClaim> {
        redis::cmd("XAUTOCLAIM")
            .arg(&self.keys.events)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(min_idle.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.con())
            .await
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
                let summary: PendingSummary =
                    redis::cmd("XPENDING").arg(&self.keys.events).arg(&group.name).query_async(&mut self.con()).await?;
                if let Some(min) = summary.oldest.as_deref().and_then(parse_id) {
                    oldest = oldest.min(min);
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
}
