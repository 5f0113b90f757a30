//! The L7 view's state: request rates of every route, pool and server taken from successive
//! snapshots, the selected server, the servers' order, and the rows a filter leaves. Plain
//! data and functions of the snapshot: no terminal, no I/O.

use std::collections::{BTreeMap, BTreeSet};

use crate::control::{L7Snapshot, ListenerSnapshot, PoolSnapshot, RouteSnapshot, ServerSnapshot};

use super::app::{ServerRef, server_key, server_matches, state_rank, step_selection};
use super::trend::{RequestCounters, RequestTrend};

/// The order of servers within an L7 pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum L7Sort {
    #[default]
    Name,
    /// Requests in flight.
    Active,
    /// Requests per second.
    Requests,
    /// Errors per second (5xx, response errors, failed connects).
    Errors,
    /// Slowest p99 first.
    Latency,
    /// Worst first, as in the L4 view.
    State,
}

impl L7Sort {
    pub fn label(self) -> &'static str {
        match self {
            L7Sort::Name => "name",
            L7Sort::Active => "active",
            L7Sort::Requests => "req/s",
            L7Sort::Errors => "errors/s",
            L7Sort::Latency => "p99",
            L7Sort::State => "state",
        }
    }

    pub fn next(self) -> L7Sort {
        match self {
            L7Sort::Name => L7Sort::Active,
            L7Sort::Active => L7Sort::Requests,
            L7Sort::Requests => L7Sort::Errors,
            L7Sort::Errors => L7Sort::Latency,
            L7Sort::Latency => L7Sort::State,
            L7Sort::State => L7Sort::Name,
        }
    }
}

/// What the L7 view shows: listeners with their routes, pools with their servers.
#[derive(Debug, Default)]
pub struct Visible<'a> {
    pub listeners: Vec<(&'a ListenerSnapshot, Vec<&'a RouteSnapshot>)>,
    pub pools: Vec<(&'a PoolSnapshot, Vec<&'a ServerSnapshot>)>,
}

impl Visible<'_> {
    /// The servers in the order the view lists them.
    pub fn server_refs(&self) -> Vec<ServerRef> {
        self.pools
            .iter()
            .flat_map(|(pool, servers)| {
                servers.iter().map(|s| ServerRef {
                    service: pool.name.clone(),
                    server: s.name.clone(),
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct L7State {
    /// Rates of routes, pools and servers, by `route_key`, `pool_key` and `server_key`.
    pub trends: BTreeMap<String, RequestTrend>,
    /// The selected server; `service` is its pool.
    pub selected: Option<ServerRef>,
    pub sort: L7Sort,
}

/// Requests tried on an L7 server. The balancer takes one of the server's connection slots
/// for each try, so `total_conns` counts them even where `http.requests` is not kept.
pub fn server_requests(s: &ServerSnapshot) -> u64 {
    let counted = s.http.as_ref().map_or(0, |h| h.requests);
    counted.max(s.total_conns)
}

/// What a server's rates count: requests, and errors of every kind.
pub fn server_counters(s: &ServerSnapshot) -> RequestCounters {
    let http = s.http.clone().unwrap_or_default();
    RequestCounters {
        requests: server_requests(s),
        errors: http.responses[4] + http.response_errors + s.connect_errors,
    }
}

fn pool_key(pool: &str) -> String {
    format!("pool {pool}")
}

fn route_key(listener: &str, r: &RouteSnapshot) -> String {
    format!(
        "route {listener} {}{}",
        r.host.as_deref().unwrap_or(""),
        r.path
    )
}

/// How a route reads: `host/path`, or the path alone for the default host.
pub fn route_label(r: &RouteSnapshot) -> String {
    format!("{}{}", r.host.as_deref().unwrap_or(""), r.path)
}

impl L7State {
    /// Folds in a snapshot's counters; routes, pools and servers gone are forgotten.
    pub fn observe(&mut self, at_ms: u64, l7: Option<&L7Snapshot>) {
        let mut seen = BTreeSet::new();
        let mut fold = |key: String, c: RequestCounters, p99: Option<u64>| {
            self.trends
                .entry(key.clone())
                .or_default()
                .observe(at_ms, c, p99);
            seen.insert(key);
        };
        for l in l7.iter().flat_map(|l| &l.listeners) {
            for r in &l.routes {
                let c = RequestCounters {
                    requests: r.http.requests,
                    errors: r.http.responses[4] + r.http.response_errors,
                };
                fold(route_key(&l.name, r), c, r.http.p99_us);
            }
        }
        for pool in l7.iter().flat_map(|l| &l.pools) {
            let c = RequestCounters {
                requests: pool.http.requests,
                errors: pool.http.responses[4] + pool.http.response_errors + pool.no_server,
            };
            fold(pool_key(&pool.name), c, pool.http.p99_us);
            for s in &pool.servers {
                let p99 = s.http.as_ref().and_then(|h| h.p99_us);
                fold(server_key(&pool.name, &s.name), server_counters(s), p99);
            }
        }
        self.trends.retain(|k, _| seen.contains(k));
    }

    pub fn server_trend(&self, pool: &str, server: &str) -> Option<&RequestTrend> {
        self.trends.get(&server_key(pool, server))
    }

    pub fn pool_trend(&self, pool: &str) -> Option<&RequestTrend> {
        self.trends.get(&pool_key(pool))
    }

    pub fn route_trend(&self, listener: &str, r: &RouteSnapshot) -> Option<&RequestTrend> {
        self.trends.get(&route_key(listener, r))
    }

    /// The rows the view shows: filtered, servers sorted. A listener whose name or address
    /// matches shows all its routes, a pool whose name or algorithm matches all its servers;
    /// otherwise routes match by host, path or pool, servers by name, address or state.
    pub fn visible<'a>(&self, l7: Option<&'a L7Snapshot>, filter: &str) -> Visible<'a> {
        let f = filter.to_lowercase();
        let mut out = Visible::default();
        let Some(l7) = l7 else {
            return out;
        };
        for l in &l7.listeners {
            let whole = f.is_empty() || l.name.to_lowercase().contains(&f) || l.listen.contains(&f);
            let routes: Vec<&RouteSnapshot> = l
                .routes
                .iter()
                .filter(|r| {
                    whole
                        || route_label(r).to_lowercase().contains(&f)
                        || r.pool.to_lowercase().contains(&f)
                })
                .collect();
            if whole || !routes.is_empty() {
                out.listeners.push((l, routes));
            }
        }
        for pool in &l7.pools {
            let whole = f.is_empty()
                || pool.name.to_lowercase().contains(&f)
                || pool.algorithm.to_lowercase().contains(&f);
            let mut servers: Vec<&ServerSnapshot> = pool
                .servers
                .iter()
                .filter(|s| whole || server_matches(s, &f))
                .collect();
            if servers.is_empty() && !whole {
                continue;
            }
            self.sort_servers(&pool.name, &mut servers);
            out.pools.push((pool, servers));
        }
        out
    }

    fn sort_servers(&self, pool: &str, servers: &mut [&ServerSnapshot]) {
        let rates = |s: &ServerSnapshot| {
            self.server_trend(pool, &s.name)
                .map(|t| t.rates)
                .unwrap_or_default()
        };
        let p99 = |s: &ServerSnapshot| s.http.as_ref().and_then(|h| h.p99_us);
        match self.sort {
            L7Sort::Name => servers.sort_by(|a, b| a.name.cmp(&b.name)),
            L7Sort::Active => servers.sort_by_key(|s| std::cmp::Reverse(s.active)),
            L7Sort::Requests => {
                servers.sort_by(|a, b| rates(b).requests.total_cmp(&rates(a).requests))
            }
            L7Sort::Errors => servers.sort_by(|a, b| {
                rates(b)
                    .errors
                    .total_cmp(&rates(a).errors)
                    .then_with(|| server_counters(b).errors.cmp(&server_counters(a).errors))
            }),
            // Servers with no recent response (None) go last.
            L7Sort::Latency => servers.sort_by_key(|s| std::cmp::Reverse(p99(s))),
            L7Sort::State => servers.sort_by_key(|s| state_rank(s)),
        }
    }

    /// The selected server and its pool, while the snapshot has them.
    pub fn selected_server<'a>(
        &self,
        l7: Option<&'a L7Snapshot>,
    ) -> Option<(&'a PoolSnapshot, &'a ServerSnapshot)> {
        let r = self.selected.as_ref()?;
        let pool = l7?.pools.iter().find(|p| p.name == r.service)?;
        let server = pool.servers.iter().find(|s| s.name == r.server)?;
        Some((pool, server))
    }

    /// After a refresh: a selection that is gone gives way to the first server shown.
    pub fn keep_selection(&mut self, l7: Option<&L7Snapshot>, filter: &str) {
        if self.selected_server(l7).is_none() {
            self.selected = self.visible(l7, filter).server_refs().into_iter().next();
        }
    }

    /// Moves the selection `delta` rows through the servers shown; a selection the filter
    /// hides gives way to the first server shown.
    pub fn move_by(&mut self, l7: Option<&L7Snapshot>, filter: &str, delta: isize) {
        let rows = self.visible(l7, filter).server_refs();
        if let Some(to) = step_selection(&rows, self.selected.as_ref(), delta) {
            self.selected = Some(to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::backend::AdminState;
    use crate::balance::health::Phase;
    use crate::control::HttpStats;

    fn server(name: &str, requests: u64, active: u32, p99: Option<u64>) -> ServerSnapshot {
        ServerSnapshot {
            name: name.into(),
            address: format!("127.0.0.1:80{}", &name[name.len() - 1..]),
            admin: AdminState::Ready,
            health: Phase::Up,
            checked: true,
            weight: 1,
            configured_weight: 1,
            active,
            inactive: 0,
            total_conns: requests,
            bytes_in: 0,
            bytes_out: 0,
            connect_errors: 0,
            retries: 0,
            overloaded: false,
            removable: false,
            check_status: Some("L7OK 200".into()),
            check_duration_us: Some(300),
            state_since_ms: 0,
            slow_start_pct: None,
            ejected_for_ms: None,
            ejections: 0,
            http: Some(HttpStats {
                requests,
                responses: [0, requests, 0, 0, 0],
                p99_us: p99,
                ..HttpStats::default()
            }),
        }
    }

    fn snapshot(scale: u64) -> L7Snapshot {
        let route = |host: Option<&str>, path: &str, pool: &str, requests: u64| RouteSnapshot {
            host: host.map(Into::into),
            path: path.into(),
            pool: pool.into(),
            http: HttpStats {
                requests,
                ..HttpStats::default()
            },
        };
        let pool = |name: &str, algorithm: &str, servers: Vec<ServerSnapshot>| PoolSnapshot {
            name: name.into(),
            algorithm: algorithm.into(),
            http: HttpStats {
                requests: servers
                    .iter()
                    .filter_map(|s| s.http.as_ref())
                    .map(|h| h.requests)
                    .sum(),
                ..HttpStats::default()
            },
            servers,
            ..PoolSnapshot::default()
        };
        L7Snapshot {
            listeners: vec![ListenerSnapshot {
                name: "front".into(),
                listen: "127.0.0.1:8080".into(),
                routes: vec![
                    route(None, "/", "web", 30 * scale),
                    route(Some("api.example.com"), "/", "api", 10 * scale),
                ],
                ..ListenerSnapshot::default()
            }],
            pools: vec![
                pool(
                    "api",
                    "leastconn",
                    vec![server("app1", 5 * scale, 0, Some(900))],
                ),
                pool(
                    "web",
                    "roundrobin",
                    vec![
                        server("app3", 10 * scale, 1, Some(2_000)),
                        server("app1", 10 * scale, 4, Some(200_000)),
                        server("app2", 20 * scale, 0, None),
                    ],
                ),
            ],
        }
    }

    fn names(v: &Visible) -> Vec<String> {
        v.server_refs()
            .iter()
            .map(|r| format!("{}/{}", r.service, r.server))
            .collect()
    }

    #[test]
    fn rates_come_from_successive_snapshots() {
        let mut st = L7State::default();
        st.observe(0, Some(&snapshot(1)));
        st.observe(2_000, Some(&snapshot(3)));
        let app2 = st.server_trend("web", "app2").expect("app2");
        assert_eq!(app2.rates.requests, 20.0, "40 more requests in 2 s");
        let route = &snapshot(1).listeners[0].routes[1];
        let api = st.route_trend("front", route).expect("route");
        assert_eq!(api.rates.requests, 10.0);
        assert_eq!(st.pool_trend("web").expect("pool").rates.requests, 40.0);
        st.observe(3_000, None);
        assert!(st.trends.is_empty(), "a balancer gone leaves no trend");
    }

    #[test]
    fn servers_sort_by_name_active_rate_and_latency() {
        let snap = snapshot(3);
        let mut st = L7State::default();
        st.observe(0, Some(&snapshot(1)));
        st.observe(2_000, Some(&snap));
        let order = |st: &L7State| names(&st.visible(Some(&snap), ""));
        assert_eq!(order(&st), ["api/app1", "web/app1", "web/app2", "web/app3"]);
        st.sort = L7Sort::Active;
        assert_eq!(order(&st), ["api/app1", "web/app1", "web/app3", "web/app2"]);
        st.sort = L7Sort::Requests;
        assert_eq!(order(&st)[1], "web/app2");
        st.sort = L7Sort::Latency;
        assert_eq!(
            order(&st),
            ["api/app1", "web/app1", "web/app3", "web/app2"],
            "the slowest first, no latency last"
        );
    }

    #[test]
    fn the_filter_keeps_matching_routes_pools_and_servers() {
        let snap = snapshot(1);
        let st = L7State::default();
        let v = st.visible(Some(&snap), "app2");
        assert_eq!(names(&v), ["web/app2"]);
        assert!(v.listeners.is_empty(), "no route mentions app2");
        let v = st.visible(Some(&snap), "api");
        assert_eq!(names(&v), ["api/app1"], "a pool's name shows all of it");
        assert_eq!(v.listeners[0].1.len(), 1, "the route to api");
        let v = st.visible(Some(&snap), "leastconn");
        assert_eq!(names(&v), ["api/app1"], "so does its algorithm");
        let v = st.visible(Some(&snap), "front");
        assert_eq!(
            v.listeners[0].1.len(),
            2,
            "a listener's name shows all its routes"
        );
    }

    #[test]
    fn the_selection_walks_the_servers_shown_and_survives_refreshes() {
        let snap = snapshot(1);
        let mut st = L7State::default();
        st.keep_selection(Some(&snap), "");
        let sel = |st: &L7State| {
            let r = st.selected.clone().expect("selected");
            format!("{}/{}", r.service, r.server)
        };
        assert_eq!(sel(&st), "api/app1");
        st.move_by(Some(&snap), "", 2);
        assert_eq!(sel(&st), "web/app2");
        st.move_by(Some(&snap), "", 10);
        assert_eq!(sel(&st), "web/app3", "stops at the last");
        st.keep_selection(Some(&snap), "");
        assert_eq!(sel(&st), "web/app3");
        st.move_by(Some(&snap), "app1", 1);
        assert_eq!(sel(&st), "api/app1", "a hidden selection gives way");
        let (pool, server) = st.selected_server(Some(&snap)).expect("found");
        assert_eq!((pool.name.as_str(), server.name.as_str()), ("api", "app1"));
    }
}
