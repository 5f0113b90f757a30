//! The `[l7]` section: HTTP listeners with their routes, and the pools they send to.
//! Servers and health checks are the same as L4's (`ServerConfig`, `CheckConfig`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::balance::{
    CheckConfig, L4Config, Problem, ServerConfig, problem, threads_or_cores, unique_listen,
    validate_check, validate_servers, validate_threads,
};
use crate::balance::l7::access_log::AccessLogConfig;
use crate::balance::l7::route::{Route, RouteTable};
use crate::balance::passive::PassiveConfig;
use crate::balance::select::SchedulerKind;

/// The L7 balancer: listeners (where clients connect, and how requests are routed) over
/// pools (servers and how one is chosen).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct L7Config {
    /// Proxy worker threads, each with its own listeners and upstream connections;
    /// 0 = one per core.
    pub threads: usize,
    pub listeners: BTreeMap<String, ListenerConfig>,
    pub pools: BTreeMap<String, PoolConfig>,
}

/// `[l7.listeners.NAME]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    pub listen: String,
    /// Open client connections at most (0 = no limit). At the limit the connection idle
    /// longest (no request in flight, no request head begun) is closed to let the next
    /// client in, as nginx reuses keep-alive connections; with none idle, further clients
    /// wait in the kernel's backlog.
    pub max_conns: u32,
    /// Request line and headers together at most; beyond it the client gets 431.
    pub max_header_bytes: usize,
    /// The request target at most; beyond it the client gets 414.
    pub max_uri_bytes: usize,
    /// A client must send its whole request head within this of its first byte (slowloris),
    /// and the first byte of its first request within this of connecting.
    pub client_header_timeout_ms: u64,
    /// A request body that stops arriving for this long (nothing read from the client while
    /// the proxy waits for more) ends the request with 408 (nginx's `client_body_timeout`).
    pub client_body_timeout_ms: u64,
    /// A response the client stops reading for this long (a write to it makes no progress)
    /// closes the connection (nginx's `send_timeout`, HAProxy's `timeout client`).
    pub client_send_timeout_ms: u64,
    /// A kept-alive client connection with no request for this long is closed (0 = never).
    pub idle_timeout_secs: u64,
    /// A header carrying a request id to servers and back to the client (e.g.
    /// `X-Request-Id`): kept when the client sent one, else made up. Absent = none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id_header: Option<String>,
    /// One line per request, to its own rolling file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogConfig>,
    /// Host and path prefix → pool, nginx's way.
    pub routes: Vec<RouteConfig>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            listen: String::new(),
            max_conns: 0,
            max_header_bytes: 64 * 1024,
            max_uri_bytes: 8 * 1024,
            client_header_timeout_ms: 10_000,
            client_body_timeout_ms: 60_000,
            client_send_timeout_ms: 60_000,
            idle_timeout_secs: 60,
            request_id_header: None,
            access_log: None,
            routes: Vec::new(),
        }
    }
}

/// One route: `host` (exact, `*.leading`, `trailing.*`, or absent for the default host),
/// a path prefix, and the pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default = "root")]
    pub path: String,
    pub pool: String,
}

fn root() -> String {
    "/".into()
}

/// How a pool picks a server for a request (HAProxy's `balance` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Smooth weighted round robin; weights change at runtime.
    #[default]
    Roundrobin,
    /// Fewest active requests per weight.
    Leastconn,
    /// Two weighted random picks, the less loaded wins.
    Random,
    /// A hash of the client address.
    Source,
    /// A hash of the path and query.
    Uri,
    /// A hash of one query parameter (`hash_key`); requests without it hash the client
    /// address.
    UrlParam,
    /// A hash of one header (`hash_key`); requests without it hash the client address.
    Hdr,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Roundrobin => "roundrobin",
            Algorithm::Leastconn => "leastconn",
            Algorithm::Random => "random",
            Algorithm::Source => "source",
            Algorithm::Uri => "uri",
            Algorithm::UrlParam => "url_param",
            Algorithm::Hdr => "hdr",
        }
    }

    pub fn is_hash(self) -> bool {
        matches!(
            self,
            Algorithm::Source | Algorithm::Uri | Algorithm::UrlParam | Algorithm::Hdr
        )
    }

    /// The shared scheduler that implements it: the hashes map through `sh`'s weighted
    /// buckets (map-based) or a Maglev table (consistent).
    pub fn scheduler(self, hash_type: HashType) -> SchedulerKind {
        match (self, hash_type) {
            (Algorithm::Roundrobin, _) => SchedulerKind::Swrr,
            (Algorithm::Leastconn, _) => SchedulerKind::Wlc,
            (Algorithm::Random, _) => SchedulerKind::Twos,
            (_, HashType::MapBased) => SchedulerKind::Sh,
            (_, HashType::Consistent) => SchedulerKind::Mh,
        }
    }
}

/// How a hash maps to a server (HAProxy's `hash-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashType {
    /// Weighted buckets: even, but a change of servers remaps most keys.
    #[default]
    MapBased,
    /// Maglev: a server leaving moves only its own keys.
    Consistent,
}

/// `[l7.pools.NAME]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    pub algorithm: Algorithm,
    /// `url_param`: the parameter; `hdr`: the header name.
    pub hash_key: String,
    pub hash_type: HashType,
    pub connect_timeout_ms: u64,
    /// From the request sent to the response head received.
    pub response_timeout_ms: u64,
    /// An upgraded connection (WebSocket) with no bytes either way for this long is closed
    /// (HAProxy's `timeout tunnel`); 0 = never.
    pub tunnel_timeout_secs: u64,
    /// Further tries on other servers after a failed one.
    pub retries: u32,
    /// Retry a 502/503/504 or a timeout for POST and other non-idempotent methods too.
    pub retry_non_idempotent: bool,
    /// Cookie persistence (HAProxy's `cookie NAME insert indirect nocache`): a client
    /// without the cookie gets one naming its server; with it, it stays on that server while
    /// the server is usable. The cookie never reaches the servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckConfig>,
    /// Passive health: servers whose requests fail are taken out for a while.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveConfig>,
    /// HAProxy's `slowstart`: a server back from down, maintenance or an ejection gets a
    /// share of new requests that grows from nothing to its weight over this long; 0 = off.
    /// roundrobin, leastconn and random only (a hash keeps its mapping).
    pub slow_start_ms: u64,
    /// How long a request waits for a free slot when every usable server is at its
    /// `max_conns` (HAProxy's `timeout queue`); then 503. 0 = no wait.
    pub queue_timeout_ms: u64,
    /// Consistent hashing with bounded loads (HAProxy's `hash-balance-factor`): a server
    /// takes at most this percent of the average active requests, the rest go to the next
    /// server in the table. 0 = off; else more than 100.
    pub hash_balance_factor: u32,
    pub servers: Vec<ServerConfig>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            algorithm: Algorithm::Roundrobin,
            hash_key: String::new(),
            hash_type: HashType::MapBased,
            connect_timeout_ms: 3000,
            response_timeout_ms: 30_000,
            tunnel_timeout_secs: 3600,
            retries: 2,
            retry_non_idempotent: false,
            cookie: None,
            check: None,
            passive: None,
            slow_start_ms: 0,
            queue_timeout_ms: 3000,
            hash_balance_factor: 0,
            servers: Vec::new(),
        }
    }
}

impl L7Config {
    pub fn threads(&self) -> usize {
        threads_or_cores(self.threads)
    }

    /// The routes of `listener` as the route table takes them (pool names as indexes into
    /// `pools`, in name order).
    pub fn routes(&self, listener: &ListenerConfig) -> Vec<Route> {
        listener
            .routes
            .iter()
            .map(|r| Route {
                host: r.host.clone(),
                path: r.path.clone(),
                pool: self.pools.keys().position(|p| *p == r.pool).unwrap_or(0),
            })
            .collect()
    }
}

/// The longest any timeout may be. Timeouts are added to clock readings, and a deadline
/// past what the clock can hold would panic the worker that computed it.
const DAY_MS: u64 = 86_400_000;

pub fn validate_l7(l7: &L7Config, l4: Option<&L4Config>) -> Result<(), Problem> {
    validate_threads("l7", l7.threads)?;
    if l7.listeners.is_empty() {
        let message = "[l7] has no listeners: add [l7.listeners.NAME] with listen and routes";
        return Err(problem("l7", "listeners", None, message.into()));
    }
    let mut listens: BTreeMap<SocketAddr, &str> = BTreeMap::new();
    let mut logs: BTreeMap<std::path::PathBuf, &str> = BTreeMap::new();
    for (name, l) in &l7.listeners {
        let section = format!("l7.listeners.{name}");
        let here = format!("[{section}]");
        unique_listen(&section, &l.listen, "l7.listeners", name, &mut listens)?;
        if !(8 * 1024..=1024 * 1024).contains(&l.max_header_bytes) {
            let message = format!(
                "max_header_bytes {} in {here} is not between 8192 and 1048576",
                l.max_header_bytes
            );
            return Err(problem(&section, "max_header_bytes", None, message));
        }
        if l.max_uri_bytes == 0 || l.max_uri_bytes > l.max_header_bytes {
            let message = format!(
                "max_uri_bytes {} in {here} must be between 1 and max_header_bytes ({})",
                l.max_uri_bytes, l.max_header_bytes
            );
            return Err(problem(&section, "max_uri_bytes", None, message));
        }
        for (key, value, zero) in [
            (
                "client_header_timeout_ms",
                l.client_header_timeout_ms,
                "would refuse every request",
            ),
            (
                "client_body_timeout_ms",
                l.client_body_timeout_ms,
                "would refuse every request body",
            ),
            (
                "client_send_timeout_ms",
                l.client_send_timeout_ms,
                "would cut off every response that fills the socket",
            ),
        ] {
            if value == 0 {
                let message = format!("{key} 0 in {here} {zero}");
                return Err(problem(&section, key, None, message));
            }
            if value > DAY_MS {
                let message = format!("{key} {value} in {here} is more than {DAY_MS} (a day)");
                return Err(problem(&section, key, None, message));
            }
        }
        if l.idle_timeout_secs > DAY_MS / 1000 {
            let message = format!(
                "idle_timeout_secs {} in {here} is more than {} (a day)",
                l.idle_timeout_secs,
                DAY_MS / 1000
            );
            return Err(problem(&section, "idle_timeout_secs", None, message));
        }
        if let Some(h) = &l.request_id_header
            && hyper::header::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            let message = format!("request_id_header '{h}' in {here} is not a header name");
            return Err(problem(&section, "request_id_header", Some(h), message));
        }
        if let Some(a) = &l.access_log {
            validate_access_log(&section, a)?;
            let path = a.dir.join(&a.file);
            if let Some(other) = logs.insert(path.clone(), name) {
                let message = format!(
                    "access_log {} in {here} is also [l7.listeners.{other}]'s: give each listener its own file",
                    path.display()
                );
                return Err(problem(&section, "access_log", None, message));
            }
        }
        if l.routes.is_empty() {
            let message =
                format!("{here} has no routes: add routes = [{{ path = \"/\", pool = \"web\" }}]");
            return Err(problem(&section, "routes", None, message));
        }
        if let Some(r) = l.routes.iter().find(|r| !l7.pools.contains_key(&r.pool)) {
            let message = format!(
                "route to pool '{}' in {here}: there is no [l7.pools.{}]",
                r.pool, r.pool
            );
            return Err(problem(&section, "routes", Some(&r.pool), message));
        }
        RouteTable::new(&l7.routes(l))
            .map_err(|e| problem(&section, "routes", None, format!("{e} (in {here})")))?;
    }
    for (name, p) in &l7.pools {
        let section = format!("l7.pools.{name}");
        let here = format!("[{section}]");
        if l4.is_some_and(|l4| l4.services.contains_key(name)) {
            let message = format!(
                "{here} has the name of an L4 service: commands address both as {name}/SERVER, so the names must differ"
            );
            return Err(problem(&section, "servers", None, message));
        }
        if matches!(p.algorithm, Algorithm::UrlParam | Algorithm::Hdr) && p.hash_key.is_empty() {
            let message = format!(
                "algorithm '{}' in {here} needs hash_key: the {} to hash",
                p.algorithm.name(),
                if p.algorithm == Algorithm::Hdr {
                    "header"
                } else {
                    "query parameter"
                }
            );
            return Err(problem(&section, "hash_key", None, message));
        }
        if p.algorithm == Algorithm::Hdr
            && hyper::header::HeaderName::from_bytes(p.hash_key.as_bytes()).is_err()
        {
            let message = format!("hash_key '{}' in {here} is not a header name", p.hash_key);
            return Err(problem(&section, "hash_key", None, message));
        }
        for (key, value) in [
            ("connect_timeout_ms", p.connect_timeout_ms),
            ("response_timeout_ms", p.response_timeout_ms),
        ] {
            if value == 0 {
                let message = format!("{key} 0 in {here} would fail every request");
                return Err(problem(&section, key, None, message));
            }
            if value > DAY_MS {
                let message = format!("{key} {value} in {here} is more than {DAY_MS} (a day)");
                return Err(problem(&section, key, None, message));
            }
        }
        if p.tunnel_timeout_secs > DAY_MS / 1000 {
            let message = format!(
                "tunnel_timeout_secs {} in {here} is more than {} (a day)",
                p.tunnel_timeout_secs,
                DAY_MS / 1000
            );
            return Err(problem(&section, "tunnel_timeout_secs", None, message));
        }
        if let Some(name) = &p.cookie
            && (name.is_empty() || !name.bytes().all(is_token_byte))
        {
            let message = format!(
                "cookie '{name}' in {here} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)"
            );
            return Err(problem(&section, "cookie", Some(name), message));
        }
        if p.cookie.is_some()
            && let Some(s) = p
                .servers
                .iter()
                .find(|s| !s.name().bytes().all(is_cookie_value_byte))
        {
            let message = format!(
                "server name '{}' in {here} cannot be a cookie value (no spaces, quotes, commas, semicolons or backslashes): give it a name",
                s.name()
            );
            return Err(problem(&section, "servers", Some(s.name()), message));
        }
        if p.retries > 16 {
            let message = format!("retries {} in {here} is more than 16", p.retries);
            return Err(problem(&section, "retries", None, message));
        }
        if p.servers.is_empty() {
            let message = format!(
                "{here} has no servers: add servers = [{{ address = \"127.0.0.1:8081\" }}]"
            );
            return Err(problem(&section, "servers", None, message));
        }
        validate_servers(&section, &p.servers)?;
        if let Some(s) = p.servers.iter().find(|s| s.min_conns != 0) {
            let message = format!(
                "min_conns on server '{}' in {here} is for L4 services: an L7 server takes requests again as soon as it is below max_conns",
                s.name()
            );
            return Err(problem(&section, "servers", Some(s.name()), message));
        }
        if let Some(c) = &p.check {
            validate_check(&format!("{section}.check"), c)?;
        }
        if let Some(passive) = &p.passive {
            validate_passive(&section, passive)?;
        }
        for (key, value, max) in [
            ("slow_start_ms", p.slow_start_ms, 3_600_000),
            ("queue_timeout_ms", p.queue_timeout_ms, 3_600_000),
        ] {
            if value > max {
                let message = format!("{key} {value} in {here} is more than {max} (an hour)");
                return Err(problem(&section, key, None, message));
            }
        }
        if p.hash_balance_factor != 0 && p.hash_balance_factor <= 100 {
            let message = format!(
                "hash_balance_factor {} in {here} must be more than 100 (a percent of the average load), or 0 for off",
                p.hash_balance_factor
            );
            return Err(problem(&section, "hash_balance_factor", None, message));
        }
        if p.hash_balance_factor != 0
            && !(p.algorithm.is_hash() && p.hash_type == HashType::Consistent)
        {
            let message = format!(
                "hash_balance_factor in {here} bounds a consistent hash: set hash_type = \"consistent\" and a hash algorithm"
            );
            return Err(problem(&section, "hash_balance_factor", None, message));
        }
    }
    Ok(())
}

fn validate_access_log(section: &str, a: &AccessLogConfig) -> Result<(), Problem> {
    let here = format!("access_log in [{section}]");
    if a.file.is_empty() || a.file.contains('/') {
        let message = format!(
            "file '{}' in {here} must be a file name (the directory is dir)",
            a.file
        );
        return Err(problem(section, "access_log", Some(&a.file), message));
    }
    if crate::logging::parse_rotation(&a.rotation).is_none() {
        let message = format!(
            "rotation '{}' in {here} is not one of minutely, hourly, daily, never",
            a.rotation
        );
        return Err(problem(section, "access_log", Some(&a.rotation), message));
    }
    Ok(())
}

fn validate_passive(section: &str, p: &PassiveConfig) -> Result<(), Problem> {
    let here = format!("passive in [{section}]");
    if p.max_fails == 0 && p.consecutive_errors == 0 {
        let message =
            format!("{here} has neither max_fails nor consecutive_errors: it would never act");
        return Err(problem(section, "passive", None, message));
    }
    if p.max_fails > 0 && p.fail_timeout_ms == 0 {
        let message = format!("fail_timeout_ms 0 in {here}: max_fails needs a window");
        return Err(problem(section, "passive", None, message));
    }
    if p.consecutive_errors > 0 && (p.eject_ms == 0 || p.eject_max_ms < p.eject_ms) {
        let message = format!(
            "eject_ms {} and eject_max_ms {} in {here}: eject_ms must be above 0 and eject_max_ms at least eject_ms",
            p.eject_ms, p.eject_max_ms
        );
        return Err(problem(section, "passive", None, message));
    }
    Ok(())
}

/// RFC 9110 token characters (a cookie name).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 6265 cookie-octet (a cookie value).
fn is_cookie_value_byte(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> L7Config {
        toml::from_str(text).expect("parses")
    }

    const GOOD: &str = r#"
[listeners.main]
listen = "127.0.0.1:8080"
routes = [
  { host = "www.example.com", path = "/api/", pool = "api" },
  { path = "/", pool = "web" },
]
[pools.web]
servers = [{ address = "127.0.0.1:8081" }]
[pools.api]
algorithm = "url_param"
hash_key = "user"
hash_type = "consistent"
servers = [{ address = "127.0.0.1:8082" }]
"#;

    #[test]
    fn a_good_config_validates_and_routes_name_pools_by_index() {
        let c = parse(GOOD);
        assert!(validate_l7(&c, None).is_ok(), "valid");
        let routes = c.routes(&c.listeners["main"]);
        // Pools are indexed in name order: api = 0, web = 1.
        assert_eq!(routes.iter().map(|r| r.pool).collect::<Vec<_>>(), [0, 1]);
        let api = &c.pools["api"];
        assert_eq!(api.algorithm.scheduler(api.hash_type), SchedulerKind::Mh);
        assert_eq!(
            Algorithm::Roundrobin.scheduler(HashType::MapBased),
            SchedulerKind::Swrr
        );
        let listener = &c.listeners["main"];
        assert_eq!(
            (listener.max_header_bytes, listener.max_uri_bytes),
            (65536, 8192)
        );
    }

    fn problem_with(text: &str) -> Problem {
        validate_l7(&parse(text), None).expect_err("refused")
    }

    #[test]
    fn mistakes_are_refused_naming_the_section_and_key() {
        let p = problem_with(&GOOD.replace("pool = \"api\"", "pool = \"apx\""));
        assert_eq!((p.section.as_str(), p.key), ("l7.listeners.main", "routes"));
        assert!(p.message.contains("no [l7.pools.apx]"), "{}", p.message);
        let p = problem_with(&GOOD.replace("hash_key = \"user\"", ""));
        assert_eq!((p.section.as_str(), p.key), ("l7.pools.api", "hash_key"));
        let p = problem_with(&GOOD.replace("path = \"/api/\"", "path = \"api\""));
        assert!(p.message.contains("must start with /"), "{}", p.message);
        let p = problem_with(&GOOD.replace(
            "listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:8080\"\nmax_header_bytes = 100",
        ));
        assert_eq!(p.key, "max_header_bytes");
        for key in [
            "client_header_timeout_ms",
            "client_body_timeout_ms",
            "client_send_timeout_ms",
        ] {
            for bad in ["0", "86400001"] {
                let p = problem_with(&GOOD.replace(
                    "listen = \"127.0.0.1:8080\"",
                    &format!("listen = \"127.0.0.1:8080\"\n{key} = {bad}"),
                ));
                assert_eq!((p.section.as_str(), p.key), ("l7.listeners.main", key));
                assert!(
                    p.message
                        .contains(&format!("{key} {bad} in [l7.listeners.main]")),
                    "{}",
                    p.message
                );
            }
        }
        let p = problem_with(&GOOD.replace(
            "listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:8080\"\nidle_timeout_secs = 18446744073709551615",
        ));
        assert_eq!(p.key, "idle_timeout_secs");
        let p = problem_with(
            &GOOD.replace("[pools.web]", "[pools.web]\nresponse_timeout_ms = 86400001"),
        );
        assert_eq!(
            (p.section.as_str(), p.key),
            ("l7.pools.web", "response_timeout_ms")
        );
        let p =
            problem_with(&GOOD.replace("[pools.web]", "[pools.web]\ntunnel_timeout_secs = 86401"));
        assert_eq!(
            (p.section.as_str(), p.key),
            ("l7.pools.web", "tunnel_timeout_secs")
        );
        let p = problem_with(&GOOD.replace("127.0.0.1:8081", "nowhere"));
        assert_eq!((p.section.as_str(), p.key), ("l7.pools.web", "servers"));
    }

    #[test]
    fn a_pool_may_not_share_a_name_with_an_l4_service() {
        let l4: L4Config = toml::from_str(
            "[services.web]\nlisten = \"127.0.0.1:0\"\nservers = [{ address = \"127.0.0.1:1\" }]",
        )
        .expect("l4 parses");
        let p = validate_l7(&parse(GOOD), Some(&l4)).expect_err("refused");
        assert!(p.message.contains("L4 service"), "{}", p.message);
    }

    #[test]
    fn unknown_keys_and_algorithms_do_not_parse() {
        assert!(toml::from_str::<L7Config>("[pools.web]\nalgorithm = \"fastest\"").is_err());
        assert!(toml::from_str::<L7Config>("[pools.web]\nbalance = \"uri\"").is_err());
    }
}
