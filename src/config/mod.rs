//! The configuration model: a strict TOML file (one section per role; an absent section turns
//! that role off), defaults, cross-field validation and the command-line overrides.
//! Errors name the file, line, column and the offending value.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::{Role, RunArgs, parse_size};

pub mod admin;
pub mod balance;
pub mod l7;

pub use balance::L4Config;
pub use l7::L7Config;

/// What `to_toml` and `{:?}` show in place of a secret.
const HIDDEN: &str = "HIDDEN";

/// An optional secret as `{:?}` shows it: whether it is set, never what it is. Types holding
/// a secret or a token write their `Debug` by hand with this, since `{:?}` output ends up in
/// debug log lines, panic messages and test failures.
pub struct Redacted<'a, T>(pub &'a Option<T>);

impl<T> std::fmt::Debug for Redacted<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(_) => write!(f, "Some({HIDDEN})"),
            None => f.write_str("None"),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub log: LogConfig,
    pub node: NodeConfig,
    /// A cache node in the master role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<CacheConfig>,
    /// A cache node in the slave role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slave: Option<CacheConfig>,
    /// The L4 balancer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l4: Option<L4Config>,
    /// The L7 balancer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l7: Option<L7Config>,
    pub console: ConsoleConfig,
    /// The demo's traffic generator (present in `configs/demo.toml`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demo: Option<DemoConfig>,
    /// The admin API (snapshot, commands, metrics); off without this section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<admin::AdminConfig>,
}

/// The terminal console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Screen refreshes (and snapshots taken) per second.
    pub refresh_hz: f64,
    /// A theme name from `themes/` (`dark`, `light`, `mono`) or a path to a theme file.
    pub theme: String,
    /// Disable every action key; the console only watches.
    pub read_only: bool,
    /// How long `K` holds a remote peer's link down (a peer in this process is stopped
    /// instead, until `R`).
    pub kill_hold_secs: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            refresh_hz: 4.0,
            theme: "dark".into(),
            read_only: false,
            kill_hold_secs: 300,
        }
    }
}

/// The demo's gentle traffic generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Requests per second, spread over the cache nodes (one in four is a set).
    pub requests_per_sec: u32,
    /// How many distinct keys it cycles through.
    pub keys: u32,
    /// Bytes per value it writes.
    pub value_size: usize,
    /// Items written to the first cache node at start, so a marugoto copy has something to
    /// carry (pair it with `copy_bytes_per_sec` to watch the gauge move).
    pub preload_keys: u32,
    /// Built-in HTTP app servers, named app1, app2, ... in this order, for balancers to front.
    pub apps: Vec<String>,
    /// The `[l4.services.NAME]` in front of the cache pair: cache requests go through it
    /// as well as to the nodes directly.
    pub cache_service: Option<String>,
    /// The `[l4.services.NAME]` HTTP requests go through.
    pub http_service: Option<String>,
    /// HTTP requests per second, each on a new connection.
    pub http_requests_per_sec: u32,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            requests_per_sec: 20,
            keys: 500,
            value_size: 100,
            preload_keys: 0,
            apps: Vec::new(),
            cache_service: None,
            http_service: None,
            http_requests_per_sec: 0,
        }
    }
}

/// `configs/demo.toml`, built in so `--role demo` runs from any directory.
pub const DEMO_TOML: &str = include_str!("../../configs/demo.toml");

/// Where and how logs are written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Directory of the rolling log file (created if missing).
    pub dir: PathBuf,
    /// File name prefix; the rotation date is appended.
    pub file: String,
    /// `minutely`, `hourly`, `daily` or `never`.
    pub rotation: String,
    /// `error`, `warn`, `info`, `debug` or `trace` (`-v`/`-vv` raise it).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            dir: PathBuf::from("log"),
            file: "opsconsole.log".into(),
            rotation: "daily".into(),
            level: "info".into(),
        }
    }
}

/// Process-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Headless mode logs a one-line status this often (seconds; 0 = never).
    pub status_interval_secs: u64,
    /// On SIGINT/SIGTERM, how long connections get to finish before the process exits.
    pub shutdown_grace_secs: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            status_interval_secs: 0,
            shutdown_grace_secs: 5,
        }
    }
}

/// One cache node (`[master]` or `[slave]`), with memcached's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Interface to listen on (memcached -l). Loopback unless asked otherwise.
    pub listen: String,
    /// TCP port (memcached -p); 0 lets the OS choose.
    pub port: u16,
    /// Item memory in MiB (memcached -m).
    pub memory_limit_mb: u64,
    /// Maximum simultaneous connections (memcached -c).
    pub conn_limit: u32,
    /// Largest item, e.g. "1m" (memcached -I).
    pub max_item_size: String,
    /// Worker threads (memcached -t); 0 = one per core.
    pub threads: usize,
    /// Refuse flush_all (memcached -F).
    pub disable_flush_all: bool,
    /// No CAS unique values (memcached -C).
    pub disable_cas: bool,
    /// Initial protocol verbosity (0-2), as `verbosity` sets it.
    pub verbosity: u8,
    /// A connection with no request for this long is closed (memcached's
    /// `-o idle_timeout`); 0 = never, the default, since client pools keep connections idle.
    pub idle_timeout_secs: u64,
    /// A request (its line and data block) must arrive whole within this of its first byte,
    /// so slowloris clients cannot hold connections; 0 = no limit.
    pub request_timeout_ms: u64,
    /// A client that takes no reply bytes for this long is disconnected, so one that never
    /// reads holds a bounded buffer for a bounded time; 0 = no limit.
    pub send_timeout_ms: u64,
    /// Replication with a peer node (absent = a standalone cache).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationConfig>,
}

/// repcached-style replication (`[master.replication]` / `[slave.replication]`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Where this node accepts its peer (repcached -X is the port). Loopback by default.
    pub listen: String,
    /// The other node's replication address, `host:port` (repcached -x is the host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Shared secret both nodes prove they know (never sent). Prefer `secret_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// File holding the shared secret (trailing whitespace ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// How often each side proves it is alive.
    pub heartbeat_interval_ms: u64,
    /// Silence after which the peer is declared gone.
    pub heartbeat_timeout_ms: u64,
    /// Longest pause between attempts to reach the peer.
    pub reconnect_max_ms: u64,
    /// Changes kept for partial resync after a short break; also the most a slow peer may
    /// lag before it is resynced with a full copy.
    pub backlog_mb: u64,
    /// How long deletes are remembered so older writes cannot bring keys back.
    pub tombstone_ttl_secs: u64,
    /// Most remembered deletes.
    pub tombstone_cap: usize,
    /// This node's id (breaks ties between versions and masters); 0 = random at start.
    pub node_id: u32,
    /// `async`: a write is answered at once and reaches the peer soon after. `sync`: the
    /// reply waits until the peer has applied the write (bounded by `sync_timeout_ms`).
    pub ack: String,
    /// In `sync` mode, the longest a write waits for the peer's acknowledgement.
    pub sync_timeout_ms: u64,
    /// Most bytes per second a marugoto copy sends (e.g. "20m"), so a resync cannot
    /// saturate the link; "0" = as fast as the network allows.
    pub copy_bytes_per_sec: String,
}

impl std::fmt::Debug for ReplicationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field named, so a new one is a compile error here rather than missing.
        let ReplicationConfig {
            listen,
            peer,
            secret,
            secret_file,
            heartbeat_interval_ms,
            heartbeat_timeout_ms,
            reconnect_max_ms,
            backlog_mb,
            tombstone_ttl_secs,
            tombstone_cap,
            node_id,
            ack,
            sync_timeout_ms,
            copy_bytes_per_sec,
        } = self;
        f.debug_struct("ReplicationConfig")
            .field("listen", listen)
            .field("peer", peer)
            .field("secret", &Redacted(secret))
            .field("secret_file", secret_file)
            .field("heartbeat_interval_ms", heartbeat_interval_ms)
            .field("heartbeat_timeout_ms", heartbeat_timeout_ms)
            .field("reconnect_max_ms", reconnect_max_ms)
            .field("backlog_mb", backlog_mb)
            .field("tombstone_ttl_secs", tombstone_ttl_secs)
            .field("tombstone_cap", tombstone_cap)
            .field("node_id", node_id)
            .field("ack", ack)
            .field("sync_timeout_ms", sync_timeout_ms)
            .field("copy_bytes_per_sec", copy_bytes_per_sec)
            .finish()
    }
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            listen: "127.0.0.1:11212".into(),
            peer: None,
            secret: None,
            secret_file: None,
            heartbeat_interval_ms: 500,
            heartbeat_timeout_ms: 3000,
            reconnect_max_ms: 2000,
            backlog_mb: 64,
            tombstone_ttl_secs: 3600,
            tombstone_cap: 1_000_000,
            node_id: 0,
            ack: "async".into(),
            sync_timeout_ms: 1000,
            copy_bytes_per_sec: "0".into(),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            listen: "127.0.0.1".into(),
            port: 11211,
            memory_limit_mb: 64,
            conn_limit: 1024,
            max_item_size: "1m".into(),
            threads: 0,
            disable_flush_all: false,
            disable_cas: false,
            verbosity: 0,
            idle_timeout_secs: 0,
            request_timeout_ms: 30_000,
            send_timeout_ms: 30_000,
            replication: None,
        }
    }
}

impl ReplicationConfig {
    /// The shared secret from `secret` or `secret_file`, if either is set.
    pub fn load_secret(&self) -> Result<Option<Vec<u8>>, String> {
        if let Some(s) = &self.secret {
            return Ok(Some(s.as_bytes().to_vec()));
        }
        let Some(path) = &self.secret_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("secret_file {}: {e}", path.display()))?;
        let secret = text.trim_end();
        if secret.is_empty() {
            return Err(format!("secret_file {} is empty", path.display()));
        }
        Ok(Some(secret.as_bytes().to_vec()))
    }
}

impl CacheConfig {
    pub fn memory_limit_bytes(&self) -> u64 {
        self.memory_limit_mb.saturating_mul(1 << 20)
    }

    /// Validated by `Config::validate`; falls back to memcached's default if called earlier.
    pub fn max_item_size_bytes(&self) -> u64 {
        parse_size(&self.max_item_size).unwrap_or(1 << 20)
    }

    pub fn threads(&self) -> usize {
        if self.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.threads
        }
    }
}

/// A configuration problem, with where it is when it came from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    /// 1-based line and column.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.position) {
            (Some(file), Some((line, col))) => write!(f, "{}:{line}:{col}: ", file.display())?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            (None, _) => write!(f, "command line: ")?,
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column of a byte offset.
fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Finds the line a validation error is about inside `[section]` (or its subsections): the
/// line holding `value` when one is given (a server inside an inline array), else `key = ...`.
fn locate(source: &str, section: &str, key: &str, value: Option<&str>) -> Option<(usize, usize)> {
    let mut current = String::new();
    let nested = format!("{section}.");
    let mut key_hit = None;
    for (i, raw) in source.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            current = line
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            continue;
        }
        if current != section && !(value.is_some() && current.starts_with(&nested)) {
            continue;
        }
        if let Some(v) = value
            && let Some(col) = raw.find(v)
        {
            return Some((i + 1, col + 1));
        }
        if key_hit.is_none()
            && current == section
            && let Some((k, _)) = line.split_once('=')
            && k.trim() == key
        {
            key_hit = Some((i + 1, raw.find(key).unwrap_or(0) + 1));
        }
    }
    key_hit
}

impl Config {
    /// Parses a configuration from TOML text; `file` is only used in error messages.
    pub fn from_toml(source: &str, file: &Path) -> Result<Config, ConfigError> {
        toml::from_str(source).map_err(|e| ConfigError {
            file: Some(file.to_path_buf()),
            position: e.span().map(|s| line_col(source, s.start)),
            message: e.message().trim().to_string(),
        })
    }

    /// Loads the file (if any), applies the command line and validates the result.
    /// `--role demo` without `--config` reads `configs/demo.toml`, or the built-in copy of it
    /// when run from elsewhere.
    pub fn load(args: &RunArgs) -> Result<Config, ConfigError> {
        let demo = args.role.contains(&Role::Demo);
        if demo && args.role.len() > 1 {
            return Err(ConfigError {
                file: None,
                position: None,
                message:
                    "--role demo runs every role itself; it cannot be combined with other roles"
                        .into(),
            });
        }
        let path = args.config.clone().or_else(|| {
            let local = PathBuf::from("configs/demo.toml");
            (demo && local.is_file()).then_some(local)
        });
        match path {
            Some(path) => {
                let source = std::fs::read_to_string(&path).map_err(|e| ConfigError {
                    file: Some(path.clone()),
                    position: None,
                    message: format!("cannot read the config file: {e}"),
                })?;
                Config::from_text(&source, &path, args)
            }
            None if demo => {
                Config::from_text(DEMO_TOML, Path::new("configs/demo.toml (built in)"), args)
            }
            None => Config::finish(Config::default(), args, None),
        }
    }

    /// What `load` does once the file is read: parse, apply the command line, validate,
    /// and point a validation error at its line. No I/O, so it can be fed any text.
    pub fn from_text(source: &str, path: &Path, args: &RunArgs) -> Result<Config, ConfigError> {
        let config = Config::from_toml(source, path)?;
        Config::finish(config, args, Some((source, path)))
    }

    fn finish(
        mut config: Config,
        args: &RunArgs,
        file: Option<(&str, &Path)>,
    ) -> Result<Config, ConfigError> {
        config.apply_cli(args)?;
        config.validate().map_err(|mut e| {
            if let (Some((source, path)), Some(spot)) = (file, e.locate.take()) {
                e.error.file = Some(path.to_path_buf());
                e.error.position = locate(source, &spot.section, &spot.key, spot.value.as_deref());
            }
            e.error
        })?;
        Ok(config)
    }

    /// The cache roles that will run, in a stable order.
    pub fn caches(&self) -> Vec<(Role, &CacheConfig)> {
        let mut out = Vec::new();
        if let Some(c) = &self.master {
            out.push((Role::Master, c));
        }
        if let Some(c) = &self.slave {
            out.push((Role::Slave, c));
        }
        out
    }

    fn section_mut(&mut self, role: Role) -> Option<&mut Option<CacheConfig>> {
        match role {
            Role::Master => Some(&mut self.master),
            Role::Slave => Some(&mut self.slave),
            Role::Demo | Role::L4 | Role::L7 => None,
        }
    }

    /// `--role` picks the roles (others are turned off); memcached-style flags then override
    /// the cache settings of the role(s) chosen.
    pub fn apply_cli(&mut self, args: &RunArgs) -> Result<(), ConfigError> {
        let cli_error = |message: String| ConfigError {
            file: None,
            position: None,
            message,
        };
        // `--role demo` keeps every section of the demo config.
        if !args.role.is_empty() && !args.role.contains(&Role::Demo) {
            for role in [Role::Master, Role::Slave] {
                let Some(section) = self.section_mut(role) else {
                    continue;
                };
                if args.role.contains(&role) {
                    section.get_or_insert_with(CacheConfig::default);
                } else {
                    *section = None;
                }
            }
            if !args.role.contains(&Role::L4) {
                self.l4 = None;
            } else if self.l4.is_none() {
                return Err(cli_error(
                    "--role l4 needs [l4.services.NAME] sections in the config file (see configs/l4.toml)".into(),
                ));
            }
            if !args.role.contains(&Role::L7) {
                self.l7 = None;
            } else if self.l7.is_none() {
                return Err(cli_error(
                    "--role l7 needs [l7.listeners.NAME] and [l7.pools.NAME] sections in the config file (see configs/l7.toml)".into(),
                ));
            }
        }
        if let Some(theme) = &args.theme {
            self.console.theme = theme.clone();
        }
        if args.read_only {
            self.console.read_only = true;
        }
        if let Some(hz) = args.refresh_hz {
            self.console.refresh_hz = hz;
        }
        if let Some(dir) = &args.log_dir {
            self.log.dir = dir.clone();
        }
        if let Some(s) = args.status_interval {
            self.node.status_interval_secs = s;
        }
        let cache_flags = args.port.is_some()
            || args.peer_host.is_some()
            || args.repl_port.is_some()
            || args.peer.is_some()
            || args.repl_listen.is_some()
            || args.repl_secret_file.is_some()
            || args.listen.is_some()
            || args.memory_limit.is_some()
            || args.conn_limit.is_some()
            || args.max_item_size.is_some()
            || args.threads.is_some()
            || args.disable_flush_all
            || args.disable_cas
            || args.verbose > 0;
        let roles: Vec<Role> = self.caches().iter().map(|(r, _)| *r).collect();
        if args.port.is_some() && roles.len() > 1 {
            return Err(cli_error(
                "-p/--port names one cache port, but both master and slave run here; set the ports in the config file".into(),
            ));
        }
        if cache_flags && roles.is_empty() {
            return Err(cli_error(
                "cache flags (-p -l -m -c -I -t -F -C) need a cache role: add --role master or --role slave".into(),
            ));
        }
        if let Some(size) = &args.max_item_size {
            parse_size(size).map_err(|e| cli_error(format!("-I/--max-item-size: {e}")))?;
        }
        for role in roles {
            let Some(c) = self.section_mut(role).and_then(|s| s.as_mut()) else {
                continue;
            };
            if let Some(p) = args.port {
                c.port = p;
            }
            if let Some(l) = &args.listen {
                c.listen = l.clone();
            }
            if let Some(m) = args.memory_limit {
                c.memory_limit_mb = m;
            }
            if let Some(n) = args.conn_limit {
                c.conn_limit = n;
            }
            if let Some(s) = &args.max_item_size {
                c.max_item_size = s.clone();
            }
            if let Some(t) = args.threads {
                c.threads = t;
            }
            apply_replication_cli(c, args);
            c.disable_flush_all |= args.disable_flush_all;
            c.disable_cas |= args.disable_cas;
            c.verbosity = c.verbosity.max(args.verbose.min(2));
        }
        match args.verbose {
            0 => {}
            1 => self.log.level = "debug".into(),
            _ => self.log.level = "trace".into(),
        }
        Ok(())
    }

    /// The demo's app servers and the L4 services its traffic goes through.
    fn validate_demo_links(&self, d: &DemoConfig) -> Result<(), ValidationError> {
        let bad = |key: &str, value: Option<String>, message: String| ValidationError {
            error: ConfigError {
                file: None,
                position: None,
                message,
            },
            locate: Some(Box::new(Spot {
                section: "demo".into(),
                key: key.into(),
                value,
            })),
        };
        for a in &d.apps {
            if a.parse::<std::net::SocketAddr>().is_err() {
                return Err(bad(
                    "apps",
                    Some(a.clone()),
                    format!("apps entry '{a}' in [demo] is not an ip:port address"),
                ));
            }
        }
        let services = self.l4.as_ref().map(|l| &l.services);
        for (key, name) in [
            ("cache_service", &d.cache_service),
            ("http_service", &d.http_service),
        ] {
            if let Some(n) = name
                && !services.is_some_and(|s| s.contains_key(n))
            {
                return Err(bad(
                    key,
                    Some(n.clone()),
                    format!("{key} '{n}' in [demo] names no [l4.services.{n}]"),
                ));
            }
        }
        if d.http_requests_per_sec > 10_000 {
            return Err(bad(
                "http_requests_per_sec",
                None,
                format!(
                    "http_requests_per_sec {} in [demo] is more than 10000 (one connection each; use a load tool for load)",
                    d.http_requests_per_sec
                ),
            ));
        }
        if d.http_requests_per_sec > 0 && d.http_service.is_none() {
            return Err(bad(
                "http_requests_per_sec",
                None,
                "http_requests_per_sec in [demo] needs http_service, the L4 service to send them through".into(),
            ));
        }
        Ok(())
    }

    /// Cross-field rules a parser cannot check.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let bad = |section: &str, key: &str, message: String| ValidationError {
            error: ConfigError {
                file: None,
                position: None,
                message,
            },
            locate: Some(Box::new(Spot {
                section: section.to_string(),
                key: key.to_string(),
                value: None,
            })),
        };
        if crate::logging::parse_rotation(&self.log.rotation).is_none() {
            return Err(bad(
                "log",
                "rotation",
                format!(
                    "rotation '{}' in [log] is not one of minutely, hourly, daily, never",
                    self.log.rotation
                ),
            ));
        }
        if crate::logging::parse_level(&self.log.level).is_none() {
            return Err(bad(
                "log",
                "level",
                format!(
                    "level '{}' in [log] is not one of error, warn, info, debug, trace",
                    self.log.level
                ),
            ));
        }
        if !(self.console.refresh_hz > 0.0 && self.console.refresh_hz <= 60.0) {
            return Err(bad(
                "console",
                "refresh_hz",
                format!(
                    "refresh_hz {} in [console] must be more than 0 and at most 60",
                    self.console.refresh_hz
                ),
            ));
        }
        if let Err(e) = crate::tui::theme::Theme::load(&self.console.theme) {
            return Err(bad("console", "theme", e));
        }
        if let Some(d) = &self.demo {
            if d.requests_per_sec > 100_000 {
                return Err(bad(
                    "demo",
                    "requests_per_sec",
                    format!(
                        "requests_per_sec {} in [demo] is more than 100000 (it is a gentle generator; use `opsconsole bench cache` for load)",
                        d.requests_per_sec
                    ),
                ));
            }
            if d.keys == 0 {
                return Err(bad(
                    "demo",
                    "keys",
                    "keys 0 in [demo] leaves nothing to write".into(),
                ));
            }
            if d.preload_keys > 10_000_000 {
                return Err(bad(
                    "demo",
                    "preload_keys",
                    format!(
                        "preload_keys {} in [demo] is more than 10000000",
                        d.preload_keys
                    ),
                ));
            }
            if d.value_size > 1 << 20 {
                return Err(bad(
                    "demo",
                    "value_size",
                    format!("value_size {} in [demo] is more than 1 MiB", d.value_size),
                ));
            }
        }
        let caches = self.caches();
        if caches.is_empty() && self.l4.is_none() && self.l7.is_none() {
            return Err(ValidationError {
                error: ConfigError {
                    file: None,
                    position: None,
                    message: "no role to run: pass --role master|slave|l4|l7|demo or add a [master], [slave], [l4] or [l7] section".into(),
                },
                locate: None,
            });
        }
        if let Some(l4) = &self.l4 {
            balance::validate_l4(l4).map_err(ValidationError::from)?;
        }
        if let Some(l7) = &self.l7 {
            l7::validate_l7(l7, self.l4.as_ref()).map_err(ValidationError::from)?;
        }
        if let Some(d) = &self.demo {
            self.validate_demo_links(d)?;
        }
        if let Some(a) = &self.admin {
            admin::validate_admin(a).map_err(ValidationError::from)?;
        }
        for (role, c) in &caches {
            let s = role.name();
            if c.listen.parse::<std::net::IpAddr>().is_err() {
                return Err(bad(
                    s,
                    "listen",
                    format!("listen '{}' in [{s}] is not an IP address", c.listen),
                ));
            }
            if c.memory_limit_mb == 0 || c.memory_limit_mb > 1 << 20 {
                return Err(bad(
                    s,
                    "memory_limit_mb",
                    format!(
                        "memory_limit_mb {} in [{s}] must be between 1 and 1048576",
                        c.memory_limit_mb
                    ),
                ));
            }
            if c.conn_limit == 0 {
                return Err(bad(
                    s,
                    "conn_limit",
                    format!("conn_limit 0 in [{s}] would refuse every client"),
                ));
            }
            let item = parse_size(&c.max_item_size)
                .map_err(|e| bad(s, "max_item_size", format!("max_item_size in [{s}]: {e}")))?;
            if !(1024..=1 << 30).contains(&item) {
                return Err(bad(
                    s,
                    "max_item_size",
                    format!(
                        "max_item_size '{}' in [{s}] must be between 1k and 1g",
                        c.max_item_size
                    ),
                ));
            }
            if item > c.memory_limit_bytes() / 2 {
                return Err(bad(
                    s,
                    "max_item_size",
                    format!(
                        "max_item_size '{}' in [{s}] is more than half of memory_limit_mb {} (as memcached, an item must fit twice)",
                        c.max_item_size, c.memory_limit_mb
                    ),
                ));
            }
            if c.threads > 256 {
                return Err(bad(
                    s,
                    "threads",
                    format!("threads {} in [{s}] is more than 256", c.threads),
                ));
            }
            if c.verbosity > 2 {
                return Err(bad(
                    s,
                    "verbosity",
                    format!("verbosity {} in [{s}] must be 0, 1 or 2", c.verbosity),
                ));
            }
            // Bounded so a deadline computed from them can never overflow.
            for (key, value, most, unit) in [
                (
                    "idle_timeout_secs",
                    c.idle_timeout_secs,
                    30 * 86_400,
                    "30 days",
                ),
                (
                    "request_timeout_ms",
                    c.request_timeout_ms,
                    3_600_000,
                    "an hour",
                ),
                ("send_timeout_ms", c.send_timeout_ms, 3_600_000, "an hour"),
            ] {
                if value > most {
                    return Err(bad(
                        s,
                        key,
                        format!("{key} {value} in [{s}] is more than {unit} ({most})"),
                    ));
                }
            }
            if let Some(r) = &c.replication {
                validate_replication(s, r)
                    .map_err(|(key, message)| bad(&format!("{s}.replication"), key, message))?;
            }
        }
        if let (Some(m), Some(sl)) = (&self.master, &self.slave)
            && let (Some(mr), Some(sr)) = (&m.replication, &sl.replication)
            && mr.listen == sr.listen
        {
            return Err(bad(
                "slave.replication",
                "listen",
                format!(
                    "listen {} in [slave.replication] is already used by [master.replication]",
                    sr.listen
                ),
            ));
        }
        if let (Some(m), Some(sl)) = (&self.master, &self.slave) {
            if m.port != 0 && m.port == sl.port && m.listen == sl.listen {
                return Err(bad(
                    "slave",
                    "port",
                    format!(
                        "port {} in [slave] is already used by [master] on {}",
                        sl.port, sl.listen
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, for `--check-config`.
    /// The effective config as TOML, with secrets written in the config itself (the
    /// replication `secret`, the admin `token`) shown as `HIDDEN`: this output ends up on
    /// terminals, in tickets and in CI logs. Files named by `secret_file` and `token_file`
    /// are shown by path, as they are.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        for cache in [&mut shown.master, &mut shown.slave].into_iter().flatten() {
            if let Some(r) = &mut cache.replication
                && r.secret.is_some()
            {
                r.secret = Some(HIDDEN.into());
            }
        }
        if let Some(a) = &mut shown.admin
            && a.token.is_some()
        {
            a.token = Some(HIDDEN.into());
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// Worker threads for the runtime: the largest any cache role asks for.
    pub fn threads(&self) -> usize {
        self.caches()
            .iter()
            .map(|(_, c)| c.threads())
            .max()
            .unwrap_or(1)
    }
}

fn validate_replication(role: &str, r: &ReplicationConfig) -> Result<(), (&'static str, String)> {
    let section = format!("[{role}.replication]");
    if r.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err((
            "listen",
            format!(
                "listen '{}' in {section} is not an address like 127.0.0.1:11212",
                r.listen
            ),
        ));
    }
    if let Some(peer) = &r.peer {
        let port_ok = peer.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
        if !port_ok {
            return Err((
                "peer",
                format!("peer '{peer}' in {section} is not host:port"),
            ));
        }
    }
    if r.secret.is_some() && r.secret_file.is_some() {
        return Err((
            "secret",
            format!("{section} sets both secret and secret_file; keep one"),
        ));
    }
    if r.secret.as_deref() == Some("") {
        return Err(("secret", format!("secret in {section} is empty")));
    }
    if let Err(e) = r.load_secret() {
        return Err(("secret_file", format!("{e} (in {section})")));
    }
    if r.heartbeat_interval_ms == 0 || r.heartbeat_timeout_ms < 2 * r.heartbeat_interval_ms {
        return Err((
            "heartbeat_timeout_ms",
            format!(
                "heartbeat_timeout_ms {} in {section} must be at least twice heartbeat_interval_ms {} (and the interval above 0)",
                r.heartbeat_timeout_ms, r.heartbeat_interval_ms
            ),
        ));
    }
    if !matches!(r.ack.as_str(), "async" | "sync") {
        return Err((
            "ack",
            format!("ack '{}' in {section} is not async or sync", r.ack),
        ));
    }
    if r.sync_timeout_ms == 0 {
        return Err((
            "sync_timeout_ms",
            format!("sync_timeout_ms 0 in {section} would fail every write"),
        ));
    }
    let rate = parse_size(&r.copy_bytes_per_sec).map_err(|e| {
        (
            "copy_bytes_per_sec",
            format!("copy_bytes_per_sec in {section}: {e}"),
        )
    })?;
    // The copy goes out in chunks of up to 256 KiB and sends no heartbeat between them, so
    // a chunk must leave well within the peer's heartbeat timeout.
    if rate != 0 && rate.saturating_mul(r.heartbeat_timeout_ms) < (1 << 20) * 1000 {
        return Err((
            "copy_bytes_per_sec",
            format!(
                "copy_bytes_per_sec '{}' in {section} is too slow: the peer would time out (heartbeat_timeout_ms {}) between chunks; allow at least 1 MiB per heartbeat timeout",
                r.copy_bytes_per_sec, r.heartbeat_timeout_ms
            ),
        ));
    }
    if r.backlog_mb == 0 {
        return Err((
            "backlog_mb",
            format!("backlog_mb 0 in {section} leaves no room to resume"),
        ));
    }
    if r.reconnect_max_ms == 0 {
        return Err((
            "reconnect_max_ms",
            format!("reconnect_max_ms 0 in {section} would spin"),
        ));
    }
    Ok(())
}

/// repcached's `-x HOST` / `-X PORT` and opsconsole's `--peer`, `--repl-listen`,
/// `--repl-secret-file`: any of them turns replication on for the cache role.
fn apply_replication_cli(c: &mut CacheConfig, args: &RunArgs) {
    let any = args.peer_host.is_some()
        || args.repl_port.is_some()
        || args.peer.is_some()
        || args.repl_listen.is_some()
        || args.repl_secret_file.is_some();
    if !any {
        return;
    }
    let r = c.replication.get_or_insert_with(ReplicationConfig::default);
    if let Some(port) = args.repl_port {
        // -X is the replication port on both ends, as in repcached.
        let host = r
            .listen
            .rsplit_once(':')
            .map_or("127.0.0.1", |(h, _)| h)
            .to_string();
        r.listen = format!("{host}:{port}");
    }
    if let Some(host) = &args.peer_host {
        let port = args.repl_port.unwrap_or(11212);
        r.peer = Some(format!("{host}:{port}"));
    }
    if let Some(peer) = &args.peer {
        r.peer = Some(peer.clone());
    }
    if let Some(listen) = &args.repl_listen {
        r.listen = listen.clone();
    }
    if let Some(file) = &args.repl_secret_file {
        r.secret = None;
        r.secret_file = Some(file.clone());
    }
}

/// A validation failure plus the `[section] key` it is about, so `load` can point at the line.
#[derive(Debug)]
pub struct ValidationError {
    pub error: ConfigError,
    pub locate: Option<Box<Spot>>,
}

impl From<balance::Problem> for ValidationError {
    fn from(p: balance::Problem) -> ValidationError {
        ValidationError {
            error: ConfigError {
                file: None,
                position: None,
                message: p.message,
            },
            locate: Some(Box::new(Spot {
                section: p.section,
                key: p.key.to_string(),
                value: p.value,
            })),
        }
    }
}

/// Where in the file a validation error points.
#[derive(Debug)]
pub struct Spot {
    pub section: String,
    pub key: String,
    /// The bad value, when the line is better found by it than by the key (a server inside
    /// an inline array).
    pub value: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, args: RunArgs) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("opsconsole-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(format!("t{}.toml", text.len()));
        std::fs::write(&path, text).expect("write");
        Config::load(&RunArgs {
            config: Some(path),
            ..args
        })
    }

    #[test]
    fn the_example_master_config_is_valid() {
        let text = include_str!("../../configs/master.toml");
        let cfg = load_text(text, RunArgs::default()).expect("valid");
        assert!(cfg.master.is_some());
        assert!(cfg.slave.is_none());
    }

    #[test]
    fn syntax_errors_name_file_line_and_column() {
        let err =
            load_text("[master]\nport = \"eleven\"\n", RunArgs::default()).expect_err("invalid");
        let text = err.to_string();
        assert!(text.contains(".toml:2:8:"), "{text}");
        assert!(text.contains("invalid type"), "{text}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = load_text("[master]\nprot = 1\n", RunArgs::default()).expect_err("invalid");
        assert!(err.to_string().contains("unknown field `prot`"), "{err}");
        assert_eq!(err.position, Some((2, 1)));
    }

    #[test]
    fn validation_errors_point_at_the_key() {
        let err = load_text(
            "[master]\nport = 1\nmax_item_size = \"huge\"\n",
            RunArgs::default(),
        )
        .expect_err("invalid");
        assert_eq!(err.position, Some((3, 1)));
        assert!(err.to_string().contains("'huge'"), "{err}");
    }

    #[test]
    fn cli_overrides_the_file_and_role_selects_sections() {
        let text = "[master]\nport = 11311\nmemory_limit_mb = 32\n[slave]\nport = 11313\n";
        let args = RunArgs {
            role: vec![Role::Master],
            port: Some(12000),
            ..RunArgs::default()
        };
        let cfg = load_text(text, args).expect("valid");
        let m = cfg.master.expect("master on");
        assert_eq!((m.port, m.memory_limit_mb), (12000, 32));
        assert!(cfg.slave.is_none());
    }

    #[test]
    fn nothing_to_run_is_an_error() {
        let err = Config::load(&RunArgs::default()).expect_err("no roles");
        assert!(err.message.contains("no role to run"));
    }
}
