//! The processor's metrics (SPEC §6). Handles are registered once and reused, so handling an
//! entry only bumps atomics instead of looking its series up in the registry each time.

use std::sync::OnceLock;

pub const ENTRIES_TOTAL: &str = "hookstream_processor_entries_total";
pub const ATTEMPTS_TOTAL: &str = "hookstream_processor_attempts_total";
pub const HANDLER_DURATION: &str = "hookstream_processor_handler_duration_seconds";
pub const LOCK_WAITS_TOTAL: &str = "hookstream_processor_lock_waits_total";
pub const API_WRITE_WAITS_TOTAL: &str = "hookstream_processor_api_write_waits_total";
pub const LEASES_LOST_TOTAL: &str = "hookstream_processor_leases_lost_total";
pub const RETRY_PARKED: &str = "hookstream_retry_parked";
/// Per partition (`partition` = 0…P-1), read when scraped: this group's lag, pending entries,
/// parked entries.
pub const PARTITION_LAG: &str = "hookstream_partition_lag";
pub const PARTITION_PENDING: &str = "hookstream_partition_pending";
pub const PARTITION_PARKED: &str = "hookstream_partition_parked";
pub const BREAKER_OPEN: &str = "hookstream_breaker_open";
pub const RECONCILE_RUNS_TOTAL: &str = "hookstream_reconcile_runs_total";
pub const RECONCILE_DRIFT_TOTAL: &str = "hookstream_reconcile_drift_total";
pub const RECONCILE_LAST_SUCCESS: &str = "hookstream_reconcile_last_success_timestamp_seconds";
pub const CALENDAR_CONNECTIONS: &str = "hookstream_calendar_connections";

/// What became of an entry: the `outcome` label of [`ENTRIES_TOTAL`].
#[derive(Debug, Clone, Copy)]
pub enum Entry {
    Acked,
    Dead,
    Reclaimed,
    /// Acked and parked in the retry set (SPEC §4.3).
    Parked,
    /// Re-appended from the retry set, due.
    Retried,
}

/// How one handler attempt ended: the `result` label of [`ATTEMPTS_TOTAL`].
#[derive(Debug, Clone, Copy)]
pub enum Attempt {
    Ok,
    Transient,
    Permanent,
}

use crate::events::OTHER_EVENT;

struct Handles {
    entries: [metrics::Counter; 5],
    attempts: [metrics::Counter; 3],
    /// One histogram per known event name, and the last one for `other`.
    durations: Vec<metrics::Histogram>,
    lock_waits: metrics::Counter,
    api_write_waits: metrics::Counter,
    leases_lost: metrics::Counter,
}

fn handles() -> &'static Handles {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    HANDLES.get_or_init(|| Handles {
        entries: ["acked", "dead", "reclaimed", "parked", "retried"]
            .map(|o| metrics::counter!(ENTRIES_TOTAL, "outcome" => o)),
        attempts: ["ok", "transient", "permanent"].map(|r| metrics::counter!(ATTEMPTS_TOTAL, "result" => r)),
        durations: crate::events::EVENTS
            .iter()
            .map(|e| e.name)
            .chain(std::iter::once(OTHER_EVENT))
            .map(|e| metrics::histogram!(HANDLER_DURATION, "event" => e))
            .collect(),
        lock_waits: metrics::counter!(LOCK_WAITS_TOTAL),
        api_write_waits: metrics::counter!(API_WRITE_WAITS_TOTAL),
        leases_lost: metrics::counter!(LEASES_LOST_TOTAL),
    })
}

/// An entry found its meeting locked by another and waits for it.
pub fn lock_wait() {
    handles().lock_waits.increment(1);
}

/// An API write waits for a slot of the shared write limit.
pub fn api_write_wait() {
    handles().api_write_waits.increment(1);
}

/// A delivery ended without a verdict: another consumer owns its entry now.
pub fn lease_lost() {
    handles().leases_lost.increment(1);
}

pub fn entries(outcome: Entry, n: u64) {
    handles().entries[outcome as usize].increment(n);
}

pub fn attempt(result: Attempt) {
    handles().attempts[result as usize].increment(1);
}

/// Records how long handling an entry of `event` took (all its attempts), under its bounded
/// label ([`crate::events::label`]).
pub fn handler_duration(event: &str, seconds: f64) {
    let durations = &handles().durations;
    let index = crate::events::position(event).unwrap_or(durations.len() - 1);
    durations[index].record(seconds);
}

/// A reconcile pass ended: `ok`, or `error` (a listing could not be read, or ended early).
pub fn reconcile_run(ok: bool) {
    metrics::counter!(RECONCILE_RUNS_TOTAL, "result" => if ok { "ok" } else { "error" }).increment(1);
    if ok {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        metrics::gauge!(RECONCILE_LAST_SUCCESS).set(now);
    }
}

/// A reconcile pass found a drifted meeting (`api`: v1/v2; `kind`: missing_bot/extra_bot).
pub fn reconcile_drift(api: &'static str, kind: &'static str) {
    metrics::counter!(RECONCILE_DRIFT_TOTAL, "api" => api, "kind" => kind).increment(1);
}

/// Registers the reconcile series at zero, so they are scraped before the first pass.
pub fn reconcile_init() {
    for result in ["ok", "error"] {
        metrics::counter!(RECONCILE_RUNS_TOTAL, "result" => result).increment(0);
    }
    for api in ["v1", "v2"] {
        for kind in ["missing_bot", "extra_bot"] {
            metrics::counter!(RECONCILE_DRIFT_TOTAL, "api" => api, "kind" => kind).increment(0);
        }
    }
    metrics::counter!(RECONCILE_DRIFT_TOTAL, "api" => "v2", "kind" => "missing_result").increment(0);
}

/// `hookstream_calendar_connections{status}`: how many v2 calendars are in each connection
/// status (SPEC §4.6), as `{ns}:calendars` has it when scraped.
pub fn calendar_connections(counts: &[(&'static str, u64)]) {
    for (status, n) in counts {
        metrics::gauge!(CALENDAR_CONNECTIONS, "status" => *status).set(*n as f64);
    }
}
