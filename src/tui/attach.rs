//! `opsconsole attach URL`: the console over a node in another process (a headless daemon,
//! a node on another machine through a tunnel), reached through its admin API. The screen,
//! the keys and the commands are the local console's; what differs is where the snapshot
//! comes from (`admin::remote`), the link shown in the header, and the Log view, which holds
//! this console's own record of the link since the node's log stays with the node.

use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::admin::client::Endpoint;
use crate::admin::remote::RemoteControl;
use crate::config::ConsoleConfig;
use crate::logging::{LogLevel, LogRing};

use super::Options;
use super::theme::Theme;

/// The environment variable a token may come from, so it stays out of the process list.
pub const TOKEN_ENV: &str = "OPSCONSOLE_TOKEN";
/// Link events the Log view keeps.
const LOG_LINES: usize = 1000;
/// How long quitting waits for a command still on its way before giving up on it.
const EXIT_WAIT: Duration = Duration::from_millis(500);

#[derive(clap::Args)]
pub struct AttachArgs {
    /// The node's admin API: http://HOST:PORT, its [admin] listen address.
    #[arg(value_name = "URL")]
    pub url: String,

    /// The admin API's token. Other users can read it in the process list: prefer
    /// --token-file or the OPSCONSOLE_TOKEN environment variable.
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,

    /// A file holding the admin API's token (a trailing newline is ignored).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Console colour theme: dark, light, mono, or a path to a theme file.
    #[arg(long, value_name = "NAME|PATH")]
    pub theme: Option<String>,

    /// Console refreshes (and snapshots fetched) per second (default 4).
    #[arg(long, value_name = "HZ")]
    pub refresh_hz: Option<f64>,

    /// Console without action keys: it only watches.
    #[arg(long)]
    pub read_only: bool,
}

/// Written by hand so the token never reaches a debug print.
impl fmt::Debug for AttachArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachArgs")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("token_file", &self.token_file)
            .field("theme", &self.theme)
            .field("refresh_hz", &self.refresh_hz)
            .field("read_only", &self.read_only)
            .finish()
    }
}

/// The token to send: `--token`, else the file of `--token-file`, else `env` (the
/// `OPSCONSOLE_TOKEN` variable); `None` for a node that asks for none.
pub fn resolve_token(args: &AttachArgs, env: Option<String>) -> Result<Option<String>, String> {
    let token = if let Some(t) = &args.token {
        t.clone()
    } else if let Some(path) = &args.token_file {
        std::fs::read_to_string(path)
            .map_err(|e| format!("--token-file {}: {e}", path.display()))?
            .trim_end()
            .to_string()
    } else {
        match env {
            Some(t) => t,
            None => return Ok(None),
        }
    };
    if token.is_empty() {
        return Err("the token is empty (from --token, --token-file or OPSCONSOLE_TOKEN)".into());
    }
    Ok(Some(token))
}

/// How the console looks: the flags over `[console]`'s defaults.
fn options(args: &AttachArgs) -> Result<Options, String> {
    let defaults = ConsoleConfig::default();
    let hz = args.refresh_hz.unwrap_or(defaults.refresh_hz);
    if !(hz > 0.0 && hz <= 60.0) {
        return Err(format!(
            "--refresh-hz {hz} must be more than 0 and at most 60"
        ));
    }
    Ok(Options {
        refresh: Duration::from_secs_f64(1.0 / hz),
        theme: Theme::load(args.theme.as_deref().unwrap_or(&defaults.theme))?,
        read_only: args.read_only,
        kill_hold: Duration::from_secs(defaults.kill_hold_secs),
    })
}

/// Runs the attached console until the operator quits or a signal; errors that keep it
/// from starting go to stderr.
pub fn main(args: &AttachArgs) -> ExitCode {
    match attach(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opsconsole attach: {e}");
            ExitCode::FAILURE
        }
    }
}

fn attach(args: &AttachArgs) -> Result<(), String> {
    let token = resolve_token(args, std::env::var(TOKEN_ENV).ok())?;
    let endpoint = Endpoint::parse(&args.url, token)?;
    let options = options(args)?;
    if !std::io::stdout().is_terminal() {
        return Err(
            "the console needs a terminal; from a script, read the admin API itself (curl, or a Prometheus scrape of /metrics)"
                .into(),
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("opsconsole-attach")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let log = LogRing::new(LOG_LINES);
    let remote = endpoint.authority().to_string();
    log.push(
        LogLevel::Info,
        format!(
            "attached to {remote}: this log shows the link; the node's own log stays with the node (its log file, or journalctl for a service)"
        ),
    );
    let control = Arc::new(RemoteControl::start(
        endpoint,
        options.refresh,
        log.clone(),
        runtime.handle(),
    ));
    let outcome = runtime.block_on(super::run(control, options, Some(log), stopped()));
    // A command still waiting on a slow node is not worth holding the terminal for.
    runtime.shutdown_timeout(EXIT_WAIT);
    outcome
        .map(|_why| ())
        .map_err(|e| format!("the console failed: {e}"))
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C is a key while the console runs, but `kill -INT`
/// is not).
async fn stopped() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        // Without handlers the default action ends the process; the console's own exit
        // keys still work.
        _ => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(token: Option<&str>, token_file: Option<PathBuf>) -> AttachArgs {
        AttachArgs {
            url: "http://127.0.0.1:9901".into(),
            token: token.map(Into::into),
            token_file,
            theme: None,
            refresh_hz: None,
            read_only: false,
        }
    }

    #[test]
    fn the_token_comes_from_the_flag_then_the_file_then_the_environment() {
        let env = || Some("from-the-environment".to_string());
        assert_eq!(
            resolve_token(&args(Some("from-the-flag"), None), env()),
            Ok(Some("from-the-flag".into()))
        );
        let dir = std::env::temp_dir().join(format!("opsconsole-attach-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("token");
        std::fs::write(&file, "from-the-file\n").expect("write");
        assert_eq!(
            resolve_token(&args(None, Some(file.clone())), env()),
            Ok(Some("from-the-file".into()))
        );
        assert_eq!(
            resolve_token(&args(None, None), env()),
            Ok(Some("from-the-environment".into()))
        );
        assert_eq!(resolve_token(&args(None, None), None), Ok(None));
        std::fs::write(&file, "\n").expect("write");
        assert!(resolve_token(&args(None, Some(file)), None).is_err());
        let missing = dir.join("missing");
        let e = resolve_token(&args(None, Some(missing)), None).expect_err("missing file");
        assert!(e.contains("--token-file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_token_is_not_in_a_debug_print() {
        let shown = format!("{:?}", args(Some("s3cr3t-token-value"), None));
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("<hidden>"), "{shown}");
    }

    #[test]
    fn refresh_rates_outside_the_console_range_are_refused() {
        for hz in [0.0, -1.0, 61.0, f64::NAN] {
            let mut a = args(None, None);
            a.refresh_hz = Some(hz);
            assert!(options(&a).is_err(), "{hz}");
        }
        let mut a = args(None, None);
        a.refresh_hz = Some(10.0);
        let o = options(&a).expect("10 Hz");
        assert_eq!(o.refresh, Duration::from_millis(100));
    }
}
