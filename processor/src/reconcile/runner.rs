//! The runner: every interval (jittered) the replica holding the lease `{ns}:reconcile` runs a
//! pass, records it for `processor status` and the metrics, and renews the lease while it runs.

use super::pass::{Reconciler, Report};
use crate::downstream::meeting_baas::name;
use redis::RedisResult;
use shared::conn::Conn;
use std::time::Duration;

impl Reconciler {
    /// [`Self::pass`] inside a `reconcile` span when tracing is on.
    async fn traced_pass(&self) -> Result<Report, String> {
        let Some(traces) = &self.traces else { return self.pass(false).await };
        use opentelemetry::context::FutureExt;
        use opentelemetry::trace::TraceContextExt;
        use shared::otel::{KeyValue, SpanKind, Status};
        let span = shared::otel::span("reconcile", SpanKind::Internal, vec![]);
        let cx = traces.start(span, &opentelemetry::Context::new()).with_value(traces.clone());
        let report = self.pass(false).with_context(cx.clone()).await;
        let span = cx.span();
        match &report {
            Ok(r) => span.set_attributes([
                KeyValue::new("hookstream.calendars", r.calendars as i64),
                KeyValue::new("hookstream.drift", r.drift.len() as i64),
                KeyValue::new("hookstream.errors", r.errors.len() as i64),
            ]),
            Err(why) => span.set_status(Status::error(why.clone())),
        }
        span.end();
        report
    }

    /// Records a pass for `processor status` (`{ns}:reconcile:last`) and the metrics.
    async fn record(&self, report: &Result<Report, String>) {
        let ok = report.as_ref().is_ok_and(|r| r.errors.is_empty());
        crate::metrics::reconcile_run(ok);
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&self.partitions.namespace().reconcile_last)
            .arg("at")
            .arg(crate::clock::timestamp())
            .arg("result")
            .arg(if ok { "ok" } else { "error" });
        match report {
            Ok(r) => {
                for d in &r.drift {
                    crate::metrics::reconcile_drift(name(d.api), d.kind.label());
                }
                for _ in &r.missing_results {
                    crate::metrics::reconcile_drift("v2", "missing_result");
                }
                cmd.arg("duration_ms")
                    .arg(r.duration.as_millis() as u64)
                    .arg("calendars")
                    .arg(r.calendars)
                    .arg("events")
                    .arg(r.events)
                    .arg("drift")
                    .arg(r.drift.len())
                    .arg("missing_results")
                    .arg(r.missing_results.len())
                    .arg("error")
                    .arg(r.errors.join("; "));
            }
            Err(why) => {
                cmd.arg("error").arg(why);
            }
        }
        let _: RedisResult<i64> = cmd.query_async(&mut self.con.clone()).await;
    }

    /// Every interval (jittered), takes the lease — or, holding it already, renews it — and runs
    /// a pass; until aborted. While the pass runs the lease is renewed, so a pass longer than
    /// the interval never lets another replica start a second one; a replica reconciling alone
    /// keeps the interval (it does not find its own lease and skip).
    pub async fn run(self, holder: String) {
        let interval = self.settings.interval;
        if interval.is_zero() {
            return;
        }
        let lease = Lease {
            key: self.partitions.namespace().reconcile_lease.clone(),
            holder,
            ttl: interval,
            con: self.con.clone(),
        };
        let mut next = tokio::time::Instant::now() + crate::clock::jitter(interval, 0.1);
        loop {
            // Between passes, the calendars queued to be reconciled at once (SPEC §4.6).
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = tokio::time::sleep(NOW_POLL) => {
                    self.reconcile_queued().await;
                    continue;
                }
            }
            next = tokio::time::Instant::now() + crate::clock::jitter(interval, 0.1);
            if !matches!(lease.take().await, Ok(true)) {
                continue; // another replica reconciles this interval (or Redis is down)
            }
            let report = {
                let pass = self.traced_pass();
                tokio::pin!(pass);
                loop {
                    tokio::select! {
                        report = &mut pass => break report,
                        _ = tokio::time::sleep(interval / 3) => { let _ = lease.take().await; }
                    }
                }
            };
            match &report {
                Ok(r) => tracing::info!(
                    calendars = r.calendars,
                    events = r.events,
                    drift = r.drift.len(),
                    held_back = r.held_back,
                    missing_results = r.missing_results.len(),
                    errors = r.errors.len(),
                    duration_ms = r.duration.as_millis() as u64,
                    "reconcile pass done"
                ),
                Err(why) => tracing::warn!(error = %why, "reconcile pass failed: cannot list"),
            }
            self.record(&report).await;
        }
    }
}

/// How often every replica looks for calendars queued in `{ns}:reconcile:now`.
const NOW_POLL: Duration = Duration::from_secs(1);

impl Reconciler {
    /// Reconciles the calendars queued in `{ns}:reconcile:now` (a connection back to active),
    /// each by the one replica whose SPOP took it.
    async fn reconcile_queued(&self) {
        let key = &self.partitions.namespace().reconcile_now;
        let ids: RedisResult<Vec<String>> =
            redis::cmd("SPOP").arg(key).arg(16).query_async(&mut self.con.clone()).await;
        for id in ids.unwrap_or_default() {
            match self.calendar_now(&id).await {
                Ok(r) => tracing::info!(
                    calendar_id = %id,
                    events = r.events,
                    drift = r.drift.len(),
                    "reconciled a calendar whose connection is active again"
                ),
                Err(why) => {
                    tracing::warn!(calendar_id = %id, error = %why, "reconciling a calendar back to active failed")
                }
            }
        }
    }
}

/// The reconciler's lease `{ns}:reconcile`: one replica reconciles per interval.
struct Lease {
    key: String,
    holder: String,
    ttl: Duration,
    con: Conn,
}

/// Takes the lease when free, renews it when this holder has it; `1` when it is this holder's.
const LEASE_SCRIPT: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

impl Lease {
    async fn take(&self) -> RedisResult<bool> {
        let taken: i64 = redis::Script::new(LEASE_SCRIPT)
            .key(&self.key)
            .arg(&self.holder)
            .arg(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(taken == 1)
    }
}
