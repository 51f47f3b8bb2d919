//! A fake Meeting BaaS API / forward target as a process, for the compose end-to-end test:
//! `POST /forward` answers 200 after `FORWARD_DELAY_MS` (default 100); every other route 404;
//! `GET /_calls` returns the call log. Listens on `LISTEN_ADDR` (default 0.0.0.0:8000).

use hookstream_tests::fake_api::{FakeApi, Reply};
use std::time::Duration;

/// What `--help` prints (and nothing else happens: no port is taken).
const HELP: &str = "fake-api: a stand-in for the Meeting BaaS API and a FORWARD_URL target, for tests.

POST /forward answers 200 after FORWARD_DELAY_MS (default 100); every other route 404;
GET /_calls returns the call log as JSON.

Environment:
  LISTEN_ADDR       where to listen (default 0.0.0.0:8000)
  FORWARD_DELAY_MS  delay of each /forward answer, ms (default 100)
";

#[tokio::main]
async fn main() {
    if let Some(arg) = std::env::args().nth(1) {
        if arg == "--help" || arg == "-h" {
            print!("{HELP}");
            return;
        }
        eprintln!("fake-api: unknown argument {arg:?} (it takes none; see --help)");
        std::process::exit(64);
    }
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "0.0.0.0:8000".into());
    let delay: u64 = std::env::var("FORWARD_DELAY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let api = FakeApi::start_on(addr.parse().expect("LISTEN_ADDR is an address")).await;
    api.always("POST", "/forward", Reply::status(200).delayed(Duration::from_millis(delay)));
    eprintln!("fake-api listening on {}", api.addr);
    // As PID 1 in a container, SIGTERM must be handled explicitly to stop promptly.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
