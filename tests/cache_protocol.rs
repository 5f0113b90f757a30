//! Conversation tests against the real binary over loopback: for each command family, the
//! exact bytes a client sends and the exact bytes it must get back.

mod support;

use std::io::Read;
use std::time::Duration;

use support::{Client, spawn_node};

/// Sends each request on one connection and checks the reply byte for byte.
fn converse(client: &mut Client, table: &[(&str, &str)]) {
    for (request, want) in table {
        client.send(request.as_bytes());
        let got = client.read_exact_n(want.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            *want,
            "request {request:?} got {:?}",
            String::from_utf8_lossy(&got)
        );
    }
}

fn node() -> support::Node {
    spawn_node(&["--role", "master", "-p", "0"])
}

#[test]
fn storage_commands() {
    let n = node();
    let mut c = Client::connect(n.addr);
    converse(
        &mut c,
        &[
            ("set aa 0 0 3\r\n111\r\n", "STORED\r\n"),
            ("get aa\r\n", "VALUE aa 0 3\r\n111\r\nEND\r\n"),
            ("add aa 0 0 1\r\nx\r\n", "NOT_STORED\r\n"),
            ("add bb 7 0 1\r\nx\r\n", "STORED\r\n"),
            ("replace cc 0 0 1\r\nx\r\n", "NOT_STORED\r\n"),
            ("replace bb 9 0 2\r\nyy\r\n", "STORED\r\n"),
            ("get bb\r\n", "VALUE bb 9 2\r\nyy\r\nEND\r\n"),
            ("append bb 0 0 2\r\n>>\r\n", "STORED\r\n"),
            ("prepend bb 0 0 2\r\n<<\r\n", "STORED\r\n"),
            ("get bb\r\n", "VALUE bb 9 6\r\n<<yy>>\r\nEND\r\n"),
            ("append zz 0 0 1\r\nx\r\n", "NOT_STORED\r\n"),
            ("set empty 0 0 0\r\n\r\n", "STORED\r\n"),
            ("get empty\r\n", "VALUE empty 0 0\r\n\r\nEND\r\n"),
            ("set big 4294967295 0 1\r\nx\r\n", "STORED\r\n"),
            ("get big\r\n", "VALUE big 4294967295 1\r\nx\r\nEND\r\n"),
        ],
    );
}

#[test]
fn cas_uniqueness() {
    let n = node();
    let mut c = Client::connect(n.addr);
    c.send(b"set k 0 0 1\r\na\r\ngets k\r\n");
    let reply = c.read_until_suffix(b"END\r\n");
    let text = String::from_utf8_lossy(&reply);
    let cas: u64 = text
        .lines()
        .nth(1)
        .and_then(|l| l.split(' ').nth(4))
        .and_then(|v| v.parse().ok())
        .expect("cas in gets reply");
    converse(
        &mut c,
        &[
            (
                &format!("cas k 0 0 1 {}\r\nb\r\n", cas + 1000),
                "EXISTS\r\n",
            ),
            (&format!("cas k 0 0 1 {cas}\r\nb\r\n"), "STORED\r\n"),
            (&format!("cas k 0 0 1 {cas}\r\nc\r\n"), "EXISTS\r\n"),
            ("cas nope 0 0 1 1\r\nc\r\n", "NOT_FOUND\r\n"),
            ("get k\r\n", "VALUE k 0 1\r\nb\r\nEND\r\n"),
        ],
    );
    c.send(b"gets k\r\n");
    let reply = String::from_utf8_lossy(&c.read_until_suffix(b"END\r\n")).into_owned();
    let new_cas: u64 = reply
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(4))
        .and_then(|v| v.parse().ok())
        .expect("cas");
    assert!(new_cas > cas, "a store must produce a new, larger CAS");
}

#[test]
fn retrieval_multi_get_and_touch() {
    let n = node();
    let mut c = Client::connect(n.addr);
    converse(
        &mut c,
        &[
            ("set a 1 0 1\r\n1\r\n", "STORED\r\n"),
            ("set b 2 0 1\r\n2\r\n", "STORED\r\n"),
            (
                "get a nope b\r\n",
                "VALUE a 1 1\r\n1\r\nVALUE b 2 1\r\n2\r\nEND\r\n",
            ),
            ("get nope\r\n", "END\r\n"),
            ("touch a 100\r\n", "TOUCHED\r\n"),
            ("touch nope 100\r\n", "NOT_FOUND\r\n"),
            ("gat 100 b\r\n", "VALUE b 2 1\r\n2\r\nEND\r\n"),
            ("touch a -1\r\n", "TOUCHED\r\n"),
            ("get a\r\n", "END\r\n"),
            ("set gone 0 -1 1\r\nx\r\n", "STORED\r\n"),
            ("get gone\r\n", "END\r\n"),
        ],
    );
    // More keys than memcached's 24-token tokenizer holds at once.
    let keys: Vec<String> = (0..60).map(|i| format!("m{i}")).collect();
    for k in &keys {
        converse(
            &mut c,
            &[(&format!("set {k} 0 0 1\r\nv\r\n"), "STORED\r\n")],
        );
    }
    c.send(format!("get {}\r\n", keys.join(" ")).as_bytes());
    let reply = c.read_until_suffix(b"END\r\n");
    assert_eq!(
        String::from_utf8_lossy(&reply).matches("VALUE ").count(),
        60
    );
}

#[test]
fn arithmetic_and_delete() {
    let n = node();
    let mut c = Client::connect(n.addr);
    converse(
        &mut c,
        &[
            ("set n 0 0 2\r\n10\r\n", "STORED\r\n"),
            ("incr n 5\r\n", "15\r\n"),
            ("decr n 100\r\n", "0\r\n"),
            ("get n\r\n", "VALUE n 0 2\r\n0 \r\nEND\r\n"),
            ("set w 0 0 20\r\n18446744073709551615\r\n", "STORED\r\n"),
            ("incr w 2\r\n", "1\r\n"),
            ("set s 0 0 3\r\nabc\r\n", "STORED\r\n"),
            (
                "incr s 1\r\n",
                "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
            ),
            ("incr missing 1\r\n", "NOT_FOUND\r\n"),
            (
                "incr n -1\r\n",
                "CLIENT_ERROR invalid numeric delta argument\r\n",
            ),
            ("delete n\r\n", "DELETED\r\n"),
            ("delete n\r\n", "NOT_FOUND\r\n"),
            ("delete s 0\r\n", "DELETED\r\n"),
            (
                "delete s 5\r\n",
                "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
            ),
        ],
    );
}

#[test]
fn meta_commands() {
    let n = node();
    let mut c = Client::connect(n.addr);
    converse(
        &mut c,
        &[
            ("ms mk 2 T0 F5\r\nhi\r\n", "HD\r\n"),
            (
                "mg mk v f t s k Oop\r\n",
                "VA 2 f5 t-1 s2 kmk Oop\r\nhi\r\n",
            ),
            ("mg nope v\r\n", "EN\r\n"),
            ("mg nope v q\r\nmn\r\n", "MN\r\n"),
            ("ms mk 1 MA\r\n!\r\n", "HD\r\n"),
            ("mg mk v\r\n", "VA 3\r\nhi!\r\n"),
            (
                "ms new 1 ME q\r\nx\r\nms new 1 ME q\r\ny\r\nmn\r\n",
                "NS\r\nMN\r\n",
            ),
            ("ma cnt\r\n", "NF\r\n"),
            ("ma cnt N0 J41 v\r\n", "VA 2\r\n41\r\n"),
            ("ma cnt v\r\n", "VA 2\r\n42\r\n"),
            ("ma cnt MD D40 v\r\n", "VA 1\r\n2\r\n"),
            ("md cnt q\r\nmn\r\n", "MN\r\n"),
            ("md cnt O9\r\n", "NF O9\r\n"),
            ("mg k v v\r\n", "CLIENT_ERROR duplicate flag\r\n"),
            ("mn\r\n", "MN\r\n"),
        ],
    );
    // CAS through meta: a wrong C refuses, the right one stores.
    c.send(b"mg mk c\r\n");
    let reply = String::from_utf8_lossy(&c.read_until_suffix(b"\r\n")).into_owned();
    let cas: u64 = reply
        .trim()
        .trim_start_matches("HD c")
        .parse()
        .expect("cas");
    converse(
        &mut c,
        &[
            (&format!("ms mk 1 C{}\r\nz\r\n", cas + 1), "EX\r\n"),
            (&format!("ms mk 1 C{cas}\r\nz\r\n"), "HD\r\n"),
        ],
    );
}

#[test]
fn pipelined_requests_are_all_answered_in_order() {
    let n = node();
    let mut c = Client::connect(n.addr);
    let mut batch = String::new();
    let mut want = String::new();
    for i in 0..200 {
        batch.push_str(&format!(
            "set p{i} 0 0 {}\r\n{i}\r\nget p{i}\r\n",
            i.to_string().len()
        ));
        want.push_str(&format!(
            "STORED\r\nVALUE p{i} 0 {}\r\n{i}\r\nEND\r\n",
            i.to_string().len()
        ));
    }
    c.send(batch.as_bytes());
    let got = c.read_exact_n(want.len());
    assert_eq!(String::from_utf8_lossy(&got), want);
}

#[test]
fn noreply_suppresses_replies() {
    let n = node();
    let mut c = Client::connect(n.addr);
    converse(
        &mut c,
        &[(
            "set q 0 0 1 noreply\r\na\r\nadd q 0 0 1 noreply\r\nb\r\nincr q 1 noreply\r\n\
             delete nope noreply\r\ntouch q 10 noreply\r\nflush_all noreply\r\nget q\r\n",
            "END\r\n",
        )],
    );
}

#[test]
fn bad_input_gets_errors_and_the_connection_keeps_working() {
    let n = node();
    let mut c = Client::connect(n.addr);
    let long_key = "k".repeat(251);
    converse(
        &mut c,
        &[
            ("bogus\r\n", "ERROR\r\n"),
            ("\r\n", "ERROR\r\n"),
            (
                "set k 0 0 3\r\nabcde\r\n",
                "CLIENT_ERROR bad data chunk\r\nERROR\r\n",
            ),
            (
                &format!("get {long_key}\r\n"),
                "CLIENT_ERROR bad command line format\r\n",
            ),
            (
                "set k nan 0 1\r\n",
                "CLIENT_ERROR bad command line format\r\n",
            ),
            ("set k 0 0 1\r\nv\r\n", "STORED\r\n"),
        ],
    );
    // A value over -I is refused, its data swallowed, and the old value of a `set` removed.
    let big = "x".repeat(1_100_000);
    c.send(format!("set k 0 0 {}\r\n{big}\r\nget k\r\n", big.len()).as_bytes());
    let reply = c.read_until_suffix(b"END\r\n");
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "SERVER_ERROR object too large for cache\r\nEND\r\n"
    );
    // Another client is unaffected throughout.
    let mut other = Client::connect(n.addr);
    converse(
        &mut other,
        &[("version\r\n", "VERSION 1.6.18-opsconsole-0.1.0\r\n")],
    );
}

#[test]
fn a_line_without_end_is_refused_and_closed() {
    let n = node();
    let mut c = Client::connect(n.addr);
    c.send("x".repeat(5000).as_bytes());
    let mut all = Vec::new();
    c.stream.read_to_end(&mut all).expect("read until close");
    assert_eq!(
        String::from_utf8_lossy(&all),
        "CLIENT_ERROR line too long\r\n"
    );
    let mut other = Client::connect(n.addr);
    converse(&mut other, &[("mn\r\n", "MN\r\n")]);
}

#[test]
fn memory_limit_evicts_least_recently_used_items() {
    let n = spawn_node(&["--role", "master", "-p", "0", "-m", "2", "-I", "1k"]);
    let mut c = Client::connect(n.addr);
    let value = "v".repeat(900);
    for i in 0..6000 {
        c.send(format!("set e{i} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes());
        c.read_exact_n(b"STORED\r\n".len());
    }
    c.send(b"stats\r\n");
    let stats = String::from_utf8_lossy(&c.read_until_suffix(b"END\r\n")).into_owned();
    let stat = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no stat {name} in {stats}"))
    };
    assert!(stat("evictions") > 0, "{stats}");
    assert!(stat("bytes") <= stat("limit_maxbytes"), "{stats}");
    assert_eq!(stat("limit_maxbytes"), 2 << 20);
    // The newest items survive; the oldest were evicted.
    converse(
        &mut c,
        &[("mg e5999 s\r\n", "HD s900\r\n"), ("mg e0 s\r\n", "EN\r\n")],
    );
}

#[test]
fn connections_over_the_limit_are_refused_cleanly() {
    let n = spawn_node(&["--role", "master", "-p", "0", "-c", "2"]);
    let mut a = Client::connect(n.addr);
    let mut b = Client::connect(n.addr);
    converse(&mut a, &[("mn\r\n", "MN\r\n")]);
    converse(&mut b, &[("mn\r\n", "MN\r\n")]);
    let mut refused = Client::connect(n.addr);
    let mut all = Vec::new();
    refused
        .stream
        .read_to_end(&mut all)
        .expect("read until close");
    assert_eq!(
        String::from_utf8_lossy(&all),
        "ERROR Too many open connections\r\n"
    );
    converse(&mut a, &[("set x 0 0 1\r\n1\r\n", "STORED\r\n")]);
    converse(&mut b, &[("get x\r\n", "VALUE x 0 1\r\n1\r\nEND\r\n")]);
    drop(a);
    // The freed slot is usable again once the server has seen the close.
    support::wait_until("a freed connection slot", || {
        let mut c = Client::connect(n.addr);
        c.stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        c.send(b"mn\r\n");
        let mut buf = [0u8; 64];
        matches!(c.stream.read(&mut buf), Ok(k) if &buf[..k] == b"MN\r\n")
    });
}

#[test]
fn stats_report_memcached_names() {
    let n = node();
    let mut c = Client::connect(n.addr);
    converse(
        &mut c,
        &[
            ("set a 0 0 1\r\n1\r\n", "STORED\r\n"),
            ("get a\r\n", "VALUE a 0 1\r\n1\r\nEND\r\n"),
            ("get b\r\n", "END\r\n"),
        ],
    );
    c.send(b"stats\r\n");
    let reply = String::from_utf8_lossy(&c.read_until_suffix(b"END\r\n")).into_owned();
    for name in [
        "pid",
        "uptime",
        "time",
        "version",
        "curr_connections",
        "total_connections",
        "cmd_get",
        "cmd_set",
        "get_hits",
        "get_misses",
        "delete_hits",
        "incr_hits",
        "evictions",
        "curr_items",
        "total_items",
        "bytes",
        "limit_maxbytes",
        "threads",
    ] {
        assert!(
            reply.contains(&format!("STAT {name} ")),
            "missing {name} in {reply}"
        );
    }
    assert!(reply.contains("STAT get_hits 1\r\n"), "{reply}");
    assert!(reply.contains("STAT get_misses 1\r\n"), "{reply}");
    for sub in ["settings", "items"] {
        c.send(format!("stats {sub}\r\n").as_bytes());
        let r = String::from_utf8_lossy(&c.read_until_suffix(b"END\r\n")).into_owned();
        assert!(r.starts_with("STAT "), "stats {sub}: {r}");
    }
}
