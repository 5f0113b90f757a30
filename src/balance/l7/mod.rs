//! The L7 role: an HTTP/1.1 reverse proxy (hyper) with nginx-style routing and the
//! balancing HAProxy users expect, over the same pools, schedulers and health checks as L4.
//! Owns the listeners and pools, the workers that serve them and the checkers; applies
//! reloads and operator actions.

pub mod access_log;
pub mod body;
pub mod client;
pub mod cookie;
pub mod headers;
pub mod idle;
pub mod key;
pub mod listener;
pub mod proxy;
pub mod request_id;
pub mod retry;
pub mod route;
pub mod upstream;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::balance::pool::Pool;
use crate::balance::workers::{self, Worker, Workers};
use crate::config::balance::address;
use crate::config::l7::{L7Config, ListenerConfig};
use crate::control::L7Snapshot;
use crate::sync::lock;
use access_log::AccessLog;
use listener::{Listener, Routing};
use proxy::Proxy;
use upstream::Upstream;

pub struct L7 {
    listeners: Mutex<BTreeMap<String, Arc<Listener>>>,
    upstreams: Mutex<BTreeMap<String, Arc<Upstream>>>,
    workers: Workers,
}

impl L7 {
    /// Binds every listener (so a port conflict fails the start), starts the workers and the
    /// checkers. Must run inside the node's runtime.
    pub fn start(cfg: &L7Config) -> io::Result<L7> {
        let threads = cfg.threads();
        let mut bound = Vec::new();
        for (name, l) in &cfg.listeners {
            let section = format!("l7.listeners.{name}");
            let sockets = workers::bind(&section, address(&l.listen), threads)?;
            let log = Listener::access_log_for(l, None)?.flatten();
            bound.push((name, l, sockets, log));
        }
        let l7 = L7 {
            listeners: Mutex::new(BTreeMap::new()),
            upstreams: Mutex::new(BTreeMap::new()),
            workers: Workers::spawn("l7", threads)?,
        };
        l7.apply_pools(cfg);
        for (name, l, sockets, log) in bound {
            l7.launch(cfg, name, l, sockets, log)?;
        }
        Ok(l7)
    }

    /// Makes the pools match `cfg`: new ones created, kept ones reconfigured in place,
    /// dropped ones stop their checks (requests in flight finish on them).
    fn apply_pools(&self, cfg: &L7Config) -> Vec<String> {
        let mut changes = Vec::new();
        let mut upstreams = lock(&self.upstreams);
        upstreams.retain(|name, u| {
            let keep = cfg.pools.contains_key(name);
            if !keep {
                u.stop_checks();
                changes.push(format!("removed pool {name}"));
            }
            keep
        });
        for (name, p) in &cfg.pools {
            let u = match upstreams.get(name) {
                Some(u) => {
                    u.reconfigure(p);
                    changes.push(format!("updated pool {name}"));
                    u.clone()
                }
                None => {
                    let u = Arc::new(Upstream::new(name, p));
                    upstreams.insert(name.clone(), u.clone());
                    changes.push(format!("added pool {name}"));
                    u
                }
            };
            let w = &self.workers;
            u.sync_checks(p, &w.checks, &w.runtime, &w.cancel);
        }
        changes
    }

    /// Every pool in name order: the indexes the route tables use.
    fn upstream_list(&self) -> Vec<Arc<Upstream>> {
        lock(&self.upstreams).values().cloned().collect()
    }

    fn routing(
        &self,
        cfg: &L7Config,
        l: &ListenerConfig,
        old: Option<&Routing>,
    ) -> io::Result<Routing> {
        Routing::build(cfg, l, self.upstream_list(), old)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    }

    fn launch(
        &self,
        cfg: &L7Config,
        name: &str,
        l: &ListenerConfig,
        sockets: Vec<std::net::TcpListener>,
        access_log: Option<AccessLog>,
    ) -> io::Result<()> {
        let listen = sockets
            .first()
            .map(|s| s.local_addr())
            .transpose()?
            .unwrap_or_else(|| address(&l.listen));
        let routing = self.routing(cfg, l, None)?;
        let stopping = &self.workers.cancel;
        let listener = Arc::new(Listener::new(
            name, listen, l, routing, access_log, stopping,
        ));
        let serving = listener.clone();
        self.workers.serve(sockets, move |w, socket| {
            tokio::task::spawn_local(accept(serving.clone(), socket, w.clone()));
        });
        tracing::info!(
            listener = name,
            "l7 listener {name} on {listen} ({} routes)",
            l.routes.len()
        );
        lock(&self.listeners).insert(name.to_string(), listener);
        Ok(())
    }

    /// A listener's bound address (its port when the config said 0).
    pub fn listen_addr(&self, listener: &str) -> Option<SocketAddr> {
        lock(&self.listeners).get(listener).map(|l| l.listen)
    }

    /// Applies a new `[l7]` config without dropping a connection or a request in flight:
    /// pools and listeners added, removed or changed in place. New listeners are bound before
    /// anything changes, so a port conflict leaves the old config running.
    pub fn reload(&self, cfg: &L7Config) -> io::Result<String> {
        let current: BTreeMap<String, Arc<Listener>> = lock(&self.listeners).clone();
        let threads = self.workers.len();
        // Everything that can fail (binding, opening access logs) happens before anything
        // changes, so a refused reload leaves the running config whole.
        let mut fresh = Vec::new();
        let mut logs = BTreeMap::new();
        for (name, l) in &cfg.listeners {
            let addr = address(&l.listen);
            let kept = current
                .get(name)
                .filter(|old| !workers::moved(old.listen, addr));
            match kept {
                Some(old) => {
                    logs.insert(name, Listener::access_log_for(l, Some(old))?);
                }
                None => {
                    let section = format!("l7.listeners.{name}");
                    let sockets = workers::bind(&section, addr, threads)?;
                    let log = Listener::access_log_for(l, None)?.flatten();
                    fresh.push((name, l, sockets, log));
                }
            }
        }
        let mut changes = self.apply_pools(cfg);
        for (name, old) in &current {
            match cfg.listeners.get(name).zip(logs.remove(name)) {
                Some((l, log)) => {
                    let routing = self.routing(cfg, l, Some(&old.routing.get()))?;
                    old.reconfigure(l, routing, log);
                    changes.push(format!("updated listener {name}"));
                }
                None => {
                    old.accepting.cancel();
                    lock(&self.listeners).remove(name);
                    changes.push(format!("removed listener {name}"));
                }
            }
        }
        for (name, l, sockets, log) in fresh {
            self.launch(cfg, name, l, sockets, log)?;
            changes.push(format!("added listener {name}"));
        }
        Ok(changes.join(", "))
    }

    pub fn snapshot(&self) -> L7Snapshot {
        let listeners: Vec<Arc<Listener>> = lock(&self.listeners).values().cloned().collect();
        L7Snapshot {
            listeners: listeners.iter().map(|l| l.snapshot()).collect(),
            pools: self.upstream_list().iter().map(|u| u.snapshot()).collect(),
        }
    }

    /// The pool named `name`, for operator actions on its servers.
    pub fn pool(&self, name: &str) -> Option<Arc<Pool>> {
        lock(&self.upstreams).get(name).map(|x| x.pool.clone())
    }

    /// Stops accepting and checking, gives open connections up to `grace`, then drops them.
    /// Returns false if connections were still open at the end.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.workers.shutdown(grace).await
    }
}

/// One worker's accept loop for one listener. At the listener's `max_conns` it closes this
/// worker's connection idle longest to let the next client in (one at a time, waiting for
/// each to be gone), as nginx reuses keep-alive connections when it runs out; with none
/// idle it holds back, and further clients wait in the kernel's backlog.
async fn accept(listener: Arc<Listener>, socket: TcpListener, worker: Worker) {
    let proxy = Rc::new(Proxy::new(listener.clone(), worker.seed()));
    let mut warned = false;
    // The connection asked to close for the next client, until it has.
    let mut reclaiming: Option<std::sync::Weak<client::ClientState>> = None;
    // When the listener last said it was full (once a minute at most).
    let mut said_full: Option<tokio::time::Instant> = None;
    loop {
        let max = proxy.limits().max_conns;
        let Some(slot) = client::Slot::take(&listener, max) else {
            if reclaiming.as_ref().is_none_or(|w| w.strong_count() == 0) {
                reclaiming = proxy.conns.reclaim_one();
                if said_full.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    said_full = Some(tokio::time::Instant::now());
                    let what = if reclaiming.is_some() {
                        "closing the connections idle longest to let new clients in"
                    } else {
                        "no connection is idle: new clients wait in the backlog"
                    };
                    tracing::warn!(listener = %listener.name, "l7 listener {} is at max_conns ({max}): {what}", listener.name);
                }
            }
            tokio::select! {
                _ = listener.accepting.cancelled() => return,
                _ = worker.stop.cancelled() => return,
                _ = listener.slot_freed.notified() => {}
                // A slot freed on another worker may have been missed between the check and
                // the wait: look again now and then.
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            continue;
        };
        let accepted = tokio::select! {
            _ = listener.accepting.cancelled() => return,
            _ = worker.stop.cancelled() => return,
            r = socket.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                warned = false;
                let open = client::Open::new(slot);
                let task = client::serve(proxy.clone(), stream, peer, open, worker.stop.clone());
                tokio::task::spawn_local(worker.conns.track_future(task));
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(listener = %listener.name, "accept failed: {e}");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
