//! Test support: a real `redis-server` per test, fixtures, polling with a deadline.
//!
//! Tests never mock Redis. [`RedisServer::start`] runs the `redis-server` binary on a free port
//! in a temporary directory; it panics with a clear message when the binary is missing, so a
//! machine without Redis fails the suite loudly instead of skipping it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fake_api;
pub mod openapi;

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The default deadline of [`eventually`] and of server start-up.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A `redis-server` child process on 127.0.0.1, killed when dropped.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

/// The `redis-server` binary: `$REDIS_SERVER`, else `redis-server` on the PATH.
pub fn redis_server_binary() -> PathBuf {
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

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RedisServer {
    /// Starts a fresh, empty Redis (no persistence) and waits until it answers PING.
    pub fn start() -> Self {
        let mut server = Self { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None, extra: Vec::new() };
        server.spawn(&[]);
        server
    }

    /// Starts Redis with AOF on (`appendfsync always`), so a restart keeps the data.
    pub fn start_persistent() -> Self {
        let mut server = Self { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None, extra: Vec::new() };
        server.spawn(&["--appendonly", "yes", "--appendfsync", "always"]);
        server
    }

    fn spawn(&mut self, extra: &[&str]) {
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
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(mut con) = redis::Client::open(self.url()).and_then(|c| c.get_connection()) {
                if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                    return;
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
        format!("redis://127.0.0.1:{}", self.port)
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
        self.spawn(&refs);
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

/// The path of a fixture under `tests/fixtures/`.
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// A fixture's bytes, exactly as stored.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// A fixture parsed as JSON.
pub fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// Polls `check` until it returns `Some`, or panics with `what` after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a binary with only `vars` (and PATH) in its environment, and waits for it.
pub fn run_bin(bin: &str, args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    bin_command(bin, vars).args(args).output().unwrap_or_else(|e| panic!("run {bin}: {e}"))
}

/// Starts a binary with only `vars` (and PATH) in its environment, output discarded.
pub fn spawn_bin(bin: &str, vars: &[(&str, &str)]) -> Child {
    bin_command(bin, vars)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"))
}

fn bin_command(bin: &str, vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// Asserts that `bin --help` lists every `(name, default)` variable as `NAME … [default: X]`
/// and the `healthcheck` subcommand.
pub fn assert_help_lists(bin: &str, vars: impl IntoIterator<Item = (&'static str, &'static str)>) {
    let out = run_bin(bin, &["--help"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for (name, default) in vars {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        assert!(line.contains(&format!("[default: {default}]")), "{line}");
    }
    assert!(text.contains("healthcheck"));
}
