//! What both binaries' `main` do alike: parse the arguments, read the configuration, answer
//! `healthcheck`, start the runtime. Failures come back as the exit code to return.

use crate::config::{ConfigError, Env, Reader};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Parses the command line; `--help`/`--version` exit 0, bad arguments exit 64.
pub fn parse<C: clap::Parser>() -> Result<C, ExitCode> {
    C::try_parse().map_err(|err| {
        let _ = err.print();
        if err.use_stderr() {
            ExitCode::from(crate::EXIT_USAGE)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Reads the configuration from the environment; a bad value is one line on stderr, exit 64.
pub fn config<T>(bin: &str, read: impl FnOnce(&Reader<'_>) -> Result<T, ConfigError>) -> Result<T, ExitCode> {
    read(&Reader::new(&Env)).map_err(|err| {
        eprintln!("{bin}: {err}");
        ExitCode::from(crate::EXIT_USAGE)
    })
}

/// Starts the trace exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set ([`crate::otel`]), before
/// the runtime; an exporter that cannot be made is a configuration error (exit code 64).
pub fn traces(
    bin: &str,
    settings: &crate::otel::Settings,
    default_service: &'static str,
) -> Result<Option<(crate::otel::Traces, crate::otel::Exporter)>, ExitCode> {
    crate::otel::start(settings, default_service).map_err(|err| {
        eprintln!("{bin}: {err}");
        ExitCode::from(crate::EXIT_USAGE)
    })
}

/// A service that could not be built: a setting to fix (the partition layout) is one line on
/// stderr and exit code 64, like every other configuration error; anything else is logged, and
/// exit code 1.
pub fn build_failed(bin: &str, err: &dyn std::fmt::Display, is_configuration: bool) -> ExitCode {
    if is_configuration {
        eprintln!("{bin}: invalid configuration: {err}");
        return ExitCode::from(crate::EXIT_USAGE);
    }
    tracing::error!("{err}");
    ExitCode::FAILURE
}

/// The `healthcheck` subcommand: exit 0 when `GET /healthz` on the local `listen` answers 200.
pub fn healthcheck(bin: &str, listen: SocketAddr) -> ExitCode {
    match crate::healthcheck::probe(crate::healthcheck::target(listen), Duration::from_secs(3)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("{bin} healthcheck: {problem}");
            ExitCode::FAILURE
        }
    }
}

/// The multi-threaded Tokio runtime.
pub fn runtime(bin: &str) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|err| {
        eprintln!("{bin}: cannot start the async runtime: {err}");
        ExitCode::FAILURE
    })
}
