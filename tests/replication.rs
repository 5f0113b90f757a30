//! Replication between two real `opsconsole` processes on loopback: the repcached dialogue,
//! a 200,000-item marugoto copy, failover on `kill -9`, rejoin of a restarted master,
//! detection of a silent (`kill -STOP`) peer, and the shared secret.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{Client, Node, signal, spawn_node};

fn call(addr: SocketAddr, request: &str, end: &str) -> String {
    let mut c = Client::connect(addr);
    String::from_utf8_lossy(&c.call(request.as_bytes(), end.as_bytes())).into_owned()
}

fn stat(addr: SocketAddr, name: &str) -> String {
    let reply = call(addr, "stats replication\r\n", "END\r\n");
    reply
        .lines()
        .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no {name} in {reply}"))
}

/// One `get` and its whole reply: a `VALUE ... END`, an `END`, or an error line.
fn get_reply(addr: SocketAddr, key: &str) -> String {
    let mut c = Client::connect(addr);
    c.send(format!("get {key}\r\n").as_bytes());
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = std::io::Read::read(&mut c.stream, &mut buf).expect("read");
        assert!(n > 0, "connection closed");
        out.extend_from_slice(&buf[..n]);
        let done = out.ends_with(b"END\r\n")
            || (out.starts_with(b"SERVER_ERROR") && out.ends_with(b"\r\n"));
        if done {
            return String::from_utf8_lossy(&out).into_owned();
        }
    }
}

fn streaming(addr: SocketAddr) -> bool {
    stat(addr, "repl_link") == "streaming"
}

/// Replication ports for a pair, and the arguments each node runs with.
struct Ports {
    a: u16,
    b: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            a: support::free_port(),
            b: support::free_port(),
        }
    }

    fn args(&self, role: &str, extra: &[&str]) -> Vec<String> {
        let (me, peer) = if role == "master" {
            (self.a, self.b)
        } else {
            (self.b, self.a)
        };
        let mut v: Vec<String> = vec![
            "--role".into(),
            role.into(),
            "-p".into(),
            "0".into(),
            "--repl-listen".into(),
            format!("127.0.0.1:{me}"),
            "--peer".into(),
            format!("127.0.0.1:{peer}"),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    fn spawn(&self, role: &str, extra: &[&str]) -> Node {
        let args = self.args(role, extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn_node(&refs)
    }
}

/// Waits for a log line containing `needle`; returns when it was seen.
fn wait_log(node: &Node, needle: &str, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match node.log.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Instant::now(),
            Ok(_) => {}
            Err(_) => panic!("no log line with {needle:?} within {limit:?}"),
        }
    }
}

#[test]
fn the_classic_repcached_dialogue() {
    let ports = Ports::new();
    let master = ports.spawn("master", &[]);
    let slave = ports.spawn("slave", &[]);
    support::wait_until("the pair to stream", || {
        streaming(master.addr) && streaming(slave.addr)
    });
    assert_eq!(stat(master.addr, "replication"), "MASTER");
    assert_eq!(stat(slave.addr, "replication"), "SLAVE");
    assert_eq!(
        call(master.addr, "set aa 0 0 3\r\n111\r\n", "\r\n"),
        "STORED\r\n"
    );
    support::wait_until("the slave to see aa", || {
        call(slave.addr, "get aa\r\n", "END\r\n") == "VALUE aa 0 3\r\n111\r\nEND\r\n"
    });
    assert_eq!(
        call(slave.addr, "set bb 0 0 3\r\n222\r\n", "\r\n"),
        "STORED\r\n"
    );
    support::wait_until("the master to see bb", || {
        call(master.addr, "get bb\r\n", "END\r\n") == "VALUE bb 0 3\r\n222\r\nEND\r\n"
    });
    assert_eq!(call(master.addr, "delete aa\r\n", "\r\n"), "DELETED\r\n");
    support::wait_until("the delete to reach the slave", || {
        call(slave.addr, "get aa\r\n", "END\r\n") == "END\r\n"
    });
}

#[test]
fn a_marugoto_copy_of_200000_items_arrives_complete() {
    const ITEMS: usize = 200_000;
    let ports = Ports::new();
    let master = ports.spawn("master", &["-m", "256"]);
    let mut c = Client::connect(master.addr);
    let value = |i: usize| format!("{i:0>100}");
    for chunk in (0..ITEMS).collect::<Vec<_>>().chunks(1000) {
        let mut batch = String::new();
        for &i in chunk {
            batch.push_str(&format!(
                "set item{i} {} 0 100 noreply\r\n{}\r\n",
                i % 7,
                value(i)
            ));
        }
        batch.push_str("mn\r\n");
        c.call(batch.as_bytes(), b"MN\r\n");
    }
    let started = Instant::now();
    let slave = ports.spawn("slave", &["-m", "256"]);
    // Until its copy is complete the slave refuses reads; it never answers from a partial
    // set (a miss for a key the master has would be exactly that).
    let last = ITEMS - 1;
    let want_last = format!(
        "VALUE item{last} {} 100\r\n{}\r\nEND\r\n",
        last % 7,
        value(last)
    );
    let mut refused = 0;
    loop {
        let reply = get_reply(slave.addr, &format!("item{last}"));
        if reply.starts_with("SERVER_ERROR replication: marugoto copy in progress") {
            refused += 1;
            continue;
        }
        assert_eq!(reply, want_last, "answered from a partial set");
        break;
    }
    println!("reads refused while the copy ran: {refused}");
    wait_log(
        &slave,
        "replication: marugoto copy complete",
        Duration::from_secs(60),
    );
    println!("copied {ITEMS} items in {:?}", started.elapsed());
    assert_eq!(
        stat(slave.addr, "repl_digest"),
        stat(master.addr, "repl_digest")
    );
    let mut s = Client::connect(slave.addr);
    for chunk in (0..ITEMS).collect::<Vec<_>>().chunks(100) {
        let keys: Vec<String> = chunk.iter().map(|i| format!("item{i}")).collect();
        let reply = s.call(format!("get {}\r\n", keys.join(" ")).as_bytes(), b"END\r\n");
        let mut want = String::new();
        for &i in chunk {
            want.push_str(&format!("VALUE item{i} {} 100\r\n{}\r\n", i % 7, value(i)));
        }
        want.push_str("END\r\n");
        assert_eq!(String::from_utf8_lossy(&reply), want);
    }
}

#[test]
fn failover_on_kill_and_rejoin_of_the_restarted_master() {
    let ports = Ports::new();
    let mut master = ports.spawn("master", &[]);
    let slave = ports.spawn("slave", &[]);
    support::wait_until("the pair to stream", || {
        streaming(master.addr) && streaming(slave.addr)
    });
    call(master.addr, "set before 0 0 1\r\nb\r\n", "\r\n");
    support::wait_until("replication of 'before'", || {
        call(slave.addr, "get before\r\n", "END\r\n").contains("VALUE")
    });

    signal(&master.child, "KILL");
    let killed = Instant::now();
    support::wait_until("the slave to accept writes as master", || {
        stat(slave.addr, "replication") == "MASTER"
            && call(slave.addr, "set during 0 0 1\r\nd\r\n", "\r\n") == "STORED\r\n"
    });
    let took = killed.elapsed();
    println!("slave took over {took:?} after kill -9");
    assert!(
        took < Duration::from_secs(3),
        "takeover took {took:?}, over the heartbeat timeout"
    );
    let _ = support::wait_exit(&mut master.child);

    let old_master = ports.spawn("master", &[]);
    support::wait_until("the old master to rejoin", || {
        streaming(old_master.addr) && streaming(slave.addr)
    });
    assert_eq!(stat(old_master.addr, "replication"), "SLAVE");
    assert_eq!(stat(slave.addr, "replication"), "MASTER");
    support::wait_until("convergence", || {
        stat(old_master.addr, "repl_digest") == stat(slave.addr, "repl_digest")
    });
    assert!(call(old_master.addr, "get during before\r\n", "END\r\n").contains("VALUE during"));
}

#[test]
fn a_stopped_peer_is_detected_within_the_heartbeat_timeout() {
    let ports = Ports::new();
    let master = ports.spawn("master", &[]);
    let slave = ports.spawn("slave", &[]);
    support::wait_until("the pair to stream", || {
        streaming(master.addr) && streaming(slave.addr)
    });
    while slave.log.try_recv().is_ok() {}
    signal(&master.child, "STOP");
    let stopped = Instant::now();
    let seen = wait_log(
        &slave,
        "no heartbeat from the peer",
        Duration::from_secs(10),
    );
    signal(&master.child, "CONT");
    let took = seen.duration_since(stopped);
    println!("silence detected after {took:?}");
    // Detection fires at the 3 s timeout; the margin is scheduling slack on a loaded 2-core box.
    assert!(
        took <= Duration::from_millis(4500),
        "detection took {took:?}"
    );
    support::wait_until("the slave to serve as master", || {
        stat(slave.addr, "replication") == "MASTER"
    });
}

#[test]
fn the_shared_secret_is_checked_both_ways() {
    let dir = std::env::temp_dir().join(format!("opsconsole-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (good, other) = (dir.join("good"), dir.join("other"));
    std::fs::write(&good, "correct horse\n").expect("write");
    std::fs::write(&other, "battery staple\n").expect("write");
    let (good, other) = (good.to_str().expect("utf8"), other.to_str().expect("utf8"));

    let ports = Ports::new();
    let master = ports.spawn("master", &["--repl-secret-file", good]);
    let intruder = ports.spawn("slave", &["--repl-secret-file", other]);
    wait_log(&master, "wrong replication secret", Duration::from_secs(10));
    assert_ne!(stat(master.addr, "repl_link"), "streaming");
    assert!(
        stat(master.addr, "repl_links_refused")
            .parse::<u64>()
            .is_ok_and(|n| n > 0)
    );
    drop(intruder);

    let friend = ports.spawn("slave", &["--repl-secret-file", good]);
    support::wait_until("the right secret to pair", || {
        streaming(master.addr) && streaming(friend.addr)
    });
}
