//! The processor's metrics (SPEC §6). Handles are registered once and reused, so handling an
//! entry only bumps atomics instead of looking its series up in the registry each time.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

pub const ENTRIES_TOTAL: &str = "hookstream_processor_entries_total";
pub const ATTEMPTS_TOTAL: &str = "hookstream_processor_attempts_total";
pub const HANDLER_DURATION: &str = "hookstream_processor_handler_duration_seconds";

/// What became of an entry: the `outcome` label of [`ENTRIES_TOTAL`].
#[derive(Debug, Clone, Copy)]
pub enum Entry {
    Acked,
    Dead,
    Reclaimed,
}

/// How one handler attempt ended: the `result` label of [`ATTEMPTS_TOTAL`].
#[derive(Debug, Clone, Copy)]
pub enum Attempt {
    Ok,
    Transient,
    Permanent,
}

/// Distinct `event` labels kept as handles; past this, durations are still recorded, through
/// the registry. Bounds the cache whatever event names arrive.
const MAX_CACHED_EVENTS: usize = 256;

struct Handles {
    entries: [metrics::Counter; 3],
    attempts: [metrics::Counter; 3],
    durations: Mutex<HashMap<String, metrics::Histogram>>,
}

fn handles() -> &'static Handles {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    HANDLES.get_or_init(|| Handles {
        entries: ["acked", "dead", "reclaimed"].map(|o| metrics::counter!(ENTRIES_TOTAL, "outcome" => o)),
        attempts: ["ok", "transient", "permanent"].map(|r| metrics::counter!(ATTEMPTS_TOTAL, "result" => r)),
        durations: Mutex::default(),
    })
}

pub fn entries(outcome: Entry, n: u64) {
    handles().entries[outcome as usize].increment(n);
}

pub fn attempt(result: Attempt) {
    handles().attempts[result as usize].increment(1);
}

/// Records how long handling an entry of `event` took (all its attempts).
pub fn handler_duration(event: &str, seconds: f64) {
    let mut durations = handles().durations.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(histogram) = durations.get(event) {
        return histogram.record(seconds);
    }
    let histogram = metrics::histogram!(HANDLER_DURATION, "event" => event.to_string());
    histogram.record(seconds);
    if durations.len() < MAX_CACHED_EVENTS {
        durations.insert(event.to_string(), histogram);
    }
}
