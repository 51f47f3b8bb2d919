//! The Meeting BaaS API's write limit, shared by every replica.
//!
//! Meeting BaaS limits writes per team (5, 10 or 20 per second by plan) and answers 429 beyond
//! that. Every POST, PATCH and DELETE a processor sends first asks the limiter in Redis
//! (`{ns}:ratelimit:api-writes`) for a slot, so all replicas together stay at
//! `API_WRITES_PER_SEC` instead of each bursting up to `CONCURRENCY` writes and retrying on 429s.
//!
//! The limiter is GCRA (the generic cell rate algorithm) in one script: the key holds the
//! theoretical arrival time (TAT) of the next write, in microseconds of Redis's own clock (so
//! replicas' clocks do not matter). A write may go when the TAT is not in the future; it then
//! moves the TAT one interval (1 s / rate) on. Otherwise the script answers how long to wait;
//! the caller sleeps that long and asks again (another replica may have taken the slot).
//! Writes are spaced evenly — no burst — so no one-second window ever holds more than the rate
//! allows. The wait is not a failed attempt and does not count against the handler's timeout
//! ([`crate::downstream::waits::excluded`]).

use redis::{RedisResult, Script};
use shared::conn::Conn;
use std::time::Duration;

const GCRA_SCRIPT: &str = concat!(
    crate::clock::lua_now!(),
    r#"
-- KEYS[1] limiter, KEYS[2] (when the write is about a meeting) its lock; ARGV[1] interval
-- between two writes, microseconds; ARGV[2] the lock's token, ARGV[3] its TTL, ms.
-- Returns -1 when the lock is not ours any more (no slot taken: the write must not go), 0 when
-- a write may go now (and takes its slot; the lock is extended), else the microseconds to wait.
if KEYS[2] then
  if redis.call('GET', KEYS[2]) ~= ARGV[2] then
    return -1
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now_us then
  tat = now_us
end
if tat > now_us then
  return tat - now_us
end
redis.call('SET', KEYS[1], string.format('%d', tat + interval), 'PX', math.ceil(interval / 1000) + 1000)
return 0
"#
);

const PAUSE_SCRIPT: &str = concat!(
    crate::clock::lua_now!(),
    r#"
-- KEYS[1] limiter; ARGV[1] pause, microseconds. No write slot before now + pause.
local until_us = now_us + tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_us > tat then
  redis.call('SET', KEYS[1], string.format('%d', until_us), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1000)
end
return 0
"#
);

/// What the limiter needs to confirm a meeting's lock along with the slot.
pub struct LockProof {
    pub key: String,
    pub token: String,
    pub ttl: Duration,
}

/// The answer to [`WriteLimiter::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The write may go; `lock_confirmed_at`: when the script that confirmed (and extended) the
    /// lock was sent (`None`: no lock was confirmed — no limit, or no lock given).
    Taken { lock_confirmed_at: Option<tokio::time::Instant> },
    /// The lock is not ours any more: no slot was taken, the write must not go.
    LockLost,
}

/// The longest shared pause a 429's `Retry-After` can impose (without parking; with it, see
/// [`WriteLimiter::with_max_pause`]).
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// The shared write limiter; `None` rate means unlimited (`API_WRITES_PER_SEC=0`).
#[derive(Clone)]
pub struct WriteLimiter {
    key: String,
    con: Option<Conn>,
    interval_us: u64,
    max_pause: Duration,
    script: Script,
    pause_script: Script,
}

impl WriteLimiter {
    /// A limiter of `per_sec` writes per second for all replicas together (0: no limit).
    pub fn new(key: String, con: Conn, per_sec: u32) -> Self {
        let (con, interval_us) = match per_sec {
            0 => (None, 0),
            n => (Some(con), 1_000_000 / u64::from(n)),
        };
        Self {
            key,
            con,
            interval_us,
            max_pause: MAX_PAUSE,
            script: Script::new(GCRA_SCRIPT),
            pause_script: Script::new(PAUSE_SCRIPT),
        }
    }

    /// Caps the shared pause a 429 imposes. With parking on, the cap is
    /// `RETRY_MAX_INTERVAL_MS`: a longer `Retry-After` parks the entry that got it (SPEC §4.3)
    /// and must not freeze every other write for as long.
    pub fn with_max_pause(mut self, max: Duration) -> Self {
        self.max_pause = max;
        self
    }

    /// The API refused a write with 429 and `Retry-After: wait`: no replica writes before then
    /// (the next slot moves to now + `wait`, on Redis's clock). Best effort: an error is logged.
    pub async fn pause(&self, wait: Duration) {
        let Some(con) = &self.con else { return };
        // A Retry-After of years is a server's mistake: the shared pause is at most an hour (or,
        // with parking, the longest in-place wait).
        let wait = wait.min(self.max_pause);
        let paused: RedisResult<i64> =
            self.pause_script.key(&self.key).arg(wait.as_micros() as u64).invoke_async(&mut con.clone()).await;
        match paused {
            Ok(_) => tracing::warn!(
                wait_ms = wait.as_millis() as u64,
                "the API refused a write (429): every replica pauses its writes for Retry-After"
            ),
            Err(err) => tracing::debug!(error = %err, "pausing the shared write limit failed"),
        }
    }

    /// Waits for a write slot; with `lock`, confirms in the same script that the meeting's lock
    /// is still ours (one round trip for both; its keys share the namespace's hash tag). A Redis
    /// error is returned (the attempt fails transiently).
    pub async fn acquire(&self, lock: Option<&LockProof>) -> RedisResult<Slot> {
        let Some(con) = &self.con else { return Ok(Slot::Taken { lock_confirmed_at: None }) };
        let mut waited = false;
        loop {
            let mut invocation = self.script.key(&self.key);
            invocation.arg(self.interval_us);
            if let Some(lock) = lock {
                invocation.key(&lock.key).arg(&lock.token).arg(u64::try_from(lock.ttl.as_millis()).unwrap_or(u64::MAX));
            }
            let sent = tokio::time::Instant::now();
            let wait_us: i64 = invocation.invoke_async(&mut con.clone()).await?;
            if wait_us < 0 {
                return Ok(Slot::LockLost);
            }
            if wait_us == 0 {
                return Ok(Slot::Taken { lock_confirmed_at: lock.map(|_| sent) });
            }
            if !waited {
                // Counted once per write that has to wait, however many tries it takes.
                crate::metrics::api_write_wait();
                waited = true;
            }
            tokio::time::sleep(Duration::from_micros(wait_us.unsigned_abs())).await;
        }
    }
}
