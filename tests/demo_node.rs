//! The demo's pair in one process, through the control surface: killing the peer stops that
//! node entirely (its port refuses connections), the survivor takes over, and reviving starts
//! it again at the same addresses, where it rejoins as slave and receives a full copy. The
//! built-in demo's chain L4 -> L7 -> app servers, and its app servers' latency and error rate.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use opsconsole::config::{CacheConfig, Config, DemoConfig};
use opsconsole::control::{Command, Control};
use opsconsole::node::Node;
use opsconsole::replication::shared::NodeRole;
use support::cluster::{repl, runtime};
use support::http::get;
use support::{
    Client, DEADLINE, demo_on_free_ports, free_port, node_from_toml, scratch, wait_until,
};

fn demo_config() -> Config {
    let (a, b) = (free_port(), free_port());
    let cache = |r| CacheConfig {
        port: 0,
        replication: Some(r),
        ..CacheConfig::default()
    };
    Config {
        master: Some(cache(repl(a, b))),
        slave: Some(cache(repl(b, a))),
        demo: Some(DemoConfig {
            requests_per_sec: 50,
            keys: 50,
            value_size: 10,
            preload_keys: 300,
            ..DemoConfig::default()
        }),
        ..Config::default()
    }
}

fn role_of(node: &Node, name: &str) -> Option<NodeRole> {
    node.snapshot()
        .caches
        .iter()
        .find(|c| c.role == name)
        .and_then(|c| c.replication.as_ref())
        .map(|r| r.status.role)
}

fn streaming(node: &Node) -> bool {
    node.snapshot().caches.iter().all(|c| {
        c.replication
            .as_ref()
            .is_some_and(|r| r.status.link == opsconsole::replication::shared::LinkPhase::Streaming)
    })
}

#[test]
fn kill_stops_the_peer_node_and_revive_brings_it_back_as_slave() {
    let rt = runtime();
    let node = rt
        .block_on(Node::start(&demo_config()))
        .expect("demo starts");
    let master = node.caches[0].addr;
    let slave = node.caches[1].addr;
    wait_until("the pair to stream", || streaming(&node));
    let snap = node.snapshot();
    assert_eq!(snap.caches[0].local_peer.as_deref(), Some("slave"));
    assert!(
        snap.caches[0].curr_items >= 300,
        "the preload is on the master"
    );

    node.act(Command::KillPeer {
        role: "slave".into(),
        hold_ms: 1,
    })
    .expect("kill");
    wait_until("the master's port to close", || {
        TcpStream::connect(master).is_err()
    });
    wait_until("the slave to take over", || {
        role_of(&node, "slave") == Some(NodeRole::Master)
    });
    assert!(node.snapshot().caches[0].stopped);
    assert!(
        node.act(Command::KillPeer {
            role: "slave".into(),
            hold_ms: 1
        })
        .is_err(),
        "killing a stopped peer again is refused"
    );

    let mut c = Client::connect(slave);
    assert_eq!(c.call(b"set after 0 0 2\r\nok\r\n", b"\r\n"), b"STORED\r\n");

    node.act(Command::RevivePeer {
        role: "slave".into(),
    })
    .expect("revive");
    wait_until("the old master to rejoin as slave and stream", || {
        role_of(&node, "master") == Some(NodeRole::Slave) && streaming(&node)
    });
    assert_eq!(
        node.caches[0].addr, master,
        "it came back at the same address"
    );
    let mut c = Client::connect(master);
    assert_eq!(
        c.call(b"get after\r\n", b"END\r\n"),
        b"VALUE after 0 2\r\nok\r\nEND\r\n"
    );
    rt.block_on(node.shutdown(std::time::Duration::from_secs(5)));
}

#[test]
fn the_traffic_generator_runs_and_pauses() {
    let rt = runtime();
    let node = rt
        .block_on(Node::start(&demo_config()))
        .expect("demo starts");
    wait_until("traffic", || {
        node.snapshot().traffic.is_some_and(|t| t.requests > 20)
    });
    node.act(Command::PauseTraffic { paused: true })
        .expect("pause");
    let t = node.snapshot().traffic.expect("traffic");
    assert!(t.paused);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let later = node.snapshot().traffic.expect("traffic");
    assert!(later.requests <= t.requests + 1, "paused traffic stops");
    rt.block_on(node.shutdown(std::time::Duration::from_secs(5)));
}

/// The demo's balancing half: three app servers behind an L4 web service with HTTP checks,
/// HTTP traffic through it, cache traffic through an L4 service over the pair.
fn balanced_demo_config() -> Config {
    let (a, b) = (free_port(), free_port());
    let (master, slave) = (free_port(), free_port());
    let apps: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let servers: Vec<String> = apps
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{{ name = \"app{}\", address = \"127.0.0.1:{p}\" }}", i + 1))
        .collect();
    let text = format!(
        r#"
[demo]
requests_per_sec = 50
keys = 50
value_size = 10
apps = [{apps}]
cache_service = "cache"
http_service = "web"
http_requests_per_sec = 60

[master]
port = {master}
[master.replication]
listen = "127.0.0.1:{a}"
peer = "127.0.0.1:{b}"

[slave]
port = {slave}
[slave.replication]
listen = "127.0.0.1:{b}"
peer = "127.0.0.1:{a}"

[l4]
threads = 1

[l4.services.web]
listen = "127.0.0.1:0"
scheduler = "rr"
check = {{ type = "http", path = "/health", interval_ms = 100, timeout_ms = 500, rise = 2, fall = 2 }}
servers = [{servers}]

[l4.services.cache]
listen = "127.0.0.1:0"
scheduler = "fo"
check = {{ type = "memcached", interval_ms = 100, rise = 1, fall = 2 }}
servers = [{{ name = "master", address = "127.0.0.1:{master}" }}, {{ name = "slave", address = "127.0.0.1:{slave}" }}]
"#,
        apps = apps
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", "),
        servers = servers.join(", ")
    );
    Config::from_toml(&text, std::path::Path::new("demo-l4.toml")).expect("config parses")
}

fn server_phase(node: &Node, service: &str, server: &str) -> String {
    node.snapshot()
        .l4
        .into_iter()
        .flatten()
        .find(|s| s.name == service)
        .and_then(|s| s.servers.into_iter().find(|x| x.name == server))
        .map(|s| s.state_label())
        .unwrap_or_default()
}

#[test]
fn the_demo_balances_http_over_its_app_servers_and_a_killed_one_is_taken_out() {
    let rt = runtime();
    let node = rt
        .block_on(Node::start(&balanced_demo_config()))
        .expect("demo starts");
    let served =
        |node: &Node| -> Vec<u64> { node.snapshot().apps.iter().map(|a| a.requests).collect() };
    wait_until("HTTP traffic to reach every app server", || {
        served(&node).iter().all(|&n| n >= 5)
    });
    let t = node.snapshot().traffic.expect("traffic");
    assert_eq!(t.http_errors, 0, "{t:?}");
    let cache = node
        .snapshot()
        .l4
        .into_iter()
        .flatten()
        .find(|s| s.name == "cache")
        .expect("cache service");
    wait_until("cache traffic through the L4 cache service", || {
        node.snapshot()
            .l4
            .into_iter()
            .flatten()
            .any(|s| s.name == "cache" && s.servers[0].total_conns > 0)
    });
    assert_eq!(cache.servers[1].total_conns, 0, "fo sends all to the first");

    node.act(Command::SetAppServer {
        name: "app2".into(),
        running: false,
    })
    .expect("kill app2");
    assert!(
        node.act(Command::SetAppServer {
            name: "app2".into(),
            running: false
        })
        .is_err(),
        "killing a dead app server again is refused"
    );
    wait_until("web/app2 to be marked DOWN", || {
        server_phase(&node, "web", "app2") == "DOWN"
    });
    // Once it is out, requests stop failing: let a second of traffic through and compare.
    let errors_then = node.snapshot().traffic.expect("traffic").http_errors;
    let requests_then = node.snapshot().traffic.expect("traffic").http_requests;
    wait_until("another 40 HTTP requests", || {
        node.snapshot().traffic.expect("traffic").http_requests > requests_then + 40
    });
    let t = node.snapshot().traffic.expect("traffic");
    assert_eq!(
        t.http_errors, errors_then,
        "no error once app2 is out: {t:?}"
    );

    node.act(Command::SetAppServer {
        name: "app2".into(),
        running: true,
    })
    .expect("revive app2");
    wait_until("web/app2 to come back UP", || {
        server_phase(&node, "web", "app2") == "UP"
    });
    let before = served(&node)[1];
    wait_until("app2 to serve again", || served(&node)[1] > before + 5);
    rt.block_on(node.shutdown(std::time::Duration::from_secs(5)));
}

/// The built-in demo, every port moved to a free one.
fn builtin_demo(name: &str) -> (tokio::runtime::Runtime, Node) {
    node_from_toml(&demo_on_free_ports(&scratch(name).join("log")))
}

fn web_addr(node: &Node) -> SocketAddr {
    node.l4
        .as_ref()
        .and_then(|l| l.listen_addr("web"))
        .expect("the L4 web service")
}

fn app_addr(node: &Node, name: &str) -> SocketAddr {
    node.apps
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.addr)
        .expect("the app server")
}

#[test]
fn the_built_in_demo_chains_l4_to_l7_to_the_app_servers() {
    let (rt, node) = builtin_demo("demo-chain");
    let front = node
        .l7
        .as_ref()
        .and_then(|l| l.listen_addr("front"))
        .expect("the L7 listener");
    let snap = node.snapshot();
    let web = snap
        .l4
        .iter()
        .flatten()
        .find(|s| s.name == "web")
        .expect("web");
    assert_eq!(
        web.servers
            .iter()
            .map(|s| s.address.clone())
            .collect::<Vec<_>>(),
        [front.to_string()],
        "the L4 service's one server is the L7 listener"
    );
    let apps: Vec<String> = node.apps.iter().map(|a| a.addr.to_string()).collect();
    for pool in &snap.l7.as_ref().expect("l7").pools {
        let servers: Vec<String> = pool.servers.iter().map(|s| s.address.clone()).collect();
        assert_eq!(
            servers, apps,
            "{} is over the demo's app servers",
            pool.name
        );
    }

    // A page: through L4, then L7 (which sets its persistence cookie), to an app server.
    let page = get(web_addr(&node), "demo", "/demo/1", &[]).expect("a page through the chain");
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.header("x-served-by")
            .is_some_and(|s| s.starts_with("app")),
        "{:?}",
        page.headers
    );
    assert!(
        page.header("set-cookie")
            .is_some_and(|c| c.starts_with("SERVERID=app")),
        "the pages pool's cookie, set by the L7 balancer: {:?}",
        page.headers
    );
    assert!(
        page.text().contains("served GET /demo/1"),
        "{}",
        page.text()
    );
    // An API call: routed to the api pool, which sets no cookie.
    let call = get(web_addr(&node), "demo", "/api/items/2", &[]).expect("an API call");
    assert_eq!(call.status, 200, "{}", call.text());
    assert!(call.header("set-cookie").is_none(), "{:?}", call.headers);

    // The generator's traffic takes both routes, and gets 200s.
    let route_requests = |node: &Node, path: &str| -> u64 {
        node.snapshot()
            .l7
            .iter()
            .flat_map(|l| &l.listeners)
            .flat_map(|l| &l.routes)
            .filter(|r| r.path == path)
            .map(|r| r.http.requests)
            .sum()
    };
    wait_until("traffic on both routes", || {
        route_requests(&node, "/") >= 10 && route_requests(&node, "/api/") >= 10
    });
    let t = node.snapshot().traffic.expect("traffic");
    assert_eq!(t.http_errors, 0, "{t:?}");
    rt.block_on(node.shutdown(Duration::from_secs(5)));
}

#[test]
fn an_app_servers_error_rate_and_latency_change_at_runtime() {
    let (rt, node) = builtin_demo("demo-behaviour");
    node.act(Command::PauseTraffic { paused: true })
        .expect("pause");
    let app1 = app_addr(&node, "app1");
    let status = |path: &str| get(app1, "demo", path, &[]).expect("a reply").status;

    let set = |latency_ms, error_percent| {
        node.act(Command::SetAppBehaviour {
            name: "app1".into(),
            latency_ms,
            error_percent,
        })
    };
    let reply = set(None, Some(100)).expect("error rate 100%");
    assert!(reply.output.contains("error rate 100%"), "{}", reply.output);
    let shown = node.snapshot().apps[0].clone();
    assert_eq!((shown.latency_ms, shown.error_percent), (0, 100));
    let statuses: Vec<u16> = (0..6).map(|i| status(&format!("/x/{i}"))).collect();
    assert!(
        statuses.iter().all(|s| [500, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&500) && statuses.contains(&503),
        "{statuses:?}"
    );
    assert_eq!(status("/health"), 200, "checks are never failed on purpose");
    assert!(node.snapshot().apps[0].errors >= 6);

    // Every app failing: what reaches the client through the chain is a 5xx (503s are
    // retried on the others, which fail too).
    for name in ["app2", "app3"] {
        node.act(Command::SetAppBehaviour {
            name: name.into(),
            latency_ms: None,
            error_percent: Some(100),
        })
        .expect("set");
    }
    let through = get(web_addr(&node), "demo", "/demo/7", &[]).expect("a reply through the chain");
    assert!(
        through.status >= 500,
        "{} {}",
        through.status,
        through.text()
    );

    // Latency: app1 answers after it, and keeps answering other connections meanwhile.
    set(Some(400), Some(0)).expect("latency 400 ms");
    let before = node.snapshot().apps[0].requests;
    let started = Instant::now();
    let slow = std::thread::spawn(move || {
        let reply = get(app1, "demo", "/slow", &[]);
        (reply.map(|r| r.status), started.elapsed())
    });
    wait_until("the slow request to arrive", || {
        node.snapshot().apps[0].requests > before
    });
    let quick = Instant::now();
    assert_eq!(status("/health"), 200);
    let health_took = quick.elapsed();
    let (slow_status, took) = slow.join().expect("the slow client");
    assert_eq!(slow_status.expect("a reply"), 200);
    assert!(
        took >= Duration::from_millis(400) && took < DEADLINE,
        "took {took:?}"
    );
    assert!(
        health_took < Duration::from_millis(400) && started.elapsed() >= health_took,
        "/health waited for the slow request: {health_took:?}"
    );

    // Nonsense is refused, and says what.
    assert!(set(Some(3_600_000), None).is_err_and(|e| e.contains("3600000 ms")));
    assert!(set(None, Some(101)).is_err_and(|e| e.contains("101%")));
    assert!(
        node.act(Command::SetAppBehaviour {
            name: "app9".into(),
            latency_ms: Some(1),
            error_percent: None
        })
        .is_err_and(|e| e.contains("app9"))
    );
    rt.block_on(node.shutdown(Duration::from_secs(5)));
}

#[test]
fn set_app_behaviour_leaves_out_what_it_does_not_change() {
    let c: Command =
        toml::from_str("action = \"set_app_behaviour\"\nname = \"app2\"\nlatency_ms = 200\n")
            .expect("parses");
    assert_eq!(
        c,
        Command::SetAppBehaviour {
            name: "app2".into(),
            latency_ms: Some(200),
            error_percent: None
        }
    );
}

#[test]
fn the_demo_stops_at_once_though_its_cache_traffic_goes_through_the_l4_balancer() {
    // The traffic generator keeps a connection open through the L4 `cache` service. It is a
    // client of the node's own balancer: stopped first, it cannot hold the balancer's grace
    // period open, so quitting the demo takes no longer than its connections need.
    let (rt, node) = builtin_demo("demo-quit");
    wait_until("the demo's cache traffic to hold an L4 connection", || {
        node.snapshot()
            .l4
            .iter()
            .flatten()
            .any(|s| s.name == "cache" && s.active > 0)
    });
    let started = Instant::now();
    let finished = rt.block_on(node.shutdown(Duration::from_secs(5)));
    let took = started.elapsed();
    assert!(
        finished,
        "connections were still open when the 5 s grace ended ({took:?})"
    );
}
