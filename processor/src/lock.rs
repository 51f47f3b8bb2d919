//! One meeting at a time, across every replica.
//!
//! Two entries about the same meeting — a `created` and a `cancelled`, two syncs naming one
//! event — must never run their read-decide-act step at the same time: each could read "no bot
//! yet", and the later write would win whatever the calendar says. Before a handler attempt
//! touches a meeting, it takes the meeting's lock in Redis:
//!
//! - the key is `{ns}:lock:<sha256 of the meeting key>` (v1: `v1:<event uuid>`; v2:
//!   `v2:<calendar_id>:<event_id>`), under the namespace's hash tag;
//! - its value is a random token, set with `SET NX PX <ttl>`; the TTL is `CLAIM_IDLE_MS`, the
//!   same time after which a dead processor's entries are reclaimed, so a holder that dies
//!   (SIGKILL, lost host) frees its meetings no later than its entries;
//! - while held, it is renewed by the lease keeper, with the entry's lease, every TTL / 3 (only
//!   while the token is still ours: a script);
//! - it is released by its token only, so a holder whose lock expired can never release the
//!   next holder's: a plain DEL while the lock cannot have expired yet (less than half its TTL
//!   since it was taken or last renewed, timed from before the command was sent), the
//!   token-checking script otherwise;
//! - a meeting that is locked is waited for — never skipped — with a jittered backoff from
//!   10 ms up to 250 ms between tries (no busy loop). The entry keeps its lease meanwhile, and
//!   the wait does not count against its handler timeout ([`crate::waits::excluded`]).

use redis::{RedisResult, Script};
use shared::conn::Conn;
use shared::keys::Keys;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const RENEW_SCRIPT: &str = r#"
-- KEYS[1] lock; ARGV[1] token, ARGV[2] ttl ms. Extends the lock while it is still ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

const RELEASE_SCRIPT: &str = r#"
-- KEYS[1] lock; ARGV[1] token. Deletes the lock only while it is still ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// The first and the longest pause between two tries at a locked meeting.
const FIRST_RETRY: Duration = Duration::from_millis(10);
const LONGEST_RETRY: Duration = Duration::from_millis(250);

/// Takes meeting locks for this processor.
#[derive(Clone)]
pub struct MeetingLocks {
    keys: Keys,
    con: Conn,
    ttl: Duration,
    renew: Script,
    release: Script,
}

/// What the lease keeper needs to renew a held lock: its key, token, and since when it surely
/// holds (updated on each renewal).
#[derive(Clone)]
pub struct LockHandle {
    key: String,
    token: String,
    /// When the last SET or renewal that succeeded was sent.
    valid_from: Arc<Mutex<Instant>>,
}

impl LockHandle {
    fn valid_from(&self) -> Instant {
        *self.valid_from.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn renewed(&self, sent: Instant) {
        *self.valid_from.lock().unwrap_or_else(|p| p.into_inner()) = sent;
    }
}

/// A held meeting lock, until [`MeetingLock::release`] (or drop, which releases in the
/// background).
pub struct MeetingLock {
    handle: LockHandle,
    locks: MeetingLocks,
    released: bool,
}

impl MeetingLocks {
    pub fn new(keys: Keys, con: Conn, ttl: Duration) -> Self {
        Self { keys, con, ttl, renew: Script::new(RENEW_SCRIPT), release: Script::new(RELEASE_SCRIPT) }
    }

    /// Waits until `meeting_key`'s lock is free and takes it. A Redis error ends the wait (the
    /// attempt fails transiently and is retried).
    pub async fn lock(&self, meeting_key: &str) -> RedisResult<MeetingLock> {
        let key = self.keys.lock(meeting_key);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut pause = FIRST_RETRY;
        let mut waited = false;
        loop {
            let sent = Instant::now();
            let taken: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(self.ttl.as_millis() as u64)
                .query_async(&mut self.con.clone())
                .await?;
            if taken.is_some() {
                if waited {
                    tracing::debug!(meeting = meeting_key, "meeting lock taken after waiting");
                }
                let handle = LockHandle { key, token, valid_from: Arc::new(Mutex::new(sent)) };
                return Ok(MeetingLock { handle, locks: self.clone(), released: false });
            }
            if !waited {
                tracing::debug!(meeting = meeting_key, "meeting is locked by another entry; waiting");
                crate::metrics::lock_wait();
                waited = true;
            }
            tokio::time::sleep(jitter(pause)).await;
            pause = (pause * 2).min(LONGEST_RETRY);
        }
    }

    /// Renews `locks` (one script call each; locks live long enough to need it only when an
    /// attempt waits long, e.g. for the write limit); a lock found no longer ours is reported.
    pub async fn renew(&self, locks: &[LockHandle]) -> RedisResult<()> {
        for lock in locks {
            let sent = Instant::now();
            let renewed: i64 = self
                .renew
                .key(&lock.key)
                .arg(&lock.token)
                .arg(self.ttl.as_millis() as u64)
                .invoke_async(&mut self.con.clone())
                .await?;
            if renewed == 1 {
                lock.renewed(sent);
            } else {
                tracing::warn!(lock = %lock.key, "a meeting lock expired while held (Redis unreachable for longer than its TTL)");
            }
        }
        Ok(())
    }

    /// Whether `lock` has not been renewed for `age`.
    pub fn due(lock: &LockHandle, age: Duration) -> bool {
        lock.valid_from().elapsed() >= age
    }
}

impl MeetingLock {
    /// What the lease keeper renews while this lock is held.
    pub fn handle(&self) -> LockHandle {
        self.handle.clone()
    }

    /// Releases the lock (only if it is still ours).
    pub async fn release(mut self) {
        self.released = true;
        let still_ours = self.handle.valid_from().elapsed() < self.locks.ttl / 2;
        let handle = self.handle.clone();
        if still_ours {
            // It cannot have expired yet, so no one else can hold it: a plain DEL is safe.
            let deleted: RedisResult<i64> =
                redis::cmd("DEL").arg(&handle.key).query_async(&mut self.locks.con.clone()).await;
            if let Err(err) = deleted {
                tracing::debug!(error = %err, lock = %handle.key, "releasing a meeting lock failed; its TTL will free it");
            }
        } else {
            release(&self.locks, &handle.key, &handle.token).await;
        }
    }
}

impl Drop for MeetingLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // Dropped without `release` (the attempt was cancelled or timed out): release in the
        // background; should that fail, the TTL frees it.
        let (locks, handle) = (self.locks.clone(), self.handle.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { release(&locks, &handle.key, &handle.token).await });
        }
    }
}

async fn release(locks: &MeetingLocks, key: &str, token: &str) {
    let released: RedisResult<i64> = locks.release.key(key).arg(token).invoke_async(&mut locks.con.clone()).await;
    if let Err(err) = released {
        tracing::debug!(error = %err, lock = %key, "releasing a meeting lock failed; its TTL will free it");
    }
}

/// `d` ± 50 %.
fn jitter(d: Duration) -> Duration {
    let nanos = d.as_nanos() as u64;
    let spread = nanos / 2;
    let offset = uuid::Uuid::new_v4().as_u128() as u64 % (2 * spread + 1);
    Duration::from_nanos(nanos - spread + offset)
}
