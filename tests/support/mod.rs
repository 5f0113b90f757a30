//! Helpers shared by the integration tests: start the real `opsconsole` binary (and, where a
//! test compares against it, the real `memcached`) on loopback ports chosen by the OS, and poll
//! with deadlines instead of sleeping.
#![allow(dead_code)]

pub mod backends;
pub mod cluster;
pub mod conn;
pub mod fixtures;
pub mod http;
pub mod l7;
pub mod netns;
pub mod timed_log;
pub mod tmux;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a test waits for a process to come up or a condition to hold.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A running `opsconsole` process; killed when dropped.
pub struct Node {
    pub child: Child,
    /// The cache listener's address, read from the "listening on" log line.
    pub addr: SocketAddr,
    /// Every stderr line the process printed so far is forwarded here.
    pub log: mpsc::Receiver<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal (by name, e.g. "TERM") to a process.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} failed");
}

/// Sends SIGCONT when dropped, so a stopped process is never left behind by a failing test.
pub struct Resume<'a>(pub &'a Child);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .status();
    }
}

/// Waits for a process to exit, returning its status, or panics at the deadline.
pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("process did not exit within {DEADLINE:?}");
}

/// Starts `opsconsole` with exactly `args`; every stderr line it prints is forwarded to the
/// receiver.
pub fn spawn_logged<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_opsconsole"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start opsconsole");
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// An `opsconsole` process whose stderr lines arrive on `log`; killed when dropped.
pub struct Process {
    pub child: Child,
    pub log: mpsc::Receiver<String>,
}

impl Process {
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Process {
        let (child, log) = spawn_logged(args);
        Process { child, log }
    }

    /// Waits for a log line containing `text`; returns it.
    pub fn wait_for(&self, text: &str) -> String {
        wait_for_line(&self.log, text)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory of this test process's own under the system's temporary directory.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("opsconsole-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A node started in this test process from config text, with the runtime it runs on (one
/// worker thread; the balancers bring their own).
pub fn node_from_toml(text: &str) -> (tokio::runtime::Runtime, opsconsole::node::Node) {
    let path = std::path::Path::new("test.toml");
    let config = opsconsole::config::Config::from_toml(text, path).expect("config parses");
    config
        .validate()
        .map_err(|e| e.error)
        .expect("config valid");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let node = rt
        .block_on(opsconsole::node::Node::start(&config))
        .expect("node starts");
    (rt, node)
}

/// Waits for a log line containing `text`; returns it, or panics at the deadline.
pub fn wait_for_line(log: &mpsc::Receiver<String>, text: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match log.recv_timeout(left) {
            Ok(line) if line.contains(text) => return line,
            Ok(_) => {}
            Err(_) => panic!("no log line with {text:?} within {DEADLINE:?}"),
        }
    }
}

/// Starts `opsconsole --headless` with `args` (which should include `-p 0`) and waits until it
/// logs the address its cache listener is bound to.
pub fn spawn_node(args: &[&str]) -> Node {
    let log_dir = std::env::temp_dir().join("opsconsole-test-logs");
    let mut all: Vec<std::ffi::OsString> =
        vec!["--headless".into(), "--log-dir".into(), log_dir.into()];
    all.extend(args.iter().map(Into::into));
    let (mut child, rx) = spawn_logged(&all);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(addr) = listening_addr(&line) {
                    return Node {
                        child,
                        addr,
                        log: rx,
                    };
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("opsconsole {args:?} did not log a listening address within {DEADLINE:?}");
            }
        }
    }
}

/// The address after `marker` in a log line.
pub fn addr_after(line: &str, marker: &str) -> SocketAddr {
    line.split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("an address after {marker:?} in {line}"))
}

/// Extracts `ADDR` from the cache's log line `cache ROLE listening on ADDR`.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("cache ") {
        return None;
    }
    let rest = line.split("listening on ").nth(1)?;
    rest.split_whitespace()
        .next()?
        .trim_end_matches(',')
        .parse()
        .ok()
}

/// A running Debian `memcached`; killed when dropped.
pub struct Memcached {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether tests that need real peers (memcached, python clients) must fail instead of skip.
pub fn peers_required() -> bool {
    std::env::var("OPSCONSOLE_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// Skips (returns None, printing why) or fails, per `OPSCONSOLE_REQUIRE_PEERS`, when a peer
/// program is missing.
pub fn require_program(name: &str) -> Option<()> {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(());
    }
    if peers_required() {
        panic!("{name} is not on PATH and OPSCONSOLE_REQUIRE_PEERS=1");
    }
    eprintln!("SKIPPED: {name} is not on PATH");
    None
}

/// Starts `memcached` on a free loopback port with the given extra arguments. memcached cannot
/// report an OS-chosen port, so a free one is picked and the start retried if it was taken.
pub fn spawn_memcached(extra: &[&str]) -> Option<Memcached> {
    require_program("memcached")?;
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new("memcached")
            .args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start memcached");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break; // exited: most likely the port was taken; pick another
            }
            if TcpStream::connect(addr).is_ok() {
                return Some(Memcached { child, addr });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("memcached did not start");
}

/// A port that is free right now and that the kernel will not hand out on its own.
///
/// A test that must know a port before the process listening on it starts (a replication pair
/// names each other's addresses) cannot bind `:0`. A port taken from the ephemeral range and
/// released can be reused at once by any outgoing connection on the machine, which made such
/// tests fail now and then with "address in use". Ports below the ephemeral range are never
/// chosen by the kernel, so only another test picking the same random port could collide, and
/// within one process each port is handed out once.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, RandomState};
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOW: u16 = 10_000;
    if ephemeral_low > LOW + 1_000 {
        let span = u64::from(ephemeral_low - LOW);
        let random = RandomState::new();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        let handed_out = handed_out.get_or_insert_with(HashSet::new);
        for attempt in 0u64..1_000 {
            let port = LOW + (random.hash_one((std::process::id(), attempt)) % span) as u16;
            if handed_out.contains(&port) {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                handed_out.insert(port);
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// The built-in demo config (`configs/demo.toml`) with every port it names moved to a free
/// one, the same old port to the same new one everywhere so the sections still point at
/// each other (the L4 service at the L7 listener, the pools at the app servers, the cache
/// service at the pair), and its log under `log_dir`.
pub fn demo_on_free_ports(log_dir: &std::path::Path) -> String {
    use std::collections::HashMap;
    let mut moved: HashMap<String, u16> = HashMap::new();
    let mut port = |old: &str| *moved.entry(old.to_string()).or_insert_with(free_port);
    let mut out = String::new();
    for line in opsconsole::config::DEMO_TOML.lines() {
        let text = line.trim_start();
        if text.starts_with('#') {
            out.push_str(line);
        } else if text.starts_with("dir = ") {
            out.push_str(&format!("dir = \"{}\"", log_dir.display()));
        } else if let Some(old) = text.strip_prefix("port = ") {
            out.push_str(&format!("port = {}", port(old.trim())));
        } else {
            let mut rest = line;
            while let Some(at) = rest.find("127.0.0.1:") {
                let (before, after) = rest.split_at(at + "127.0.0.1:".len());
                let digits = after.chars().take_while(char::is_ascii_digit).count();
                out.push_str(before);
                out.push_str(&port(&after[..digits]).to_string());
                rest = &after[digits..];
            }
            out.push_str(rest);
        }
        out.push('\n');
    }
    out
}

/// Polls `cond` until it is true or the deadline passes.
pub fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_until_within(what, DEADLINE, cond);
}

/// `wait_until` with a deadline of the test's choosing.
pub fn wait_until_within(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what} ({limit:?})");
}

/// A blocking text-protocol client for conversation tests.
pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads until the bytes read so far end with `suffix`.
    pub fn read_until_suffix(&mut self, suffix: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while !out.ends_with(suffix) {
            let n = self.stream.read(&mut buf).expect("read");
            if n == 0 {
                panic!(
                    "connection closed before {:?}; got {:?}",
                    String::from_utf8_lossy(suffix),
                    String::from_utf8_lossy(&out)
                );
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    /// Reads exactly `n` bytes.
    pub fn read_exact_n(&mut self, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        self.stream.read_exact(&mut out).expect("read_exact");
        out
    }

    /// Sends `request` and reads until the reply ends with `suffix`.
    pub fn call(&mut self, request: &[u8], suffix: &[u8]) -> Vec<u8> {
        self.send(request);
        self.read_until_suffix(suffix)
    }
}
