//! Convergence of two in-process nodes over real loopback sockets: a split with writes on
//! both sides heals to identical contents, and a seeded random mix of writes on both nodes
//! under random link kills and heals ends with identical contents (`REPL_SEED=N` replays a
//! run).

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use opsconsole::config::ReplicationConfig;
use opsconsole::control::{Command, Control};
use opsconsole::node::Node;

const DEADLINE: Duration = Duration::from_secs(20);
const NOT_SERVING: &str = "SERVER_ERROR replication: marugoto copy in progress, not serving yet";

use support::cluster::{config, repl, runtime};
use support::conn::{Conn, number, stat, stats};

impl Conn {
    /// `get key`: the item's flags and value, `None` on a miss; panics on anything else.
    fn get(&mut self, key: &str) -> Option<(u32, String)> {
        self.send(format!("get {key}\r\n").as_bytes());
        let head = self.line();
        if head == "END" {
            return None;
        }
        let parts: Vec<&str> = head.split(' ').collect();
        assert!(
            parts.len() == 4 && parts[0] == "VALUE" && parts[1] == key,
            "unexpected reply to get {key}: {head:?}"
        );
        let flags: u32 = parts[2].parse().expect("flags");
        let len: usize = parts[3].parse().expect("length");
        let mut data = vec![0u8; len + 2];
        self.reader.read_exact(&mut data).expect("value");
        assert_eq!(&data[len..], b"\r\n", "value of {key} not CRLF-terminated");
        data.truncate(len);
        assert_eq!(self.line(), "END");
        Some((flags, String::from_utf8(data).expect("utf8 value")))
    }
}

/// Polls `cond` every 10 ms until it holds; on timeout panics with `why()` appended.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out after {DEADLINE:?} waiting for {what}\n{}", why());
}

struct Pair {
    rt: tokio::runtime::Runtime,
    nodes: [Node; 2],
}

impl Pair {
    /// Starts a master and a slave and waits until they stream.
    fn start() -> Pair {
        let (pa, pb) = (support::free_port(), support::free_port());
        let rt = runtime();
        let master = rt
            .block_on(Node::start(&config("master", repl(pa, pb))))
            .expect("master starts");
        let slave = rt
            .block_on(Node::start(&config("slave", repl(pb, pa))))
            .expect("slave starts");
        let pair = Pair {
            rt,
            nodes: [master, slave],
        };
        pair.wait_linked("the first pairing");
        pair
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].caches[0].addr
    }

    /// The role name each node's cache runs under (`master` or `slave`, fixed at start).
    fn role(i: usize) -> String {
        ["master", "slave"][i].to_string()
    }

    fn kill(&self, i: usize, hold_ms: u64) {
        let _guard = self.rt.enter();
        self.nodes[i]
            .act(Command::KillPeer {
                role: Pair::role(i),
                hold_ms,
            })
            .expect("kill accepted");
    }

    fn revive(&self, i: usize) {
        let _guard = self.rt.enter();
        self.nodes[i]
            .act(Command::RevivePeer {
                role: Pair::role(i),
            })
            .expect("revive accepted");
    }

    fn streaming(&self) -> bool {
        (0..2).all(|i| {
            let s = stats(self.addr(i), false);
            s.get("repl_link").map(String::as_str) == Some("streaming")
                && s.get("repl_serving").map(String::as_str) == Some("yes")
        })
    }

    fn wait_linked(&self, what: &str) {
        wait_for(what, || self.streaming(), || self.describe(&[]));
    }

    /// Both streaming, both serving, nothing unacknowledged, same digest.
    fn settled(&self) -> bool {
        if !self.streaming() {
            return false;
        }
        let a = stats(self.addr(0), true);
        let b = stats(self.addr(1), true);
        a["repl_lag_bytes"] == "0"
            && b["repl_lag_bytes"] == "0"
            && a["repl_digest"] == b["repl_digest"]
    }

    /// Waits until both nodes stream and hold identical contents; on timeout, shows both
    /// nodes' replication state and every key of `keys` that differs.
    fn wait_converged(&self, what: &str, keys: &[String]) {
        wait_for(what, || self.settled(), || self.describe(keys));
        // Equal once could be a coincidence of timing; it must stay equal with no writes.
        let a = stat(self.addr(0), "repl_digest");
        assert_eq!(
            a,
            stat(self.addr(1), "repl_digest"),
            "{}",
            self.describe(keys)
        );
    }

    fn describe(&self, keys: &[String]) -> String {
        let mut out = String::new();
        for i in 0..2 {
            let s = stats(self.addr(i), true);
            let mut names: Vec<&String> = s.keys().filter(|k| k.starts_with("repl")).collect();
            names.sort();
            out.push_str(&format!("node {i} ({}):", self.addr(i)));
            for n in names {
                out.push_str(&format!(" {n}={}", s[n]));
            }
            out.push('\n');
        }
        let (mut a, mut b) = (Conn::connect(self.addr(0)), Conn::connect(self.addr(1)));
        for key in keys {
            let (va, vb) = (a.get(key), b.get(key));
            if va != vb {
                out.push_str(&format!("differs: {key}: node 0 {va:?}, node 1 {vb:?}\n"));
            }
        }
        out
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.rt.block_on(async {
            for n in &self.nodes {
                n.shutdown(Duration::from_secs(2)).await;
            }
        });
    }
}

/// Sends `requests` in one write and reads one reply line per request.
fn pipeline(c: &mut Conn, requests: &[String]) -> Vec<String> {
    let joined: String = requests.concat();
    c.send(joined.as_bytes());
    requests.iter().map(|_| c.line()).collect()
}

fn expect_all(c: &mut Conn, requests: &[String], want: &str) {
    for (req, got) in requests.iter().zip(pipeline(c, requests)) {
        assert_eq!(got, want, "reply to {req:?}");
    }
}

#[test]
fn a_split_with_writes_on_both_sides_heals_to_identical_contents() {
    let pair = Pair::start();
    let (m, s) = (pair.addr(0), pair.addr(1));
    let mut cm = Conn::connect(m);
    let mut cs = Conn::connect(s);
    let mut keys: Vec<String> = Vec::new();

    // A shared base, replicated before the split.
    let base: Vec<String> = (0..40)
        .map(|i| {
            format!(
                "set base{i} {} 0 {}\r\nb{i}\r\n",
                i % 3,
                format!("b{i}").len()
            )
        })
        .chain((0..10).map(|i| format!("set counter{i} 0 0 2\r\n10\r\n")))
        .collect();
    expect_all(&mut cm, &base, "STORED");
    keys.extend((0..40).map(|i| format!("base{i}")));
    keys.extend((0..10).map(|i| format!("counter{i}")));
    pair.wait_converged("the base to replicate", &keys);
    let full_before = [
        number(m, "repl_full_resyncs"),
        number(s, "repl_full_resyncs"),
    ];

    // Split: the master severs the link and refuses it until revived.
    pair.kill(0, 60_000);
    wait_for(
        "the split (master held down, slave promoted)",
        || {
            let (a, b) = (stats(m, false), stats(s, false));
            a["repl_link"] == "held_down"
                && b["replication"] == "MASTER"
                && b["repl_link"] != "streaming"
        },
        || pair.describe(&[]),
    );

    // Writes and deletes on both sides while apart, several to the same keys.
    let on_m: Vec<String> = (0..20)
        .map(|i| format!("set only_m{i} 0 0 2\r\nm{}\r\n", i % 10))
        .chain((0..10).map(|i| format!("set both{i} 1 0 6\r\nfrom_m\r\n")))
        .collect();
    expect_all(&mut cm, &on_m, "STORED");
    expect_all(
        &mut cm,
        &(0..10)
            .map(|i| format!("delete base{i}\r\n"))
            .collect::<Vec<_>>(),
        "DELETED",
    );
    expect_all(
        &mut cm,
        &(20..30)
            .map(|i| format!("append base{i} 0 0 2\r\n+m\r\n"))
            .collect::<Vec<_>>(),
        "STORED",
    );
    expect_all(
        &mut cm,
        &(30..35)
            .map(|i| format!("touch base{i} 7200\r\n"))
            .collect::<Vec<_>>(),
        "TOUCHED",
    );
    expect_all(
        &mut cm,
        &(0..5)
            .map(|i| format!("incr counter{i} 5\r\n"))
            .collect::<Vec<_>>(),
        "15",
    );

    let on_s: Vec<String> = (0..20)
        .map(|i| format!("set only_s{i} 0 0 2\r\ns{}\r\n", i % 10))
        .chain((0..10).map(|i| format!("set both{i} 2 0 6\r\nfrom_s\r\n")))
        .collect();
    expect_all(&mut cs, &on_s, "STORED");
    expect_all(
        &mut cs,
        &(10..25)
            .map(|i| format!("delete base{i}\r\n"))
            .collect::<Vec<_>>(),
        "DELETED",
    );
    expect_all(
        &mut cs,
        &(35..40)
            .map(|i| format!("append base{i} 0 0 2\r\n+s\r\n"))
            .collect::<Vec<_>>(),
        "STORED",
    );
    expect_all(
        &mut cs,
        &(5..10)
            .map(|i| format!("incr counter{i} 7\r\n"))
            .collect::<Vec<_>>(),
        "17",
    );
    keys.extend((0..20).map(|i| format!("only_m{i}")));
    keys.extend((0..20).map(|i| format!("only_s{i}")));
    keys.extend((0..10).map(|i| format!("both{i}")));

    // The split is real: neither side has seen the other's writes.
    assert_eq!(cm.get("only_s0"), None, "a write crossed a severed link");
    assert_eq!(cs.get("only_m0"), None, "a write crossed a severed link");
    assert_eq!(cs.get("base0"), Some((0, "b0".into())));

    pair.revive(0);
    pair.wait_converged("the healed pair to converge", &keys);

    // What the merge must have kept, checked on both nodes.
    for c in [&mut cm, &mut cs] {
        for i in 0..20 {
            assert_eq!(
                c.get(&format!("only_m{i}")),
                Some((0, format!("m{}", i % 10)))
            );
            assert_eq!(
                c.get(&format!("only_s{i}")),
                Some((0, format!("s{}", i % 10)))
            );
        }
        for i in 0..20 {
            assert_eq!(c.get(&format!("base{i}")), None, "base{i} was deleted");
        }
        for i in 25..30 {
            assert_eq!(c.get(&format!("base{i}")), Some((i % 3, format!("b{i}+m"))));
        }
        for i in 30..35 {
            assert_eq!(c.get(&format!("base{i}")), Some((i % 3, format!("b{i}"))));
        }
        for i in 35..40 {
            assert_eq!(c.get(&format!("base{i}")), Some((i % 3, format!("b{i}+s"))));
        }
        for i in 0..10 {
            let want = if i < 5 { "15" } else { "17" };
            assert_eq!(c.get(&format!("counter{i}")), Some((0, want.into())));
        }
        for i in 0..10 {
            // Concurrent writes to one key: one of them wins, the same one on both nodes
            // (the digests already showed the nodes agree).
            let v = c.get(&format!("both{i}"));
            assert!(
                v == Some((1, "from_m".into())) || v == Some((2, "from_s".into())),
                "both{i}: {v:?}"
            );
        }
        // Deleted on the slave after the master appended to it: either outcome is a valid
        // merge, and the digests already showed both nodes picked the same one.
        for i in 20..25 {
            let v = c.get(&format!("base{i}"));
            assert!(
                v.is_none() || v == Some((i % 3, format!("b{i}+m"))),
                "base{i}: {v:?}"
            );
        }
    }

    // Exactly one master again, on the same epoch, and the heal resumed from the backlogs.
    let (a, b) = (stats(m, true), stats(s, true));
    let mut roles = [a["replication"].as_str(), b["replication"].as_str()];
    roles.sort_unstable();
    assert_eq!(roles, ["MASTER", "SLAVE"]);
    assert_eq!(a["repl_epoch"], b["repl_epoch"]);
    let full_after = [
        number(m, "repl_full_resyncs"),
        number(s, "repl_full_resyncs"),
    ];
    assert_eq!(
        full_after, full_before,
        "a short split must resume from the backlog, not copy everything again"
    );
    assert!(number(m, "repl_partial_resyncs") >= 1 && number(s, "repl_partial_resyncs") >= 1);
}

#[test]
fn a_held_link_is_retried_with_backoff_while_the_other_node_serves_alone() {
    // With reconnect_max_ms = 200 a peer retries at most about every 100-300 ms, so a
    // one-second window sees a handful of attempts, not thousands.
    const WINDOW: Duration = Duration::from_millis(1000);
    const MOST_ATTEMPTS: u64 = 25;
    let pair = Pair::start();
    let (m, s) = (pair.addr(0), pair.addr(1));
    // The slave is held down (and promotes itself); the master is left alone and must keep
    // serving, as the only node clients can use.
    let losses = number(m, "repl_link_losses");
    let refused = number(s, "repl_links_refused");
    let mut probe = Conn::connect(m);
    let (mut gets, mut refusals, mut not_master) = (0u64, 0u64, 0u64);
    pair.kill(1, 5_000);
    let window = Instant::now();
    while window.elapsed() < WINDOW {
        probe.send(b"get k\r\nmn\r\n");
        let reply = probe.line();
        if reply != "MN" {
            assert_eq!(probe.line(), "MN");
        }
        gets += 1;
        if reply == NOT_SERVING {
            refusals += 1;
        }
        if gets % 64 == 0 && stat(m, "replication") != "MASTER" {
            not_master += 1;
        }
    }
    assert_eq!(stat(s, "repl_link"), "held_down");
    // Not counting the link the kill severed.
    let attempts = (number(m, "repl_link_losses") - losses).saturating_sub(1);
    let turned_away = number(s, "repl_links_refused") - refused;
    let epoch = stat(m, "repl_epoch");
    pair.revive(1);
    pair.wait_converged("the pair to come back", &[]);
    let report = format!(
        "during {WINDOW:?} of a hold: the master admitted and lost {attempts} links, the held \
         slave turned away {turned_away}; the master answered {refusals} of {gets} gets with \
         {NOT_SERVING:?} and was seen as non-MASTER {not_master} times; master epoch {epoch}"
    );
    println!("{report}");
    assert!(
        attempts <= MOST_ATTEMPTS && turned_away <= MOST_ATTEMPTS && refusals == 0,
        "{report}"
    );
}

#[test]
fn a_peer_that_fails_the_handshake_is_retried_with_growing_backoff() {
    // Default reconnect settings (reconnect_max_ms = 2000): attempts start 100 ms apart and
    // double, so in 3 s each node's dialer tries about five times (100+200+400+800+1600).
    let (pa, pb) = (support::free_port(), support::free_port());
    let rt = runtime();
    let node = |role: &str, listen: u16, peer: u16, secret: &str| {
        let r = ReplicationConfig {
            listen: format!("127.0.0.1:{listen}"),
            peer: Some(format!("127.0.0.1:{peer}")),
            secret: Some(secret.into()),
            ..ReplicationConfig::default()
        };
        rt.block_on(Node::start(&config(role, r)))
            .expect("node starts")
    };
    let a = node("master", pa, pb, "one secret");
    let b = node("slave", pb, pa, "another secret");
    let started = Instant::now();
    let (aa, ba) = (a.caches[0].addr, b.caches[0].addr);
    while started.elapsed() < Duration::from_secs(3) {
        for addr in [aa, ba] {
            assert_ne!(
                stat(addr, "repl_link"),
                "streaming",
                "paired with a wrong secret"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = [
        number(aa, "repl_links_refused"),
        number(ba, "repl_links_refused"),
    ];
    rt.block_on(async {
        a.shutdown(Duration::from_secs(2)).await;
        b.shutdown(Duration::from_secs(2)).await;
    });
    println!("handshakes refused in 3 s: {refused:?}");
    // Each node refuses its peer's attempts and its own fail too: about ten each.
    assert!(refused[0] > 0 && refused[1] > 0, "{refused:?}");
    assert!(
        refused[0] <= 20 && refused[1] <= 20,
        "a peer with the wrong secret was retried without backing off: {refused:?} refusals in 3 s"
    );
}

/// splitmix64: small, seedable, good enough to drive a test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Set,
    Delete,
    Incr,
    Decr,
    Append,
    Prepend,
    Touch,
}

fn random_op(rng: &mut Rng, keys: u64) -> (Op, String) {
    let key = format!("r{}", rng.below(keys));
    // Expiry times long enough that nothing expires during the test (an item expiring
    // between the two digest walks would make equal contents look different).
    let exptime = if rng.chance(70) {
        0
    } else {
        3600 + rng.below(3600)
    };
    let flags = rng.below(4);
    let value = if rng.chance(80) {
        rng.below(1000).to_string()
    } else {
        format!("x{}", rng.below(1000))
    };
    let op = match rng.below(100) {
        0..=34 => Op::Set,
        35..=49 => Op::Delete,
        50..=64 => Op::Incr,
        65..=69 => Op::Decr,
        70..=79 => Op::Append,
        80..=84 => Op::Prepend,
        _ => Op::Touch,
    };
    let text = match op {
        Op::Set => format!("set {key} {flags} {exptime} {}\r\n{value}\r\n", value.len()),
        Op::Delete => format!("delete {key}\r\n"),
        Op::Incr => format!("incr {key} {}\r\n", rng.below(100)),
        Op::Decr => format!("decr {key} {}\r\n", rng.below(10)),
        Op::Append => format!("append {key} 0 0 1\r\n{}\r\n", rng.below(10)),
        Op::Prepend => format!("prepend {key} 0 0 1\r\n{}\r\n", 1 + rng.below(9)),
        Op::Touch => format!("touch {key} {}\r\n", 3600 + rng.below(3600)),
    };
    (op, text)
}

/// Whether `reply` is one a memcached node may give to `op` (a node that is between a
/// re-pairing and its resume may also answer that it is not serving yet).
fn reply_ok(op: Op, reply: &str) -> bool {
    if reply == NOT_SERVING {
        return true;
    }
    match op {
        Op::Set => reply == "STORED",
        Op::Append | Op::Prepend => reply == "STORED" || reply == "NOT_STORED",
        Op::Delete => reply == "DELETED" || reply == "NOT_FOUND",
        Op::Touch => reply == "TOUCHED" || reply == "NOT_FOUND",
        Op::Incr | Op::Decr => {
            reply == "NOT_FOUND"
                || reply == "CLIENT_ERROR cannot increment or decrement non-numeric value"
                || (!reply.is_empty() && reply.trim_end().bytes().all(|b| b.is_ascii_digit()))
        }
    }
}

#[test]
fn random_writes_under_random_link_kills_converge() {
    const ROUNDS: usize = 20;
    const KEYS: u64 = 64;
    let seed: u64 = match std::env::var("REPL_SEED") {
        Ok(s) => s.trim().parse().expect("REPL_SEED must be a number"),
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                ^ u64::from(std::process::id())
        }
    };
    println!("REPL_SEED={seed} (set REPL_SEED to replay this run)");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let pair = Pair::start();
    let mut conns = [Conn::connect(pair.addr(0)), Conn::connect(pair.addr(1))];
    let keys: Vec<String> = (0..KEYS).map(|i| format!("r{i}")).collect();
    let (mut ops, mut kills, mut not_serving, mut revived) = (0usize, 0usize, 0usize, 0usize);

    let mut burst = |rng: &mut Rng, conns: &mut [Conn; 2], n: usize| {
        let mut done = 0;
        while done < n {
            let node = rng.below(2) as usize;
            let batch = (1 + rng.below(12) as usize).min(n - done);
            let items: Vec<(Op, String)> = (0..batch).map(|_| random_op(rng, KEYS)).collect();
            let texts: Vec<String> = items.iter().map(|(_, t)| t.clone()).collect();
            let replies = pipeline(&mut conns[node], &texts);
            for ((op, text), reply) in items.iter().zip(&replies) {
                assert!(
                    reply_ok(*op, reply),
                    "REPL_SEED={seed}: node {node} answered {reply:?} to {text:?}"
                );
                if reply == NOT_SERVING {
                    not_serving += 1;
                }
            }
            done += batch;
        }
        ops += n;
    };

    for round in 0..ROUNDS {
        let n = 40 + rng.below(40) as usize;
        burst(&mut rng, &mut conns, n);
        let victim = rng.below(2) as usize;
        let hold = 100 + rng.below(401);
        pair.kill(victim, hold);
        kills += 1;
        // The kill takes effect asynchronously; the split writes must land after it.
        wait_for(
            &format!("round {round}: the link to go down (REPL_SEED={seed})"),
            || stat(pair.addr(victim), "repl_link") != "streaming",
            || pair.describe(&[]),
        );
        // Writes on both sides while the link is down (or coming back).
        let n = 40 + rng.below(40) as usize;
        burst(&mut rng, &mut conns, n);
        if rng.chance(40) {
            pair.revive(victim);
            revived += 1;
        }
        // Usually let the pair re-link before the next kill; sometimes kill again at once,
        // while the link may still be handshaking or resyncing.
        if round + 1 < ROUNDS && rng.chance(75) {
            pair.wait_linked(&format!("round {round} to heal (REPL_SEED={seed})"));
        }
    }
    pair.revive(0);
    pair.revive(1);
    pair.wait_converged(&format!("the final heal (REPL_SEED={seed})"), &keys);

    let (a, b) = (stats(pair.addr(0), true), stats(pair.addr(1), true));
    let mut roles = [a["replication"].as_str(), b["replication"].as_str()];
    roles.sort_unstable();
    assert_eq!(roles, ["MASTER", "SLAVE"], "REPL_SEED={seed}");
    assert_eq!(a["repl_epoch"], b["repl_epoch"], "REPL_SEED={seed}");
    assert!(ops >= 1000 && kills >= 10);
    let losses =
        number(pair.addr(0), "repl_link_losses") + number(pair.addr(1), "repl_link_losses");
    assert!(
        losses >= kills as u64,
        "REPL_SEED={seed}: {kills} kills but only {losses} link losses"
    );
    println!(
        "REPL_SEED={seed}: {ops} operations, {kills} link kills ({revived} revived early), \
         {losses} link losses, {not_serving} not-serving replies, digest {}, \
         resyncs full {}+{} partial {}+{}, {:?}",
        a["repl_digest"],
        a["repl_full_resyncs"],
        b["repl_full_resyncs"],
        a["repl_partial_resyncs"],
        b["repl_partial_resyncs"],
        started.elapsed()
    );
}
