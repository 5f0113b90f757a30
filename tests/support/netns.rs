//! Real network namespaces for partition tests: two namespaces joined by a veth pair (the link
//! that gets cut and impaired), each also reachable from the test's own namespace by a veth of
//! its own (so clients and `stats` are unaffected by what happens to the link), and processes
//! started inside them. Everything is removed when the guard drops, also when a test fails.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use super::{DEADLINE, Node, listening_addr, peers_required};

/// Runs `ip ARGS`; returns its stderr on failure.
pub fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

/// Runs `tc ARGS` inside namespace `ns`; returns its stderr on failure.
pub fn tc_in(ns: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["netns", "exec", ns, "tc"];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// The counters line of `tc -s qdisc show dev DEV` in `ns` ("Sent ... (dropped N, ...)").
pub fn qdisc_stats(ns: &str, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "tc", "-s", "qdisc", "show", "dev", dev])
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .find(|l| l.trim_start().starts_with("Sent "))
            .unwrap_or("")
            .trim()
            .to_string(),
        Err(e) => format!("tc -s: {e}"),
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program} {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A number unique among this process's calls (tests of one binary run as parallel threads
/// of one process), kept to one digit so names fit the 15 bytes an interface name may have.
fn next_number() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10
}

/// The pid and a number: unique among concurrent runs and the threads of one.
fn unique_tag() -> String {
    format!("{}{}", std::process::id(), next_number())
}

/// Whether this process may create namespaces and veths: root, and `ip netns` works. Skips
/// (None, printing why) or fails per `OPSCONSOLE_REQUIRE_PEERS`.
pub fn require() -> Option<()> {
    // Tests of one binary run as threads of one process under `cargo test`: the probe's name
    // needs more than the pid.
    let probe = format!("ocp{}", unique_tag());
    let why = match Command::new("id").arg("-u").output() {
        Ok(o) if String::from_utf8_lossy(&o.stdout).trim() != "0" => {
            Some("not running as root".to_string())
        }
        Err(e) => Some(format!("cannot run id: {e}")),
        Ok(_) => match ip(&["netns", "add", &probe]) {
            Ok(()) => {
                let _ = ip(&["netns", "del", &probe]);
                None
            }
            Err(e) => Some(format!("ip netns is unusable: {e}")),
        },
    };
    let Some(why) = why else {
        return Some(());
    };
    if peers_required() {
        panic!("network namespaces are needed and OPSCONSOLE_REQUIRE_PEERS=1: {why}");
    }
    eprintln!("SKIPPED: partition tests need root and `ip netns` ({why})");
    None
}

/// Two namespaces `a` and `b` with a veth between them (`a_if` in `a` at `a_ip`, `b_if` in `b`
/// at `b_ip`), plus a path from the test's namespace into each: `a_outside` / `b_outside` are
/// the addresses the nodes listen on for clients.
pub struct Pair {
    pub a: String,
    pub b: String,
    pub a_if: String,
    pub b_if: String,
    pub a_ip: Ipv4Addr,
    pub b_ip: Ipv4Addr,
    pub a_outside: Ipv4Addr,
    pub b_outside: Ipv4Addr,
    root_links: Vec<String>,
    namespaces: Vec<String>,
}

impl Pair {
    /// Builds the topology; names carry the pid and a number so concurrent runs and tests
    /// never share anything.
    pub fn create() -> Result<Pair, String> {
        let (pid, n) = (std::process::id(), next_number());
        let tag = format!("{pid}{n}");
        // Root-side addresses must be unique on this host: two /30s per pair, from a block
        // chosen by the pid inside 10.231.0.0/16 (the namespaces' own link can use fixed
        // addresses, as nothing outside them sees it).
        let block = ((pid * 10 + n) % 8192) * 8;
        let base =
            |n: u32| Ipv4Addr::new(10, 231, (block / 256) as u8, (block % 256) as u8 + n as u8);
        let mut pair = Pair {
            a: format!("oc{tag}a"),
            b: format!("oc{tag}b"),
            a_if: format!("oc{tag}ab"),
            b_if: format!("oc{tag}ba"),
            a_ip: Ipv4Addr::new(10, 0, 0, 1),
            b_ip: Ipv4Addr::new(10, 0, 0, 2),
            a_outside: base(2),
            b_outside: base(6),
            root_links: Vec::new(),
            namespaces: Vec::new(),
        };
        for ns in [pair.a.clone(), pair.b.clone()] {
            ip(&["netns", "add", &ns])?;
            pair.namespaces.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "dev", "lo", "up"])?;
        }
        let (a, b) = (pair.a.clone(), pair.b.clone());
        // The link under test.
        ip(&[
            "link", "add", &pair.a_if, "netns", &a, "type", "veth", "peer", "name", &pair.b_if,
            "netns", &b,
        ])?;
        for (ns, dev, addr) in [(&a, &pair.a_if, pair.a_ip), (&b, &pair.b_if, pair.b_ip)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", "dev", dev, "up"])?;
        }
        // The test's way in: root end at .1 / .5, namespace end at .2 / .6.
        for (ns, end, offset) in [(&a, "ra", 0u32), (&b, "rb", 4u32)] {
            let outer = format!("oc{tag}{end}");
            let inner = format!("oc{tag}{end}i");
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", ns,
            ])?;
            pair.root_links.push(outer.clone());
            ip(&[
                "addr",
                "add",
                &format!("{}/30", base(offset + 1)),
                "dev",
                &outer,
            ])?;
            ip(&["link", "set", "dev", &outer, "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/30", base(offset + 2)),
                "dev",
                &inner,
            ])?;
            ip(&["-n", ns, "link", "set", "dev", &inner, "up"])?;
        }
        Ok(pair)
    }

    /// Starts `opsconsole --headless ARGS` inside namespace `ns` and waits for its cache
    /// listener's address.
    pub fn spawn(&self, ns: &str, log_dir: &std::path::Path, args: &[String]) -> Node {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_opsconsole")])
            .arg("--headless")
            .arg("--log-dir")
            .arg(log_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start opsconsole in a namespace");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = listening_addr(&line) {
                        return Node {
                            child,
                            addr: SocketAddr::new(addr.ip(), addr.port()),
                            log: rx,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("opsconsole in {ns} did not log a listening address");
                }
            }
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // Deleting one end of a veth deletes both; a namespace's name goes at once and the
        // namespace itself with its last process (the nodes are dropped before this guard).
        for link in &self.root_links {
            let _ = ip(&["link", "del", "dev", link]);
        }
        for ns in &self.namespaces {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}
