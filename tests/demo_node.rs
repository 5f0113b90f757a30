//! The demo's pair in one process, through the control surface: killing the peer stops that
//! node entirely (its port refuses connections), the survivor takes over, and reviving starts
//! it again at the same addresses, where it rejoins as slave and receives a full copy.

mod support;

use std::net::TcpStream;

use opsconsole::config::{CacheConfig, Config, DemoConfig};
use opsconsole::control::{Command, Control};
use opsconsole::node::Node;
use opsconsole::replication::shared::NodeRole;
use support::cluster::{repl, runtime};
use support::{Client, free_port, wait_until};

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
