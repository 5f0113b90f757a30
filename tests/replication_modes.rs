//! Replication features beyond the basic pair, on two in-process nodes over real loopback
//! sockets: partial resync after a short break, a slow peer falling out of the backlog,
//! `sync` acknowledgements, planned switchover, and a second slave being refused.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use opsconsole::config::ReplicationConfig;
use opsconsole::control::{Command, Control};
use opsconsole::node::Node;

const DEADLINE: Duration = Duration::from_secs(20);

use support::cluster::{config, repl, runtime};
use support::conn::stat;

/// Sends a request and reads until the reply ends with `end`.
fn call(addr: SocketAddr, request: &str, end: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while !out.ends_with(end.as_bytes()) {
        let n = s.read(&mut buf).expect("read");
        assert!(
            n > 0,
            "closed before {end:?}: {}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

fn streaming(addr: SocketAddr) -> bool {
    stat(addr, "repl_link") == "streaming"
}

struct Pair {
    rt: tokio::runtime::Runtime,
    master: Node,
    slave: Node,
}

impl Pair {
    fn start(tune: impl Fn(&mut ReplicationConfig)) -> Pair {
        let rt = runtime();
        // Replication ports must be known to both nodes before either binds, so they are
        // picked free and, in the rare case another socket takes one first, picked again.
        let mut attempts = 0;
        let (master, slave) = loop {
            attempts += 1;
            let (pm, ps) = (support::free_port(), support::free_port());
            let (mut rm, mut rs) = (repl(pm, ps), repl(ps, pm));
            tune(&mut rm);
            tune(&mut rs);
            let started = rt.block_on(async {
                let m = Node::start(&config("master", rm)).await?;
                match Node::start(&config("slave", rs)).await {
                    Ok(s) => Ok((m, s)),
                    Err(e) => {
                        m.shutdown(Duration::from_secs(1)).await;
                        Err(e)
                    }
                }
            });
            match started {
                Ok(pair) => break pair,
                Err(e) if attempts < 5 => eprintln!("retrying with other ports: {e}"),
                Err(e) => panic!("nodes do not start: {e}"),
            }
        };
        let pair = Pair { rt, master, slave };
        wait_for("the pair to stream", || {
            streaming(pair.m()) && streaming(pair.s())
        });
        pair
    }

    fn m(&self) -> SocketAddr {
        self.master.caches[0].addr
    }

    fn s(&self) -> SocketAddr {
        self.slave.caches[0].addr
    }

    fn act(&self, node: &Node, command: Command) -> String {
        let _guard = self.rt.enter();
        node.act(command).expect("command accepted").output
    }

    /// Both nodes' replication timelines, for failure messages.
    fn events(&self) -> String {
        let mut out = String::new();
        for (name, node) in [("master", &self.master), ("slave", &self.slave)] {
            let snap = node.snapshot();
            for c in &snap.caches {
                if let Some(r) = &c.replication {
                    for (ms, text) in &r.status.events {
                        out.push_str(&format!("{name} {ms} {text}\n"));
                    }
                }
            }
        }
        out
    }

    fn digests_equal(&self) -> bool {
        stat(self.m(), "repl_digest") == stat(self.s(), "repl_digest")
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.rt.block_on(async {
            self.master.shutdown(Duration::from_secs(2)).await;
            self.slave.shutdown(Duration::from_secs(2)).await;
        });
    }
}

#[test]
fn a_short_break_resumes_from_the_backlog_instead_of_copying_again() {
    let pair = Pair::start(|_| {});
    call(pair.m(), "set before 0 0 1\r\nb\r\n", "STORED\r\n");
    pair.act(
        &pair.slave,
        Command::KillPeer {
            role: "slave".into(),
            hold_ms: 300,
        },
    );
    // Writes on both sides while the link is down.
    call(pair.m(), "set during_m 0 0 1\r\nm\r\n", "STORED\r\n");
    call(pair.s(), "set during_s 0 0 1\r\ns\r\n", "STORED\r\n");
    wait_for("the link to come back", || {
        streaming(pair.m()) && streaming(pair.s())
    });
    wait_for("convergence", || pair.digests_equal());
    assert_eq!(
        stat(pair.m(), "repl_full_resyncs"),
        "1",
        "only the first pairing copies everything"
    );
    let partial: u64 = stat(pair.m(), "repl_partial_resyncs")
        .parse()
        .expect("number");
    assert!(partial >= 1, "the break resumed from the backlog");
    assert!(call(pair.s(), "get during_m\r\n", "END\r\n").contains("VALUE during_m"));
    assert!(call(pair.m(), "get during_s\r\n", "END\r\n").contains("VALUE during_s"));
}

#[test]
fn a_peer_that_falls_out_of_the_backlog_gets_a_full_copy() {
    // A 1 MiB backlog; 3 MiB of writes while the link is held down.
    let pair = Pair::start(|r| r.backlog_mb = 1);
    pair.act(
        &pair.slave,
        Command::KillPeer {
            role: "slave".into(),
            hold_ms: 1500,
        },
    );
    let value = "v".repeat(1000);
    let mut batch = String::new();
    for i in 0..3000 {
        batch.push_str(&format!("set big{i} 0 0 1000 noreply\r\n{value}\r\n"));
    }
    batch.push_str("mn\r\n");
    call(pair.m(), &batch, "MN\r\n");
    wait_for("the link to come back", || {
        streaming(pair.m()) && streaming(pair.s())
    });
    wait_for("convergence", || pair.digests_equal());
    let full: u64 = stat(pair.m(), "repl_full_resyncs").parse().expect("number");
    assert!(full >= 2, "the overrun peer was copied again in full");
}

#[test]
fn sync_mode_answers_only_after_the_peer_has_the_write() {
    let pair = Pair::start(|r| {
        r.ack = "sync".into();
        r.sync_timeout_ms = 500;
    });
    assert_eq!(call(pair.m(), "set k 0 0 1\r\nv\r\n", "\r\n"), "STORED\r\n");
    // Acknowledged means the slave already has it: no polling needed.
    assert_eq!(
        call(pair.s(), "get k\r\n", "END\r\n"),
        "VALUE k 0 1\r\nv\r\nEND\r\n"
    );
    pair.act(
        &pair.master,
        Command::KillPeer {
            role: "master".into(),
            hold_ms: 3000,
        },
    );
    let reply = call(pair.m(), "set k 0 0 1\r\nw\r\nget k\r\n", "END\r\n");
    assert!(
        reply.starts_with("SERVER_ERROR replication: the peer did not confirm this write"),
        "{reply}"
    );
    assert!(
        reply.ends_with("VALUE k 0 1\r\nw\r\nEND\r\n"),
        "stored locally: {reply}"
    );
    assert_eq!(stat(pair.m(), "repl_sync_failures"), "1");
}

#[test]
fn planned_switchover_swaps_roles_without_losing_a_write() {
    let pair = Pair::start(|_| {});
    assert_eq!(stat(pair.m(), "replication"), "MASTER", "{}", pair.events());
    // A stream of writes in flight while the switchover runs.
    let mut batch = String::new();
    for i in 0..2000 {
        batch.push_str(&format!("set sw{i} 0 0 4 noreply\r\n{i:04}\r\n"));
    }
    batch.push_str("mn\r\n");
    call(pair.m(), &batch, "MN\r\n");
    pair.act(
        &pair.master,
        Command::Switchover {
            role: "master".into(),
        },
    );
    wait_for("roles to swap", || {
        stat(pair.m(), "replication") == "SLAVE" && stat(pair.s(), "replication") == "MASTER"
    });
    // Both keep serving, and the new master already had every write.
    assert_eq!(stat(pair.s(), "repl_serving"), "yes");
    assert_eq!(stat(pair.m(), "repl_serving"), "yes");
    assert!(call(pair.s(), "get sw1999\r\n", "END\r\n").contains("1999"));
    wait_for("convergence", || pair.digests_equal());
    let epoch_m: u64 = stat(pair.m(), "repl_epoch").parse().expect("epoch");
    let epoch_s: u64 = stat(pair.s(), "repl_epoch").parse().expect("epoch");
    assert_eq!(epoch_m, epoch_s);
}

#[test]
fn a_second_slave_is_refused_with_a_reason() {
    let pair = Pair::start(|_| {});
    let rt = &pair.rt;
    let mut third_cfg = repl(support::free_port(), 0);
    third_cfg.peer = Some(
        pair.master.caches[0]
            .repl_addr
            .expect("replicating")
            .to_string(),
    );
    let third = rt
        .block_on(Node::start(&config("slave", third_cfg)))
        .expect("third node starts");
    let addr = third.caches[0].addr;
    wait_for("the master to refuse the second slave", || {
        stat(pair.m(), "repl_links_refused")
            .parse::<u64>()
            .is_ok_and(|n| n > 0)
    });
    // The third node could not pair, so it serves alone as a master; the pair is intact.
    wait_for("the refused node to take over alone", || {
        stat(addr, "replication") == "MASTER"
    });
    assert!(streaming(pair.m()) && streaming(pair.s()));
    rt.block_on(third.shutdown(Duration::from_secs(2)));
}
