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
//! - taking it gives a guard, [`MeetingLock`], owned by the attempt that took it (and so by its
//!   delivery). The guard registers itself with the lock keeper, which renews every registered
//!   lock every TTL / 6 (only while the token is still ours: a script), and unregisters on drop,
//!   whatever way the attempt ends — success, error, timeout or cancellation — so a dropped
//!   attempt's lock is never renewed again, even when its release failed (then its TTL frees it);
//! - a lock found no longer ours (a renewal answers 0, or no renewal succeeded for a whole TTL)
//!   is *lost*: the guard's [`MeetingLock::lost`] resolves, and the attempt is stopped. And
//!   before every write the attempt confirms the lock in Redis — inside the write limiter's
//!   script when there is a limit ([`proof`]; its keys share the namespace's hash tag, so one
//!   call does both), else with the renewal script ([`confirm_held`]): a write is never sent
//!   after the lock was lost, even when the loss happened a moment ago and no renewal has seen
//!   it yet;
//! - it is released by its token only (always the token-checking script), so a holder whose
//!   lock expired, or was lost in a failover, can never release the next holder's;
//! - a meeting that is locked is waited for — never skipped — with a jittered backoff from
//!   10 ms up to 250 ms between tries (no busy loop). The entry keeps its lease meanwhile, and
//!   the wait does not count against its handler timeout ([`crate::downstream::waits::excluded`]).

use crate::downstream::limiter::LockProof;
use redis::{RedisResult, Script};
use shared::conn::Conn;
use shared::keys::Keys;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

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

tokio::task_local! {
    /// The lock the current attempt holds, for [`confirm_held`].
    static HELD: Scope;
}

/// Takes meeting locks for this processor, and keeps the registry of the ones held (every
/// clone shares it).
#[derive(Clone)]
pub struct MeetingLocks {
    keys: Keys,
    con: Conn,
    ttl: Duration,
    renew: Script,
    release: Script,
    held: Arc<Registry>,
}

#[derive(Default)]
struct Registry {
    next: AtomicU64,
    locks: Mutex<HashMap<u64, Arc<Hold>>>,
}

impl Registry {
    fn locks(&self) -> MutexGuard<'_, HashMap<u64, Arc<Hold>>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One held lock: its key, token, since when it surely holds, and whether it was lost.
struct Hold {
    key: String,
    token: String,
    /// When the last SET or renewal that succeeded was sent.
    valid_from: Mutex<Instant>,
    lost: CancellationToken,
}

impl Hold {
    fn valid_from(&self) -> Instant {
        *self.valid_from.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn renewed(&self, sent: Instant) {
        *self.valid_from.lock().unwrap_or_else(|p| p.into_inner()) = sent;
    }
}

/// A held meeting lock: the guard. Renewed while it lives; dropping it unregisters it at once
/// and releases it in the background (should that fail, the TTL frees it).
pub struct MeetingLock {
    id: u64,
    hold: Arc<Hold>,
    locks: MeetingLocks,
    released: bool,
}

impl MeetingLocks {
    pub fn new(keys: Keys, con: Conn, ttl: Duration) -> Self {
        Self {
            keys,
            con,
            ttl,
            renew: Script::new(RENEW_SCRIPT),
            release: Script::new(RELEASE_SCRIPT),
            held: Arc::default(),
        }
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
                .arg(millis(self.ttl))
                .query_async(&mut self.con.clone())
                .await?;
            if taken.is_some() {
                if waited {
                    tracing::debug!(meeting = meeting_key, "meeting lock taken after waiting");
                }
                let hold = Arc::new(Hold { key, token, valid_from: Mutex::new(sent), lost: CancellationToken::new() });
                let id = self.held.next.fetch_add(1, Ordering::Relaxed);
                self.held.locks().insert(id, hold.clone());
                return Ok(MeetingLock { id, hold, locks: self.clone(), released: false });
            }
            if !waited {
                tracing::debug!(meeting = meeting_key, "meeting is locked by another entry; waiting");
                crate::metrics::lock_wait();
                waited = true;
            }
            tokio::time::sleep(crate::clock::jitter(pause, 0.5)).await;
            pause = (pause * 2).min(LONGEST_RETRY);
        }
    }

    /// Renews the registered locks not renewed for `age` (one script call each; locks live long
    /// enough to need it only when an attempt waits long, e.g. for the write limit). A lock
    /// found no longer ours, or not renewed for a whole TTL (Redis unreachable meanwhile), is
    /// marked lost: its attempt stops.
    pub async fn renew_due(&self, age: Duration) {
        let due: Vec<Arc<Hold>> =
            self.held.locks().values().filter(|h| h.valid_from().elapsed() >= age).cloned().collect();
        for hold in due {
            match self.renew_one(&hold).await {
                Ok(true) => {}
                Ok(false) => lose(&hold, "a meeting lock was found taken by another holder"),
                Err(err) if hold.valid_from().elapsed() >= self.ttl => {
                    lose(&hold, &format!("a meeting lock could not be renewed for its whole TTL ({err})"))
                }
                Err(err) => {
                    tracing::debug!(error = %err, lock = %hold.key, "meeting lock renewal failed; will try again")
                }
            }
        }
    }

    /// One renewal: `true` when the lock is still ours (and extended).
    async fn renew_one(&self, hold: &Hold) -> RedisResult<bool> {
        let sent = Instant::now();
        let renewed: i64 = self
            .renew
            .key(&hold.key)
            .arg(&hold.token)
            .arg(millis(self.ttl))
            .invoke_async(&mut self.con.clone())
            .await?;
        if renewed == 1 {
            hold.renewed(sent);
        }
        Ok(renewed == 1)
    }

    /// How many locks are registered (held by attempts right now).
    pub fn held(&self) -> usize {
        self.held.locks().len()
    }
}

fn lose(hold: &Hold, why: &str) {
    if !hold.lost.is_cancelled() {
        tracing::warn!(lock = %hold.key, "{why}: the attempt holding it stops before its next write");
        hold.lost.cancel();
    }
}

impl MeetingLock {
    /// Resolves when the lock is lost (see the module docs).
    pub fn lost(&self) -> WaitForCancellationFuture<'_> {
        self.hold.lost.cancelled()
    }

    /// Runs `work` (the attempt's read-decide-act) as the holder of this lock: stopped with an
    /// error when the lock is lost, and every write inside it confirms the lock first
    /// ([`confirm_held`]). Then releases the lock.
    pub async fn run<T>(self, work: impl Future<Output = T>) -> Result<T, String> {
        let scope = Scope { hold: self.hold.clone(), locks: self.locks.clone() };
        let result = tokio::select! {
            // Work that has finished keeps its result (its writes confirmed the lock).
            biased;
            result = HELD.scope(scope, work) => Ok(result),
            _ = self.lost() => Err(format!("the meeting's lock {} was lost; stopped before writing", self.hold.key)),
        };
        self.release().await;
        result
    }

    /// Releases the lock now, only if it is still ours: always the token-checking script (it
    /// costs the same round trip as a DEL, and after a failover or a missed expiry a lock this
    /// process believes its own may be another holder's).
    pub async fn release(mut self) {
        self.released = true;
        self.locks.held.locks().remove(&self.id);
        release(&self.locks, &self.hold.key, &self.hold.token).await;
    }
}

impl Drop for MeetingLock {
    fn drop(&mut self) {
        // Unregistered at once, whatever happens to the release: never renewed again.
        self.locks.held.locks().remove(&self.id);
        if self.released {
            return;
        }
        // Dropped without `release` (the attempt was cancelled or timed out): release in the
        // background; should that fail, the TTL frees it.
        let (locks, key, token) = (self.locks.clone(), self.hold.key.clone(), self.hold.token.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { release(&locks, &key, &token).await });
        }
    }
}

/// What [`confirm_held`] needs of the lock the current attempt holds.
struct Scope {
    hold: Arc<Hold>,
    locks: MeetingLocks,
}

/// The current attempt's lock, for the write limiter to confirm in its own script
/// ([`crate::downstream::limiter::WriteLimiter::acquire`]); `Ok(None)` outside a locked attempt, `Err` when
/// the lock is known lost already.
pub fn proof() -> Result<Option<(LockProof, Confirm)>, String> {
    let Ok((hold, ttl)) = HELD.try_with(|s| (s.hold.clone(), s.locks.ttl)) else { return Ok(None) };
    if hold.lost.is_cancelled() {
        return Err(format!("the meeting's lock {} was lost; the write was not sent", hold.key));
    }
    let proof = LockProof { key: hold.key.clone(), token: hold.token.clone(), ttl };
    Ok(Some((proof, Confirm(hold))))
}

/// Reports back what the limiter found of the lock.
pub struct Confirm(Arc<Hold>);

impl Confirm {
    /// Confirmed (and extended) by a script sent at `sent`.
    pub fn confirmed(&self, sent: Instant) {
        self.0.renewed(sent);
    }

    /// Found taken by another holder: the lock is lost; the reason.
    pub fn refused(&self) -> String {
        lose(&self.0, "a meeting lock was found taken by another holder before a write");
        format!("the meeting's lock {} is held by another entry now; the write was not sent", self.0.key)
    }
}

/// Confirms, right before a write, that the current attempt still holds its meeting's lock (the
/// renewal script: still our token, and extended). `Err` with the reason when it does not — the
/// write must not be sent. Outside a locked attempt (an event about no meeting) there is
/// nothing to confirm.
pub async fn confirm_held() -> Result<(), String> {
    let Ok((hold, locks)) = HELD.try_with(|s| (s.hold.clone(), s.locks.clone())) else { return Ok(()) };
    if hold.lost.is_cancelled() {
        return Err(format!("the meeting's lock {} was lost; the write was not sent", hold.key));
    }
    match locks.renew_one(&hold).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            lose(&hold, "a meeting lock was found taken by another holder before a write");
            Err(format!("the meeting's lock {} is held by another entry now; the write was not sent", hold.key))
        }
        Err(err) => Err(format!("cannot confirm the meeting's lock {} before writing: {err}", hold.key)),
    }
}

/// Renews the held locks every `every` until aborted (one loop per process: the registry is
/// shared by every partition).
pub async fn keep(locks: MeetingLocks, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        locks.renew_due(every).await;
    }
}

async fn release(locks: &MeetingLocks, key: &str, token: &str) {
    let released: RedisResult<i64> = locks.release.key(key).arg(token).invoke_async(&mut locks.con.clone()).await;
    if let Err(err) = released {
        tracing::debug!(error = %err, lock = %key, "releasing a meeting lock failed; its TTL will free it");
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookstream_tests::RedisServer;

    fn locks(redis: &RedisServer, ttl: Duration) -> MeetingLocks {
        let client = shared::conn::client(&redis.url()).expect("client");
        let con = Conn::new(client, Duration::from_secs(5)).expect("conn");
        MeetingLocks::new(Keys::new("hookstream"), con, ttl)
    }

    fn value(redis: &RedisServer, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query(&mut redis.con()).expect("GET")
    }

    #[tokio::test]
    async fn a_guard_is_renewed_while_it_lives_and_unregistered_when_dropped() {
        let redis = RedisServer::start();
        let locks = locks(&redis, Duration::from_secs(60));
        let lock = locks.lock("v1:m").await.expect("taken");
        let key = lock.hold.key.clone();
        assert_eq!(locks.held(), 1);
        // A dropped attempt (a timeout): unregistered at once, released in the background.
        drop(lock);
        assert_eq!(locks.held(), 0, "a dropped guard is never renewed again");
        hookstream_tests::eventually("released", || async { value(&redis, &key).is_none().then_some(()) }).await;
        // Taken again, and released by `run` whatever the work answers.
        let lock = locks.lock("v1:m").await.expect("taken");
        assert_eq!(lock.run(async { 7 }).await, Ok(7));
        assert_eq!((locks.held(), value(&redis, &key)), (0, None));
    }

    /// Right after it was taken (renewed a moment ago), the lock is another holder's in Redis —
    /// a failover lost the key and another replica took the meeting: releasing must leave it.
    #[tokio::test]
    async fn a_release_never_deletes_another_holder_s_lock() {
        let redis = RedisServer::start();
        let locks = locks(&redis, Duration::from_secs(60));
        let lock = locks.lock("v1:m").await.expect("taken");
        let key = lock.hold.key.clone();
        let _: () = redis::cmd("SET").arg(&key).arg("another").query(&mut redis.con()).expect("SET");
        lock.release().await;
        assert_eq!(value(&redis, &key).as_deref(), Some("another"));
    }

    #[tokio::test]
    async fn a_lock_found_taken_by_another_stops_its_attempt_and_its_writes() {
        let redis = RedisServer::start();
        let locks = locks(&redis, Duration::from_secs(60));
        let lock = locks.lock("v1:m").await.expect("taken");
        let key = lock.hold.key.clone();
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let work = async move {
            let _ = started_tx.send(());
            // Never ends by itself: only losing the lock stops it.
            std::future::pending::<()>().await;
        };
        let run = tokio::spawn(lock.run(work));
        started.await.expect("the work started");
        // Another replica holds the meeting now.
        let _: () = redis::cmd("SET").arg(&key).arg("another").query(&mut redis.con()).expect("SET");
        locks.renew_due(Duration::ZERO).await;
        let stopped = run.await.expect("task");
        assert!(stopped.is_err_and(|why| why.contains("lost")));
        assert_eq!(value(&redis, &key).as_deref(), Some("another"), "the other holder's lock is left alone");
        assert_eq!(locks.held(), 0);

        // A write inside a held lock confirms it first; once taken by another, it is refused.
        let lock = locks.lock("v1:other").await.expect("taken");
        let key = lock.hold.key.clone();
        let confirmed = lock
            .run(async {
                let first = confirm_held().await;
                let _: () = redis::cmd("SET").arg(&key).arg("another").query(&mut redis.con()).expect("SET");
                (first, confirm_held().await)
            })
            .await;
        let (first, second) = confirmed.expect("not lost before the check");
        assert_eq!(first, Ok(()));
        assert!(second.is_err_and(|why| why.contains("not sent")));
        assert_eq!(confirm_held().await, Ok(()), "outside a locked attempt there is nothing to confirm");
    }
}
