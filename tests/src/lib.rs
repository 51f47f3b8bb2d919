//! Test support: a real `redis-server` per test, fixtures, polling with a deadline.
//!
//! Tests never mock Redis. [`RedisServer::start`] runs the `redis-server` binary on a free port
//! in a temporary directory; it panics with a clear message when the binary is missing, so a
//! machine without Redis fails the suite loudly instead of skipping it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod collector;
pub mod fake_api;
pub mod openapi;
pub mod proxy;

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The default deadline of [`eventually`] and of server start-up.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// How long a spawned binary may take to exit when a test waits for it (a hung binary fails the
/// test instead of hanging the suite).
pub const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// A `redis-server` child process on 127.0.0.1, killed when dropped.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
    /// The ACL user and password the test support itself connects as (see
    /// [`RedisServer::start_with_user`]); `None`: the default user, no password.
    auth: Option<(String, String)>,
    /// With [`RedisServer::start_tls`]: the TLS port (the plain one stays, for assertions).
    tls_port: Option<u16>,
}

/// Redis Sentinels watching one primary as `mymaster` (quorum 2 of 3, a primary is down after
/// 1 s without an answer), each a `redis-server --sentinel` child on a free port, killed when
/// dropped.
pub struct Sentinels {
    nodes: Vec<(u16, Child, tempfile::TempDir)>,
}

impl Sentinels {
    /// The name the primary is watched under.
    pub const MASTER: &'static str = "mymaster";

    /// Starts `n` Sentinels watching `primary`, and waits until each one knows the primary's
    /// `replicas` replicas and the other Sentinels (they discover each other every 2 s).
    pub fn start(primary: &RedisServer, n: usize, replicas: usize) -> Self {
        Self::start_on(primary.port(), n, replicas, "", |_| String::new())
    }

    /// [`Self::start`] over TLS: each Sentinel has a TLS port beside its plain one (kept for
    /// the test's own questions) and reaches the primary and its replicas over TLS, at the
    /// primary's TLS port; [`Self::tls_urls`] lists the Sentinels' TLS ports.
    pub fn start_tls(primary: &RedisServer, pki: &TestPki, n: usize, replicas: usize) -> Self {
        let tls = format!(
            "tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca.display()
        );
        let primary_port = primary.tls_port.expect("a TLS primary");
        Self::start_on(primary_port, n, replicas, &tls, |_| format!("tls-port {}\n", free_port()))
    }

    fn start_on(primary_port: u16, n: usize, replicas: usize, extra: &str, per_node: impl Fn(usize) -> String) -> Self {
        let mut nodes = Vec::new();
        for i in 0..n {
            let port = free_port();
            let dir = tempfile::tempdir().unwrap();
            let conf = dir.path().join("sentinel.conf");
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nprotected-mode no\nloglevel warning\n{extra}{}\
                 sentinel monitor {m} 127.0.0.1 {primary_port} 2\nsentinel down-after-milliseconds {m} 1000\n\
                 sentinel failover-timeout {m} 3000\nsentinel parallel-syncs {m} 1\n",
                dir.path().display(),
                per_node(i),
                m = Self::MASTER,
            );
            std::fs::write(&conf, text).unwrap();
            let child = Command::new(redis_server_binary())
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start redis-server --sentinel: {e}"));
            nodes.push((port, child, dir));
        }
        let sentinels = Self { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        for (port, _, _) in &sentinels.nodes {
            loop {
                let knows = Self::ask(*port, "replicas").is_some_and(|r| r == replicas)
                    && Self::ask(*port, "sentinels").is_some_and(|s| s == n - 1);
                if knows {
                    break;
                }
                assert!(Instant::now() < deadline, "Sentinel on port {port} did not learn its peers in time");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        sentinels
    }

    /// How many `SENTINEL <what> mymaster` lists (replicas, sentinels) on the Sentinel at `port`.
    fn ask(port: u16, what: &str) -> Option<usize> {
        let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?.get_connection().ok()?;
        let rows: Vec<redis::Value> = redis::cmd("SENTINEL").arg(what).arg(Self::MASTER).query(&mut con).ok()?;
        Some(rows.len())
    }

    /// `REDIS_URL` for `REDIS_MODE=sentinel` over TLS: every Sentinel's TLS port (read from its
    /// configuration), comma-separated.
    pub fn tls_urls(&self) -> String {
        self.nodes
            .iter()
            .map(|(_, _, dir)| {
                let conf = std::fs::read_to_string(dir.path().join("sentinel.conf")).unwrap();
                let port =
                    conf.lines().find_map(|l| l.strip_prefix("tls-port ")).expect("a TLS Sentinel").trim().to_string();
                format!("rediss://127.0.0.1:{port}")
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `REDIS_URL` for `REDIS_MODE=sentinel`: every Sentinel, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(|(port, _, _)| format!("redis://127.0.0.1:{port}")).collect::<Vec<_>>().join(",")
    }

    /// The primary's port as the first Sentinel that answers has it.
    pub fn primary_port(&self) -> Option<u16> {
        self.nodes.iter().find_map(|(port, _, _)| {
            let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?.get_connection().ok()?;
            let addr: Vec<String> =
                redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(Self::MASTER).query(&mut con).ok()?;
            addr.get(1)?.parse().ok()
        })
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Certificates for a TLS test, generated with rcgen into a temporary directory: a CA, a server
/// certificate for 127.0.0.1 signed by it, a client certificate signed by it, and a second CA
/// that signed nothing here (the wrong CA).
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
}

impl TestPki {
    pub fn generate() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let ca_params = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params
        };
        let (ca_key, other_key) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let ca_cert = ca_params("hookstream test CA").self_signed(&ca_key).unwrap();
        let other_cert = ca_params("some other CA").self_signed(&other_key).unwrap();
        let issuer = Issuer::new(ca_params("hookstream test CA"), ca_key);
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
        let (client_cert, client_key) = leaf(vec!["hookstream-client".into()]);
        Self {
            ca: write("ca.pem", ca_cert.pem()),
            other_ca: write("other-ca.pem", other_cert.pem()),
            server_cert: write("server.pem", server_cert),
            server_key: write("server.key", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client.key", client_key),
            dir,
        }
    }

    pub fn path(path: &std::path::Path) -> String {
        path.to_str().unwrap().to_string()
    }

    /// `redis-server` arguments for a TLS port `tls_port` with this PKI's server certificate;
    /// with `client_certs`, TLS clients must present a certificate signed by its CA.
    fn server_args(&self, tls_port: u16, client_certs: bool) -> Vec<String> {
        let auth = if client_certs { "yes" } else { "no" };
        [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &Self::path(&self.server_cert),
            "--tls-key-file",
            &Self::path(&self.server_key),
            "--tls-ca-cert-file",
            &Self::path(&self.ca),
            "--tls-auth-clients",
            auth,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// `args` as the `&str`s `RedisServer::start_args` takes.
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Runs `redis-cli [cli…] --cluster create <addrs> --cluster-replicas N --cluster-yes`.
fn create_cluster(cli: &[&str], addrs: &[String], replicas: usize) {
    let out = run_command(Command::new(redis_cli_binary()).args(cli).args(["--cluster", "create"]).args(addrs).args([
        "--cluster-replicas",
        &replicas.to_string(),
        "--cluster-yes",
    ]));
    assert!(
        out.status.success(),
        "redis-cli --cluster create failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `redis-server` binary: `$REDIS_SERVER`, else `redis-server` on the PATH. Checked once
/// to be Redis 7.0 or newer (XAUTOCLAIM's deleted ids, `XINFO` lag): an older one fails here,
/// with the version it found, rather than as a puzzling test failure later.
pub fn redis_server_binary() -> PathBuf {
    static CHECKED: OnceLock<PathBuf> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let binary = find_redis_server();
            let out = Command::new(&binary)
                .arg("--version")
                .output()
                .unwrap_or_else(|e| panic!("cannot run {} --version: {e}", binary.display()));
            let text = String::from_utf8_lossy(&out.stdout);
            let version = redis_version(&text)
                .unwrap_or_else(|| panic!("cannot read the version of {}: {text}", binary.display()));
            assert!(
                version >= (7, 0),
                "{} is Redis {}.{}; hookstream and its tests need Redis 7.0 or newer",
                binary.display(),
                version.0,
                version.1
            );
            binary
        })
        .clone()
}

/// `(major, minor)` from `redis-server --version` output (`Redis server v=7.0.15 sha=…`).
pub fn redis_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split_whitespace().find_map(|w| w.strip_prefix("v="))?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn find_redis_server() -> PathBuf {
    if let Some(path) = std::env::var_os("REDIS_SERVER") {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "redis-server not found on PATH (nor $REDIS_SERVER). These tests need a real Redis: \
             install it (Debian: apt-get install -y redis-server) or run .ci/run, which does."
        )
    })
}

/// A TCP port that was free a moment ago, and that this process has not handed out before (two
/// tests of one binary never get the same port). Another process may still take it before it
/// is bound: [`RedisServer`] checks that the server answering is its own child.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

impl RedisServer {
    /// Starts a fresh, empty Redis (no persistence) and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_args(&[])
    }

    /// Starts Redis with AOF on (`appendfsync always`), so a restart keeps the data.
    pub fn start_persistent() -> Self {
        Self::start_args(&["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// Starts a replica of `primary` (no persistence) and waits until its link to the primary is
    /// up and the primary counts it.
    pub fn start_replica_of(primary: &RedisServer) -> Self {
        let port = primary.port.to_string();
        let replica = Self::start_args(&["--appendonly", "no", "--replicaof", "127.0.0.1", &port]);
        replica.wait_linked(primary);
        replica
    }

    /// Waits until this replica's link to `primary` is up and `primary` counts it.
    pub fn wait_linked(&self, primary: &RedisServer) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let info = |server: &RedisServer| -> String {
                redis::cmd("INFO").arg("replication").query(&mut server.con()).unwrap_or_default()
            };
            if info(self).contains("master_link_status:up") && !info(primary).contains("connected_slaves:0") {
                return;
            }
            assert!(Instant::now() < deadline, "the replica on port {} did not link to its primary", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A cluster node on `port` (from [`free_cluster_port`]); when the port was taken meanwhile,
    /// another one.
    fn start_cluster_node(port: u16, extra: &[&str]) -> Self {
        Self::start_cluster_node_as(port, extra, None)
    }

    /// [`Self::start_cluster_node`], connecting (and checked) as `auth`'s user when given.
    fn start_cluster_node_as(port: u16, extra: &[&str], auth: Option<(String, String)>) -> Self {
        let mut server =
            Self { port, dir: tempfile::tempdir().unwrap(), child: None, extra: Vec::new(), auth, tls_port: None };
        for _ in 0..10 {
            if server.spawn(extra) {
                return server;
            }
            server.port = free_cluster_port();
        }
        panic!("no free port for a cluster node in 10 tries");
    }

    /// Starts Redis with extra `redis-server` arguments (e.g. `--requirepass`).
    pub fn start_args(extra: &[&str]) -> Self {
        let mut server = Self {
            port: 0,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra: Vec::new(),
            auth: None,
            tls_port: None,
        };
        // A port taken by someone else between `free_port` and Redis binding it makes Redis exit
        // at once: try another one.
        for _ in 0..10 {
            server.port = free_port();
            if server.spawn(extra) {
                return server;
            }
        }
        panic!("redis-server could not bind a free port in 10 tries");
    }

    /// Spawns Redis on `self.port` and waits until *this child* answers PING (its `process_id`
    /// is checked, so a test never talks to another test's Redis). `false` when the child
    /// exited first (the port was taken).
    fn spawn(&mut self, extra: &[&str]) -> bool {
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            self.dir.path().to_str().unwrap(),
            "--protected-mode",
            "no",
            "--loglevel",
            "warning",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !extra.is_empty() {
            args.extend(extra.iter().map(|s| s.to_string()));
        } else {
            args.extend(["--appendonly", "no"].iter().map(|s| s.to_string()));
        }
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        let child = Command::new(redis_server_binary())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut() {
                if child.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return false;
                }
            }
            if let Ok(mut con) = redis::Client::open(self.url()).and_then(|c| c.get_connection()) {
                if let Ok(info) = redis::cmd("INFO").arg("server").query::<String>(&mut con) {
                    let answering = info
                        .lines()
                        .find_map(|l| l.strip_prefix("process_id:"))
                        .and_then(|p| p.trim().parse::<u32>().ok());
                    assert_eq!(answering, Some(pid), "port {} answers for another redis-server", self.port);
                    // Ready once its data (an AOF, after a restart) is loaded: commands before
                    // that answer LOADING.
                    let loaded = redis::cmd("INFO")
                        .arg("persistence")
                        .query::<String>(&mut con)
                        .is_ok_and(|p| p.lines().any(|l| l.trim() == "loading:0"));
                    if loaded {
                        return true;
                    }
                }
            }
            assert!(Instant::now() < deadline, "redis-server on port {} did not answer PING in time", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        match &self.auth {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some((user, password)) => format!("redis://{user}:{password}@127.0.0.1:{}", self.port),
        }
    }

    /// Starts Redis where the default user is off and only `user` with `password` may do
    /// anything: every connection a binary makes must authenticate as that user. [`Self::url`]
    /// carries the credentials.
    pub fn start_with_user(user: &str, password: &str) -> Self {
        let password_rule = format!(">{password}");
        let args = ["--user", "default", "off", "--user", user, "on", &password_rule, "~*", "&*", "+@all"];
        let mut server = Self {
            port: 0,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra: Vec::new(),
            auth: Some((user.to_string(), password.to_string())),
            tls_port: None,
        };
        for _ in 0..10 {
            server.port = free_port();
            if server.spawn(&args) {
                return server;
            }
        }
        panic!("redis-server could not bind a free port in 10 tries");
    }

    /// Starts Redis with a TLS port beside the plain one, its certificate from `pki`; with
    /// `client_certs`, a TLS client must present a certificate signed by `pki`'s CA.
    pub fn start_tls(pki: &TestPki, client_certs: bool) -> Self {
        let tls_port = free_port();
        let mut args = pki.server_args(tls_port, client_certs);
        args.extend(["--appendonly", "no"].map(String::from));
        let mut server = Self::start_args(&strs(&args));
        server.tls_port = Some(tls_port);
        server
    }

    /// A replica of the TLS server `primary`, itself with a TLS port, replicating over TLS.
    pub fn start_tls_replica_of(primary: &RedisServer, pki: &TestPki) -> Self {
        let tls_port = free_port();
        let of = primary.tls_port.expect("a TLS primary").to_string();
        let mut args = pki.server_args(tls_port, false);
        args.extend(
            ["--tls-replication", "yes", "--appendonly", "no", "--replicaof", "127.0.0.1", &of].map(String::from),
        );
        let mut replica = Self::start_args(&strs(&args));
        replica.tls_port = Some(tls_port);
        replica
    }

    /// The `rediss://` URL of a [`Self::start_tls`] server.
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port.expect("a TLS server"))
    }

    /// SIGKILL: Redis dies at once, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Redis again on the same port and directory (AOF data, if any, is reloaded).
    pub fn restart(&mut self) {
        self.kill();
        let extra = std::mem::take(&mut self.extra);
        let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
        // The port was just freed by our own child; retry briefly if the kernel still holds it.
        let deadline = Instant::now() + DEADLINE;
        while !self.spawn(&refs) {
            assert!(Instant::now() < deadline, "redis-server could not bind port {} again", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A blocking connection, for assertions.
    pub fn con(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection().unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of real `redis-server` processes on free ports: `primaries` primaries with
/// `replicas` replicas each, the slots spread evenly (`redis-cli --cluster create`), a node
/// timeout of 1 s so a killed primary is failed over within seconds. Every node is killed on
/// drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

/// The node timeout of a test cluster: a primary silent this long is failed over.
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 1000;

impl RedisCluster {
    pub fn start(primaries: usize, replicas: usize) -> Self {
        let ports = (0..primaries * (1 + replicas)).map(|_| free_cluster_port()).collect();
        Self::start_on(ports, replicas)
    }

    /// Ports for a cluster started later with [`Self::start_on`] (to point services at a cluster
    /// that is not up yet).
    pub fn reserve_ports(nodes: usize) -> Vec<u16> {
        (0..nodes).map(|_| free_cluster_port()).collect()
    }

    /// [`Self::start`] on the given ports (`ports.len()` = primaries × (1 + replicas)).
    pub fn start_on(ports: Vec<u16>, replicas: usize) -> Self {
        let mut args = cluster_node_args();
        args.extend(["--cluster-replica-validity-factor", "0"].map(String::from));
        let nodes: Vec<RedisServer> =
            ports.into_iter().map(|port| RedisServer::start_cluster_node(port, &strs(&args))).collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        create_cluster(&[], &addrs, replicas);
        let cluster = Self { nodes };
        cluster.wait_ok();
        cluster
    }

    /// A cluster of `primaries` nodes (no replicas) that clients reach over TLS — each node has
    /// a TLS port beside its plain one (kept for the test's own assertions), its cluster bus on
    /// TLS too, its certificate from `pki`. Redis answers a TLS client's `CLUSTER SLOTS` with
    /// the TLS ports.
    pub fn start_tls(pki: &TestPki, primaries: usize) -> Self {
        let mut nodes = Vec::new();
        for _ in 0..primaries {
            let tls_port = free_port();
            let mut args = pki.server_args(tls_port, false);
            args.extend(cluster_node_args());
            args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(String::from));
            let mut node = RedisServer::start_cluster_node(free_cluster_port(), &strs(&args));
            node.tls_port = Some(tls_port);
            nodes.push(node);
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.tls_port.unwrap_or(0))).collect();
        create_cluster(&["--tls", "--cacert", &TestPki::path(&pki.ca)], &addrs, 0);
        let cluster = Self { nodes };
        cluster.wait_ok();
        cluster
    }

    /// A cluster of `primaries` nodes (no replicas) where the default user is off and only
    /// `user` with `password` may do anything; [`Self::urls`] carries the credentials.
    pub fn start_with_user(primaries: usize, user: &str, password: &str) -> Self {
        let mut args = cluster_node_args();
        let rule = format!(">{password}");
        args.extend(["--user", "default", "off", "--user", user, "on", &rule, "~*", "&*", "+@all"].map(String::from));
        let auth = Some((user.to_string(), password.to_string()));
        let nodes: Vec<RedisServer> = (0..primaries)
            .map(|_| RedisServer::start_cluster_node_as(free_cluster_port(), &strs(&args), auth.clone()))
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        create_cluster(&["--user", user, "--pass", password], &addrs, 0);
        let cluster = Self { nodes };
        cluster.wait_ok();
        cluster
    }

    /// The `rediss://` seed list of a [`Self::start_tls`] cluster.
    pub fn tls_urls(&self) -> String {
        self.nodes.iter().map(RedisServer::tls_url).collect::<Vec<_>>().join(",")
    }

    /// The seed list for `REDIS_URL` (every node, comma-separated).
    pub fn urls(&self) -> String {
        self.nodes.iter().map(RedisServer::url).collect::<Vec<_>>().join(",")
    }

    /// Waits until every live node says `cluster_state:ok`, all 16384 slots are served, and
    /// every replica's link to its primary is up.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.live().all(|node| {
                let mut con = match redis::Client::open(node.url()).and_then(|c| c.get_connection()) {
                    Ok(con) => con,
                    Err(_) => return false,
                };
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut con).unwrap_or_default();
                let replication: String = redis::cmd("INFO").arg("replication").query(&mut con).unwrap_or_default();
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && (replication.contains("role:master") || replication.contains("master_link_status:up"))
            });
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "the test cluster did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn live(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// The indexes of the live nodes that are primaries now.
    pub fn primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].child.is_some() && {
                    let info: String =
                        redis::cmd("INFO").arg("replication").query(&mut self.nodes[i].con()).unwrap_or_default();
                    info.contains("role:master")
                }
            })
            .collect()
    }

    /// A cluster-aware blocking connection, for assertions.
    pub fn con(&self) -> redis::cluster::ClusterConnection {
        let urls: Vec<String> = self.live().map(RedisServer::url).collect();
        redis::cluster::ClusterClient::new(urls).unwrap().get_connection().unwrap()
    }
}

/// A free port for a cluster node: its cluster bus listens on the port + 10000, so the port is
/// below 55536 and that one is free too.
pub fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port <= 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// `redis-cli`, next to `redis-server` or on PATH.
pub fn redis_cli_binary() -> PathBuf {
    let beside = redis_server_binary().with_file_name("redis-cli");
    if beside.is_file() {
        beside
    } else {
        PathBuf::from("redis-cli")
    }
}

/// The path of a fixture under `tests/fixtures/`.
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// A fixture's bytes, as stored except for one thing: the fixtures' meetings take place in 2030,
/// which stands for "the future". So that no test starts failing when the calendar reaches
/// 2030, the year `2030-` in a timestamp is moved to four years from now.
pub fn fixture(name: &str) -> Vec<u8> {
    let raw = std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    match String::from_utf8(raw) {
        Ok(text) => text.replace("\"2030-", &format!("\"{}-", future_year())).into_bytes(),
        Err(e) => e.into_bytes(),
    }
}

/// Four years from now (the year the fixtures' future meetings are moved to).
pub fn future_year() -> u64 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    1970 + secs / 31_556_952 + 4
}

/// A fixture parsed as JSON.
pub fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// Polls `check` until it returns `Some`, or panics with `what` after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, DEADLINE, check).await
}

/// [`eventually`] with a deadline of its own (benchmarks that wait minutes on purpose).
pub async fn eventually_within<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a binary with only `vars` (and PATH) in its environment, and waits for it at most
/// [`EXIT_DEADLINE`] (then it is killed and the test fails).
pub fn run_bin(bin: &str, args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    run_command(bin_command(bin, vars).args(args))
}

/// Runs `cmd` with its output captured, and waits for it at most [`EXIT_DEADLINE`] (then it is
/// killed and the test fails).
pub fn run_command(cmd: &mut Command) -> std::process::Output {
    use std::io::Read;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let mut guard = Spawned(Some(child));
    // Drain both pipes on threads, so a chatty child never blocks on a full pipe.
    let child = guard.0.as_mut().unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let stdout = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let stderr = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let status = guard.wait_for_exit(EXIT_DEADLINE);
    std::process::Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// Spawns `cmd`; the child is killed when the returned value is dropped.
pub fn spawn_command(cmd: &mut Command) -> Spawned {
    Spawned(Some(cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))))
}

/// Starts a binary with only `vars` (and PATH) in its environment, output discarded. The child
/// is killed when the returned value is dropped, so a failing test leaves nothing running.
pub fn spawn_bin(bin: &str, vars: &[(&str, &str)]) -> Spawned {
    spawn_bin_with(bin, vars, Stdio::null())
}

/// As [`spawn_bin`], with stderr sent to `stderr` (e.g. a file, to read its logs).
pub fn spawn_bin_with(bin: &str, vars: &[(&str, &str)], stderr: impl Into<Stdio>) -> Spawned {
    spawn_command(bin_command(bin, vars).stdout(Stdio::null()).stderr(stderr))
}

/// A spawned binary, killed (SIGKILL) and reaped when dropped.
pub struct Spawned(Option<Child>);

impl Spawned {
    pub fn id(&self) -> u32 {
        self.0.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends `signal` (`TERM`, `INT`, `KILL`, …) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.id().to_string()).status().unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// SIGKILL, and reaps the child.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the child to exit, at most `limit`; past it the child is killed and the test
    /// fails.
    pub fn wait_for_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.0.as_mut().expect("the child was already reaped");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!("the child process did not exit within {limit:?}; killed");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Spawned {
    /// [`Self::wait_for_exit`] for async tests: polls without blocking the runtime (in-process
    /// fakes keep answering meanwhile).
    pub async fn exited(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.0.as_mut().expect("the child was already reaped");
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!("the child process did not exit within {limit:?}; killed");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

fn bin_command(bin: &str, vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// The variables of the contract's configuration table (SPEC §5), copied here by hand so that
/// a variable dropped from or renamed in the code fails the test: `(name, default, binary)`,
/// where the binary is `ingress`, `processor` or `both`.
pub const SPEC_VARS: &[(&str, &str, &str)] = &[
    ("REDIS_URL", "redis://127.0.0.1:6379", "both"),
    ("HOOKSTREAM_NAMESPACE", "hookstream", "both"),
    ("LOG_FORMAT", "text", "both"),
    ("LISTEN_ADDR", "0.0.0.0:8080", "ingress"),
    ("MEETING_BAAS_API_KEY", "", "both"),
    ("WEBHOOK_SECRETS", "", "ingress"),
    ("CALLBACK_SECRET", "", "ingress"),
    ("ALLOW_UNSIGNED", "false", "ingress"),
    ("DEDUP_TTL_SECS", "86400", "ingress"),
    ("MAX_BODY_BYTES", "8388608", "ingress"),
    ("METRICS_ADDR", "0.0.0.0:9090", "processor"),
    ("CONSUMER_GROUP", "processors", "processor"),
    ("CONSUMER_NAME", "<hostname>-<pid>", "processor"),
    ("CONCURRENCY", "16", "processor"),
    ("BATCH_SIZE", "64", "processor"),
    ("BLOCK_MS", "5000", "processor"),
    ("CLAIM_IDLE_MS", "60000", "processor"),
    ("MAX_DELIVERIES", "5", "processor"),
    ("HANDLER_TIMEOUT_MS", "30000", "processor"),
    ("RETRY_INITIAL_MS", "500", "processor"),
    ("RETRY_MAX_INTERVAL_MS", "30000", "processor"),
    ("RETRY_MAX_ELAPSED_MS", "120000", "processor"),
    ("SHUTDOWN_GRACE_MS", "25000", "both"),
    ("STREAM_RETENTION_SECS", "3600", "processor"),
    ("DEAD_RETENTION_DAYS", "30", "processor"),
    ("MEETING_BAAS_API_URL", "https://api.meetingbaas.com", "processor"),
    ("RECORD_POLICY", "all", "processor"),
    ("BOT_NAME", "hookstream recorder", "processor"),
    ("BOT_CONFIG", "{}", "processor"),
    ("FORWARD_URL", "", "processor"),
    ("MAX_BACKLOG", "1000000", "ingress"),
    ("CONSUMER_IDLE_REAP_SECS", "3600", "processor"),
    ("REQUEST_TIMEOUT_MS", "10000", "ingress"),
    ("MAX_CONNECTIONS", "4096", "ingress"),
    ("API_WRITES_PER_SEC", "5", "processor"),
    ("RECONCILE_INTERVAL_SECS", "900", "processor"),
    ("RECONCILE_HORIZON_HOURS", "168", "processor"),
    ("RECONCILE_APIS", "auto", "processor"),
    ("RECONCILE_READS_PER_SEC", "20", "processor"),
    ("RECONCILE_RESULTS_HOURS", "24", "processor"),
    ("RECONCILE_RESULTS_GRACE_SECS", "600", "processor"),
    ("REDIS_MODE", "standalone", "both"),
    ("PARTITIONS", "1", "both"),
    ("MIN_REPLICAS_ACK", "0", "ingress"),
    ("REDIS_SENTINEL_MASTER", "mymaster", "both"),
    ("REDIS_TLS_CA_FILE", "", "both"),
    ("REDIS_TLS_CERT_FILE", "", "both"),
    ("REDIS_TLS_KEY_FILE", "", "both"),
    ("RETRY_PARK_INITIAL_MS", "60000", "processor"),
    ("RETRY_PARK_MAX_MS", "3600000", "processor"),
    ("RETRY_HORIZON_SECS", "86400", "processor"),
    ("BREAKER_FAILURES", "5", "processor"),
    ("BREAKER_COOLDOWN_MS", "30000", "processor"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "", "both"),
    ("OTEL_SERVICE_NAME", "hookstream-ingress", "ingress"),
    ("OTEL_SERVICE_NAME", "hookstream-processor", "processor"),
];

/// Asserts that `bin --help` (`bin_name` is `ingress` or `processor`) lists every variable of
/// [`SPEC_VARS`] that it uses, each on a line of its own starting with the name, with
/// `[default: X]` (`[default: unset]` where the contract has none), and the `healthcheck`
/// subcommand.
pub fn assert_help_lists_spec(bin: &str, bin_name: &str) {
    let out = run_bin(bin, &["--help"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for (name, default, used_by) in SPEC_VARS {
        if *used_by != "both" && *used_by != bin_name {
            continue;
        }
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing from {bin_name} --help:\n{text}"));
        let default = if default.is_empty() { "unset" } else { default };
        assert!(line.contains(&format!("[default: {default}]")), "{name}: {line}");
    }
    assert!(text.contains("healthcheck"));
}

/// Appends an entry to `{hookstream}:events` as the ingress would (`event`, `dedup_id`,
/// `payload`); its id.
pub fn add_entry(redis: &RedisServer, event: &str, dedup_id: &str, payload: &[u8]) -> String {
    redis::cmd("XADD")
        .arg("{hookstream}:events")
        .arg("*")
        .arg("event")
        .arg(event)
        .arg("dedup_id")
        .arg(dedup_id)
        .arg("payload")
        .arg(payload)
        .query(&mut redis.con())
        .expect("XADD")
}

/// `(name, value)` pairs borrowed from owned values, for [`spawn_bin`] and friends.
pub fn var_refs<'a>(vars: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The arguments every cluster node of the tests starts with: no AOF, cluster mode, the
/// tests' node timeout.
fn cluster_node_args() -> Vec<String> {
    let timeout = CLUSTER_NODE_TIMEOUT_MS.to_string();
    ["--appendonly", "no", "--cluster-enabled", "yes", "--cluster-node-timeout", &timeout].map(String::from).to_vec()
}

/// The variables a processor binary of a test starts with: this Redis, this API (key `k`),
/// `consumer`, a free metrics port, short blocking reads, no reconciler; `extra` added after.
pub fn processor_bin_vars(
    redis_url: &str,
    api_url: &str,
    consumer: &str,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        ("REDIS_URL", redis_url.to_string()),
        ("MEETING_BAAS_API_URL", api_url.to_string()),
        ("MEETING_BAAS_API_KEY", "k".to_string()),
        ("METRICS_ADDR", "127.0.0.1:0".to_string()),
        ("CONSUMER_NAME", consumer.to_string()),
        ("BLOCK_MS", "100".to_string()),
        ("RECONCILE_INTERVAL_SECS", "0".to_string()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    vars
}

/// A Standard Webhooks signature (`v1,<base64 HMAC-SHA256>`) of `{id}.{ts}.{body}` with the
/// `whsec_` secret, as Meeting BaaS signs a v2 webhook (the simulator's signing).
pub fn sign_webhook(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    simulator::webhooks::sign(secret, id, ts, body).expect("a whsec_ base64 secret")
}

/// Now, in Unix seconds (a webhook's timestamp).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
