//! The `opsconsole` binary: parse the command line, load the config, start logging and the
//! engines, then run until a signal asks us to stop.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use opsconsole::cli::{BenchTarget, Cli, Tool};
use opsconsole::config::Config;
use opsconsole::control::Control;
use opsconsole::node::{Node, status_line};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Tool::Bench(BenchTarget::Cache(args))) = &cli.command {
        return match opsconsole::bench::cache::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("opsconsole bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(&cli.run) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("opsconsole: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.run.check_config {
        print!("{}", config.to_toml());
        eprintln!("opsconsole: configuration is valid");
        return ExitCode::SUCCESS;
    }
    // Until the console exists every run is headless: logs go to stderr and the file.
    let _log_guard = match opsconsole::logging::init(&config.log, true) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("opsconsole: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads())
        .thread_name("opsconsole-worker")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("opsconsole: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    // Handlers go in before anything listens, so a signal sent as soon as the port is open is
    // a graceful stop rather than the default kill.
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let node = match Node::start(&config).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        "opsconsole {} started (pid {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    let status_every = config.node.status_interval_secs;
    let signal = signals.recv();
    tokio::pin!(signal);
    let mut ticker = tokio::time::interval(Duration::from_secs(status_every.max(1)));
    ticker.tick().await;
    let which = loop {
        tokio::select! {
            s = &mut signal => break s,
            _ = ticker.tick(), if status_every > 0 => tracing::info!("{}", status_line(&node.snapshot())),
        }
    };
    let grace = Duration::from_secs(config.node.shutdown_grace_secs);
    tracing::info!(
        "{which} received: shutting down (grace {}s)",
        grace.as_secs()
    );
    if node.shutdown(grace).await {
        tracing::info!("shutdown complete");
    } else {
        tracing::warn!("grace period over with connections still open; exiting anyway");
    }
    ExitCode::SUCCESS
}

/// SIGINT and SIGTERM, both meaning "shut down gracefully".
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the first signal, naming it.
    async fn recv(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
