//! `processor`: consume and handle events (no arguments), or one of the operator commands.

use processor::cli::{self as commands, Cli, Command};
use processor::{Processor, ProcessorConfig};
use shared::cli;
use shared::keys::Keys;
use std::io::Write;
use std::process::ExitCode;

/// mimalloc: the processor allocates many small short-lived buffers per entry; glibc's malloc
/// spent ~15 % of its CPU on them (see docs/benchmarks.md). Not in the ingress: there it bought
/// no measurable CPU and more than doubled the resident memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Duration;

fn main() -> ExitCode {
    match run() {
        Ok(code) | Err(code) => code,
    }
}

fn run() -> Result<ExitCode, ExitCode> {
    let cli: Cli = cli::parse()?;
    let config = cli::config("processor", ProcessorConfig::read)?;
    match cli.command {
        None => serve(config),
        Some(Command::Healthcheck) => Ok(cli::healthcheck("processor", config.metrics_addr)),
        Some(Command::Status) => operate(config, None),
        Some(Command::Dead { action }) => operate(config, Some(action)),
    }
}

/// `status` (no action) and `dead …`: one short-lived connection, the result printed, its
/// exit code.
fn operate(config: ProcessorConfig, action: Option<commands::Dead>) -> Result<ExitCode, ExitCode> {
    let runtime = cli::runtime("processor")?;
    let done = runtime.block_on(async {
        let manager = shared::conn::client(&config.common.redis_url)
            .and_then(|c| shared::conn::Conn::new(c, Duration::from_secs(10)));
        let manager = match manager {
            Ok(m) => m,
            Err(err) => {
                return commands::Done {
                    code: commands::EXIT_UNAVAILABLE,
                    stdout: String::new(),
                    stderr: err.to_string(),
                }
            }
        };
        let ops = processor::ops::Ops::new(Keys::new(&config.common.namespace), config.group.clone(), manager);
        match action {
            None => commands::status(&ops, config.consumer_idle_reap).await,
            Some(action) => commands::dead(&ops, action).await,
        }
    });
    let _ = std::io::stdout().write_all(done.stdout.as_bytes());
    if !done.stderr.is_empty() {
        eprintln!("processor: {}", done.stderr);
    }
    Ok(ExitCode::from(done.code))
}

fn serve(config: ProcessorConfig) -> Result<ExitCode, ExitCode> {
    let _logs = shared::telemetry::init_logging(config.common.log_format);
    let runtime = cli::runtime("processor")?;
    Ok(runtime.block_on(async {
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
    }))
}
