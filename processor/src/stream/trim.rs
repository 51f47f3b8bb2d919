//! Trimming: XTRIM MINID ~ the oldest of every group's oldest pending id, every group's
//! last-delivered id, and now − `STREAM_RETENTION_SECS` — never an entry some group has not
//! acked.

use super::{parse_id, Stream};
use crate::clock::now_ms;
use crate::replies::PendingSummary;
use redis::RedisResult;
use std::time::Duration;

impl Stream {
    /// The id below which every entry is processed by every group and older than `retention`;
    /// `None` when the stream has no group (nothing is known to be processed).
    pub async fn trim_point(&self, retention: Duration) -> RedisResult<Option<String>> {
        let groups = shared::groups::groups(&mut self.con(), &self.keys.events).await?;
        if groups.is_empty() {
            return Ok(None);
        }
        let cutoff_ms = now_ms().saturating_sub(retention.as_millis() as u64);
        let mut oldest = (cutoff_ms, 0u64);
        for group in &groups {
            if let Some(last) = parse_id(&group.last_delivered_id) {
                oldest = oldest.min(last);
            }
            if group.pending > 0 {
                let summary: PendingSummary =
                    redis::cmd("XPENDING").arg(&self.keys.events).arg(&group.name).query_async(&mut self.con()).await?;
                if let Some(min) = summary.oldest.as_deref().and_then(parse_id) {
                    oldest = oldest.min(min);
                }
            }
        }
        Ok(Some(format!("{}-{}", oldest.0, oldest.1)))
    }

    /// Trims the dead stream of entries older than `retention` (`DEAD_RETENTION_DAYS`, on
    /// Redis's clock; zero keeps all): exactly, not `~`, so a small dead stream is trimmed too.
    pub async fn trim_dead(&self, retention: Duration) -> RedisResult<u64> {
        if retention.is_zero() {
            return Ok(0);
        }
        trim_older_than(&mut self.con(), &self.keys.dead, retention).await
    }

    /// XTRIM MINID ~ [`Self::trim_point`]; the number of entries removed.
    pub async fn trim(&self, retention: Duration) -> RedisResult<u64> {
        let Some(min_id) = self.trim_point(retention).await? else { return Ok(0) };
        redis::cmd("XTRIM").arg(&self.keys.events).arg("MINID").arg("~").arg(min_id).query_async(&mut self.con()).await
    }
}

/// Deletes the entries of `stream` older than `age` (their ids' time, against Redis's clock),
/// exactly (`XTRIM MINID`); how many. Saturating: an age longer than since the epoch trims
/// nothing (never a wrapped value).
pub async fn trim_older_than(con: &mut shared::conn::Conn, stream: &str, age: Duration) -> RedisResult<u64> {
    let cutoff = now_ms().saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
    redis::cmd("XTRIM").arg(stream).arg("MINID").arg(format!("{cutoff}-0")).query_async(con).await
}
