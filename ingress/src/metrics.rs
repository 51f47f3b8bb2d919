//! The ingress's metric names (SPEC §6).

use std::time::Instant;

pub const REQUESTS_TOTAL: &str = "hookstream_ingress_requests_total";
pub const REQUEST_DURATION: &str = "hookstream_ingress_request_duration_seconds";

/// The `outcome` label of [`REQUESTS_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    Unauthorized,
    Invalid,
    TooLarge,
    Unsupported,
    Unavailable,
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
        }
    }
}

/// Counts one webhook request and its duration.
pub fn record(outcome: Outcome, started: Instant) {
    metrics::counter!(REQUESTS_TOTAL, "outcome" => outcome.as_str()).increment(1);
    metrics::histogram!(REQUEST_DURATION).record(started.elapsed().as_secs_f64());
}
