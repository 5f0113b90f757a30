//! Resource abuse against the cache port of a real `opsconsole` process: thousands of idle
//! connections against `conn_limit`, idle and slowloris clients against the timeouts, a
//! client that never reads its replies, a get of 10,000 keys at the item size limit, a write
//! flood under `-m 64`, and a peer stalled while its replication queue overflows. Each checks
//! that the limit holds, memory stays bounded and other clients keep being served.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::conn::{Conn, number};
use support::{DEADLINE, Node, scratch, spawn_node, wait_until_within};

/// Starts a headless cache master from `[master]` keys (port 0 is added).
fn cache(name: &str, keys: &str) -> Node {
    let dir = scratch(&format!("abuse-{name}"));
    let path = dir.join("cache.toml");
    std::fs::write(&path, format!("[master]\nport = 0\n{keys}\n")).expect("write config");
    let path = path.to_string_lossy().into_owned();
    spawn_node(&["--config", &path])
}

/// The process's resident memory in bytes.
fn rss(node: &Node) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.child.id()))
        .expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// Raises this test process's open-files limit as far as it goes; returns it.
fn raise_own_fd_limit() -> u64 {
    opsconsole::fd_limit::raise().expect("getrlimit").1
}

/// `stats` read through an existing connection (a new one may be refused at the limit).
fn stat_on(conn: &mut Conn, name: &str) -> u64 {
    conn.send(b"stats\r\n");
    let mut value = None;
    loop {
        let line = conn.line();
        if line == "END" {
            break;
        }
        if let Some(v) = line.strip_prefix(&format!("STAT {name} ")) {
            value = v.parse().ok();
        }
    }
    value.unwrap_or_else(|| panic!("no stat {name}"))
}

/// A set and a get on `conn`; returns how long the round trips took.
fn set_get(conn: &mut Conn, key: &str, value: &str) -> Duration {
    let started = Instant::now();
    conn.send(format!("set {key} 0 0 {}\r\n{value}\r\nget {key}\r\n", value.len()).as_bytes());
    assert_eq!(conn.line(), "STORED");
    assert_eq!(conn.line(), format!("VALUE {key} 0 {}", value.len()));
    assert_eq!(conn.line(), value);
    assert_eq!(conn.line(), "END");
    started.elapsed()
}

/// Reads from `sock` until the server closes it; returns the bytes read. Fails at `limit`.
fn read_to_close(sock: &mut TcpStream, limit: Duration) -> Vec<u8> {
    sock.set_read_timeout(Some(limit)).expect("timeout");
    let mut got = Vec::new();
    match sock.read_to_end(&mut got) {
        Ok(_) => got,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => got,
        Err(e) => panic!("the server did not close the connection within {limit:?}: {e}"),
    }
}

#[test]
fn ten_thousand_idle_connections_meet_the_limit_and_other_clients_are_unaffected() {
    const IDLE: usize = 10_000;
    const LIMIT: usize = 4_000;
    let fds = raise_own_fd_limit();
    if fds < IDLE as u64 + 512 {
        assert!(
            !support::peers_required(),
            "the open files hard limit ({fds}) is below {IDLE} connections"
        );
        eprintln!("SKIPPED: the open files hard limit ({fds}) is below {IDLE} connections");
        return;
    }
    let node = cache("idle", &format!("conn_limit = {LIMIT}"));
    let mut busy = Conn::connect(node.addr);
    set_get(&mut busy, "before", "v");
    let base_rss = rss(&node);

    // A client doing ordinary work the whole time the idle connections pile up.
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        let mut conn = Conn::connect(node.addr);
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                slowest = slowest.max(set_get(&mut conn, "busy", &rounds.to_string()));
                rounds += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (rounds, slowest)
        })
    };
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(node.addr).expect("connect"));
    }
    // Two clients hold slots; every connection past the limit was refused.
    let refused = (IDLE + 2 - LIMIT) as u64;
    wait_until_within(
        "the server to refuse the connections past conn_limit",
        DEADLINE,
        || stat_on(&mut busy, "rejected_connections") >= refused,
    );
    assert_eq!(stat_on(&mut busy, "curr_connections"), LIMIT as u64);
    assert_eq!(stat_on(&mut busy, "rejected_connections"), refused);
    stop.store(true, Ordering::Relaxed);
    let (rounds, slowest) = worker.join().expect("worker");
    assert!(rounds > 0);
    eprintln!("a working client during the flood: {rounds} set+get, slowest {slowest:?}");
    assert!(
        slowest < Duration::from_secs(2),
        "a working client waited {slowest:?} while connections piled up"
    );
    // The refused ones heard why, in memcached's words, and were closed.
    for sock in idle.iter_mut().rev().take(50) {
        let said = read_to_close(sock, DEADLINE);
        assert_eq!(said, b"ERROR Too many open connections\r\n");
    }
    let held_rss = rss(&node);
    eprintln!(
        "{LIMIT} idle connections held: RSS {} KiB -> {} KiB",
        base_rss / 1024,
        held_rss / 1024
    );
    // Idle connections hold no buffers: a few KiB each (the task, the socket's state).
    assert!(
        held_rss < base_rss + LIMIT as u64 * 8 * 1024,
        "{LIMIT} idle connections cost {} MiB",
        (held_rss - base_rss) >> 20
    );
    // Once the idle clients go, their slots free up for new ones.
    drop(idle);
    wait_until_within("the idle connections to be released", DEADLINE, || {
        stat_on(&mut busy, "curr_connections") <= 2
    });
    let mut late = Conn::connect(node.addr);
    set_get(&mut late, "after", "v");
}

#[test]
fn idle_connections_are_closed_after_idle_timeout_and_active_ones_are_not() {
    let node = cache("idle-timeout", "idle_timeout_secs = 1");
    let started = Instant::now();
    let mut idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(node.addr).expect("connect"))
        .collect();
    let mut active = Conn::connect(node.addr);
    // Active every 300 ms, well inside the timeout, for three timeouts' worth.
    while started.elapsed() < Duration::from_secs(3) {
        set_get(&mut active, "k", "v");
        std::thread::sleep(Duration::from_millis(300));
    }
    for sock in &mut idle {
        assert!(read_to_close(sock, DEADLINE).is_empty(), "closed silently");
    }
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "closed before the timeout"
    );
    set_get(&mut active, "k", "still served");
    assert_eq!(stat_on(&mut active, "idle_kicks"), 200);
}

#[test]
fn slowloris_requests_are_cut_off_while_other_clients_are_served() {
    let node = cache("slowloris", "request_timeout_ms = 1000");
    // Half drip a command line, half a data block, a byte every 200 ms.
    let mut slow: Vec<TcpStream> = (0..100)
        .map(|i| {
            let mut s = TcpStream::connect(node.addr).expect("connect");
            let start: &[u8] = if i % 2 == 0 {
                b"get slow"
            } else {
                b"set slow 0 0 100\r\nxx"
            };
            s.write_all(start).expect("write");
            s
        })
        .collect();
    let started = Instant::now();
    let mut normal = Conn::connect(node.addr);
    let mut cut = vec![false; slow.len()];
    let mut slowest = Duration::ZERO;
    let mut replies: Vec<Vec<u8>> = vec![Vec::new(); slow.len()];
    while cut.iter().any(|c| !c) {
        assert!(
            started.elapsed() < DEADLINE,
            "slow clients still connected after {DEADLINE:?}"
        );
        let took = set_get(&mut normal, "n", "v");
        slowest = slowest.max(took);
        assert!(
            took < Duration::from_secs(1),
            "a normal client waited {took:?}"
        );
        for (i, sock) in slow.iter_mut().enumerate() {
            if cut[i] {
                continue;
            }
            if sock.write_all(b"x").is_err() {
                cut[i] = true;
                continue;
            }
            sock.set_nonblocking(true).expect("nonblocking");
            let mut buf = [0u8; 256];
            loop {
                match sock.read(&mut buf) {
                    Ok(0) => {
                        cut[i] = true;
                        break;
                    }
                    Ok(n) => replies[i].extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        cut[i] = true;
                        break;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let elapsed = started.elapsed();
    eprintln!(
        "100 slow clients all cut off after {elapsed:?}; a normal client's slowest set+get {slowest:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(900),
        "cut off after {elapsed:?}, before the timeout"
    );
    let told = replies
        .iter()
        .filter(|r| r.as_slice() == b"CLIENT_ERROR request not received within 1000 ms\r\n")
        .count();
    assert!(told >= 90, "only {told} of 100 slow clients were told why");
    assert_eq!(stat_on(&mut normal, "request_timeouts"), 100);
}

#[test]
fn a_client_streaming_many_requests_is_not_cut_off_by_the_request_timeout() {
    // Every write ends in the middle of a request, for three times the timeout: the clock
    // runs per request, not from the first partial read.
    let node = cache("streaming", "request_timeout_ms = 500");
    let mut conn = Conn::connect(node.addr);
    let reader = {
        let mut r = conn.reader.get_ref().try_clone().expect("clone");
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.ends_with(b"MN\r\n") {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            got
        })
    };
    let started = Instant::now();
    let mut n = 0;
    conn.send(b"set k0 0 0 5\r\nval");
    while started.elapsed() < Duration::from_millis(1500) {
        n += 1;
        conn.send(format!("ue\r\nset k{n} 0 0 5\r\nval").as_bytes());
        std::thread::sleep(Duration::from_millis(20));
    }
    conn.send(b"ue\r\nmn\r\n");
    let got = reader.join().expect("reader");
    let stored = got.windows(8).filter(|w| w == b"STORED\r\n").count();
    assert_eq!(stored, n + 1, "every request answered");
    assert!(got.ends_with(b"MN\r\n"));
}

#[test]
fn a_client_that_never_reads_is_disconnected_with_bounded_memory() {
    let node = cache("no-reader", "memory_limit_mb = 64\nsend_timeout_ms = 1000");
    let value = "v".repeat(512 * 1024);
    let mut conn = Conn::connect(node.addr);
    set_get(&mut conn, "big", &value);
    let base = rss(&node);
    // 2,000 gets of 512 KiB: a gigabyte of replies nobody reads.
    let mut deaf = TcpStream::connect(node.addr).expect("connect");
    deaf.write_all("get big\r\n".repeat(2000).as_bytes())
        .expect("write");
    let started = Instant::now();
    wait_until_within("the server to give up on the client", DEADLINE, || {
        stat_on(&mut conn, "send_timeouts") == 1
    });
    let waited = started.elapsed();
    eprintln!("a client that never reads: disconnected {waited:?} after its requests");
    assert!(
        waited >= Duration::from_millis(900),
        "gave up after {waited:?}"
    );
    let grown = rss(&node).saturating_sub(base);
    eprintln!("a client that never reads: RSS grew {} KiB", grown / 1024);
    assert!(grown < 16 << 20, "RSS grew {} MiB", grown >> 20);
    // What the client can still read ends: the server closed its side.
    let got = read_to_close(&mut deaf, DEADLINE);
    assert!(
        got.len() < 64 << 20,
        "{} bytes were buffered for it",
        got.len()
    );
    set_get(&mut conn, "k", "others are served");
}

#[test]
fn values_at_the_item_size_limit_and_a_get_of_ten_thousand_keys() {
    let node = cache("multiget", "memory_limit_mb = 128\nsend_timeout_ms = 5000");
    let mut conn = Conn::connect(node.addr);
    // The largest value a 1 MB item holds (memcached counts a header and the key too), and
    // one byte more, which is refused without losing the connection.
    let mut largest = 0;
    for size in [(1 << 20) - 48 - 8 - 3, (1 << 20) - 200, (1 << 20) - 4096] {
        conn.send(format!("set top 0 0 {size}\r\n{}\r\n", "t".repeat(size)).as_bytes());
        if conn.line() == "STORED" {
            largest = size;
            break;
        }
    }
    assert!(largest > 0, "no value near the item size limit was stored");
    let over = 1 << 20;
    conn.send(format!("set over 0 0 {over}\r\n{}\r\n", "o".repeat(over)).as_bytes());
    assert_eq!(conn.line(), "SERVER_ERROR object too large for cache");
    set_get(&mut conn, "after", "the connection goes on");

    // 10,000 distinct keys in one get, every value back in order.
    let mut batch = String::new();
    for i in 0..10_000 {
        batch.push_str(&format!("set key{i} 0 0 6 noreply\r\nv{i:05}\r\n"));
    }
    conn.send(batch.as_bytes());
    let keys: Vec<String> = (0..10_000).map(|i| format!("key{i}")).collect();
    conn.send(format!("get {}\r\n", keys.join(" ")).as_bytes());
    for i in 0..10_000 {
        assert_eq!(conn.line(), format!("VALUE key{i} 0 6"));
        assert_eq!(conn.line(), format!("v{i:05}"));
    }
    assert_eq!(conn.line(), "END");

    // 10,000 times the largest value: ten gigabytes of replies to one line. The client
    // reads 64 MiB of them, slowly; the server must stream, not build the reply first.
    let base = rss(&node);
    let mut huge = TcpStream::connect(node.addr).expect("connect");
    huge.write_all(format!("get {}\r\n", ["top"; 10_000].join(" ")).as_bytes())
        .expect("write");
    huge.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0;
    let mut peak = base;
    while read < 64 << 20 {
        let n = huge.read(&mut buf).expect("read");
        assert!(n > 0, "the server closed a get it was answering");
        if read == 0 {
            assert!(buf.starts_with(format!("VALUE top 0 {largest}\r\n").as_bytes()));
        }
        read += n;
        peak = peak.max(rss(&node));
        std::thread::sleep(Duration::from_millis(1));
    }
    eprintln!(
        "get of 10,000 keys at the item size limit: RSS {} KiB before, {} KiB at most while 64 MiB was read",
        base / 1024,
        peak / 1024
    );
    assert!(
        peak < base + (32 << 20),
        "the server buffered {} MiB for one get",
        (peak - base) >> 20
    );
    drop(huge);
    set_get(&mut conn, "k", "others are served");
}

#[test]
fn memory_limit_64_holds_under_a_write_flood() {
    let node = cache("flood", "memory_limit_mb = 64");
    let base = rss(&node);
    let deadline = Instant::now() + Duration::from_secs(20);
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let addr = node.addr;
            std::thread::spawn(move || flood(addr, w, deadline))
        })
        .collect();
    let mut peak = base;
    while writers.iter().any(|t| !t.is_finished()) {
        peak = peak.max(rss(&node));
        std::thread::sleep(Duration::from_millis(100));
    }
    let written: u64 = writers.into_iter().map(|t| t.join().expect("writer")).sum();
    peak = peak.max(rss(&node));
    let bytes = number(node.addr, "bytes");
    let limit = number(node.addr, "limit_maxbytes");
    let evictions = number(node.addr, "evictions");
    eprintln!(
        "-m 64 flood: {} MiB written, RSS {} KiB at start, {} KiB at most; {} item bytes, {evictions} evictions",
        written >> 20,
        base / 1024,
        peak / 1024,
        bytes
    );
    assert!(written > 4 * limit, "the flood wrote only {written} bytes");
    assert!(bytes <= limit);
    assert!(evictions > 0);
    // The bound RELIABILITY.md documents: the item memory plus 64 MiB.
    assert!(
        peak <= base + limit + (64 << 20),
        "RSS reached {} MiB under -m 64",
        peak >> 20
    );
    let mut conn = Conn::connect(node.addr);
    set_get(&mut conn, "k", "still serving");
}

/// Writes values of 10 B to 64 KiB under fresh keys until `deadline` or 1 GiB; returns the
/// bytes written.
fn flood(addr: SocketAddr, writer: u64, deadline: Instant) -> u64 {
    let mut sock = TcpStream::connect(addr).expect("connect");
    let mut reader = sock.try_clone().expect("clone");
    let drain = std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    let payload = vec![b'f'; 64 * 1024];
    let mut written = 0u64;
    let mut i = 0u64;
    let mut seed = writer.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while Instant::now() < deadline && written < 1 << 30 {
        let mut batch = Vec::with_capacity(1 << 20);
        while batch.len() < 1 << 20 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let size = 10 + (seed % (64 * 1024 - 10)) as usize;
            batch.extend_from_slice(format!("set w{writer}k{i} 0 0 {size} noreply\r\n").as_bytes());
            batch.extend_from_slice(&payload[..size]);
            batch.extend_from_slice(b"\r\n");
            written += size as u64;
            i += 1;
        }
        sock.write_all(&batch).expect("write");
    }
    sock.write_all(b"quit\r\n").expect("write");
    drain.join().expect("drain");
    written
}

/// A replicated pair's config: this node's role, replication port and the peer's.
fn pair_config(dir: &std::path::Path, role: &str, me: u16, peer: u16) -> PathBuf {
    let path = dir.join(format!("{role}.toml"));
    std::fs::write(
        &path,
        format!(
            "[{role}]\nport = 0\nmemory_limit_mb = 512\n\
             [{role}.replication]\nlisten = \"127.0.0.1:{me}\"\npeer = \"127.0.0.1:{peer}\"\n\
             backlog_mb = 1\nheartbeat_timeout_ms = 60000\n"
        ),
    )
    .expect("write config");
    path
}

#[test]
fn a_stalled_peer_overflowing_the_replication_queue_gets_a_full_copy_and_loses_nothing() {
    let dir = scratch("abuse-repl-overflow");
    let (a, b) = (support::free_port(), support::free_port());
    let master_cfg = pair_config(&dir, "master", a, b);
    let slave_cfg = pair_config(&dir, "slave", b, a);
    let master = spawn_node(&["--config", &master_cfg.to_string_lossy()]);
    let slave = spawn_node(&["--config", &slave_cfg.to_string_lossy()]);
    let streaming = |addr| support::conn::stat(addr, "repl_link") == "streaming";
    wait_until_within("the pair to link", DEADLINE, || {
        streaming(master.addr) && streaming(slave.addr)
    });
    let copies_before = number(master.addr, "repl_full_resyncs");

    // The slave stops reading (SIGSTOP) with the link up; the master writes 48 MiB, far
    // more than its 1 MiB backlog and the sockets' buffers hold. Every write is answered.
    support::signal(&slave.child, "STOP");
    let resume = support::Resume(&slave.child);
    let value = "s".repeat(4000);
    let mut conn = Conn::connect(master.addr);
    for chunk in 0..12 {
        let mut batch = String::new();
        for i in 0..1000 {
            let key = chunk * 1000 + i;
            batch.push_str(&format!("set over{key} 0 0 4000\r\n{value}\r\n"));
        }
        conn.send(batch.as_bytes());
        for _ in 0..1000 {
            assert_eq!(conn.line(), "STORED");
        }
    }
    drop(resume);

    // The master found the slave behind its backlog and sent everything again; the slave
    // holds every acknowledged write.
    wait_until_within(
        "a full copy after the overflow",
        Duration::from_secs(60),
        || {
            number(master.addr, "repl_full_resyncs") > copies_before
                && streaming(master.addr)
                && streaming(slave.addr)
        },
    );
    let mut check = Conn::connect(slave.addr);
    wait_until_within(
        "the slave to hold every write",
        Duration::from_secs(60),
        || {
            check.send(b"mg over11999 v\r\n");
            check.line().starts_with("VA") && {
                check.line();
                true
            }
        },
    );
    for key in 0..12_000 {
        check.send(format!("mg over{key} s\r\n").as_bytes());
        assert_eq!(check.line(), "HD s4000", "over{key} lost on the slave");
    }
}
