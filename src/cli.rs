//! The command line: opsconsole's own options plus the memcached switches operators already
//! type from muscle memory (`-p -l -m -c -I -t -v -F -C -U`). Parsing only; `config.rs` decides
//! how these override the file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The roles one opsconsole process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Role {
    /// A memcached-compatible cache node, replication master.
    Master,
    /// A memcached-compatible cache node, replication slave.
    Slave,
    /// An LVS-style TCP load balancer over the `[l4.services.*]` of the config.
    L4,
    /// An HTTP reverse proxy and load balancer over the `[l7.listeners.*]` and
    /// `[l7.pools.*]` of the config.
    L7,
    /// Everything on loopback from configs/demo.toml: a replicating cache pair, a gentle
    /// traffic generator, and the console.
    Demo,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Slave => "slave",
            Role::L4 => "l4",
            Role::L7 => "l7",
            Role::Demo => "demo",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "opsconsole",
    version,
    about = "A replicated memcached-compatible cache node, L4 and L7 balancer, with a live console",
    long_about = None,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  opsconsole --role demo\n  opsconsole --role master --headless -p 11211 -m 64\n  opsconsole --role l4 --config configs/l4.toml --headless\n  opsconsole --role l7 --config configs/l7.toml --headless\n  opsconsole --config configs/master.toml --check-config\n  opsconsole bench cache --addr 127.0.0.1:11211 --conns 50 --duration 10\n  opsconsole ctl --admin http://127.0.0.1:9901 --token-file admin.token show\n  opsconsole attach http://127.0.0.1:9901 --token-file admin.token"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Tool>,

    #[command(flatten)]
    pub run: RunArgs,
}

/// Options for running the engines (the default action).
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// Roles to run (repeat or comma-separate). Default: every role with a section in the config.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub role: Vec<Role>,

    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Validate the configuration, print the effective config and exit (0 = valid, 1 = invalid).
    #[arg(long)]
    pub check_config: bool,

    /// Run the engines as a daemon without the console; logs go to stderr and the log file.
    #[arg(long)]
    pub headless: bool,

    /// Console colour theme: dark, light, mono, or a path to a theme file.
    #[arg(long, value_name = "NAME|PATH")]
    pub theme: Option<String>,

    /// Console without action keys: it only watches.
    #[arg(long)]
    pub read_only: bool,

    /// Console refreshes per second (default 4).
    #[arg(long, value_name = "HZ")]
    pub refresh_hz: Option<f64>,

    /// Directory for the rolling log file (overrides [log] dir).
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,

    /// Log a one-line status every N seconds in headless mode (0 = off).
    #[arg(long, value_name = "SECONDS")]
    pub status_interval: Option<u64>,

    /// TCP port the cache listens on (memcached -p). 0 lets the OS choose.
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: Option<u16>,

    /// Interface the cache listens on (memcached -l). Default 127.0.0.1.
    #[arg(short = 'l', long = "listen", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Item memory in MiB (memcached -m).
    #[arg(short = 'm', long = "memory-limit", value_name = "MB")]
    pub memory_limit: Option<u64>,

    /// Maximum simultaneous client connections (memcached -c).
    #[arg(short = 'c', long = "conn-limit", value_name = "N")]
    pub conn_limit: Option<u32>,

    /// Maximum item size, e.g. 1m, 512k, 2097152 (memcached -I).
    #[arg(short = 'I', long = "max-item-size", value_name = "SIZE")]
    pub max_item_size: Option<String>,

    /// Worker threads (memcached -t). Default: the number of cores.
    #[arg(short = 't', long = "threads", value_name = "N")]
    pub threads: Option<usize>,

    /// Verbose logging; -vv for more (memcached -v).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Disable flush_all (memcached -F).
    #[arg(short = 'F', long = "disable-flush-all")]
    pub disable_flush_all: bool,

    /// Disable CAS unique values (memcached -C).
    #[arg(short = 'C', long = "disable-cas")]
    pub disable_cas: bool,

    /// Replication peer host (repcached -x); the port is -X.
    #[arg(short = 'x', long = "peer-host", value_name = "HOST")]
    pub peer_host: Option<String>,

    /// Replication port, to listen on and to reach the peer at (repcached -X, default 11212).
    #[arg(short = 'X', long = "repl-port", value_name = "PORT")]
    pub repl_port: Option<u16>,

    /// Replication peer as HOST:PORT (when the two nodes use different ports).
    #[arg(long, value_name = "HOST:PORT")]
    pub peer: Option<String>,

    /// Address the replication listener binds (default 127.0.0.1:11212).
    #[arg(long, value_name = "ADDR:PORT")]
    pub repl_listen: Option<String>,

    /// File holding the replication shared secret.
    #[arg(long, value_name = "FILE")]
    pub repl_secret_file: Option<PathBuf>,

    /// UDP port (memcached -U). UDP is not served; only 0 is accepted.
    #[arg(short = 'U', long = "udp-port", value_name = "PORT", value_parser = parse_udp_port)]
    pub udp_port: Option<u16>,
}

fn parse_udp_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) => Ok(0),
        Ok(_) => Err("UDP is not supported (it was an amplification vector); use -U 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Subcommand)]
pub enum Tool {
    /// Load generators that measure a server (works against the real memcached too).
    #[command(subcommand)]
    Bench(BenchTarget),
    /// The console over a node in another process, through its admin API.
    Attach(crate::tui::attach::AttachArgs),
    /// Steer a running node through its admin API: show, drain, weight, kill-peer, reload...
    Ctl(crate::ctl::CtlArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(crate::manual::CompletionsArgs),
    /// Print the man page (roff): opsconsole(1), or a subcommand's, e.g. `manpage ctl`.
    Manpage(crate::manual::ManpageArgs),
}

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// Drive a memcached-protocol server and report ops/s and latency percentiles.
    Cache(crate::bench::cache::CacheBenchArgs),
}

/// Parses a memcached-style size: a number of bytes with an optional k/m/g suffix.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1u64 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1u64 << 30),
        _ => (t, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("'{s}' is not a size (bytes, or a number with k/m/g)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_memcached() {
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("2097152"), Ok(2_097_152));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("m").is_err());
    }

    #[test]
    fn memcached_short_flags_are_accepted() {
        let cli = Cli::try_parse_from([
            "opsconsole",
            "--role",
            "master",
            "-p",
            "11311",
            "-l",
            "0.0.0.0",
            "-m",
            "128",
            "-c",
            "10",
            "-I",
            "2m",
            "-t",
            "1",
            "-vv",
            "-F",
            "-C",
            "-U",
            "0",
        ])
        .expect("parses");
        let r = cli.run;
        assert_eq!(r.role, vec![Role::Master]);
        assert_eq!(r.port, Some(11311));
        assert_eq!(r.memory_limit, Some(128));
        assert_eq!(r.verbose, 2);
        assert!(r.disable_flush_all && r.disable_cas);
    }

    #[test]
    fn udp_and_unknown_switches_are_rejected() {
        assert!(Cli::try_parse_from(["opsconsole", "-U", "11211"]).is_err());
        assert!(Cli::try_parse_from(["opsconsole", "-z"]).is_err());
    }
}
