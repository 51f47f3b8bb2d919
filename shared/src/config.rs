//! The settings both binaries read ([`Common`]), assembled from environment variables with the
//! toolkit of [`crate::vars`] (re-exported here), and how secrets in them are kept out of every
//! output ([`Secret`], [`redact_urls`], [`redact_http_url`]).

pub use crate::vars::{help_table, ConfigError, Env, Reader, Source, Var};
use std::time::Duration;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The settings both binaries read.
#[derive(Debug, Clone)]
pub struct Common {
    /// `REDIS_URL`, which may hold a password: [`Self::redis_url_for_logs`] is what may be shown.
    pub redis_url: Secret<String>,
    pub redis_mode: crate::conn::Mode,
    /// `REDIS_SENTINEL_MASTER`: the primary's name (`REDIS_MODE=sentinel`).
    pub sentinel_master: String,
    /// `REDIS_TLS_CA_FILE`, `REDIS_TLS_CERT_FILE`, `REDIS_TLS_KEY_FILE`, read and checked.
    pub tls: crate::conn::TlsFiles,
    /// `PARTITIONS`: how many streams the events are split into (1 = the unpartitioned keys).
    pub partitions: usize,
    pub namespace: String,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    /// Traces: on when an OTLP endpoint is set (SPEC §6).
    pub otel: crate::otel::Settings,
}

/// The variables of [`Common`].
pub const COMMON_VARS: &[Var] = &[
    Var {
        name: "REDIS_URL",
        default: "redis://127.0.0.1:6379",
        help: "Redis to use (redis://, rediss:// for TLS, user:password@ for an ACL user); in cluster mode a \
               comma-separated list of seed nodes",
    },
    Var {
        name: "REDIS_TLS_CA_FILE",
        default: "unset",
        help: "PEM file of the CA that signed the Redis server's certificate (rediss://; default: the system roots)",
    },
    Var { name: "REDIS_TLS_CERT_FILE", default: "unset", help: "PEM client certificate for mutual TLS (with the key)" },
    Var { name: "REDIS_TLS_KEY_FILE", default: "unset", help: "PEM private key of REDIS_TLS_CERT_FILE" },
    Var {
        name: "REDIS_MODE",
        default: "standalone",
        help:
            "standalone (one Redis), cluster (Redis Cluster: REDIS_URL lists seed nodes) or sentinel (REDIS_URL lists \
               the Sentinels)",
    },
    Var {
        name: "REDIS_SENTINEL_MASTER",
        default: "mymaster",
        help: "the primary's name in the Sentinels (REDIS_MODE=sentinel)",
    },
    Var {
        name: "PARTITIONS",
        default: "1",
        help: "streams the events are split into (1 to 1024); fixed once a namespace has data",
    },
    Var { name: "HOOKSTREAM_NAMESPACE", default: "hookstream", help: "key prefix, used as the hash tag {ns}" },
    Var { name: "LOG_FORMAT", default: "text", help: "text or json; the level comes from RUST_LOG (info)" },
    Var { name: "SHUTDOWN_GRACE_MS", default: "25000", help: "time to finish in-flight work after SIGTERM/SIGINT" },
    Var {
        name: "OTEL_EXPORTER_OTLP_ENDPOINT",
        default: "unset",
        help: "OpenTelemetry collector (http://host:4318): set, traces are exported over OTLP/HTTP; the other \
               standard OTEL_* variables apply",
    },
];

/// `REDIS_URL` (one URL or a comma-separated list) as it may be printed: every password
/// replaced by `***` (`redis://user:***@host:6379`). Nothing hookstream prints — a log line, an
/// exit message, `processor status` — shows a password.
pub fn redact_urls(urls: &str) -> String {
    urls.split(',').map(redact_url).collect::<Vec<_>>().join(",")
}

fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    // Everything up to the last `@` is user information, however the rest parses: a password a
    // user forgot to percent-encode may hold `/`, `?` or `#`, which would otherwise end the
    // authority early and leave the password in the "path". (An `@` further on, in a query, only
    // hides more than it needs to.)
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return url.to_string() };
    let user = match userinfo.split_once(':') {
        Some((user, _password)) if !user.contains(['/', '?', '#']) => format!("{user}:***"),
        Some(_) => "***".to_string(),
        // `redis://password@host` is a password alone.
        None if !userinfo.is_empty() => "***".to_string(),
        None => String::new(),
    };
    format!("{scheme}://{user}@{host}")
}

/// Whether the user information of `url` (before its last `@`) holds a character that ends a
/// URL's authority (`/`, `?`, `#`): a password that must be percent-encoded to parse.
fn userinfo_needs_encoding(url: &str) -> bool {
    url.split(',').any(|url| {
        url.split_once("://")
            .and_then(|(_, rest)| rest.rsplit_once('@'))
            .is_some_and(|(userinfo, _)| userinfo.contains(['/', '?', '#']))
    })
}

/// A URL as any output may show it (SPEC §7): the user information replaced by `***` and the
/// query by `?***` (a query may carry a token), the fragment dropped. Used for `FORWARD_URL`
/// and every other URL a log line, a dead entry or a span names.
pub fn redact_http_url(url: &str) -> String {
    let url = url.split('#').next().unwrap_or_default();
    let (base, query) = match url.split_once('?') {
        Some((base, _)) => (base, "?***"),
        None => (url, ""),
    };
    let Some((scheme, rest)) = base.split_once("://") else { return format!("{base}{query}") };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{path}{query}"),
        None => format!("{scheme}://{authority}{path}{query}"),
    }
}

/// A value no output may show (SPEC §7): an API key, a webhook secret, a URL with a password.
/// Its `Debug` and `Display` print `***`, so a `?config` in a log line shows none; the value is
/// reached only through [`Secret::expose`], where it is used.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself, for the one place that sends or uses it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl<T> std::fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Reads and checks the `REDIS_TLS_*` files: they are set only for a `rediss://` `REDIS_URL` (on
/// a plain one they would silently do nothing); each must be readable and hold what it names (a
/// certificate, a private key); the certificate and the key come together.
fn read_tls(r: &Reader<'_>, redis_url: &str) -> Result<crate::conn::TlsFiles, ConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let read = |var: &'static str| -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(path) = r.raw(var) else { return Ok(None) };
        std::fs::read(&path).map(Some).map_err(|e| ConfigError::new(var, format!("cannot read {path:?}: {e}")))
    };
    let certificates = |var: &'static str, pem: &[u8]| -> Result<(), ConfigError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::new(var, format!("is not a PEM certificate file: {e}")))?;
        if certs.is_empty() {
            return Err(ConfigError::new(var, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
        }
        Ok(())
    };
    let set =
        ["REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE"].into_iter().find(|v| r.raw(v).is_some());
    if let Some(var) = set.filter(|_| !redis_url.split(',').any(crate::conn::is_tls)) {
        return Err(ConfigError::new(
            var,
            format!("is set, but REDIS_URL {:?} is not a rediss:// (TLS) URL", redact_urls(redis_url)),
        ));
    }
    let ca = read("REDIS_TLS_CA_FILE")?;
    if let Some(pem) = &ca {
        certificates("REDIS_TLS_CA_FILE", pem)?;
    }
    let client = match (read("REDIS_TLS_CERT_FILE")?, read("REDIS_TLS_KEY_FILE")?) {
        (None, None) => None,
        (Some(_), None) => return Err(ConfigError::new("REDIS_TLS_KEY_FILE", "must be set with REDIS_TLS_CERT_FILE")),
        (None, Some(_)) => return Err(ConfigError::new("REDIS_TLS_CERT_FILE", "must be set with REDIS_TLS_KEY_FILE")),
        (Some(cert), Some(key)) => {
            certificates("REDIS_TLS_CERT_FILE", &cert)?;
            PrivateKeyDer::from_pem_slice(&key)
                .map_err(|e| ConfigError::new("REDIS_TLS_KEY_FILE", format!("is not a PEM private key: {e}")))?;
            Some((cert, key))
        }
    };
    Ok(crate::conn::TlsFiles { ca, client })
}

impl Common {
    /// `REDIS_URL` with its passwords hidden, for log lines ([`redact_urls`]).
    pub fn redis_url_for_logs(&self) -> String {
        redact_urls(self.redis_url.expose())
    }

    pub fn read(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let redis_mode = match r.string("REDIS_MODE", "standalone").to_ascii_lowercase().as_str() {
            "standalone" => crate::conn::Mode::Standalone,
            "cluster" => crate::conn::Mode::Cluster,
            "sentinel" => crate::conn::Mode::Sentinel,
            other => {
                return Err(ConfigError::new("REDIS_MODE", format!("{other:?} is not standalone, cluster or sentinel")))
            }
        };
        let redis_url = r.string("REDIS_URL", "redis://127.0.0.1:6379");
        let tls = read_tls(r, &redis_url)?;
        let sentinel_master = r.string("REDIS_SENTINEL_MASTER", "mymaster");
        crate::conn::Target::open(redis_mode, &redis_url, &tls, &sentinel_master).map_err(|e| {
            let hint = if userinfo_needs_encoding(&redis_url) {
                "; a password holding /, ? or # must be percent-encoded (%2F, %3F, %23)"
            } else {
                ""
            };
            ConfigError::new("REDIS_URL", format!("{:?}: {e}{hint}", redact_urls(&redis_url)))
        })?;
        let partitions = r.number("PARTITIONS", 1, 1, 1024)? as usize;
        let namespace = r.string("HOOKSTREAM_NAMESPACE", "hookstream");
        if let Some(bad) = namespace.chars().find(|c| matches!(c, '{' | '}') || c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::new(
                "HOOKSTREAM_NAMESPACE",
                format!("{namespace:?} contains {bad:?}; braces, spaces and control characters are not allowed"),
            ));
        }
        let log_format = match r.string("LOG_FORMAT", "text").to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(ConfigError::new("LOG_FORMAT", format!("{other:?} is not text or json"))),
        };
        Ok(Self {
            redis_url: Secret::new(redis_url),
            redis_mode,
            sentinel_master,
            tls,
            partitions,
            namespace,
            log_format,
            shutdown_grace: r.millis("SHUTDOWN_GRACE_MS", 25_000)?,
            otel: crate::otel::Settings::read(r)?,
        })
    }

    /// The Redis client these settings name (checked when they were read).
    pub fn redis_target(&self) -> redis::RedisResult<crate::conn::Target> {
        crate::conn::Target::open(self.redis_mode, self.redis_url.expose(), &self.tls, &self.sentinel_master)
    }

    /// Every partition's keys.
    pub fn partitions(&self) -> crate::keys::Partitions {
        crate::keys::Partitions::new(&self.namespace, self.partitions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn tls_files_are_read_and_checked_at_start() {
        let dir = std::env::temp_dir().join(format!("hookstream-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        // The test reader takes 'static strings.
        let junk: &'static str = Box::leak(junk.to_str().unwrap().to_string().into_boxed_str());
        let tls = "rediss://127.0.0.1:6380";
        for (url, var, value, expect) in [
            (tls, "REDIS_TLS_CA_FILE", "/no/such/file", "REDIS_TLS_CA_FILE"),
            (tls, "REDIS_TLS_CA_FILE", junk, "REDIS_TLS_CA_FILE"),
            (tls, "REDIS_TLS_CERT_FILE", junk, "REDIS_TLS_KEY_FILE"),
            (tls, "REDIS_TLS_KEY_FILE", junk, "REDIS_TLS_CERT_FILE"),
            ("redis://127.0.0.1:6379", "REDIS_TLS_CA_FILE", junk, "REDIS_TLS_CA_FILE"),
        ] {
            let err = read(&[("REDIS_URL", url), (var, value)]).expect_err(var);
            assert_eq!(err.var, expect, "{var}={value}: {err}");
        }
        let c = read(&[("REDIS_URL", tls)]).expect("rediss:// with the system roots");
        assert!(c.tls.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn passwords_are_never_printed() {
        assert_eq!(redact_urls("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_urls("rediss://default:s3cret@db.example:6380/0"), "rediss://default:***@db.example:6380/0");
        assert_eq!(redact_urls("redis://:s3cret@h:1"), "redis://:***@h:1");
        assert_eq!(redact_urls("redis://s3cret@h:1"), "redis://***@h:1");
        assert_eq!(redact_urls("redis://u:p@ss:w@rd@h:1?x=1"), "redis://u:***@h:1?x=1");
        assert_eq!(
            redact_urls("redis://a:one@n1:7000, redis://a:two@n2:7001"),
            "redis://a:***@n1:7000, redis://a:***@n2:7001"
        );
        assert_eq!(redact_urls("not a url"), "not a url");
        // A password a user forgot to percent-encode: `/`, `?`, `#` do not end the redaction.
        for (url, shown) in [
            ("redis://default:Zq/8wXpw@127.0.0.1:6379", "redis://default:***@127.0.0.1:6379"),
            ("redis://default:a?b@h:1/0", "redis://default:***@h:1/0"),
            ("rediss://u:x#y@h:1", "rediss://u:***@h:1"),
            ("redis://Zq/8w@h:1", "redis://***@h:1"),
        ] {
            assert_eq!(redact_urls(url), shown, "{url}");
        }
    }

    #[test]
    fn an_unencoded_password_is_named_never_printed() {
        for url in ["redis://default:Zq/8wXpw@127.0.0.1:6379", "redis://default:Zq?8wXpw@127.0.0.1:6379"] {
            let err = read(&[("REDIS_URL", url)]).expect_err("does not parse");
            let line = err.to_string();
            assert!(!line.contains("8wXpw") && !line.contains("Zq"), "{line}");
            assert!(line.contains("REDIS_URL") && line.contains("percent-encoded"), "{line}");
        }
        // Percent-encoded, it parses; and `Debug` of the settings shows no password.
        let c = read(&[("REDIS_URL", "redis://default:Zq%2F8wXpw@127.0.0.1:6379")]).expect("encoded");
        assert!(!format!("{c:?}").contains("8wXpw"), "{c:?}");
    }

    #[test]
    fn http_urls_lose_credentials_and_query() {
        assert_eq!(redact_http_url("http://user:pw@host/hook?token=t"), "http://***@host/hook?***");
        assert_eq!(redact_http_url("https://host:8443/a/b"), "https://host:8443/a/b");
        assert_eq!(redact_http_url("https://host/a?x=1#frag"), "https://host/a?***");
        assert_eq!(redact_http_url("https://host/p@th"), "https://host/p@th");
        assert_eq!(format!("{:?} {}", Secret::new("k"), Secret::new("k")), "*** ***");
    }

    fn read(pairs: &[(&'static str, &'static str)]) -> Result<Common, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        Common::read(&Reader::new(&map))
    }

    #[test]
    fn defaults() {
        let c = read(&[]).expect("defaults are valid");
        assert_eq!(c.redis_url.expose(), "redis://127.0.0.1:6379");
        assert_eq!(c.namespace, "hookstream");
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.shutdown_grace, Duration::from_millis(25_000));
        assert_eq!((c.redis_mode, c.partitions), (crate::conn::Mode::Standalone, 1));
    }

    #[test]
    fn cluster_mode_takes_a_list_of_seed_nodes() {
        let c =
            read(&[("REDIS_MODE", "cluster"), ("REDIS_URL", "redis://a:7000, redis://b:7001"), ("PARTITIONS", "8")])
                .expect("valid");
        assert_eq!((c.redis_mode, c.partitions), (crate::conn::Mode::Cluster, 8));
        assert!(matches!(c.redis_target(), Ok(crate::conn::Target::Cluster(_))));
        let err = read(&[("REDIS_URL", "redis://a:7000,redis://b:7001")]).expect_err("a list needs cluster mode");
        assert!(err.to_string().contains("REDIS_MODE=cluster"), "{err}");
    }

    #[test]
    fn empty_means_unset() {
        let c = read(&[("HOOKSTREAM_NAMESPACE", "  "), ("LOG_FORMAT", "")]).expect("valid");
        assert_eq!(c.namespace, "hookstream");
    }

    #[test]
    fn every_invalid_value_names_its_variable() {
        for (var, value) in [
            ("REDIS_URL", "http://nope"),
            ("HOOKSTREAM_NAMESPACE", "a{b}"),
            ("HOOKSTREAM_NAMESPACE", "a b"),
            ("LOG_FORMAT", "xml"),
            ("REDIS_MODE", "replicated"),
            ("PARTITIONS", "0"),
            ("PARTITIONS", "1025"),
            ("PARTITIONS", "many"),
            ("SHUTDOWN_GRACE_MS", "soon"),
            ("SHUTDOWN_GRACE_MS", "0"),
            ("SHUTDOWN_GRACE_MS", "-5"),
        ] {
            let err = read(&[(var, value)]).expect_err(value);
            assert_eq!(err.var, var, "{value}");
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn bools_and_numbers() {
        let map: HashMap<&str, &str> = [("A", "TRUE"), ("B", "off"), ("C", "maybe"), ("N", "99")].into_iter().collect();
        let r = Reader::new(&map);
        assert!(r.bool("A", false).expect("valid"));
        assert!(!r.bool("B", true).expect("valid"));
        assert_eq!(r.bool("C", true).expect_err("invalid").var, "C");
        assert_eq!(r.number("N", 1, 1, 10).expect_err("too big").var, "N");
        assert_eq!(r.number("MISSING", 7, 1, 10), Ok(7));
    }
}
