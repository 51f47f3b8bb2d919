//! The partition layout a namespace was created with, and the check that every process uses it.
//!
//! An event's partition is its dedup identity's hash mod P. A process started with another P
//! would append a retry where its first copy is not (a duplicate effect), and processors with
//! another P would not read some partitions at all (events nobody handles). So the first process
//! with P > 1 to touch a namespace records P in `{ns}:partitions`, and every process checks the
//! record before it appends or reads; a different P is refused with a message that says how to
//! migrate. The ingress checks again every few seconds while it runs (a repartition, or a
//! process started with another P, stops its appends instead of splitting the events).
//!
//! No record means one partition — the default, and every namespace from before partitions
//! existed: P = 1 writes nothing (a fresh start leaves Redis as empty as it was), and P > 1 is
//! refused while the unpartitioned stream `{ns}:events` holds entries (they would never be
//! read) — drain it and use the documented migration (`processor repartition`).

use crate::conn::Conn;
use crate::keys::Keys;
use redis::aio::ConnectionLike;
use redis::streams::StreamInfoGroupsReply;
use redis::RedisResult;
use redis::Script;
use std::sync::atomic::{AtomicBool, Ordering};

/// How long the start-up check waits for Redis.
pub const START_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

const SCRIPT: &str = r#"
-- KEYS[1] {ns}:partitions, KEYS[2] {ns}:events (the unpartitioned stream); ARGV[1] P
-- The recorded count, recording P > 1 on a namespace without a record; no record is 1.
local stored = redis.call('GET', KEYS[1])
if stored then
  return stored
end
if ARGV[1] == '1' then
  return '1'
end
if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('XLEN', KEYS[2]) > 0 then
  return 'unpartitioned'
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"#;

/// Why a process may not use this namespace with its `PARTITIONS`.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "PARTITIONS={configured}, but the namespace was created with {stored} partition(s) ({key}); \
         every ingress and processor must use PARTITIONS={stored}. To change it, see \"Changing PARTITIONS\" \
         in docs/durability-and-scaling.md (`processor repartition`)"
    )]
    Mismatch { configured: usize, stored: String, key: String },
    #[error(
        "PARTITIONS={configured}, but the unpartitioned stream {stream} holds entries that would never be read; \
         start with PARTITIONS=1, let the processors drain it, then run `processor repartition {configured}`"
    )]
    Unpartitioned { configured: usize, stream: String },
    #[error("cannot check the partition layout: {0}")]
    Redis(#[from] redis::RedisError),
}

impl LayoutError {
    /// A wrong setting (fix the configuration), as opposed to Redis not answering (retry).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, LayoutError::Redis(_))
    }
}

/// The check, remembered once it passed.
pub struct Layout {
    namespace: Keys,
    partitions: usize,
    script: Script,
    checked: AtomicBool,
}

impl Layout {
    /// The check of namespace `ns` against `partitions`.
    pub fn new(ns: &str, partitions: usize) -> Self {
        Self { namespace: Keys::new(ns), partitions, script: Script::new(SCRIPT), checked: AtomicBool::new(false) }
    }

    pub fn checked(&self) -> bool {
        self.checked.load(Ordering::Relaxed)
    }

    /// The check at start-up: `Err` only for a refusal (the process should exit 64). When Redis
    /// does not answer within [`START_CHECK_TIMEOUT`] the process starts anyway (it serves while
    /// Redis is down) and checks again before its first append or read.
    pub async fn check_at_start<C: ConnectionLike>(&self, con: &mut C, redis_url: &str) -> Result<(), LayoutError> {
        match tokio::time::timeout(START_CHECK_TIMEOUT, self.ensure(con)).await {
            Ok(Err(err)) if err.is_refusal() => Err(err),
            Ok(Err(LayoutError::Redis(err))) => {
                tracing::warn!(
                    redis_url,
                    error = %err,
                    "cannot use Redis at REDIS_URL {redis_url} at start: {}; retrying as for any outage",
                    crate::conn::explain(&err)
                );
                Ok(())
            }
            Ok(Err(_)) => Ok(()),
            Err(_) => {
                tracing::warn!(
                    redis_url,
                    "Redis at REDIS_URL {redis_url} did not answer at start; retrying as for any outage"
                );
                Ok(())
            }
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Records or compares the layout; cheap once it has passed.
    pub async fn ensure<C: ConnectionLike>(&self, con: &mut C) -> Result<(), LayoutError> {
        if self.checked() {
            return Ok(());
        }
        self.check(con).await
    }

    /// Compares the layout again, even after it passed: a refusal un-checks it (so
    /// [`Self::ensure`] refuses until the record matches again) and is logged once.
    pub async fn recheck<C: ConnectionLike>(&self, con: &mut C) -> Result<(), LayoutError> {
        let was = self.checked();
        let result = self.check(con).await;
        if let Err(err) = &result {
            if err.is_refusal() {
                self.checked.store(false, Ordering::Relaxed);
                if was {
                    tracing::error!("{err}");
                }
            }
        }
        result
    }

    async fn check<C: ConnectionLike>(&self, con: &mut C) -> Result<(), LayoutError> {
        let stored: String = self
            .script
            .key(&self.namespace.layout)
            .key(&self.namespace.events)
            .arg(self.partitions)
            .invoke_async(con)
            .await?;
        if stored == "unpartitioned" {
            return Err(LayoutError::Unpartitioned {
                configured: self.partitions,
                stream: self.namespace.events.clone(),
            });
        }
        if stored != self.partitions.to_string() {
            return Err(LayoutError::Mismatch {
                configured: self.partitions,
                stored,
                key: self.namespace.layout.clone(),
            });
        }
        self.checked.store(true, Ordering::Relaxed);
        Ok(())
    }
}
/// The partition count recorded for namespace `ns` (`{ns}:partitions`), if any.
pub async fn recorded_partitions(con: &mut Conn, ns: &str) -> RedisResult<Option<usize>> {
    let stored: Option<String> = redis::cmd("GET").arg(&Keys::new(ns).layout).query_async(con).await?;
    Ok(stored.and_then(|s| s.parse().ok()))
}

/// Why `processor repartition` refused.
#[derive(Debug, thiserror::Error)]
pub enum RepartitionError {
    #[error("{0}")]
    NotDrained(String),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// `processor repartition N`: records `new` partitions for namespace `ns`, only when every
/// stream of the current layout is drained — nothing undelivered (lag 0) and nothing pending
/// in any consumer group, and an empty dead stream — so no event is left where the new layout
/// would never look. Every ingress must be stopped first (an append after the check would land
/// in the old layout); processors are restarted with the new `PARTITIONS` afterwards.
pub async fn repartition(con: &mut Conn, ns: &str, new: usize) -> Result<String, RepartitionError> {
    let old = recorded_partitions(con, ns).await?.unwrap_or(1);
    if old == new {
        return Ok(format!("the namespace already has {new} partition(s); nothing to do\n"));
    }
    for keys in crate::keys::Partitions::new(ns, old).all() {
        let groups: RedisResult<StreamInfoGroupsReply> =
            redis::cmd("XINFO").arg("GROUPS").arg(&keys.events).query_async(con).await;
        let groups = match groups {
            Ok(groups) => groups.groups,
            Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => Vec::new(),
            Err(err) => return Err(err.into()),
        };
        let length: u64 = redis::cmd("XLEN").arg(&keys.events).query_async(con).await?;
        if groups.is_empty() && length > 0 {
            return Err(RepartitionError::NotDrained(format!(
                "{} holds {length} entries and no consumer group has read them; start the processors and let them drain it",
                keys.events
            )));
        }
        for group in &groups {
            if group.pending > 0 || group.lag != Some(0) {
                let lag = group.lag.map(|l| l.to_string()).unwrap_or_else(|| "unknown".into());
                return Err(RepartitionError::NotDrained(format!(
                    "{} group {}: lag {lag}, pending {}; stop every ingress and let the processors finish first",
                    keys.events, group.name, group.pending
                )));
            }
        }
        let dead: u64 = redis::cmd("XLEN").arg(&keys.dead).query_async(con).await?;
        if dead > 0 {
            return Err(RepartitionError::NotDrained(format!(
                "{} holds {dead} dead entries; replay or purge them first (processor dead …)",
                keys.dead
            )));
        }
    }
    let () = redis::cmd("SET").arg(&Keys::new(ns).layout).arg(new).query_async(con).await?;
    Ok(format!(
        "partitions: {old} -> {new}; the old streams are drained. Start every ingress and processor with PARTITIONS={new}.\n"
    ))
}
