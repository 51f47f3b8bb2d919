//! From held entries to running deliveries: the `CONCURRENCY` slots, the delivery counts, the
//! tasks, and the stop signal every loop watches.
//!
//! The reader and the reclaimer hand their entries here as soon as they have them: [`hold`]
//! registers each in the [`Held`] table (from then on the lease keeper renews it), and
//! [`dispatch_batch`] starts a [`Delivery`] for each as a slot frees up. Shutting down, entries
//! not yet started are let go (they stay pending in the group, for another replica).
//!
//! [`hold`]: Dispatcher::hold
//! [`dispatch_batch`]: Dispatcher::dispatch_batch
//! [`hand_back`]: Dispatcher::hand_back

use crate::delivery::worker::Worker;
use crate::delivery::{Delivery, Held, Lease};
use crate::replies::StreamEntry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// An entry held and not yet started.
pub type HeldEntry = (StreamEntry, Lease);

pub struct Dispatcher {
    pub worker: Arc<Worker>,
    pub held: Arc<Held>,
    permits: Arc<Semaphore>,
    /// Every delivery task, from its start until its verdict is written.
    pub tasks: TaskTracker,
    stop: watch::Receiver<bool>,
    /// Set when this consumer's pending list may hold entries nobody here holds (a read or a
    /// reclaim whose answer was lost); the reader then reads its own pending entries again.
    reread: AtomicBool,
}

impl Dispatcher {
    /// A dispatcher for one partition's `worker`; `permits` are the `CONCURRENCY` slots, shared
    /// by every partition.
    pub fn new(worker: Arc<Worker>, permits: Arc<Semaphore>, stop: watch::Receiver<bool>) -> Self {
        Self { worker, held: Arc::default(), permits, tasks: TaskTracker::new(), stop, reread: AtomicBool::new(false) }
    }

    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves when shutdown starts.
    pub async fn stopped(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|s| *s).await;
    }

    /// Waits `delay`, or less if shutdown starts; `false` when shutting down.
    pub async fn pause(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => !self.stopping(),
            _ = self.stopped() => false,
        }
    }

    /// Asks the reader to read this consumer's own pending entries again before its next read.
    pub fn reread(&self) {
        self.reread.store(true, Ordering::SeqCst);
    }

    /// Whether a re-read was asked for since the last call.
    pub fn take_reread(&self) -> bool {
        self.reread.swap(false, Ordering::SeqCst)
    }

    /// Free `CONCURRENCY` slots right now.
    pub fn free_slots(&self) -> usize {
        self.permits.available_permits()
    }

    /// Waits for one free slot (`None` when shutting down, even if a slot is free).
    async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            biased;
            _ = self.stopped() => None,
            permit = self.permits.clone().acquire_owned() => permit.ok(),
        }
    }

    /// Holds every entry, delivered by a command sent at `sent` (the lease keeper covers it
    /// from now on). An entry this process already holds (read again through a reclaim race) is
    /// dropped.
    pub fn hold(&self, entries: Vec<StreamEntry>, sent: Instant) -> Vec<HeldEntry> {
        entries.into_iter().filter_map(|e| self.held.hold(&e.id, sent).map(|lease| (e, lease))).collect()
    }

    /// Starts a delivery for each held entry as a slot frees up. `fresh` entries (new, read with
    /// `>`) were delivered once; the others (re-read or reclaimed) have their own delivery count
    /// read from the pending list first. Shutting down, what was not started is let go.
    pub async fn dispatch_batch(&self, entries: Vec<HeldEntry>, fresh: bool) {
        if self.stopping() {
            return; // dropping the leases lets them go
        }
        let counts = if fresh {
            None
        } else {
            let ids: Vec<&str> = entries.iter().map(|(e, _)| e.id.as_str()).collect();
            match self.delivery_counts(&ids).await {
                Some(counts) => Some(counts),
                None => return, // shutting down
            }
        };
        for (entry, lease) in entries {
            let deliveries = match &counts {
                None => 1,
                Some(counts) => match counts.get(&entry.id) {
                    Some(n) => *n,
                    // No longer pending (acked meanwhile by someone, or its group recreated):
                    // nothing of ours to handle.
                    None => continue,
                },
            };
            let Some(slot) = self.slot().await else { return };
            self.start(Delivery::new(entry, deliveries, lease, slot));
        }
    }

    /// The exact delivery counts of `ids`, retried while Redis fails; `None` when shutting down.
    async fn delivery_counts(&self, ids: &[&str]) -> Option<std::collections::HashMap<String, u64>> {
        let redis = &self.worker.redis;
        redis
            .retry("reading delivery counts", || self.worker.stream.delivery_counts(ids), |wait| self.pause(wait))
            .await
    }

    /// Shutting down: hands back every entry pending under this consumer that is not running
    /// now (see [`crate::stream`]); best effort — what is not handed back is reclaimed after
    /// `CLAIM_IDLE_MS`, as before.
    pub async fn hand_back(&self) {
        let running = self.held.running();
        let running: Vec<&str> = running.iter().map(String::as_str).collect();
        match self.worker.stream.hand_back(&running).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(entries = n, stream = %self.worker.stream.keys.events, "handed back entries not started, for another replica")
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not hand back the entries not started; they are reclaimed after CLAIM_IDLE_MS")
            }
        }
    }

    fn start(&self, delivery: Delivery) {
        let id = delivery.id().to_string();
        let worker = self.worker.clone();
        let task = self.tasks.spawn(async move { worker.process(delivery).await });
        self.held.set_task(&id, task.abort_handle());
    }
}
