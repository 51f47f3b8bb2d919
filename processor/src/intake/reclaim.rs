//! The reclaimer: takes over entries abandoned by dead consumers (SPEC §4, reclaim) — a producer
//! of deliveries, like the reader.

use crate::intake::dispatch::Dispatcher;
use crate::stream::is_nogroup;
use crate::timing::Timing;

/// Takes over entries idle longer than `CLAIM_IDLE_MS` in any consumer, following the
/// XAUTOCLAIM cursor to the end of the pending list on each pass, no more at once than there
/// are free slots.
/// It scans every [`Timing::reclaim_every`] — at least every 5 s whatever `CLAIM_IDLE_MS` is,
/// so entries handed back by a replica that shut down are taken over at the next scan.
pub async fn run(dispatcher: &Dispatcher, timing: Timing, batch: usize) {
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
                    // Entries it claimed may be this consumer's now, their answer lost: the
                    // reader reads this consumer's own pending entries again.
                    dispatcher.reread();
                    break;
                }
            }
        }
    }
}
