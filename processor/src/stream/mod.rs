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
//!   every `CLAIM_IDLE_MS / 6`, so a slow handler is never mistaken for a dead one. One script
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

//!
//! Files: this one (the stream as one consumer sees it: reads, delivery counts, leases,
//! reclaims, hand-back), [`verdict`] (the scripts that settle an entry, around one
//! ack-if-owned preamble), [`trim`] (what may be trimmed), [`gauges`] (the numbers behind the
//! metrics).

mod gauges;
mod trim;
pub use trim::trim_older_than;
mod verdict;

pub use gauges::{lengths, Gauges};
pub use verdict::DEAD_FIELDS;

use crate::replies::{AutoClaim, ConsumerInfo, Consumers, PendingRows, ReadReply, StreamEntry};
use redis::{RedisResult, Script};
use shared::conn::Conn;
use shared::keys::Keys;
use std::collections::HashMap;
use std::time::Duration;

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
    park_script: Script,
    reappend_script: Script,
    hand_back_script: Script,
}

/// XINFO CONSUMERS of `group` on `keys`' stream.
pub async fn consumers(con: &mut Conn, keys: &Keys, group: &str) -> RedisResult<Vec<ConsumerInfo>> {
    let reply: Consumers = redis::cmd("XINFO").arg("CONSUMERS").arg(&keys.events).arg(group).query_async(con).await?;
    Ok(reply.0)
}

/// Whether an error is "the group (or the stream) does not exist".
pub fn is_nogroup(err: &redis::RedisError) -> bool {
    err.code() == Some("NOGROUP")
}

/// Makes due at once (score 1, long past) the members of the retry set `key` parked because
/// `downstream`'s breaker was open (their record says `"waits_for":"<downstream>"`; a payload
/// quoting that text has its quotes escaped, so it never matches). Returns how many.
pub async fn wake_parked(con: &mut Conn, key: &str, downstream: &str) -> RedisResult<u64> {
    make_due_matching(con, key, &format!("*\"waits_for\":\"{downstream}\"*"), |_| true).await
}

/// Makes due at once the members of the retry set `key` that match the glob `pattern` (ZSCAN
/// MATCH, paged) and that `keep` accepts. Returns how many.
pub async fn make_due_matching(
    con: &mut Conn,
    key: &str,
    pattern: &str,
    keep: impl Fn(&str) -> bool,
) -> RedisResult<u64> {
    let (mut cursor, mut made) = (0u64, 0u64);
    loop {
        let (next, rows): (u64, Vec<String>) = redis::cmd("ZSCAN")
            .arg(key)
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await?;
        // ZSCAN answers member, score, member, score, …
        let members: Vec<&String> = rows.iter().step_by(2).filter(|m| keep(m)).collect();
        made += make_due(con, key, &members).await?;
        if next == 0 {
            return Ok(made);
        }
        cursor = next;
    }
}

/// Sets the due time of `members` of the retry set `key` to 1 (long past), only those still in
/// the set; how many changed.
pub async fn make_due(con: &mut Conn, key: &str, members: &[impl redis::ToRedisArgs]) -> RedisResult<u64> {
    if members.is_empty() {
        return Ok(0);
    }
    let mut zadd = redis::cmd("ZADD");
    zadd.arg(key).arg("XX").arg("CH");
    for member in members {
        zadd.arg(1).arg(member);
    }
    zadd.query_async(con).await
}

/// `ms-seq` as a pair, for ordering stream ids.
pub fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Remembers whether Redis answered last time, so an outage is logged once when it starts and
/// once when it ends, not once per attempt.
#[derive(Default)]
pub struct RedisState {
    down: std::sync::atomic::AtomicBool,
    /// `REDIS_URL` without its passwords, to say which Redis failed.
    url: String,
}

/// A jittered exponential delay for reconnecting to Redis: 100 ms doubling up to 5 s, forever.
pub fn reconnect_backoff() -> impl backoff::backoff::Backoff {
    backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(Duration::from_millis(100))
        .with_max_interval(Duration::from_secs(5))
        .with_randomization_factor(0.5)
        .with_max_elapsed_time(None)
        .build()
}

impl RedisState {
    /// Runs `call` until Redis answers it: each failure is reported ([`Self::failed`]: one
    /// log line while Redis stays down) and followed by a jittered wait ([`reconnect_backoff`])
    /// through `pause`, which answers `false` to give up (shutting down): then `None`.
    pub async fn retry<T, F, Fut, P, PFut>(&self, what: &str, mut call: F, mut pause: P) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
        P: FnMut(Duration) -> PFut,
        PFut: std::future::Future<Output = bool>,
    {
        use backoff::backoff::Backoff;
        let mut backoff = reconnect_backoff();
        loop {
            match call().await {
                Ok(value) => {
                    self.ok();
                    return Some(value);
                }
                Err(err) => {
                    self.failed(what, &err);
                    if !pause(backoff.next_backoff().unwrap_or(Duration::from_secs(5))).await {
                        return None;
                    }
                }
            }
        }
    }

    /// The state of the Redis at `url` (already without passwords).
    pub fn new(url: String) -> Self {
        Self { down: Default::default(), url }
    }

    pub fn failed(&self, what: &str, err: &redis::RedisError) {
        if !self.down.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tracing::warn!(error = %err, redis_url = %self.url, "Redis unreachable ({what}); retrying with backoff");
        }
    }

    pub fn ok(&self) {
        if self.down.swap(false, std::sync::atomic::Ordering::SeqCst) {
            tracing::info!("Redis reachable again");
        }
    }
}

impl Stream {
    /// Whether the entry `id` is pending under any consumer of the group.
    pub async fn pending_anywhere(&self, id: &str) -> RedisResult<bool> {
        let rows: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg(&self.keys.events)
            .arg(&self.group)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(&mut self.con())
            .await?;
        Ok(!rows.is_empty())
    }

    pub fn new(keys: Keys, group: String, consumer: String, con: Conn) -> Self {
        Self {
            keys,
            group,
            consumer,
            con,
            lease_script: Script::new(LEASE_SCRIPT),
            ack_script: Script::new(verdict::ACK_SCRIPT),
            dead_letter_script: Script::new(verdict::DEAD_LETTER_SCRIPT),
            fan_out_script: Script::new(verdict::FAN_OUT_SCRIPT),
            park_script: Script::new(verdict::PARK_SCRIPT),
            reappend_script: Script::new(verdict::REAPPEND_SCRIPT),
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

    /// This group's consumers (XINFO CONSUMERS).
    pub async fn consumers(&self) -> RedisResult<Vec<ConsumerInfo>> {
        consumers(&mut self.con(), &self.keys, &self.group).await
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
