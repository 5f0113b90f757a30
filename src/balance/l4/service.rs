//! A virtual service: its listener address, its pool, the forwarding settings connections
//! read when they start, the checker tasks of its servers, and its snapshot. A reload changes
//! a service in place, so listeners and open connections are untouched.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balance::backend::{Backend, BackendSettings};
use crate::balance::checker::CheckSet;
use crate::balance::persist::Persistence;
use crate::balance::pool::{Pool, PoolTable, build_servers};
use crate::balance::select::HashOptions;
use crate::config::balance::{
    CheckConfig, SendProxy, ServerConfig, ServiceConfig, Splice, address, parse_netmask,
};
use crate::control::{ServerSnapshot, ServiceSnapshot};
use crate::replication::shared::now_ms;
use crate::sync::lock;

pub struct Service {
    pub name: String,
    pub listen: SocketAddr,
    pub pool: Arc<Pool>,
    connect_timeout_ms: AtomicU64,
    idle_timeout_secs: AtomicU64,
    retries: AtomicU32,
    send_proxy: AtomicU8,
    splice: AtomicU8,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Counters of servers a reload removed, so the service's totals do not drop.
    retired: Mutex<Retired>,
    /// Cancelled when the service is removed: its listeners stop (connections go on).
    pub accepting: CancellationToken,
    checks: CheckSet,
}

#[derive(Default)]
struct Retired {
    bytes_in: u64,
    bytes_out: u64,
    connect_errors: u64,
    retries: u64,
}

fn splice_code(s: Splice) -> u8 {
    match s {
        Splice::Auto => 0,
        Splice::Always => 1,
        Splice::Off => 2,
    }
}

fn send_proxy_code(p: SendProxy) -> u8 {
    match p {
        SendProxy::None => 0,
        SendProxy::V1 => 1,
        SendProxy::V2 => 2,
    }
}

/// A pool table for `cfg`, reusing the servers (and their counters, connections and
/// health) of `old` that kept their name and address.
fn build_table(cfg: &ServiceConfig, old: Option<&PoolTable>) -> PoolTable {
    let now = now_ms();
    let check = cfg.check.as_ref();
    let servers = build_servers(&cfg.servers, |s| BackendSettings::of(s, check), old);
    let persistence = (cfg.persistence_timeout_secs > 0).then(|| {
        let timeout = Duration::from_secs(cfg.persistence_timeout_secs);
        let mask = parse_netmask(&cfg.persistence_netmask).unwrap_or(u32::MAX);
        Arc::new(Persistence::new(timeout, mask, cfg.persistence_v6_prefix))
    });
    let sorry = cfg.sorry_server.as_ref().map(|a| {
        let addr = address(a);
        old.and_then(|t| t.sorry.clone())
            .filter(|b| b.addr == addr)
            .unwrap_or_else(|| {
                let s = ServerConfig {
                    address: a.clone(),
                    ..ServerConfig::default()
                };
                Arc::new(Backend::new(
                    format!("sorry {a}"),
                    addr,
                    &BackendSettings::of(&s, None),
                    s.state,
                    now,
                ))
            })
    });
    PoolTable {
        servers,
        scheduler: cfg.scheduler,
        hash: HashOptions {
            port: cfg.hash_port,
            fallback: cfg.hash_fallback,
            balance_factor: 0,
        },
        persistence,
        sorry,
        quorum: cfg.quorum,
    }
}

impl Service {
    /// `stopping` is the balancer's: its shutdown stops this service's listeners too.
    pub fn new(
        name: &str,
        listen: SocketAddr,
        cfg: &ServiceConfig,
        stopping: &CancellationToken,
    ) -> Service {
        let table = build_table(cfg, None);
        let s = Service {
            name: name.to_string(),
            listen,
            pool: Arc::new(Pool::new(name.to_string(), table)),
            connect_timeout_ms: AtomicU64::new(0),
            idle_timeout_secs: AtomicU64::new(0),
            retries: AtomicU32::new(0),
            send_proxy: AtomicU8::new(0),
            splice: AtomicU8::new(0),
            accepted: AtomicU64::new(0),
            retired: Mutex::new(Retired::default()),
            accepting: stopping.child_token(),
            checks: CheckSet::default(),
        };
        s.set_forwarding(cfg);
        s
    }

    fn set_forwarding(&self, cfg: &ServiceConfig) {
        self.connect_timeout_ms
            .store(cfg.connect_timeout_ms, Relaxed);
        self.idle_timeout_secs.store(cfg.idle_timeout_secs, Relaxed);
        self.retries.store(cfg.retries, Relaxed);
        self.send_proxy
            .store(send_proxy_code(cfg.send_proxy), Relaxed);
        self.splice.store(splice_code(cfg.splice), Relaxed);
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.load(Relaxed))
    }

    pub fn idle_timeout(&self) -> Option<Duration> {
        match self.idle_timeout_secs.load(Relaxed) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        }
    }

    pub fn retries(&self) -> u32 {
        self.retries.load(Relaxed)
    }

    pub fn splice(&self) -> Splice {
        match self.splice.load(Relaxed) {
            1 => Splice::Always,
            2 => Splice::Off,
            _ => Splice::Auto,
        }
    }

    pub fn send_proxy(&self) -> SendProxy {
        match self.send_proxy.load(Relaxed) {
            1 => SendProxy::V1,
            2 => SendProxy::V2,
            _ => SendProxy::None,
        }
    }

    /// Applies a reloaded config: servers, weights, scheduler, persistence, forwarding
    /// settings and checks. Established connections keep their servers.
    pub fn reconfigure(
        &self,
        cfg: &ServiceConfig,
        tracker: &TaskTracker,
        runtime: &tokio::runtime::Handle,
        root: &CancellationToken,
    ) {
        let old = self.pool.table();
        let table = build_table(cfg, Some(&old));
        let mut retired = lock(&self.retired);
        for gone in old
            .servers
            .iter()
            .filter(|o| !table.servers.iter().any(|n| Arc::ptr_eq(n, o)))
        {
            retired.bytes_in += gone.bytes_in.load(Relaxed);
            retired.bytes_out += gone.bytes_out.load(Relaxed);
            retired.connect_errors += gone.connect_errors.load(Relaxed);
            retired.retries += gone.retries.load(Relaxed);
        }
        drop(retired);
        self.pool.replace(table);
        self.set_forwarding(cfg);
        self.start_checks(cfg.check.as_ref(), tracker, runtime, root);
    }

    /// Makes the running checkers match `check` (see `CheckSet::sync`).
    pub fn start_checks(
        &self,
        check: Option<&CheckConfig>,
        tracker: &TaskTracker,
        runtime: &tokio::runtime::Handle,
        root: &CancellationToken,
    ) {
        self.checks.sync(&self.pool, check, tracker, runtime, root);
    }

    /// Stops the checkers (the service is removed or the node stops).
    pub fn stop_checks(&self) {
        self.checks.stop();
    }

    pub fn snapshot(&self) -> ServiceSnapshot {
        let table = self.pool.table();
        let checked = self.checks.is_on();
        let servers: Vec<ServerSnapshot> =
            table.servers.iter().map(|s| s.snapshot(checked)).collect();
        let sorry = table.sorry.as_ref().map(|s| s.snapshot(false));
        let all = || servers.iter().chain(sorry.iter());
        let retired = lock(&self.retired);
        ServiceSnapshot {
            name: self.name.clone(),
            listen: self.listen.to_string(),
            scheduler: table.scheduler.name().to_string(),
            persistence_secs: table
                .persistence
                .as_ref()
                .map_or(0, |p| p.timeout().as_secs()),
            quorum_met: table.usable_weight() >= u64::from(table.quorum),
            active: all().map(|s| u64::from(s.active)).sum(),
            inactive: all().map(|s| u64::from(s.inactive)).sum(),
            total_conns: self.accepted.load(Relaxed),
            bytes_in: retired.bytes_in + all().map(|s| s.bytes_in).sum::<u64>(),
            bytes_out: retired.bytes_out + all().map(|s| s.bytes_out).sum::<u64>(),
            connect_errors: retired.connect_errors + all().map(|s| s.connect_errors).sum::<u64>(),
            retries: retired.retries + all().map(|s| s.retries).sum::<u64>(),
            no_server: self.pool.no_server.load(Relaxed),
            servers,
            sorry_server: sorry,
        }
    }
}
