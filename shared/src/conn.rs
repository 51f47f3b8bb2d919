//! How hookstream connects to Redis.
//!
//! A [`Conn`] is one multiplexed connection that every task shares (concurrent commands are
//! pipelined on one socket) and that heals itself:
//!
//! - **Lazily made.** A service starts even while Redis is down and serves again when Redis is
//!   back, without a restart. A connection attempt gives up after [`CONNECT_TIMEOUT`], and a
//!   reconnect makes only a couple of quick attempts, so a request that arrives while Redis is
//!   down fails fast (the ingress answers 503) instead of hanging.
//! - **A dropped socket** (reset, EOF) is replaced by the redis crate's `ConnectionManager`.
//! - **A silent Redis** — a host that vanished without a reset, a stalled proxy, a frozen
//!   process — answers nothing and closes nothing. Every socket has TCP keepalive (a dead peer is
//!   noticed by the kernel) and every command a response timeout; when a command times out, the
//!   connection is thrown away and the next command opens a fresh one (the crate's manager
//!   would keep waiting on the old socket: a timeout is not a "dropped connection" to it).
//!
//! **Redis Cluster** (`REDIS_MODE=cluster`): the same [`Conn`] wraps the redis crate's async
//! cluster connection, which routes each command (and each pipeline, by its keys) to the node
//! that owns the slot, follows MOVED/ASK, refreshes the slot map after a failover and
//! reconnects to nodes by itself; it is made lazily too, with the same keepalive, connect and
//! response timeouts — and, as for one Redis, a command that times out replaces it.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::{socket2::TcpKeepalive, TcpSettings};
use redis::{Client, Cmd, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long one TCP connect to Redis may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// TCP keepalive: the first probe after this much silence, then every [`KEEPALIVE_INTERVAL`];
/// with [`KEEPALIVE_RETRIES`] unanswered probes the kernel closes the socket (about 25 s).
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_RETRIES: u32 = 3;

/// How hookstream talks to Redis (`REDIS_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One Redis (`REDIS_URL` is its URL), with or without replicas.
    Standalone,
    /// A Redis Cluster (`REDIS_URL` is a comma-separated list of seed nodes).
    Cluster,
    /// One primary found through Redis Sentinel (`REDIS_URL` is a comma-separated list of
    /// Sentinels, `REDIS_SENTINEL_MASTER` the primary's name).
    Sentinel,
}

/// The PEM files of `REDIS_TLS_*` (read and checked with the configuration): the CA to trust
/// for `rediss://` URLs instead of the system roots, and a client certificate and key for
/// mutual TLS. Empty: `rediss://` URLs trust the system roots, and no client certificate.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    /// Certificate chain and private key, both PEM.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A private key is never printed.
        f.debug_struct("TlsFiles").field("ca", &self.ca.is_some()).field("client", &self.client.is_some()).finish()
    }
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client.is_none()
    }

    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig { client_cert: cert.clone(), client_key: key.clone() }),
            root_cert: self.ca.clone(),
        }
    }
}

/// Installs rustls's process-wide crypto provider (aws-lc-rs) once. The redis crate's TLS asks
/// rustls for the default provider, which exists only when exactly one provider's feature is
/// enabled in the whole build: built alone, the ingress had none (every `rediss://` connection
/// panicked); built with a crate that enables another, it would have two.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An error means a provider is installed already: that one is used.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// Whether a Redis URL asks for TLS.
/// What a Redis error at start-up most likely means, in words an operator acts on: a refused
/// password or ACL user, a TLS handshake that failed, or Redis not reachable.
pub fn explain(err: &redis::RedisError) -> String {
    let text = err.to_string();
    let lower = text.to_ascii_lowercase();
    let what = if matches!(err.kind(), redis::ErrorKind::AuthenticationFailed)
        || ["wrongpass", "noauth", "noperm", "invalid username-password", "authentication"]
            .iter()
            .any(|w| lower.contains(w))
    {
        "authentication failed (check the user and password in REDIS_URL)"
    } else if ["certificate", "tls", "handshake", "unknownissuer", "invalid peer"].iter().any(|w| lower.contains(w)) {
        "the TLS handshake failed (check rediss://, REDIS_TLS_CA_FILE and the client certificate)"
    } else {
        "Redis is not reachable"
    };
    format!("{what}: {text}")
}

pub fn is_tls(url: &str) -> bool {
    url.trim().to_ascii_lowercase().starts_with("rediss://")
}

/// Where Redis is: one server, or a cluster's seed nodes.
#[derive(Clone)]
pub enum Target {
    Standalone(Box<Client>),
    Cluster(Box<ClusterClient>),
    Sentinel(Arc<SentinelTarget>),
}

/// The Sentinels, and the primary's name: asked for the primary's address each time a
/// connection is made, so a connection made after a failover goes to the new primary.
pub struct SentinelTarget {
    client: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
    master: String,
}

impl SentinelTarget {
    /// The current primary's client, as the Sentinels name it (its role checked).
    async fn primary(&self) -> RedisResult<Client> {
        let client = self.client.lock().await.async_get_client().await?;
        Client::open(client.get_connection_info().clone().set_tcp_settings(tcp_settings()))
    }
}

impl Target {
    /// Checks `url` for `mode` (so a bad URL stops start-up) and prepares the client; `rediss://`
    /// URLs use TLS, with `tls`'s CA and client certificate when given. `master` names the
    /// primary in Sentinel mode.
    pub fn open(mode: Mode, url: &str, tls: &TlsFiles, master: &str) -> RedisResult<Self> {
        install_crypto_provider();
        match mode {
            Mode::Standalone => {
                if url.contains(',') {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "a list of URLs needs REDIS_MODE=cluster",
                    )));
                }
                client_with(url, tls).map(|c| Target::Standalone(Box::new(c)))
            }
            Mode::Cluster => {
                let nodes = url
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(|u| u.into_connection_info())
                    .collect::<RedisResult<Vec<_>>>()?;
                let mut builder =
                    ClusterClient::builder(nodes).tcp_settings(tcp_settings()).connection_timeout(CONNECT_TIMEOUT);
                if !tls.is_empty() && url.split(',').any(is_tls) {
                    builder = builder.certs(tls.certificates());
                }
                builder.build().map(|client| Target::Cluster(Box::new(client)))
            }
            Mode::Sentinel => sentinel(url, tls, master),
        }
    }
}

/// The Sentinel target of `urls`: the Sentinels' addresses, and — from the first URL, the same
/// for every node — the scheme (TLS or not), the user, the password and the database, used for
/// the Sentinels and for the primary alike.
fn sentinel(urls: &str, tls: &TlsFiles, master: &str) -> RedisResult<Target> {
    use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
    let infos = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| u.into_connection_info())
        .collect::<RedisResult<Vec<_>>>()?;
    let Some(first) = infos.first().cloned() else {
        return Err(redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no Sentinel address")));
    };
    let addrs: Vec<redis::ConnectionAddr> = infos.iter().map(|i| i.addr().clone()).collect();
    let mut builder = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?
        .set_client_to_redis_tcp_settings(tcp_settings())
        .set_client_to_sentinel_tcp_settings(tcp_settings())
        .set_client_to_redis_db(first.redis_settings().db());
    if let redis::ConnectionAddr::TcpTls { .. } = first.addr() {
        builder = builder
            .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
        if !tls.is_empty() {
            builder = builder
                .set_client_to_redis_certificates(tls.certificates())
                .set_client_to_sentinel_certificates(tls.certificates());
        }
    }
    if let Some(user) = first.redis_settings().username() {
        builder = builder.set_client_to_redis_username(user).set_client_to_sentinel_username(user);
    }
    if let Some(password) = first.redis_settings().password() {
        builder = builder.set_client_to_redis_password(password).set_client_to_sentinel_password(password);
    }
    let client = builder.build()?;
    Ok(Target::Sentinel(Arc::new(SentinelTarget {
        client: tokio::sync::Mutex::new(client),
        master: master.to_string(),
    })))
}

impl Target {
    /// The primary's name, in Sentinel mode.
    pub fn sentinel_master(&self) -> Option<&str> {
        match self {
            Target::Sentinel(t) => Some(&t.master),
            _ => None,
        }
    }
}

fn tcp_settings() -> TcpSettings {
    let keepalive =
        TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(KEEPALIVE_INTERVAL).with_retries(KEEPALIVE_RETRIES);
    let tcp = TcpSettings::default().set_keepalive(keepalive);
    // Data sent but unacknowledged this long (a peer gone without a reset) closes the socket.
    #[cfg(target_os = "linux")]
    let tcp = tcp.set_user_timeout(KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_RETRIES);
    tcp
}

/// Opens a client for `url` (checked here, so a bad URL stops start-up), with TCP keepalive on
/// every socket it opens.
pub fn client(url: &str) -> RedisResult<Client> {
    client_with(url, &TlsFiles::default())
}

/// [`client`], with `tls`'s CA and client certificate for a `rediss://` URL.
pub fn client_with(url: &str, tls: &TlsFiles) -> RedisResult<Client> {
    install_crypto_provider();
    let info = url.into_connection_info()?.set_tcp_settings(tcp_settings());
    if tls.is_empty() || !is_tls(url) {
        return Client::open(info);
    }
    Client::build_with_tls(info, tls.certificates())
}

/// A shared, lazily connecting, self-healing connection.
///
/// `response_timeout` bounds every command; pass `None` only for connections that run blocking
/// commands (XREADGROUP BLOCK) and nothing else.
pub fn manager(client: Client, response_timeout: Option<Duration>) -> RedisResult<ConnectionManager> {
    ConnectionManager::new_lazy_with_config(client, manager_config(response_timeout))
}

fn manager_config(response_timeout: Option<Duration>) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(response_timeout)
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

/// A connection that every task can clone and use as a `ConnectionLike`; a command that times
/// out replaces the connection (see the module docs). Cheap to clone: clones share one socket.
#[derive(Clone)]
pub struct Conn {
    shared: Arc<Shared>,
}

/// One made connection, of any kind.
#[derive(Clone)]
enum Made {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<ToPrimary>),
}

/// A connection to the primary the Sentinels name, found when the first command needs it: a
/// new one (after an error that says the primary went away or is one no more, see
/// [`Shared::heal`]) asks the Sentinels again, so it follows a failover.
struct ToPrimary {
    target: Arc<SentinelTarget>,
    response_timeout: Duration,
    manager: tokio::sync::OnceCell<ConnectionManager>,
}

impl ToPrimary {
    async fn manager(&self) -> RedisResult<ConnectionManager> {
        self.manager
            .get_or_try_init(|| async {
                let client = self.target.primary().await?;
                manager(client, Some(self.response_timeout))
            })
            .await
            .cloned()
    }
}

/// How much longer than the response timeout a cluster command may take, retries and
/// redirections included, before it counts as timed out here. The cluster client has its own
/// timeouts, but a request queued while it recovers from an outage can wait for ever (seen
/// after a cluster came up under a client made while it was down): this bound turns that into
/// a timeout, and the timeout into a fresh connection.
const CLUSTER_TIMEOUT_MARGIN: Duration = Duration::from_secs(1);

impl Made {
    fn open(target: &Target, response_timeout: Duration) -> RedisResult<Self> {
        match target {
            Target::Standalone(client) => manager((**client).clone(), Some(response_timeout)).map(Made::Standalone),
            Target::Cluster(client) => {
                let config =
                    ClusterConfig::new().set_connection_timeout(CONNECT_TIMEOUT).set_response_timeout(response_timeout);
                Ok(Made::Cluster(client.get_pending_async_connection_with_config(config)))
            }
            Target::Sentinel(target) => Ok(Made::Sentinel(Arc::new(ToPrimary {
                target: target.clone(),
                response_timeout,
                manager: tokio::sync::OnceCell::new(),
            }))),
        }
    }
}

struct Shared {
    target: Target,
    response_timeout: Duration,
    /// The connection in use, and how many times it was replaced (so that many commands timing
    /// out on one silent socket replace it once, not once each).
    current: Mutex<(u64, Made)>,
}

impl Conn {
    /// A lazily made connection whose commands each time out after `response_timeout` (for a
    /// connection running blocking reads: the longest block plus a margin).
    pub fn new(client: Client, response_timeout: Duration) -> RedisResult<Self> {
        Self::open(&Target::Standalone(Box::new(client)), response_timeout)
    }

    /// A lazily made connection to `target` (one server or a cluster) whose commands each time
    /// out after `response_timeout`.
    pub fn open(target: &Target, response_timeout: Duration) -> RedisResult<Self> {
        let current = Mutex::new((0, Made::open(target, response_timeout)?));
        Ok(Self { shared: Arc::new(Shared { target: target.clone(), response_timeout, current }) })
    }
}

impl Shared {
    fn current(&self) -> (u64, Made) {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `request` on the current connection; a timeout replaces it.
    async fn run<T>(&self, request: impl AsyncFnOnce(&mut Made) -> RedisResult<T>) -> RedisResult<T> {
        let (generation, mut con) = self.current();
        let result = match &con {
            Made::Standalone(_) => request(&mut con).await,
            Made::Cluster(_) => tokio::time::timeout(self.response_timeout + CLUSTER_TIMEOUT_MARGIN, request(&mut con))
                .await
                .unwrap_or_else(|_| {
                    Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "Redis Cluster did not answer in time")
                        .into())
                }),
            // Finding the primary asks the Sentinels first: bounded too.
            Made::Sentinel(_) => {
                tokio::time::timeout(self.response_timeout + CLUSTER_TIMEOUT_MARGIN, request(&mut con))
                    .await
                    .unwrap_or_else(|_| {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the Redis primary did not answer in time",
                        )
                        .into())
                    })
            }
        };
        if let Err(err) = &result {
            self.heal(err, generation);
        }
        result
    }

    /// After an error on connection number `generation`: a timeout replaces it (unless another
    /// command has already done so), so no command waits on a silent socket again.
    fn heal(&self, err: &redis::RedisError, generation: u64) {
        // With Sentinel, an error that says the primary is gone or is one no more (a failover:
        // the old one died, or came back as a replica) asks the Sentinels again.
        let moved = matches!(self.target, Target::Sentinel(_))
            && (err.is_io_error()
                || err.is_connection_dropped()
                || err.is_connection_refusal()
                || matches!(err.code(), Some("READONLY" | "MASTERDOWN" | "LOADING")));
        if !err.is_timeout() && !moved {
            return;
        }
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.0 != generation {
            return;
        }
        match Made::open(&self.target, self.response_timeout) {
            Ok(fresh) => {
                if err.is_timeout() {
                    tracing::warn!(
                        timeout_ms = self.response_timeout.as_millis() as u64,
                        "Redis did not answer in time; opening a new connection"
                    );
                } else {
                    tracing::warn!(
                        error = %err,
                        master = self.target.sentinel_master().unwrap_or_default(),
                        "the Redis primary is gone or is a replica now; asking the Sentinels for the primary"
                    );
                }
                *current = (generation + 1, fresh);
            }
            Err(e) => tracing::warn!(error = %e, "cannot replace a silent Redis connection"),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.shared.run(async |con: &mut Made| match con {
            Made::Standalone(c) => c.req_packed_command(cmd).await,
            Made::Cluster(c) => c.req_packed_command(cmd).await,
            Made::Sentinel(p) => p.manager().await?.req_packed_command(cmd).await,
        }))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(self.shared.run(async move |con: &mut Made| match con {
            Made::Standalone(c) => c.req_packed_commands(pipeline, offset, count).await,
            Made::Cluster(c) => c.req_packed_commands(pipeline, offset, count).await,
            Made::Sentinel(p) => p.manager().await?.req_packed_commands(pipeline, offset, count).await,
        }))
    }

    fn get_db(&self) -> i64 {
        match self.shared.current().1 {
            Made::Standalone(c) => c.get_db(),
            Made::Cluster(c) => c.get_db(),
            Made::Sentinel(p) => p.manager.get().map_or(0, |c| c.get_db()),
        }
    }
}
