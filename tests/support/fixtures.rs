//! Fixed snapshots for the console tests: a streaming pair, a slave 37% through its
//! marugoto copy, and a pair just after failover. Times are fixed so renders are repeatable.

use std::collections::VecDeque;

use opsconsole::balance::backend::AdminState;
use opsconsole::balance::health::Phase;
use opsconsole::control::{
    AppServerSnapshot, CacheSnapshot, HttpStats, L7Snapshot, ListenerSnapshot, PoolSnapshot,
    ReplicationSnapshot, RouteSnapshot, ServerSnapshot, ServiceSnapshot, Snapshot, TrafficSnapshot,
};
use opsconsole::replication::shared::{CopyProgress, LinkPhase, NodeRole, Status};
use opsconsole::tui::app::{Action, App};

/// 2023-11-14 22:13:20 UTC.
pub const T0: u64 = 1_700_000_000_000;

fn status(
    role: NodeRole,
    epoch: u64,
    link: LinkPhase,
    peer: &str,
    peer_node: Option<u32>,
) -> Status {
    Status {
        role,
        epoch,
        link,
        peer: Some(peer.to_string()),
        peer_node,
        peer_cache: None,
        last_heard_ms: peer_node.map(|_| T0 - 120),
        held_until_ms: None,
        copy_in: None,
        copy_out: None,
        events: VecDeque::new(),
    }
}

fn replication(node: &str, listen: &str, status: Status) -> ReplicationSnapshot {
    ReplicationSnapshot {
        node_id: node.to_string(),
        listen: listen.to_string(),
        serving: true,
        lag_bytes: 0,
        backlog_bytes: 48_213,
        heartbeat_age_ms: status.last_heard_ms.map(|t| T0 - t),
        items_sent: 1_204,
        bytes_sent: 160_311,
        items_received: 388,
        bytes_received: 51_020,
        full_resyncs: 1,
        partial_resyncs: 0,
        conflicts: 0,
        links_refused: 0,
        link_losses: 0,
        sync_failures: 0,
        status,
    }
}

fn cache(role: &str, listen: &str, scale: u64) -> CacheSnapshot {
    CacheSnapshot {
        role: role.to_string(),
        listen: listen.to_string(),
        stopped: false,
        local_peer: Some(if role == "master" { "slave" } else { "master" }.to_string()),
        curr_items: 1_500 * scale,
        total_items: 2_000 * scale,
        bytes: 310_000 * scale,
        limit_maxbytes: 64 << 20,
        evictions: 0,
        reclaimed: 3,
        curr_connections: 2,
        total_connections: 5,
        rejected_connections: 0,
        cmd_get: 9_000 * scale,
        cmd_set: 3_000 * scale,
        cmd_touch: 0,
        get_hits: 6_300 * scale,
        get_misses: 2_700 * scale,
        delete_hits: 10,
        delete_misses: 2,
        incr_hits: 0,
        decr_hits: 0,
        bytes_read: 400_000 * scale,
        bytes_written: 900_000 * scale,
        idle_kicks: 0,
        request_timeouts: 0,
        send_timeouts: 0,
        replication: None,
    }
}

fn snapshot(caches: Vec<CacheSnapshot>, at_ms: u64) -> Snapshot {
    Snapshot {
        version: "0.1.0".into(),
        pid: 4242,
        uptime_secs: 600,
        at_ms,
        caches,
        traffic: Some(TrafficSnapshot {
            paused: false,
            rate_per_sec: 40,
            requests: 24_000,
            errors: 3,
            ..TrafficSnapshot::default()
        }),
        l4: None,
        apps: Vec::new(),
        l7: None,
    }
}

/// Master and slave, both streaming. `step` advances counters by one second's traffic.
pub fn streaming(step: u64) -> Snapshot {
    let mut m = cache("master", "127.0.0.1:11311", 1);
    let mut s = cache("slave", "127.0.0.1:11411", 1);
    m.cmd_get += 30 * step;
    m.get_hits += 20 * step;
    m.get_misses += 10 * step;
    m.cmd_set += 10 * step;
    s.cmd_get += 30 * step;
    s.get_hits += 15 * step;
    s.get_misses += 15 * step;
    let mut ms = status(
        NodeRole::Master,
        1,
        LinkPhase::Streaming,
        "127.0.0.1:11412",
        Some(0x5e6f7a8b),
    );
    ms.peer_cache = Some("127.0.0.1:11411".into());
    ms.events = VecDeque::from(vec![
        (T0 - 60_000, "listening for a slave".to_string()),
        (
            T0 - 59_000,
            "link up with node 5e6f7a8b at 127.0.0.1:11412 as MASTER".to_string(),
        ),
        (
            T0 - 59_000,
            "marugoto copy to the peer started: 1500 items".to_string(),
        ),
        (
            T0 - 58_000,
            "marugoto copy to the peer complete".to_string(),
        ),
        (T0 - 58_000, "streaming".to_string()),
    ]);
    ms.copy_out = Some(CopyProgress {
        items_done: 1_500,
        items_total: 1_500,
        bytes_done: 310_000,
        bytes_total: 310_000,
        started_ms: T0 - 59_000,
        finished_ms: Some(T0 - 58_000),
    });
    let mut ss = status(
        NodeRole::Slave,
        1,
        LinkPhase::Streaming,
        "127.0.0.1:11312",
        Some(0x1a2b3c4d),
    );
    ss.peer_cache = Some("127.0.0.1:11311".into());
    ss.events = VecDeque::from(vec![
        (
            T0 - 59_000,
            "link up with node 1a2b3c4d at 127.0.0.1:40112 as SLAVE".to_string(),
        ),
        (T0 - 58_000, "streaming".to_string()),
    ]);
    m.replication = Some(replication("1a2b3c4d", "127.0.0.1:11312", ms));
    s.replication = Some(replication("5e6f7a8b", "127.0.0.1:11412", ss));
    snapshot(vec![m, s], T0 + step * 1000)
}

/// The slave 37% through receiving its marugoto copy (not serving yet).
pub fn copying() -> Snapshot {
    let mut snap = streaming(0);
    for c in &mut snap.caches {
        let Some(r) = c.replication.as_mut() else {
            continue;
        };
        r.status.link = LinkPhase::Copying;
        let progress = CopyProgress {
            items_done: 37_000,
            items_total: 100_000,
            bytes_done: 4_850_000,
            bytes_total: 13_100_000,
            started_ms: T0 - 2_000,
            finished_ms: None,
        };
        if r.status.role == NodeRole::Slave {
            r.serving = false;
            r.status.copy_in = Some(progress);
            r.status.events.push_back((
                T0 - 2_000,
                "marugoto copy from the peer started: 100000 items".into(),
            ));
        } else {
            r.status.copy_out = Some(progress);
            r.lag_bytes = 6_900_000;
        }
    }
    snap
}

/// The master's node was stopped; the slave took over a moment ago.
pub fn failed_over() -> Snapshot {
    let mut snap = streaming(0);
    let m = &mut snap.caches[0];
    *m = CacheSnapshot {
        role: "master".into(),
        listen: "127.0.0.1:11311".into(),
        stopped: true,
        local_peer: Some("slave".into()),
        limit_maxbytes: 64 << 20,
        ..CacheSnapshot::default()
    };
    let s = &mut snap.caches[1];
    let Some(r) = s.replication.as_mut() else {
        return snap;
    };
    r.status.role = NodeRole::Master;
    r.status.epoch = 2;
    r.status.link = LinkPhase::Listening;
    r.status.peer_node = None;
    r.heartbeat_age_ms = Some(1_400);
    r.link_losses = 1;
    r.status
        .events
        .push_back((T0 - 400, "link down: peer closed the link".into()));
    r.status.events.push_back((
        T0 - 400,
        "promoted to master (epoch 2): lost the master".into(),
    ));
    snap
}

fn server(
    name: &str,
    address: &str,
    admin: AdminState,
    health: Phase,
    scale: u64,
) -> ServerSnapshot {
    ServerSnapshot {
        name: name.into(),
        address: address.into(),
        admin,
        health,
        checked: true,
        weight: 10,
        configured_weight: 10,
        active: 3 * scale as u32,
        inactive: 12 * scale as u32,
        total_conns: 40_000 * scale,
        bytes_in: 9_000_000 * scale,
        bytes_out: 52_000_000 * scale,
        connect_errors: 0,
        retries: 0,
        overloaded: false,
        removable: false,
        check_status: Some("L7OK 200".into()),
        check_duration_us: Some(850),
        state_since_ms: T0 - 754_000,
        slow_start_pct: None,
        ejected_for_ms: None,
        ejections: 0,
        http: None,
    }
}

fn service(
    name: &str,
    listen: &str,
    scheduler: &str,
    servers: Vec<ServerSnapshot>,
) -> ServiceSnapshot {
    let sum = |f: fn(&ServerSnapshot) -> u64| servers.iter().map(f).sum::<u64>();
    ServiceSnapshot {
        name: name.into(),
        listen: listen.into(),
        scheduler: scheduler.into(),
        persistence_secs: 0,
        quorum_met: true,
        active: sum(|s| u64::from(s.active)),
        inactive: sum(|s| u64::from(s.inactive)),
        total_conns: sum(|s| s.total_conns),
        bytes_in: sum(|s| s.bytes_in),
        bytes_out: sum(|s| s.bytes_out),
        connect_errors: sum(|s| s.connect_errors),
        retries: sum(|s| s.retries),
        no_server: 0,
        servers,
        sorry_server: None,
    }
}

/// An L4 balancer with every server state: `web` over three app servers (one UP, one
/// drained and empty at a lowered weight, one DOWN and coming back up), and `cache` over a
/// cache pair (the slave in maintenance) with a sorry server standing by.
pub fn balancer() -> Snapshot {
    let app1 = server("app1", "127.0.0.1:8081", AdminState::Ready, Phase::Up, 2);
    let mut app2 = server("app2", "127.0.0.1:8082", AdminState::Drain, Phase::Up, 1);
    app2.active = 0;
    app2.removable = true;
    app2.weight = 0;
    app2.state_since_ms = T0 - 42_000;
    let mut app3 = server(
        "app3",
        "127.0.0.1:8083",
        AdminState::Ready,
        Phase::GoingUp { passed: 1, rise: 2 },
        1,
    );
    app3.active = 0;
    app3.connect_errors = 17;
    app3.check_status = Some("L4CON connection refused".into());
    app3.check_duration_us = Some(120);
    app3.state_since_ms = T0 - 9_500;
    let mut web = service("web", "127.0.0.1:8000", "wlc", vec![app1, app2, app3]);
    web.retries = 17;
    let master = server("master", "127.0.0.1:11311", AdminState::Ready, Phase::Up, 1);
    let mut slave = server("slave", "127.0.0.1:11411", AdminState::Maint, Phase::Up, 1);
    slave.active = 1;
    slave.check_status = None;
    slave.check_duration_us = None;
    let mut cache = service("cache", "127.0.0.1:11211", "sh", vec![master, slave]);
    cache.persistence_secs = 300;
    let mut sorry = server("sorry", "127.0.0.1:9999", AdminState::Ready, Phase::Up, 0);
    sorry.checked = false;
    cache.sorry_server = Some(sorry);
    Snapshot {
        version: "0.1.0".into(),
        pid: 4242,
        uptime_secs: 600,
        at_ms: T0,
        caches: Vec::new(),
        traffic: None,
        l4: Some(vec![cache, web]),
        apps: Vec::new(),
        l7: None,
    }
}

/// An L7 server with HTTP counters: `requests` tried on it (the balancer counts them as its
/// connections), `errors_5xx` of them answered 5xx, `p99_ms` its recent p99.
fn http_server(
    name: &str,
    port: u16,
    requests: u64,
    errors_5xx: u64,
    p99_ms: u64,
) -> ServerSnapshot {
    let mut s = server(
        name,
        &format!("127.0.0.1:{port}"),
        AdminState::Ready,
        Phase::Up,
        1,
    );
    s.weight = 1;
    s.configured_weight = 1;
    s.active = 0;
    s.inactive = 0;
    s.total_conns = requests;
    s.bytes_in = 0;
    s.bytes_out = 0;
    s.http = Some(HttpStats {
        requests: 0,
        responses: [0, requests - errors_5xx, 0, 0, errors_5xx],
        response_errors: 0,
        p50_us: Some(p99_ms * 1000 / 3),
        p90_us: Some(p99_ms * 1000 * 2 / 3),
        p99_us: Some(p99_ms * 1000),
        ..HttpStats::default()
    });
    s
}

fn l7_pool(name: &str, algorithm: &str, servers: Vec<ServerSnapshot>) -> PoolSnapshot {
    let http = |s: &ServerSnapshot| s.http.clone().unwrap_or_default();
    let requests: u64 = servers.iter().map(|s| s.total_conns).sum();
    let fives: u64 = servers.iter().map(|s| http(s).responses[4]).sum();
    PoolSnapshot {
        name: name.into(),
        algorithm: algorithm.into(),
        active: servers.iter().map(|s| u64::from(s.active)).sum(),
        retries: fives / 2,
        redispatches: fives / 2,
        no_server: 0,
        queued: 0,
        queue_timeouts: 0,
        http: HttpStats {
            requests,
            responses: [0, requests - fives / 2, 0, 0, fives / 2],
            response_errors: 0,
            p50_us: Some(420),
            p90_us: Some(1_900),
            p99_us: Some(212_000),
            ..HttpStats::default()
        },
        servers,
    }
}

/// The demo's chain seen from the L7 balancer: listener `front` routes `/` to `pages`
/// (roundrobin) and `/api/` to `api` (leastconn), both over the demo's three app servers;
/// app2 is made slow (200 ms) and failing (25%), and api's app3 is drained. The L4 `web`
/// service in front has the L7 listener as its one server.
pub fn l7_balancer() -> Snapshot {
    let mut slow = http_server("app2", 11582, 11_900, 1_500, 212);
    slow.check_duration_us = Some(410);
    let pages = l7_pool(
        "pages",
        "roundrobin",
        vec![http_server("app1", 11581, 12_000, 0, 2), slow, {
            let mut s = http_server("app3", 11583, 24_100, 0, 1);
            s.weight = 2;
            s.configured_weight = 2;
            s
        }],
    );
    let mut api_slow = http_server("app2", 11582, 4_600, 1_150, 212);
    api_slow.active = 2;
    let mut drained = http_server("app3", 11583, 3_900, 0, 1);
    drained.admin = AdminState::Drain;
    drained.weight = 0;
    drained.removable = true;
    drained.state_since_ms = T0 - 42_000;
    let api = l7_pool(
        "api",
        "leastconn",
        vec![http_server("app1", 11581, 16_200, 0, 2), api_slow, drained],
    );
    let route = |path: &str, pool: &PoolSnapshot| RouteSnapshot {
        host: None,
        path: path.into(),
        pool: pool.name.clone(),
        http: HttpStats {
            p50_us: None,
            p90_us: None,
            p99_us: None,
            ..pool.http.clone()
        },
    };
    let front = ListenerSnapshot {
        name: "front".into(),
        listen: "127.0.0.1:11590".into(),
        active_conns: 3,
        total_conns: pages.http.requests + api.http.requests,
        no_route: 0,
        rejected: 0,
        routes: vec![route("/", &pages), route("/api/", &api)],
    };
    let mut l7_server = server("l7", "127.0.0.1:11590", AdminState::Ready, Phase::Up, 1);
    l7_server.weight = 1;
    l7_server.configured_weight = 1;
    let web = service("web", "127.0.0.1:11580", "wlc", vec![l7_server]);
    let app = |n: u16, latency_ms: u64, error_percent: u8| AppServerSnapshot {
        name: format!("app{n}"),
        address: format!("127.0.0.1:{}", 11580 + n),
        running: true,
        requests: 30_000,
        latency_ms,
        error_percent,
        errors: if error_percent > 0 { 2_650 } else { 0 },
    };
    Snapshot {
        version: "0.1.0".into(),
        pid: 4242,
        uptime_secs: 600,
        at_ms: T0,
        caches: Vec::new(),
        traffic: None,
        l4: Some(vec![web]),
        apps: vec![app(1, 0, 0), app(2, 200, 25), app(3, 0, 0)],
        l7: Some(L7Snapshot {
            listeners: vec![front],
            pools: vec![api, pages],
        }),
    }
}

/// An app that has watched `snapshot`'s traffic for a minute (so it has rates and a
/// sparkline): one refresh a second, traffic rising and falling.
pub fn app_with(snapshot: Snapshot) -> App {
    let mut app = App::new(false, 300_000);
    const SECONDS: u64 = 60;
    // Gets in the second that ended `t` seconds before the snapshot.
    let gets_in = |t: u64| 20 + (t * 7 % 30);
    for s in (1..=SECONDS).rev() {
        let mut earlier = snapshot.clone();
        earlier.at_ms = snapshot.at_ms.saturating_sub(s * 1000);
        let back: u64 = (1..=s).map(gets_in).sum();
        for c in &mut earlier.caches {
            c.cmd_get = c.cmd_get.saturating_sub(back);
            c.get_hits = c.get_hits.saturating_sub(back * 2 / 3);
            c.get_misses = c.cmd_get.saturating_sub(c.get_hits);
        }
        // Balanced servers see the same shape of traffic, scaled by their share.
        for svc in earlier.l4.iter_mut().flatten() {
            let (mut conns, mut bytes_in, mut bytes_out) = (0, 0, 0);
            for srv in &mut svc.servers {
                let share = srv.total_conns / 40_000;
                srv.total_conns -= back * share;
                srv.bytes_in -= back * share * 300;
                srv.bytes_out -= back * share * 1_700;
                conns += back * share;
                bytes_in += back * share * 300;
                bytes_out += back * share * 1_700;
            }
            svc.total_conns -= conns;
            svc.bytes_in -= bytes_in;
            svc.bytes_out -= bytes_out;
        }
        // L7 servers too: requests (counted as their connections) and 2xx answers.
        if let Some(l7) = earlier.l7.as_mut() {
            for pool in &mut l7.pools {
                let mut requests = 0;
                for srv in &mut pool.servers {
                    let n = back * (srv.total_conns / 4_000);
                    srv.total_conns -= n;
                    if let Some(h) = srv.http.as_mut() {
                        h.responses[1] -= n;
                    }
                    requests += n;
                }
                pool.http.requests -= requests;
                pool.http.responses[1] -= requests;
                for l in &mut l7.listeners {
                    for r in l.routes.iter_mut().filter(|r| r.pool == pool.name) {
                        r.http.requests -= requests;
                        r.http.responses[1] -= requests;
                    }
                }
            }
        }
        app.update(Action::Refresh(Box::new(earlier), Vec::new()));
    }
    app.update(Action::Refresh(Box::new(snapshot), Vec::new()));
    app
}
