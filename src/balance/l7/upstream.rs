//! An L7 pool at run time: its servers (a shared `Pool`), the settings requests read when
//! they start, its health checkers and its own counters. A reload changes it in place, so
//! requests in flight keep their servers and the counters go on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balance::checker::CheckSet;
use crate::balance::http_stats::{HttpCounters, empty_buckets};
use crate::balance::pool::{Pool, PoolTable, build_servers};
use crate::balance::select::HashOptions;
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
    pub retries: u32,
    pub retry_non_idempotent: bool,
    pub cookie: Option<String>,
}

impl Settings {
    fn of(cfg: &PoolConfig) -> Settings {
        Settings {
            algorithm: cfg.algorithm,
            hash_type: cfg.hash_type,
            hash_key: cfg.hash_key.clone(),
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            response_timeout: Duration::from_millis(cfg.response_timeout_ms),
            retries: cfg.retries,
            retry_non_idempotent: cfg.retry_non_idempotent,
            cookie: cfg.cookie.clone(),
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
}

fn table(cfg: &PoolConfig, old: Option<&PoolTable>) -> PoolTable {
    PoolTable {
        servers: build_servers(&cfg.servers, cfg.check.as_ref(), old),
        scheduler: cfg.algorithm.scheduler(cfg.hash_type),
        hash: HashOptions {
            port: false,
            // A hash whose server is unusable moves on to the next one rather than failing
            // the request (HAProxy's hashes skip unusable servers too).
            fallback: true,
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
        }
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
            http: self.http.stats(&buckets),
            servers,
        }
    }
}
