//! An L7 balancer node in this process over test HTTP servers, and what tests ask of it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use opsconsole::balance::backend::AdminState;
use opsconsole::control::{Command, Control, PoolSnapshot};
use opsconsole::node::Node;

use super::http::{HttpServer, get};

pub struct Balancer {
    pub rt: tokio::runtime::Runtime,
    pub node: Node,
}

pub fn servers_toml(servers: &[&HttpServer]) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("{{ name = \"{}\", address = \"{}\" }}", s.name, s.addr))
        .collect();
    format!("servers = [{}]", list.join(", "))
}

impl Balancer {
    /// One listener `main` routing everything to pool `web` (with `pool` settings, TOML
    /// lines) over `servers`.
    pub fn web(pool: &str, servers: &[&HttpServer]) -> Balancer {
        Balancer::from_toml(&format!(
            "[l7]\nthreads = 2\n[l7.listeners.main]\nlisten = \"127.0.0.1:0\"\nroutes = [{{ path = \"/\", pool = \"web\" }}]\n[l7.pools.web]\n{}\n{pool}\n",
            servers_toml(servers)
        ))
    }

    pub fn from_toml(text: &str) -> Balancer {
        let (rt, node) = super::node_from_toml(text);
        Balancer { rt, node }
    }

    pub fn addr(&self) -> SocketAddr {
        self.node
            .l7
            .as_ref()
            .and_then(|l| l.listen_addr("main"))
            .expect("main listens")
    }

    pub fn pool(&self, name: &str) -> PoolSnapshot {
        let snapshot = self.node.snapshot().l7.expect("l7 runs");
        snapshot
            .pools
            .into_iter()
            .find(|p| p.name == name)
            .expect("pool")
    }

    /// Asserts no server of `pool` was ejected or charged a response error: whatever went
    /// wrong was the client's (`why`).
    pub fn assert_no_server_blamed(&self, pool: &str, why: &str) {
        let pool = self.pool(pool);
        for server in &pool.servers {
            assert_eq!(
                (
                    server.ejections,
                    server.http.as_ref().map_or(0, |h| h.response_errors)
                ),
                (0, 0),
                "{why}, not {}: {pool:?}",
                server.name
            );
        }
    }

    pub fn act(&self, command: Command) -> String {
        let _guard = self.rt.enter();
        self.node.act(command).expect("command accepted").output
    }

    pub fn state(&self, server: &str, state: AdminState) {
        self.act(Command::SetServerState {
            pool: "web".into(),
            server: server.into(),
            state,
        });
    }

    /// Who answers `n` requests (each on a new connection), by name.
    pub fn spread(&self, n: usize) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let r = get(self.addr(), "test.local", "/", &[]).expect("a reply");
            assert_eq!(r.status, 200, "{}", r.text());
            *counts.entry(r.text()).or_insert(0) += 1;
        }
        counts
    }
}

pub fn servers(names: &[&str]) -> Vec<HttpServer> {
    names.iter().map(|n| HttpServer::start(n)).collect()
}
