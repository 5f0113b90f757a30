//! The L4 role: LVS-style TCP load balancing in userspace (NAT semantics: the real servers
//! see connections from the balancer, or the client's address in a PROXY header). Owns the
//! virtual services, the proxy workers and the checkers; applies reloads and operator
//! actions.

pub mod forward;
pub mod proxy_header;
pub mod service;
#[cfg(target_os = "linux")]
mod splice;
pub mod worker;

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::balance::pool::Pool;
use crate::balance::workers::{self, Workers};
use crate::config::L4Config;
use crate::config::balance::ServiceConfig;
use crate::config::balance::address;
use crate::control::ServiceSnapshot;
use crate::sync::lock;
use service::Service;

pub struct L4 {
    services: Mutex<BTreeMap<String, Arc<Service>>>,
    workers: Workers,
}

impl L4 {
    /// Binds every service's listeners (so a port conflict fails the start), starts the
    /// workers and the checkers. Must run inside the node's runtime.
    pub fn start(cfg: &L4Config) -> io::Result<L4> {
        let threads = cfg.threads();
        let mut bound = Vec::new();
        for (name, s) in &cfg.services {
            let section = format!("l4.services.{name}");
            let listeners = workers::bind(&section, address(&s.listen), threads)?;
            bound.push((name, s, listeners));
        }
        let l4 = L4 {
            services: Mutex::new(BTreeMap::new()),
            workers: Workers::spawn("l4", threads)?,
        };
        for (name, s, listeners) in bound {
            l4.launch(name, s, listeners)?;
        }
        Ok(l4)
    }

    fn launch(
        &self,
        name: &str,
        cfg: &ServiceConfig,
        listeners: Vec<std::net::TcpListener>,
    ) -> io::Result<()> {
        let listen = listeners
            .first()
            .map(|l| l.local_addr())
            .transpose()?
            .unwrap_or_else(|| address(&cfg.listen));
        let service = Arc::new(Service::new(name, listen, cfg, &self.workers.cancel));
        service.start_checks(
            cfg.check.as_ref(),
            &self.workers.checks,
            &self.workers.runtime,
            &self.workers.cancel,
        );
        let serving = service.clone();
        self.workers.serve(listeners, move |w, listener| {
            tokio::task::spawn_local(worker::accept(serving.clone(), listener, w.clone()));
        });
        tracing::info!(
            service = name,
            "l4 service {name} listening on {listen} ({} over {} servers)",
            cfg.scheduler,
            cfg.servers.len()
        );
        lock(&self.services).insert(name.to_string(), service);
        Ok(())
    }

    /// The service's bound address (its port when the config said 0).
    pub fn listen_addr(&self, service: &str) -> Option<std::net::SocketAddr> {
        lock(&self.services).get(service).map(|s| s.listen)
    }

    /// Applies a new `[l4]` config without dropping an established connection: services
    /// added, removed (listener closed, connections go on) or changed in place. Listeners
    /// are bound before anything changes, so a port conflict leaves the old config running.
    pub fn reload(&self, cfg: &L4Config) -> io::Result<String> {
        let current: BTreeMap<String, Arc<Service>> = lock(&self.services).clone();
        let threads = self.workers.len();
        let mut fresh = Vec::new();
        for (name, s) in &cfg.services {
            let addr = address(&s.listen);
            if current
                .get(name)
                .is_none_or(|old| workers::moved(old.listen, addr))
            {
                let section = format!("l4.services.{name}");
                fresh.push((name, s, workers::bind(&section, addr, threads)?));
            }
        }
        let mut changes = Vec::new();
        for (name, old) in &current {
            let keep = cfg.services.contains_key(name) && !fresh.iter().any(|(n, _, _)| *n == name);
            if !keep {
                old.accepting.cancel();
                old.stop_checks();
                lock(&self.services).remove(name);
                changes.push(format!("removed {name}"));
            }
        }
        for (name, s) in &cfg.services {
            if let Some(old) = lock(&self.services).get(name).cloned() {
                let w = &self.workers;
                old.reconfigure(s, &w.checks, &w.runtime, &w.cancel);
                changes.push(format!("updated {name}"));
            }
        }
        for (name, s, listeners) in fresh {
            self.launch(name, s, listeners)?;
            changes.push(format!("added {name}"));
        }
        Ok(changes.join(", "))
    }

    pub fn snapshot(&self) -> Vec<ServiceSnapshot> {
        let services: Vec<Arc<Service>> = lock(&self.services).values().cloned().collect();
        services.iter().map(|s| s.snapshot()).collect()
    }

    /// The pool named `name`, for operator actions on its servers.
    pub fn pool(&self, name: &str) -> Option<Arc<Pool>> {
        lock(&self.services).get(name).map(|x| x.pool.clone())
    }

    /// Stops accepting and checking, gives open connections up to `grace`, then drops them.
    /// Returns false if connections were still open at the end.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.workers.shutdown(grace).await
    }
}
