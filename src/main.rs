//! The `opsconsole` binary: parse the command line, load the config, start logging and the
//! engines, then show them in the console (or run headless) until the operator quits or a
//! signal asks us to stop.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use opsconsole::cli::{BenchTarget, Cli, RunArgs, Tool};
use opsconsole::config::Config;
use opsconsole::control::Control;
use opsconsole::logging::{LogRing, Sink};
use opsconsole::node::{Node, status_line};
use opsconsole::tui::{self, theme::Theme};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    // Client-side tools: no config, no logging, no engines.
    match &cli.command {
        Some(Tool::Attach(args)) => return opsconsole::tui::attach::main(args),
        Some(Tool::Ctl(args)) => return opsconsole::ctl::run(args),
        Some(Tool::Completions(args)) => return opsconsole::manual::completions(args),
        Some(Tool::Manpage(args)) => return opsconsole::manual::manpage(args),
        _ => {}
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
    // The console needs a terminal; without one (a service manager, a pipe) the node runs
    // headless rather than failing.
    let console = !cli.run.headless && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let face = if console {
        match Theme::load(&config.console.theme) {
            Ok(theme) => Face::Console(Box::new(tui::Options {
                refresh: Duration::from_secs_f64(1.0 / config.console.refresh_hz),
                theme,
                read_only: config.console.read_only,
                kill_hold: Duration::from_secs(config.console.kill_hold_secs),
            })),
            Err(e) => {
                eprintln!("opsconsole: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        Face::Headless
    };
    let sink = if console { Sink::Ring } else { Sink::Stderr };
    let (_log_guard, ring) = match opsconsole::logging::init(&config.log, sink) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("opsconsole: {e}");
            return ExitCode::FAILURE;
        }
    };
    raise_fd_limit(&config);
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
    runtime.block_on(run(config, face, ring, cli.run))
}

/// Raises the open-files limit and warns (in the log, where operators look) when even the
/// raised limit is below what the cache connection limits need.
fn raise_fd_limit(config: &Config) {
    let (before, after) = match opsconsole::fd_limit::raise() {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!("cannot read or raise the open files limit: {e}");
            return;
        }
    };
    if after > before {
        tracing::info!("open files limit raised from {before} to {after}");
    }
    let conns: u64 = [&config.master, &config.slave]
        .into_iter()
        .flatten()
        .map(|c| u64::from(c.conn_limit))
        .sum();
    let needed = conns + opsconsole::fd_limit::RESERVED;
    if conns > 0 && after > 0 && needed > after {
        tracing::warn!(
            "conn_limit allows {conns} cache connections but the open files limit is {after}: \
             clients past about {} will see accept errors; raise the hard limit \
             (ulimit -Hn, or LimitNOFILE= in the systemd unit)",
            after.saturating_sub(opsconsole::fd_limit::RESERVED)
        );
    }
}

/// What shows the node to the operator.
enum Face {
    Headless,
    Console(Box<tui::Options>),
}

/// Reports a fatal error where the operator will see it: the log (which is stderr when
/// headless) and, when the console was to own the terminal, stderr as well.
fn fatal(face: &Face, message: String) -> ExitCode {
    tracing::error!("{message}");
    if matches!(face, Face::Console(_)) {
        eprintln!("opsconsole: {message}");
    }
    ExitCode::FAILURE
}

async fn run(config: Config, face: Face, ring: Option<LogRing>, args: RunArgs) -> ExitCode {
    // Handlers go in before anything listens, so a signal sent as soon as the port is open is
    // a graceful stop rather than the default kill.
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => return fatal(&face, format!("cannot install signal handlers: {e}")),
    };
    let node = match Node::start(&config).await {
        Ok(n) => Arc::new(n),
        Err(e) => return fatal(&face, e.to_string()),
    };
    // Set before the admin API opens, so a reload command always has it.
    node.set_config_source(Box::new(move || {
        Config::load(&args).map_err(|e| e.to_string())
    }));
    let admin = CancellationToken::new();
    let admin_tasks = TaskTracker::new();
    if let Some(a) = &config.admin {
        if let Err(e) = start_admin(a, node.clone(), &admin, &admin_tasks).await {
            node.shutdown(Duration::ZERO).await;
            return fatal(&face, e);
        }
    }
    tracing::info!(
        "opsconsole {} started (pid {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangups) => {
            tokio::spawn(reload_on_hangup(node.clone(), hangups));
        }
        Err(e) => tracing::warn!("cannot install the SIGHUP handler; reload is off: {e}"),
    }
    let why = match face {
        Face::Console(options) => {
            match tui::run(node.clone(), *options, ring, signals.recv()).await {
                Ok(why) => why,
                Err(e) => {
                    eprintln!("opsconsole: the console failed: {e}");
                    tracing::error!("the console failed: {e}");
                    "console error"
                }
            }
        }
        Face::Headless => headless(&node, &config, signals).await,
    };
    let grace = Duration::from_secs(config.node.shutdown_grace_secs);
    tracing::info!("{why}: shutting down (grace {}s)", grace.as_secs());
    admin.cancel();
    admin_tasks.close();
    let _ = tokio::time::timeout(grace, admin_tasks.wait()).await;
    if node.shutdown(grace).await {
        tracing::info!("shutdown complete");
    } else {
        tracing::warn!("grace period over with connections still open; exiting anyway");
    }
    ExitCode::SUCCESS
}

/// Binds the admin API and starts serving it.
async fn start_admin(
    cfg: &opsconsole::config::admin::AdminConfig,
    node: Arc<Node>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), String> {
    let token = cfg.load_token()?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| format!("admin API: cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("admin API: {e}"))?;
    tracing::info!(
        "admin API listening on {addr} ({})",
        if token.is_some() {
            "token required"
        } else {
            "no token: loopback only"
        }
    );
    opsconsole::admin::serve(listener, node, token, cancel.clone(), tracker);
    Ok(())
}

/// Runs until a signal, logging a status line now and then.
async fn headless(node: &Node, config: &Config, signals: Signals) -> &'static str {
    let status_every = config.node.status_interval_secs;
    let signal = signals.recv();
    tokio::pin!(signal);
    let mut ticker = tokio::time::interval(Duration::from_secs(status_every.max(1)));
    ticker.tick().await;
    loop {
        tokio::select! {
            s = &mut signal => break s,
            _ = ticker.tick(), if status_every > 0 => tracing::info!("{}", status_line(&node.snapshot())),
        }
    }
}

/// SIGHUP: re-read the config and apply it to the balancers, as the reload command does; a
/// config that does not load or validate is logged and the running one stays.
async fn reload_on_hangup(node: Arc<Node>, mut hangups: tokio::signal::unix::Signal) {
    while hangups.recv().await.is_some() {
        // Reading the file and binding new listeners block; keep them off the I/O threads.
        let reloading = node.clone();
        match tokio::task::spawn_blocking(move || reloading.reload_from_source()).await {
            Ok(Ok(done)) => tracing::info!("SIGHUP: {done}"),
            Ok(Err(e)) => tracing::error!("SIGHUP: {e}"),
            Err(e) => tracing::error!("SIGHUP: the reload failed: {e}"),
        }
    }
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
