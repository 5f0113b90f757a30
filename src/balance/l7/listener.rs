//! An L7 listener at run time: its address, limits and routes (all replaceable by a reload)
//! and its counters. Workers read the limits and routes through `Follower`s, so a request
//! takes no lock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use hyper::header::HeaderName;

use super::access_log::AccessLog;
use super::route::RouteTable;
use super::upstream::Upstream;
use crate::balance::http_stats::HttpCounters;
use crate::config::l7::{L7Config, ListenerConfig};
use crate::control::{ListenerSnapshot, RouteSnapshot};
use crate::replication::shared::now_ms;
use crate::sync::Published;

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Open client connections at most (0 = no limit).
    pub max_conns: u64,
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
    pub client_header_timeout: Duration,
    /// A request body that stops arriving this long ends its request (408).
    pub client_body_timeout: Duration,
    /// A write to the client that makes no progress this long closes the connection.
    pub client_send_timeout: Duration,
    /// `None`: kept-alive connections may idle for ever.
    pub idle_timeout: Option<Duration>,
    pub request_id: Option<HeaderName>,
}

impl Limits {
    fn of(cfg: &ListenerConfig) -> Limits {
        Limits {
            max_conns: u64::from(cfg.max_conns),
            max_header_bytes: cfg.max_header_bytes,
            max_uri_bytes: cfg.max_uri_bytes,
            client_header_timeout: Duration::from_millis(cfg.client_header_timeout_ms),
            client_body_timeout: Duration::from_millis(cfg.client_body_timeout_ms),
            client_send_timeout: Duration::from_millis(cfg.client_send_timeout_ms),
            idle_timeout: (cfg.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(cfg.idle_timeout_secs)),
            // Validation has checked the name.
            request_id: cfg
                .request_id_header
                .as_deref()
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
        }
    }
}

/// One route as configured, with what went through it.
pub struct RouteEntry {
    pub host: Option<String>,
    pub path: String,
    /// Index into `Routing::upstreams`.
    pub pool: usize,
    pub http: Arc<HttpCounters>,
}

/// Where this listener's requests go: the route table, each route's counters, and the
/// pools by the index the table returns.
pub struct Routing {
    pub table: RouteTable,
    pub routes: Vec<RouteEntry>,
    pub upstreams: Vec<Arc<Upstream>>,
}

impl Routing {
    /// `upstreams` holds every pool in name order (the indexes `L7Config::routes` uses);
    /// a route kept across a reload (same host, path and pool) keeps its counters.
    pub fn build(
        l7: &L7Config,
        cfg: &ListenerConfig,
        upstreams: Vec<Arc<Upstream>>,
        old: Option<&Routing>,
    ) -> Result<Routing, String> {
        let routes = l7.routes(cfg);
        let table = RouteTable::new(&routes)?;
        let entries = routes
            .iter()
            .map(|r| {
                let pool = upstreams.get(r.pool).map_or("", |u| u.name.as_str());
                let kept = old.and_then(|o| {
                    o.routes
                        .iter()
                        .find(|e| e.host == r.host && e.path == r.path && o.pool_name(e) == pool)
                        .map(|e| e.http.clone())
                });
                RouteEntry {
                    host: r.host.clone(),
                    path: r.path.clone(),
                    pool: r.pool,
                    http: kept.unwrap_or_default(),
                }
            })
            .collect();
        Ok(Routing {
            table,
            routes: entries,
            upstreams,
        })
    }

    pub fn pool_name(&self, route: &RouteEntry) -> &str {
        self.upstreams
            .get(route.pool)
            .map_or("", |u| u.name.as_str())
    }
}

pub struct Listener {
    pub name: String,
    pub listen: SocketAddr,
    pub limits: Published<Limits>,
    pub routing: Published<Routing>,
    pub access_log: Published<Option<AccessLog>>,
    pub active_conns: AtomicU64,
    /// Open connections plus the places accept loops hold for the next one: what
    /// `max_conns` is checked against (see `client::Slot`).
    pub slots: AtomicU64,
    pub total_conns: AtomicU64,
    pub no_route: AtomicU64,
    pub rejected: AtomicU64,
    /// Woken when a slot frees, for accept loops waiting under `max_conns`.
    pub slot_freed: Notify,
    /// Cancelled when the listener is removed: it stops accepting (connections go on).
    pub accepting: CancellationToken,
}

impl Listener {
    /// `stopping` is the balancer's: its shutdown stops this listener too.
    pub fn new(
        name: &str,
        listen: SocketAddr,
        cfg: &ListenerConfig,
        routing: Routing,
        access_log: Option<AccessLog>,
        stopping: &CancellationToken,
    ) -> Listener {
        Listener {
            name: name.to_string(),
            listen,
            limits: Published::new(Limits::of(cfg)),
            routing: Published::new(routing),
            access_log: Published::new(access_log),
            active_conns: AtomicU64::new(0),
            slots: AtomicU64::new(0),
            total_conns: AtomicU64::new(0),
            no_route: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            slot_freed: Notify::new(),
            accepting: stopping.child_token(),
        }
    }

    /// `access_log`: a new log when its settings changed, `None` to keep the one it has.
    pub fn reconfigure(
        &self,
        cfg: &ListenerConfig,
        routing: Routing,
        access_log: Option<Option<AccessLog>>,
    ) {
        let limits = Limits::of(cfg);
        if *self.limits.get() != limits {
            self.limits.publish(limits);
        }
        self.routing.publish(routing);
        if let Some(log) = access_log {
            self.access_log.publish(log);
        }
    }

    /// The access log `cfg` asks for: `None` when the one this listener has (if any) already
    /// matches, else the new one, opened (so a reload can refuse a log it cannot open before
    /// changing anything).
    pub fn access_log_for(
        cfg: &ListenerConfig,
        current: Option<&Listener>,
    ) -> std::io::Result<Option<Option<AccessLog>>> {
        let has = current.map(|l| {
            l.access_log
                .get()
                .as_ref()
                .as_ref()
                .map(|a| a.config.clone())
        });
        if let Some(has) = has
            && has == cfg.access_log
        {
            return Ok(None);
        }
        cfg.access_log
            .as_ref()
            .map(AccessLog::open)
            .transpose()
            .map(Some)
    }

    pub fn snapshot(&self) -> ListenerSnapshot {
        let now = now_ms();
        let routing = self.routing.get();
        ListenerSnapshot {
            name: self.name.clone(),
            listen: self.listen.to_string(),
            active_conns: self.active_conns.load(Relaxed),
            total_conns: self.total_conns.load(Relaxed),
            no_route: self.no_route.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            routes: routing
                .routes
                .iter()
                .map(|r| RouteSnapshot {
                    host: r.host.clone(),
                    path: r.path.clone(),
                    pool: routing.pool_name(r).to_string(),
                    http: r.http.own_stats(now),
                })
                .collect(),
        }
    }
}
