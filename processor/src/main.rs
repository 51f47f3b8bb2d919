//! `processor`: consume and handle events (no arguments), or one of the operator commands.

use processor::cli::{self as commands, Cli, Command};
use processor::{Processor, ProcessorConfig};
use shared::cli;
use std::io::Write;
use std::process::ExitCode;

/// mimalloc: the processor allocates many small short-lived buffers per entry; glibc's malloc
/// spent ~15 % of its CPU on them (see docs/benchmarks.md). Not in the ingress: there it bought
/// no measurable CPU and more than doubled the resident memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Some(command) => operate(config, cli.partition, command),
    }
}

/// `status`, `dead …` and `repartition`: one short-lived connection, the result printed, its
/// exit code. They look at the partitions the namespace was created with (`{ns}:partitions`),
/// whatever `PARTITIONS` says; `--partition` picks one.
fn operate(config: ProcessorConfig, partition: Option<usize>, command: Command) -> Result<ExitCode, ExitCode> {
    let runtime = cli::runtime("processor")?;
    let done = runtime.block_on(commands::operate(&config, partition, command));
    let _ = std::io::stdout().write_all(done.stdout.as_bytes());
    if !done.stderr.is_empty() {
        eprintln!("processor: {}", done.stderr);
    }
    Ok(ExitCode::from(done.code))
}

fn serve(config: ProcessorConfig) -> Result<ExitCode, ExitCode> {
    let _logs = shared::telemetry::init_logging(config.common.log_format);
    let (traces, exporter) = cli::traces("processor", &config.common.otel, "hookstream-processor")?.unzip();
    let runtime = cli::runtime("processor")?;
    let code = runtime.block_on(async {
        let shutdown = shared::shutdown::signal();
        let processor = match Processor::build_traced(config, None, traces).await {
            Ok(processor) => processor,
            Err(err) => return cli::build_failed("processor", &err, err.is_configuration()),
        };
        processor.run_until(shutdown).await;
        ExitCode::SUCCESS
    });
    drop(runtime);
    if let Some(exporter) = exporter {
        exporter.shutdown(shared::otel::SHUTDOWN_FLUSH);
    }
    Ok(code)
}
