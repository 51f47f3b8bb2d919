//! `processor`: consume and handle events (no arguments), or `processor healthcheck`.

use clap::{Parser, Subcommand};
use processor::{config, Processor, ProcessorConfig};
use shared::config::{help_table, Env, Reader};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "processor", version, about = "hookstream processor: handles the events in the Redis Stream")]
#[command(after_help = help_table(&config::all_vars()))]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Exit 0 when the local /healthz (on METRICS_ADDR) answers 200 (for container health checks).
    Healthcheck,
}

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
        None => run(config),
    }
}

fn run(config: ProcessorConfig) -> ExitCode {
    shared::telemetry::init_logging(config.common.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("processor: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let processor = match Processor::build(config, None).await {
            Ok(processor) => processor,
            Err(err) => {
                tracing::error!("{err}");
                return ExitCode::FAILURE;
            }
        };
        processor.run_until(shared::shutdown::signal()).await;
        ExitCode::SUCCESS
    })
}
