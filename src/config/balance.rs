//! The balancer sections of the configuration: `[l4]` with its virtual services, and the
//! server and health-check settings every pool shares.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::balance::backend::AdminState;
use crate::balance::select::SchedulerKind;

/// The L4 balancer: virtual services, each a listener over a pool of real servers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct L4Config {
    /// Proxy worker threads, each with its own listener (SO_REUSEPORT) and event loop;
    /// 0 = one per core.
    pub threads: usize,
    /// `[l4.services.NAME]`: the name is how commands and the console address the service.
    pub services: BTreeMap<String, ServiceConfig>,
}

impl L4Config {
    pub fn threads(&self) -> usize {
        threads_or_cores(self.threads)
    }
}

/// A balancer's `threads`: as configured, or one per core for 0.
pub fn threads_or_cores(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// PROXY protocol header sent to the real server before the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendProxy {
    #[default]
    None,
    V1,
    V2,
}

/// How a service moves bytes between client and server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Splice {
    /// Copy through user space until a direction fills a whole buffer in one read (a bulk
    /// transfer), then splice(2) that direction: short exchanges skip the pipe setup, long
    /// ones skip the copies (HAProxy's `option splice-auto`).
    #[default]
    Auto,
    /// splice(2) every direction from the first byte.
    Always,
    /// Always copy through user space.
    Off,
}

/// One virtual service (`[l4.services.NAME]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Where clients connect, `ip:port`.
    pub listen: String,
    /// rr wrr lc wlc sed nq sh mh twos fo ovf (as `ipvsadm -s`), or swrr (nginx's).
    pub scheduler: SchedulerKind,
    /// `sh`/`mh`: hash the client port too.
    pub hash_port: bool,
    /// `sh`/`mh`: when the mapped server is unavailable, take the next one instead of
    /// refusing the client.
    pub hash_fallback: bool,
    /// Seconds a client stays with its server after its last connection (`ipvsadm -p`);
    /// 0 = no persistence.
    pub persistence_timeout_secs: u64,
    /// IPv4 clients in one network share a server (`ipvsadm -M`).
    pub persistence_netmask: String,
    /// The same for IPv6 clients, as a prefix length.
    pub persistence_v6_prefix: u8,
    /// How long a connect to a real server may take before the next one is tried.
    pub connect_timeout_ms: u64,
    /// A connection with no bytes either way for this long is closed (0 = never).
    pub idle_timeout_secs: u64,
    /// Connects to other servers after a failed one.
    pub retries: u32,
    /// `none`, `v1` (text) or `v2` (binary): tell the real server who the client is.
    pub send_proxy: SendProxy,
    /// `auto`, `always` or `off`: kernel-side copying with splice(2) on Linux (elsewhere
    /// bytes always go through user space).
    pub splice: Splice,
    /// Used only when the service is below quorum (no real server can take the client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sorry_server: Option<String>,
    /// Smallest total weight of usable servers with which the service counts as up (as
    /// keepalived). Below it the sorry server, if any, takes new clients.
    pub quorum: u32,
    /// Health checks for every server (absent = servers are taken as up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckConfig>,
    pub servers: Vec<ServerConfig>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: String::new(),
            scheduler: SchedulerKind::Wlc,
            hash_port: false,
            hash_fallback: false,
            persistence_timeout_secs: 0,
            persistence_netmask: "255.255.255.255".into(),
            persistence_v6_prefix: 128,
            connect_timeout_ms: 3000,
            idle_timeout_secs: 900,
            retries: 2,
            send_proxy: SendProxy::None,
            splice: Splice::Auto,
            sorry_server: None,
            quorum: 1,
            check: None,
            servers: Vec::new(),
        }
    }
}

/// One real server in a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `ip:port`.
    pub address: String,
    /// How commands and the console name it (default: the address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// 0-65535; 0 = quiescent.
    pub weight: u32,
    /// Upper connection threshold (0 = none): at it the server takes nothing new.
    pub max_conns: u32,
    /// Lower threshold: below it the server takes connections again (0 = 3/4 of max_conns).
    pub min_conns: u32,
    /// The admin state it starts in: ready, drain or maint.
    pub state: AdminState,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            address: String::new(),
            name: None,
            weight: 1,
            max_conns: 0,
            min_conns: 0,
            state: AdminState::Ready,
        }
    }
}

impl ServerConfig {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.address)
    }
}

/// What a health check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP connect.
    #[default]
    Tcp,
    /// `GET path` with an expected status.
    Http,
    /// `version` gets a `VERSION` reply.
    Memcached,
    /// The server's greeting packet arrives and is not an error.
    Mysql,
}

/// Health checks for a pool (keepalived's checkers, HAProxy's `check`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckConfig {
    #[serde(rename = "type")]
    pub kind: CheckKind,
    pub interval_ms: u64,
    /// HAProxy's `fastinter`: the interval while a server is part way to changing state
    /// (`UP 1/3↓`, `DOWN 1/2↑`), so a verdict comes sooner. 0 = `interval_ms`.
    pub fastinter_ms: u64,
    /// HAProxy's `downinter`: the interval while a server is down. 0 = `interval_ms`.
    pub downinter_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive good checks that bring a server up.
    pub rise: u32,
    /// Consecutive bad checks that take it down.
    pub fall: u32,
    /// Check this port instead of the server's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `http`: the request method (GET, HEAD, OPTIONS, ...).
    pub method: String,
    /// `http`: the path requested.
    pub path: String,
    /// `http`: the Host header (default: the server address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `http`: statuses that pass, e.g. "200-399" or "200,204".
    pub expect_status: String,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            kind: CheckKind::Tcp,
            interval_ms: 2000,
            fastinter_ms: 0,
            downinter_ms: 0,
            timeout_ms: 1000,
            rise: 2,
            fall: 3,
            port: None,
            method: "GET".into(),
            path: "/".into(),
            host: None,
            expect_status: "200-399".into(),
        }
    }
}

/// A server or listen address from a config, which validation has already parsed once.
pub fn address(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Parses "200-399" or "200,204,300-302" into inclusive ranges.
pub fn parse_status_ranges(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let parse = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
        };
        match (parse(lo), parse(hi)) {
            (Some(a), Some(b)) if a <= b => out.push((a, b)),
            _ => {
                return Err(format!(
                    "'{text}' is not a list of statuses or ranges like 200-399 or 200,204"
                ));
            }
        }
    }
    Ok(out)
}

/// Parses an IPv4 netmask such as 255.255.255.0 (contiguous ones only).
pub fn parse_netmask(text: &str) -> Result<u32, String> {
    let ip: std::net::Ipv4Addr = text
        .parse()
        .map_err(|_| format!("'{text}' is not a netmask like 255.255.255.0"))?;
    let bits = u32::from(ip);
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        return Err(format!("'{text}' is not a contiguous netmask"));
    }
    Ok(bits)
}

/// A validation failure inside `[l4...]`: the section, the key, and the bad value to point at.
pub struct Problem {
    pub section: String,
    pub key: &'static str,
    pub value: Option<String>,
    pub message: String,
}

pub fn problem(section: &str, key: &'static str, value: Option<&str>, message: String) -> Problem {
    Problem {
        section: section.to_string(),
        key,
        value: value.map(str::to_string),
        message,
    }
}

pub fn validate_l4(l4: &L4Config) -> Result<(), Problem> {
    validate_threads("l4", l4.threads)?;
    let mut listens: BTreeMap<SocketAddr, &str> = BTreeMap::new();
    for (name, s) in &l4.services {
        let section = format!("l4.services.{name}");
        let here = format!("[{section}]");
        unique_listen(&section, &s.listen, "l4.services", name, &mut listens)?;
        if let Some(sorry) = &s.sorry_server
            && sorry.parse::<SocketAddr>().is_err()
        {
            return Err(problem(
                &section,
                "sorry_server",
                None,
                format!("sorry_server '{sorry}' in {here} is not an address like 127.0.0.1:8080"),
            ));
        }
        parse_netmask(&s.persistence_netmask).map_err(|e| {
            problem(
                &section,
                "persistence_netmask",
                None,
                format!("persistence_netmask in {here}: {e}"),
            )
        })?;
        if s.persistence_v6_prefix > 128 {
            return Err(problem(
                &section,
                "persistence_v6_prefix",
                None,
                format!(
                    "persistence_v6_prefix {} in {here} is more than 128",
                    s.persistence_v6_prefix
                ),
            ));
        }
        if s.connect_timeout_ms == 0 {
            return Err(problem(
                &section,
                "connect_timeout_ms",
                None,
                format!("connect_timeout_ms 0 in {here} would fail every connect"),
            ));
        }
        if s.retries > 16 {
            return Err(problem(
                &section,
                "retries",
                None,
                format!("retries {} in {here} is more than 16", s.retries),
            ));
        }
        if s.servers.is_empty() && s.sorry_server.is_none() {
            return Err(problem(
                &section,
                "servers",
                None,
                format!(
                    "{here} has no servers and no sorry_server: add servers = [{{ address = \"127.0.0.1:8080\" }}]"
                ),
            ));
        }
        validate_servers(&section, &s.servers)?;
        if let Some(c) = &s.check {
            validate_check(&format!("{section}.check"), c)?;
        }
    }
    Ok(())
}

pub fn validate_threads(section: &str, threads: usize) -> Result<(), Problem> {
    if threads > 256 {
        let message = format!("threads {threads} in [{section}] is more than 256");
        return Err(problem(section, "threads", None, message));
    }
    Ok(())
}

/// Parses `section`'s `listen` and checks no other `[family.NAME]` listens there (port 0
/// picks a free port, so it never collides).
pub fn unique_listen<'a>(
    section: &str,
    listen: &str,
    family: &str,
    name: &'a str,
    listens: &mut BTreeMap<SocketAddr, &'a str>,
) -> Result<SocketAddr, Problem> {
    let here = format!("[{section}]");
    let addr: SocketAddr = listen.parse().map_err(|_| {
        let message = format!("listen '{listen}' in {here} is not an address like 127.0.0.1:8000");
        problem(section, "listen", None, message)
    })?;
    if addr.port() != 0
        && let Some(other) = listens.insert(addr, name)
    {
        let message = format!("listen {addr} in {here} is already used by [{family}.{other}]");
        return Err(problem(section, "listen", None, message));
    }
    Ok(addr)
}

pub fn validate_servers(section: &str, servers: &[ServerConfig]) -> Result<(), Problem> {
    let here = format!("[{section}]");
    let mut names = std::collections::BTreeSet::new();
    for s in servers {
        if s.address.parse::<SocketAddr>().is_err() {
            return Err(problem(
                section,
                "servers",
                Some(&s.address),
                format!(
                    "server address '{}' in {here} is not an address like 127.0.0.1:8080",
                    s.address
                ),
            ));
        }
        if s.weight > 65535 {
            return Err(problem(
                section,
                "servers",
                Some(s.name()),
                format!(
                    "weight {} of server '{}' in {here} is more than 65535",
                    s.weight,
                    s.name()
                ),
            ));
        }
        if s.min_conns > s.max_conns {
            return Err(problem(
                section,
                "servers",
                Some(s.name()),
                format!(
                    "min_conns {} of server '{}' in {here} is more than its max_conns {}",
                    s.min_conns,
                    s.name(),
                    s.max_conns
                ),
            ));
        }
        if s.name().contains('/') || s.name().is_empty() {
            return Err(problem(
                section,
                "servers",
                Some(s.name()),
                format!(
                    "server name '{}' in {here} must be non-empty and without '/'",
                    s.name()
                ),
            ));
        }
        if !names.insert(s.name()) {
            return Err(problem(
                section,
                "servers",
                Some(s.name()),
                format!(
                    "server '{}' appears twice in {here} (give each a distinct name)",
                    s.name()
                ),
            ));
        }
    }
    Ok(())
}

pub fn validate_check(section: &str, c: &CheckConfig) -> Result<(), Problem> {
    let here = format!("[{section}]");
    if c.interval_ms < 10 {
        return Err(problem(
            section,
            "interval_ms",
            None,
            format!("interval_ms {} in {here} is less than 10", c.interval_ms),
        ));
    }
    for (key, v) in [
        ("fastinter_ms", c.fastinter_ms),
        ("downinter_ms", c.downinter_ms),
    ] {
        if v != 0 && v < 10 {
            return Err(problem(
                section,
                key,
                None,
                format!("{key} {v} in {here} is less than 10 (0 means interval_ms)"),
            ));
        }
    }
    if c.timeout_ms == 0 || c.timeout_ms > c.interval_ms {
        return Err(problem(
            section,
            "timeout_ms",
            None,
            format!(
                "timeout_ms {} in {here} must be more than 0 and at most interval_ms {}",
                c.timeout_ms, c.interval_ms
            ),
        ));
    }
    for (key, v) in [("rise", c.rise), ("fall", c.fall)] {
        if !(1..=100).contains(&v) {
            return Err(problem(
                section,
                key,
                None,
                format!("{key} {v} in {here} must be between 1 and 100"),
            ));
        }
    }
    if c.kind == CheckKind::Http {
        parse_status_ranges(&c.expect_status).map_err(|e| {
            problem(
                section,
                "expect_status",
                None,
                format!("expect_status in {here}: {e}"),
            )
        })?;
        if c.method.is_empty() || !c.method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(problem(
                section,
                "method",
                Some(&c.method),
                format!(
                    "method '{}' in {here} is not an HTTP method like GET, HEAD or OPTIONS",
                    c.method
                ),
            ));
        }
        if !c.path.starts_with('/') || c.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(problem(
                section,
                "path",
                None,
                format!(
                    "path '{}' in {here} must start with / and hold no spaces or control characters",
                    c.path
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges_and_netmasks_parse() {
        assert_eq!(parse_status_ranges("200-399"), Ok(vec![(200, 399)]));
        assert_eq!(
            parse_status_ranges("200, 204,301-302"),
            Ok(vec![(200, 200), (204, 204), (301, 302)])
        );
        assert!(parse_status_ranges("399-200").is_err());
        assert!(parse_status_ranges("2xx").is_err());
        assert_eq!(parse_netmask("255.255.255.0"), Ok(0xFFFF_FF00));
        assert_eq!(parse_netmask("0.0.0.0"), Ok(0));
        assert!(parse_netmask("255.0.255.0").is_err());
    }
}
