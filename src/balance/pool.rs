//! A pool: the real servers behind one service, how they are scheduled, persistence, the
//! sorry server and the quorum rule. Shared (`Pool`) by every worker; each worker picks
//! through its own `PoolCursor`, which follows the pool's generation and rebuilds its
//! scheduler when membership, health, states or weights change, so a pick takes no lock
//! (persistence aside, which is shared by nature).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::backend::{Backend, BackendSettings};
use super::persist::Persistence;
use super::select::{Client, HashOptions, Load, Scheduler, SchedulerKind};
use crate::config::balance::{ServerConfig, address};
use crate::replication::shared::now_ms;
use crate::sync::lock;

/// What a pool is made of; replaced whole by a reload.
#[derive(Debug)]
pub struct PoolTable {
    pub servers: Vec<Arc<Backend>>,
    pub scheduler: SchedulerKind,
    pub hash: HashOptions,
    pub persistence: Option<Arc<Persistence>>,
    pub sorry: Option<Arc<Backend>>,
    pub quorum: u32,
}

impl PoolTable {
    /// Total weight of the servers that can take a new client now (keepalived's quorum sum).
    pub fn usable_weight(&self) -> u64 {
        self.servers
            .iter()
            .filter(|s| s.usable())
            .map(|s| u64::from(s.weight()))
            .sum()
    }

    pub fn find(&self, name: &str) -> Option<&Arc<Backend>> {
        self.servers.iter().find(|s| s.name == name)
    }
}

/// The servers for a pool's `configs`, reusing those of `old` that kept their name and
/// address (with their counters, connections and health) so a reload loses nothing.
/// `settings` gives each server's settings from its config.
pub fn build_servers(
    configs: &[ServerConfig],
    settings: impl Fn(&ServerConfig) -> BackendSettings,
    old: Option<&PoolTable>,
) -> Vec<Arc<Backend>> {
    let now = now_ms();
    configs
        .iter()
        .map(|s| {
            let addr = address(&s.address);
            let settings = settings(s);
            let kept = old
                .and_then(|t| t.find(s.name()))
                .filter(|b| b.addr == addr)
                .cloned();
            match kept {
                Some(b) => {
                    b.reconfigure(&settings);
                    b
                }
                None => Arc::new(Backend::new(
                    s.name().to_string(),
                    addr,
                    &settings,
                    s.state,
                    now,
                )),
            }
        })
        .collect()
}

#[derive(Debug)]
pub struct Pool {
    pub name: String,
    table: Mutex<Arc<PoolTable>>,
    /// Bumped on every change a scheduler must see.
    generation: AtomicU64,
    /// Clients turned away because no server could take them.
    pub no_server: AtomicU64,
}

impl Pool {
    pub fn new(name: String, table: PoolTable) -> Pool {
        Pool {
            name,
            table: Mutex::new(Arc::new(table)),
            generation: AtomicU64::new(1),
            no_server: AtomicU64::new(0),
        }
    }

    pub fn table(&self) -> Arc<PoolTable> {
        lock(&self.table).clone()
    }

    /// Replaces the pool's make-up (a reload); connections keep their servers.
    pub fn replace(&self, table: PoolTable) {
        *lock(&self.table) = Arc::new(table);
        self.changed();
    }

    /// Something a scheduler reads changed (health, admin state, weight).
    pub fn changed(&self) {
        self.generation.fetch_add(1, Relaxed);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }
}

/// One worker's view of a pool.
#[derive(Debug)]
pub struct PoolCursor {
    generation: u64,
    table: Arc<PoolTable>,
    scheduler: Scheduler,
    seed: u64,
}

impl PoolCursor {
    pub fn new(pool: &Pool, seed: u64) -> PoolCursor {
        let table = pool.table();
        let mut c = PoolCursor {
            generation: 0,
            scheduler: Scheduler::new(table.scheduler, table.hash, seed),
            table,
            seed,
        };
        c.refresh(pool);
        c
    }

    fn refresh(&mut self, pool: &Pool) {
        let g = pool.generation();
        if g == self.generation {
            return;
        }
        self.generation = g;
        self.table = pool.table();
        if self.scheduler.kind() != self.table.scheduler {
            self.scheduler = Scheduler::new(self.table.scheduler, self.table.hash, self.seed);
        }
        let members: Vec<(&str, u32)> = self
            .table
            .servers
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    if s.in_service() {
                        s.current_weight()
                    } else {
                        0
                    },
                )
            })
            .collect();
        self.scheduler.rebuild(&members);
    }

    /// The server named `name`, as this worker's view of the pool has it.
    pub fn find(&mut self, pool: &Pool, name: &str) -> Option<Arc<Backend>> {
        self.refresh(pool);
        self.table.find(name).cloned()
    }

    /// The pool's persistence table as this worker last saw it.
    pub fn persistence(&self) -> Option<Arc<Persistence>> {
        self.table.persistence.clone()
    }

    /// The server for a new connection from `client`, avoiding `tried` (servers this
    /// connection already failed to reach): a real server, or the sorry server when the pool
    /// is below quorum or none can take it. `now` is read only for persistence, which most
    /// pools (every L7 pool) do not have.
    pub fn pick(
        &mut self,
        pool: &Pool,
        client: &Client,
        tried: &[Arc<Backend>],
        now: impl Fn() -> Instant,
    ) -> Option<Arc<Backend>> {
        self.refresh(pool);
        let t = &self.table;
        let was_tried = |s: &Arc<Backend>| tried.iter().any(|x| Arc::ptr_eq(x, s));
        // The last resort: the sorry server, else the client is turned away. Turning it away
        // is the caller's to count in `no_server`: a request waiting in a queue asks again
        // and again, and only giving up is a client without a server.
        let sorry = || t.sorry.as_ref().filter(|s| !was_tried(s)).cloned();
        if t.sorry.is_some() && t.usable_weight() < u64::from(t.quorum) {
            return sorry();
        }
        if let Some(p) = &t.persistence
            && let Some(s) = p.lookup(client.ip, now())
            && !was_tried(&s)
            && s.takes_persistent()
            && t.servers.iter().any(|x| Arc::ptr_eq(x, &s))
        {
            return Some(s);
        }
        let skip: Vec<usize> = (0..t.servers.len())
            .filter(|&i| was_tried(&t.servers[i]))
            .collect();
        match self.scheduler.pick(&t.servers, client, &skip) {
            Some(i) => {
                let server = t.servers[i].clone();
                if let Some(p) = &t.persistence {
                    p.bind(client.ip, &server, now());
                }
                Some(server)
            }
            None => sorry(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::backend::{AdminState, test_server};
    use std::net::IpAddr;
    use std::time::Duration;

    fn pool(
        servers: Vec<Arc<Backend>>,
        kind: SchedulerKind,
        sorry: Option<Arc<Backend>>,
        quorum: u32,
        persist: bool,
    ) -> Pool {
        Pool::new(
            "web".into(),
            PoolTable {
                servers,
                scheduler: kind,
                hash: HashOptions::default(),
                persistence: persist
                    .then(|| Arc::new(Persistence::new(Duration::from_secs(60), u32::MAX, 128))),
                sorry,
                quorum,
            },
        )
    }

    fn client(last: u8) -> Client {
        Client::new(IpAddr::from([10, 0, 0, last]), 1234)
    }

    #[test]
    fn the_sorry_server_takes_clients_only_below_quorum() {
        let (a, b, sorry) = (
            test_server("a", 1),
            test_server("b", 1),
            test_server("sorry", 1),
        );
        let p = pool(
            vec![a.clone(), b.clone()],
            SchedulerKind::Rr,
            Some(sorry.clone()),
            2,
            false,
        );
        let mut c = PoolCursor::new(&p, 1);
        let now = Instant::now();
        let is_sorry = |s: Arc<Backend>| Arc::ptr_eq(&s, &sorry);
        assert!(!is_sorry(
            c.pick(&p, &client(1), &[], || now).expect("pick")
        ));
        b.set_admin(AdminState::Maint, 1);
        p.changed();
        let pick = c.pick(&p, &client(1), &[], || now).expect("pick");
        assert!(is_sorry(pick), "weight 1 < quorum 2");
        a.set_admin(AdminState::Maint, 1);
        p.changed();
        assert!(is_sorry(c.pick(&p, &client(1), &[], || now).expect("pick")));
        assert!(
            c.pick(&p, &client(1), std::slice::from_ref(&sorry), || now)
                .is_none()
        );
    }

    #[test]
    fn persistence_keeps_a_client_on_its_server_while_usable_and_through_drain() {
        let (a, b) = (test_server("a", 1), test_server("b", 1));
        let p = pool(vec![a.clone(), b.clone()], SchedulerKind::Rr, None, 1, true);
        let mut c = PoolCursor::new(&p, 1);
        let now = Instant::now();
        let first = c.pick(&p, &client(9), &[], || now).expect("pick");
        for _ in 0..5 {
            let again = c.pick(&p, &client(9), &[], || now).expect("pick");
            assert!(Arc::ptr_eq(&first, &again));
        }
        first.set_admin(AdminState::Drain, 1);
        p.changed();
        let drained = c.pick(&p, &client(9), &[], || now).expect("pick");
        assert!(
            Arc::ptr_eq(&first, &drained),
            "a draining server keeps its persistent clients"
        );
        let fresh = c.pick(&p, &client(10), &[], || now).expect("pick");
        assert!(!Arc::ptr_eq(&first, &fresh), "but takes no new ones");
        first.set_admin(AdminState::Maint, 2);
        p.changed();
        let moved = c.pick(&p, &client(9), &[], || now).expect("pick");
        assert!(
            !Arc::ptr_eq(&first, &moved),
            "maintenance breaks persistence"
        );
    }

    #[test]
    fn a_reload_reaches_every_cursor() {
        let p = pool(vec![test_server("a", 1)], SchedulerKind::Rr, None, 1, false);
        let mut c = PoolCursor::new(&p, 1);
        let now = Instant::now();
        assert_eq!(c.pick(&p, &client(1), &[], || now).expect("pick").name, "a");
        p.replace(PoolTable {
            servers: vec![test_server("b", 1)],
            scheduler: SchedulerKind::Wlc,
            hash: HashOptions::default(),
            persistence: None,
            sorry: None,
            quorum: 1,
        });
        assert_eq!(c.pick(&p, &client(1), &[], || now).expect("pick").name, "b");
    }
}
