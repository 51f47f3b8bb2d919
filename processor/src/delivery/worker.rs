//! Handling one delivery: poison check, parse, fan-out, handler with retries under its
//! meeting's lock, then its verdict — ack or dead letter — or nothing at all when the lease is
//! lost on the way.
//!
//! **Fan-out.** An entry about several meetings (a v1 sync, a v2 webhook with many instances)
//! is not handled as a whole, where the first failing meeting would stop the rest or make them
//! all run again. It is split into one entry per meeting, appended to the stream and the
//! original acked in one script (exactly once). Each new entry carries the original's fields —
//! `dedup_id`, `request_id`, `received_at` — plus `fanout_of` (the original's id) and `meeting`,
//! with the payload narrowed to that meeting; each is then processed, retried, locked and
//! dead-lettered on its own.
//!
//! **One meeting at a time.** An entry about one meeting runs each handler attempt under that
//! meeting's lock ([`crate::downstream::lock`]), so two entries about one meeting never read, decide and act
//! at the same time, on any replica.

use crate::delivery::acker::Acker;
use crate::delivery::{Delivery, Settled};
use crate::downstream::lock::MeetingLocks;
use crate::handlers::{Event, HandlerError, Registry};
use crate::outcome::retry::{RetryPolicy, Verdict};
use crate::replies::Fields;
use crate::stream::{RedisState, Stream};
use shared::entry;
use std::time::{Duration, Instant};

/// Why an entry is retried later, and what the downstream asked for.
struct Later<'a> {
    /// The last error.
    reason: &'a str,
    /// How long the downstream wants the entry to wait (a `Retry-After`, an open breaker).
    asked: Option<std::time::Duration>,
    /// The downstream whose open breaker refused the call, if that is why.
    breaker: Option<&'static str>,
    /// Attempts in this delivery.
    attempts: u32,
}

/// What handling needs, shared by every delivery.
pub struct Worker {
    pub stream: Stream,
    pub acker: Acker,
    pub registry: Registry,
    pub retry: RetryPolicy,
    pub max_deliveries: u64,
    pub redis: std::sync::Arc<RedisState>,
    pub locks: MeetingLocks,
    /// The partition layout check, shared by every partition.
    pub layout: std::sync::Arc<shared::layout::Layout>,
    /// Spans, when tracing is on ([`crate::traces`]).
    pub traces: Option<shared::otel::Traces>,
    /// Whether the namespace has several partitions (the spans then name this one).
    pub partitioned: bool,
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
    /// Handles one delivery to its end: acked, dead-lettered with the reason, or — when another
    /// consumer took it over meanwhile — let go without a verdict.
    ///
    /// The delivery's `CONCURRENCY` slot is released as soon as the handler is done, before the
    /// verdict is written: `CONCURRENCY` bounds the handlers running at once, and an entry
    /// waiting only for its (batched) ack does not keep the next one from starting.
    pub async fn process(&self, delivery: Delivery) {
        // Every line logged while this delivery is handled — the handlers' too ("bot scheduled",
        // a failed attempt, the verdict) — carries the entry's stream id, request id and event
        // as the fields of this span: one meeting or one webhook is followed with `grep`.
        use tracing::Instrument;
        let text = |name: &str| {
            delivery.entry.bytes(name).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()
        };
        let span = tracing::info_span!(
            "entry",
            stream_id = %delivery.entry.id,
            request_id = %text(entry::REQUEST_ID),
            event = %text(entry::EVENT)
        );
        self.traced(delivery).instrument(span).await
    }

    async fn traced(&self, delivery: Delivery) {
        let Some(traces) = &self.traces else { return self.handle(delivery).await };
        use opentelemetry::context::FutureExt;
        use opentelemetry::trace::TraceContextExt;
        let source = crate::traces::Source {
            stream: &self.stream.keys.events,
            group: &self.stream.group,
            consumer: &self.stream.consumer,
            partition: self.partitioned.then_some(self.stream.keys.partition),
        };
        // A re-run: reclaimed (delivered before), or appended again from the retry set.
        let rerun = delivery.entry.bytes(entry::PARKED).is_some();
        let cx = crate::traces::delivery(traces, &source, &delivery.entry, delivery.deliveries, rerun);
        Box::pin(self.handle(delivery)).with_context(cx.clone()).await;
        cx.span().end();
    }

    async fn handle(&self, mut delivery: Delivery) {
        let Some(fields) = &delivery.entry.fields else {
            // Deleted from the stream while pending: nothing to handle, nothing to keep.
            tracing::warn!(stream_id = %delivery.id(), "pending entry no longer in the stream; acked");
            crate::traces::outcome("acked", None, Some("no longer in the stream"));
            delivery.ack(&self.acker, &self.stream, &self.redis).await;
            return;
        };
        if delivery.deliveries > self.max_deliveries {
            let reason = format!(
                "delivered {} times, more than MAX_DELIVERIES={}; the handler was not run",
                delivery.deliveries, self.max_deliveries
            );
            return self.dead_letter(delivery, &reason, 0).await;
        }
        let event = match parse_event(delivery.id(), fields) {
            Ok(event) => event,
            Err(reason) => return self.dead_letter(delivery, &reason, 0).await,
        };
        let handler = self.registry.get(&event.name).clone();
        let meetings = match handler.meetings(&event) {
            Ok(meetings) => meetings,
            Err(err) => return self.dead_letter(delivery, &err.to_string(), 0).await,
        };
        if meetings.len() > 1 {
            let parts: Vec<(Vec<u8>, String)> = meetings.into_iter().map(|m| (m.payload, m.key)).collect();
            delivery.release_slot();
            let meetings = parts.len();
            if let Settled::FannedOut = Box::pin(delivery.fan_out(&self.stream, &self.redis, &parts)).await {
                crate::metrics::entries(crate::metrics::Entry::Acked, 1);
                crate::traces::outcome("fanned_out", None, None);
                tracing::info!(
                    stream_id = %event.id,
                    event = %event.name,
                    meetings,
                    outcome = "fanned_out",
                    "split into one entry per meeting"
                );
            }
            return;
        }
        let meeting = meetings.into_iter().next().map(|m| m.key);
        let started = Instant::now();
        let began = crate::clock::now();
        let attempt = |_| {
            let (handler, event, meeting) = (&handler, &event, &meeting);
            async move {
                let Some(key) = meeting else { return handler.handle(event).await };
                // Waiting for the lock is not this attempt's slowness (see `waits::excluded`).
                // The lock's futures are boxed: entries about no meeting (the hot, forwarding
                // path) should not carry their size in every task.
                let lock = Box::pin(crate::downstream::waits::excluded(self.locks.lock(key)))
                    .await
                    .map_err(|e| HandlerError::transient(format!("cannot take the lock of meeting {key}: {e}")))?;
                // The guard is the attempt's: renewed while it runs, stopped if lost, released
                // (or, dropped by a timeout, unregistered at once) when it ends.
                Box::pin(lock.run(handler.handle(event)))
                    .await
                    .unwrap_or_else(|lost| Err(HandlerError::transient(lost)))
            }
        };
        let outcome = tokio::select! {
            outcome = self.retry.run(&event, attempt) => outcome,
            _ = delivery.lost() => {
                crate::metrics::lease_lost();
                crate::traces::outcome("lost", None, None);
                tracing::warn!(
                    stream_id = %event.id,
                    event = %event.name,
                    "lease lost while handling: another consumer owns the entry now; stopped, no verdict"
                );
                return;
            }
        };
        delivery.release_slot();
        crate::metrics::handler_duration(&event.name, started.elapsed().as_secs_f64());
        match outcome.verdict {
            Verdict::Done => {
                if delivery.ack(&self.acker, &self.stream, &self.redis).await == Settled::Acked {
                    crate::metrics::entries(crate::metrics::Entry::Acked, 1);
                    crate::traces::outcome("acked", Some(outcome.attempts), None);
                    tracing::info!(
                        stream_id = %event.id,
                        event = %event.name,
                        attempts = outcome.attempts,
                        outcome = "acked",
                        "processed"
                    );
                }
            }
            Verdict::Permanent(reason) => self.dead_letter(delivery, &reason, outcome.attempts).await,
            Verdict::Exhausted(reason) => {
                let later = Later { reason: &reason, asked: None, breaker: None, attempts: outcome.attempts };
                self.retry_later(delivery, &event, began, later).await
            }
            Verdict::Deferred { reason, wait, breaker } => {
                let later = Later { reason: &reason, asked: Some(wait), breaker, attempts: outcome.attempts };
                self.retry_later(delivery, &event, began, later).await
            }
        }
    }

    /// The in-place retries are over (or cannot help yet) after a transient failure: the entry
    /// is parked for a later retry ([`crate::outcome::parking`]), or dead-lettered when parking is off or
    /// `RETRY_HORIZON_SECS` have passed since its first attempt.
    async fn retry_later(
        &self,
        delivery: Delivery,
        event: &Event,
        began: chrono::DateTime<chrono::Utc>,
        later: Later<'_>,
    ) {
        let Later { reason, asked, breaker, attempts } = later;
        let park = self.retry.park;
        if !park.enabled() {
            let reason = format!("retries exhausted after {attempts} attempts: {reason}");
            return self.dead_letter(delivery, &reason, attempts).await;
        }
        let history = crate::outcome::parking::History::of(&delivery.entry);
        let first = history.first_attempt_at.unwrap_or(began);
        let total = history.attempts + attempts;
        let elapsed = (crate::clock::now() - first).to_std().unwrap_or_default();
        let Some(left) = park.horizon.checked_sub(elapsed).filter(|left| !left.is_zero()) else {
            let reason = format!(
                "gave up at the retry horizon: RETRY_HORIZON_SECS={} have passed since the first attempt at {} \
                 ({total} attempts, parked {} times); last error: {reason}",
                park.horizon.as_secs(),
                first.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                history.parked
            );
            return self.dead_letter(delivery, &reason, attempts).await;
        };
        // Behind an open breaker the entry made no attempt: it waits for the breaker (woken when
        // it closes), and its park delay does not double — a probe that `retry now` asked for
        // must not push the entries it made due a doubled delay away. Never parked past the
        // horizon: the retry at the horizon is the last one.
        let (delay, parked) = match (breaker, asked) {
            (Some(_), Some(wait)) => (wait.clamp(park.initial.min(Duration::from_secs(1)), park.max), history.parked),
            _ => (park.delay(history.parked, asked), history.parked + 1),
        };
        let delay = delay.min(left);
        let mut record =
            crate::outcome::parking::Record::new(&delivery.entry, &event.name, total, first, parked, reason);
        // Woken at once when that breaker closes (see `crate::downstream::breaker`), not at its due time.
        record.waits_for = breaker.map(str::to_string);
        if let Settled::Parked(due) =
            Box::pin(delivery.park(&self.stream, &self.redis, &record.to_member(), delay)).await
        {
            crate::metrics::entries(crate::metrics::Entry::Parked, 1);
            crate::traces::outcome("parked", Some(total), Some(reason));
            tracing::info!(
                stream_id = %event.id,
                event = %event.name,
                attempts = total,
                parked,
                delay_ms = delay.as_millis() as u64,
                due_ms = due.unwrap_or_default(),
                error = %reason,
                outcome = "parked",
                "parked for a later retry"
            );
        }
    }

    async fn dead_letter(&self, delivery: Delivery, reason: &str, attempts: u32) {
        let (id, deliveries) = (delivery.id().to_string(), delivery.deliveries);
        let reconcile_meeting = (delivery.entry.bytes(entry::EVENT)
            == Some(crate::handlers::reconcile::EVENT.as_bytes()))
        .then(|| delivery.entry.bytes(entry::DEDUP_ID).map(|d| String::from_utf8_lossy(d).into_owned()))
        .flatten();
        if let Settled::Dead(dead_id) =
            Box::pin(delivery.dead_letter(&self.stream, &self.redis, reason, attempts)).await
        {
            crate::metrics::entries(crate::metrics::Entry::Dead, 1);
            crate::traces::outcome("dead", Some(attempts), Some(reason));
            let dead_id = dead_id.unwrap_or_else(|| "(its answer was lost)".into());
            tracing::warn!(stream_id = %id, dead_id = %dead_id, attempts, deliveries, error = %reason, "dead-lettered");
            if let Some(meeting) = reconcile_meeting {
                // The reconciler holds this meeting back for a while (SPEC §4.4).
                let key = &self.stream.keys.reconcile_dead;
                if let Err(err) =
                    crate::handlers::reconcile::record_dead(&mut self.stream.connection(), key, &meeting).await
                {
                    tracing::debug!(error = %err, "recording a dead reconcile entry failed");
                }
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
