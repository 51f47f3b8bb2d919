//! The ingress's settings (SPEC §5).

use crate::auth::Verifier;
use shared::config::{Common, ConfigError, Reader, Var, COMMON_VARS};
use std::net::SocketAddr;
use std::time::Duration;

/// Variables only the ingress reads (see also [`COMMON_VARS`]).
pub const INGRESS_VARS: &[Var] = &[
    Var { name: "LISTEN_ADDR", default: "0.0.0.0:8080", help: "address of the HTTP listener" },
    Var {
        name: "WEBHOOK_SECRETS",
        default: "unset",
        help: "Standard Webhooks secrets (whsec_…), comma-separated for rotation",
    },
    Var {
        name: "MEETING_BAAS_API_KEY",
        default: "unset",
        help: "accepted in the x-meeting-baas-api-key header (API v1 webhooks)",
    },
    Var {
        name: "CALLBACK_SECRET",
        default: "unset",
        help: "accepted in the x-mb-secret header (API v2 per-bot callbacks)",
    },
    Var {
        name: "ALLOW_UNSIGNED",
        default: "false",
        help: "true accepts every request without authentication (local testing only)",
    },
    Var { name: "DEDUP_TTL_SECS", default: "86400", help: "how long a delivered event's dedup key is kept" },
    Var { name: "MAX_BODY_BYTES", default: "8388608", help: "largest accepted request body; larger ones get 413" },
    Var {
        name: "MAX_BACKLOG",
        default: "1000000",
        help: "group lag plus parked entries above which webhooks get 503 backlog_full",
    },
    Var {
        name: "REQUEST_TIMEOUT_MS",
        default: "10000",
        help: "a request's head and body must arrive within this (else 408, or the connection is closed)",
    },
    Var { name: "MAX_CONNECTIONS", default: "4096", help: "connections served at once; more wait to be accepted" },
    Var {
        name: "MIN_REPLICAS_ACK",
        default: "0",
        help: "answer 200 only once this many Redis replicas have the event (WAIT), else 503",
    },
    Var { name: "OTEL_SERVICE_NAME", default: "hookstream-ingress", help: "service.name of the exported spans" },
];

/// How long the ingress waits for `MIN_REPLICAS_ACK` replicas before it answers 503.
pub const REPLICA_ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the ingress reads the consumer group's lag for [`IngressConfig::max_backlog`].
pub const BACKLOG_REFRESH: Duration = Duration::from_secs(1);

/// Every variable the ingress reads, in `--help` order.
pub fn all_vars() -> Vec<Var> {
    COMMON_VARS.iter().chain(INGRESS_VARS).copied().collect()
}

#[derive(Debug, Clone)]
pub struct IngressConfig {
    pub common: Common,
    pub listen_addr: SocketAddr,
    pub verifier: Verifier,
    pub dedup_ttl_secs: u64,
    pub max_body_bytes: usize,
    pub max_backlog: u64,
    /// `REQUEST_TIMEOUT_MS`: how long the head may take to arrive, and then the body.
    pub request_timeout: Duration,
    /// `MAX_CONNECTIONS`: connections served at once.
    pub max_connections: usize,
    /// `MIN_REPLICAS_ACK`: replicas that must have an event before it is answered 200.
    pub min_replicas_ack: u32,
    /// Not an environment variable: [`BACKLOG_REFRESH`] in production; tests shorten it.
    pub backlog_refresh: Duration,
}

impl IngressConfig {
    pub fn read(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let common = Common::read(r)?;
        let listen_addr = r.socket_addr("LISTEN_ADDR", "0.0.0.0:8080")?;
        let verifier = Verifier::from_config(
            r.raw("WEBHOOK_SECRETS").as_deref(),
            r.raw("MEETING_BAAS_API_KEY").as_deref(),
            r.raw("CALLBACK_SECRET").as_deref(),
            r.bool("ALLOW_UNSIGNED", false)?,
        )?;
        // One year is the longest TTL that makes sense for a dedup window.
        let dedup_ttl_secs = r.number("DEDUP_TTL_SECS", 86_400, 1, 366 * 86_400)?;
        // 1 GiB is far beyond any webhook; the bound keeps the value a sane usize everywhere.
        let max_body_bytes = r.number("MAX_BODY_BYTES", 8_388_608, 1, 1 << 30)? as usize;
        Ok(Self {
            common,
            listen_addr,
            verifier,
            dedup_ttl_secs,
            max_body_bytes,
            max_backlog: r.number("MAX_BACKLOG", 1_000_000, 1, u64::MAX)?,
            request_timeout: Duration::from_millis(r.number("REQUEST_TIMEOUT_MS", 10_000, 1, 3_600_000)?),
            max_connections: r.number("MAX_CONNECTIONS", 4_096, 1, 1_000_000)? as usize,
            min_replicas_ack: r.number("MIN_REPLICAS_ACK", 0, 0, 64)? as u32,
            backlog_refresh: BACKLOG_REFRESH,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&'static str, &'static str)]) -> Result<IngressConfig, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        IngressConfig::read(&Reader::new(&map))
    }

    #[test]
    fn defaults_with_one_credential() {
        let c = read(&[("MEETING_BAAS_API_KEY", "k")]).expect("valid");
        assert_eq!(c.listen_addr, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(c.dedup_ttl_secs, 86_400);
        assert_eq!(c.max_body_bytes, 8_388_608);
        assert!(!c.verifier.allows_unsigned());
        assert_eq!(c.max_backlog, 1_000_000);
    }

    #[test]
    fn refuses_to_start_without_any_credential() {
        let err = read(&[]).expect_err("no credential");
        assert!(err.to_string().contains("ALLOW_UNSIGNED"), "{err}");
        assert!(read(&[("ALLOW_UNSIGNED", "true")]).expect("dev mode").verifier.allows_unsigned());
    }

    #[test]
    fn every_invalid_value_names_its_variable() {
        for (var, value) in [
            ("LISTEN_ADDR", "localhost"),
            ("WEBHOOK_SECRETS", "whsec_***not base64***"),
            ("WEBHOOK_SECRETS", "whsec_"),
            ("ALLOW_UNSIGNED", "sometimes"),
            ("DEDUP_TTL_SECS", "0"),
            ("DEDUP_TTL_SECS", "1d"),
            ("MAX_BODY_BYTES", "-1"),
            ("MAX_BODY_BYTES", "0"),
            ("REDIS_URL", "not a url"),
            ("MAX_BACKLOG", "0"),
            ("MAX_BACKLOG", "many"),
        ] {
            let err = read(&[("MEETING_BAAS_API_KEY", "k"), (var, value)]).expect_err(value);
            assert_eq!(err.var, var, "{var}={value}: {err}");
        }
    }
}
