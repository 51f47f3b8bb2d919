//! Logging and metrics set-up, the same for both binaries.

use crate::config::LogFormat;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// The redis crate's cluster client logs each attempt to reach a node that is down — about 19
/// attempts a second per connection, 3 lines each, for as long as the outage lasts. hookstream
/// reports outages itself (once when they start and end in the processor, per refused request
/// in the ingress), so those lines are off unless `RUST_LOG` names the crate.
const QUIET_CLUSTER_CLIENT: &str = "redis::cluster_handling=off";

/// `RUST_LOG` (default `info`), with [`QUIET_CLUSTER_CLIENT`] unless it mentions `redis`.
fn filter_spec(rust_log: Option<&str>) -> String {
    let spec = rust_log.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("info");
    if spec.split(',').any(|directive| directive.trim_start().starts_with("redis")) {
        spec.to_string()
    } else {
        format!("{spec},{QUIET_CLUSTER_CLIENT}")
    }
}

/// Logs to stderr as text or JSON lines; the level comes from `RUST_LOG` (default `info`).
///
/// Lines are appended to an in-memory buffer that goes to stderr every
/// [`LOG_FLUSH_INTERVAL`], or at once when it passes [`LOG_BUFFER_BYTES`]: a request or an
/// entry never waits for a `write` to stderr, and under load thousands of lines go out in one
/// system call instead of one each (a write, or a thread wake-up, per line cost the services
/// a third of their throughput). The price: a process killed with SIGKILL loses up to
/// [`LOG_FLUSH_INTERVAL`] of log lines (never data: events live in Redis). Keep the returned
/// guard until the process ends; its drop writes what is still buffered.
#[must_use = "dropping the guard stops flushing the logs"]
pub fn init_logging(format: LogFormat) -> LogGuard {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_new(filter_spec(std::env::var("RUST_LOG").ok().as_deref()))
        .unwrap_or_else(|_| EnvFilter::new(filter_spec(None)));
    let buffer = LogBuffer::default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(buffer.clone());
    // `try_init` fails only when a subscriber is already set (tests); that one stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    let flusher = buffer.clone();
    let _ = std::thread::Builder::new().name("log-flush".into()).spawn(move || loop {
        std::thread::sleep(LOG_FLUSH_INTERVAL);
        flusher.flush_now();
    });
    LogGuard(buffer)
}

/// How often buffered log lines are written to stderr.
pub const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Buffered log bytes that trigger an immediate write.
pub const LOG_BUFFER_BYTES: usize = 64 * 1024;

/// Writes what is still buffered when dropped.
pub struct LogGuard(LogBuffer);

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.0.flush_now();
    }
}

/// The shared log buffer; also the `MakeWriter` the fmt layer writes each line to.
#[derive(Clone, Default)]
struct LogBuffer {
    lines: Arc<Mutex<Vec<u8>>>,
    /// Held while writing to stderr, so flushes from two threads keep the lines in order.
    output: Arc<Mutex<()>>,
}

impl LogBuffer {
    fn flush_now(&self) {
        let _order = self.output.lock().unwrap_or_else(|p| p.into_inner());
        let data = std::mem::take(&mut *self.lines.lock().unwrap_or_else(|p| p.into_inner()));
        if !data.is_empty() {
            let _ = std::io::stderr().write_all(&data);
        }
    }
}

impl Write for LogBuffer {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let full = {
            let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
            lines.extend_from_slice(line);
            lines.len() >= LOG_BUFFER_BYTES
        };
        if full {
            self.flush_now();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Latency buckets in seconds, from 100 µs to 30 s.
const DURATION_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The process-wide Prometheus recorder, installed on first use. `/metrics` renders its handle.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), DURATION_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only when another recorder is already installed; ours then records nothing,
        // which is visible on /metrics and in no way fatal.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only this handle's data");
        }
        handle
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_client_is_quiet_unless_asked_for() {
        assert_eq!(filter_spec(None), "info,redis::cluster_handling=off");
        assert_eq!(filter_spec(Some(" ")), "info,redis::cluster_handling=off");
        assert_eq!(filter_spec(Some("debug")), "debug,redis::cluster_handling=off");
        assert_eq!(filter_spec(Some("info,redis=debug")), "info,redis=debug");
    }
}
