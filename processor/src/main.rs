//! `processor`: consume and handle events (no arguments), or one of the operator commands.

use clap::Parser;
use processor::cli::{self, Cli, Command};
use processor::{Processor, ProcessorConfig};
use shared::config::{Env, Reader};
use shared::keys::Keys;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { ExitCode::from(shared::EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    let config = match ProcessorConfig::read(&Reader::new(&Env)) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("processor: {err}");
            return ExitCode::from(shared::EXIT_USAGE);
        }
    };
    match cli.command {
        None => run(config),
        Some(Command::Healthcheck) => {
            let target = shared::healthcheck::target(config.metrics_addr);
            match shared::healthcheck::probe(target, Duration::from_secs(3)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(problem) => {
                    eprintln!("processor healthcheck: {problem}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(command) => operate(config, command),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|err| {
        eprintln!("processor: cannot start the async runtime: {err}");
        ExitCode::FAILURE
    })
}

/// `status` and `dead …`: one short-lived connection, the result printed, its exit code.
fn operate(config: ProcessorConfig, command: Command) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let done = rt.block_on(async {
        let manager = shared::conn::client(&config.common.redis_url)
            .and_then(|c| shared::conn::manager(c, Some(Duration::from_secs(10))));
        let manager = match manager {
            Ok(m) => m,
            Err(err) => {
                return cli::Done { code: cli::EXIT_UNAVAILABLE, stdout: String::new(), stderr: err.to_string() }
            }
        };
        let ops = processor::ops::Ops::new(Keys::new(&config.common.namespace), config.group.clone(), manager);
        match command {
            Command::Status => cli::status(&ops, config.consumer_idle_reap).await,
            Command::Dead { action } => cli::dead(&ops, action).await,
            Command::Healthcheck => unreachable_healthcheck(),
        }
    });
    let _ = std::io::stdout().write_all(done.stdout.as_bytes());
    if !done.stderr.is_empty() {
        eprintln!("processor: {}", done.stderr);
    }
    ExitCode::from(done.code)
}

fn unreachable_healthcheck() -> cli::Done {
    // `main` answers healthcheck itself; kept total so no input can panic here.
    cli::Done { code: shared::EXIT_USAGE, stdout: String::new(), stderr: "healthcheck takes no Redis".into() }
}

fn run(config: ProcessorConfig) -> ExitCode {
    shared::telemetry::init_logging(config.common.log_format);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let shutdown = shared::shutdown::signal();
        let processor = match Processor::build(config, None).await {
            Ok(processor) => processor,
            Err(err) => {
                tracing::error!("{err}");
                return ExitCode::FAILURE;
            }
        };
        processor.run_until(shutdown).await;
        ExitCode::SUCCESS
    })
}
