//! Housekeeping loops: the reclaimer (takes over entries abandoned by dead consumers) and the
//! tidier (trims processed entries, removes consumers long gone).

use crate::config::Timing;
use crate::dispatch::Dispatcher;
use crate::ops::Ops;
use crate::stream::is_nogroup;
use std::time::Duration;

/// Takes over entries idle longer than `CLAIM_IDLE_MS` in any consumer, following the
/// XAUTOCLAIM cursor to the end of the pending list on each pass, no more at once than there
/// are free slots.
/// It scans every [`Timing::reclaim_every`] — at least every 5 s whatever `CLAIM_IDLE_MS` is,
/// so entries handed back by a replica that shut down are taken over at the next scan.
pub async fn reclaim(dispatcher: &Dispatcher, timing: Timing, batch: usize) {
    let (every, claim_idle) = (timing.reclaim_every, timing.claim_idle);
    let stream = &dispatcher.worker.stream;
    let redis = &dispatcher.worker.redis;
    while dispatcher.pause(every).await {
        let mut cursor = "0-0".to_string();
        loop {
            let free = dispatcher.free_slots().min(batch);
            if free == 0 {
                break;
            }
            let sent = tokio::time::Instant::now();
            match stream.autoclaim(claim_idle, &cursor, free).await {
                Ok(claim) => {
                    redis.ok();
                    for id in &claim.deleted {
                        tracing::warn!(stream_id = %id, "a pending entry was deleted from the stream before it was processed");
                    }
                    if !claim.claimed.is_empty() {
                        crate::metrics::entries(crate::metrics::Entry::Reclaimed, claim.claimed.len() as u64);
                        tracing::info!(entries = claim.claimed.len(), "reclaimed idle entries");
                        let held = dispatcher.hold(claim.claimed, sent);
                        dispatcher.dispatch_batch(held, false).await;
                    }
                    if claim.next == "0-0" || dispatcher.stopping() {
                        break;
                    }
                    cursor = claim.next;
                }
                Err(err) if is_nogroup(&err) => break, // the reader recreates the group
                Err(err) => {
                    redis.failed("reclaiming", &err);
                    break;
                }
            }
        }
    }
}

/// Trims processed entries, and removes consumers that are long gone (idle past
/// `CONSUMER_IDLE_REAP_SECS` with nothing pending; one with pending entries is never removed).
pub async fn tidy(dispatcher: &Dispatcher, ops: Ops, every: Duration, retention: Duration, reap_after: Duration) {
    let stream = &dispatcher.worker.stream;
    while dispatcher.pause(every).await {
        match stream.trim(retention).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(entries = n, "trimmed the stream"),
            Err(err) => tracing::debug!(error = %err, "trim failed; will try again"),
        }
        match ops.reap_consumers(reap_after, &stream.consumer).await {
            Ok(reaped) => {
                for name in reaped {
                    tracing::info!(consumer = %name, "removed an idle consumer with nothing pending");
                }
            }
            Err(err) => tracing::debug!(error = %err, "reaping consumers failed; will try again"),
        }
    }
}
