//! The retry set (`{ns}:retry`, SPEC §4.3): what `processor status`, `processor retry list`
//! and `processor retry now` read and change.

use super::{human, Ops};
use crate::clock::now_ms;
use crate::outcome::parking::Record;
use redis::RedisResult;
use std::fmt::Write as _;
use std::time::Duration;

/// One parked entry and when it is due (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEntry {
    pub due_ms: u64,
    /// `None` when the member is not a readable record (the forwarder moves it to the dead
    /// stream when due).
    pub record: Option<Record>,
    pub member: String,
    pub partition: usize,
}

/// The retry set in numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParkedSummary {
    pub count: u64,
    pub next_due_ms: Option<u64>,
    pub oldest_first_attempt: Option<chrono::DateTime<chrono::Utc>>,
}

/// Members read per command while paging.
const PAGE: usize = 1000;

impl Ops {
    /// Parked entries by due time, soonest first: at most `count` (and the members' total).
    pub async fn retry_list(&self, count: usize) -> RedisResult<Vec<ParkedEntry>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&self.keys.retry)
            .arg(0)
            .arg(count.min(isize::MAX as usize) as i64 - 1)
            .arg("WITHSCORES")
            .query_async(&mut self.con())
            .await?;
        Ok(rows.into_iter().map(|(member, score)| self.parked_entry(member, score)).collect())
    }

    fn parked_entry(&self, member: String, score: f64) -> ParkedEntry {
        ParkedEntry {
            due_ms: score.max(0.0) as u64,
            record: Record::from_member(&member),
            member,
            partition: self.keys.partition,
        }
    }

    /// How many are parked, the next due, the oldest first attempt (every member is read for
    /// that: an operator's command, paged).
    pub async fn parked_summary(&self) -> RedisResult<ParkedSummary> {
        let count: u64 = redis::cmd("ZCARD").arg(&self.keys.retry).query_async(&mut self.con()).await?;
        let mut summary = ParkedSummary { count, ..ParkedSummary::default() };
        if count == 0 {
            return Ok(summary);
        }
        summary.next_due_ms = self.retry_list(1).await?.first().map(|e| e.due_ms);
        let mut start = 0usize;
        loop {
            let members: Vec<String> = redis::cmd("ZRANGE")
                .arg(&self.keys.retry)
                .arg(start)
                .arg(start + PAGE - 1)
                .query_async(&mut self.con())
                .await?;
            for record in members.iter().filter_map(|m| Record::from_member(m)) {
                let first = chrono::DateTime::parse_from_rfc3339(&record.first_attempt_at).ok().map(|t| t.to_utc());
                if let Some(first) = first {
                    summary.oldest_first_attempt = Some(summary.oldest_first_attempt.map_or(first, |o| o.min(first)));
                }
            }
            if members.len() < PAGE {
                break;
            }
            start += PAGE;
        }
        Ok(summary)
    }

    /// Makes the parked entry that was `id` due now (`Some(id)`), or every parked entry
    /// (`None`): the forwarder of any running processor re-appends them at its next look.
    /// Returns how many were made due.
    pub async fn retry_now(&self, id: Option<&str>) -> RedisResult<u64> {
        let mut made = 0;
        match id {
            Some(id) => {
                // A record's JSON starts with its id (the first field of `Record`).
                let pattern = format!("{{\"id\":\"{id}\",*");
                let is_it = |member: &str| Record::from_member(member).is_some_and(|r| r.id == id);
                made += crate::stream::make_due_matching(&mut self.con(), &self.keys.retry, &pattern, is_it).await?;
            }
            None => loop {
                // The ones not yet due; each page made due leaves the range.
                let members: Vec<String> = redis::cmd("ZRANGE")
                    .arg(&self.keys.retry)
                    .arg("(1")
                    .arg("+inf")
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(PAGE)
                    .query_async(&mut self.con())
                    .await?;
                if members.is_empty() {
                    break;
                }
                made += crate::stream::make_due(&mut self.con(), &self.keys.retry, &members).await?;
            },
        }
        Ok(made)
    }
}

/// The `processor status` line about one partition's retry set.
pub fn format_summary(key: &str, summary: &ParkedSummary) -> String {
    let now = now_ms();
    let mut out = format!("retry   {key}  {} parked", summary.count);
    if let Some(due) = summary.next_due_ms {
        let when =
            if due <= now { "now".to_string() } else { format!("in {}", human(Duration::from_millis(due - now))) };
        let _ = write!(out, "  next due {when}");
    }
    if let Some(first) = summary.oldest_first_attempt {
        let age = (crate::clock::now() - first).to_std().unwrap_or_default();
        let _ = write!(
            out,
            "  oldest first attempt {} ({} ago)",
            first.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            human(age)
        );
    }
    out.push('\n');
    out
}

/// `processor retry list`: one row per parked entry, soonest first.
pub fn format_list(entries: &[ParkedEntry], partitioned: bool) -> String {
    let now = now_ms();
    let mut out = String::new();
    let part = if partitioned { format!("{:>4} ", "part") } else { String::new() };
    let _ = writeln!(out, "{part}{:<20} {:<28} {:>8} {:>12}  last error", "id", "event", "attempts", "due");
    for e in entries {
        let due = if e.due_ms <= now {
            "now".to_string()
        } else {
            format!("in {}", human(Duration::from_millis(e.due_ms - now)))
        };
        let part = if partitioned { format!("{:>4} ", e.partition) } else { String::new() };
        match &e.record {
            Some(r) => {
                let error = super::dead::shorten(&r.error.replace('\n', " "), 160);
                let _ = writeln!(out, "{part}{:<20} {:<28} {:>8} {:>12}  {error}", r.id, r.event, r.attempts, due);
            }
            None => {
                let _ = writeln!(out, "{part}{:<20} {:<28} {:>8} {:>12}  (not a readable record)", "?", "?", "-", due);
            }
        }
    }
    out
}
