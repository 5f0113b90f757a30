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
