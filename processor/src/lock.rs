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
//! - while held, it is renewed every TTL / 3 (only while the token is still ours: a script);
//! - it is released by its token only (a script), so a holder whose lock expired can never
//!   release the next holder's;
//! - a meeting that is locked is waited for — never skipped — with a jittered backoff from
//!   10 ms up to 250 ms between tries (no busy loop). The entry keeps its lease meanwhile, and
//!   the wait does not count against its handler timeout ([`crate::retry::excluded`]).

use redis::{RedisResult, Script};
use shared::conn::Conn;
use shared::keys::Keys;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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

/// A held meeting lock: renewed until [`MeetingLock::release`] (or drop, which releases in the
/// background).
pub struct MeetingLock {
    key: String,
    token: String,
    locks: MeetingLocks,
    renewing: CancellationToken,
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
        let token = uuid::Uuid::new_v4().to_string();
        let mut pause = FIRST_RETRY;
        let mut waited = false;
        loop {
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
                return Ok(self.held(key, token));
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

    fn held(&self, key: String, token: String) -> MeetingLock {
        let renewing = CancellationToken::new();
        let (locks, k, t, stop) = (self.clone(), key.clone(), token.clone(), renewing.clone());
        tokio::spawn(async move {
            let every = (locks.ttl / 3).max(Duration::from_millis(10));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.cancelled() => return,
                }
                let renewed: RedisResult<i64> = locks
                    .renew
                    .key(&k)
                    .arg(&t)
                    .arg(locks.ttl.as_millis() as u64)
                    .invoke_async(&mut locks.con.clone())
                    .await;
                match renewed {
                    Ok(1) => {}
                    Ok(_) => {
                        tracing::warn!(lock = %k, "a meeting lock expired while held (Redis unreachable for longer than its TTL)");
                        return;
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, lock = %k, "renewing a meeting lock failed; will try again")
                    }
                }
            }
        });
        MeetingLock { key, token, locks: self.clone(), renewing, released: false }
    }
}

impl MeetingLock {
    /// Releases the lock (only if it is still ours).
    pub async fn release(mut self) {
        self.released = true;
        self.renewing.cancel();
        release(&self.locks, &self.key, &self.token).await;
    }
}

impl Drop for MeetingLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // Dropped without `release` (the attempt was cancelled or timed out): stop renewing and
        // release in the background; should that fail, the TTL frees it.
        self.renewing.cancel();
        let (locks, key, token) = (self.locks.clone(), std::mem::take(&mut self.key), std::mem::take(&mut self.token));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { release(&locks, &key, &token).await });
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
