//! An L7 pool at run time: its servers (a shared `Pool`), the settings requests read when
//! they start, its health checkers and its own counters. A reload changes it in place, so
//! requests in flight keep their servers and the counters go on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balance::backend::{Backend, BackendSettings};
use crate::balance::checker::CheckSet;
use crate::balance::http_stats::{HttpCounters, empty_buckets};
use crate::balance::passive::PassiveConfig;
use crate::balance::pool::{Pool, PoolTable, build_servers};
use crate::balance::queue::Queue;
use crate::balance::select::HashOptions;
use crate::config::balance::ServerConfig;
use crate::config::l7::{Algorithm, HashType, PoolConfig};
use crate::control::PoolSnapshot;
use crate::replication::shared::now_ms;
use crate::sync::Published;

/// What a request reads from its pool when it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub algorithm: Algorithm,
    pub hash_type: HashType,
    pub hash_key: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// An upgraded connection idle this long both ways is closed (`None`: never).
    pub tunnel_timeout: Option<Duration>,
    pub retries: u32,
    pub retry_non_idempotent: bool,
    pub cookie: Option<String>,
    pub passive: Option<PassiveConfig>,
    /// Some server has a `max_conns`, so requests take slots through the queue.
    pub limited: bool,
    pub queue_timeout: Duration,
}

impl Settings {
    fn of(cfg: &PoolConfig) -> Settings {
        Settings {
            algorithm: cfg.algorithm,
            hash_type: cfg.hash_type,
            hash_key: cfg.hash_key.clone(),
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            response_timeout: Duration::from_millis(cfg.response_timeout_ms),
            tunnel_timeout: (cfg.tunnel_timeout_secs > 0)
                .then(|| Duration::from_secs(cfg.tunnel_timeout_secs)),
            retries: cfg.retries,
            retry_non_idempotent: cfg.retry_non_idempotent,
            cookie: cfg.cookie.clone(),
            passive: cfg.passive.clone(),
            limited: cfg.servers.iter().any(|s| s.max_conns > 0),
            queue_timeout: Duration::from_millis(cfg.queue_timeout_ms),
        }
    }

    /// `roundrobin`, or `uri (consistent)` for a hash.
    pub fn describe(&self) -> String {
        let name = self.algorithm.name();
        match (self.algorithm.is_hash(), self.hash_type) {
            (false, _) => name.to_string(),
            (true, HashType::MapBased) => format!("{name} (map-based)"),
            (true, HashType::Consistent) => format!("{name} (consistent)"),
        }
    }
}

pub struct Upstream {
    pub name: String,
    pub pool: Arc<Pool>,
    pub settings: Published<Settings>,
    checks: CheckSet,
    /// Requests through this pool, with statuses and response times.
    pub http: HttpCounters,
    pub retries: AtomicU64,
    pub redispatches: AtomicU64,
    /// Requests waiting for a server below its `max_conns`.
    pub queue: Arc<Queue>,
}

/// A server's settings in an L7 pool: HAProxy's `maxconn` is a hard limit (a server takes a
/// request again as soon as it is below it, where LVS waits for the lower threshold), and
/// the pool's slow start.
fn server_settings(cfg: &PoolConfig, s: &ServerConfig) -> BackendSettings {
    let lvs = BackendSettings::of(s, cfg.check.as_ref());
    BackendSettings {
        min_conns: lvs.max_conns.saturating_sub(1),
        slow_start_ms: cfg.slow_start_ms,
        ..lvs
    }
}

fn table(cfg: &PoolConfig, old: Option<&PoolTable>) -> PoolTable {
    PoolTable {
        servers: build_servers(&cfg.servers, |s| server_settings(cfg, s), old),
        scheduler: cfg.algorithm.scheduler(cfg.hash_type),
        hash: HashOptions {
            port: false,
            // A hash whose server is unusable moves on to the next one rather than failing
            // the request (HAProxy's hashes skip unusable servers too).
            fallback: true,
            balance_factor: cfg.hash_balance_factor,
        },
        persistence: None,
        sorry: None,
        quorum: 0,
    }
}

impl Upstream {
    pub fn new(name: &str, cfg: &PoolConfig) -> Upstream {
        Upstream {
            name: name.to_string(),
            pool: Arc::new(Pool::new(name.to_string(), table(cfg, None))),
            settings: Published::new(Settings::of(cfg)),
            checks: CheckSet::default(),
            http: HttpCounters::default(),
            retries: AtomicU64::new(0),
            redispatches: AtomicU64::new(0),
            queue: Arc::new(Queue::default()),
        }
    }

    /// Some server not in `tried` is in service but at its `max_conns`: a request may wait
    /// for it.
    pub fn any_full(&self, tried: &[Arc<Backend>]) -> bool {
        self.pool.table().servers.iter().any(|s| {
            s.in_service() && s.is_overloaded() && !tried.iter().any(|t| Arc::ptr_eq(t, s))
        })
    }

    /// A request to `server` failed: passive health may take it out for a while, unless it
    /// is the last server in service (an ejection would only turn errors into 503s).
    pub fn request_failed(&self, server: &Arc<Backend>, settings: &Settings) {
        let Some(cfg) = &settings.passive else { return };
        let now = now_ms();
        let Some(for_ms) = server.request_failed(cfg, now) else {
            return;
        };
        let table = self.pool.table();
        let others = table
            .servers
            .iter()
            .any(|s| !Arc::ptr_eq(s, server) && s.in_service());
        if !others {
            tracing::debug!(pool = %self.name, server = %server.name, "server {} in {} would be ejected, but it is the last one in service", server.name, self.name);
            return;
        }
        if !server.eject(for_ms, now) {
            return;
        }
        tracing::warn!(pool = %self.name, server = %server.name, "server {} in {} is EJECTED for {} ms: its requests failed", server.name, self.name, for_ms);
        self.pool.changed();
        let (server, pool) = (server.clone(), self.pool.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(for_ms)).await;
            server.return_from_ejection(now_ms());
            pool.changed();
            tracing::info!(pool = %pool.name, server = %server.name, "server {} in {} is back from its ejection", server.name, pool.name);
        });
    }

    /// Applies a reloaded `[l7.pools.NAME]`: servers that kept their name and address keep
    /// their counters, connections and health.
    pub fn reconfigure(&self, cfg: &PoolConfig) {
        let old = self.pool.table();
        self.pool.replace(table(cfg, Some(&old)));
        let settings = Settings::of(cfg);
        if *self.settings.get() != settings {
            self.settings.publish(settings);
        }
    }

    pub fn sync_checks(
        &self,
        cfg: &PoolConfig,
        tracker: &TaskTracker,
        runtime: &tokio::runtime::Handle,
        root: &CancellationToken,
    ) {
        self.checks
            .sync(&self.pool, cfg.check.as_ref(), tracker, runtime, root);
    }

    pub fn stop_checks(&self) {
        self.checks.stop();
    }

    pub fn snapshot(&self) -> PoolSnapshot {
        let now = now_ms();
        let table = self.pool.table();
        let checked = self.checks.is_on();
        let servers = table
            .servers
            .iter()
            .map(|s| {
                let mut snap = s.snapshot(checked);
                snap.http = Some(s.http.own_stats(now));
                snap
            })
            .collect::<Vec<_>>();
        let mut buckets = empty_buckets();
        self.http.latency.add_to(&mut buckets, now);
        PoolSnapshot {
            name: self.name.clone(),
            algorithm: self.settings.get().describe(),
            active: servers.iter().map(|s| u64::from(s.active)).sum(),
            retries: self.retries.load(Relaxed),
            redispatches: self.redispatches.load(Relaxed),
            no_server: self.pool.no_server.load(Relaxed),
            queued: self.queue.waiting(),
            queue_timeouts: self.queue.timeouts.load(Relaxed),
            http: self.http.stats(&buckets),
            servers,
        }
    }
}
