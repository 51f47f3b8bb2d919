//! The intervals that derive from `CLAIM_IDLE_MS` and `BLOCK_MS` — lease and lock renewal, the
//! reclaim scan, the lock TTL, command and reader timeouts — and their invariants, in one place.

use shared::config::ConfigError;
use std::time::Duration;

/// The intervals that derive from `CLAIM_IDLE_MS`, `BLOCK_MS` and the command timeout, built
/// once ([`Timing::new`]) and used everywhere; their invariants are written once, in
/// [`Timing::check`], and checked at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `CLAIM_IDLE_MS`: an entry idle this long in any consumer is reclaimed by another.
    pub claim_idle: Duration,
    /// How often the leases of held entries and the held meeting locks are renewed.
    pub renew_every: Duration,
    /// How often the reclaimer scans the pending list.
    pub reclaim_every: Duration,
    /// A meeting lock's TTL: a holder that dies frees its meetings no later than its entries.
    pub lock_ttl: Duration,
    /// How long a command on the shared connection may take before the connection is given up
    /// as silent (and replaced).
    pub command_timeout: Duration,
    /// `BLOCK_MS`: how long one XREADGROUP waits for new entries.
    pub block: Duration,
    /// The blocking reader's response timeout: `BLOCK_MS` plus [`READER_MARGIN`].
    pub reader_timeout: Duration,
}

/// How much longer than `BLOCK_MS` the reader waits for Redis's answer before it gives the
/// connection up as silent.
pub const READER_MARGIN: Duration = Duration::from_secs(2);
/// The longest and the shortest command timeout of the shared connection.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
const SHORTEST_COMMAND_TIMEOUT: Duration = Duration::from_millis(250);

impl Timing {
    /// The timing for `CLAIM_IDLE_MS` = `claim_idle` and `BLOCK_MS` = `block`; refused (naming
    /// the variables) when its invariants cannot hold.
    pub fn new(claim_idle: Duration, block: Duration) -> Result<Self, ConfigError> {
        // Two renewal intervals and a command timeout fit in CLAIM_IDLE_MS (invariant 1).
        let renew_every = claim_idle / 6;
        let timing = Self {
            claim_idle,
            renew_every,
            reclaim_every: (claim_idle / 2).clamp(Duration::from_millis(20), Duration::from_secs(5)),
            lock_ttl: claim_idle,
            command_timeout: renew_every.clamp(SHORTEST_COMMAND_TIMEOUT, COMMAND_TIMEOUT),
            block,
            reader_timeout: block + READER_MARGIN,
        };
        timing.check().map_err(|why| ConfigError::new("CLAIM_IDLE_MS", why))?;
        Ok(timing)
    }

    /// The invariants, in one place:
    ///
    /// 1. a lease (and a lock) renewal that hangs is given up, and the next one lands, before
    ///    another replica may reclaim the entry (or the lock expire). The longest a lease goes
    ///    without a reset: a renewal applied at once, the next one hanging until given up (its
    ///    tick is then delayed to the interval after), the one after applied at the end of its
    ///    own command time — `2 × renew_every` + `command_timeout` < `claim_idle`;
    /// 2. a dead holder's meetings are free no later than its entries: `lock_ttl` ≥
    ///    `claim_idle`;
    /// 3. an abandoned entry is looked for at least twice per `CLAIM_IDLE_MS`, or every 5 s:
    ///    `reclaim_every` ≤ `claim_idle` / 2 (or 5 s);
    /// 4. a blocking read is not mistaken for a silent Redis: `reader_timeout` > `BLOCK_MS`.
    pub fn check(&self) -> Result<(), String> {
        if self.renew_every * 2 + self.command_timeout >= self.claim_idle {
            return Err(format!(
                "{} ms is too short: leases and meeting locks are renewed every CLAIM_IDLE_MS/6 ({} ms), and a \
                 Redis command may take {} ms before it is given up, so after a renewal that hangs the next could \
                 land after another replica reclaimed the entry; use at least {} ms",
                self.claim_idle.as_millis(),
                self.renew_every.as_millis(),
                self.command_timeout.as_millis(),
                (SHORTEST_COMMAND_TIMEOUT.as_millis() * 3 / 2) + 1
            ));
        }
        if self.lock_ttl < self.claim_idle {
            return Err("the meeting lock's TTL must not be shorter than CLAIM_IDLE_MS".into());
        }
        if self.reclaim_every > (self.claim_idle / 2).max(Duration::from_secs(5)) {
            return Err("the reclaimer must scan at least every CLAIM_IDLE_MS/2".into());
        }
        if self.reader_timeout <= self.block {
            return Err("the reader's response timeout must exceed BLOCK_MS".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_invariants() {
        // The shortest CLAIM_IDLE_MS whose renewals still land in time.
        let t = Timing::new(Duration::from_millis(376), Duration::from_millis(100)).expect("valid");
        assert_eq!(t.command_timeout, Duration::from_millis(250));
        assert!(t.check().is_ok());
        let refused = Timing::new(Duration::from_millis(375), Duration::from_millis(100)).expect_err("too short");
        assert_eq!(refused.var, "CLAIM_IDLE_MS");
        assert!(refused.to_string().contains("at least 376 ms"), "{refused}");
        // Short CLAIM_IDLE_MS: a shorter command timeout, so a hung renewal is given up in time.
        let t = Timing::new(Duration::from_secs(3), Duration::from_secs(1)).expect("valid");
        assert_eq!((t.renew_every, t.command_timeout), (Duration::from_millis(500), Duration::from_millis(500)));
        // Renewed every CLAIM_IDLE_MS/3 with a command timeout as long, a lease could go two
        // intervals and a timeout (= CLAIM_IDLE_MS) without a reset: refused.
        let every_third = Duration::from_secs(1);
        let old = Timing { renew_every: every_third, command_timeout: every_third, ..t };
        assert!(old.check().is_err());
        assert_eq!(t.reclaim_every, Duration::from_millis(1500));
        assert_eq!(t.reader_timeout, Duration::from_secs(3));
        // A test's own command timeout that breaks the first invariant is found by `check`.
        let broken = Timing { command_timeout: Duration::from_secs(60), ..t };
        assert!(broken.check().is_err());
    }
}
