//! Request smuggling and header injection against the L7 balancer, over raw TCP: each case
//! sends bytes a desynchronising client would send to a listener in front of a raw-TCP
//! backend that records exactly the bytes it receives and splits them into requests the way
//! a lenient server would. The balancer must refuse the request (400, connection closed) or
//! forward it in a form with one meaning; in no case may the backend see more requests than
//! the client sent. RELIABILITY.md ("Security review") has the table of what each case does.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::DEADLINE;
use support::l7::Balancer;

/// One request as the recording backend split it off its connection.
#[derive(Debug, Clone)]
struct Received {
    head: String,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }
}

#[derive(Default)]
struct Record {
    /// Every byte each connection delivered, in order.
    raw: Mutex<Vec<Vec<u8>>>,
    requests: Mutex<Vec<Received>>,
    open: AtomicUsize,
}

/// A backend that answers every request it can split off with `200 ok`, and records.
struct RawBackend {
    addr: SocketAddr,
    record: Arc<Record>,
}

/// Splits one request off the front of `buf` as a lenient server would: lines end at LF
/// (a CR before it is dropped), any `Transfer-Encoding` mentioning chunked means chunked,
/// else the first `Content-Length`. `None` until a whole request is there.
fn split_request(buf: &[u8]) -> Option<(Received, usize)> {
    let end = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| (p, 2))
        .into_iter()
        .chain(
            buf.windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| (p, 4)),
        )
        .min_by_key(|(p, _)| *p)?;
    let head_len = end.0 + end.1;
    let head = String::from_utf8_lossy(&buf[..end.0]).replace('\r', "");
    let mut r = Received {
        head,
        body: Vec::new(),
    };
    let chunked = r
        .header("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut at = head_len;
        loop {
            let line_end = buf[at..].windows(2).position(|w| w == b"\r\n")?;
            let size_text = String::from_utf8_lossy(&buf[at..at + line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at += line_end + 2;
            if size == 0 {
                // Trailers end with an empty line.
                let trailer_end = buf[at..].windows(2).position(|w| w == b"\r\n")?;
                at += trailer_end + 2;
                return Some((r, at));
            }
            if buf.len() < at + size + 2 {
                return None;
            }
            r.body.extend_from_slice(&buf[at..at + size]);
            at += size + 2;
        }
    }
    let length = r
        .header("content-length")
        .first()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if buf.len() < head_len + length {
        return None;
    }
    r.body = buf[head_len..head_len + length].to_vec();
    Some((r, head_len + length))
}

impl RawBackend {
    fn start() -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let record = Arc::new(Record::default());
        let shared = record.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let record = shared.clone();
                record.open.fetch_add(1, Ordering::SeqCst);
                let index = {
                    let mut raw = record.raw.lock().unwrap_or_else(|e| e.into_inner());
                    raw.push(Vec::new());
                    raw.len() - 1
                };
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 65536];
                    loop {
                        let n = match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        record.raw.lock().unwrap_or_else(|e| e.into_inner())[index]
                            .extend_from_slice(&chunk[..n]);
                        while let Some((req, used)) = split_request(&buf) {
                            buf.drain(..used);
                            record
                                .requests
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(req);
                            let _ = stream.write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok",
                            );
                        }
                    }
                    record.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        RawBackend { addr, record }
    }

    fn requests(&self) -> Vec<Received> {
        self.record
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn raw(&self) -> String {
        let raw = self.record.raw.lock().unwrap_or_else(|e| e.into_inner());
        raw.iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>()
            .join("\n<next connection>\n")
    }
}

/// What one case produced: the client's replies (status codes in order), whether the
/// balancer closed the connection, and what the backend received.
struct Outcome {
    statuses: Vec<u16>,
    replies: String,
    requests: Vec<Received>,
    raw: String,
    /// The sentinel sent after the case reached the backend: the balancer kept reading the
    /// connection.
    sentinel_forwarded: bool,
}

/// How many whole responses `buf` holds (each framed by its Content-Length).
fn whole_responses(buf: &[u8]) -> usize {
    let mut at = 0;
    let mut n = 0;
    while let Some(end) = buf[at..].windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&buf[at..at + end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() < at + end + 4 + length {
            break;
        }
        at += end + 4 + length;
        n += 1;
    }
    n
}

/// The request sent after each case to end the conversation: whatever the balancer made of
/// the case, this one asks it to close once answered.
const SENTINEL: &[u8] = b"GET /sentinel HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

/// Sends `bytes` on a fresh connection to a fresh balancer over a fresh backend. Once the
/// case is answered (or the balancer closed, or waits for more), sends the sentinel and
/// reads until the balancer closes; then stops the balancer, closing its server
/// connections, and collects what the backend saw (the sentinel left out).
fn run(bytes: &[u8]) -> Outcome {
    let backend = RawBackend::start();
    let balancer = Balancer::from_toml(&format!(
        "[l7]\nthreads = 1\n[l7.listeners.main]\nlisten = \"127.0.0.1:0\"\nroutes = [{{ path = \"/\", pool = \"web\" }}]\n[l7.pools.web]\nretries = 0\nservers = [{{ name = \"raw\", address = \"{}\" }}]\n",
        backend.addr
    ));
    let mut s = TcpStream::connect(balancer.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    // The balancer may refuse and close before reading everything; a failed write is then
    // part of the outcome, not an error of the test.
    let _ = s.write_all(bytes);
    let mut replies = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    // A case the balancer is still reading (a body it expects more of) gets the sentinel
    // after this long, as more bytes of the same conversation.
    let mut sentinel_due = Some(Instant::now() + Duration::from_secs(2));
    let mut chunk = [0u8; 65536];
    loop {
        assert!(Instant::now() < deadline, "the balancer never closed");
        if sentinel_due.is_some_and(|due| whole_responses(&replies) > 0 || Instant::now() >= due) {
            sentinel_due = None;
            let _ = s.write_all(SENTINEL);
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => replies.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    balancer
        .rt
        .block_on(balancer.node.shutdown(Duration::from_secs(1)));
    drop(balancer);
    support::wait_until("the backend's connections to close", || {
        backend.record.open.load(Ordering::SeqCst) == 0
    });
    let replies = String::from_utf8_lossy(&replies).into_owned();
    let mut statuses: Vec<u16> = replies
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| replies.get(at + 9..at + 12)?.parse().ok())
        .collect();
    let mut requests = backend.requests();
    // The sentinel's own exchange is not part of the case.
    let sentinel_forwarded = requests
        .last()
        .is_some_and(|r| r.request_line().starts_with("GET /sentinel "));
    if sentinel_forwarded {
        requests.pop();
        statuses.pop();
    }
    Outcome {
        statuses,
        replies,
        requests,
        raw: backend.raw(),
        sentinel_forwarded,
    }
}

/// The client sent one request: the balancer either refused it with one 400 and forwarded
/// nothing, or the backend got exactly one request.
fn at_most_one(case: &str, o: &Outcome) {
    // The table in RELIABILITY.md is this line for every case (`--nocapture`).
    eprintln!(
        "case {case:?}: replies {:?}, backend saw {} request(s)",
        o.statuses,
        o.requests.len()
    );
    assert!(
        o.requests.len() <= 1,
        "{case}: the backend saw {} requests: {:?}\nraw:\n{}",
        o.requests.len(),
        o.requests,
        o.raw
    );
    assert!(
        !o.requests
            .iter()
            .any(|r| r.request_line().contains("/smuggled")),
        "{case}: the smuggled request reached the backend:\n{}",
        o.raw
    );
    assert!(
        o.statuses.len() <= 1,
        "{case}: {} replies to one request:\n{}",
        o.statuses.len(),
        o.replies
    );
}

fn rejected(case: &str, o: &Outcome) {
    at_most_one(case, o);
    assert_eq!(o.statuses, [400], "{case}: replies {}", o.replies);
    assert!(
        o.requests.is_empty(),
        "{case}: a refused request was forwarded: {:?}",
        o.requests
    );
    assert!(
        !o.sentinel_forwarded,
        "{case}: the connection stayed open after the 400"
    );
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: victim\r\n\r\n";

/// `head` (request line and headers, CRLF each, without the blank line) and `body`.
fn request(head: &str, body: &str) -> Vec<u8> {
    format!("{head}\r\n\r\n{body}").into_bytes()
}

#[test]
fn conflicting_or_malformed_framing_is_refused() {
    let chunked_smuggle = format!("0\r\n\r\n{SMUGGLED}");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "two different Content-Length headers",
            request(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 40",
                SMUGGLED,
            ),
        ),
        (
            "Content-Length: 0, 40 in one header",
            request(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 40",
                SMUGGLED,
            ),
        ),
        (
            "Transfer-Encoding: chunked, identity",
            request(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity",
                &chunked_smuggle,
            ),
        ),
        (
            "Transfer-Encoding: xchunked",
            request(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked",
                &chunked_smuggle,
            ),
        ),
        (
            "obs-fold continuing Transfer-Encoding",
            request(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n chunked",
                &chunked_smuggle,
            ),
        ),
        (
            "obs-fold with a tab",
            request("GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n\ttwo", ""),
        ),
        (
            "a header line starting with a space",
            request("GET / HTTP/1.1\r\n Host: a\r\nHost: a", ""),
        ),
        (
            "bare CR inside a header value",
            request(
                "GET / HTTP/1.1\r\nHost: a\r\nX-Note: one\rTransfer-Encoding: chunked",
                "",
            ),
        ),
        (
            "bare CR as a line ending",
            b"GET / HTTP/1.1\rHost: a\r\n\r\n".to_vec(),
        ),
        (
            "NUL in a header value",
            request("GET / HTTP/1.1\r\nHost: a\r\nX-Note: one\0two", ""),
        ),
        (
            "NUL in a header name",
            request("GET / HTTP/1.1\r\nHost: a\r\nX-No\0te: one", ""),
        ),
        (
            "Content-Length: +40",
            request(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +40",
                SMUGGLED,
            ),
        ),
        (
            "Content-Length: -1",
            request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1", SMUGGLED),
        ),
        (
            "Content-Length: 0x28",
            request(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x28",
                SMUGGLED,
            ),
        ),
        (
            "Content-Length past u64",
            request(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551656",
                SMUGGLED,
            ),
        ),
        (
            "two Host headers",
            request(
                "GET / HTTP/1.1\r\nHost: public.example\r\nHost: internal.example",
                "",
            ),
        ),
        (
            "a Host that is not a host",
            request("GET / HTTP/1.1\r\nHost: a b.example", ""),
        ),
        (
            "a space before the header colon",
            request(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked",
                &chunked_smuggle,
            ),
        ),
    ];
    for (case, bytes) in &cases {
        rejected(case, &run(bytes));
    }
}

#[test]
fn a_body_that_turns_bad_midway_ends_both_connections() {
    // The head is valid and already on its way to the server when the chunked body turns
    // out to be broken: the server got one truncated request, its connection is dropped
    // rather than reused, and the client gets an error and a closed connection.
    let o = run(&request(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked",
        &format!("10000000000000028\r\n{SMUGGLED}\r\n0\r\n\r\n"),
    ));
    at_most_one("a chunk size past u64", &o);
    assert!(o.statuses == [400] || o.statuses == [502], "{}", o.replies);
    assert!(
        o.requests.is_empty(),
        "a whole request was forwarded: {}",
        o.raw
    );
}

#[test]
fn ambiguous_but_parseable_framing_is_forwarded_with_one_meaning() {
    // Each of these has one correct reading (RFC 9112); the backend must get that one
    // request, framed unambiguously.
    let chunked_smuggle = format!("0\r\n\r\n{SMUGGLED}");
    let cases: Vec<(&str, Vec<u8>, &[u8])> = vec![
        (
            // RFC 9112 §6.3: Transfer-Encoding wins, and the connection closes after the
            // response, so what follows the chunked body is never read as a request.
            "Content-Length and Transfer-Encoding: chunked",
            request(
                &format!(
                    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nTransfer-Encoding: chunked",
                    chunked_smuggle.len()
                ),
                &chunked_smuggle,
            ),
            b"",
        ),
        (
            "Content-Length with leading zeros",
            request(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0005",
                "hello",
            ),
            b"hello",
        ),
        (
            "two equal Content-Length headers",
            request(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5",
                "hello",
            ),
            b"hello",
        ),
        (
            // Content-Length named as hop-by-hop: stripped with the other hop-by-hop
            // headers, the body must still reach the server framed by its length.
            "Connection: content-length",
            request(
                "POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: 5",
                "hello",
            ),
            b"hello",
        ),
        (
            "Transfer-Encoding: Chunked (case)",
            request(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            b"hello",
        ),
        (
            "Transfer-Encoding with leading whitespace in the value",
            request(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  chunked",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            b"hello",
        ),
        (
            "a chunked body followed by a pipelined-looking tail with Connection: close",
            request(
                "POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked",
                &chunked_smuggle,
            ),
            b"",
        ),
    ];
    for (case, bytes, body) in &cases {
        let o = run(bytes);
        at_most_one(case, &o);
        assert_eq!(o.statuses, [200], "{case}: {}", o.replies);
        assert_eq!(o.requests.len(), 1, "{case}: {}", o.raw);
        let r = &o.requests[0];
        assert_eq!(r.body, *body, "{case}: {}", o.raw);
        // One framing header, never both.
        let cl = r.header("content-length");
        let te = r.header("transfer-encoding");
        assert!(
            cl.len() + te.len() <= 1,
            "{case}: forwarded with {cl:?} and {te:?}"
        );
        if let Some(cl) = cl.first() {
            assert_eq!(cl, &r.body.len().to_string(), "{case}: {}", o.raw);
        }
    }
}

#[test]
fn bare_lf_line_endings_are_one_request() {
    // RFC 9112 lets a recipient accept a bare LF as a line terminator; whether the balancer
    // accepts or refuses, the backend gets no more than one request, framed with CRLF.
    for (case, bytes) in [
        ("bare LF line endings", b"GET / HTTP/1.1\nHost: a\n\n".to_vec()),
        (
            "bare LF with a smuggle attempt in the body",
            format!(
                "POST / HTTP/1.1\nHost: a\nContent-Length: {}\n\n{SMUGGLED}",
                SMUGGLED.len()
            )
            .into_bytes(),
        ),
        (
            "mixed line endings hiding a Transfer-Encoding",
            format!(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}",
                5 + SMUGGLED.len()
            )
            .into_bytes(),
        ),
    ] {
        let o = run(&bytes);
        at_most_one(case, &o);
        assert!(
            o.statuses == [400] || o.statuses == [200],
            "{case}: {}",
            o.replies
        );
        if let Some(r) = o.requests.first() {
            assert!(!o.raw.contains("\n\n"), "{case}: bare LF forwarded: {}", o.raw);
            assert!(r.body.is_empty() || r.body == SMUGGLED.as_bytes());
        }
    }
}

#[test]
fn an_absolute_form_target_wins_over_a_different_host_header() {
    // RFC 9112 §3.2.2: with an absolute-form target the Host header is ignored and replaced
    // by the target's authority. A backend must not see one host while the balancer routed
    // (and would log and forward X-Forwarded-Host) by another.
    let o = run(b"GET http://public.example/path?q=1 HTTP/1.1\r\nHost: internal.example\r\n\r\n");
    at_most_one("absolute-form", &o);
    assert_eq!(o.statuses, [200], "{}", o.replies);
    let r = &o.requests[0];
    assert_eq!(r.request_line(), "GET /path?q=1 HTTP/1.1");
    assert_eq!(r.header("host"), ["public.example"], "{}", r.head);
    assert_eq!(
        r.header("x-forwarded-host"),
        ["public.example"],
        "{}",
        r.head
    );
}

#[test]
fn client_forwarding_headers_are_replaced_and_cannot_carry_injected_lines() {
    // A client's X-Forwarded-* are replaced, never appended to.
    let o = run(
        b"GET / HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: admin.internal\r\n\r\n",
    );
    at_most_one("client X-Forwarded-*", &o);
    assert_eq!(o.statuses, [200], "{}", o.replies);
    let r = &o.requests[0];
    assert_eq!(r.header("x-forwarded-for"), ["127.0.0.1"], "{}", r.head);
    assert_eq!(r.header("x-forwarded-proto"), ["http"], "{}", r.head);
    assert_eq!(r.header("x-forwarded-host"), ["shop.example"], "{}", r.head);

    // CR/LF cannot be smuggled into a forwarded value: the parser ends a header at the line
    // break, so an "injected" line is either its own header (and a forwarding one is
    // replaced) or the request is refused.
    for (case, bytes) in [
        (
            "CRLF in Host",
            &b"GET / HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"[..],
        ),
        (
            "bare CR in Host",
            &b"GET / HTTP/1.1\r\nHost: a.example\rX-Forwarded-For: 1.2.3.4\r\n\r\n"[..],
        ),
        (
            "bare LF in Host",
            &b"GET / HTTP/1.1\r\nHost: a.example\nX-Forwarded-For: 1.2.3.4\r\n\r\n"[..],
        ),
    ] {
        let o = run(bytes);
        at_most_one(case, &o);
        for r in &o.requests {
            assert_eq!(
                r.header("x-forwarded-for"),
                ["127.0.0.1"],
                "{case}: {}",
                r.head
            );
            for line in r.head.lines() {
                assert!(!line.contains('\r'), "{case}: {line:?}");
            }
        }
    }

    // A Host with bytes no header value may carry never becomes an X-Forwarded-Host.
    for (case, host) in [
        ("NUL", &b"a\0b.example"[..]),
        ("DEL", b"a\x7fb.example"),
        ("non-UTF-8", b"caf\xe9.example"),
        ("space", b"a b.example"),
        ("quote and angle brackets", b"\"<script>\".example"),
        ("empty", b""),
    ] {
        let mut bytes = b"GET / HTTP/1.1\r\nHost: ".to_vec();
        bytes.extend_from_slice(host);
        bytes.extend_from_slice(b"\r\n\r\n");
        let o = run(&bytes);
        at_most_one(case, &o);
        for r in &o.requests {
            for v in r.header("x-forwarded-host") {
                assert!(
                    !v.is_empty()
                        && v.bytes().all(|b| b.is_ascii_graphic())
                        && !v.contains(['"', '<', '>', ' ']),
                    "{case}: X-Forwarded-Host {v:?}"
                );
            }
        }
    }
}
