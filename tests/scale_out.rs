//! Growing past one pair the way memcached users do: three replicated pairs (six processes),
//! each behind its own L4 `fo` service (the master first, its slave when the master is down),
//! and Python's pymemcache `HashClient` with ketama hashing over the three service addresses,
//! driven by `tests/clients/hash_failover.py`. One pair's master is killed with SIGKILL while
//! the client reads and writes: keys on the other pairs never fail, keys on the broken pair
//! fail only inside the failover window, and at the end every key reads back. The killed
//! master is then restarted and rejoins its pair as the slave.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::conn::stats;
use support::{DEADLINE, Node, Process, free_port, signal, spawn_node};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/hash_failover.py"
);
const PAIRS: usize = 3;
const KEYS: usize = 600;
const HEARTBEAT_TIMEOUT_MS: u64 = 1000;
const CHECK_INTERVAL_MS: u64 = 200;
const CHECK_FALL: u64 = 2;
/// How long after the kill the broken pair may fail requests: the slave's heartbeat timeout
/// plus the balancer's checks noticing the master (`fall` × interval), with a margin for two
/// busy cores. (Connects to the dead master are refused at once and retried on the slave, so
/// in practice the window is much shorter; see RELIABILITY.md.)
const WINDOW: Duration =
    Duration::from_millis(HEARTBEAT_TIMEOUT_MS + CHECK_FALL * CHECK_INTERVAL_MS + 1600);

/// Whether `python3` can import pymemcache; skips (None) or fails per
/// `OPSCONSOLE_REQUIRE_PEERS`.
fn require_pymemcache() -> Option<()> {
    support::require_program("python3")?;
    let importable = Command::new("python3")
        .args(["-c", "import pymemcache"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if importable {
        return Some(());
    }
    if support::peers_required() {
        panic!("python3 cannot import pymemcache and OPSCONSOLE_REQUIRE_PEERS=1");
    }
    eprintln!("SKIPPED: python3 cannot import pymemcache (pip install pymemcache)");
    None
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One replicated pair on loopback with short heartbeats and `sync` acks.
struct Pair {
    repl: (u16, u16),
    master: Node,
    slave: Node,
}

impl Pair {
    fn start(config: &str) -> Pair {
        let repl = (free_port(), free_port());
        Pair {
            repl,
            master: spawn(&args(repl, config, "master")),
            slave: spawn(&args(repl, config, "slave")),
        }
    }

    fn streaming(&self) -> bool {
        [&self.master, &self.slave].iter().all(|n| {
            let s = stats(n.addr, false);
            s["repl_link"] == "streaming" && s["repl_serving"] == "yes"
        })
    }
}

/// A node's arguments: the master listens on `repl.0` and reaches `repl.1`, the slave the
/// reverse.
fn args(repl: (u16, u16), config: &str, role: &str) -> Vec<String> {
    let (me, peer) = if role == "master" {
        repl
    } else {
        (repl.1, repl.0)
    };
    [
        "--role",
        role,
        "--config",
        config,
        "-p",
        "0",
        "--repl-listen",
        &format!("127.0.0.1:{me}"),
        "--peer",
        &format!("127.0.0.1:{peer}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn spawn(args: &[String]) -> Node {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_node(&refs)
}

/// The client script's stdout, line by line.
struct Script {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Script {
    fn next(&self, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line[prefix.len()..].to_string(),
                Ok(_) => {}
                Err(_) => panic!("the client script printed no {prefix:?} line within {limit:?}"),
            }
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn three_pairs_behind_a_ketama_client_survive_the_loss_of_one_master() {
    if require_pymemcache().is_none() {
        return;
    }
    let dir = support::scratch("scale-out");
    let section = format!(
        "heartbeat_interval_ms = 100\nheartbeat_timeout_ms = {HEARTBEAT_TIMEOUT_MS}\n\
         reconnect_max_ms = 300\nack = \"sync\"\nsync_timeout_ms = 500\n"
    );
    let repl_config = dir.join("repl.toml");
    std::fs::write(
        &repl_config,
        format!("[master.replication]\n{section}\n[slave.replication]\n{section}"),
    )
    .expect("write config");
    let repl_config = repl_config.to_str().expect("utf-8 path").to_string();

    let mut pairs: Vec<Pair> = (0..PAIRS).map(|_| Pair::start(&repl_config)).collect();
    support::wait_until("every pair to stream", || pairs.iter().all(Pair::streaming));

    // One L4 service per pair: `fo` sends everything to the highest-weight server that is
    // up (the master), and a refused connect is retried on the other (its slave).
    let mut l4 = String::from("[l4]\nthreads = 1\n");
    let mut services: Vec<SocketAddr> = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        services.push(listen);
        l4.push_str(&format!(
            "[l4.services.pair{i}]\nlisten = \"{listen}\"\nscheduler = \"fo\"\nretries = 1\n\
             connect_timeout_ms = 500\nservers = [\n  {{ name = \"master\", address = \"{}\", weight = 100 }},\n  \
             {{ name = \"slave\", address = \"{}\", weight = 1 }},\n]\n\
             [l4.services.pair{i}.check]\ntype = \"memcached\"\ninterval_ms = {CHECK_INTERVAL_MS}\n\
             timeout_ms = 200\nrise = 2\nfall = {CHECK_FALL}\n",
            p.master.addr, p.slave.addr
        ));
    }
    let l4_path = dir.join("l4.toml");
    std::fs::write(&l4_path, &l4).expect("write l4 config");
    let balancer = Process::spawn(&[
        "--headless",
        "--role",
        "l4",
        "--config",
        l4_path.to_str().expect("utf-8 path"),
        "--log-dir",
        dir.join("log").to_str().expect("utf-8 path"),
    ]);
    for i in 0..PAIRS {
        balancer.wait_for(&format!("l4 service pair{i} listening on"));
    }

    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .arg(KEYS.to_string())
        .args(services.iter().map(|s| s.to_string()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python3");
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut script = Script { child, lines: rx };
    let loaded: HashMap<String, String> =
        serde_json::from_str(&script.next("LOADED ", DEADLINE)).expect("LOADED json");
    let pair_of = |server: &str| -> usize {
        services
            .iter()
            .position(|s| s.to_string() == server)
            .unwrap_or_else(|| panic!("unknown server {server}"))
    };
    let mut spread = [0usize; PAIRS];
    for server in loaded.values() {
        spread[pair_of(server)] += 1;
    }
    println!("ketama spread of {KEYS} keys over the pairs: {spread:?}");
    assert!(
        spread.iter().all(|&n| n > 0),
        "a pair got no keys: {spread:?}"
    );
    script.next("ROUND ", DEADLINE);

    // Kill pair 1's master outright.
    const BROKEN: usize = 1;
    let killed_at = now();
    let killed = Instant::now();
    signal(&pairs[BROKEN].master.child, "KILL");
    support::wait_until("the broken pair's slave to take over", || {
        stats(pairs[BROKEN].slave.addr, false)["replication"] == "MASTER"
    });
    let promoted = killed.elapsed();
    println!("SIGKILL of pair {BROKEN}'s master: its slave was MASTER after {promoted:?}");
    // The pair runs on its slave alone for a while: whole passes over every key, for at
    // least a second and a half after the kill.
    script.next("ROUND ", DEADLINE);
    while killed.elapsed() < Duration::from_millis(1500) {
        script.next("ROUND ", DEADLINE);
    }

    // The old master comes back with the same arguments and rejoins as the slave.
    let _ = pairs[BROKEN].master.child.wait();
    let restart = args(pairs[BROKEN].repl, &repl_config, "master");
    pairs[BROKEN].master = spawn(&restart);
    support::wait_until("the restarted master to rejoin", || {
        pairs[BROKEN].streaming()
    });
    let rejoined_at = now();
    assert_eq!(
        stats(pairs[BROKEN].master.addr, false)["replication"],
        "SLAVE",
        "the restarted master rejoins as the slave (lower epoch)"
    );
    println!(
        "the restarted master rejoined as slave {:.2}s after the kill",
        rejoined_at - killed_at
    );
    script.next("ROUND ", DEADLINE);
    script.next("ROUND ", DEADLINE);

    script
        .child
        .stdin
        .as_mut()
        .expect("stdin piped")
        .write_all(b"STOP\n")
        .expect("tell the script to stop");
    let result: serde_json::Value =
        serde_json::from_str(&script.next("RESULT ", Duration::from_secs(60)))
            .expect("RESULT json");

    // Judge every error: (time, server, op, key, outcome).
    let events = result["events"].as_array().expect("events");
    let (mut in_window, mut unconfirmed, mut last_error) = (0usize, 0usize, 0f64);
    for e in events {
        let (t, server, op, key, outcome) = (
            e[0].as_f64().expect("time"),
            e[1].as_str().expect("server"),
            e[2].as_str().expect("op"),
            e[3].as_str().expect("key"),
            e[4].as_str().expect("outcome"),
        );
        let pair = pair_of(server);
        assert_eq!(
            pair,
            BROKEN,
            "{op} of {key} on healthy pair {pair} failed at {:+.3}s from the kill: {outcome}",
            t - killed_at
        );
        assert!(
            t >= killed_at,
            "{op} of {key} failed before the kill: {outcome}"
        );
        if outcome == "unconfirmed" {
            // A sync-mode node alone keeps the write and says its peer did not confirm it:
            // expected from the kill until the restarted master has rejoined.
            assert!(
                t <= rejoined_at + 1.0,
                "write of {key} unconfirmed {:.3}s after the pair was whole again",
                t - rejoined_at
            );
            unconfirmed += 1;
        } else {
            assert!(
                t - killed_at <= WINDOW.as_secs_f64(),
                "{op} of {key} failed {:.3}s after the kill (window {WINDOW:?}): {outcome}",
                t - killed_at
            );
            in_window += 1;
            last_error = last_error.max(t - killed_at);
        }
    }
    let final_missing = result["final"]["missing"].as_array().expect("missing");
    let final_errors = result["final"]["errors"].as_array().expect("errors");
    assert!(
        final_missing.is_empty() && final_errors.is_empty(),
        "at the end, keys missing: {final_missing:?}; reads failing: {final_errors:?}"
    );
    println!(
        "client: {} reads and {} writes in {} rounds; {in_window} failed requests, all on pair \
         {BROKEN}, the last {last_error:.3}s after the kill; {unconfirmed} writes answered \
         unconfirmed (kept by the lone node) until the rejoin; all {} keys read back at the end",
        result["ops"]["read"], result["ops"]["write"], result["rounds"], result["checked"]
    );
    drop(script);
    drop(balancer);
}

/// A node that rejoins its pair empty (a restarted master) refuses data commands until its
/// marugoto copy is complete. The balancer's `memcached` check must count it as down until
/// then: `fo` prefers it (the highest weight), and every client sent there would get
/// `SERVER_ERROR ... not serving yet` for as long as the copy takes.
#[test]
fn the_balancer_sends_no_client_to_a_node_still_receiving_its_copy() {
    let dir = support::scratch("scale-out-copying");
    // A copy of 20 MB paced at 1 MiB/s (the slowest the heartbeat timeout allows) keeps the
    // joining node refusing for many seconds.
    let section = "heartbeat_interval_ms = 100\nheartbeat_timeout_ms = 1000\nreconnect_max_ms = 300\n\
                   copy_bytes_per_sec = \"1m\"\n";
    let config = dir.join("repl.toml");
    std::fs::write(
        &config,
        format!("[master.replication]\n{section}\n[slave.replication]\n{section}"),
    )
    .expect("write config");
    let config = config.to_str().expect("utf-8 path").to_string();
    let repl = (free_port(), free_port());
    let master = spawn(&args(repl, &config, "master"));
    let mut c = support::conn::Conn::connect(master.addr);
    for start in (0..2000).step_by(100) {
        let mut batch = String::new();
        for i in start..start + 100 {
            batch.push_str(&format!(
                "set item{i:05} 0 0 10000 noreply\r\n{i:0>10000}\r\n"
            ));
        }
        batch.push_str("mn\r\n");
        c.send(batch.as_bytes());
        assert_eq!(c.line(), "MN");
    }
    c.send(b"set probe 0 0 2\r\nok\r\n");
    assert_eq!(c.line(), "STORED");

    let joining = spawn(&args(repl, &config, "slave"));
    support::wait_until("the joining node to be copying", || {
        stats(joining.addr, false)["repl_serving"] == "no"
    });

    // The joining node first (weight 100), the complete one behind it.
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let l4 = format!(
        "[l4]\nthreads = 1\n[l4.services.pair]\nlisten = \"{listen}\"\nscheduler = \"fo\"\nretries = 1\n\
         servers = [\n  {{ name = \"joining\", address = \"{}\", weight = 100 }},\n  \
         {{ name = \"complete\", address = \"{}\", weight = 1 }},\n]\n\
         [l4.services.pair.check]\ntype = \"memcached\"\ninterval_ms = 200\ntimeout_ms = 200\nrise = 1\nfall = 1\n",
        joining.addr, master.addr
    );
    let l4_path = dir.join("l4.toml");
    std::fs::write(&l4_path, &l4).expect("write l4 config");
    let balancer = Process::spawn(&[
        "--headless",
        "--role",
        "l4",
        "--config",
        l4_path.to_str().expect("utf-8 path"),
        "--log-dir",
        dir.join("log").to_str().expect("utf-8 path"),
    ]);
    balancer.wait_for("l4 service pair listening on");
    let get_probe = || {
        let mut c = support::conn::Conn::connect(listen);
        c.send(b"get probe\r\n");
        c.line()
    };
    // Servers start up; one failed check takes the joining node out.
    support::wait_until(
        "the balancer to stop sending clients to the copying node",
        || get_probe() == "VALUE probe 0 2",
    );
    let line = balancer.wait_for("server joining in pair is DOWN");
    assert!(
        line.contains("marugoto copy in progress"),
        "the check said {line:?}"
    );
    assert_eq!(
        stats(joining.addr, false)["repl_serving"],
        "no",
        "the copy finished before the check could be judged; slow it down"
    );
    for _ in 0..20 {
        assert_eq!(
            get_probe(),
            "VALUE probe 0 2",
            "a client was sent to the copying node"
        );
    }
}
