//! One delivery, one value.
//!
//! An entry this process has read or reclaimed is *held* until it is let go. [`Held`] is the
//! table of what is held — when its idle time was last reset (the lease keeper renews the old
//! ones), whether the lease was lost, the meeting lock its handler holds (renewed with it), and
//! and the task handling it (aborted if the shutdown grace runs out). Each row is owned by a
//! [`Lease`]: dropping the lease removes the row, so the table never keeps an entry nobody
//! handles.
//!
//! A [`Delivery`] is an entry with its lease, its delivery count and its `CONCURRENCY` slot. It
//! is consumed by its verdict — [`Delivery::ack`], [`Delivery::dead_letter`], [`Delivery::park`] or
//! [`Delivery::fan_out`] — or dropped.
//! When the lease keeper finds that another consumer took the entry over, the lease is marked
//! lost: the handler is stopped ([`Delivery::lost`]), and neither verdict writes anything: the
//! new owner decides. Redis checks the same thing once more when the verdict is written, so a
//! lease lost in the last moment cannot slip through either: every verdict — ack, dead letter,
//! fan-out — is a script that acts only on entries this consumer owns. (An earlier version sent
//! a plain XACK for entries leased less than `CLAIM_IDLE_MS / 2` ago; that rested on every
//! replica's `CLAIM_IDLE_MS`, the acker's queue and the clocks agreeing, and measured no faster
//! in a drain: docs/benchmarks.md.)

pub mod acker;
pub mod lease;
pub mod worker;

use crate::replies::StreamEntry;
use crate::stream::reconnect_backoff;
use crate::stream::{is_nogroup, RedisState, Stream};
use acker::Acker;
use backoff::backoff::Backoff;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// The table of what this process holds.
#[derive(Default)]
pub struct Held {
    rows: Mutex<HashMap<String, Row>>,
}

struct Row {
    /// When the command that last reset the entry's idle time (its delivery, or a lease
    /// renewal) was sent.
    reset: Instant,
    lost: CancellationToken,
    task: Option<AbortHandle>,
}

impl Held {
    fn rows(&self) -> MutexGuard<'_, HashMap<String, Row>> {
        self.rows.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts holding `id`, delivered by a command sent at `sent`: its lease, or `None` when
    /// this process already holds it (read again through a reclaim race: the first holder goes
    /// on).
    pub fn hold(self: &Arc<Self>, id: &str, sent: Instant) -> Option<Lease> {
        let mut rows = self.rows();
        if rows.contains_key(id) {
            return None;
        }
        let lost = CancellationToken::new();
        rows.insert(id.to_string(), Row { reset: sent, lost: lost.clone(), task: None });
        Some(Lease { id: id.to_string(), lost, held: self.clone() })
    }

    /// The ids not reset for `age` whose lease is not lost: the ones to renew.
    pub fn due(&self, age: Duration) -> Vec<String> {
        self.rows()
            .iter()
            .filter(|(_, row)| !row.lost.is_cancelled() && row.reset.elapsed() >= age)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The lease of `ids` was renewed by a command sent at `sent`.
    pub fn renewed(&self, ids: &[String], sent: Instant) {
        let mut rows = self.rows();
        for id in ids {
            if let Some(row) = rows.get_mut(id) {
                row.reset = sent;
            }
        }
    }

    /// The ids whose delivery is running (started, not yet let go).
    pub fn running(&self) -> Vec<String> {
        self.rows().iter().filter(|(_, row)| row.task.is_some()).map(|(id, _)| id.clone()).collect()
    }

    /// Another consumer owns `id` now: its delivery stops and writes no verdict.
    pub fn lose(&self, id: &str) {
        if let Some(row) = self.rows().get(id) {
            row.lost.cancel();
        }
    }

    /// Records the task handling `id`, to abort it when the shutdown grace runs out.
    pub fn set_task(&self, id: &str, task: AbortHandle) {
        if let Some(row) = self.rows().get_mut(id) {
            row.task = Some(task);
        }
    }

    /// Aborts every task still handling an entry; how many entries were still held.
    pub fn abort_all(&self) -> usize {
        let rows: Vec<Row> = self.rows().drain().map(|(_, row)| row).collect();
        for row in &rows {
            if let Some(task) = &row.task {
                task.abort();
            }
        }
        rows.len()
    }
}

/// This process's hold on one entry. Dropping it lets the entry go: it is no longer renewed
/// (it stays pending in the group until someone acks it).
pub struct Lease {
    id: String,
    lost: CancellationToken,
    held: Arc<Held>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.held.rows().remove(&self.id);
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Acked: done.
    Acked,
    /// Moved to `{ns}:dead`, as this entry (`None`: written by a try whose answer was lost).
    Dead(Option<String>),
    /// Split into one entry per meeting, and acked.
    FannedOut,
    /// Acked and parked in the retry set, due at this time (Unix ms; `None`: written by a try
    /// whose answer was lost).
    Parked(Option<u64>),
    /// Not this consumer's any more (the lease was lost, or Redis found another owner): nothing
    /// written; the new owner decides.
    Lost,
    /// The consumer group is gone (Redis lost its data): nothing left to write.
    GroupGone,
}

/// An entry being handled: consumed by its verdict.
pub struct Delivery {
    pub entry: StreamEntry,
    /// How many times the group has delivered the entry (1 for a new one).
    pub deliveries: u64,
    lease: Lease,
    slot: Option<OwnedSemaphorePermit>,
}

impl Delivery {
    pub fn new(entry: StreamEntry, deliveries: u64, lease: Lease, slot: OwnedSemaphorePermit) -> Self {
        Self { entry, deliveries, lease, slot: Some(slot) }
    }

    pub fn id(&self) -> &str {
        &self.entry.id
    }

    /// Resolves when the lease is lost (another consumer took the entry over).
    pub fn lost(&self) -> WaitForCancellationFuture<'_> {
        self.lease.lost.cancelled()
    }

    pub fn is_lost(&self) -> bool {
        self.lease.lost.is_cancelled()
    }

    /// Frees the `CONCURRENCY` slot (the handler is done; only the verdict is left to write).
    pub fn release_slot(&mut self) {
        self.slot = None;
    }

    /// Acks the entry (batched), retrying Redis errors until it is written or the lease is lost.
    pub async fn ack(self, acker: &Acker, stream: &Stream, redis: &RedisState) -> Settled {
        self.settle("ack", stream, redis, || async { acker.ack(&self.entry.id).await.map(|acked| acked.then_some(())) })
            .await
            .map_or_else(|settled| settled, |_| Settled::Acked)
    }

    /// Moves the entry to `{ns}:dead` with `reason` (one script: ack + dead copy, only if this
    /// consumer's ack removed it), retrying Redis errors until written or the lease is lost.
    pub async fn dead_letter(self, stream: &Stream, redis: &RedisState, reason: &str, attempts: u32) -> Settled {
        self.settle("dead letter", stream, redis, || stream.dead_letter(&self.entry, reason, attempts, self.deliveries))
            .await
            .map_or_else(|settled| settled, Settled::Dead)
    }

    /// Acks the entry and parks `record` (its member of the retry set) due after `delay`, in one
    /// script, only while this consumer owns it ([`crate::outcome::parking`]).
    pub async fn park(self, stream: &Stream, redis: &RedisState, record: &str, delay: Duration) -> Settled {
        self.settle("park", stream, redis, || stream.park(&self.entry.id, record, delay))
            .await
            .map_or_else(|settled| settled, Settled::Parked)
    }

    /// Splits the entry into one entry per meeting (`(payload, meeting key)` each) and acks it,
    /// in one script: exactly once, and only while this consumer owns it.
    pub async fn fan_out(self, stream: &Stream, redis: &RedisState, meetings: &[(Vec<u8>, String)]) -> Settled {
        self.settle("fan-out", stream, redis, || stream.fan_out(&self.entry, meetings))
            .await
            .map_or_else(|settled| settled, |_| Settled::FannedOut)
    }

    /// Writes a verdict: `write` answers `Some` when written, `None` when Redis found the entry
    /// not this consumer's. Redis errors are retried with backoff; a lost lease or a vanished
    /// group ends the retries. `Ok(None)`: written, by a try whose answer was lost (see
    /// [`settle_with`]).
    async fn settle<T, F, Fut>(
        &self,
        what: &str,
        stream: &Stream,
        redis: &RedisState,
        write: F,
    ) -> Result<Option<T>, Settled>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<Option<T>>>,
    {
        let pending = || stream.pending_anywhere(&self.entry.id);
        settle_with(&self.entry.id, what, redis, &self.lease.lost, write, pending).await
    }
}

/// The loop of [`Delivery::settle`]. A try that failed on the way back (a timeout, a reset)
/// may have been applied; when a later try then finds the entry no longer this consumer's,
/// `pending` tells which: still pending under some consumer — another owner took it (lost);
/// pending nowhere — the earlier try was applied, and the verdict is counted as written.
async fn settle_with<T, F, Fut, P, PFut>(
    id: &str,
    what: &str,
    redis: &RedisState,
    lost: &CancellationToken,
    mut write: F,
    mut pending: P,
) -> Result<Option<T>, Settled>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<Option<T>>>,
    P: FnMut() -> PFut,
    PFut: std::future::Future<Output = redis::RedisResult<bool>>,
{
    let mut backoff = reconnect_backoff();
    let mut maybe_applied = false;
    loop {
        if lost.is_cancelled() {
            crate::metrics::lease_lost();
            tracing::warn!(stream_id = %id, "{what} not written: the lease was lost; the new owner decides");
            return Err(Settled::Lost);
        }
        match write().await {
            Ok(Some(done)) => {
                redis.ok();
                return Ok(Some(done));
            }
            Ok(None) => {
                redis.ok();
                if maybe_applied && matches!(pending().await, Ok(false)) {
                    tracing::info!(stream_id = %id, "{what} written by an earlier try whose answer was lost");
                    return Ok(None);
                }
                crate::metrics::lease_lost();
                tracing::warn!(
                    stream_id = %id,
                    "{what} not written: the entry is no longer pending under this consumer (acked already, or taken over by another)"
                );
                return Err(Settled::Lost);
            }
            Err(err) if is_nogroup(&err) => {
                tracing::warn!(stream_id = %id, "{what}: the consumer group is gone; the entry is no longer pending");
                return Err(Settled::GroupGone);
            }
            Err(err) => {
                maybe_applied = true;
                redis.failed(what, &err);
                let wait = backoff.next_backoff().unwrap_or(Duration::from_secs(5));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = lost.cancelled() => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn io_error() -> redis::RedisError {
        redis::RedisError::from((redis::ErrorKind::Io, "the answer never came"))
    }

    /// The first try is applied in Redis but its answer is lost; the second finds the entry not
    /// this consumer's. Pending nowhere: the earlier try wrote it — counted as written.
    /// Pending under another consumer: lost, as before.
    #[tokio::test(start_paused = true)]
    async fn a_verdict_applied_by_a_try_whose_answer_was_lost_counts_as_written() {
        let redis = RedisState::new("redis://test".into());
        let lost = CancellationToken::new();
        for (pending_elsewhere, expected) in [(false, Ok(None)), (true, Err(Settled::Lost))] {
            let tries = AtomicU32::new(0);
            let write = || async {
                match tries.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(io_error()),
                    _ => Ok(None::<()>),
                }
            };
            let pending = || async move { Ok(pending_elsewhere) };
            let settled = settle_with("1-0", "ack", &redis, &lost, write, pending).await;
            assert_eq!(settled, expected, "pending elsewhere: {pending_elsewhere}");
        }
        // Without an earlier failed try, "not owned" is never taken for written.
        let write = || async { Ok(None::<()>) };
        let pending = || async { Ok(false) };
        assert_eq!(settle_with("1-0", "ack", &redis, &lost, write, pending).await, Err(Settled::Lost));
    }
}
