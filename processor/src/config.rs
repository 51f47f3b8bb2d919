//! The processor's settings (SPEC §5).

use reqwest::Url;
use shared::config::{Common, ConfigError, Reader, Secret, Var, COMMON_VARS};
use std::net::SocketAddr;
use std::time::Duration;

/// Variables only the processor reads (see also [`COMMON_VARS`]).
pub const PROCESSOR_VARS: &[Var] = &[
    Var { name: "METRICS_ADDR", default: "0.0.0.0:9090", help: "address of /healthz, /readyz and /metrics" },
    Var { name: "CONSUMER_GROUP", default: "processors", help: "the consumer group (created at id 0 when missing)" },
    Var {
        name: "CONSUMER_NAME",
        default: "<hostname>-<pid>",
        help: "this replica's consumer name; unique per replica",
    },
    Var { name: "CONCURRENCY", default: "16", help: "entries handled at once" },
    Var { name: "BATCH_SIZE", default: "64", help: "most entries read by one XREADGROUP" },
    Var { name: "BLOCK_MS", default: "5000", help: "how long one XREADGROUP waits for new entries" },
    Var { name: "CLAIM_IDLE_MS", default: "60000", help: "entries idle this long in any consumer are reclaimed" },
    Var { name: "MAX_DELIVERIES", default: "5", help: "an entry delivered more often is dead-lettered unhandled" },
    Var { name: "HANDLER_TIMEOUT_MS", default: "30000", help: "time limit of one handler attempt" },
    Var { name: "RETRY_INITIAL_MS", default: "500", help: "first retry delay (exponential, with jitter)" },
    Var { name: "RETRY_MAX_INTERVAL_MS", default: "30000", help: "longest delay between two attempts" },
    Var {
        name: "RETRY_MAX_ELAPSED_MS",
        default: "120000",
        help: "retry in place this long, then park the entry (or dead-letter it, RETRY_HORIZON_SECS=0)",
    },
    Var { name: "RETRY_PARK_INITIAL_MS", default: "60000", help: "first delay of a parked entry (doubling)" },
    Var { name: "RETRY_PARK_MAX_MS", default: "3600000", help: "longest delay of a parked entry" },
    Var {
        name: "RETRY_HORIZON_SECS",
        default: "86400",
        help: "dead-letter at the next failure this long after the first attempt (0 = no parking)",
    },
    Var {
        name: "BREAKER_FAILURES",
        default: "5",
        help: "transient failures in a row that open a downstream's breaker (0 = no breakers)",
    },
    Var { name: "BREAKER_COOLDOWN_MS", default: "30000", help: "how long an open breaker stays open before a probe" },
    Var { name: "STREAM_RETENTION_SECS", default: "3600", help: "processed entries older than this are trimmed" },
    Var {
        name: "DEAD_RETENTION_DAYS",
        default: "30",
        help: "dead-lettered entries older than this are trimmed from the dead stream (0 keeps them all)",
    },
    Var { name: "MEETING_BAAS_API_URL", default: "https://api.meetingbaas.com", help: "the Meeting BaaS API" },
    Var { name: "MEETING_BAAS_API_KEY", default: "unset", help: "sent as x-meeting-baas-api-key on every API call" },
    Var { name: "RECORD_POLICY", default: "all", help: "which meetings get a bot: all, organizer or none" },
    Var { name: "BOT_NAME", default: "hookstream recorder", help: "the bot_name of scheduled bots" },
    Var { name: "BOT_CONFIG", default: "{}", help: "JSON object merged under bot_name into every bot request" },
    Var { name: "FORWARD_URL", default: "unset", help: "where other events (bot.*, complete, failed, …) are POSTed" },
    Var {
        name: "CONSUMER_IDLE_REAP_SECS",
        default: "3600",
        help: "consumers idle this long with nothing pending are removed from the group",
    },
    Var {
        name: "API_WRITES_PER_SEC",
        default: "5",
        help: "Meeting BaaS API writes per second, all replicas together (your plan's limit; 0 = no limit)",
    },
    Var {
        name: "RECONCILE_INTERVAL_SECS",
        default: "900",
        help: "how often one replica compares the calendars with their bots (±10 %; 0 = off)",
    },
    Var { name: "RECONCILE_HORIZON_HOURS", default: "168", help: "how far ahead the reconciler looks" },
    Var {
        name: "RECONCILE_APIS",
        default: "auto",
        help: "API versions to reconcile: auto (those with calendar webhooks in 30 days), v1, v2, v1,v2, none",
    },
    Var { name: "RECONCILE_READS_PER_SEC", default: "20", help: "the reconciler's API reads per second, all replicas" },
    Var { name: "OTEL_SERVICE_NAME", default: "hookstream-processor", help: "service.name of the exported spans" },
];

/// The intervals that derive from `CLAIM_IDLE_MS`, `BLOCK_MS` and the command timeout, built
/// once ([`Timing::new`]) and used everywhere; their invariants are written once, in
/// [`Timing::check`], and checked at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `CLAIM_IDLE_MS`: an entry idle this long in any consumer is reclaimed by another.
    pub claim_idle: Duration,
    /// How often the leases of held entries and the held meeting locks are renewed.
    pub renew_every: Duration,
    /// How often the reclaimer scans the pending list.
    pub reclaim_every: Duration,
    /// A meeting lock's TTL: a holder that dies frees its meetings no later than its entries.
    pub lock_ttl: Duration,
    /// How long a command on the shared connection may take before the connection is given up
    /// as silent (and replaced).
    pub command_timeout: Duration,
    /// `BLOCK_MS`: how long one XREADGROUP waits for new entries.
    pub block: Duration,
    /// The blocking reader's response timeout: `BLOCK_MS` plus [`READER_MARGIN`].
    pub reader_timeout: Duration,
}

/// How much longer than `BLOCK_MS` the reader waits for Redis's answer before it gives the
/// connection up as silent.
pub const READER_MARGIN: Duration = Duration::from_secs(2);
/// The longest and the shortest command timeout of the shared connection.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
const SHORTEST_COMMAND_TIMEOUT: Duration = Duration::from_millis(250);

impl Timing {
    /// The timing for `CLAIM_IDLE_MS` = `claim_idle` and `BLOCK_MS` = `block`; refused (naming
    /// the variables) when its invariants cannot hold.
    pub fn new(claim_idle: Duration, block: Duration) -> Result<Self, ConfigError> {
        // Two renewal intervals and a command timeout fit in CLAIM_IDLE_MS (invariant 1).
        let renew_every = claim_idle / 6;
        let timing = Self {
            claim_idle,
            renew_every,
            reclaim_every: (claim_idle / 2).clamp(Duration::from_millis(20), Duration::from_secs(5)),
            lock_ttl: claim_idle,
            command_timeout: renew_every.clamp(SHORTEST_COMMAND_TIMEOUT, COMMAND_TIMEOUT),
            block,
            reader_timeout: block + READER_MARGIN,
        };
        timing.check().map_err(|why| ConfigError::new("CLAIM_IDLE_MS", why))?;
        Ok(timing)
    }

    /// The invariants, in one place:
    ///
    /// 1. a lease (and a lock) renewal that hangs is given up, and the next one lands, before
    ///    another replica may reclaim the entry (or the lock expire). The longest a lease goes
    ///    without a reset: a renewal applied at once, the next one hanging until given up (its
    ///    tick is then delayed to the interval after), the one after applied at the end of its
    ///    own command time — `2 × renew_every` + `command_timeout` < `claim_idle`;
    /// 2. a dead holder's meetings are free no later than its entries: `lock_ttl` ≥
    ///    `claim_idle`;
    /// 3. an abandoned entry is looked for at least twice per `CLAIM_IDLE_MS`, or every 5 s:
    ///    `reclaim_every` ≤ `claim_idle` / 2 (or 5 s);
    /// 4. a blocking read is not mistaken for a silent Redis: `reader_timeout` > `BLOCK_MS`.
    pub fn check(&self) -> Result<(), String> {
        if self.renew_every * 2 + self.command_timeout >= self.claim_idle {
            return Err(format!(
                "{} ms is too short: leases and meeting locks are renewed every CLAIM_IDLE_MS/6 ({} ms), and a \
                 Redis command may take {} ms before it is given up, so after a renewal that hangs the next could \
                 land after another replica reclaimed the entry; use at least {} ms",
                self.claim_idle.as_millis(),
                self.renew_every.as_millis(),
                self.command_timeout.as_millis(),
                (SHORTEST_COMMAND_TIMEOUT.as_millis() * 3 / 2) + 1
            ));
        }
        if self.lock_ttl < self.claim_idle {
            return Err("the meeting lock's TTL must not be shorter than CLAIM_IDLE_MS".into());
        }
        if self.reclaim_every > (self.claim_idle / 2).max(Duration::from_secs(5)) {
            return Err("the reclaimer must scan at least every CLAIM_IDLE_MS/2".into());
        }
        if self.reader_timeout <= self.block {
            return Err("the reader's response timeout must exceed BLOCK_MS".into());
        }
        Ok(())
    }
}

/// Every variable the processor reads, in `--help` order.
pub fn all_vars() -> Vec<Var> {
    COMMON_VARS.iter().chain(PROCESSOR_VARS).copied().collect()
}

/// Which meetings get a recording bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordPolicy {
    /// Every event with a meeting URL that has not ended.
    All,
    /// Only events the calendar's owner organises.
    Organizer,
    /// None.
    None,
}

impl std::str::FromStr for RecordPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "all" => Ok(Self::All),
            "organizer" => Ok(Self::Organizer),
            "none" => Ok(Self::None),
            _ => Err("expected all, organizer or none".into()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    pub common: Common,
    pub metrics_addr: SocketAddr,
    pub group: String,
    pub consumer: String,
    pub concurrency: usize,
    pub batch_size: usize,
    /// `CLAIM_IDLE_MS`, `BLOCK_MS` and the intervals derived from them (tests may shorten its
    /// `command_timeout`).
    pub timing: Timing,
    pub max_deliveries: u64,
    pub handler_timeout: Duration,
    pub retry_initial: Duration,
    pub retry_max_interval: Duration,
    pub retry_max_elapsed: Duration,
    /// `RETRY_PARK_*` and `RETRY_HORIZON_SECS` (SPEC §4.3).
    pub park: crate::retry::ParkPolicy,
    /// `BREAKER_*` (SPEC §4.3).
    pub breakers: crate::breaker::Settings,
    pub stream_retention: Duration,
    /// `DEAD_RETENTION_DAYS` (zero: keep every dead entry).
    pub dead_retention: Duration,
    pub api_url: Url,
    /// `MEETING_BAAS_API_KEY`: shown as `***` by `Debug` (SPEC §7).
    pub api_key: Option<Secret<String>>,
    pub record_policy: RecordPolicy,
    pub bot_name: String,
    pub bot_config: serde_json::Map<String, serde_json::Value>,
    /// `FORWARD_URL`, which may carry credentials or a token: outputs name it through
    /// [`shared::config::redact_http_url`].
    pub forward_url: Option<Secret<Url>>,
    pub consumer_idle_reap: Duration,
    /// POST/PATCH/DELETE requests per second to the Meeting BaaS API, all replicas together
    /// (0: no limit).
    pub api_writes_per_sec: u32,
    /// `RECONCILE_*` (SPEC §4.4).
    pub reconcile: crate::reconcile::Settings,
    /// Not an environment variable: how often the trimmer (and the consumer reaper) runs (tests
    /// shorten it).
    pub trim_interval: Duration,
}

/// `<hostname>-<pid>`: unique per container (compose gives each replica its own hostname) and
/// per process on one host.
pub fn default_consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "processor".into());
    format!("{host}-{}", std::process::id())
}

fn http_url(r: &Reader<'_>, name: &'static str, value: &str) -> Result<Url, ConfigError> {
    let shown = shared::config::redact_http_url(value);
    let url = Url::parse(value).map_err(|e| ConfigError::new(name, format!("{shown:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::new(name, format!("{shown:?} must be an http:// or https:// URL with a host")));
    }
    let _ = r;
    Ok(url)
}

fn name(r: &Reader<'_>, var: &'static str, default: String) -> Result<String, ConfigError> {
    let value = r.raw(var).unwrap_or(default);
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::new(var, format!("{value:?} must not contain spaces or control characters")));
    }
    Ok(value)
}

impl ProcessorConfig {
    pub fn read(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let common = Common::read(r)?;
        let bot_config = match r.raw("BOT_CONFIG") {
            None => serde_json::Map::new(),
            Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(serde_json::Value::Object(map)) => map,
                Ok(_) => return Err(ConfigError::new("BOT_CONFIG", "must be a JSON object")),
                Err(e) => return Err(ConfigError::new("BOT_CONFIG", format!("is not valid JSON: {e}"))),
            },
        };
        let api_url =
            http_url(r, "MEETING_BAAS_API_URL", &r.string("MEETING_BAAS_API_URL", "https://api.meetingbaas.com"))?;
        let forward_url = match r.raw("FORWARD_URL") {
            None => None,
            Some(v) => Some(Secret::new(http_url(r, "FORWARD_URL", &v)?)),
        };
        let record_policy = r.parse("RECORD_POLICY", RecordPolicy::All)?;
        let bot_name = r.string("BOT_NAME", "hookstream recorder");
        if bot_name.chars().count() > 255 {
            return Err(ConfigError::new("BOT_NAME", "must be at most 255 characters"));
        }
        let max_ms = u64::from(u32::MAX);
        let block = Duration::from_millis(r.number("BLOCK_MS", 5_000, 1, max_ms)?);
        let claim_idle = Duration::from_millis(r.number("CLAIM_IDLE_MS", 60_000, 1, max_ms)?);
        let config = Self {
            common,
            metrics_addr: r.socket_addr("METRICS_ADDR", "0.0.0.0:9090")?,
            group: name(r, "CONSUMER_GROUP", "processors".into())?,
            consumer: name(r, "CONSUMER_NAME", default_consumer_name())?,
            concurrency: r.number("CONCURRENCY", 16, 1, 100_000)? as usize,
            batch_size: r.number("BATCH_SIZE", 64, 1, 100_000)? as usize,
            max_deliveries: r.number("MAX_DELIVERIES", 5, 1, 1_000_000)?,
            handler_timeout: r.millis("HANDLER_TIMEOUT_MS", 30_000)?,
            retry_initial: r.millis("RETRY_INITIAL_MS", 500)?,
            retry_max_interval: r.millis("RETRY_MAX_INTERVAL_MS", 30_000)?,
            retry_max_elapsed: Duration::from_millis(r.number("RETRY_MAX_ELAPSED_MS", 120_000, 0, max_ms)?),
            park: crate::retry::ParkPolicy {
                initial: Duration::from_millis(r.number("RETRY_PARK_INITIAL_MS", 60_000, 1, max_ms)?),
                max: Duration::from_millis(r.number("RETRY_PARK_MAX_MS", 3_600_000, 1, max_ms)?),
                horizon: Duration::from_secs(r.number("RETRY_HORIZON_SECS", 86_400, 0, 10 * 366 * 86_400)?),
            },
            breakers: crate::breaker::Settings {
                failures: r.number("BREAKER_FAILURES", 5, 0, 1_000_000)? as u32,
                cooldown: Duration::from_millis(r.number("BREAKER_COOLDOWN_MS", 30_000, 1, max_ms)?),
                probe_timeout: Duration::ZERO,
            },
            stream_retention: Duration::from_secs(r.number("STREAM_RETENTION_SECS", 3_600, 0, 10 * 366 * 86_400)?),
            dead_retention: Duration::from_secs(r.number("DEAD_RETENTION_DAYS", 30, 0, 10 * 366)? * 86_400),
            api_url,
            api_key: r.raw("MEETING_BAAS_API_KEY").map(Secret::new),
            record_policy,
            bot_name,
            bot_config,
            forward_url,
            consumer_idle_reap: Duration::from_secs(r.number(
                "CONSUMER_IDLE_REAP_SECS",
                3_600,
                1,
                10 * 366 * 86_400,
            )?),
            api_writes_per_sec: r.number("API_WRITES_PER_SEC", 5, 0, 1_000_000)? as u32,
            reconcile: crate::reconcile::Settings {
                interval: Duration::from_secs(r.number("RECONCILE_INTERVAL_SECS", 900, 0, 366 * 86_400)?),
                horizon: Duration::from_secs(r.number("RECONCILE_HORIZON_HOURS", 168, 1, 24 * 366)? * 3_600),
                apis: r.parse("RECONCILE_APIS", crate::reconcile::Apis::Auto)?,
                reads_per_sec: r.number("RECONCILE_READS_PER_SEC", 20, 1, 1_000_000)? as u32,
            },
            trim_interval: Duration::from_secs(10),
            timing: Timing::new(claim_idle, block)?,
        };
        if config.retry_max_interval < config.retry_initial {
            return Err(ConfigError::new("RETRY_MAX_INTERVAL_MS", "must not be smaller than RETRY_INITIAL_MS"));
        }
        if config.park.max < config.park.initial {
            return Err(ConfigError::new("RETRY_PARK_MAX_MS", "must not be smaller than RETRY_PARK_INITIAL_MS"));
        }
        let mut config = config;
        // A probe whose answer never came is given up after one attempt's time limit.
        config.breakers.probe_timeout = config.handler_timeout + Duration::from_secs(1);
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&'static str, &'static str)]) -> Result<ProcessorConfig, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        ProcessorConfig::read(&Reader::new(&map))
    }

    #[test]
    fn defaults() {
        let c = read(&[]).expect("defaults are valid");
        assert_eq!(c.metrics_addr, "0.0.0.0:9090".parse().expect("addr"));
        assert_eq!(c.group, "processors");
        assert!(c.consumer.ends_with(&format!("-{}", std::process::id())), "{}", c.consumer);
        assert_eq!((c.concurrency, c.batch_size), (16, 64));
        assert_eq!(c.max_deliveries, 5);
        assert_eq!(c.handler_timeout, Duration::from_millis(30_000));
        assert_eq!(
            (c.retry_initial, c.retry_max_interval, c.retry_max_elapsed),
            (Duration::from_millis(500), Duration::from_millis(30_000), Duration::from_millis(120_000))
        );
        assert_eq!(c.stream_retention, Duration::from_secs(3_600));
        assert_eq!(c.api_url.as_str(), "https://api.meetingbaas.com/");
        assert_eq!(c.api_key, None);
        assert_eq!(c.record_policy, RecordPolicy::All);
        assert_eq!(c.bot_name, "hookstream recorder");
        assert!(c.bot_config.is_empty());
        assert_eq!(c.forward_url, None);
        assert_eq!(c.consumer_idle_reap, Duration::from_secs(3_600));
        assert_eq!(
            c.park,
            crate::retry::ParkPolicy {
                initial: Duration::from_secs(60),
                max: Duration::from_secs(3_600),
                horizon: Duration::from_secs(86_400)
            }
        );
        assert_eq!((c.breakers.failures, c.breakers.cooldown), (5, Duration::from_secs(30)));
        assert_eq!(
            c.timing,
            Timing {
                claim_idle: Duration::from_secs(60),
                renew_every: Duration::from_secs(10),
                reclaim_every: Duration::from_secs(5),
                lock_ttl: Duration::from_secs(60),
                command_timeout: Duration::from_secs(10),
                block: Duration::from_secs(5),
                reader_timeout: Duration::from_secs(7),
            }
        );
    }

    #[test]
    fn timing_invariants() {
        // The shortest CLAIM_IDLE_MS whose renewals still land in time.
        let t = Timing::new(Duration::from_millis(376), Duration::from_millis(100)).expect("valid");
        assert_eq!(t.command_timeout, Duration::from_millis(250));
        assert!(t.check().is_ok());
        let refused = Timing::new(Duration::from_millis(375), Duration::from_millis(100)).expect_err("too short");
        assert_eq!(refused.var, "CLAIM_IDLE_MS");
        assert!(refused.to_string().contains("at least 376 ms"), "{refused}");
        // Short CLAIM_IDLE_MS: a shorter command timeout, so a hung renewal is given up in time.
        let t = Timing::new(Duration::from_secs(3), Duration::from_secs(1)).expect("valid");
        assert_eq!((t.renew_every, t.command_timeout), (Duration::from_millis(500), Duration::from_millis(500)));
        // Renewed every CLAIM_IDLE_MS/3 with a command timeout as long, a lease could go two
        // intervals and a timeout (= CLAIM_IDLE_MS) without a reset: refused.
        let every_third = Duration::from_secs(1);
        let old = Timing { renew_every: every_third, command_timeout: every_third, ..t };
        assert!(old.check().is_err());
        assert_eq!(t.reclaim_every, Duration::from_millis(1500));
        assert_eq!(t.reader_timeout, Duration::from_secs(3));
        // A test's own command timeout that breaks the first invariant is found by `check`.
        let broken = Timing { command_timeout: Duration::from_secs(60), ..t };
        assert!(broken.check().is_err());
    }

    #[test]
    fn values_are_read() {
        let c = read(&[
            ("RECORD_POLICY", "Organizer"),
            ("BOT_CONFIG", r#"{"recording_mode":"audio_only"}"#),
            ("FORWARD_URL", "http://127.0.0.1:9/hook"),
            ("CONSUMER_NAME", "replica-1"),
        ])
        .expect("valid");
        assert_eq!(c.record_policy, RecordPolicy::Organizer);
        assert_eq!(c.bot_config["recording_mode"], "audio_only");
        assert_eq!(c.forward_url.expect("set").expose().as_str(), "http://127.0.0.1:9/hook");
        assert_eq!(c.consumer, "replica-1");
    }

    #[test]
    fn every_invalid_value_names_its_variable() {
        for (var, value) in [
            ("METRICS_ADDR", "9090"),
            ("CONSUMER_GROUP", "two words"),
            ("CONSUMER_NAME", "a b"),
            ("CONCURRENCY", "0"),
            ("CONCURRENCY", "many"),
            ("BATCH_SIZE", "0"),
            ("BLOCK_MS", "0"),
            ("CLAIM_IDLE_MS", "5"),
            ("CLAIM_IDLE_MS", "300"),
            ("MAX_DELIVERIES", "0"),
            ("HANDLER_TIMEOUT_MS", "1.5"),
            ("RETRY_INITIAL_MS", "-1"),
            ("RETRY_MAX_INTERVAL_MS", "100"),
            ("RETRY_MAX_ELAPSED_MS", "x"),
            ("STREAM_RETENTION_SECS", "1h"),
            ("MEETING_BAAS_API_URL", "not a url"),
            ("MEETING_BAAS_API_URL", "ftp://example.com"),
            ("RECORD_POLICY", "some"),
            ("BOT_CONFIG", "[1]"),
            ("BOT_CONFIG", "{"),
            ("FORWARD_URL", "example.com/hook"),
            ("REDIS_URL", "nope"),
            ("CONSUMER_IDLE_REAP_SECS", "0"),
            ("RECONCILE_INTERVAL_SECS", "soon"),
            ("RECONCILE_HORIZON_HOURS", "0"),
            ("RECONCILE_APIS", "v3"),
            ("RECONCILE_READS_PER_SEC", "0"),
            ("RETRY_PARK_INITIAL_MS", "0"),
            ("RETRY_PARK_MAX_MS", "1000"),
            ("RETRY_HORIZON_SECS", "-1"),
            ("BREAKER_FAILURES", "few"),
            ("BREAKER_COOLDOWN_MS", "0"),
        ] {
            let err = read(&[(var, value)]).expect_err(value);
            assert_eq!(err.var, var, "{var}={value}: {err}");
        }
    }
}
