//! Waits for something shared — a meeting's lock, a slot of the API's write limit — that are
//! not the waiting attempt's own slowness.
//!
//! The retry loop ([`crate::outcome::retry`]) runs each handler attempt [`counted`] by a [`WaitClock`];
//! code that waits for a shared resource wraps the wait in [`excluded`]. The attempt's timeout
//! (`HANDLER_TIMEOUT_MS`) and the retry budget (`RETRY_MAX_ELAPSED_MS`) then leave that time
//! out. This module sits below both the retry loop and the handlers, so neither imports the
//! other for it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

tokio::task_local! {
    static CLOCK: Arc<WaitClock>;
}

/// How long the current attempt has waited inside [`excluded`]: the waits that are over, and
/// since when the one under way (if any) has been waiting.
pub struct WaitClock {
    base: Instant,
    done_us: AtomicU64,
    /// Microseconds after `base` + 1 at which the wait under way began; 0 when none is.
    since_us: AtomicU64,
}

impl Default for WaitClock {
    fn default() -> Self {
        Self { base: Instant::now(), done_us: AtomicU64::new(0), since_us: AtomicU64::new(0) }
    }
}

impl WaitClock {
    fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    /// The time excluded so far, the wait under way included.
    pub fn excluded(&self) -> Duration {
        let since = self.since_us.load(Ordering::SeqCst);
        let current = if since == 0 { 0 } else { self.now_us().saturating_sub(since - 1) };
        Duration::from_micros(self.done_us.load(Ordering::SeqCst) + current)
    }
}

/// Runs `wait` (waiting for a meeting's lock, or for the API's write limit) without counting
/// its time against the attempt's timeout or the retry budget. Waits of one attempt follow one
/// another; they do not overlap.
pub async fn excluded<F: Future>(wait: F) -> F::Output {
    let Ok(clock) = CLOCK.try_with(Arc::clone) else { return wait.await };
    clock.since_us.store(clock.now_us() + 1, Ordering::SeqCst);
    struct End(Arc<WaitClock>);
    impl Drop for End {
        fn drop(&mut self) {
            let since = self.0.since_us.swap(0, Ordering::SeqCst);
            if since != 0 {
                self.0.done_us.fetch_add(self.0.now_us().saturating_sub(since - 1), Ordering::SeqCst);
            }
        }
    }
    let _end = End(clock);
    wait.await
}

/// Runs `attempt` with `clock` counting the waits inside it.
pub async fn counted<F: Future>(clock: Arc<WaitClock>, attempt: F) -> F::Output {
    CLOCK.scope(clock, attempt).await
}
