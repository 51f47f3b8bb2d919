//! `processor status`: the stream, the dead stream, the group and its consumers, for a person.

use super::{entries, human, Ops};
use crate::clock::now_ms;
use crate::replies::PendingRows;
use crate::stream::parse_id;
use redis::RedisResult;
use std::fmt::Write as _;
use std::time::Duration;

impl Ops {
    /// The numbers behind `processor status`, as text for a person.
    pub async fn status(&self, reap_after: Duration) -> RedisResult<String> {
        let (stream_len, dead_len) = crate::stream::lengths(&mut self.con(), &self.keys).await?;
        let mut out = String::new();
        let _ = writeln!(out, "stream  {}  {}", self.keys.events, entries(stream_len));
        let _ = writeln!(out, "dead    {}  {}", self.keys.dead, entries(dead_len));
        out.push_str(&super::format_retry_summary(&self.keys.retry, &self.parked_summary().await?));
        let Some(group) = shared::groups::group(&mut self.con(), &self.keys.events, &self.group).await? else {
            let _ = writeln!(out, "group   {}  does not exist yet (no processor has started)", self.group);
            return Ok(out);
        };
        let lag = group.lag.map(|l| l.to_string()).unwrap_or_else(|| "unknown".into());
        let _ = writeln!(
            out,
            "group   {}  lag {lag} (not yet delivered)  pending {} (delivered, not acked)  last delivered {}",
            self.group, group.pending, group.last_delivered_id
        );
        let consumers = self.consumers().await?;
        let _ = writeln!(out, "\n{:<32} {:>8} {:>22} {:>12}", "consumer", "pending", "oldest pending age", "idle");
        let now = now_ms();
        for c in &consumers {
            let oldest: PendingRows = redis::cmd("XPENDING")
                .arg(&self.keys.events)
                .arg(&self.group)
                .arg("-")
                .arg("+")
                .arg(1)
                .arg(&c.name)
                .query_async(&mut self.con())
                .await?;
            let age = oldest
                .0
                .first()
                .and_then(|row| parse_id(&row.id))
                .map(|(ms, _)| human(Duration::from_millis(now.saturating_sub(ms))))
                .unwrap_or_else(|| "-".into());
            let mark = if c.pending == 0 && c.idle >= reap_after { "  (idle: will be reaped)" } else { "" };
            let _ = writeln!(out, "{:<32} {:>8} {:>22} {:>12}{mark}", c.name, c.pending, age, human(c.idle));
        }
        if consumers.is_empty() {
            let _ = writeln!(out, "(no consumers)");
        }
        Ok(out)
    }
}

/// The `processor status` line about the last reconcile pass (`{ns}:reconcile:last`).
pub async fn reconcile_status(con: &mut shared::conn::Conn, ns: &str) -> RedisResult<String> {
    let last: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg(shared::keys::Keys::new(ns).reconcile_last).query_async(con).await?;
    if last.is_empty() {
        return Ok("\nreconcile  no pass yet\n".into());
    }
    let get = |k: &str| last.get(k).map(String::as_str).unwrap_or("-");
    let mut out = format!(
        "\nreconcile  last pass {} ({}): {} ms, {} calendars, {} events, {} drifted, {} missing results",
        get("at"),
        get("result"),
        get("duration_ms"),
        get("calendars"),
        get("events"),
        get("drift"),
        get("missing_results")
    );
    if let Some(error) = last.get("error").filter(|e| !e.is_empty()) {
        let _ = write!(out, "; {error}");
    }
    out.push('\n');
    Ok(out)
}

/// The `processor status` lines about the v2 calendars whose connection is not `active`
/// (`{ns}:calendars`, SPEC §4.6): id, status, since, message.
pub async fn calendar_status(con: &mut shared::conn::Conn, keys: &shared::keys::Keys) -> RedisResult<String> {
    let records = crate::calendars::all(con, &keys.calendars).await?;
    let broken: Vec<_> = records.iter().filter(|(_, c)| crate::calendars::normalise(&c.status) != "active").collect();
    let mut out = format!("\ncalendars  {} known, {} not active\n", records.len(), broken.len());
    for (id, c) in broken {
        let _ = writeln!(out, "calendar  {id}  {}  since {}  {}", c.status, c.since, c.message);
    }
    Ok(out)
}

/// The `processor status` lines about the breakers (`{ns}:breaker:<downstream>`).
pub async fn breaker_status(con: &mut shared::conn::Conn, keys: &shared::keys::Keys) -> RedisResult<String> {
    let mut out = String::from("\n");
    for downstream in crate::downstream::breaker::Downstream::ALL {
        let key = keys.breaker(downstream.label());
        let state = crate::downstream::breaker::state(con, &key).await?;
        let _ = writeln!(out, "breaker  {:<13} {state}", downstream.label());
    }
    Ok(out)
}
