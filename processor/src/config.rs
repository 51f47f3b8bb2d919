//! The processor's settings (SPEC §5).

pub use crate::handlers::decision::RecordPolicy;
pub use crate::timing::Timing;
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
    Var {
        name: "RECONCILE_RESULTS_HOURS",
        default: "24",
        help: "each pass asks again for the final webhook of v2 bots that ended this far back and whose result \
               never came (0 = off; at most DEDUP_TTL_SECS)",
    },
    Var {
        name: "RECONCILE_RESULTS_GRACE_SECS",
        default: "600",
        help: "a bot that ended more recently is not yet missing its result",
    },
    Var { name: "OTEL_SERVICE_NAME", default: "hookstream-processor", help: "service.name of the exported spans" },
];

/// Every variable the processor reads, in `--help` order.
pub fn all_vars() -> Vec<Var> {
    COMMON_VARS.iter().chain(PROCESSOR_VARS).copied().collect()
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
    pub park: crate::outcome::retry::ParkPolicy,
    /// `BREAKER_*` (SPEC §4.3).
    pub breakers: crate::downstream::breaker::Settings,
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
    /// The API client's settings.
    pub fn api_settings(&self) -> crate::downstream::meeting_baas::Settings {
        crate::downstream::meeting_baas::Settings {
            base: self.api_url.clone(),
            api_key: self.api_key.clone(),
            bot_name: self.bot_name.clone(),
            bot_config: self.bot_config.clone(),
        }
    }

    /// The built-in handlers' settings.
    pub fn handler_settings(&self) -> crate::handlers::Settings {
        crate::handlers::Settings {
            api: self.api_settings(),
            policy: self.record_policy,
            forward_url: self.forward_url.as_ref().map(|u| u.expose().clone()),
            timeout: self.handler_timeout,
        }
    }

    /// The reconciler of these settings, on the command connection `con`: its own API client
    /// (reads only, paced by its own limiter; through the API's breaker, shared through Redis).
    pub fn reconciler(&self, con: shared::conn::Conn) -> Result<crate::reconcile::Reconciler, reqwest::Error> {
        let http = crate::http::http_client(self.handler_timeout)?;
        let partitions = self.common.partitions();
        let breaker = crate::downstream::breaker::Breakers::new(&partitions, &con, self.breakers).meeting_baas;
        // Its Api never writes: the write limiter it carries is never asked.
        let no_writes = crate::downstream::limiter::WriteLimiter::new(String::new(), con.clone(), 0);
        let api = crate::downstream::meeting_baas::Api::new(http, &self.api_settings(), no_writes, None, breaker);
        let connections =
            crate::calendars::Connections::new(con.clone(), partitions.namespace(), !self.reconcile.interval.is_zero());
        Ok(crate::reconcile::Reconciler::new(
            api,
            con,
            partitions,
            self.record_policy,
            self.reconcile.clone(),
            connections,
        ))
    }

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
            park: crate::outcome::retry::ParkPolicy {
                initial: Duration::from_millis(r.number("RETRY_PARK_INITIAL_MS", 60_000, 1, max_ms)?),
                max: Duration::from_millis(r.number("RETRY_PARK_MAX_MS", 3_600_000, 1, max_ms)?),
                horizon: Duration::from_secs(r.number("RETRY_HORIZON_SECS", 86_400, 0, 10 * 366 * 86_400)?),
            },
            breakers: crate::downstream::breaker::Settings {
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
                results_lookback: Duration::from_secs(r.number("RECONCILE_RESULTS_HOURS", 24, 0, 366 * 24)? * 3_600),
                results_grace: Duration::from_secs(r.number("RECONCILE_RESULTS_GRACE_SECS", 600, 0, 7 * 86_400)?),
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
            crate::outcome::retry::ParkPolicy {
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
