//! `ingress`: serve webhooks (no arguments), or `ingress healthcheck`.

use clap::{Parser, Subcommand};
use ingress::{config, Ingress, IngressConfig};
use shared::cli;
use shared::config::help_table;
use std::process::ExitCode;

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
    match run() {
        Ok(code) | Err(code) => code,
    }
}

fn run() -> Result<ExitCode, ExitCode> {
    let cli: Cli = cli::parse()?;
    let config = cli::config("ingress", IngressConfig::read)?;
    if let Some(Command::Healthcheck) = cli.command {
        return Ok(cli::healthcheck("ingress", config.listen_addr));
    }
    let _logs = shared::telemetry::init_logging(config.common.log_format);
    let (traces, exporter) = cli::traces("ingress", &config.common.otel, "hookstream-ingress")?.unzip();
    let runtime = cli::runtime("ingress")?;
    let code = runtime.block_on(async {
        let shutdown = shared::shutdown::signal();
        let ingress = match Ingress::build_traced(config, traces).await {
            Ok(ingress) => ingress,
            Err(err) => return cli::build_failed("ingress", &err, err.is_configuration()),
        };
        ingress.run_until(shutdown).await;
        ExitCode::SUCCESS
    });
    drop(runtime);
    if let Some(exporter) = exporter {
        exporter.shutdown(shared::otel::SHUTDOWN_FLUSH);
    }
    Ok(code)
}
