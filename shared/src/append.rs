//! The dedup+append script: the only way an event enters `{ns}:events`.
//!
//! Why one script: if the dedup key were set by one command and the entry appended by another,
//! a crash (or a Redis error) between the two would leave a key that says "seen" for an event
//! that is not in the stream, and the sender's retry would be answered "duplicate" — the event
//! would be lost. Inside a Lua script the GET, XADD and SET run as one atomic step: either both
//! the key and the entry exist, or neither does.
//!
//! The dedup key stores the stream id of the first copy, so a duplicate is answered with the id
//! the sender's first attempt got. Both keys share the namespace hash tag (see [`crate::keys`]),
//! so the script is valid on Redis Cluster.
//!
//! The script is sent by SHA (EVALSHA); after a Redis restart empties the script cache, the
//! client library loads it again on the `NOSCRIPT` answer and retries, once.

use crate::entry::NewEntry;
use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};

/// The script's text (the bench's floor server runs it too).
pub const SCRIPT: &str = r#"
-- KEYS[1] dedup key, KEYS[2] events stream
-- ARGV[1] dedup TTL in seconds, ARGV[2..] the entry's field/value pairs
local first = redis.call('GET', KEYS[1])
if first then
  return {0, first}
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('SET', KEYS[1], id, 'NX', 'EX', ARGV[1])
return {1, id}
"#;

/// Whether Redis answered `NOSCRIPT` (inside a pipeline the error may come wrapped).
fn is_noscript(err: &redis::RedisError) -> bool {
    err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        || err.code() == Some("NOSCRIPT")
        || err.to_string().contains("NOSCRIPT")
}

/// How many replicas must have an append (`WAIT count timeout`), and how long to wait for them.
#[derive(Debug, Clone, Copy)]
pub struct Replicas {
    pub count: u32,
    pub timeout: std::time::Duration,
}

/// What the script did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// A first copy: appended under this stream id.
    Accepted(String),
    /// A copy of an event seen within the TTL: nothing written; the first copy's id.
    Duplicate(String),
}

impl Appended {
    /// The script's answer `{1 | 0, id}`.
    fn from_answer((fresh, id): (i64, String)) -> Self {
        if fresh == 1 {
            Appended::Accepted(id)
        } else {
            Appended::Duplicate(id)
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Appended::Accepted(id) | Appended::Duplicate(id) => id,
        }
    }
}

/// The compiled script (its SHA is computed once, here).
#[derive(Debug, Clone)]
pub struct DedupAppend {
    script: Script,
}

impl Default for DedupAppend {
    fn default() -> Self {
        Self::new()
    }
}

impl DedupAppend {
    pub fn new() -> Self {
        Self { script: Script::new(SCRIPT) }
    }

    /// One round trip: set the dedup key and append the entry, or answer the first copy's id.
    pub async fn run<C: ConnectionLike>(
        &self,
        con: &mut C,
        dedup_key: &str,
        events_key: &str,
        ttl_secs: u64,
        entry: &NewEntry<'_>,
    ) -> RedisResult<Appended> {
        let answer = self.invocation(dedup_key, events_key, ttl_secs, entry).invoke_async(con).await?;
        Ok(Appended::from_answer(answer))
    }

    /// The script call for one entry: keys, TTL, then the entry's fields.
    fn invocation<'a>(
        &'a self,
        dedup_key: &str,
        events_key: &str,
        ttl_secs: u64,
        entry: &NewEntry<'_>,
    ) -> redis::ScriptInvocation<'a> {
        let mut invocation = self.script.key(dedup_key);
        invocation.key(events_key).arg(ttl_secs);
        for (field, value) in entry.fields() {
            invocation.arg(field).arg(value);
        }
        invocation
    }

    /// [`Self::run`], then `WAIT replicas timeout` in the same pipeline — so on the same
    /// connection, right behind the append: how many replicas have everything written so far,
    /// this event (or its first copy) included. `(what the script did, replicas that have it)`.
    pub async fn run_replicated<C: ConnectionLike>(
        &self,
        con: &mut C,
        dedup_key: &str,
        events_key: &str,
        ttl_secs: u64,
        entry: &NewEntry<'_>,
        wait: Replicas,
    ) -> RedisResult<(Appended, u32)> {
        let invocation = self.invocation(dedup_key, events_key, ttl_secs, entry);
        let mut pipe = redis::pipe();
        pipe.invoke_script(&invocation).cmd("WAIT").arg(wait.count).arg(wait.timeout.as_millis() as u64);
        let answer: RedisResult<((i64, String), u32)> = pipe.query_async(con).await;
        let (answer, acked) = match answer {
            // After a Redis restart the script cache is empty: load it, then once more.
            Err(err) if is_noscript(&err) => {
                invocation.load_async(con).await?;
                pipe.query_async(con).await?
            }
            other => other?,
        };
        Ok((Appended::from_answer(answer), acked))
    }
}
