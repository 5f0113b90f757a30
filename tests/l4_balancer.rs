//! The L4 balancer over real sockets: real echo servers on loopback behind a node running
//! the `[l4]` role in this process, spoken to by plain TCP clients.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use opsconsole::balance::backend::AdminState;
use opsconsole::balance::health::Phase;
use opsconsole::control::{Command, Control, ServiceSnapshot, WeightChange};
use opsconsole::node::Node;
use support::backends::{Backend, Behaviour, ask, hold, round_trip};
use support::wait_until;

struct Balancer {
    rt: tokio::runtime::Runtime,
    node: Node,
}

impl Balancer {
    /// Runs `[l4.services.web]` with `settings` (TOML lines) over `servers`.
    fn start(threads: usize, settings: &str, servers: &[&Backend]) -> Balancer {
        let list: Vec<String> = servers
            .iter()
            .map(|b| format!("{{ name = \"{}\", address = \"{}\" }}", b.name, b.addr))
            .collect();
        Balancer::from_toml(&format!(
            "[l4]\nthreads = {threads}\n[l4.services.web]\nlisten = \"127.0.0.1:0\"\nservers = [{}]\n{settings}\n",
            list.join(", ")
        ))
    }

    fn from_toml(text: &str) -> Balancer {
        let (rt, node) = support::node_from_toml(text);
        Balancer { rt, node }
    }

    fn addr(&self) -> SocketAddr {
        self.node
            .l4
            .as_ref()
            .and_then(|l| l.listen_addr("web"))
            .expect("web listens")
    }

    fn service(&self) -> ServiceSnapshot {
        self.node.snapshot().l4.expect("l4 runs").remove(0)
    }

    fn act(&self, command: Command) -> String {
        let _guard = self.rt.enter();
        self.node.act(command).expect("command accepted").output
    }

    /// Who answers `n` conversations, by name.
    fn spread(&self, n: usize) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let name = ask(self.addr()).expect("a conversation through the balancer");
            *counts.entry(name).or_insert(0) += 1;
        }
        counts
    }
}

fn echo(name: &str) -> Backend {
    Backend::start(name, Behaviour::Echo)
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn round_robin_and_weighted_round_robin_spread_as_configured() {
    let (a, b, c) = (echo("a"), echo("b"), echo("c"));
    let lb = Balancer::start(1, "scheduler = \"rr\"", &[&a, &b, &c]);
    assert_eq!(lb.spread(30), counts(&[("a", 10), ("b", 10), ("c", 10)]));

    let text = format!(
        "[l4]\nthreads = 1\n[l4.services.web]\nlisten = \"127.0.0.1:0\"\nscheduler = \"wrr\"\nservers = [{{ name = \"a\", address = \"{}\", weight = 1 }}, {{ name = \"b\", address = \"{}\", weight = 3 }}]\n",
        a.addr, b.addr
    );
    let lb = Balancer::from_toml(&text);
    assert_eq!(lb.spread(40), counts(&[("a", 10), ("b", 30)]));
}

#[test]
fn every_scheduler_serves_through_two_workers() {
    let (a, b) = (echo("a"), echo("b"));
    for kind in [
        "rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "mh", "twos", "fo", "ovf",
    ] {
        let lb = Balancer::start(2, &format!("scheduler = \"{kind}\""), &[&a, &b]);
        let spread = lb.spread(20);
        assert_eq!(spread.values().sum::<usize>(), 20, "{kind}: {spread:?}");
        assert_eq!(lb.service().total_conns, 20, "{kind}");
        assert_eq!(lb.service().scheduler, kind);
    }
}

#[test]
fn least_connections_fill_the_emptier_server() {
    let (a, b) = (echo("a"), echo("b"));
    let lb = Balancer::start(2, "scheduler = \"lc\"", &[&a, &b]);
    let held: Vec<_> = (0..6).map(|_| hold(lb.addr())).collect();
    let on_a = held.iter().filter(|(n, _)| n == "a").count();
    assert_eq!(on_a, 3, "six held connections split evenly");
    let s = lb.service();
    assert_eq!(s.active, 6);
    assert!(s.servers.iter().all(|x| x.active == 3), "{:?}", s.servers);
}

#[test]
fn source_hashing_and_persistence_keep_a_client_on_one_server() {
    let (a, b, c) = (echo("a"), echo("b"), echo("c"));
    for settings in [
        "scheduler = \"sh\"",
        "scheduler = \"mh\"",
        "scheduler = \"rr\"\npersistence_timeout_secs = 60",
    ] {
        let lb = Balancer::start(2, settings, &[&a, &b, &c]);
        let spread = lb.spread(12);
        assert_eq!(
            spread.len(),
            1,
            "{settings}: one client, one server: {spread:?}"
        );
    }
    // Hashing the port spreads the same client again.
    let lb = Balancer::start(2, "scheduler = \"mh\"\nhash_port = true", &[&a, &b, &c]);
    assert!(lb.spread(30).len() > 1);
}

#[test]
fn a_killed_backend_is_down_within_fall_times_interval_and_traffic_moves() {
    let (a, b) = (echo("a"), echo("b"));
    let lb = Balancer::start(
        2,
        "scheduler = \"rr\"\n[l4.services.web.check]\ntype = \"tcp\"\ninterval_ms = 100\ntimeout_ms = 100\nrise = 2\nfall = 3",
        &[&a, &b],
    );
    wait_until("both servers checked", || {
        lb.service()
            .servers
            .iter()
            .all(|s| s.check_status.as_deref() == Some("L4OK"))
    });
    let (_, mut open_on_b) = loop {
        let h = hold(lb.addr());
        if h.0 == "b" {
            break h;
        }
    };
    b.kill();
    let killed = Instant::now();
    wait_until("b marked down", || {
        lb.service().servers[1].health == Phase::Down
    });
    let took = killed.elapsed();
    // fall x interval, plus one interval for where in its cycle the checker was, plus slack
    // for a loaded machine.
    assert!(
        took < Duration::from_millis(3 * 100 + 100 + 1100),
        "down after {took:?}"
    );
    let s = lb.service();
    assert!(
        s.servers[1]
            .check_status
            .as_deref()
            .is_some_and(|c| c.starts_with("L4CON")),
        "{:?}",
        s.servers[1]
    );
    assert_eq!(lb.spread(10), counts(&[("a", 10)]));
    // The connection that was on b is closed, not hung.
    let mut rest = Vec::new();
    let _ = open_on_b.read_to_end(&mut rest);

    let b2 = Backend::restart_at("b", b.addr, Behaviour::Echo);
    wait_until("b back up after rise checks", || {
        lb.service().servers[1].health == Phase::Up
    });
    wait_until("b takes traffic again", || lb.spread(4).contains_key("b"));
    drop(b2);
}

#[test]
fn drain_takes_no_new_connections_and_open_ones_finish() {
    let (a, b) = (echo("a"), echo("b"));
    let lb = Balancer::start(2, "scheduler = \"rr\"", &[&a, &b]);
    let (_, mut on_a) = loop {
        let h = hold(lb.addr());
        if h.0 == "a" {
            break h;
        }
    };
    let reply = lb.act(Command::SetServerState {
        pool: "web".into(),
        server: "a".into(),
        state: AdminState::Drain,
    });
    assert_eq!(reply, "web/a: ready -> drain");
    assert_eq!(lb.spread(10), counts(&[("b", 10)]));
    assert_eq!(round_trip(&mut on_a, "still here"), "still here");
    let s = lb.service();
    assert_eq!(s.servers[0].state_label(), "DRAIN");
    assert!(!s.servers[0].removable, "a connection is still open");
    on_a.get_ref().shutdown(Shutdown::Write).expect("close");
    let mut rest = Vec::new();
    let _ = on_a.read_to_end(&mut rest);
    wait_until("a reported removable", || lb.service().servers[0].removable);

    lb.act(Command::SetServerState {
        pool: "web".into(),
        server: "a".into(),
        state: AdminState::Ready,
    });
    // Each worker keeps its own round-robin cursor, so only "both again" is certain.
    let back = lb.spread(10);
    assert!(back.contains_key("a") && back.contains_key("b"), "{back:?}");
}

#[test]
fn weight_commands_change_the_spread_and_restore_returns_to_the_config() {
    let (a, b) = (echo("a"), echo("b"));
    let lb = Balancer::start(1, "scheduler = \"wrr\"", &[&a, &b]);
    let weight = |change| {
        lb.act(Command::SetWeight {
            pool: "web".into(),
            server: "a".into(),
            change,
        })
    };
    assert_eq!(weight(WeightChange::Set(0)), "web/a: weight 1 -> 0");
    assert_eq!(lb.spread(6), counts(&[("b", 6)]));
    assert_eq!(weight(WeightChange::Add(3)), "web/a: weight 0 -> 3");
    assert_eq!(lb.spread(8), counts(&[("a", 6), ("b", 2)]));
    assert_eq!(weight(WeightChange::Add(-100)), "web/a: weight 3 -> 0");
    assert_eq!(weight(WeightChange::Restore), "web/a: weight 0 -> 1");
    let s = lb.service();
    assert_eq!(
        (s.servers[0].weight, s.servers[0].configured_weight),
        (1, 1)
    );
    let _guard = lb.rt.enter();
    let err = lb
        .node
        .act(Command::SetWeight {
            pool: "web".into(),
            server: "nope".into(),
            change: WeightChange::Restore,
        })
        .expect_err("unknown server");
    assert_eq!(err, "no server 'nope' in pool 'web'");
}

#[test]
fn a_refused_connect_is_retried_on_another_server() {
    let a = echo("a");
    let dead = echo("dead");
    dead.kill();
    let lb = Balancer::start(2, "scheduler = \"rr\"\nretries = 1", &[&dead, &a]);
    assert_eq!(lb.spread(10), counts(&[("a", 10)]));
    let s = lb.service();
    assert!(s.connect_errors >= 4, "{s:?}");
    assert_eq!(s.servers[1].retries, s.connect_errors);
}

#[test]
fn the_sorry_server_answers_only_when_no_real_server_can() {
    let (a, sorry) = (echo("a"), echo("sorry"));
    let lb = Balancer::start(2, &format!("sorry_server = \"{}\"", sorry.addr), &[&a]);
    assert_eq!(lb.spread(4), counts(&[("a", 4)]));
    lb.act(Command::SetServerState {
        pool: "web".into(),
        server: "a".into(),
        state: AdminState::Maint,
    });
    assert_eq!(lb.spread(3), counts(&[("sorry", 3)]));
    assert!(!lb.service().quorum_met);
}

#[test]
fn proxy_protocol_headers_name_the_client() {
    let a = Backend::start("a", Behaviour::ProxyHeader);
    for (version, expect_v1) in [("v1", true), ("v2", false)] {
        let lb = Balancer::start(1, &format!("send_proxy = \"{version}\""), &[&a]);
        let s = TcpStream::connect(lb.addr()).expect("connect");
        let client = s.local_addr().expect("client addr");
        let mut reader = std::io::BufReader::new(s);
        let mut line = String::new();
        reader.read_line(&mut line).expect("reply");
        let hex = line.trim_end().split(' ').nth(1).expect("hex").to_string();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        if expect_v1 {
            let text = String::from_utf8(bytes).expect("v1 is text");
            assert_eq!(
                text,
                format!(
                    "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n",
                    client.port(),
                    lb.addr().port()
                )
            );
        } else {
            assert_eq!(&bytes[..12], b"\r\n\r\n\x00\r\nQUIT\n");
            assert_eq!(&bytes[12..16], &[0x21, 0x11, 0, 12]);
            assert_eq!(&bytes[16..24], &[127, 0, 0, 1, 127, 0, 0, 1]);
            assert_eq!(u16::from_be_bytes([bytes[24], bytes[25]]), client.port());
            assert_eq!(u16::from_be_bytes([bytes[26], bytes[27]]), lb.addr().port());
        }
        assert_eq!(
            round_trip(&mut reader, "after the header"),
            "after the header"
        );
    }
}

/// Sends `len` bytes to the echo server through `lb`, half-closes, and checks that exactly
/// those bytes come back after the FIN (the server sees it only when the balancer passes it
/// on, and its echo then travels the other way).
fn echo_after_half_close(lb: &Balancer, len: u32) {
    let (_, mut conn) = hold(lb.addr());
    let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    // Written from another thread: an echo larger than the socket buffers would otherwise
    // stall both sides.
    let mut writer = conn.get_ref().try_clone().expect("clone");
    let sent = payload.clone();
    let writing = std::thread::spawn(move || {
        writer.write_all(&sent).expect("write");
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut back = Vec::new();
    conn.read_to_end(&mut back)
        .expect("read to the server's close");
    writing.join().expect("writer");
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echo differs");
    wait_until("the connection is counted", || {
        let s = lb.service();
        (s.bytes_in, s.bytes_out) == (len as u64, len as u64 + 2)
    });
}

#[test]
fn a_half_close_reaches_the_server_and_its_reply_still_comes_back() {
    let a = echo("a");
    let lb = Balancer::start(1, "", &[&a]);
    echo_after_half_close(&lb, 200_000);
}

#[test]
fn every_splice_mode_carries_bulk_byte_exact_through_a_half_close() {
    for mode in ["auto", "always", "off"] {
        let a = echo("a");
        let lb = Balancer::start(1, &format!("splice = \"{mode}\""), &[&a]);
        echo_after_half_close(&lb, 6_000_000);
        // A short exchange after the bulk one: a pooled pipe comes back empty.
        let (_, mut conn) = hold(lb.addr());
        assert_eq!(round_trip(&mut conn, "ping"), "ping", "splice = {mode}");
    }
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let a = echo("a");
    let lb = Balancer::start(1, "idle_timeout_secs = 1", &[&a]);
    let (_, mut conn) = hold(lb.addr());
    let opened = Instant::now();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).expect("closed by the balancer");
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(5),
        "{after:?}"
    );
}
