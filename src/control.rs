//! The control surface: plain-data snapshots of every engine and the commands an operator can
//! issue. The console, the headless status line, the admin API and `opsconsole ctl` all go through
//! these types, so each action has exactly one code path.

use serde::{Deserialize, Serialize};

use crate::balance::backend::AdminState;
use crate::balance::health::Phase;
use crate::replication::shared::Status;

/// Everything an operator can see about a node at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    /// Unix milliseconds when the snapshot was taken (rates are deltas over this).
    pub at_ms: u64,
    pub caches: Vec<CacheSnapshot>,
    /// The demo's traffic generator, when it runs.
    pub traffic: Option<TrafficSnapshot>,
    /// The L4 balancer's virtual services, when it runs.
    pub l4: Option<Vec<ServiceSnapshot>>,
    /// The demo's HTTP app servers.
    #[serde(default)]
    pub apps: Vec<AppServerSnapshot>,
    /// The L7 balancer's listeners and pools, when it runs.
    #[serde(default)]
    pub l7: Option<L7Snapshot>,
}

/// The HTTP proxy: where clients come in, and the pools requests go to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct L7Snapshot {
    pub listeners: Vec<ListenerSnapshot>,
    pub pools: Vec<PoolSnapshot>,
}

/// An L7 listener and its routes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListenerSnapshot {
    pub name: String,
    pub listen: String,
    /// Client connections open now.
    pub active_conns: u64,
    pub total_conns: u64,
    /// Requests no route matched (answered 404).
    pub no_route: u64,
    /// Requests refused before routing: 414, or 400 for a request without a usable Host.
    pub rejected: u64,
    pub routes: Vec<RouteSnapshot>,
}

/// One route (host and path prefix to a pool) and what went through it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteSnapshot {
    /// `None`: the default host.
    pub host: Option<String>,
    pub path: String,
    pub pool: String,
    pub http: HttpStats,
}

/// An L7 pool: its servers and what it did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolSnapshot {
    pub name: String,
    /// HAProxy's `balance` name, with the hash type for hashes.
    pub algorithm: String,
    /// Requests in flight to its servers.
    pub active: u64,
    /// Further tries after a failed connect or a retried response.
    pub retries: u64,
    /// Requests that ended on another server than the first one picked.
    pub redispatches: u64,
    /// Requests answered 503 because no server could take them.
    pub no_server: u64,
    /// Requests waiting now for a server below its max_conns.
    #[serde(default)]
    pub queued: u64,
    /// Requests refused with 503: no server was below its max_conns within the queue
    /// timeout.
    #[serde(default)]
    pub queue_timeouts: u64,
    /// Summed over its servers, percentiles over all their responses.
    pub http: HttpStats,
    pub servers: Vec<ServerSnapshot>,
}

/// HTTP counters of a server, route or pool. Latency is the upstream response time (request
/// sent to response head received) over the last 10 to 20 seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpStats {
    pub requests: u64,
    /// Responses by class, 1xx to 5xx.
    pub responses: [u64; 5],
    /// Sent requests that got no usable response (reset, timeout, malformed).
    pub response_errors: u64,
    pub p50_us: Option<u64>,
    pub p90_us: Option<u64>,
    pub p99_us: Option<u64>,
    /// Every upstream response time since start, per bucket of
    /// `balance::http_stats::HISTOGRAM_BOUNDS_US` (one more for the rest); servers only.
    #[serde(default)]
    pub latency_buckets: Vec<u64>,
    #[serde(default)]
    pub latency_sum_us: u64,
}

/// One of the demo's HTTP app servers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppServerSnapshot {
    pub name: String,
    pub address: String,
    /// False after a kill, until it is revived.
    pub running: bool,
    pub requests: u64,
    /// Added before each answer (not to `/health`).
    #[serde(default)]
    pub latency_ms: u64,
    /// Share of answers that are errors on purpose, half `500`, half `503` (not `/health`).
    #[serde(default)]
    pub error_percent: u8,
    /// Errors answered on purpose so far.
    #[serde(default)]
    pub errors: u64,
}

/// A balanced service (an L4 virtual service) and its servers: what `ipvsadm -L --stats`
/// and HAProxy's stats page show. Counters are totals; rates are deltas between snapshots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceSnapshot {
    pub name: String,
    pub listen: String,
    pub scheduler: String,
    /// Seconds a client sticks to its server (0 = no persistence).
    pub persistence_secs: u64,
    /// Enough usable weight to meet the quorum.
    pub quorum_met: bool,
    pub active: u64,
    pub inactive: u64,
    pub total_conns: u64,
    /// Client to server.
    pub bytes_in: u64,
    /// Server to client.
    pub bytes_out: u64,
    pub connect_errors: u64,
    pub retries: u64,
    /// Clients turned away: no server could take them.
    pub no_server: u64,
    pub servers: Vec<ServerSnapshot>,
    pub sorry_server: Option<ServerSnapshot>,
}

/// One real server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerSnapshot {
    pub name: String,
    pub address: String,
    pub admin: AdminState,
    pub health: Phase,
    /// Health checks run for it.
    pub checked: bool,
    pub weight: u32,
    pub configured_weight: u32,
    pub active: u32,
    pub inactive: u32,
    pub total_conns: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connect_errors: u64,
    pub retries: u64,
    /// At its max_conns threshold: takes nothing new.
    pub overloaded: bool,
    /// Draining or in maintenance with no connection left: safe to remove.
    pub removable: bool,
    /// The last check, e.g. `L7OK 200`.
    pub check_status: Option<String>,
    pub check_duration_us: Option<u64>,
    /// Unix ms of the last change of admin state or health.
    pub state_since_ms: u64,
    /// Part way through a slow start: the percent of its share it gets now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start_pct: Option<u32>,
    /// Taken out by passive health (its requests failed): back in this many ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ejected_for_ms: Option<u64>,
    /// Passive ejections so far.
    #[serde(default)]
    pub ejections: u64,
    /// HTTP counters, for a server behind the L7 balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpStats>,
}

impl ServerSnapshot {
    /// How an operator reads its state: MAINT, DRAIN, DOWN, UP, or going up/down n/m.
    pub fn state_label(&self) -> String {
        match self.admin {
            AdminState::Maint => "MAINT".into(),
            _ if self.ejected_for_ms.is_some() && self.health.is_up() => "EJECTED".into(),
            AdminState::Drain if self.health.is_up() => "DRAIN".into(),
            _ => self.health.label(),
        }
    }
}

/// A weight change, as `ipvsadm -e -w` or HAProxy's `set weight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightChange {
    Set(u32),
    /// Relative: +1, -10 (clamped to 0-65535).
    Add(i32),
    /// Back to the configured weight.
    Restore,
}

/// The demo's traffic generator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficSnapshot {
    pub paused: bool,
    /// Requests per second it aims for.
    pub rate_per_sec: u32,
    pub requests: u64,
    /// Requests that failed (a node down, a refused connection).
    pub errors: u64,
    /// HTTP requests per second it aims for through the L4 web service (0: none).
    pub http_rate_per_sec: u32,
    pub http_requests: u64,
    /// HTTP requests that got no `200`.
    pub http_errors: u64,
}

/// One cache engine's counters and gauges (memcached's stat names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheSnapshot {
    pub role: String,
    pub listen: String,
    /// The engine is not running (the demo stopped it).
    pub stopped: bool,
    /// The cache role in this same process it replicates with (the demo's pair), if any.
    pub local_peer: Option<String>,
    pub curr_items: u64,
    pub total_items: u64,
    pub bytes: u64,
    pub limit_maxbytes: u64,
    pub evictions: u64,
    pub reclaimed: u64,
    pub curr_connections: u64,
    pub total_connections: u64,
    pub rejected_connections: u64,
    pub cmd_get: u64,
    pub cmd_set: u64,
    pub cmd_touch: u64,
    pub get_hits: u64,
    pub get_misses: u64,
    pub delete_hits: u64,
    pub delete_misses: u64,
    pub incr_hits: u64,
    pub decr_hits: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Connections closed for `idle_timeout_secs`, `request_timeout_ms` and
    /// `send_timeout_ms`: a rise is slow or stuck clients, or a timeout set too short.
    #[serde(default)]
    pub idle_kicks: u64,
    #[serde(default)]
    pub request_timeouts: u64,
    #[serde(default)]
    pub send_timeouts: u64,
    /// Present when the cache replicates with a peer.
    pub replication: Option<ReplicationSnapshot>,
}

/// A replicating cache's link, roles, copy progress and counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicationSnapshot {
    pub node_id: String,
    pub listen: String,
    /// False while a slave's copy of the master's data is incomplete.
    pub serving: bool,
    /// This node's changes the peer has not yet applied.
    pub lag_bytes: u64,
    pub backlog_bytes: u64,
    pub heartbeat_age_ms: Option<u64>,
    pub items_sent: u64,
    pub bytes_sent: u64,
    pub items_received: u64,
    pub bytes_received: u64,
    pub full_resyncs: u64,
    pub partial_resyncs: u64,
    pub conflicts: u64,
    pub links_refused: u64,
    pub link_losses: u64,
    pub sync_failures: u64,
    pub status: Status,
}

impl CacheSnapshot {
    /// Hits over lookups, or `None` before the first lookup.
    pub fn hit_ratio(&self) -> Option<f64> {
        let lookups = self.get_hits + self.get_misses;
        (lookups > 0).then(|| self.get_hits as f64 / lookups as f64)
    }
}

/// Actions on a node. Each variant is one operator action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Command {
    /// Send raw memcached protocol text to a cache role's engine and return the raw reply
    /// (the key tester). Runs through the same parser and executor as network clients.
    CacheRequest { role: String, request: String },
    /// Sever a cache role's replication link and refuse it for `hold_ms` (failover drill).
    KillPeer { role: String, hold_ms: u64 },
    /// Lift a hold so the link comes back.
    RevivePeer { role: String },
    /// Planned switchover, sent to the master: it hands the master role to its slave without
    /// losing a write (writes pause until the slave has them all).
    Switchover { role: String },
    /// Pause or resume the demo's traffic generator.
    PauseTraffic { paused: bool },
    /// Kill (close its port, drop its connections) or revive one of the demo's app servers.
    SetAppServer { name: String, running: bool },
    /// Make one of the demo's app servers slow or failing: a latency added to every answer
    /// and a share of answers that are `500`/`503`. `/health` is never slowed or failed, so
    /// checks keep passing and what the balancer does about it shows. Absent: unchanged.
    SetAppBehaviour {
        name: String,
        #[serde(default)]
        latency_ms: Option<u64>,
        #[serde(default)]
        error_percent: Option<u8>,
    },
    /// Set a balanced server's admin state: ready, drain or maint.
    SetServerState {
        pool: String,
        server: String,
        state: AdminState,
    },
    /// Change a balanced server's weight.
    SetWeight {
        pool: String,
        server: String,
        change: WeightChange,
    },
    /// Read the config file again and apply it, as SIGHUP does (the balancers' sections;
    /// cache settings need a restart). Refused, the running config staying, when the new
    /// one does not load or validate.
    Reload,
}

/// The reply to a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReply {
    pub output: String,
}

/// Something that can be watched and steered: the local node, or a remote one through its
/// admin API.
pub trait Control {
    /// The newest state. Never waits on the network: a remote control answers with the
    /// last snapshot it fetched.
    fn snapshot(&self) -> Snapshot;
    fn act(&self, command: Command) -> Result<CommandReply, String>;
    /// How the node is reached, for a node in another process; `None` for the node in this
    /// process, which cannot be lost.
    fn remote_link(&self) -> Option<RemoteLink> {
        None
    }
}

/// The console's link to a remote node at one instant, ready to show: how long it has been
/// in its phase, why it failed, and how old the snapshot on screen is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteLink {
    /// The node's admin API, `host:port`.
    pub address: String,
    pub phase: RemotePhase,
    /// Time spent in this phase so far.
    pub for_ms: u64,
    /// Why the last try failed (down, token refused, or still connecting after a failure).
    pub error: Option<String>,
    /// Until the next try, while the node is not reached.
    pub retry_in_ms: Option<u64>,
    /// Age of the snapshot on screen; `None` before the first one arrived.
    pub snapshot_age_ms: Option<u64>,
    /// How long the link was down before it came back (after a reconnect).
    pub last_outage_ms: Option<u64>,
}

/// Where a link to a remote node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemotePhase {
    /// No answer yet: the first try is under way.
    Connecting,
    /// Snapshots arrive.
    Up,
    /// The node does not answer (refused, timed out, unexpected reply); retried with a
    /// growing pause.
    Down,
    /// The node answers 401: the token is wrong or missing. Retried slowly, in case the
    /// node is restarted with this token.
    Unauthorized,
}
