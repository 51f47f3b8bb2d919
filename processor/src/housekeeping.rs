//! Housekeeping loops: the forwarder (re-appends parked entries when due,
//! [`crate::outcome::parking`]) and the tidier (trims processed and old dead entries, removes
//! consumers long gone).

use crate::intake::dispatch::Dispatcher;
use crate::stream::{is_nogroup, Stream};
use redis::{RedisResult, Script};
use std::time::Duration;

const REAP_SCRIPT: &str = r#"
-- KEYS[1] stream; ARGV[1] group, ARGV[2] consumer
-- Deletes the consumer only while it has no pending entry: XGROUP DELCONSUMER would drop its
-- pending entries from the group, and they would never be processed.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"#;

/// Trims processed entries, and removes consumers that are long gone (idle past
/// `CONSUMER_IDLE_REAP_SECS` with nothing pending; one with pending entries is never removed).
pub async fn tidy(dispatcher: &Dispatcher, every: Duration, retention: Retention, reap_after: Duration) {
    let stream = &dispatcher.worker.stream;
    while dispatcher.pause(every).await {
        match stream.trim(retention.stream).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(entries = n, "trimmed the stream"),
            Err(err) => tracing::debug!(error = %err, "trim failed; will try again"),
        }
        match stream.trim_dead(retention.dead).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(entries = n, dead = %stream.keys.dead, "trimmed dead entries past DEAD_RETENTION_DAYS")
            }
            Err(err) => tracing::debug!(error = %err, "trimming the dead stream failed; will try again"),
        }
        match reap_consumers(stream, reap_after).await {
            Ok(reaped) => {
                for name in reaped {
                    tracing::info!(consumer = %name, "removed an idle consumer with nothing pending");
                }
            }
            Err(err) => tracing::debug!(error = %err, "reaping consumers failed; will try again"),
        }
    }
}

/// At a clean stop: removes this process's own consumer from the group, when nothing is pending
/// under its name (the same script as the reaper: a consumer with pending entries is never
/// removed, or they would never be processed). `true` when removed.
pub async fn remove_own_consumer(stream: &Stream) -> RedisResult<bool> {
    let deleted: i64 = Script::new(REAP_SCRIPT)
        .key(&stream.keys.events)
        .arg(&stream.group)
        .arg(&stream.consumer)
        .invoke_async(&mut stream.connection())
        .await?;
    Ok(deleted == 1)
}

/// How long processed entries (`STREAM_RETENTION_SECS`) and dead ones (`DEAD_RETENTION_DAYS`)
/// are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub stream: Duration,
    pub dead: Duration,
}

/// Deletes consumers of the group that have no pending entry and have been idle longer than
/// `idle` (never this process's own). Returns the names deleted.
pub async fn reap_consumers(stream: &Stream, idle: Duration) -> RedisResult<Vec<String>> {
    let consumers = match stream.consumers().await {
        Ok(c) => c,
        Err(err) if is_nogroup(&err) => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let script = Script::new(REAP_SCRIPT);
    let mut reaped = Vec::new();
    for c in consumers {
        if c.name == stream.consumer || c.pending > 0 || c.idle < idle {
            continue;
        }
        let deleted: i64 = script
            .key(&stream.keys.events)
            .arg(&stream.group)
            .arg(&c.name)
            .invoke_async(&mut stream.connection())
            .await?;
        if deleted == 1 {
            reaped.push(c.name);
        }
    }
    Ok(reaped)
}

/// Re-appends the due entries of one partition's retry set, until the dispatcher stops.
pub async fn forward_due(dispatcher: &crate::intake::dispatch::Dispatcher, every: std::time::Duration) {
    let stream = &dispatcher.worker.stream;
    while dispatcher.pause(every).await {
        loop {
            match stream.reappend_due(100).await {
                Ok((appended, unreadable)) => {
                    if appended > 0 {
                        tracing::info!(entries = appended, stream = %stream.keys.events, "parked entries due: re-appended");
                        crate::metrics::entries(crate::metrics::Entry::Retried, appended);
                    }
                    if unreadable > 0 {
                        tracing::warn!(
                            entries = unreadable,
                            dead = %stream.keys.dead,
                            "unreadable members of the retry set moved to the dead stream"
                        );
                    }
                    if appended + unreadable < 100 {
                        break;
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, "re-appending due entries failed; will try again");
                    break;
                }
            }
        }
    }
}
