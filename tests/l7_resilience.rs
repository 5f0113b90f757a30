//! The L7 balancer when servers misbehave or fill up: passive health ejects failing servers
//! with a growing back-off, slow start ramps a returning server, the queue holds requests for
//! full servers, and bounded-load hashing spreads a hot key. Real hyper servers on loopback.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use opsconsole::balance::backend::AdminState;
use support::http::get;
use support::l7::{Balancer, servers};
use support::wait_until;

#[test]
fn a_server_failing_in_a_row_is_ejected_and_returns_after_the_ejection() {
    let s = servers(&["a", "b"]);
    let b = Balancer::web(
        "passive = { consecutive_errors = 3, eject_ms = 1000, eject_max_ms = 8000 }",
        &[&s[0], &s[1]],
    );
    s[0].fail_with(500);
    wait_until("a is ejected", || {
        let _ = get(b.addr(), "t", "/", &[]);
        b.pool("web").servers[0].ejected_for_ms.is_some()
    });
    let a = &b.pool("web").servers[0];
    assert_eq!((a.state_label().as_str(), a.ejections), ("EJECTED", 1));
    let before = s[0].requests();
    assert_eq!(b.spread(10), BTreeMap::from([("b".to_string(), 10)]));
    assert_eq!(s[0].requests(), before, "an ejected server gets nothing");
    s[0].fail_with(0);
    let back = Instant::now();
    wait_until("a serves again after its ejection", || {
        b.spread(2).contains_key("a")
    });
    assert!(b.pool("web").servers[0].ejected_for_ms.is_none());
    // Failing again at once: the second ejection is longer (2 s).
    s[0].fail_with(500);
    wait_until("a is ejected again", || {
        let _ = get(b.addr(), "t", "/", &[]);
        b.pool("web").servers[0].ejections == 2
    });
    let again = b.pool("web").servers[0].ejected_for_ms.expect("ejected");
    assert!(
        again > 1000 || back.elapsed() > Duration::from_secs(1),
        "the back-off doubled: {again} ms left"
    );
}

#[test]
fn the_last_server_in_service_is_never_ejected() {
    let s = servers(&["a"]);
    let b = Balancer::web(
        "passive = { max_fails = 2, fail_timeout_ms = 10000 }",
        &[&s[0]],
    );
    s[0].fail_with(500);
    for _ in 0..6 {
        let r = get(b.addr(), "t", "/", &[]).expect("reply");
        assert_eq!(r.status, 500, "the server's own answer, not a 503");
    }
    let a = &b.pool("web").servers[0];
    assert_eq!((a.ejections, a.ejected_for_ms), (0, None));
}

#[test]
fn slow_start_gives_a_server_back_from_maintenance_a_growing_share() {
    let s = servers(&["a", "b"]);
    let b = Balancer::web("slow_start_ms = 10000", &[&s[0], &s[1]]);
    b.state("a", AdminState::Maint);
    b.state("a", AdminState::Ready);
    let first = b.spread(40);
    let a_share = first.get("a").copied().unwrap_or(0);
    assert!(a_share <= 12, "a is ramping up: {first:?}");
    let pct = b.pool("web").servers[0].slow_start_pct.expect("ramping");
    wait_until("the ramp goes on", || {
        b.pool("web").servers[0]
            .slow_start_pct
            .is_some_and(|p| p > pct)
    });
    assert_eq!(b.pool("web").servers[1].slow_start_pct, None);
}

/// `n` GETs of `path` at once, each on its own connection: (status, body) each.
fn at_once(addr: std::net::SocketAddr, path: &'static str, n: usize) -> Vec<(u16, String)> {
    let threads: Vec<_> = (0..n)
        .map(|_| {
            thread::spawn(move || {
                let r = get(addr, "t", path, &[]).expect("reply");
                (r.status, r.text())
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect()
}

#[test]
fn requests_for_a_full_server_wait_in_the_queue_and_are_served_in_turn() {
    let s = servers(&["a"]);
    s[0].delay(Duration::from_millis(300));
    let toml = format!(
        "queue_timeout_ms = 10000\nservers = [{{ name = \"a\", address = \"{}\", max_conns = 1 }}]",
        s[0].addr
    );
    let b = Balancer::from_toml(&format!(
        "[l7]\nthreads = 2\n[l7.listeners.main]\nlisten = \"127.0.0.1:0\"\nroutes = [{{ path = \"/\", pool = \"web\" }}]\n[l7.pools.web]\n{toml}\n"
    ));
    let addr = b.addr();
    let started = Instant::now();
    let clients = thread::spawn(move || at_once(addr, "/", 3));
    wait_until("requests wait in the queue", || b.pool("web").queued >= 1);
    let replies = clients.join().expect("clients");
    assert!(
        replies.iter().all(|(status, _)| *status == 200),
        "{replies:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "one at a time: three 300 ms requests took {:?}",
        started.elapsed()
    );
    let pool = b.pool("web");
    assert_eq!((pool.queued, pool.queue_timeouts), (0, 0));
    assert_eq!(pool.servers[0].active, 0);
    assert_eq!(
        pool.no_server, 0,
        "waiting for a slot is not finding no server"
    );
}

#[test]
fn a_request_that_waits_past_the_queue_timeout_gets_503() {
    let s = servers(&["a"]);
    s[0].delay(Duration::from_millis(1500));
    let toml = format!(
        "queue_timeout_ms = 200\nservers = [{{ name = \"a\", address = \"{}\", max_conns = 1 }}]",
        s[0].addr
    );
    let b = Balancer::from_toml(&format!(
        "[l7]\nthreads = 1\n[l7.listeners.main]\nlisten = \"127.0.0.1:0\"\nroutes = [{{ path = \"/\", pool = \"web\" }}]\n[l7.pools.web]\n{toml}\n"
    ));
    let addr = b.addr();
    let slow = thread::spawn(move || get(addr, "t", "/", &[]).expect("reply").status);
    wait_until("the slot is taken", || b.pool("web").servers[0].active == 1);
    let r = get(addr, "t", "/", &[]).expect("reply");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("connection limit"), "{}", r.text());
    assert_eq!(slow.join().expect("slow client"), 200);
    assert_eq!(b.pool("web").queue_timeouts, 1);
}

#[test]
fn bounded_load_hashing_spreads_a_hot_key_that_plain_hashing_keeps_on_one_server() {
    let s = servers(&["a", "b", "c"]);
    for server in &s {
        server.delay(Duration::from_millis(400));
    }
    let pool = |factor: u32| {
        format!("algorithm = \"uri\"\nhash_type = \"consistent\"\nhash_balance_factor = {factor}")
    };
    let count = |b: &Balancer| -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for (status, body) in at_once(b.addr(), "/hot", 9) {
            assert_eq!(status, 200);
            *seen.entry(body).or_insert(0) += 1;
        }
        seen
    };
    let plain = Balancer::web(&pool(0), &[&s[0], &s[1], &s[2]]);
    assert_eq!(count(&plain).len(), 1, "one key, one server");
    drop(plain);
    let bounded = Balancer::web(&pool(150), &[&s[0], &s[1], &s[2]]);
    let spread = count(&bounded);
    assert!(
        spread.len() >= 2,
        "a hot key overflows its server: {spread:?}"
    );
}

#[test]
fn a_client_that_breaks_off_its_upload_is_not_held_against_the_server() {
    let s = servers(&["a", "b"]);
    let b = Balancer::web(
        "passive = { consecutive_errors = 1, eject_ms = 10000 }",
        &[&s[0], &s[1]],
    );
    for _ in 0..4 {
        let mut c = TcpStream::connect(b.addr()).expect("connect");
        c.write_all(
            b"POST /drain-body HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\npartial",
        )
        .expect("send");
        wait_until("the upload to be on its way to a server", || {
            b.pool("web").active >= 1
        });
        drop(c);
        wait_until("the proxy to give up on it", || b.pool("web").active == 0);
    }
    b.assert_no_server_blamed("web", "the client broke off");
    assert_eq!(get(b.addr(), "t", "/", &[]).expect("reply").status, 200);
}
