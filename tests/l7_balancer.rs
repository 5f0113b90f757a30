//! The L7 balancer over real sockets: hyper HTTP servers on loopback behind a node running
//! the `[l7]` role in this process, spoken to by a raw HTTP/1.1 client.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use opsconsole::balance::backend::AdminState;
use opsconsole::balance::health::Phase;
use opsconsole::control::{Command, Control};
use support::http::{HttpConn, get, pattern};
use support::l7::{Balancer, servers, servers_toml};
use support::wait_until;

#[test]
fn requests_are_routed_by_host_and_longest_path_prefix() {
    let s = servers(&["shop", "api", "img", "other"]);
    let b = Balancer::from_toml(&format!(
        r#"
[l7]
threads = 1
[l7.listeners.main]
listen = "127.0.0.1:0"
routes = [
  {{ host = "shop.example.com", path = "/", pool = "shop" }},
  {{ host = "shop.example.com", path = "/api/", pool = "api" }},
  {{ host = "*.img.example.com", path = "/", pool = "img" }},
  {{ path = "/", pool = "other" }},
]
[l7.pools.shop]
{}
[l7.pools.api]
{}
[l7.pools.img]
{}
[l7.pools.other]
{}
"#,
        servers_toml(&[&s[0]]),
        servers_toml(&[&s[1]]),
        servers_toml(&[&s[2]]),
        servers_toml(&[&s[3]]),
    ));
    let cases = [
        ("shop.example.com", "/cart", "shop"),
        ("SHOP.example.com:8080", "/api/users", "api"),
        ("shop.example.com", "/api", "shop"),
        ("a.b.img.example.com", "/x.png", "img"),
        ("elsewhere.test", "/api/users", "other"),
    ];
    for (host, path, want) in cases {
        let r = get(b.addr(), host, path, &[]).expect("reply");
        assert_eq!((r.status, r.text().as_str()), (200, want), "{host}{path}");
    }
    // The proxy's forwarding headers reached the server; the client's own were replaced.
    let r = get(
        b.addr(),
        "shop.example.com",
        "/",
        &[
            "X-Forwarded-For: 6.6.6.6",
            "Connection: keep-alive, X-Secret",
            "X-Secret: 1",
        ],
    )
    .expect("reply");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("via"), Some("1.1 opsconsole"));
    let seen = s[0].seen().pop().expect("shop saw it");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-host"), Some("shop.example.com"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.header("x-secret"),
        None,
        "named in Connection: hop-by-hop"
    );
    let listener = &b.node.snapshot().l7.expect("l7").listeners[0];
    assert_eq!(listener.routes.len(), 4);
    assert!(
        listener
            .routes
            .iter()
            .all(|r| r.http.requests >= 1 && r.http.p50_us.is_some() && r.http.p99_us.is_some()),
        "every route counts its requests and the upstream latency: {listener:?}"
    );
}

#[test]
fn a_request_without_a_route_gets_404_and_one_without_host_400() {
    let s = servers(&["a"]);
    let b = Balancer::from_toml(&format!(
        "[l7.listeners.main]\nlisten = \"127.0.0.1:0\"\nroutes = [{{ host = \"only.test\", path = \"/app/\", pool = \"web\" }}]\n[l7.pools.web]\n{}\n",
        servers_toml(&[&s[0]])
    ));
    assert_eq!(
        get(b.addr(), "only.test", "/other", &[])
            .expect("reply")
            .status,
        404
    );
    assert_eq!(
        get(b.addr(), "nobody.test", "/app/", &[])
            .expect("reply")
            .status,
        404
    );
    let mut c = HttpConn::open(b.addr()).expect("connect");
    c.stream()
        .write_all(b"GET /app/ HTTP/1.1\r\n\r\n")
        .expect("send");
    assert_eq!(c.reply(false).expect("reply").status, 400);
    assert_eq!(s[0].requests(), 0);
}

#[test]
fn roundrobin_follows_weights_and_runtime_weight_changes() {
    let s = servers(&["a", "b", "c"]);
    let list = format!(
        "servers = [{{ name = \"a\", address = \"{}\", weight = 1 }}, {{ name = \"b\", address = \"{}\", weight = 1 }}, {{ name = \"c\", address = \"{}\", weight = 2 }}]",
        s[0].addr, s[1].addr, s[2].addr
    );
    let b = Balancer::from_toml(&format!(
        "[l7]\nthreads = 1\n[l7.listeners.main]\nlisten = \"127.0.0.1:0\"\nroutes = [{{ path = \"/\", pool = \"web\" }}]\n[l7.pools.web]\n{list}\n"
    ));
    let counts = b.spread(40);
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("c"), Some(&20), "{counts:?}");
    b.act(Command::SetWeight {
        pool: "web".into(),
        server: "c".into(),
        change: opsconsole::control::WeightChange::Set(0),
    });
    let counts = b.spread(20);
    assert_eq!(
        counts.get("c"),
        None,
        "weight 0 takes nothing new: {counts:?}"
    );
    let pool = b.pool("web");
    assert_eq!(pool.http.requests, 60);
    assert_eq!(pool.http.responses[1], 60);
    assert!(pool.http.p50_us.is_some(), "latency percentiles: {pool:?}");
}

#[test]
fn the_persistence_cookie_pins_a_client_through_drain_and_never_reaches_servers() {
    let s = servers(&["a", "b", "c"]);
    let b = Balancer::web("cookie = \"SERVERID\"", &[&s[0], &s[1], &s[2]]);
    let first = get(b.addr(), "t", "/", &[]).expect("reply");
    let pinned = first.text();
    assert_eq!(
        first.header("set-cookie"),
        Some(format!("SERVERID={pinned}; path=/").as_str())
    );
    assert_eq!(first.header("cache-control"), Some("private"));
    let cookie = format!("Cookie: theme=dark; SERVERID={pinned}");
    for _ in 0..6 {
        let r = get(b.addr(), "t", "/", &[&cookie]).expect("reply");
        assert_eq!(r.text(), pinned);
        assert_eq!(
            r.header("set-cookie"),
            None,
            "already pinned: no new cookie"
        );
    }
    let all_seen: Vec<_> = s.iter().flat_map(|x| x.seen()).collect();
    assert!(
        all_seen
            .iter()
            .all(|r| r.header("cookie").is_none_or(|c| !c.contains("SERVERID")))
    );
    assert!(
        all_seen
            .iter()
            .any(|r| r.header("cookie") == Some("theme=dark"))
    );

    // Drain: the pinned client still gets there, new clients do not.
    b.state(&pinned, AdminState::Drain);
    for _ in 0..4 {
        assert_eq!(
            get(b.addr(), "t", "/", &[&cookie]).expect("reply").text(),
            pinned
        );
        let fresh = get(b.addr(), "t", "/", &[]).expect("reply");
        assert_ne!(
            fresh.text(),
            pinned,
            "a draining server takes no new client"
        );
    }
    // Maintenance breaks persistence: the client moves and is pinned to its new server.
    b.state(&pinned, AdminState::Maint);
    let moved = get(b.addr(), "t", "/", &[&cookie]).expect("reply");
    assert_ne!(moved.text(), pinned);
    assert_eq!(
        moved.header("set-cookie"),
        Some(format!("SERVERID={}; path=/", moved.text()).as_str())
    );
}

#[test]
fn a_503_is_retried_elsewhere_for_get_but_not_for_post() {
    let s = servers(&["a", "b"]);
    let b = Balancer::web("retries = 1", &[&s[0], &s[1]]);
    s[0].fail_with(503);
    for _ in 0..6 {
        let r = get(b.addr(), "t", "/", &[]).expect("reply");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "b"),
            "GET goes on to b"
        );
    }
    let a_before = s[0].requests();
    let mut posts = BTreeMap::new();
    for _ in 0..6 {
        let mut c = HttpConn::open(b.addr()).expect("connect");
        let r = c.send_body("POST", "t", "/", b"").expect("reply");
        *posts.entry(r.status).or_insert(0) += 1;
    }
    assert!(
        posts.get(&503).is_some_and(|&n| n > 0),
        "a POST is not retried: {posts:?}"
    );
    assert!(s[0].requests() > a_before);
    let pool = b.pool("web");
    assert!(pool.retries >= 3 && pool.redispatches >= 3, "{pool:?}");
    // Both failing: the last server's 503 reaches the client.
    s[1].fail_with(503);
    assert_eq!(get(b.addr(), "t", "/", &[]).expect("reply").status, 503);
}

#[test]
fn a_pool_without_a_server_in_service_answers_503_and_counts_it_once() {
    let s = servers(&["a"]);
    let b = Balancer::web("retries = 2", &[&s[0]]);
    b.state("a", AdminState::Maint);
    let r = get(b.addr(), "t", "/", &[]).expect("reply");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("no server is available"), "{}", r.text());
    assert_eq!(b.pool("web").no_server, 1, "one request, one count");
}

#[test]
fn a_killed_server_is_ejected_by_checks_and_recovers_after_rise() {
    let mut s = servers(&["a", "b"]);
    let b = Balancer::web(
        "retries = 1\n[l7.pools.web.check]\ntype = \"http\"\nmethod = \"GET\"\npath = \"/\"\ninterval_ms = 100\ntimeout_ms = 100\nrise = 2\nfall = 2",
        &[&s[0], &s[1]],
    );
    s[0].kill();
    // Retries hide the dead server from clients while the checks take it out.
    for _ in 0..10 {
        let r = get(b.addr(), "t", "/", &[]).expect("reply");
        assert_eq!((r.status, r.text().as_str()), (200, "b"));
    }
    wait_until("a is down", || {
        b.pool("web").servers[0].health == Phase::Down
    });
    assert!(b.pool("web").servers[0].connect_errors > 0);
    s[0].restart();
    wait_until("a is up again", || {
        b.pool("web").servers[0].health == Phase::Up
    });
    wait_until("a serves again", || b.spread(4).contains_key("a"));
    let check = b.pool("web").servers[0].check_status.clone();
    assert_eq!(check.as_deref(), Some("L7OK 200"));
}

#[test]
fn two_mib_streams_up_and_down_byte_exact_on_one_kept_alive_connection() {
    let s = servers(&["a"]);
    let b = Balancer::web("", &[&s[0]]);
    let mut c = HttpConn::open(b.addr()).expect("connect");
    let big = pattern(2 << 20);
    let up = c.send_body("POST", "t", "/echo", &big).expect("echo reply");
    assert_eq!(up.status, 200);
    assert!(
        up.body == big,
        "upload echoed byte-exact ({} bytes back)",
        up.body.len()
    );
    let down = c.get("t", "/bytes/2097152", &[]).expect("download");
    assert!(
        down.body == big,
        "download byte-exact ({} bytes)",
        down.body.len()
    );
    // Chunked upload: the proxy streams it on without knowing its length.
    let stream = c.stream();
    stream
        .write_all(b"POST /drain-body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .expect("head");
    for _ in 0..32 {
        stream.write_all(b"8000\r\n").expect("size");
        stream.write_all(&big[..0x8000]).expect("chunk");
        stream.write_all(b"\r\n").expect("crlf");
    }
    stream.write_all(b"0\r\n\r\n").expect("end");
    let r = c.reply(false).expect("reply");
    assert_eq!(r.text(), "a read 1048576");
    let server = &b.pool("web").servers[0];
    assert!(
        server.bytes_in >= 3 << 20 && server.bytes_out >= 4 << 20,
        "{server:?}"
    );
}

#[test]
fn header_and_uri_limits_answer_431_and_414() {
    let s = servers(&["a"]);
    let b = Balancer::web("", &[&s[0]]);
    let cookie40 = format!("Cookie: big={}", "x".repeat(40 * 1024));
    assert_eq!(
        get(b.addr(), "t", "/", &[&cookie40])
            .expect("40 KiB")
            .status,
        200
    );
    let cookie100 = format!("Cookie: big={}", "x".repeat(100 * 1024));
    let r = get(b.addr(), "t", "/", &[&cookie100]);
    assert_eq!(r.expect("a reply, not a reset").status, 431);
    let long = format!("/{}", "u".repeat(9000));
    assert_eq!(get(b.addr(), "t", &long, &[]).expect("reply").status, 414);
    assert_eq!(
        s[0].requests(),
        1,
        "only the 40 KiB request reached the server"
    );
}

#[test]
fn a_slowloris_client_is_cut_off_while_others_are_served() {
    let s = servers(&["a"]);
    let b = Balancer::from_toml(&format!(
        "[l7]\nthreads = 1\n[l7.listeners.main]\nlisten = \"127.0.0.1:0\"\nclient_header_timeout_ms = 300\nroutes = [{{ path = \"/\", pool = \"web\" }}]\n[l7.pools.web]\n{}\n",
        servers_toml(&[&s[0]])
    ));
    let mut slow = TcpStream::connect(b.addr()).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
        .expect("part of a head");
    let dripping = std::thread::spawn(move || {
        // One header byte every 100 ms: never a whole head.
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(100));
            if slow.write_all(b"X").is_err() {
                break;
            }
        }
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        (started.elapsed(), rest)
    });
    for _ in 0..5 {
        assert_eq!(get(b.addr(), "t", "/", &[]).expect("served").status, 200);
    }
    let (took, rest) = dripping.join().expect("slow client");
    assert!(took < Duration::from_secs(4), "cut off after {took:?}");
    assert!(
        rest.is_empty() || !rest.starts_with(b"HTTP/1.1 200"),
        "no answer to a partial head"
    );
}

#[test]
fn a_websocket_upgrade_is_passed_through_and_echoes() {
    let s = servers(&["a"]);
    let b = Balancer::web("", &[&s[0]]);
    let mut c = HttpConn::open(b.addr()).expect("connect");
    c.stream()
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .expect("handshake");
    let r = c.reply(true).expect("101");
    assert_eq!(r.status, 101);
    assert_eq!(r.header("upgrade"), Some("websocket"));
    let seen = s[0].seen().pop().expect("seen");
    assert_eq!(seen.header("upgrade"), Some("websocket"));
    for msg in [
        &b"hello"[..],
        &[0x81, 0x05, 1, 2, 3, 4, 5],
        &pattern(100_000),
    ] {
        c.stream().write_all(msg).expect("send");
        let mut back = vec![0u8; msg.len()];
        c.reader.read_exact(&mut back).expect("echo");
        assert!(back == msg, "echoed {} bytes", msg.len());
    }
}

#[test]
fn a_websocket_tunnel_idle_both_ways_is_closed_after_tunnel_timeout_secs() {
    let s = servers(&["a"]);
    let b = Balancer::web("tunnel_timeout_secs = 1", &[&s[0]]);
    let open = || {
        let mut c = HttpConn::open(b.addr()).expect("connect");
        c.stream()
            .write_all(
                b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .expect("handshake");
        assert_eq!(c.reply(true).expect("101").status, 101);
        c
    };
    let echo = |c: &mut HttpConn, msg: &[u8]| {
        c.stream().write_all(msg).expect("send");
        let mut back = vec![0u8; msg.len()];
        c.reader.read_exact(&mut back).expect("echo");
        assert_eq!(back, msg);
    };
    let mut quiet = open();
    let mut busy = open();
    echo(&mut quiet, b"once");
    let started = Instant::now();
    // The busy tunnel moves a message every 300 ms for three timeouts' worth.
    while started.elapsed() < Duration::from_secs(3) {
        echo(&mut busy, b"ping");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The quiet one was closed (both its halves) after a second of silence.
    let mut rest = Vec::new();
    match quiet.reader.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "unexpected bytes {rest:?}"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the idle tunnel is still open: {e}"),
    }
    echo(&mut busy, b"still open");
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let s = servers(&["a"]);
    let b = Balancer::from_toml(&format!(
        "[l7]\nthreads = 1\n[l7.listeners.main]\nlisten = \"127.0.0.1:0\"\nidle_timeout_secs = 1\nroutes = [{{ path = \"/\", pool = \"web\" }}]\n[l7.pools.web]\n{}\n",
        servers_toml(&[&s[0]])
    ));
    let mut first = HttpConn::open(b.addr()).expect("connect");
    assert_eq!(first.get("t", "/", &[]).expect("reply").status, 200);
    // The idle clock starts once that response has gone out, a little before this.
    let served = Instant::now();
    let mut rest = Vec::new();
    first
        .reader
        .read_to_end(&mut rest)
        .expect("closed, not reset");
    let idle = served.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(5),
        "closed after {idle:?}"
    );
}

#[test]
fn at_max_conns_a_busy_connection_holds_the_next_client_back_and_an_idle_one_makes_room() {
    let s = servers(&["a"]);
    let b = Balancer::from_toml(&format!(
        "[l7]\nthreads = 1\n[l7.listeners.main]\nlisten = \"127.0.0.1:0\"\nmax_conns = 1\nroutes = [{{ path = \"/\", pool = \"web\" }}]\n[l7.pools.web]\n{}\n",
        servers_toml(&[&s[0]])
    ));
    // The one slot is busy with a slow request: the next client waits in the backlog.
    s[0].delay(Duration::from_millis(800));
    let mut busy = HttpConn::open(b.addr()).expect("connect");
    busy.stream()
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    wait_until("the slow request to reach the server", || {
        s[0].requests() == 1
    });
    let mut second = HttpConn::open(b.addr()).expect("connect (kernel backlog)");
    second
        .stream()
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s[0].requests(), 1, "the second client waits in the backlog");
    // Once the first is answered it is idle, and the waiting client takes its place
    // (nginx's reuse of keep-alive connections): the idle one is closed.
    let started = Instant::now();
    assert_eq!(busy.reply(false).expect("answered").status, 200);
    assert_eq!(second.reply(false).expect("served").status, 200);
    assert!(started.elapsed() < Duration::from_secs(3));
    let mut rest = Vec::new();
    busy.reader
        .read_to_end(&mut rest)
        .expect("the idle one closed to make room");
    s[0].delay(Duration::ZERO);
    // And a third client gets in the same way while the second sits idle.
    assert_eq!(get(b.addr(), "t", "/", &[]).expect("served").status, 200);
}
