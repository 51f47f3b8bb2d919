//! The code both hookstream binaries must agree on, and nothing else:
//!
//! - [`keys`]: the Redis key names (one `{namespace}` hash tag, or `{namespace:i}` per partition);
//! - [`layout`]: the partition count a namespace was created with, checked by every process;
//! - [`entry`]: the fields of a stream entry;
//! - [`groups`]: a stream's consumer groups (`XINFO GROUPS`), read one way everywhere;
//! - [`append`]: the dedup+append Lua script, the only way an event enters the stream;
//! - [`vars`]: environment parsing with typed errors (a source of strings, a typed reader);
//! - [`config`]: the settings both sides read, and secrets kept out of every output;
//! - [`conn`]: how a Redis connection is made (lazy, reconnecting, bounded waits);
//! - [`telemetry`]: logging and the Prometheus recorder;
//! - [`otel`]: traces (OpenTelemetry over OTLP/HTTP) and the trace context an entry carries;
//! - [`shutdown`]: the SIGTERM/SIGINT future;
//! - [`http`]: JSON answers and the HTTP serve loop (keep-alive, timeouts, graceful shutdown);
//! - [`cli`]: what both `main`s do alike (arguments, configuration, healthcheck, runtime);
//! - [`healthcheck`]: the `healthcheck` subcommand's probe, for images without curl.

pub mod append;
pub mod cli;
pub mod config;
pub mod conn;
pub mod entry;
pub mod groups;
pub mod healthcheck;
pub mod http;
pub mod keys;
pub mod layout;
pub mod otel;
pub mod shutdown;
pub mod telemetry;
pub mod vars;

/// Exit code for bad configuration or bad command-line arguments (`EX_USAGE` in sysexits.h).
pub const EXIT_USAGE: u8 = 64;
