//! The retry policy: exponential backoff with jitter, a per-attempt timeout, `Retry-After`
//! honoured, and a total time budget.
//!
//! Time an attempt spends waiting for something shared — its meeting's lock, the API's write
//! limit — is neither failure nor slowness of its own: such waits run inside
//! [`crate::downstream::waits::excluded`], and the attempt's timeout and the retry budget do not count them.
//! A sync about hundreds of meetings then completes at the write limit's pace instead of timing
//! out.
//!
//! **One clock.** The budget is the entry's own time: wall time since its first attempt minus
//! the excluded waits, on tokio's clock, checked here before every wait. The `backoff` crate
//! only supplies the jittered delays; its own `max_elapsed_time` is off, because it stops on
//! `std::time::Instant`, which knows nothing of the excluded waits (12 meetings waiting for a
//! write limit of 2/s were dead-lettered after one attempt that way).
//!
//! This module and the Redis reconnect delay (`stream::reconnect_backoff`) are the only users
//! of the `backoff` crate. The crate is marked unmaintained (RUSTSEC-2025-0012, accepted in
//! `deny.toml`); swapping it for another policy is a change to those two places alone. The loop itself is written here rather than with `backoff::future::retry`
//! because that helper lets a `Retry-After` bypass the time budget; here a server's requested
//! delay that would cross the budget ends the retries instead.

use crate::downstream::waits::WaitClock;
use crate::handlers::{Event, HandlerError};
use crate::metrics::Attempt;
use backoff::backoff::Backoff;
use backoff::ExponentialBackoffBuilder;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How handler attempts are retried (from `RETRY_*` and `HANDLER_TIMEOUT_MS`).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max_interval: Duration,
    pub max_elapsed: Duration,
    pub attempt_timeout: Duration,
    /// The later retries, parked in Redis, once the in-place ones are over (SPEC §4.3).
    pub park: ParkPolicy,
}

/// The schedule of parked retries (`RETRY_PARK_INITIAL_MS`, `RETRY_PARK_MAX_MS`,
/// `RETRY_HORIZON_SECS`): where an entry goes once its in-place budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParkPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Wall time from an entry's first attempt after which it is dead-lettered at its next
    /// transient failure; zero: no parking at all.
    pub horizon: Duration,
}

impl ParkPolicy {
    /// No parking: an entry whose in-place budget is spent is dead-lettered.
    pub fn off() -> Self {
        Self { initial: Duration::ZERO, max: Duration::ZERO, horizon: Duration::ZERO }
    }

    pub fn enabled(&self) -> bool {
        !self.horizon.is_zero()
    }

    /// How long an entry parked `parked_before` times already waits this time:
    /// `RETRY_PARK_INITIAL_MS` doubling up to `RETRY_PARK_MAX_MS`, jittered (±25 %), and at least
    /// what the downstream asked for (`asked`: a `Retry-After`, an open breaker's cooldown),
    /// itself capped at `RETRY_PARK_MAX_MS`.
    pub fn delay(&self, parked_before: u32, asked: Option<Duration>) -> Duration {
        let mut schedule = ExponentialBackoffBuilder::new()
            .with_initial_interval(self.initial)
            .with_max_interval(self.max)
            .with_multiplier(2.0)
            .with_randomization_factor(0.25)
            .with_max_elapsed_time(None)
            .build();
        let mut delay = self.initial;
        // Past 64 doublings every delay is the maximum anyway.
        for _ in 0..=parked_before.min(64) {
            delay = schedule.next_backoff().unwrap_or(self.max);
        }
        delay.min(self.max).max(asked.unwrap_or_default().min(self.max))
    }
}

/// How the retries ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Done,
    /// A permanent error: retrying cannot help.
    Permanent(String),
    /// Transient errors until the time budget ran out; the last one.
    Exhausted(String),
    /// With parking on: a retry is due later than this delivery should wait in place — the
    /// downstream asked for a `Retry-After` longer than `RETRY_MAX_INTERVAL_MS`, or its breaker
    /// is open — so the entry is parked at once, for at least `wait`.
    /// `breaker`: the downstream whose open breaker refused the call, when that is why.
    Deferred {
        reason: String,
        wait: Duration,
        breaker: Option<&'static str>,
    },
}

/// The verdict and how many attempts it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub attempts: u32,
}

impl RetryPolicy {
    fn backoff(&self) -> backoff::ExponentialBackoff {
        ExponentialBackoffBuilder::new()
            .with_initial_interval(self.initial)
            .with_max_interval(self.max_interval)
            .with_multiplier(2.0)
            .with_randomization_factor(0.5)
            // The budget is kept here, on the clock that knows the excluded waits: the crate's own
            // `max_elapsed_time` runs on `std::time::Instant` and would count them.
            .with_max_elapsed_time(None)
            .build()
    }

    /// Runs `attempt` until it succeeds, fails permanently, or the time budget is spent.
    /// `attempt` receives the attempt number (1, 2, …). Every failed attempt logs one `warn`
    /// line naming the entry, the event, the attempt, the error's class and message, and the
    /// wait before the next attempt (if any), so a struggling entry is visible at once.
    pub async fn run<F, Fut>(&self, event: &Event, mut attempt: F) -> Outcome
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<(), HandlerError>>,
    {
        let started = Instant::now();
        let clock = Arc::new(WaitClock::default());
        let mut backoff = self.backoff();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let failed = |class: &str, reason: &str, next: Option<Duration>| {
                let next_wait = next.map_or_else(|| "none in place".to_string(), |d| format!("{} ms", d.as_millis()));
                tracing::warn!(
                    stream_id = %event.id,
                    event = %event.name,
                    attempt = attempts,
                    class,
                    error = %reason,
                    next_wait = %next_wait,
                    "attempt failed"
                );
            };
            let (reason, retry_after) =
                match self.timed(&clock, crate::downstream::waits::counted(clock.clone(), attempt(attempts))).await {
                    Some(Ok(())) => {
                        crate::metrics::attempt(Attempt::Ok);
                        return Outcome { verdict: Verdict::Done, attempts };
                    }
                    Some(Err(HandlerError::Permanent(reason))) => {
                        crate::metrics::attempt(Attempt::Permanent);
                        failed("permanent", &reason, None);
                        return Outcome { verdict: Verdict::Permanent(reason), attempts };
                    }
                    Some(Err(HandlerError::Unavailable { reason, wait, downstream })) => {
                        // The downstream was not called: not an attempt, and not the entry's time.
                        attempts -= 1;
                        tracing::debug!(stream_id = %event.id, event = %event.name, error = %reason, "breaker open");
                        if self.park.enabled() {
                            let breaker = Some(downstream);
                            return Outcome { verdict: Verdict::Deferred { reason, wait, breaker }, attempts };
                        }
                        crate::downstream::waits::counted(
                            clock.clone(),
                            crate::downstream::waits::excluded(tokio::time::sleep(wait)),
                        )
                        .await;
                        continue;
                    }
                    Some(Err(HandlerError::Transient { reason, retry_after })) => (reason, retry_after),
                    None => (format!("attempt timed out after {} ms", self.attempt_timeout.as_millis()), None),
                };
            crate::metrics::attempt(Attempt::Transient);
            if let Some(wait) = retry_after.filter(|wait| self.park.enabled() && *wait > self.max_interval) {
                // Longer than an in-place wait may be: parked, not holding a slot that long.
                failed("transient", &reason, None);
                return Outcome { verdict: Verdict::Deferred { reason, wait, breaker: None }, attempts };
            }
            let own_time = started.elapsed().saturating_sub(clock.excluded());
            let delay = backoff
                .next_backoff()
                .map(|delay| delay.max(retry_after.unwrap_or_default()))
                .filter(|delay| own_time.checked_add(*delay).is_some_and(|end| end <= self.max_elapsed));
            failed("transient", &reason, delay);
            let Some(delay) = delay else {
                return Outcome { verdict: Verdict::Exhausted(reason), attempts };
            };
            tokio::time::sleep(delay).await;
        }
    }
}

impl RetryPolicy {
    /// Runs one attempt under `HANDLER_TIMEOUT_MS`, not counting what it waits in [`excluded`];
    /// `None` when it timed out.
    async fn timed<T>(&self, clock: &WaitClock, attempt: impl Future<Output = T>) -> Option<T> {
        let start = Instant::now();
        let excluded_before = clock.excluded();
        tokio::pin!(attempt);
        loop {
            let deadline = start + self.attempt_timeout + clock.excluded().saturating_sub(excluded_before);
            tokio::select! {
                done = &mut attempt => return Some(done),
                _ = tokio::time::sleep_until(deadline) => {
                    let now_deadline = start + self.attempt_timeout + clock.excluded().saturating_sub(excluded_before);
                    if now_deadline <= Instant::now() {
                        return None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::downstream::waits::excluded;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy(max_elapsed_ms: u64) -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(1),
            max_interval: Duration::from_millis(5),
            max_elapsed: Duration::from_millis(max_elapsed_ms),
            attempt_timeout: Duration::from_millis(200),
            park: ParkPolicy::off(),
        }
    }

    fn event() -> Event {
        Event { id: "1-0".into(), name: "test".into(), dedup_id: "d".into(), payload: Vec::new() }
    }

    fn transient(retry_after: Option<Duration>) -> HandlerError {
        HandlerError::Transient { reason: "boom".into(), retry_after }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let outcome = policy(10_000)
            .run(&event(), |_| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(transient(None))
                } else {
                    Ok(())
                }
            })
            .await;
        assert_eq!(outcome, Outcome { verdict: Verdict::Done, attempts: 4 });
    }

    #[tokio::test]
    async fn permanent_errors_stop_at_once() {
        let outcome = policy(10_000).run(&event(), |_| async { Err(HandlerError::Permanent("no".into())) }).await;
        assert_eq!(outcome, Outcome { verdict: Verdict::Permanent("no".into()), attempts: 1 });
    }

    #[tokio::test(start_paused = true)]
    async fn the_time_budget_ends_retries() {
        let started = Instant::now();
        let outcome = policy(30).run(&event(), |_| async { Err(transient(None)) }).await;
        assert_eq!(outcome.verdict, Verdict::Exhausted("boom".into()));
        assert!(outcome.attempts > 1);
        // Paused time: no wait is started that would end past the budget.
        assert!(started.elapsed() <= Duration::from_millis(30), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn slow_attempts_time_out_as_transient() {
        let mut p = policy(10_000);
        p.attempt_timeout = Duration::from_millis(10);
        let calls = AtomicU32::new(0);
        let outcome = p
            .run(&event(), |_| async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    std::future::pending::<()>().await;
                }
                Ok(())
            })
            .await;
        assert_eq!(outcome, Outcome { verdict: Verdict::Done, attempts: 2 });
    }

    #[tokio::test(start_paused = true)]
    async fn excluded_waits_do_not_count_against_the_timeout_or_the_budget() {
        let mut p = policy(1_000);
        p.attempt_timeout = Duration::from_millis(100);
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let outcome = p
            .run(&event(), |_| async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                // Waits for a shared limit far longer than the attempt timeout and the budget.
                excluded(tokio::time::sleep(Duration::from_secs(30))).await;
                tokio::time::sleep(Duration::from_millis(50)).await; // its own work: inside 100 ms
                if n == 0 {
                    Err(transient(None))
                } else {
                    Ok(())
                }
            })
            .await;
        assert_eq!(outcome, Outcome { verdict: Verdict::Done, attempts: 2 });
        assert!(started.elapsed() >= Duration::from_secs(60));
        // Its own slowness still counts.
        let outcome = p
            .run(&event(), |_| async {
                excluded(tokio::time::sleep(Duration::from_secs(30))).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
                Ok(())
            })
            .await;
        assert_eq!(outcome.verdict, Verdict::Exhausted("attempt timed out after 100 ms".into()));
    }

    /// In real time, not paused: the budget must be kept on the clock that knows the excluded
    /// waits. (The `backoff` crate's own `max_elapsed_time` runs on `std::time::Instant`, which
    /// paused tokio time does not move, so a paused test cannot see it stop on its own clock.)
    #[tokio::test]
    async fn excluded_waits_do_not_spend_the_budget_in_real_time() {
        let mut p = policy(300);
        p.attempt_timeout = Duration::from_millis(200);
        let calls = AtomicU32::new(0);
        let outcome = p
            .run(&event(), |_| async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                // Waits for the shared write limit longer than the whole budget.
                excluded(tokio::time::sleep(Duration::from_millis(500))).await;
                if n == 0 {
                    Err(transient(None))
                } else {
                    Ok(())
                }
            })
            .await;
        assert_eq!(outcome, Outcome { verdict: Verdict::Done, attempts: 2 });
    }

    #[tokio::test]
    async fn a_huge_retry_after_ends_the_retries_without_overflow() {
        let huge = Duration::from_secs(u64::MAX);
        let outcome = policy(100).run(&event(), |_| async { Err(transient(Some(huge))) }).await;
        assert_eq!(outcome, Outcome { verdict: Verdict::Exhausted("boom".into()), attempts: 1 });
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_waited_for_and_counts_against_the_budget() {
        let started = Instant::now();
        let calls = AtomicU32::new(0);
        let outcome = policy(10_000)
            .run(&event(), |_| async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(transient(Some(Duration::from_millis(150))))
                } else {
                    Ok(())
                }
            })
            .await;
        assert_eq!(outcome.verdict, Verdict::Done);
        // Paused time: the clock moved exactly as far as the loop slept.
        assert!(started.elapsed() >= Duration::from_millis(150), "waited {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_millis(160), "waited {:?}", started.elapsed());

        // A Retry-After beyond the budget ends the retries instead of overrunning it.
        let outcome = policy(100).run(&event(), |_| async { Err(transient(Some(Duration::from_secs(60)))) }).await;
        assert_eq!(outcome, Outcome { verdict: Verdict::Exhausted("boom".into()), attempts: 1 });
    }

    fn parking() -> ParkPolicy {
        ParkPolicy {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(3_600),
            horizon: Duration::from_secs(86_400),
        }
    }

    #[test]
    fn park_delays_double_from_the_initial_to_the_maximum_with_jitter() {
        let p = parking();
        for _ in 0..50 {
            let first = p.delay(0, None);
            assert!(first >= Duration::from_secs(45) && first <= Duration::from_secs(75), "{first:?}");
            let third = p.delay(2, None);
            assert!(third >= Duration::from_secs(180) && third <= Duration::from_secs(300), "{third:?}");
            assert!(p.delay(40, None) <= p.max && p.delay(40, None) >= Duration::from_secs(2_700));
            assert!(p.delay(u32::MAX, None) <= p.max);
        }
        // What the downstream asked for, capped at the maximum.
        assert_eq!(p.delay(0, Some(Duration::from_secs(600))), Duration::from_secs(600));
        assert_eq!(p.delay(0, Some(Duration::from_secs(86_400))), p.max);
        assert!(!ParkPolicy::off().enabled() && p.enabled());
    }

    #[tokio::test(start_paused = true)]
    async fn with_parking_a_long_retry_after_or_an_open_breaker_defers_at_once() {
        let mut p = policy(10_000);
        p.park = parking();
        // Longer than RETRY_MAX_INTERVAL_MS (5 ms here): not waited for in place.
        let outcome = p.run(&event(), |_| async { Err(transient(Some(Duration::from_secs(3_600)))) }).await;
        assert_eq!(
            outcome,
            Outcome {
                verdict: Verdict::Deferred { reason: "boom".into(), wait: Duration::from_secs(3_600), breaker: None },
                attempts: 1
            }
        );
        // An open breaker: not an attempt at all.
        let open = || HandlerError::Unavailable {
            reason: "open".into(),
            wait: Duration::from_secs(30),
            downstream: "forward",
        };
        let outcome = p.run(&event(), |_| async { Err(open()) }).await;
        assert_eq!(
            outcome,
            Outcome {
                verdict: Verdict::Deferred {
                    reason: "open".into(),
                    wait: Duration::from_secs(30),
                    breaker: Some("forward")
                },
                attempts: 0
            }
        );
        // Without parking, the breaker's wait is waited for in place, outside the budget.
        let mut p = policy(100);
        p.attempt_timeout = Duration::from_millis(50);
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let outcome = p
            .run(&event(), |_| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(open())
                } else {
                    Ok(())
                }
            })
            .await;
        assert_eq!(outcome, Outcome { verdict: Verdict::Done, attempts: 1 });
        assert!(started.elapsed() >= Duration::from_secs(60));
    }
}
