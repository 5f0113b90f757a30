mod support;
use opsconsole::config::{CacheConfig, Config, ReplicationConfig};
use opsconsole::control::{Command, Control};
use opsconsole::node::Node;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn cfg(role: &str, l: u16, p: u16, hi: u64, ht: u64, rm: u64) -> Config {
    let r = ReplicationConfig {
        listen: format!("127.0.0.1:{l}"),
        peer: Some(format!("127.0.0.1:{p}")),
        heartbeat_interval_ms: hi,
        heartbeat_timeout_ms: ht,
        reconnect_max_ms: rm,
        ..Default::default()
    };
    let cache = CacheConfig {
        port: 0,
        replication: Some(r),
        ..Default::default()
    };
    let mut c = Config::default();
    if role == "master" {
        c.master = Some(cache)
    } else {
        c.slave = Some(cache)
    }
    c
}
fn stats(a: SocketAddr) -> String {
    let mut s = TcpStream::connect(a).unwrap();
    s.write_all(b"stats replication\r\n").unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 65536];
    while !out.ends_with(b"END\r\n") {
        let n = s.read(&mut b).unwrap();
        assert!(n > 0);
        out.extend_from_slice(&b[..n]);
    }
    String::from_utf8(out).unwrap()
}
fn st(a: SocketAddr, n: &str) -> String {
    stats(a)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("STAT {n} ")))
        .unwrap()
        .to_string()
}

#[test]
fn hold_storm() {
    let victim: usize = std::env::var("VICTIM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let (pa, pb) = (support::free_port(), support::free_port());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // default heartbeat / reconnect settings
    let m = rt
        .block_on(Node::start(&cfg("master", pa, pb, 500, 3000, 2000)))
        .unwrap();
    let s = rt
        .block_on(Node::start(&cfg("slave", pb, pa, 500, 3000, 2000)))
        .unwrap();
    let nodes = [&m, &s];
    let addrs = [m.caches[0].addr, s.caches[0].addr];
    let t = Instant::now();
    while !(st(addrs[0], "repl_link") == "streaming" && st(addrs[1], "repl_link") == "streaming") {
        assert!(t.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let other = 1 - victim;
    let role = ["master", "slave"][victim];
    nodes[victim]
        .act(Command::KillPeer {
            role: role.into(),
            hold_ms: 2000,
        })
        .unwrap();
    let t = Instant::now();
    let mut probe = TcpStream::connect(addrs[other]).unwrap();
    let (mut gets, mut ns) = (0, 0);
    let mut b = [0u8; 4096];
    while t.elapsed() < Duration::from_millis(1000) {
        probe.write_all(b"get nokey\r\n").unwrap();
        let n = probe.read(&mut b).unwrap();
        gets += 1;
        if b[..n].starts_with(b"SERVER_ERROR") {
            ns += 1;
        }
    }
    for (i, a) in addrs.iter().enumerate() {
        println!(
            "node {i}: role={} epoch={} link={} link_losses={} refused={} ",
            st(*a, "replication"),
            st(*a, "repl_epoch"),
            st(*a, "repl_link"),
            st(*a, "repl_link_losses"),
            st(*a, "repl_links_refused")
        );
    }
    println!(
        "victim={victim} after 1 s of a 2 s hold: probe gets on the other node: {gets}, not-serving: {ns}"
    );
    rt.block_on(async {
        m.shutdown(Duration::from_secs(2)).await;
        s.shutdown(Duration::from_secs(2)).await;
    });
}

#[test]
fn second_slave_storm() {
    let (pa, pb, pc) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let m = rt
        .block_on(Node::start(&cfg("master", pa, pb, 500, 3000, 2000)))
        .unwrap();
    let s = rt
        .block_on(Node::start(&cfg("slave", pb, pa, 500, 3000, 2000)))
        .unwrap();
    let t = Instant::now();
    while !(st(m.caches[0].addr, "repl_link") == "streaming"
        && st(s.caches[0].addr, "repl_link") == "streaming")
    {
        assert!(t.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(10));
    }
    let third = rt
        .block_on(Node::start(&cfg("slave", pc, pa, 500, 3000, 2000)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let a = third.caches[0].addr;
    println!(
        "third after 1 s: role={} link={} link_losses={}; master refused={}",
        st(a, "replication"),
        st(a, "repl_link"),
        st(a, "repl_link_losses"),
        st(m.caches[0].addr, "repl_links_refused")
    );
    rt.block_on(async {
        m.shutdown(Duration::from_secs(2)).await;
        s.shutdown(Duration::from_secs(2)).await;
        third.shutdown(Duration::from_secs(2)).await;
    });
}
