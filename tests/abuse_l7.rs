//! Resource abuse against the L7 balancer over real sockets: a flood of idle connections
//! against `max_conns`, slowloris heads and bodies, and clients that ask for large
//! responses and never read them. In each, the limit or timeout must hold and a
//! well-behaved client must still be served.

mod support;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opsconsole::control::Control;
use support::http::{HttpConn, HttpServer, get};
use support::l7::{Balancer, servers_toml};
use support::{Process, addr_after, scratch, wait_until};

/// Raises this process's open-file soft limit to its hard limit (children inherit it) and
/// returns the limit now in force.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

fn listener_conns(b: &Balancer) -> u64 {
    b.node
        .snapshot()
        .l7
        .and_then(|l| l.listeners.into_iter().next())
        .map_or(0, |l| l.active_conns)
}

/// Whether the other end has closed `s` (EOF or reset); `s` is left non-blocking.
fn closed_by_peer(s: &TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut b = [0u8; 1];
    match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    }
}

/// One GET on a new connection, timed.
fn timed_get(addr: SocketAddr, path: &str) -> (io::Result<u16>, Duration) {
    let started = Instant::now();
    let r = get(addr, "t", path, &[]).map(|r| r.status);
    (r, started.elapsed())
}

#[test]
fn ten_thousand_idle_connections_stay_within_max_conns_and_a_new_client_still_gets_in() {
    const MAX_CONNS: u64 = 2000;
    let limit = raise_nofile();
    // The test holds every idle socket, the balancer (in this process) up to MAX_CONNS
    // more, plus servers, runtimes and the good client.
    let idle = 10_000.min(limit.saturating_sub(MAX_CONNS + 2000));
    if idle < 2 * MAX_CONNS {
        eprintln!(
            "SKIPPED: the open-file hard limit is {limit}; this test needs about {} (10,000 idle connections, {MAX_CONNS} open on the balancer)",
            10_000 + MAX_CONNS + 2000
        );
        return;
    }
    if idle < 10_000 {
        eprintln!(
            "scaled down: {idle} idle connections instead of 10,000 (open-file limit {limit})"
        );
    }
    let s = HttpServer::start("a");
    let b = Balancer::from_toml(&format!(
        "[l7]\nthreads = 2\n[l7.listeners.main]\nlisten = \"127.0.0.1:0\"\nmax_conns = {MAX_CONNS}\nclient_header_timeout_ms = 4000\nidle_timeout_secs = 2\nroutes = [{{ path = \"/\", pool = \"web\" }}]\n[l7.pools.web]\n{}\n",
        servers_toml(&[&s])
    ));
    let addr = b.addr();
    let most = AtomicU64::new(0);
    let sampling = AtomicBool::new(true);
    std::thread::scope(|scope| {
        // What the balancer says it has open, as often as the box allows, for the whole test.
        scope.spawn(|| {
            while sampling.load(Ordering::Relaxed) {
                most.fetch_max(listener_conns(&b), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let started = Instant::now();
        let openers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(move || {
                    let mut held = Vec::new();
                    let mut failed = 0;
                    for _ in 0..idle / 4 {
                        match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
                            Ok(c) => held.push(c),
                            Err(_) => failed += 1,
                        }
                    }
                    (held, failed)
                })
            })
            .collect();
        let mut held = Vec::new();
        let mut failed = 0;
        for o in openers {
            let (h, f) = o.join().expect("opener");
            held.extend(h);
            failed += f;
        }
        let opened_in = started.elapsed();
        eprintln!(
            "{} idle connections opened in {opened_in:?} ({failed} connects failed); the balancer holds {}",
            held.len(),
            listener_conns(&b)
        );
        assert_eq!(failed, 0, "every connect got through");

        // Every idle socket is still held open by this test: a new client gets in and is
        // answered, twenty times over, each within a bound.
        let mut kept = Vec::new();
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            let started = Instant::now();
            let mut c = HttpConn::open(addr).expect("connect");
            let r = c.get("t", "/", &[]).expect("answered");
            let took = started.elapsed();
            assert_eq!(r.status, 200);
            slowest = slowest.max(took);
            kept.push(c);
        }
        eprintln!("20 new clients answered, the slowest in {slowest:?}");
        assert!(
            slowest < Duration::from_secs(5),
            "a new client waited {slowest:?}"
        );
        let closed = held.iter().filter(|c| closed_by_peer(c)).count();
        let open_now = listener_conns(&b);
        eprintln!(
            "of {} idle connections the balancer closed {closed} to make room; it holds {open_now}",
            held.len()
        );
        assert!(open_now <= MAX_CONNS);
        assert!(
            closed + MAX_CONNS as usize >= held.len(),
            "{closed} closed of {}",
            held.len()
        );

        // Then the timeouts: the idle ones that never sent a byte go at
        // client_header_timeout_ms after their connect, the kept-alive ones after
        // idle_timeout_secs, and every slot is free again.
        let waiting = Instant::now();
        let deadline = waiting + Duration::from_secs(30);
        while listener_conns(&b) > 0 {
            assert!(
                Instant::now() < deadline,
                "{} connections still open 30 s on",
                listener_conns(&b)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "every slot free {:?} after the last client was served",
            waiting.elapsed()
        );
        assert!(held.iter().all(closed_by_peer), "every idle socket closed");
        assert!(kept.iter_mut().all(|c| closed_by_peer(c.stream())));
        sampling.store(false, Ordering::Relaxed);
    });
    let most = most.load(Ordering::Relaxed);
    eprintln!("most connections the balancer had open at once: {most} (max_conns {MAX_CONNS})");
    assert!(
        most <= MAX_CONNS,
        "{most} open at once, over max_conns {MAX_CONNS}"
    );
    assert_eq!(timed_get(addr, "/").0.expect("served"), 200);
}

/// `n` sorted durations as "min / median / max".
fn spread(mut d: Vec<Duration>) -> String {
    d.sort();
    match (d.first(), d.get(d.len() / 2), d.last()) {
        (Some(a), Some(m), Some(z)) => format!("{a:.2?} / {m:.2?} / {z:.2?}"),
        _ => "none".into(),
    }
}

/// Sends GETs on new connections every `every` until `stop`, returning each one's time;
/// panics on anything but a 200.
fn keep_asking(addr: SocketAddr, path: &str, every: Duration, stop: &AtomicBool) -> Vec<Duration> {
    let mut times = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let (r, took) = timed_get(addr, path);
        assert_eq!(r.expect("a well-behaved client is answered"), 200);
        times.push(took);
        std::thread::sleep(every);
    }
    times
}

#[test]
fn slowloris_heads_are_cut_off_at_the_header_timeout_while_others_are_served() {
    const CLIENTS: usize = 200;
    raise_nofile();
    let s = HttpServer::start("a");
    let b = Balancer::from_toml(&format!(
        "[l7]\nthreads = 2\n[l7.listeners.main]\nlisten = \"127.0.0.1:0\"\nclient_header_timeout_ms = 2000\nroutes = [{{ path = \"/\", pool = \"web\" }}]\n[l7.pools.web]\n{}\n",
        servers_toml(&[&s])
    ));
    let addr = b.addr();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let good = scope.spawn(|| keep_asking(addr, "/", Duration::from_millis(100), &stop));
        // Each client starts a head, then adds one byte a second: never a whole head.
        let mut slow: Vec<(TcpStream, Instant, Option<Duration>)> = (0..CLIENTS)
            .map(|_| {
                let mut c = TcpStream::connect(addr).expect("connect");
                c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
                    .expect("first bytes");
                (c, Instant::now(), None)
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut next_drip = Instant::now() + Duration::from_secs(1);
        let mut dripped = 0;
        while slow.iter().any(|(_, _, cut)| cut.is_none()) {
            assert!(Instant::now() < deadline, "slow clients still open 30 s on");
            let drip = Instant::now() >= next_drip;
            if drip {
                next_drip += Duration::from_secs(1);
                dripped += 1;
            }
            for (c, started, cut) in slow.iter_mut().filter(|s| s.2.is_none()) {
                if closed_by_peer(c) || (drip && c.write_all(b"a").is_err()) {
                    *cut = Some(started.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        let good = good.join().expect("good client");
        let cuts: Vec<Duration> = slow.iter().filter_map(|s| s.2).collect();
        eprintln!(
            "{CLIENTS} slowloris heads ({dripped} drips of one byte a second) cut off after (min / median / max) {}; no reply bytes",
            spread(cuts.clone())
        );
        eprintln!(
            "meanwhile {} requests of a well-behaved client answered in {}",
            good.len(),
            spread(good.clone())
        );
        for (c, _, _) in &slow {
            let mut b = [0u8; 1];
            let _ = c.set_nonblocking(true);
            assert!(
                matches!(c.peek(&mut b), Ok(0) | Err(_)),
                "a partial head gets no reply, only a close"
            );
        }
        assert!(
            cuts.iter()
                .all(|d| *d >= Duration::from_millis(1900) && *d < Duration::from_secs(6)),
            "cut off at client_header_timeout_ms (2 s): {}",
            spread(cuts)
        );
        assert!(!good.is_empty());
        assert!(
            good.iter().all(|d| *d < Duration::from_secs(3)),
            "{}",
            spread(good)
        );
    });
    assert_eq!(listener_conns(&b), 0);
}

#[test]
fn a_stalled_request_body_gets_408_at_the_body_timeout_and_the_server_is_not_blamed() {
    const CLIENTS: usize = 50;
    let s = [HttpServer::start("a"), HttpServer::start("b")];
    let b = Balancer::from_toml(&format!(
        "[l7]\nthreads = 2\n[l7.listeners.main]\nlisten = \"127.0.0.1:0\"\nclient_body_timeout_ms = 1000\nroutes = [{{ path = \"/\", pool = \"web\" }}]\n[l7.pools.web]\npassive = {{ consecutive_errors = 1, eject_ms = 10000 }}\n{}\n",
        servers_toml(&[&s[0], &s[1]])
    ));
    let addr = b.addr();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let good = scope.spawn(|| keep_asking(addr, "/", Duration::from_millis(100), &stop));
        let stalled: Vec<_> = (0..CLIENTS)
            .map(|_| {
                scope.spawn(move || {
                    let mut c = HttpConn::open(addr).expect("connect");
                    let started = Instant::now();
                    c.stream()
                        .write_all(b"POST /drain-body HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nten bytes.")
                        .expect("head and a little body");
                    let r = c.reply(false).expect("a reply");
                    let took = started.elapsed();
                    let mut rest = Vec::new();
                    let after = c.reader.read_to_end(&mut rest);
                    (r, took, after.is_ok())
                })
            })
            .collect();
        let mut times = Vec::new();
        for t in stalled {
            let (r, took, closed) = t.join().expect("stalled client");
            assert_eq!(r.status, 408, "{}", r.text());
            assert_eq!(r.header("connection"), Some("close"));
            assert!(closed, "the connection is closed after the 408");
            times.push(took);
        }
        stop.store(true, Ordering::Relaxed);
        let good = good.join().expect("good client");
        eprintln!(
            "{CLIENTS} stalled bodies answered 408 after {}; a well-behaved client meanwhile: {} requests in {}",
            spread(times.clone()),
            good.len(),
            spread(good.clone())
        );
        assert!(
            times
                .iter()
                .all(|d| *d >= Duration::from_millis(950) && *d < Duration::from_secs(5)),
            "408 at client_body_timeout_ms (1 s): {}",
            spread(times)
        );
        assert!(good.iter().all(|d| *d < Duration::from_secs(3)));
    });
    b.assert_no_server_blamed("web", "the clients stalled");
}

#[test]
fn a_slow_but_steady_upload_is_not_timed_as_the_servers_response() {
    let s = [HttpServer::start("a"), HttpServer::start("b")];
    let b = Balancer::from_toml(&format!(
        "[l7]\nthreads = 1\n[l7.listeners.main]\nlisten = \"127.0.0.1:0\"\nclient_body_timeout_ms = 5000\nroutes = [{{ path = \"/\", pool = \"web\" }}]\n[l7.pools.web]\nresponse_timeout_ms = 300\npassive = {{ consecutive_errors = 1, eject_ms = 10000 }}\n{}\n",
        servers_toml(&[&s[0], &s[1]])
    ));
    // Twenty bytes, one every 100 ms: the upload takes 2 s, far past the server's 300 ms
    // response timeout, and every gap is well inside the body timeout.
    let mut c = HttpConn::open(b.addr()).expect("connect");
    c.stream()
        .write_all(b"POST /drain-body HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\n")
        .expect("head");
    let started = Instant::now();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        c.stream().write_all(b"x").expect("a byte");
    }
    let r = c.reply(false).expect("a reply");
    eprintln!(
        "a 2 s upload answered {} after {:?}",
        r.status,
        started.elapsed()
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().ends_with("read 20"), "{}", r.text());
    let pool = b.pool("web");
    assert!(
        pool.servers.iter().all(|s| s.ejections == 0),
        "a slow client is not the server's failure: {pool:?}"
    );
    // The response clock still runs once the body is in: a server that then says nothing
    // is timed out.
    s[0].delay(Duration::from_secs(2));
    s[1].delay(Duration::from_secs(2));
    let started = Instant::now();
    let r = c
        .send_body("POST", "t", "/drain-body", b"all at once")
        .expect("reply");
    assert_eq!(r.status, 504);
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A process's resident memory in KiB and its open descriptors, from /proc.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn clients_that_never_read_their_responses_cost_bounded_memory_and_are_closed_at_the_send_timeout()
{
    const STALLED: usize = 20;
    const PIPELINED: usize = 32;
    const SIZE: usize = 4 << 20;
    raise_nofile();
    let s = HttpServer::start("a");
    let dir = scratch("abuse-stalled-readers");
    let config = dir.join("l7.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\ndir = \"{}\"\n[l7]\nthreads = 2\n[l7.listeners.main]\nlisten = \"127.0.0.1:0\"\nclient_send_timeout_ms = 2000\nroutes = [{{ path = \"/\", pool = \"web\" }}]\n[l7.pools.web]\n{}\n",
            dir.display(),
            servers_toml(&[&s])
        ),
    )
    .expect("write config");
    let node = Process::spawn(&[
        "--role".as_ref(),
        "l7".as_ref(),
        "--headless".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    let addr = addr_after(&node.wait_for("l7 listener main on "), " on ");
    let pid = node.child.id();
    let big = format!("/bytes/{SIZE}");
    // Warm up: large responses read whole, so the allocator has what a normal load needs.
    for _ in 0..10 {
        let r = get(addr, "t", &big, &[]).expect("a large reply");
        assert_eq!(r.body.len(), SIZE);
    }
    let (rss_before, fds_before) = (rss_kib(pid), open_fds(pid));
    // Each stalled client asks for 32 × 4 MiB on one connection and reads nothing.
    let mut request = Vec::new();
    for _ in 0..PIPELINED {
        request.extend_from_slice(format!("GET {big} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    let started = Instant::now();
    let stalled: Vec<TcpStream> = (0..STALLED)
        .map(|_| {
            let mut c = TcpStream::connect(addr).expect("connect");
            c.write_all(&request).expect("pipelined requests");
            c
        })
        .collect();
    let mut peak = rss_before;
    let mut served = Vec::new();
    let mut closed_after = None;
    let deadline = started + Duration::from_secs(30);
    while closed_after.is_none() {
        assert!(
            Instant::now() < deadline,
            "stalled clients still held 30 s on: {} descriptors open, {} before",
            open_fds(pid),
            fds_before
        );
        peak = peak.max(rss_kib(pid));
        // A well-behaved client is served meanwhile, a large response too.
        let t = Instant::now();
        let r = get(addr, "t", &big, &[]).expect("served while others stall");
        assert_eq!((r.status, r.body.len()), (200, SIZE));
        served.push(t.elapsed());
        // The balancer's stalled connections (and their server connections) are gone
        // when its descriptors are back to what they were.
        if open_fds(pid) <= fds_before + 2 {
            closed_after = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let closed_after = closed_after.unwrap_or_default();
    let growth_mib = peak.saturating_sub(rss_before) as f64 / 1024.0;
    eprintln!(
        "{STALLED} clients × {PIPELINED} pipelined 4 MiB responses, none read: RSS {} MiB before, peak {} MiB (+{growth_mib:.1} MiB; {} GiB asked for); closed {closed_after:?} after they stalled; a well-behaved client got 4 MiB {} times in {}",
        rss_before / 1024,
        peak / 1024,
        (STALLED * PIPELINED * SIZE) >> 30,
        served.len(),
        spread(served.clone())
    );
    assert!(
        closed_after >= Duration::from_millis(1900) && closed_after < Duration::from_secs(10),
        "closed at client_send_timeout_ms (2 s) after the stall: {closed_after:?}"
    );
    assert!(
        growth_mib < 100.0,
        "memory for {STALLED} stalled clients grew by {growth_mib:.1} MiB"
    );
    assert!(served.iter().all(|d| *d < Duration::from_secs(5)));
    // From the stalled clients' side: what was sent before the stall, then the close.
    for mut c in stalled {
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut sink = [0u8; 1 << 16];
        let mut got = 0usize;
        let end = loop {
            match c.read(&mut sink) {
                Ok(0) => break Ok(()),
                Ok(n) => got += n,
                Err(e) => break Err(e),
            }
        };
        assert!(
            !matches!(&end, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
            "the connection is closed, not just quiet: {end:?} after {got} bytes"
        );
        assert!(got < PIPELINED * SIZE, "{got} bytes: it was cut off");
    }
    wait_until("the node to be idle", || open_fds(pid) <= fds_before + 2);
}
