//! `ingress`: serve webhooks (no arguments), or `ingress healthcheck`.

use clap::{Parser, Subcommand};
use ingress::{config, Ingress, IngressConfig};
use shared::config::{help_table, Env, Reader};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "ingress", version, about = "hookstream ingress: Meeting BaaS webhooks into a Redis Stream")]
#[command(after_help = help_table(&config::all_vars()))]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Exit 0 when the local /healthz answers 200 (for container health checks).
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
    let config = match IngressConfig::read(&Reader::new(&Env)) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("ingress: {err}");
            return ExitCode::from(shared::EXIT_USAGE);
        }
    };
    match cli.command {
        Some(Command::Healthcheck) => {
            let target = shared::healthcheck::target(config.listen_addr);
            match shared::healthcheck::probe(target, Duration::from_secs(3)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(problem) => {
                    eprintln!("ingress healthcheck: {problem}");
                    ExitCode::FAILURE
                }
            }
        }
        None => serve(config),
    }
}

fn serve(config: IngressConfig) -> ExitCode {
    shared::telemetry::init_logging(config.common.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("ingress: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = shared::shutdown::signal();
        let ingress = match Ingress::build(config).await {
            Ok(ingress) => ingress,
            Err(err) => {
                tracing::error!("{err}");
                return ExitCode::FAILURE;
            }
        };
        ingress.run_until(shutdown).await;
        ExitCode::SUCCESS
    })
}
