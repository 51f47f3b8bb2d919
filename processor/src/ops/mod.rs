//! Operator tools behind `processor dead …`, `processor retry …` and `processor status`:
//! [`dead`] (look at, replay, purge dead entries), [`retry`] (the parked entries) and
//! [`status`] (the numbers for a person). (Consumer reaping
//! lives with the housekeeping loops, repartitioning with the layout in `shared::layout`.)
//!
//! Every function returns what it did (and the text to print) instead of printing, so tests can
//! call them directly; `main` prints and picks the exit code: 0 done, 1 nothing matched,
//! 64 bad arguments.

mod dead;
mod retry;
mod status;

pub use crate::replies::ConsumerInfo;
pub use dead::{format_entry, format_list, DeadEntry, ReplayError};
pub use retry::{format_list as format_retry_list, format_summary as format_retry_summary, ParkedEntry, ParkedSummary};
pub use status::{breaker_status, calendar_status, reconcile_status};

use crate::stream::parse_id;
use redis::RedisResult;
use shared::conn::Conn;
use shared::keys::Keys;
use std::time::Duration;

/// A bad command-line argument (exit 64).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadArgs(pub String);

/// Parses `7d`, `12h`, `30m`, `45s` (a whole number and a unit).
pub fn parse_duration(text: &str) -> Result<Duration, BadArgs> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| BadArgs(format!("{text:?} is not a duration like 7d, 12h, 30m or 45s")))?;
    let secs = match unit {
        "d" => n.checked_mul(86_400),
        "h" => n.checked_mul(3_600),
        "m" => n.checked_mul(60),
        "s" => Some(n),
        _ => None,
    }
    .ok_or_else(|| BadArgs(format!("{text:?} is not a duration like 7d, 12h, 30m or 45s")))?;
    Ok(Duration::from_secs(secs))
}

/// Checks a stream id argument (`1716200000000-0`).
pub fn check_id(id: &str) -> Result<(), BadArgs> {
    match id.split_once('-').and_then(|_| parse_id(id)) {
        Some(_) => Ok(()),
        None => Err(BadArgs(format!("{id:?} is not a stream entry id like 1716200000000-0"))),
    }
}

/// The dead stream and the tools on it.
pub struct Ops {
    pub keys: Keys,
    pub group: String,
    con: Conn,
}

impl Ops {
    pub fn new(keys: Keys, group: String, con: Conn) -> Self {
        Self { keys, group, con }
    }

    pub(crate) fn con(&self) -> Conn {
        self.con.clone()
    }

    /// XINFO CONSUMERS of the group.
    pub async fn consumers(&self) -> RedisResult<Vec<ConsumerInfo>> {
        crate::stream::consumers(&mut self.con(), &self.keys, &self.group).await
    }
}

/// `1 entry`, `2 entries`.
fn entries(n: u64) -> String {
    if n == 1 {
        "1 entry".into()
    } else {
        format!("{n} entries")
    }
}

/// `1d 2h`, `3h 4m`, `5m 6s`, `7s`, `120ms`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{s}s"),
        60..=3_599 => format!("{}m {}s", s / 60, s % 60),
        3_600..=86_399 => format!("{}h {}m", s / 3_600, (s % 3_600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3_600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        for bad in ["", "7", "d", "7w", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids() {
        assert!(check_id("1716200000000-0").is_ok());
        for bad in ["1716200000000", "abc-0", "1-x", "", "-"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(120)), "120ms");
        assert_eq!(human(Duration::from_secs(7)), "7s");
        assert_eq!(human(Duration::from_secs(62)), "1m 2s");
        assert_eq!(human(Duration::from_secs(3_660)), "1h 1m");
        assert_eq!(human(Duration::from_secs(90_000)), "1d 1h");
    }
}
