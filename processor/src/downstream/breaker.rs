//! Breakers (SPEC §4.3): one per downstream — the Meeting BaaS API, `FORWARD_URL` — shared by
//! every replica through Redis (`{ns}:breaker:<downstream>`, a hash).
//!
//! - **Closed** (no key, or a key counting `failures`): calls go. Each transient failure of a
//!   call adds one; a success deletes the key. After `BREAKER_FAILURES` in a row it opens.
//! - **Open** (`open_until` in the future): no replica calls the downstream. A call that meets
//!   it fails at once with [`Refused`] (to the retry loop, `HandlerError::Unavailable`), without
//!   reaching the network; the
//!   retry loop parks the entry without counting an attempt ([`crate::outcome::retry`]).
//! - **Half open** (`open_until` past): the first replica to ask gets the one probe
//!   (`probe_until` marks it taken, for one handler timeout, so a probe whose process died is
//!   replaced); the others are refused as if open. The probe's success deletes the key (closed,
//!   `info` line); its failure opens the breaker for another cooldown.
//!
//! Every decision is one script on Redis's own clock (`TIME`), so replicas' clocks do not
//! matter. To keep the healthy path free of Redis round trips, each replica remembers what it
//! last learned: a breaker found closed with nothing counted is not asked again for
//! [`CLOSED_FRESH`] (so a breaker opened by another replica is seen here within that time), and
//! one found open is not asked again for [`CLOSED_FRESH`] either (its `open_until` is kept, so
//! a refused entry still waits the whole cooldown; but a breaker that `processor retry now` made
//! half open, or another replica's probe closed, is seen within that time). A success is written only when
//! Redis may hold failures to forget (this replica saw some, or made the probe).

use crate::http::HandlerError;
use redis::Script;
use shared::conn::Conn;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long a replica trusts a "closed, nothing counted" answer before it asks Redis again.
pub const CLOSED_FRESH: Duration = Duration::from_millis(500);

const ADMIT_SCRIPT: &str = concat!(
    crate::clock::lua_now!(),
    r#"
-- KEYS[1] breaker; ARGV[1] how long a probe may take, ms.
-- Returns {0, failures} closed; {1, ms until it half-opens} open; {2, 0} the probe is yours;
-- {3, ms until the probe under way is given up} half open, another replica probes.
local h = redis.call('HMGET', KEYS[1], 'open_until', 'probe_until', 'failures', 'last_error')
local open_until = tonumber(h[1] or '0')
if open_until == 0 then
  return {0, tonumber(h[3] or '0'), ''}
end
if now < open_until then
  return {1, open_until - now, h[4] or ''}
end
local probe_until = tonumber(h[2] or '0')
if probe_until > now then
  return {3, probe_until - now, h[4] or ''}
end
redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[1]))
-- The probe's answer must find the breaker: kept at least until the probe is given up.
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
end
return {2, 0, ''}
"#
);

const FAILED_SCRIPT: &str = concat!(
    crate::clock::lua_now!(),
    r#"
-- KEYS[1] breaker; ARGV[1] BREAKER_FAILURES, ARGV[2] BREAKER_COOLDOWN_MS, ARGV[3] how long
-- failures are remembered while closed, ms; ARGV[4] 1 when the failed call was the probe;
-- ARGV[5] how long an open breaker is kept once its cooldown is over and nobody probes it, ms;
-- ARGV[6] the failure (kept as `last_error`: what an entry parked behind the breaker shows).
-- Returns {0, failures} still closed; {1, 0} already open; {2, cooldown} opened now;
-- {3, cooldown} the probe failed: open again.
local cooldown = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'last_error', ARGV[6])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until > 0 then
  if ARGV[4] == '1' then
    redis.call('HSET', KEYS[1], 'open_until', now + cooldown)
    redis.call('HDEL', KEYS[1], 'probe_until')
    redis.call('PEXPIRE', KEYS[1], cooldown + tonumber(ARGV[5]))
    return {3, cooldown}
  end
  return {1, 0}
end
local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if n >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'open_until', now + cooldown, 'opened_at', now)
  -- Half open with no call to probe it, it is forgotten after a while (closed again): an
  -- idle breaker must not report "open" for ever after its downstream came back.
  redis.call('PEXPIRE', KEYS[1], cooldown + tonumber(ARGV[5]))
  return {2, cooldown}
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {0, n}
"#
);

const SUCCEEDED_SCRIPT: &str = concat!(
    crate::clock::lua_now!(),
    r#"
-- KEYS[1] breaker; ARGV[1] 1 when the call was the probe.
-- Forgets the failures; closes a half-open breaker. An open one stays open unless the call was
-- its probe (a call sent before it opened proves little). Returns 1 when it closed a breaker.
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until > now and ARGV[1] ~= '1' then
  return 0
end
redis.call('DEL', KEYS[1])
if open_until > 0 then return 1 end
return 0
"#
);

/// A call refused without reaching the network: the downstream's breaker is open (or another
/// replica probes it) for `wait` more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    pub reason: String,
    pub wait: Duration,
    /// The `downstream` label.
    pub downstream: &'static str,
}

impl From<Refused> for HandlerError {
    fn from(r: Refused) -> Self {
        HandlerError::Unavailable { reason: r.reason, wait: r.wait, downstream: r.downstream }
    }
}

/// A downstream with a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downstream {
    MeetingBaas,
    Forward,
}

impl Downstream {
    pub const ALL: [Downstream; 2] = [Downstream::MeetingBaas, Downstream::Forward];

    /// The `downstream` label, and the last part of the breaker's key.
    pub fn label(self) -> &'static str {
        match self {
            Downstream::MeetingBaas => "meeting_baas",
            Downstream::Forward => "forward",
        }
    }

    /// How log lines name it.
    pub fn describe(self) -> &'static str {
        match self {
            Downstream::MeetingBaas => "the Meeting BaaS API",
            Downstream::Forward => "FORWARD_URL",
        }
    }
}

/// `BREAKER_FAILURES`, `BREAKER_COOLDOWN_MS`, and how long a probe may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Transient failures in a row that open a breaker (0: no breakers).
    pub failures: u32,
    pub cooldown: Duration,
    /// After this, a probe whose answer never came is given up and another may go.
    pub probe_timeout: Duration,
}

impl Settings {
    /// How long a half-open breaker that nobody probes keeps its state before it is forgotten
    /// (closed): one more cooldown and a probe's time. Without traffic nothing can show that
    /// the downstream is still down, and the `hookstream_breaker_open` gauge (and its alert)
    /// must not stay at 1 for ever.
    pub fn idle_half_open(&self) -> Duration {
        self.cooldown + self.probe_timeout.max(Duration::from_millis(1))
    }
}

/// A call under way, let through by [`Breaker::admit`]: made just before the request is sent
/// and [`Call::finish`]ed with its result. Dropped unfinished — the attempt was cut off by
/// `HANDLER_TIMEOUT_MS` (the retry loop drops its future), or stopped — it counts as a
/// transient failure (SPEC §4.3): a downstream that hangs opens its breaker like one that fails.
#[must_use = "finish the call with its result"]
pub struct Call {
    breaker: Breaker,
    pass: Pass,
    finished: bool,
}

impl Call {
    /// Records how the call ended ([`Breaker::record`]).
    pub async fn finish<T>(mut self, result: &Result<T, HandlerError>) {
        self.finished = true;
        self.breaker.record(self.pass, result).await;
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.finished || self.pass == Pass::Free || self.breaker.0.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (breaker, pass) = (self.breaker.clone(), self.pass);
        runtime.spawn(async move {
            let cut_off: Result<(), HandlerError> =
                Err(HandlerError::transient("the call was cut off before it answered (HANDLER_TIMEOUT_MS)"));
            breaker.record(pass, &cut_off).await;
        });
    }
}

/// What a call was let through as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// No breaker (or Redis could not tell): nothing to record.
    Free,
    /// Closed.
    Closed,
    /// The one probe of a half-open breaker.
    Probe,
}

/// One downstream's breaker; cheap to clone. [`Breaker::off`] lets every call through.
#[derive(Clone, Default)]
pub struct Breaker(Option<Arc<Inner>>);

struct Inner {
    downstream: Downstream,
    key: String,
    con: Conn,
    settings: Settings,
    local: Mutex<Local>,
    /// Every partition's retry set: where the entries it refused wait.
    retry_sets: Vec<String>,
    admit: Script,
    failed: Script,
    succeeded: Script,
}

/// What this replica last learned from Redis.
#[derive(Default)]
struct Local {
    /// Open (or probed by another replica) until then: refused without asking Redis.
    open_until: Option<Instant>,
    /// While open: when to ask Redis again all the same.
    recheck_at: Option<Instant>,
    /// Closed with no failure counted, until then: let through without asking Redis.
    closed_until: Option<Instant>,
    /// Redis may hold failures that a success must forget.
    dirty: bool,
    /// The downstream's own last failure, as Redis had it when the breaker was found open.
    last_error: String,
}

impl Breaker {
    /// No breaker: every call goes.
    pub fn off() -> Self {
        Self(None)
    }

    /// The breaker of `downstream` at `key`; off when `settings.failures` is 0. When it closes,
    /// the entries it made wait in `retry_sets` are made due.
    pub fn new(downstream: Downstream, key: String, con: Conn, settings: Settings, retry_sets: Vec<String>) -> Self {
        if settings.failures == 0 {
            return Self::off();
        }
        Self(Some(Arc::new(Inner {
            downstream,
            key,
            con,
            settings,
            local: Mutex::new(Local::default()),
            retry_sets,
            admit: Script::new(ADMIT_SCRIPT),
            failed: Script::new(FAILED_SCRIPT),
            succeeded: Script::new(SUCCEEDED_SCRIPT),
        })))
    }

    /// The call `call` through this breaker: refused while it is open, else made and counted
    /// however it ends (see [`Call`]). For a call that must do more between the breaker's
    /// answer and the request (a write waits for the write limit first), [`Self::admit`],
    /// [`Self::start`] and [`Call::finish`] are the same steps apart.
    pub async fn call<T>(&self, call: impl Future<Output = Result<T, HandlerError>>) -> Result<T, HandlerError> {
        let started = self.start(self.admit().await?);
        let result = call.await;
        started.finish(&result).await;
        result
    }

    /// Asks whether a call may go: `Err(Refused)` while the breaker is open
    /// (or another replica probes it). Redis failing to answer lets the call go.
    pub async fn admit(&self) -> Result<Pass, Refused> {
        let Some(inner) = &self.0 else { return Ok(Pass::Free) };
        let now = Instant::now();
        {
            let local = inner.local();
            let fresh = local.recheck_at.is_some_and(|at| at > now);
            if let Some(until) = local.open_until.filter(|until| *until > now && fresh) {
                return Err(inner.refusal_with(until - now, &local.last_error));
            }
            if local.closed_until.is_some_and(|until| until > now) {
                return Ok(Pass::Closed);
            }
        }
        let answer: redis::RedisResult<(i64, i64, String)> = inner
            .admit
            .key(&inner.key)
            .arg(inner.settings.probe_timeout.as_millis() as u64)
            .invoke_async(&mut inner.con.clone())
            .await;
        let (state, value, last_error) = match answer {
            Ok(answer) => answer,
            Err(err) => {
                tracing::debug!(downstream = inner.downstream.label(), error = %err, "breaker not readable; calling");
                return Ok(Pass::Free);
            }
        };
        let mut local = inner.local();
        match state {
            0 => {
                local.open_until = None;
                local.dirty = value > 0;
                local.closed_until = (value == 0).then(|| now + CLOSED_FRESH.min(inner.settings.cooldown));
                Ok(Pass::Closed)
            }
            2 => {
                local.open_until = None;
                local.closed_until = None;
                Ok(Pass::Probe)
            }
            1 => {
                // Open until it half-opens: nothing to ask Redis before then.
                let wait = Duration::from_millis(value.max(1) as u64);
                local.open_until = Some(now + wait);
                local.recheck_at = Some(now + CLOSED_FRESH);
                local.closed_until = None;
                local.last_error = last_error;
                Err(inner.refusal_with(wait, &local.last_error))
            }
            _ => {
                // Another replica probes: its answer may come any moment, so this is remembered
                // briefly, not for the probe's whole time limit.
                let wait = Duration::from_millis(value.max(1) as u64).min(CLOSED_FRESH);
                local.open_until = Some(now + wait);
                local.recheck_at = Some(now + CLOSED_FRESH);
                local.closed_until = None;
                local.last_error = last_error;
                Err(inner.refusal_with(wait, &local.last_error))
            }
        }
    }

    /// The call `pass` let through begins now: see [`Call`].
    pub fn start(&self, pass: Pass) -> Call {
        Call { breaker: self.clone(), pass, finished: false }
    }

    /// Records how a call let through by [`Self::admit`] ended: a transient error counts
    /// against the downstream; anything else (an answer, even a 4xx) shows it up.
    pub async fn record<T>(&self, pass: Pass, result: &Result<T, HandlerError>) {
        let Some(inner) = &self.0 else { return };
        if pass == Pass::Free {
            return;
        }
        let probe = u8::from(pass == Pass::Probe);
        if let Err(HandlerError::Transient { reason, .. }) = result {
            {
                let mut local = inner.local();
                local.closed_until = None;
                local.dirty = true;
            }
            // Failures are forgotten after a quiet while: "in a row" means in one episode.
            let remember = (inner.settings.cooldown * 10).max(Duration::from_secs(60));
            let answer: redis::RedisResult<(i64, i64)> = inner
                .failed
                .key(&inner.key)
                .arg(inner.settings.failures)
                .arg(inner.settings.cooldown.as_millis() as u64)
                .arg(remember.as_millis() as u64)
                .arg(probe)
                .arg(inner.settings.idle_half_open().as_millis() as u64)
                .arg(reason.chars().take(500).collect::<String>())
                .invoke_async(&mut inner.con.clone())
                .await;
            match answer {
                Ok((2, _)) => {
                    {
                        let mut local = inner.local();
                        local.open_until = Some(Instant::now() + inner.settings.cooldown);
                        local.recheck_at = Some(Instant::now() + CLOSED_FRESH);
                        local.last_error = reason.clone();
                    }
                    tracing::warn!(
                        downstream = inner.downstream.label(),
                        failures = inner.settings.failures,
                        cooldown_ms = inner.settings.cooldown.as_millis() as u64,
                        error = %reason,
                        "breaker opened: {} failed {} times in a row; no replica calls it for BREAKER_COOLDOWN_MS, \
                         entries that need it are parked",
                        inner.downstream.describe(),
                        inner.settings.failures,
                    );
                }
                Ok((3, _)) => {
                    {
                        let mut local = inner.local();
                        local.open_until = Some(Instant::now() + inner.settings.cooldown);
                        local.recheck_at = Some(Instant::now() + CLOSED_FRESH);
                        local.last_error = reason.clone();
                    }
                    tracing::debug!(downstream = inner.downstream.label(), error = %reason, "breaker probe failed; open again");
                }
                Ok(_) => {}
                Err(err) => tracing::debug!(downstream = inner.downstream.label(), error = %err, "breaker not written"),
            }
            return;
        }
        if pass != Pass::Probe && !inner.local().dirty {
            return;
        }
        let closed: redis::RedisResult<i64> =
            inner.succeeded.key(&inner.key).arg(probe).invoke_async(&mut inner.con.clone()).await;
        match closed {
            Ok(closed) => {
                inner.local().dirty = false;
                if closed == 1 {
                    inner.local().open_until = None;
                    inner.wake_parked();
                    tracing::info!(
                        downstream = inner.downstream.label(),
                        "breaker closed: {} answered again",
                        inner.downstream.describe()
                    );
                }
            }
            Err(err) => tracing::debug!(downstream = inner.downstream.label(), error = %err, "breaker not written"),
        }
    }
}

impl Inner {
    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The refusal, naming the downstream's own last error (SPEC: a parked entry shows it,
    /// not only the breaker's state).
    fn refusal_with(&self, wait: Duration, last_error: &str) -> Refused {
        let last = if last_error.is_empty() { String::new() } else { format!("; its last error: {last_error}") };
        Refused {
            reason: format!(
                "{} was not called: its breaker is open after {} transient failures in a row{last}",
                self.downstream.describe(),
                self.settings.failures
            ),
            wait,
            downstream: self.downstream.label(),
        }
    }

    /// The breaker closed: the entries parked because it was open come back now, not at their
    /// due time (which may be a park delay away). In the background: the probe's entry goes on.
    fn wake_parked(self: &Arc<Self>) {
        let inner = self.clone();
        tokio::spawn(async move {
            let mut made = 0;
            for key in &inner.retry_sets {
                match crate::stream::wake_parked(&mut inner.con.clone(), key, inner.downstream.label()).await {
                    Ok(n) => made += n,
                    Err(err) => tracing::debug!(error = %err, retry = %key, "waking parked entries failed"),
                }
            }
            if made > 0 {
                tracing::info!(
                    downstream = inner.downstream.label(),
                    entries = made,
                    "entries parked while the breaker was open are due now"
                );
            }
        });
    }
}

/// The breakers of both downstreams.
#[derive(Clone, Default)]
pub struct Breakers {
    pub meeting_baas: Breaker,
    pub forward: Breaker,
}

impl Breakers {
    /// Both breakers of the namespace of `partitions` (off when `settings.failures` is 0).
    pub fn new(partitions: &shared::keys::Partitions, con: &Conn, settings: Settings) -> Self {
        let keys = partitions.namespace();
        let retry_sets: Vec<String> = partitions.all().iter().map(|k| k.retry.clone()).collect();
        let make = |d: Downstream| Breaker::new(d, keys.breaker(d.label()), con.clone(), settings, retry_sets.clone());
        Self { meeting_baas: make(Downstream::MeetingBaas), forward: make(Downstream::Forward) }
    }
}

/// A breaker's state as `processor status` and the gauges read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Closed {
        failures: u64,
    },
    /// With the downstream's own last error.
    Open {
        for_ms: u64,
        last_error: String,
    },
    HalfOpen {
        last_error: String,
    },
}

impl State {
    pub fn is_open(&self) -> bool {
        !matches!(self, State::Closed { .. })
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Closed { failures: 0 } => write!(f, "closed"),
            State::Closed { failures } => write!(f, "closed ({failures} failures in a row)"),
            State::Open { for_ms, last_error } => {
                write!(f, "open (probe in {:.1} s)", *for_ms as f64 / 1000.0)?;
                if !last_error.is_empty() {
                    write!(f, "; last error: {last_error}")?;
                }
                Ok(())
            }
            State::HalfOpen { last_error } => {
                write!(f, "half open (one probe goes)")?;
                if !last_error.is_empty() {
                    write!(f, "; last error: {last_error}")?;
                }
                Ok(())
            }
        }
    }
}

const STATE_SCRIPT: &str = concat!(
    crate::clock::lua_now!(),
    r#"
-- KEYS[1] breaker. Returns {0, failures} closed, {1, ms until half open} open, {2, 0} half open.
local h = redis.call('HMGET', KEYS[1], 'open_until', 'failures', 'last_error')
local open_until = tonumber(h[1] or '0')
if open_until == 0 then return {0, tonumber(h[2] or '0'), h[3] or ''} end
if open_until > now then return {1, open_until - now, h[3] or ''} end
return {2, 0, h[3] or ''}
"#
);

/// Reads the state of the breaker at `key` (no probe taken).
pub async fn state(con: &mut Conn, key: &str) -> redis::RedisResult<State> {
    let (state, value, last_error): (i64, u64, String) = Script::new(STATE_SCRIPT).key(key).invoke_async(con).await?;
    Ok(match state {
        0 => State::Closed { failures: value },
        1 => State::Open { for_ms: value, last_error },
        _ => State::HalfOpen { last_error },
    })
}

const HALF_OPEN_SCRIPT: &str = concat!(
    crate::clock::lua_now!(),
    r#"
-- KEYS[1] breaker. An open breaker whose cooldown is not over is made half open now, and a probe
-- under way forgotten: the next call (any replica's) is its probe. Returns 1 when it changed.
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until > now then
  redis.call('HSET', KEYS[1], 'open_until', now)
  redis.call('HDEL', KEYS[1], 'probe_until')
  return 1
end
return 0
"#
);

/// `processor retry now`: the breaker at `key`, if open, is made half open at once, so the
/// first entry made due probes the downstream instead of meeting the cooldown (and a probe's
/// success wakes every entry parked behind it). `true` when it was open.
pub async fn half_open_now(con: &mut Conn, key: &str) -> redis::RedisResult<bool> {
    let changed: i64 = Script::new(HALF_OPEN_SCRIPT).key(key).invoke_async(con).await?;
    Ok(changed == 1)
}
