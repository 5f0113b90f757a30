//! A replicated pair split by a real network: the master runs in one network namespace, the
//! slave in another, and they replicate over a veth between them while the test reaches each
//! node's cache port over a path of its own. The link is impaired (delay and loss), cut and
//! healed with `tc` and `ip link`; the tests check heartbeat detection, what each side does
//! during the split, a single master after the heal (also a heal that comes before the master
//! noticed the cut, and one the moment the slave promotes itself), that a blip shorter than
//! the timeout changes nothing, convergence of both stores, and that no write answered
//! STORED in `sync` mode is lost. Figures and findings: RELIABILITY.md, "Partitions".
//!
//! Needs root and `ip netns`; skipped otherwise, and failed instead when
//! `OPSCONSOLE_REQUIRE_PEERS=1`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::DEADLINE;
use support::conn::{Conn, stats};
use support::netns::{self, tc_in};
use support::timed_log::TimedLog;

const HEARTBEAT_INTERVAL_MS: u64 = 100;
const HEARTBEAT_TIMEOUT_MS: u64 = 1000;
/// Slack on top of the heartbeat timeout for a detection on two busy cores: the timeout is
/// checked on a tick, and the log line has to travel through a pipe to the test.
const DETECTION_MARGIN: Duration = Duration::from_millis(1000);
const REPL_PORT: u16 = 11212;
const BLIP: Duration = Duration::from_millis(150);

/// A node in a namespace whose log lines are timestamped as they arrive.
struct Proc {
    node: support::Node,
    log: TimedLog,
}

impl Proc {
    fn spawn(
        net: &netns::Pair,
        ns: &str,
        name: &str,
        log_dir: &std::path::Path,
        args: &[String],
    ) -> Proc {
        let mut node = net.spawn(ns, log_dir, args);
        let log = TimedLog::capture(name, &mut node);
        Proc { node, log }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.node.addr
    }

    fn mark(&self) -> usize {
        self.log.mark()
    }

    fn count(&self, from: usize, needle: &str) -> usize {
        self.log.count(from, needle)
    }

    fn wait_line(&self, from: usize, needle: &str, limit: Duration) -> (Instant, String) {
        self.log.wait_line(from, needle, limit)
    }

    fn role(&self) -> String {
        stats(self.addr(), false)["replication"].clone()
    }

    fn streaming(&self) -> bool {
        let s = stats(self.addr(), false);
        s["repl_link"] == "streaming" && s["repl_serving"] == "yes"
    }

    fn detailed(&self) -> std::collections::HashMap<String, String> {
        stats(self.addr(), true)
    }
}

/// Sends `set KEY 0 0 LEN` with `value` and returns the reply line.
fn set(c: &mut Conn, key: &str, value: &str) -> String {
    c.send(format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes());
    c.line()
}

/// Pipelines one `set` per (key, value) and returns the replies in order.
fn set_batch(c: &mut Conn, items: &[(String, String)]) -> Vec<String> {
    let mut req = String::new();
    for (k, v) in items {
        req.push_str(&format!("set {k} 0 0 {}\r\n{v}\r\n", v.len()));
    }
    c.send(req.as_bytes());
    items.iter().map(|_| c.line()).collect()
}

/// The values of `keys` present on the node (missing keys are absent from the map), or
/// the error line that replaced a reply: a node that has just become a slave refuses reads
/// until its resync is done, which a polling caller treats as "not yet".
fn try_get_all(
    addr: std::net::SocketAddr,
    keys: &[String],
) -> Result<std::collections::HashMap<String, String>, String> {
    let mut c = Conn::connect(addr);
    let mut out = std::collections::HashMap::new();
    for chunk in keys.chunks(200) {
        c.send(format!("get {}\r\n", chunk.join(" ")).as_bytes());
        loop {
            let head = c.line();
            if head == "END" {
                break;
            }
            let parts: Vec<&str> = head.split(' ').collect();
            if parts[0] != "VALUE" {
                return Err(head);
            }
            let value = c.line();
            out.insert(parts[1].to_string(), value);
        }
    }
    Ok(out)
}

/// `try_get_all` where an error reply fails the test.
fn get_all(
    addr: std::net::SocketAddr,
    keys: &[String],
) -> std::collections::HashMap<String, String> {
    try_get_all(addr, keys).unwrap_or_else(|e| panic!("get from {addr}: {e}"))
}

/// Whether the node at `addr` holds every (key, value) of `items`.
fn holds(addr: std::net::SocketAddr, items: &[(String, String)]) -> bool {
    let keys: Vec<String> = items.iter().map(|(k, _)| k.clone()).collect();
    try_get_all(addr, &keys).is_ok_and(|have| items.iter().all(|(k, v)| have.get(k) == Some(v)))
}

/// Whether a reply means the write is stored on the node that answered: STORED, or the
/// sync-mode error that says the peer did not confirm it.
fn stored_here(reply: &str) -> bool {
    reply == "STORED" || reply.ends_with("(it is stored here)")
}

/// Polls `cond` until it holds or `limit` passes; returns how long it took.
fn wait_within(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What the background sync-mode writer saw: each key with the reply to its write.
type Writes = Vec<(String, String, String)>;

/// Writes `sync{i}` keys to `addr` one at a time until `stop`, about one every 5 ms (a
/// steady trickle across the cut and the heal), recording every reply.
fn sync_writer(
    prefix: &'static str,
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    acked: Arc<std::sync::atomic::AtomicUsize>,
    refused: Arc<std::sync::atomic::AtomicUsize>,
) -> std::thread::JoinHandle<Writes> {
    std::thread::spawn(move || {
        let mut c = Conn::connect(addr);
        let mut out = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let (key, value) = (format!("{prefix}{i:05}"), format!("v{i}"));
            let reply = set(&mut c, &key, &value);
            if reply == "STORED" {
                acked.fetch_add(1, Ordering::Relaxed);
            } else {
                refused.fetch_add(1, Ordering::Relaxed);
            }
            out.push((key, value, reply));
            i += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        out
    })
}

/// Adds delay and loss on `dev` in `ns`: netem when the kernel has it; otherwise a token
/// bucket slow enough to queue (delay) and small enough to tail-drop (loss), the closest
/// impairment a kernel without `sch_netem` offers. Returns a description of what was applied.
fn impair(ns: &str, dev: &str) -> String {
    match tc_in(
        ns,
        &[
            "qdisc", "add", "dev", dev, "root", "netem", "delay", "50ms", "loss", "10%",
        ],
    ) {
        Ok(()) => "netem delay 50ms loss 10%".to_string(),
        Err(netem) => {
            let tbf = [
                "qdisc", "add", "dev", dev, "root", "tbf", "rate", "96kbit", "burst", "1600",
                "limit", "3000",
            ];
            tc_in(ns, &tbf)
                .unwrap_or_else(|e| panic!("neither netem ({netem}) nor tbf works: {e}"));
            "tbf rate 96kbit burst 1600 limit 3000 (no sch_netem in this kernel)".to_string()
        }
    }
}

/// One node of the pair with the namespace and veth end it sits behind.
struct Side<'a> {
    node: &'a Proc,
    ns: &'a str,
    dev: &'a str,
}

/// Cuts the link at `cut_at`'s end, checks detection and the split, writes on both sides,
/// heals, and checks that exactly one master is left (the one with the higher epoch) and
/// that every write of the split is on both nodes, the newest one where both wrote a key.
fn partition_cycle(
    cycle: usize,
    sides: [&Side; 2],
    cut_at: &Side,
    conns: [&mut Conn; 2],
    acked: &std::sync::atomic::AtomicUsize,
    refused: &std::sync::atomic::AtomicUsize,
    bulk: usize,
) {
    let nodes = [sides[0].node, sides[1].node];
    let m = if nodes[0].role() == "MASTER" { 0 } else { 1 };
    let s = 1 - m;
    assert_eq!(
        nodes[s].role(),
        "SLAVE",
        "cycle {cycle}: one master before the cut"
    );
    let epoch: u64 = nodes[m].detailed()["repl_epoch"].parse().expect("epoch");
    // Acknowledged writes right up to the cut, whichever role node a has now.
    let acked_now = acked.load(Ordering::Relaxed);
    wait_within("sync writes acknowledged before the cut", DEADLINE, || {
        acked.load(Ordering::Relaxed) >= acked_now + 20
    });
    let [conn0, conn1] = conns;
    let mut conns = [conn0, conn1];

    // Nothing tells either side about the cut: no RST, no ICMP; only heartbeats can notice.
    let marks = [nodes[0].mark(), nodes[1].mark()];
    let cut = Instant::now();
    netns::ip(&["-n", cut_at.ns, "link", "set", "dev", cut_at.dev, "down"]).expect("cut");
    let timeout = Duration::from_millis(HEARTBEAT_TIMEOUT_MS);
    let limit = timeout + DETECTION_MARGIN;
    for i in [s, m] {
        let who = if i == m { "master" } else { "slave" };
        let (seen, line) = nodes[i].wait_line(marks[i], "replication: link down", limit + DEADLINE);
        let took = seen.duration_since(cut);
        println!(
            "cycle {cycle}: cut at {}: the {who} ({}) noticed after {took:?}",
            cut_at.dev, nodes[i].log.name
        );
        assert!(
            line.contains(&format!(
                "no heartbeat from the peer for {HEARTBEAT_TIMEOUT_MS} ms"
            )),
            "cycle {cycle}: the {who} did not notice the cut by heartbeat: {line:?}"
        );
        assert!(
            took <= limit,
            "cycle {cycle}: the {who} noticed the cut after {took:?} (timeout {timeout:?} + margin {DETECTION_MARGIN:?})"
        );
    }
    let promoted_line = format!("replication: promoted to master (epoch {})", epoch + 1);
    let (promoted, _) = nodes[s].wait_line(marks[s], &promoted_line, DEADLINE);
    println!(
        "cycle {cycle}: the slave promoted itself {:?} after the cut",
        promoted.duration_since(cut)
    );

    // The split: both are masters and both take writes. The master waits for its slave to
    // come back; the slave has taken over with a higher epoch.
    assert_eq!(
        nodes[m].role(),
        "MASTER",
        "cycle {cycle}: the master stays master"
    );
    assert_eq!(
        nodes[s].role(),
        "MASTER",
        "cycle {cycle}: the slave took over"
    );
    assert_eq!(nodes[m].detailed()["repl_epoch"], epoch.to_string());
    assert_eq!(nodes[s].detailed()["repl_epoch"], (epoch + 1).to_string());
    let mut split: Vec<(String, String)> = Vec::new();
    for (side, conn) in conns.iter_mut().enumerate() {
        for i in 0..20 {
            let (k, v) = (format!("c{cycle}split{side}_{i:02}"), format!("{side}-{i}"));
            let reply = set(conn, &k, &v);
            // In sync mode with no peer linked the write is kept locally and the reply says so.
            assert!(stored_here(&reply), "split write {k} refused: {reply:?}");
            split.push((k, v));
        }
        // More than the backlog holds, on both sides: the heal cannot resume from it and
        // needs a full copy, which must still keep what each side wrote.
        let bulk: Vec<(String, String)> = (0..bulk)
            .map(|i| {
                (
                    format!("c{cycle}bulk{side}_{i:03}"),
                    format!("{side}{i:0>10000}"),
                )
            })
            .collect();
        for (reply, (k, _)) in set_batch(conn, &bulk).iter().zip(&bulk) {
            assert!(stored_here(reply), "split write {k} refused: {reply:?}");
        }
        split.extend(bulk);
    }
    // One key written on both sides; the newer write wins on both, whichever side ends up
    // master: alternately the new master's and the old master's write is the newer one.
    let contested = format!("contested{cycle}");
    let (first, last) = if cycle % 2 == 0 { (m, s) } else { (s, m) };
    assert!(stored_here(&set(conns[first], &contested, "older")));
    std::thread::sleep(Duration::from_millis(20)); // a distinct, later clock reading
    assert!(stored_here(&set(conns[last], &contested, "newer")));
    split.push((contested, "newer".to_string()));
    // The writers keep going on node a while it has no peer: their writes are kept there
    // but not acknowledged, and must survive the merge.
    let refused_now = refused.load(Ordering::Relaxed);
    wait_within("unconfirmed writes during the split", DEADLINE, || {
        refused.load(Ordering::Relaxed) >= refused_now + 40
    });

    // Heal: exactly one master after, the promoted slave (higher epoch).
    let marks = [nodes[0].mark(), nodes[1].mark()];
    netns::ip(&["-n", cut_at.ns, "link", "set", "dev", cut_at.dev, "up"]).expect("heal");
    let paired = wait_within(
        "one master and a streaming slave after the heal",
        DEADLINE,
        || {
            nodes[0].streaming()
                && nodes[1].streaming()
                && nodes[s].role() == "MASTER"
                && nodes[m].role() == "SLAVE"
        },
    );
    let converged = wait_within("the split's writes on both nodes", DEADLINE, || {
        nodes.iter().all(|n| holds(n.addr(), &split))
    });
    let how = if nodes[0].count(marks[0], "partial resync")
        + nodes[1].count(marks[1], "partial resync")
        > 0
    {
        "a partial resync"
    } else {
        "a full copy"
    };
    println!(
        "cycle {cycle}: heal: {} MASTER and {} SLAVE {paired:?} after the link came up ({how}); \
         every split write on both {:?} after the link came up",
        nodes[s].log.name,
        nodes[m].log.name,
        paired + converged
    );
    let (ds, dm) = (nodes[s].detailed(), nodes[m].detailed());
    assert_eq!(
        ds["repl_epoch"], dm["repl_epoch"],
        "cycle {cycle}: the epochs agree"
    );
    assert_eq!(ds["repl_epoch"], (epoch + 1).to_string());
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(
            n.count(marks[i], "replication: promoted"),
            0,
            "cycle {cycle}: {} promoted itself after the heal",
            n.log.name
        );
    }
}

/// Cuts the link for 150 ms and checks that nothing noticed beyond a pause. (TCP's first
/// retransmission comes 200 ms after a loss on a link this short, the second 400 ms after
/// that: a cut that outlasts the first stretches the silence to 600 ms or more, too close
/// to the 1000 ms timeout to be a blip.)
fn blip(at: &Side, nodes: [&Proc; 2], acked: &std::sync::atomic::AtomicUsize) {
    let roles = [nodes[0].role(), nodes[1].role()];
    let marks = [nodes[0].mark(), nodes[1].mark()];
    netns::ip(&["-n", at.ns, "link", "set", "dev", at.dev, "down"]).expect("cut");
    // The length of the outage is the experiment itself, not a wait for a condition.
    std::thread::sleep(BLIP);
    netns::ip(&["-n", at.ns, "link", "set", "dev", at.dev, "up"]).expect("heal");
    let healed = Instant::now();
    let acked_now = acked.load(Ordering::Relaxed);
    let resumed = wait_within("sync writes acknowledged after a blip", DEADLINE, || {
        acked.load(Ordering::Relaxed) >= acked_now + 20
    });
    // Past the point where a heartbeat timeout started by the blip would have fired.
    wait_within("a heartbeat timeout to pass", DEADLINE, || {
        healed.elapsed() >= Duration::from_millis(HEARTBEAT_TIMEOUT_MS)
    });
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(
            n.count(marks[i], "replication: link down"),
            0,
            "{} lost the link in a blip",
            n.log.name
        );
        assert_eq!(n.role(), roles[i], "{} changed role in a blip", n.log.name);
    }
    println!("blip: {BLIP:?} cut, no link loss, sync writes acknowledged again {resumed:?} after");
}

/// Cuts the link and heals it the moment the slave promotes itself; exactly one master
/// (the promoted one) must result.
fn quick_heal(at: &Side, nodes: [&Proc; 2], acked: &std::sync::atomic::AtomicUsize) {
    let m = if nodes[0].role() == "MASTER" { 0 } else { 1 };
    let s = 1 - m;
    let epoch: u64 = nodes[m].detailed()["repl_epoch"].parse().expect("epoch");
    let marks = [nodes[0].mark(), nodes[1].mark()];
    netns::ip(&["-n", at.ns, "link", "set", "dev", at.dev, "down"]).expect("cut");
    let promoted_line = format!("replication: promoted to master (epoch {})", epoch + 1);
    nodes[s].wait_line(marks[s], &promoted_line, DEADLINE);
    netns::ip(&["-n", at.ns, "link", "set", "dev", at.dev, "up"]).expect("heal");
    let old_master_noticed = nodes[m].count(marks[m], "replication: link down") > 0;
    let paired = wait_within("one master after a quick heal", DEADLINE, || {
        nodes[0].streaming()
            && nodes[1].streaming()
            && nodes[s].role() == "MASTER"
            && nodes[m].role() == "SLAVE"
    });
    let acked_now = acked.load(Ordering::Relaxed);
    wait_within(
        "sync writes acknowledged after a quick heal",
        DEADLINE,
        || acked.load(Ordering::Relaxed) >= acked_now + 20,
    );
    let (ds, dm) = (nodes[s].detailed(), nodes[m].detailed());
    assert_eq!(ds["repl_epoch"], (epoch + 1).to_string());
    assert_eq!(dm["repl_epoch"], ds["repl_epoch"]);
    println!(
        "quick heal: healed as the slave promoted itself (the old master had {} noticed); \
         one master {paired:?} later",
        if old_master_noticed {
            "already"
        } else {
            "not yet"
        }
    );
}

/// A master in namespace a and a slave in namespace b, replicating over the veth, with the
/// given `[master.replication]` and `[slave.replication]` settings; returns once both
/// stream.
fn start_pair(
    net: &netns::Pair,
    scratch: &std::path::Path,
    master_section: &str,
    slave_section: &str,
) -> (Proc, Proc) {
    let config = scratch.join("repl.toml");
    std::fs::write(
        &config,
        format!("[master.replication]\n{master_section}\n[slave.replication]\n{slave_section}"),
    )
    .expect("write config");
    let config = config.to_str().expect("utf-8 path").to_string();
    let args = |role: &str,
                outside: std::net::Ipv4Addr,
                me: std::net::Ipv4Addr,
                peer: std::net::Ipv4Addr|
     -> Vec<String> {
        [
            "--role",
            role,
            "--config",
            &config,
            "-l",
            &outside.to_string(),
            "-p",
            "0",
            "--repl-listen",
            &format!("{me}:{REPL_PORT}"),
            "--peer",
            &format!("{peer}:{REPL_PORT}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let master = Proc::spawn(
        net,
        &net.a,
        "node a",
        &scratch.join("log-a"),
        &args("master", net.a_outside, net.a_ip, net.b_ip),
    );
    let slave = Proc::spawn(
        net,
        &net.b,
        "node b",
        &scratch.join("log-b"),
        &args("slave", net.b_outside, net.b_ip, net.a_ip),
    );
    wait_within("the pair to stream over the veth", DEADLINE, || {
        master.streaming() && slave.streaming()
    });
    assert_eq!(master.role(), "MASTER");
    assert_eq!(slave.role(), "SLAVE");
    (master, slave)
}

/// Four sync-mode writers on one node (four connections, so that some write is always in
/// flight when the link goes), counting acknowledged and unconfirmed replies.
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<std::sync::atomic::AtomicUsize>,
    refused: Arc<std::sync::atomic::AtomicUsize>,
    handles: Vec<std::thread::JoinHandle<Writes>>,
}

impl Writers {
    /// Starts them and waits for 50 acknowledged writes.
    fn start(addr: std::net::SocketAddr) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handles = ["synca", "syncb", "syncc", "syncd"]
            .into_iter()
            .map(|p| sync_writer(p, addr, stop.clone(), acked.clone(), refused.clone()))
            .collect();
        wait_within("sync writes to be acknowledged", DEADLINE, || {
            acked.load(Ordering::Relaxed) >= 50
        });
        Writers {
            stop,
            acked,
            refused,
            handles,
        }
    }

    /// Waits for `n` more acknowledged writes.
    fn wait_acked(&self, n: usize, what: &str) -> Duration {
        let now = self.acked.load(Ordering::Relaxed);
        wait_within(what, DEADLINE, || {
            self.acked.load(Ordering::Relaxed) >= now + n
        })
    }

    /// Stops the writers, waits for both nodes to hold the same data, and checks that every
    /// write answered STORED is on both.
    fn finish(self, nodes: [&Proc; 2]) {
        self.stop.store(true, Ordering::Relaxed);
        let writes: Writes = self
            .handles
            .into_iter()
            .flat_map(|w| w.join().expect("a sync writer"))
            .collect();
        wait_within("identical contents at the end", DEADLINE, || {
            nodes[0].detailed()["repl_digest"] == nodes[1].detailed()["repl_digest"]
        });
        let stored: Vec<&(String, String, String)> =
            writes.iter().filter(|w| w.2 == "STORED").collect();
        let keys: Vec<String> = stored.iter().map(|w| w.0.clone()).collect();
        for node in nodes {
            let have = get_all(node.addr(), &keys);
            let lost: Vec<&String> = stored
                .iter()
                .filter(|(k, v, _)| have.get(k) != Some(v))
                .map(|w| &w.0)
                .collect();
            assert!(
                lost.is_empty(),
                "{} of {} acknowledged sync writes missing on {}: {:?}",
                lost.len(),
                stored.len(),
                node.log.name,
                &lost[..lost.len().min(10)]
            );
        }
        let mut kinds: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for w in &writes {
            *kinds.entry(w.2.as_str()).or_default() += 1;
        }
        println!(
            "sync writers: {} writes, {} acknowledged, all of them on both nodes at the end; \
             replies: {kinds:?}",
            writes.len(),
            stored.len()
        );
    }
}

/// The slave's heartbeat timeout is a third of the master's, so the slave promotes itself
/// while the master still believes in the old link; the link heals right then. The master
/// must learn that its slave has gone (the slave closed the connection) and yield to the
/// promoted node; no write acknowledged before, during or after is lost.
#[test]
fn a_heal_before_the_master_notices_the_cut_leaves_one_master() {
    if netns::require().is_none() {
        return;
    }
    let slow = "heartbeat_interval_ms = 100\nheartbeat_timeout_ms = 3000\nreconnect_max_ms = 300\n\
                ack = \"sync\"\nsync_timeout_ms = 500\n";
    let fast = "heartbeat_interval_ms = 100\nheartbeat_timeout_ms = 1000\nreconnect_max_ms = 300\n\
                ack = \"sync\"\nsync_timeout_ms = 500\n";
    let scratch = support::scratch("partition-late");
    let net = netns::Pair::create().unwrap_or_else(|e| panic!("build the namespaces: {e}"));
    let (master, slave) = start_pair(&net, &scratch, slow, fast);
    let w = Writers::start(master.addr());

    let (mark_m, mark_s) = (master.mark(), slave.mark());
    let cut = Instant::now();
    netns::ip(&["-n", &net.a, "link", "set", "dev", &net.a_if, "down"]).expect("cut");
    let (promoted, _) = slave.wait_line(
        mark_s,
        "replication: promoted to master (epoch 2)",
        DEADLINE,
    );
    netns::ip(&["-n", &net.a, "link", "set", "dev", &net.a_if, "up"]).expect("heal");
    let healed = Instant::now();
    assert_eq!(
        master.count(mark_m, "replication: link down"),
        0,
        "the master noticed the cut before the heal; the race was not reached"
    );
    println!(
        "late heal: the slave promoted itself {:?} after the cut; healed {:?} later, the \
         master still linked",
        promoted.duration_since(cut),
        healed.duration_since(promoted)
    );
    let (noticed, line) = master.wait_line(mark_m, "replication: link down", DEADLINE);
    println!(
        "late heal: the master logged {line:?} {:?} after the heal",
        noticed.duration_since(healed)
    );
    wait_within("one master after the late heal", DEADLINE, || {
        master.streaming()
            && slave.streaming()
            && slave.role() == "MASTER"
            && master.role() == "SLAVE"
    });
    let paired = healed.elapsed();
    println!("late heal: b MASTER, a SLAVE, streaming {paired:?} after the heal");
    let (ds, dm) = (slave.detailed(), master.detailed());
    assert_eq!(ds["repl_epoch"], "2");
    assert_eq!(dm["repl_epoch"], "2");
    assert_eq!(master.count(mark_m, "replication: promoted"), 0);
    w.wait_acked(20, "sync writes acknowledged after the late heal");
    w.finish([&master, &slave]);
}

#[test]
fn a_partition_splits_the_pair_and_the_heal_converges_without_losing_acknowledged_writes() {
    if netns::require().is_none() {
        return;
    }
    let section = format!(
        "heartbeat_interval_ms = {HEARTBEAT_INTERVAL_MS}\nheartbeat_timeout_ms = {HEARTBEAT_TIMEOUT_MS}\n\
         reconnect_max_ms = 300\nack = \"sync\"\nsync_timeout_ms = 500\nbacklog_mb = 1\n"
    );
    let scratch = support::scratch("partition");
    // The network goes first so that it is dropped last, after the nodes in it.
    let net = netns::Pair::create().unwrap_or_else(|e| panic!("build the namespaces: {e}"));
    let (master, slave) = start_pair(&net, &scratch, &section, &section);
    // Sync-mode writers on node a run from here to the end.
    let w = Writers::start(master.addr());

    // 1. Delay and loss on both ends of the link: writes on both sides still converge.
    let impairment = impair(&net.a, &net.a_if);
    impair(&net.b, &net.b_if);
    let impaired_at = Instant::now();
    let (mut on_a, mut on_b) = (Conn::connect(master.addr()), Conn::connect(slave.addr()));
    let batch = |side: &str| -> Vec<(String, String)> {
        (0..100)
            .map(|i| {
                (
                    format!("lossy{side}{i:03}"),
                    format!("{side}{i}-{}", "x".repeat(200)),
                )
            })
            .collect()
    };
    let (batch_a, batch_b) = (batch("a"), batch("b"));
    let replies_a = set_batch(&mut on_a, &batch_a);
    let replies_b = set_batch(&mut on_b, &batch_b);
    let answered = Instant::now();
    // A slow, lossy link can stall the stream past the heartbeat timeout (see below); a node
    // that turns slave at the next pairing refuses writes until its resync is done. Those
    // writes are not stored; every other one must reach both nodes.
    let mut lossy: Vec<(String, String)> = Vec::new();
    let mut refused_writes = 0;
    for (item, reply) in batch_a
        .into_iter()
        .chain(batch_b)
        .zip(replies_a.iter().chain(&replies_b))
    {
        if stored_here(reply) {
            lossy.push(item);
        } else {
            assert!(
                reply.contains("not serving yet"),
                "a write refused: {reply:?}"
            );
            refused_writes += 1;
        }
    }
    let converged_impaired = wait_within(
        "convergence over the impaired link",
        Duration::from_secs(60),
        || holds(master.addr(), &lossy) && holds(slave.addr(), &lossy),
    );
    // Heartbeats travel in the same TCP stream as the data: on a link this slow, queued
    // writes and TCP's backoff after tail drops can hold them past the 1 s timeout. Then the
    // link is declared down and the pair fails over and pairs again, which is allowed here;
    // what must hold is that everything stored converges.
    let flaps =
        master.count(0, "replication: link down") + slave.count(0, "replication: link down");
    for (ns, dev) in [(&net.a, &net.a_if), (&net.b, &net.b_if)] {
        println!("impaired link: {dev}: {}", netns::qdisc_stats(ns, dev));
    }
    println!(
        "impaired link ({impairment}): 200 writes (100 per side) answered in {:?}, both \
         nodes had every stored one {converged_impaired:?} later; {flaps} link losses \
         logged, {refused_writes} writes refused during a resync",
        answered.duration_since(impaired_at)
    );
    tc_in(&net.a, &["qdisc", "del", "dev", &net.a_if, "root"]).expect("remove impairment a");
    tc_in(&net.b, &["qdisc", "del", "dev", &net.b_if, "root"]).expect("remove impairment b");
    wait_within("the pair to stream after the impairment", DEADLINE, || {
        master.streaming() && slave.streaming()
    });

    // 2. Cut, split and heal, four times: the roles swap each time (the promoted slave has
    // the higher epoch and stays master), and the cut is made at alternate ends. The last
    // split writes more than the 1 MB backlog on each side.
    let refusals_before = w.refused.load(Ordering::Relaxed);
    let side_a = Side {
        node: &master,
        ns: &net.a,
        dev: &net.a_if,
    };
    let side_b = Side {
        node: &slave,
        ns: &net.b,
        dev: &net.b_if,
    };
    for cycle in 0..4 {
        let cut_at = if cycle % 2 == 0 { &side_a } else { &side_b };
        partition_cycle(
            cycle,
            [&side_a, &side_b],
            cut_at,
            [&mut on_a, &mut on_b],
            &w.acked,
            &w.refused,
            if cycle == 3 { 150 } else { 0 },
        );
    }
    // 3. A blip shorter than the heartbeat timeout changes nothing: TCP retransmits, no
    // link loss, no promotion, acknowledged writes flow again.
    blip(&side_a, [&master, &slave], &w.acked);
    // 4. A heal the moment the slave promotes itself, before the master has given up on the
    // old link: the race where a stale link could come back to life.
    quick_heal(&side_b, [&master, &slave], &w.acked);
    assert!(
        w.refused.load(Ordering::Relaxed) > refusals_before,
        "no write was in flight around the cuts"
    );
    w.finish([&master, &slave]);
    drop((on_a, on_b));
}
