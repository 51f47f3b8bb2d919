//! The ingress's metric names (SPEC §6).

use std::time::Instant;

pub const REQUESTS_TOTAL: &str = "hookstream_ingress_requests_total";
pub const REQUEST_DURATION: &str = "hookstream_ingress_request_duration_seconds";
/// The consumer groups' lag (entries not yet delivered), summed over partitions, as the ingress
/// reads it for `MAX_BACKLOG`; the same name as the processor's gauge.
pub const GROUP_LAG: &str = "hookstream_group_lag";

/// The `outcome` label of [`REQUESTS_TOTAL`] (the discriminant indexes the handles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    Unauthorized,
    Invalid,
    TooLarge,
    Unsupported,
    Unavailable,
    Timeout,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Invalid => "invalid",
            Outcome::TooLarge => "too_large",
            Outcome::Unsupported => "unsupported",
            Outcome::Unavailable => "unavailable",
            Outcome::Timeout => "timeout",
        }
    }
}

const OUTCOMES: [Outcome; 8] = [
    Outcome::Accepted,
    Outcome::Duplicate,
    Outcome::Unauthorized,
    Outcome::Invalid,
    Outcome::TooLarge,
    Outcome::Unsupported,
    Outcome::Unavailable,
    Outcome::Timeout,
];

/// The metric handles, registered once: a request then only bumps atomics (no registry lookup).
struct Handles {
    requests: [metrics::Counter; 8],
    duration: metrics::Histogram,
}

fn handles() -> &'static Handles {
    static HANDLES: std::sync::OnceLock<Handles> = std::sync::OnceLock::new();
    HANDLES.get_or_init(|| Handles {
        requests: OUTCOMES.map(|o| metrics::counter!(REQUESTS_TOTAL, "outcome" => o.as_str())),
        duration: metrics::histogram!(REQUEST_DURATION),
    })
}

/// Counts one webhook request and its duration.
pub fn record(outcome: Outcome, started: Instant) {
    let h = handles();
    h.requests[outcome as usize].increment(1);
    h.duration.record(started.elapsed().as_secs_f64());
}
