//! The `ctl` command line: where the node is, how to prove we may steer it, and one typed
//! subcommand per operator action.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};

use super::{EXIT_CODES, Failure};
use crate::control::WeightChange;

// `opsconsole ctl [--admin URL] [--token T | --token-file F] <subcommand>`. (Plain comments
// on the argument structs: a doc comment would become the subcommand's about text.)
#[derive(Args)]
#[command(after_help = EXIT_CODES)]
pub struct CtlArgs {
    /// The node's admin API: http://HOST:PORT, its [admin] listen address.
    #[arg(
        long,
        value_name = "URL",
        env = "OPSCONSOLE_ADMIN",
        default_value = "http://127.0.0.1:9901"
    )]
    pub admin: String,

    /// The admin token. Other users can read a command line: prefer --token-file or the
    /// environment.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "OPSCONSOLE_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// A file holding the admin token (its trailing newline is ignored); wins over --token
    /// and OPSCONSOLE_TOKEN.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// How long to wait for the node's answer, in seconds.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_timeout)]
    pub timeout: Duration,

    #[command(subcommand)]
    pub command: CtlCommand,
}

impl CtlArgs {
    /// The token to send: from --token-file, else --token or OPSCONSOLE_TOKEN, else none.
    pub fn token(&self) -> Result<Option<String>, Failure> {
        let Some(path) = &self.token_file else {
            // An empty OPSCONSOLE_TOKEN is an unset one.
            return Ok(self.token.clone().filter(|t| !t.is_empty()));
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::usage(format!("--token-file {}: {e}", path.display())))?;
        let token = text.trim_end_matches(['\r', '\n']);
        if token.is_empty() {
            return Err(Failure::usage(format!(
                "--token-file {} is empty",
                path.display()
            )));
        }
        Ok(Some(token.to_string()))
    }
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 3600.0) {
        return Err(format!("'{s}': give between 0 and 3600 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl std::fmt::Debug for CtlArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field named, so a new one is a compile error here rather than missing.
        let CtlArgs {
            admin,
            token,
            token_file,
            timeout,
            command,
        } = self;
        f.debug_struct("CtlArgs")
            .field("admin", admin)
            .field("token", &crate::config::Redacted(token))
            .field("token_file", token_file)
            .field("timeout", timeout)
            .field("command", command)
            .finish()
    }
}

/// One operator action on the node.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// The node at a glance: roles, cache stats, replication, balanced servers.
    Show {
        /// The raw snapshot as JSON (pretty), for scripts and jq.
        #[arg(long)]
        json: bool,
    },
    /// Send a server no new connections or requests; open ones finish.
    Drain(Target),
    /// Put a drained or maintained server back in service.
    Ready(Target),
    /// Take a server out of service entirely: no traffic and no checks.
    Maint(Target),
    /// Set a server's weight (N), change it (+N, -N) or restore the configured one.
    Weight {
        #[command(flatten)]
        target: Target,
        /// N, +N, -N or restore.
        #[arg(value_name = "N|+N|-N|restore", allow_hyphen_values = true, value_parser = parse_weight)]
        change: WeightChange,
    },
    /// Cut a cache role off from its replication peer (a failover drill); the demo stops
    /// the peer node entirely.
    KillPeer {
        /// How long the link is held down (a remote peer), in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 300)]
        hold: u64,
        #[command(flatten)]
        role: RoleArg,
    },
    /// Let a killed peer come back.
    RevivePeer {
        #[command(flatten)]
        role: RoleArg,
    },
    /// Hand the master role to the slave without losing a write (send it to the master).
    Switchover {
        #[command(flatten)]
        role: RoleArg,
    },
    /// Print an item's value; exit 1 when there is none.
    Get {
        /// The item's key.
        key: String,
        #[command(flatten)]
        role: RoleArg,
    },
    /// Store an item.
    Set {
        /// The item's key.
        key: String,
        /// The value, stored as given (quote it for spaces).
        value: String,
        /// Expiry in seconds (memcached's rules: 0 never; over 30 days, a unix time).
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        ttl: i64,
        /// The item's client flags.
        #[arg(long, value_name = "FLAGS", default_value_t = 0)]
        flags: u32,
        #[command(flatten)]
        role: RoleArg,
    },
    /// Read the config file again and apply it, as SIGHUP does.
    Reload,
    /// Pause or resume the demo's traffic generator.
    Traffic {
        /// pause stops its requests; resume starts them again.
        #[arg(value_enum)]
        action: TrafficAction,
    },
    /// Stop or start one of the demo's app servers, or make it slow or failing.
    #[command(
        group(ArgGroup::new("what").required(true).multiple(true).args(["state", "latency_ms", "error_percent"])),
        override_usage = "opsconsole ctl app <NAME> up|down\n       opsconsole ctl app <NAME> [--latency-ms <MS>] [--error-percent <PERCENT>]"
    )]
    App {
        /// The app server: app1, app2, ...
        name: String,
        /// down closes its port and drops its connections; up starts it again.
        #[arg(value_enum, conflicts_with_all = ["latency_ms", "error_percent"])]
        state: Option<AppState>,
        /// Delay added to every answer but /health.
        #[arg(long, value_name = "MS")]
        latency_ms: Option<u64>,
        /// Share of answers that fail (half 500, half 503), 0 to 100.
        #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100))]
        error_percent: Option<u8>,
    },
}

// `POOL/SERVER`: an L4 service or an L7 pool, and one of its servers.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// An L4 service or L7 pool, and one of its servers.
    #[arg(value_name = "POOL/SERVER", value_parser = parse_target)]
    pub target: (String, String),
}

// The cache role a command is for.
#[derive(Debug, Clone, Args)]
pub struct RoleArg {
    /// The cache role (master, slave); needed only when the node runs more than one.
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrafficAction {
    Pause,
    Resume,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AppState {
    Up,
    Down,
}

pub fn parse_target(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((pool, server)) if !pool.is_empty() && !server.is_empty() => {
            Ok((pool.to_string(), server.to_string()))
        }
        _ => Err(format!(
            "'{s}' is not POOL/SERVER (an L4 service or L7 pool, a slash, a server)"
        )),
    }
}

pub fn parse_weight(s: &str) -> Result<WeightChange, String> {
    let bad = || format!("'{s}' is not a weight: N, +N, -N or restore");
    if s == "restore" {
        return Ok(WeightChange::Restore);
    }
    if s.starts_with(['+', '-']) {
        return s.parse::<i32>().map(WeightChange::Add).map_err(|_| bad());
    }
    s.parse::<u32>().map(WeightChange::Set).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_pool_slash_server() {
        assert_eq!(parse_target("web/app1"), Ok(("web".into(), "app1".into())));
        assert_eq!(
            parse_target("web/a/b"),
            Ok(("web".into(), "a/b".into())),
            "a server name may hold a slash; a pool name may not"
        );
        for bad in ["web", "/app1", "web/", ""] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn weights_are_absolute_relative_or_restore() {
        assert_eq!(parse_weight("5"), Ok(WeightChange::Set(5)));
        assert_eq!(parse_weight("+2"), Ok(WeightChange::Add(2)));
        assert_eq!(parse_weight("-3"), Ok(WeightChange::Add(-3)));
        assert_eq!(parse_weight("restore"), Ok(WeightChange::Restore));
        for bad in ["", "x", "+", "-x", "1.5", "-99999999999"] {
            assert!(parse_weight(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts_are_positive_seconds() {
        assert_eq!(parse_timeout("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "x", "NaN", "inf"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }
}
