//! Handling one entry: poison check, parse, handler with retries, then XACK or a
//! dead letter.

use crate::handlers::{Event, Registry};
use crate::retry::{reconnect_backoff, RetryPolicy, Verdict};
use crate::stream::{is_nogroup, Fields, RawEntry, Stream};
use backoff::backoff::Backoff;
use shared::entry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

/// What a worker needs, shared by every task.
pub struct Worker {
    pub stream: Stream,
    pub acker: crate::acker::Acker,
    pub registry: Registry,
    pub retry: RetryPolicy,
    pub max_deliveries: u64,
    pub redis: RedisState,
}

/// Remembers whether Redis answered last time, so an outage is logged once when it starts and
/// once when it ends, not once per attempt.
#[derive(Default)]
pub struct RedisState {
    down: AtomicBool,
}

impl RedisState {
    pub fn failed(&self, what: &str, err: &redis::RedisError) {
        if !self.down.swap(true, Ordering::SeqCst) {
            tracing::warn!(error = %err, "Redis unreachable ({what}); retrying with backoff");
        }
    }

    pub fn ok(&self) {
        if self.down.swap(false, Ordering::SeqCst) {
            tracing::info!("Redis reachable again");
        }
    }
}

/// Why an entry cannot be handled at all.
fn parse_event(id: &str, fields: &Fields) -> Result<Event, String> {
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let name = get(entry::EVENT).ok_or("malformed entry: no `event` field")?;
    let name = String::from_utf8(name.clone()).map_err(|_| "malformed entry: `event` is not UTF-8")?;
    let payload = get(entry::PAYLOAD).ok_or("malformed entry: no `payload` field")?.clone();
    let dedup_id =
        get(entry::DEDUP_ID).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_else(|| id.to_string());
    Ok(Event { id: id.to_string(), name, dedup_id, payload })
}

impl Worker {
    /// Retries a final Redis write (ack or dead letter) until it succeeds. A vanished group means
    /// the entry is no longer pending anywhere: nothing left to write.
    async fn settle<F, Fut, T>(&self, what: &str, id: &str, mut write: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut backoff = reconnect_backoff();
        loop {
            match write().await {
                Ok(v) => {
                    self.redis.ok();
                    return Some(v);
                }
                Err(err) if is_nogroup(&err) => {
                    tracing::warn!(stream_id = %id, "{what}: the consumer group is gone; the entry is no longer pending");
                    return None;
                }
                Err(err) => {
                    self.redis.failed(what, &err);
                    tokio::time::sleep(backoff.next_backoff().unwrap_or(Duration::from_secs(5))).await;
                }
            }
        }
    }

    async fn dead_letter(&self, entry: &RawEntry, error: &str, attempts: u32, deliveries: u64) {
        let written =
            self.settle("dead letter", &entry.id, || self.stream.dead_letter(entry, error, attempts, deliveries)).await;
        if let Some(dead_id) = written {
            crate::metrics::entries(crate::metrics::Entry::Dead, 1);
            tracing::warn!(stream_id = %entry.id, dead_id = %dead_id, attempts, deliveries, %error, "dead-lettered");
        }
    }

    /// Handles one delivered entry to its end: acked, or dead-lettered with the reason.
    ///
    /// `slot` (a `CONCURRENCY` permit) is released as soon as the handler is done, before the
    /// ack or dead letter is written: `CONCURRENCY` bounds the handlers running at once, and an
    /// entry waiting only for its (batched) ack does not keep the next one from starting. The
    /// caller waits for this whole future, ack included, before it lets the entry go.
    pub async fn process(self: Arc<Self>, entry: RawEntry, deliveries: u64, slot: OwnedSemaphorePermit) {
        let Some(fields) = &entry.fields else {
            // Deleted from the stream while pending: nothing to handle, nothing to keep.
            tracing::warn!(stream_id = %entry.id, "pending entry no longer in the stream; acked");
            self.settle("ack", &entry.id, || self.stream.ack(&entry.id)).await;
            return;
        };
        if deliveries > self.max_deliveries {
            let reason = format!(
                "delivered {deliveries} times, more than MAX_DELIVERIES={}; the handler was not run",
                self.max_deliveries
            );
            return self.dead_letter(&entry, &reason, 0, deliveries).await;
        }
        let event = match parse_event(&entry.id, fields) {
            Ok(event) => event,
            Err(reason) => return self.dead_letter(&entry, &reason, 0, deliveries).await,
        };
        self.handle(&entry, &event, deliveries, slot).await
    }

    async fn handle(&self, entry: &RawEntry, event: &Event, deliveries: u64, slot: OwnedSemaphorePermit) {
        let handler = self.registry.get(&event.name).clone();
        let started = Instant::now();
        let outcome = self.retry.run(|_| handler.handle(event)).await;
        drop(slot);
        crate::metrics::handler_duration(&event.name, started.elapsed().as_secs_f64());
        match outcome.verdict {
            Verdict::Done => {
                if self.settle("ack", &entry.id, || self.acker.ack(&entry.id)).await.is_some() {
                    crate::metrics::entries(crate::metrics::Entry::Acked, 1);
                    tracing::info!(
                        stream_id = %entry.id,
                        event = %event.name,
                        attempts = outcome.attempts,
                        outcome = "acked",
                        "processed"
                    );
                }
            }
            Verdict::Permanent(reason) => self.dead_letter(entry, &reason, outcome.attempts, deliveries).await,
            Verdict::Exhausted(reason) => {
                let reason = format!("retries exhausted after {} attempts: {reason}", outcome.attempts);
                self.dead_letter(entry, &reason, outcome.attempts, deliveries).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Fields {
        pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn entries_need_event_and_payload() {
        let ok = parse_event("1-0", &f(&[("event", "x"), ("payload", "{}"), ("dedup_id", "d")])).expect("valid");
        assert_eq!((ok.name.as_str(), ok.dedup_id.as_str(), ok.payload.as_slice()), ("x", "d", &b"{}"[..]));
        assert_eq!(parse_event("1-0", &f(&[("event", "x"), ("payload", "{}")])).expect("valid").dedup_id, "1-0");
        assert!(parse_event("1-0", &f(&[("payload", "{}")])).expect_err("no event").contains("event"));
        assert!(parse_event("1-0", &f(&[("event", "x")])).expect_err("no payload").contains("payload"));
    }
}
