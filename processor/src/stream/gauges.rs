//! The numbers behind the stream gauges (`hookstream_stream_length`, `hookstream_dead_length`,
//! `hookstream_group_pending`, `hookstream_group_lag`, `hookstream_retry_parked`).

use super::Stream;
use redis::RedisResult;
use shared::conn::Conn;
use shared::keys::Keys;

/// The numbers behind the gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    pub stream_length: u64,
    pub dead_length: u64,
    pub group_pending: u64,
    pub group_lag: u64,
    /// Entries parked in the retry set.
    pub parked: u64,
}

/// XLEN of the events and the dead stream, in one round trip.
pub async fn lengths(con: &mut Conn, keys: &Keys) -> RedisResult<(u64, u64)> {
    redis::pipe().cmd("XLEN").arg(&keys.events).cmd("XLEN").arg(&keys.dead).query_async(con).await
}

impl Stream {
    /// Stream length, dead length, and this group's pending count and lag.
    pub async fn gauges(&self) -> RedisResult<Gauges> {
        let (stream_length, dead_length) = lengths(&mut self.con(), &self.keys).await?;
        let parked: u64 = redis::cmd("ZCARD").arg(&self.keys.retry).query_async(&mut self.con()).await?;
        let mut gauges = Gauges { stream_length, dead_length, parked, ..Gauges::default() };
        if let Some(group) = shared::groups::group(&mut self.con(), &self.keys.events, &self.group).await? {
            gauges.group_pending = group.pending as u64;
            gauges.group_lag = group.lag.unwrap_or(0) as u64;
        }
        Ok(gauges)
    }
}
