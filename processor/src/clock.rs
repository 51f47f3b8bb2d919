//! Whose clock: Redis's.
//!
//! Replicas compare times that other replicas wrote — an entry's `first_attempt_at` against the
//! retry horizon, a stream id against the trim retention, a dead entry's id against a purge
//! age, a meeting's start against "now" — and their wall clocks may disagree by minutes (a
//! host without NTP, a VM thawed from a snapshot). So every such time is read on one clock,
//! Redis's (`TIME`), the clock that already scores the retry set and runs every script:
//!
//! - [`sync`] asks Redis for `TIME` and keeps the answer next to this process's *monotonic*
//!   clock (`Instant`), taken halfway through the round trip;
//! - [`now_ms`] / [`now`] is that answer carried forward on the monotonic clock: no round trip
//!   on the hot path, and a wall clock that is off, or jumps, changes nothing;
//! - [`keep`] syncs again every few seconds, so the monotonic clock's drift never adds up.
//!
//! Before the first sync (Redis not reachable yet) the process's own wall clock is used: no
//! time-based decision is written to Redis before Redis answers anyway.
//!
//! What stays on the process's clock: durations it measures itself (timeouts, backoff waits,
//! a lease's renewal interval — all on `Instant`), and the Prometheus timestamp of the last
//! reconcile pass (read by Prometheus, next to its own clock).

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Redis's `TIME` in Unix ms, and this process's monotonic clock at that moment.
static SAMPLE: Mutex<Option<(u64, Instant)>> = Mutex::new(None);

/// How often [`keep`] syncs.
pub const SYNC_EVERY: Duration = Duration::from_secs(10);

fn sample() -> Option<(u64, Instant)> {
    *SAMPLE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads Redis's `TIME` and makes it the clock of this process.
pub async fn sync<C: redis::aio::ConnectionLike>(con: &mut C) -> redis::RedisResult<()> {
    let asked = Instant::now();
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(con).await?;
    let answered = Instant::now();
    let at = asked + (answered - asked) / 2;
    let ms = secs.saturating_mul(1_000).saturating_add(micros / 1_000);
    *SAMPLE.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((ms, at));
    Ok(())
}

/// Syncs every [`SYNC_EVERY`], for ever (a failed sync keeps the last one).
pub async fn keep(con: shared::conn::Conn) {
    loop {
        if let Err(err) = sync(&mut con.clone()).await {
            tracing::debug!(error = %err, "Redis TIME not read; the clock goes on from the last reading");
        }
        tokio::time::sleep(SYNC_EVERY).await;
    }
}

/// Now, in Unix ms, on Redis's clock.
pub fn now_ms() -> u64 {
    carried(sample())
}

fn carried(sample: Option<(u64, Instant)>) -> u64 {
    match sample {
        Some((ms, at)) => ms.saturating_add(u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX)),
        None => SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
    }
}

/// Now, on Redis's clock.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(i64::try_from(now_ms()).unwrap_or(i64::MAX)).unwrap_or_default()
}

/// Now on Redis's clock as the entries write times: RFC 3339 UTC with milliseconds.
pub fn timestamp() -> String {
    now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The Lua lines that start every script reading Redis's clock: `now` in Unix ms, `now_us` in
/// Unix microseconds (`TIME`). One preamble, written once: `concat!(lua_now!(), r#"…"#)`.
macro_rules! lua_now {
    () => {
        "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\nlocal now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    };
}
pub(crate) use lua_now;

/// `d` ± `fraction` of it (0.1: ±10 %), uniformly.
pub fn jitter(d: Duration, fraction: f64) -> Duration {
    let nanos = u128::from(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let spread = (nanos as f64 * fraction.clamp(0.0, 1.0)) as u128;
    let offset = uuid::Uuid::new_v4().as_u128() % (2 * spread + 1);
    Duration::from_nanos(u64::try_from(nanos - spread.min(nanos) + offset).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_carried_forward_on_the_monotonic_clock() {
        // Redis an hour behind this host's wall clock, read two seconds ago.
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64;
        let redis = wall - 3_600_000;
        let Some(read_at) = Instant::now().checked_sub(Duration::from_secs(2)) else { return };
        let now = carried(Some((redis, read_at)));
        assert!(now >= redis + 2_000 && now < redis + 60_000, "{now} vs {redis}");
        // Never synced: the wall clock.
        assert!(carried(None) >= wall);
        assert!(timestamp().ends_with('Z'));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        for _ in 0..1_000 {
            let d = jitter(Duration::from_secs(10), 0.1);
            assert!(d >= Duration::from_secs(9) && d <= Duration::from_secs(11), "{d:?}");
        }
        assert_eq!(jitter(Duration::ZERO, 0.5), Duration::ZERO);
    }
}
