//! Replication between two real `opsconsole` processes on loopback, checked through what an
//! operator sees (the cache protocol, `stats` and the log): the repcached dialogue, a
//! 200,000-item marugoto copy, failover on `kill -9` and rejoin of the restarted master,
//! detection of a silent (`kill -STOP`) master, and the shared secret.

mod support;

use support::conn::{Conn, number, stat, stats};

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::{Duration, Instant};

use support::timed_log::TimedLog;
use support::{DEADLINE, Resume, signal, spawn_node};

const NOT_SERVING: &str = "SERVER_ERROR replication: marugoto copy in progress, not serving yet";

/// A running node whose log lines are timestamped as they arrive, so a test can wait for a
/// line, measure when it appeared, and show the whole log if the test fails.
struct Proc {
    node: support::Node,
    log: TimedLog,
}

impl Proc {
    fn spawn(name: &str, args: &[String]) -> Proc {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut node = spawn_node(&refs);
        let log = TimedLog::capture(name, &mut node);
        Proc { node, log }
    }

    fn addr(&self) -> SocketAddr {
        self.node.addr
    }

    fn mark(&self) -> usize {
        self.log.mark()
    }

    fn find(&self, from: usize, needle: &str) -> Option<(Instant, String)> {
        self.log.find(from, needle)
    }

    fn count(&self, from: usize, needle: &str) -> usize {
        self.log.count(from, needle)
    }

    fn wait_line(&self, from: usize, needle: &str, limit: Duration) -> (Instant, String) {
        self.log.wait_line(from, needle, limit)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A stopped process still dies on the SIGKILL `support::Node` sends; continuing it
        // first just keeps the teardown ordinary. Only a child not yet reaped is signalled,
        // so the pid cannot belong to another process.
        if let Ok(None) = self.node.child.try_wait() {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &self.node.child.id().to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
        // The log (a field, dropped after this) prints itself if the test failed.
    }
}

/// Two replication ports and the arguments each node of the pair runs with.
struct Pair {
    a: u16,
    b: u16,
}

impl Pair {
    fn new() -> Pair {
        Pair {
            a: support::free_port(),
            b: support::free_port(),
        }
    }

    /// Arguments for `role`: the master listens on `a` and reaches `b`, the slave the reverse.
    fn args(&self, role: &str, extra: &[&str]) -> Vec<String> {
        let (me, peer) = if role == "master" {
            (self.a, self.b)
        } else {
            (self.b, self.a)
        };
        let mut v: Vec<String> = [
            "--role",
            role,
            "-p",
            "0",
            "--repl-listen",
            &format!("127.0.0.1:{me}"),
            "--peer",
            &format!("127.0.0.1:{peer}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    fn spawn(&self, role: &str, extra: &[&str]) -> Proc {
        Proc::spawn(role, &self.args(role, extra))
    }
}

/// A scratch directory for one test's files, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "opsconsole-{test}-{}-{}",
            std::process::id(),
            support::free_port()
        ));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write scratch file");
        path.to_str().expect("utf-8 path").to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Conn {
    /// Sends one request and returns its one-line reply.
    fn call(&mut self, request: &str) -> String {
        self.send(request.as_bytes());
        self.line()
    }

    /// A multi-key `get`: each hit as (key, flags, value), or the error line that
    /// replaced the whole reply.
    fn get_many(&mut self, keys: &[String]) -> Result<Vec<(String, u32, Vec<u8>)>, String> {
        self.send(format!("get {}\r\n", keys.join(" ")).as_bytes());
        let mut hits = Vec::new();
        loop {
            let head = self.line();
            if head == "END" {
                return Ok(hits);
            }
            if !head.starts_with("VALUE ") {
                assert!(hits.is_empty(), "{head:?} after values");
                return Err(head);
            }
            let parts: Vec<&str> = head.split(' ').collect();
            assert_eq!(parts.len(), 4, "malformed VALUE line {head:?}");
            let len: usize = parts[3].parse().expect("length");
            let mut data = vec![0u8; len + 2];
            self.reader.read_exact(&mut data).expect("value");
            assert_eq!(&data[len..], b"\r\n", "value not CRLF-terminated");
            data.truncate(len);
            hits.push((parts[1].to_string(), parts[2].parse().expect("flags"), data));
        }
    }

    fn get(&mut self, key: &str) -> Option<String> {
        let hits = self
            .get_many(&[key.to_string()])
            .unwrap_or_else(|e| panic!("get {key}: {e}"));
        hits.into_iter()
            .next()
            .map(|(_, _, v)| String::from_utf8(v).expect("utf-8 value"))
    }
}

/// One stat, from plain `stats` when it is there (cheap), else from `stats replication`.
fn streaming(p: &Proc) -> bool {
    let s = stats(p.addr(), false);
    s["repl_link"] == "streaming" && s["repl_serving"] == "yes"
}

fn same_digest(a: &Proc, b: &Proc) -> bool {
    stat(a.addr(), "repl_digest") == stat(b.addr(), "repl_digest")
}

/// Polls `cond` every 10 ms until it holds or `DEADLINE` passes.
fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    support::wait_until(what, cond);
}

fn wait_streaming(a: &Proc, b: &Proc) {
    wait_for("both nodes to stream", || streaming(a) && streaming(b));
}

#[test]
fn the_classic_repcached_dialogue() {
    let pair = Pair::new();
    let master = pair.spawn("master", &[]);
    let slave = pair.spawn("slave", &[]);
    wait_streaming(&master, &slave);

    // The log lines an operator watches for.
    let limit = Duration::from_secs(5);
    master.wait_line(
        0,
        &format!("replication: listen (127.0.0.1:{})", pair.a),
        limit,
    );
    slave.wait_line(
        0,
        &format!("replication: connect (peer=127.0.0.1:{})", pair.a),
        limit,
    );
    slave.wait_line(0, "replication: marugoto copy complete", limit);
    master.wait_line(0, "replication: start", limit);
    slave.wait_line(0, "replication: start", limit);

    let (ms, ss) = (stats(master.addr(), false), stats(slave.addr(), false));
    assert_eq!(ms["replication"], "MASTER");
    assert_eq!(ss["replication"], "SLAVE");
    assert!(
        ms["repl_peer"].starts_with("127.0.0.1:"),
        "{}",
        ms["repl_peer"]
    );
    assert_eq!(ss["repl_serving"], "yes");

    let mut m = Conn::connect(master.addr());
    let mut s = Conn::connect(slave.addr());
    // Set on the master, get on the slave.
    assert_eq!(m.call("set aa 0 0 3\r\n111\r\n"), "STORED");
    wait_for("aa on the slave", || s.get("aa").as_deref() == Some("111"));
    // Set on the slave, get on the master.
    assert_eq!(s.call("set bb 0 0 3\r\n222\r\n"), "STORED");
    wait_for("bb on the master", || m.get("bb").as_deref() == Some("222"));
    // The rest of the write commands travel too, both ways.
    assert_eq!(s.call("incr aa 9\r\n"), "120");
    wait_for("the incr on the master", || {
        m.get("aa").as_deref() == Some("120")
    });
    assert_eq!(m.call("append bb 0 0 2\r\n33\r\n"), "STORED");
    wait_for("the append on the slave", || {
        s.get("bb").as_deref() == Some("22233")
    });
    assert_eq!(m.call("delete aa\r\n"), "DELETED");
    wait_for("the delete on the slave", || s.get("aa").is_none());
    wait_for("identical contents", || same_digest(&master, &slave));
}

#[test]
fn a_marugoto_copy_of_200000_items_arrives_complete() {
    const ITEMS: usize = 200_000;
    let key = |i: usize| format!("item{i:06}");
    let value = |i: usize| format!("{i:0>100}");
    let flags = |i: usize| (i % 7) as u32;
    let pair = Pair::new();
    let master = pair.spawn("master", &["-m", "512"]);

    let load = Instant::now();
    let mut m = Conn::connect(master.addr());
    for start in (0..ITEMS).step_by(2000) {
        let mut batch = String::with_capacity(2000 * 140);
        for i in start..(start + 2000).min(ITEMS) {
            // Every tenth item expires in two hours: expiry travels with the copy.
            let exptime = if i % 10 == 0 { 7200 } else { 0 };
            batch.push_str(&format!(
                "set {} {} {exptime} 100 noreply\r\n{}\r\n",
                key(i),
                flags(i),
                value(i)
            ));
        }
        batch.push_str("mn\r\n");
        assert_eq!(m.call(&batch), "MN");
    }
    assert_eq!(number(master.addr(), "curr_items"), ITEMS as u64);
    println!(
        "loaded {ITEMS} items into the master in {:?}",
        load.elapsed()
    );

    let slave = pair.spawn("slave", &["-m", "512"]);
    // While the copy runs, the slave either refuses data commands or answers them from the
    // complete data set; a miss or a wrong value would be serving a partial copy.
    let mut probe = Conn::connect(slave.addr());
    let (mut refused, mut served, mut i) = (0u32, 0u32, 0usize);
    while !streaming(&slave) {
        let k = (i * 7919 + 199_999) % ITEMS;
        i += 1;
        match probe.get_many(&[key(k)]) {
            Err(e) => {
                assert_eq!(e, NOT_SERVING);
                refused += 1;
            }
            Ok(hits) => {
                assert_eq!(
                    hits,
                    vec![(key(k), flags(k), value(k).into_bytes())],
                    "the slave answered from a partial data set"
                );
                served += 1;
            }
        }
        assert!(
            slave.find(0, "replication: link down").is_none(),
            "the copy's link broke"
        );
        assert!(
            i < 1_000_000,
            "the copy did not finish (probe {i}); last stats {:?}",
            stats(slave.addr(), false)
        );
    }
    wait_streaming(&master, &slave);
    let (begin, line) = slave.wait_line(0, "replication: marugoto copying (receiving", DEADLINE);
    assert!(
        line.contains(&format!("receiving {ITEMS} items")),
        "copy announced as {line:?}"
    );
    let (end, _) = slave.wait_line(0, "replication: marugoto copy complete", DEADLINE);
    master.wait_line(
        0,
        &format!("marugoto copying (sending {ITEMS} items)"),
        DEADLINE,
    );
    let progress = slave.count(0, "replication: marugoto copy ");
    println!(
        "marugoto copy of {ITEMS} items: {:?} (from the slave's first to its last copy line; \
         {progress} copy log lines); {refused} reads refused and {served} served during the copy",
        end.duration_since(begin)
    );
    assert_eq!(
        stat(slave.addr(), "repl_copy_in"),
        format!("{ITEMS}/{ITEMS}_items_done")
    );

    // Every item, by batched multi-gets, then the digests.
    let check = Instant::now();
    let mut s = Conn::connect(slave.addr());
    for start in (0..ITEMS).step_by(500) {
        let idx: Vec<usize> = (start..(start + 500).min(ITEMS)).collect();
        let keys: Vec<String> = idx.iter().map(|&i| key(i)).collect();
        let hits = s
            .get_many(&keys)
            .unwrap_or_else(|e| panic!("get from {start}: {e}"));
        let want: Vec<(String, u32, Vec<u8>)> = idx
            .iter()
            .map(|&i| (key(i), flags(i), value(i).into_bytes()))
            .collect();
        if hits != want {
            let have: Vec<&String> = hits.iter().map(|h| &h.0).collect();
            let missing: Vec<&String> = keys.iter().filter(|k| !have.contains(k)).collect();
            panic!(
                "items {start}..: {} of {} returned; missing {:?}",
                hits.len(),
                keys.len(),
                &missing[..missing.len().min(10)]
            );
        }
    }
    println!("checked every item on the slave in {:?}", check.elapsed());
    let (md, sd) = (
        stat(master.addr(), "repl_digest"),
        stat(slave.addr(), "repl_digest"),
    );
    assert!(md.starts_with(&format!("{ITEMS}:")), "master digest {md}");
    assert_eq!(md, sd, "digests differ");
}

#[test]
fn kill_9_of_the_master_fails_over_and_the_restarted_master_rejoins_as_slave() {
    // Short heartbeats from a config file (the command line supplies everything else).
    let scratch = Scratch::new("failover");
    let section =
        "heartbeat_interval_ms = 100\nheartbeat_timeout_ms = 1000\nreconnect_max_ms = 300\n";
    let config = scratch.file(
        "repl.toml",
        &format!("[master.replication]\n{section}\n[slave.replication]\n{section}"),
    );
    let timeout = Duration::from_millis(1000);
    let pair = Pair::new();
    let mut master = pair.spawn("master", &["--config", &config]);
    let slave = pair.spawn("slave", &["--config", &config]);
    wait_streaming(&master, &slave);
    let mut m = Conn::connect(master.addr());
    for i in 0..100 {
        assert_eq!(
            m.call(&format!("set before{i} 0 0 2\r\nb{}\r\n", i % 10)),
            "STORED"
        );
    }
    wait_for("the writes to reach the slave", || {
        same_digest(&master, &slave)
    });
    drop(m);

    let mark = slave.mark();
    let killed = Instant::now();
    signal(&master.node.child, "KILL");
    // The slave takes over: it reports MASTER and accepts a write.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let took = killed.elapsed();
        if stat(slave.addr(), "replication") == "MASTER" {
            let mut c = Conn::connect(slave.addr());
            if c.call("set during 0 0 6\r\noutage\r\n") == "STORED" {
                break;
            }
        }
        assert!(
            took < DEADLINE,
            "the slave did not take over ({attempts} checks)"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = killed.elapsed();
    println!("kill -9 of the master: the slave took writes as MASTER after {took:?}");
    assert!(
        took <= timeout,
        "failover took {took:?}, longer than the {timeout:?} heartbeat timeout"
    );
    slave.wait_line(mark, "replication: link down", DEADLINE);
    slave.wait_line(mark, "replication: promoted to master (epoch 2)", DEADLINE);
    let status = support::wait_exit(&mut master.node.child);
    assert!(!status.success(), "a kill -9 is not a clean exit: {status}");

    // The old master restarts with the same arguments: it finds a master with a higher
    // epoch, becomes its slave and receives everything, including the write made while it
    // was gone.
    let restarted = pair.spawn("master", &["--config", &config]);
    wait_streaming(&restarted, &slave);
    wait_for("the restarted master to converge", || {
        same_digest(&restarted, &slave)
    });
    let (rs, ss) = (stats(restarted.addr(), true), stats(slave.addr(), true));
    assert_eq!(rs["replication"], "SLAVE");
    assert_eq!(ss["replication"], "MASTER");
    assert_eq!(rs["repl_epoch"], "2");
    assert_eq!(ss["repl_epoch"], "2");
    assert!(
        rs["repl_digest"].starts_with("101:"),
        "{}",
        rs["repl_digest"]
    );
    restarted.wait_line(0, "replication: marugoto copy complete", DEADLINE);
    let mut r = Conn::connect(restarted.addr());
    assert_eq!(r.get("during").as_deref(), Some("outage"));
    assert_eq!(r.get("before42").as_deref(), Some("b2"));
    // And the rejoined pair replicates again, both ways.
    assert_eq!(r.call("set after 0 0 1\r\na\r\n"), "STORED");
    let mut s = Conn::connect(slave.addr());
    wait_for("a write on the rejoined node", || {
        s.get("after").as_deref() == Some("a")
    });
}

#[test]
fn kill_stop_of_the_master_is_detected_by_heartbeat_within_the_default_timeout() {
    // Default heartbeat settings: 500 ms interval, 3000 ms timeout.
    let timeout = Duration::from_millis(3000);
    let margin = Duration::from_millis(1000);
    let pair = Pair::new();
    let master = pair.spawn("master", &[]);
    let slave = pair.spawn("slave", &[]);
    wait_streaming(&master, &slave);
    let mut m = Conn::connect(master.addr());
    assert_eq!(m.call("set before 0 0 1\r\nb\r\n"), "STORED");
    wait_for("the write to reach the slave", || {
        same_digest(&master, &slave)
    });

    let mark = slave.mark();
    let stopped = Instant::now();
    signal(&master.node.child, "STOP");
    let resume = Resume(&master.node.child);
    let (seen, line) = slave.wait_line(mark, "replication: link down", timeout + margin + margin);
    let took = seen.duration_since(stopped);
    println!("kill -STOP of the master: the slave logged {line:?} after {took:?}");
    assert!(
        line.contains("link down (no heartbeat from the peer for 3000 ms)"),
        "the silence was not detected by heartbeat: {line:?}"
    );
    assert!(
        took <= timeout + margin,
        "detection took {took:?} (timeout {timeout:?})"
    );
    // Not earlier than the silence itself allows: the last heartbeat came at most an
    // interval or so before the stop.
    assert!(
        took >= timeout - Duration::from_millis(1000),
        "detected after only {took:?}"
    );
    slave.wait_line(mark, "replication: promoted to master (epoch 2)", DEADLINE);
    let mut s = Conn::connect(slave.addr());
    assert_eq!(stat(slave.addr(), "replication"), "MASTER");
    assert_eq!(s.call("set during 0 0 6\r\noutage\r\n"), "STORED");

    // Continued, the old master notices the dead link, and the two pair up again with
    // exactly one master and the write made during the outage on both.
    let mark = master.mark();
    drop(resume);
    master.wait_line(mark, "replication: link down", DEADLINE);
    wait_streaming(&master, &slave);
    wait_for("the continued master to converge", || {
        same_digest(&master, &slave)
    });
    let (ms, ss) = (stats(master.addr(), true), stats(slave.addr(), true));
    let mut roles = [ms["replication"].as_str(), ss["replication"].as_str()];
    roles.sort_unstable();
    assert_eq!(roles, ["MASTER", "SLAVE"]);
    assert_eq!(ms["repl_epoch"], ss["repl_epoch"]);
    let mut m = Conn::connect(master.addr());
    assert_eq!(m.get("during").as_deref(), Some("outage"));
    assert_eq!(m.get("before").as_deref(), Some("b"));
}

#[test]
fn a_wrong_secret_is_refused_and_the_right_one_pairs() {
    let scratch = Scratch::new("secret");
    let good = scratch.file("good.secret", "correct horse battery\n");
    let other = scratch.file("other.secret", "staple\n");
    let short =
        "heartbeat_interval_ms = 100\nheartbeat_timeout_ms = 1000\nreconnect_max_ms = 300\n";
    let config = scratch.file(
        "repl.toml",
        &format!("[master.replication]\n{short}\n[slave.replication]\n{short}"),
    );
    let pair = Pair::new();
    let master = pair.spawn(
        "master",
        &["--config", &config, "--repl-secret-file", &good],
    );
    let intruder = pair.spawn(
        "slave",
        &["--config", &config, "--repl-secret-file", &other],
    );
    master.wait_line(0, "wrong replication secret", DEADLINE);
    intruder.wait_line(0, "wrong replication secret", DEADLINE);
    let (_, refusal) = master.wait_line(0, "replication: refused peer 127.0.0.1:", DEADLINE);
    assert!(
        refusal.contains(": wrong replication secret"),
        "refusal logged as {refusal:?}"
    );
    // Several more attempts are refused too, and none of them ever streams.
    let seen = Instant::now();
    wait_for("repeated refusals", || {
        for p in [&master, &intruder] {
            let s = stats(p.addr(), false);
            assert_ne!(
                s["repl_link"], "streaming",
                "{} paired with a wrong secret",
                p.log.name
            );
            assert_ne!(
                s["repl_link"], "marugoto_copying",
                "{} copied with a wrong secret",
                p.log.name
            );
        }
        number(master.addr(), "repl_links_refused") >= 3 && seen.elapsed() >= Duration::from_secs(1)
    });
    assert!(number(intruder.addr(), "repl_links_refused") > 0);
    for p in [&master, &intruder] {
        assert!(
            p.find(0, "replication: start").is_none(),
            "{} streamed",
            p.log.name
        );
        assert!(
            p.find(0, "marugoto").is_none(),
            "{} copied data",
            p.log.name
        );
        for secret in ["correct horse battery", "staple"] {
            assert!(
                p.find(0, secret).is_none(),
                "{} logged a secret",
                p.log.name
            );
        }
    }
    // Data written on the refused node stayed there.
    let mut c = Conn::connect(intruder.addr());
    assert_eq!(c.call("set intruder 0 0 1\r\nx\r\n"), "STORED");
    let mut m = Conn::connect(master.addr());
    assert_eq!(m.call("set kept 0 0 1\r\nk\r\n"), "STORED");
    drop(intruder);

    // The same slave with the right secret pairs, gets the master's data, and replicates.
    let friend = pair.spawn("slave", &["--config", &config, "--repl-secret-file", &good]);
    wait_streaming(&master, &friend);
    assert_eq!(stat(friend.addr(), "replication"), "SLAVE");
    let mut f = Conn::connect(friend.addr());
    assert_eq!(f.get("kept").as_deref(), Some("k"));
    assert_eq!(m.get("intruder"), None);
    assert_eq!(f.call("set friend 0 0 1\r\nf\r\n"), "STORED");
    wait_for("the friend's write on the master", || {
        m.get("friend").as_deref() == Some("f")
    });
}
