//! The lease keeper: renews the lease of every entry whose idle time was not reset for a third
//! of `CLAIM_IDLE_MS`, in one script call per round (see [`crate::stream`]), so that a slow
//! handler — or an entry waiting for a slot — never looks abandoned to the other replicas'
//! reclaimers. An entry the script reports as owned by another consumer is marked lost in the
//! [`Held`] table: its delivery stops and writes no verdict. (Meeting locks are renewed by
//! their own keeper, [`crate::downstream::lock::keep`].)
//!
//! It runs until aborted, through the shutdown grace period too: entries still being finished
//! must stay leased.

use crate::delivery::Held;
use crate::stream::Stream;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(held: Arc<Held>, stream: Stream, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let due = held.due(every);
        if due.is_empty() {
            continue;
        }
        let ids: Vec<&str> = due.iter().map(String::as_str).collect();
        let sent = tokio::time::Instant::now();
        match stream.lease(&ids).await {
            Ok(lost) => {
                for id in &lost {
                    tracing::warn!(stream_id = %id, "lease lost: another consumer owns the entry now");
                    held.lose(id);
                }
                let renewed: Vec<String> = due.into_iter().filter(|id| !lost.contains(id)).collect();
                held.renewed(&renewed, sent);
            }
            Err(err) => tracing::debug!(error = %err, "lease renewal failed; will try again"),
        }
    }
}
