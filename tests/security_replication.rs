//! The replication handshake attacked from a raw TCP client that speaks the link protocol
//! with the crate's own frame functions: a wrong secret, no secret, a captured handshake
//! replayed, and a node's own proof reflected back to it on a second connection. Each is
//! refused, and records sent after the failed handshake never reach the store. A client
//! that does know the secret gets through the same code path, so the harness would see an
//! injection if one worked.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opsconsole::cache::version::Version;
use opsconsole::replication::auth;
use opsconsole::replication::link::Hello;
use opsconsole::replication::wire::{self, Kind};
use support::conn::{Conn, number, stat};
use support::{DEADLINE, Node, spawn_node};

const SECRET: &str = "replication-secret-under-test";

/// A master with `SECRET` whose replication listener is on a known port and whose peer is
/// `peer` (the test's trap, or a port nobody listens on).
struct Target {
    node: Node,
    repl: SocketAddr,
}

/// Writes `text` to `name` in a scratch directory of this test's own; returns its path.
fn file(dir: &str, name: &str, text: &str) -> String {
    let path = support::scratch(dir).join(name);
    std::fs::write(&path, text).expect("write scratch file");
    path.to_str().expect("utf-8 path").to_string()
}

fn start_master(name: &str, peer: u16) -> Target {
    let secret = file(name, "repl.secret", &format!("{SECRET}\n"));
    let config = file(
        name,
        "repl.toml",
        "[master.replication]\nheartbeat_interval_ms = 100\nheartbeat_timeout_ms = 5000\nreconnect_max_ms = 200\n",
    );
    let port = support::free_port();
    let node = spawn_node(&[
        "--role",
        "master",
        "-p",
        "0",
        "--config",
        &config,
        "--repl-listen",
        &format!("127.0.0.1:{port}"),
        "--peer",
        &format!("127.0.0.1:{peer}"),
        "--repl-secret-file",
        &secret,
    ]);
    let repl: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    support::wait_until("the replication listener", || {
        TcpStream::connect(repl).is_ok()
    });
    Target { node, repl }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Frames read off one connection: the greeting first, then whole frames.
struct FrameReader {
    stream: TcpStream,
    buf: Vec<u8>,
    greeted: bool,
    closed: bool,
}

impl FrameReader {
    fn new(stream: TcpStream) -> FrameReader {
        FrameReader {
            stream,
            buf: Vec::new(),
            greeted: false,
            closed: false,
        }
    }

    /// The next frame, or `None` once the peer closed (or the deadline passed).
    fn next(&mut self) -> Option<(Kind, Vec<u8>)> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if !self.greeted && self.buf.len() >= wire::MAGIC.len() {
                assert_eq!(&self.buf[..wire::MAGIC.len()], wire::MAGIC, "greeting");
                self.buf.drain(..wire::MAGIC.len());
                self.greeted = true;
            }
            if self.greeted
                && let Some((kind, body, used)) = wire::parse_frame(&self.buf).expect("frame")
            {
                let body = body.to_vec();
                self.buf.drain(..used);
                return Some((kind, body));
            }
            if self.closed || Instant::now() > deadline {
                return None;
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.closed = true,
            }
        }
    }

    fn hello(&mut self) -> Hello {
        let (kind, body) = self.next().expect("a hello");
        assert_eq!(kind, Kind::Hello);
        Hello::decode(&body).expect("hello decodes")
    }

    /// Every frame until the peer closes the connection.
    fn rest(&mut self) -> Vec<(Kind, Vec<u8>)> {
        std::iter::from_fn(|| self.next()).collect()
    }
}

fn frame(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let at = wire::begin_frame(&mut out, kind);
    out.extend_from_slice(body);
    wire::finish_frame(&mut out, at);
    out
}

/// The node id the test client announces.
const CLIENT_ID: u32 = 0x5eed_0001;

/// A hello from a would-be slave of the target.
fn hello(nonce: [u8; 16], with_auth: bool, dialer: bool) -> Vec<u8> {
    hello_as(CLIENT_ID, nonce, with_auth, dialer)
}

fn hello_as(node_id: u32, nonce: [u8; 16], with_auth: bool, dialer: bool) -> Vec<u8> {
    let mut out = Vec::new();
    Hello {
        node_id,
        epoch: 0,
        is_master: false,
        stream_id: 77,
        nonce,
        auth: with_auth,
        dialer,
        cache_port: 1,
    }
    .encode(&mut out);
    out
}

/// What a peer sends once admitted: its resume (a slave asking for a full copy) and a copy
/// of its own holding `key`, written with a version newer than anything on the target.
fn payload(key: &str) -> Vec<u8> {
    let mut out = frame(Kind::Resume, &[0, 0]);
    let mut begin = 1u64.to_le_bytes().to_vec();
    begin.extend_from_slice(&64u64.to_le_bytes());
    out.extend_from_slice(&frame(Kind::CopyBegin, &begin));
    let mut records = Vec::new();
    let version = Version {
        time: u64::MAX >> 1,
        node: CLIENT_ID,
    };
    wire::encode_set(&mut records, key.as_bytes(), b"injected", 0, 0, version);
    out.extend_from_slice(&frame(Kind::CopyChunk, &records));
    let mut end = vec![1u8];
    end.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&frame(Kind::CopyEnd, &end));
    out
}

/// The proof of the test client as the dialer, with `hello`'s id, against the target's hello.
fn proof(secret: &str, mine: &[u8; 16], target: &Hello) -> Vec<u8> {
    let t = auth::Transcript {
        dialer_id: CLIENT_ID,
        dialer_nonce: *mine,
        acceptor_id: target.node_id,
        acceptor_nonce: target.nonce,
    };
    frame(
        Kind::Auth,
        &auth::proof(secret.as_bytes(), auth::Side::Dialer, &t),
    )
}

/// Connects to the target's replication port as a dialer and returns the connection and
/// what to send first: the greeting, a hello and the proof under `secret`.
fn dial(t: &Target, secret: &str) -> (FrameReader, Vec<u8>) {
    let mut r = FrameReader::new(connect(t.repl));
    let theirs = r.hello();
    let nonce = auth::random_bytes::<16>();
    let mut out = wire::MAGIC.to_vec();
    out.extend_from_slice(&hello(nonce, true, true));
    out.extend_from_slice(&proof(secret, &nonce, &theirs));
    (r, out)
}

fn refusal(frames: &[(Kind, Vec<u8>)]) -> String {
    let (_, body) = frames
        .iter()
        .find(|(k, _)| *k == Kind::Refuse)
        .unwrap_or_else(|| panic!("no refusal among {frames:?}"));
    String::from_utf8_lossy(&body[2..]).into_owned()
}

fn get(addr: SocketAddr, key: &str) -> Option<String> {
    let mut c = Conn::connect(addr);
    c.send(format!("get {key}\r\n").as_bytes());
    let first = c.line();
    if first == "END" {
        return None;
    }
    let value = c.line();
    assert_eq!(c.line(), "END");
    Some(value)
}

/// The handshake (and everything pipelined after it) must fail with `why`, and nothing the
/// client sent may be applied.
fn assert_refused(t: &Target, frames: &[(Kind, Vec<u8>)], why: &str, key: &str) {
    let reason = refusal(frames);
    assert!(reason.contains(why), "refused with {reason:?}, not {why:?}");
    assert!(
        !frames.iter().any(|(k, _)| *k == Kind::Resume),
        "the target admitted the link: {frames:?}"
    );
    assert_eq!(get(t.node.addr, key), None, "{key} was applied");
    assert_ne!(stat(t.node.addr, "repl_link"), "streaming");
}

#[test]
fn a_wrong_secret_and_a_missing_secret_are_refused_and_nothing_is_applied() {
    let t = start_master("sec-repl-wrong", support::free_port());

    // Wrong secret: a well-formed proof under another key, the payload pipelined behind it.
    let (mut r, mut out) = dial(&t, "not-the-secret");
    out.extend_from_slice(&payload("wrong-secret"));
    r.stream.write_all(&out).expect("write");
    let frames = r.rest();
    assert_refused(&t, &frames, "wrong replication secret", "wrong-secret");

    // No secret at all: the hello says so.
    let mut r = FrameReader::new(connect(t.repl));
    r.hello();
    let mut out = wire::MAGIC.to_vec();
    out.extend_from_slice(&hello(auth::random_bytes(), false, true));
    out.extend_from_slice(&payload("no-secret"));
    r.stream.write_all(&out).expect("write");
    let frames = r.rest();
    assert_refused(&t, &frames, "configured on one side only", "no-secret");

    // A hello that claims a secret but skips the proof and goes straight to the payload.
    let mut r = FrameReader::new(connect(t.repl));
    r.hello();
    let mut out = wire::MAGIC.to_vec();
    out.extend_from_slice(&hello(auth::random_bytes(), true, true));
    out.extend_from_slice(&payload("no-proof"));
    r.stream.write_all(&out).expect("write");
    let frames = r.rest();
    assert_refused(&t, &frames, "wrong replication secret", "no-proof");

    // An empty proof.
    let mut r = FrameReader::new(connect(t.repl));
    r.hello();
    let mut out = wire::MAGIC.to_vec();
    out.extend_from_slice(&hello(auth::random_bytes(), true, true));
    out.extend_from_slice(&frame(Kind::Auth, &[]));
    out.extend_from_slice(&payload("empty-proof"));
    r.stream.write_all(&out).expect("write");
    let frames = r.rest();
    assert_refused(&t, &frames, "wrong replication secret", "empty-proof");

    assert!(number(t.node.addr, "repl_links_refused") >= 4);

    // The same client with the right secret is admitted and its copy lands: the refusals
    // above are the secret's doing, not a payload the node would never apply.
    let (mut r, mut out) = dial(&t, SECRET);
    out.extend_from_slice(&payload("right-secret"));
    r.stream.write_all(&out).expect("write");
    support::wait_until("the authenticated copy to land", || {
        get(t.node.addr, "right-secret").as_deref() == Some("injected")
    });
}

/// Copies bytes one way until either side closes, recording them.
fn pump(mut from: TcpStream, mut to: TcpStream, record: Option<Arc<Mutex<Vec<u8>>>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(r) = &record {
                        r.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend_from_slice(&buf[..n]);
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

#[test]
fn a_captured_handshake_replayed_on_a_new_connection_is_refused() {
    // A relay between a real slave and the master records what the slave sends.
    let relay = TcpListener::bind("127.0.0.1:0").expect("bind relay");
    let relay_port = relay.local_addr().expect("addr").port();
    let t = start_master("sec-repl-replay", support::free_port());
    let captured = Arc::new(Mutex::new(Vec::new()));
    {
        let (captured, upstream) = (captured.clone(), t.repl);
        std::thread::spawn(move || {
            // Only the first connection is relayed: the one to capture.
            if let Ok((client, _)) = relay.accept() {
                let server = TcpStream::connect(upstream).expect("connect master");
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                pump(client, server, Some(captured));
                pump(s2, c2, None);
            }
        });
    }
    let secret = file(
        "sec-repl-replay-slave",
        "repl.secret",
        &format!("{SECRET}\n"),
    );
    let slave = spawn_node(&[
        "--role",
        "slave",
        "-p",
        "0",
        "--repl-listen",
        &format!("127.0.0.1:{}", support::free_port()),
        "--peer",
        &format!("127.0.0.1:{relay_port}"),
        "--repl-secret-file",
        &secret,
    ]);
    // Both ends: the master streams as soon as it has sent its copy, the slave only once it
    // has applied it (until then it refuses writes).
    support::wait_until("the slave to stream through the relay", || {
        stat(t.node.addr, "repl_link") == "streaming"
            && stat(slave.addr, "repl_link") == "streaming"
    });
    let mut c = Conn::connect(slave.addr);
    c.send(b"set captured 0 0 1\r\nc\r\n");
    assert_eq!(c.line(), "STORED");
    support::wait_until("the write to replicate", || {
        get(t.node.addr, "captured").is_some()
    });
    drop(c);
    drop(slave);
    support::wait_until("the master to see the link down", || {
        stat(t.node.addr, "repl_link") != "streaming"
    });
    let replay = captured.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(replay.starts_with(wire::MAGIC));
    let kinds: Vec<Kind> = {
        let mut at = wire::MAGIC.len();
        let mut kinds = Vec::new();
        while let Ok(Some((kind, _, used))) = wire::parse_frame(&replay[at..]) {
            kinds.push(kind);
            at += used;
        }
        kinds
    };
    assert_eq!(&kinds[..2], [Kind::Hello, Kind::Auth], "captured {kinds:?}");

    let refused_before = number(t.node.addr, "repl_links_refused");
    let mut r = FrameReader::new(connect(t.repl));
    r.hello();
    r.stream.write_all(&replay).expect("replay");
    let frames = r.rest();
    let reason = refusal(&frames);
    assert!(reason.contains("wrong replication secret"), "{reason:?}");
    assert!(!frames.iter().any(|(k, _)| *k == Kind::Resume));
    assert_eq!(
        number(t.node.addr, "repl_links_refused"),
        refused_before + 1
    );
    assert_ne!(stat(t.node.addr, "repl_link"), "streaming");
}

#[test]
fn a_nodes_own_proof_reflected_back_to_it_is_refused() {
    // The trap stands where the master's peer should be, so the master dials it. The
    // attacker then holds two handshakes with the same node, one where it dialed (and
    // proves itself as the dialer) and one where it was dialed, and tries to make the first
    // prove the second for it. It tries under an id of its own and posing as the master.
    let trap = TcpListener::bind("127.0.0.1:0").expect("bind trap");
    let trap_port = trap.local_addr().expect("addr").port();
    let t = start_master("sec-repl-reflect", trap_port);
    for (round, pose_as_master) in [false, true].into_iter().enumerate() {
        let (dialed, _) = trap.accept().expect("the master dials its peer");
        dialed
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut from_dialer = FrameReader::new(dialed);
        let dial_hello = from_dialer.hello();
        assert!(dial_hello.auth);
        let id = if pose_as_master {
            dial_hello.node_id
        } else {
            CLIENT_ID
        };

        let mut to_acceptor = FrameReader::new(connect(t.repl));
        let accept_hello = to_acceptor.hello();

        // To the master as dialer: "my challenge is the one you sent as acceptor".
        let mut out = wire::MAGIC.to_vec();
        out.extend_from_slice(&hello_as(id, accept_hello.nonce, true, false));
        from_dialer.stream.write_all(&out).expect("write");
        // Unfixed, it answers with HMAC("dialer", its dial nonce, its accept nonce) ...
        let reflected = loop {
            match from_dialer.next() {
                Some((Kind::Auth, body)) => break Some(body),
                Some(_) => {}
                None => break None,
            }
        };
        // ... which is exactly the proof the acceptor asks of a dialer whose challenge is
        // the dial nonce.
        let key = format!("reflected-{round}");
        let mut out = wire::MAGIC.to_vec();
        out.extend_from_slice(&hello_as(id, dial_hello.nonce, true, true));
        out.extend_from_slice(&frame(Kind::Auth, &reflected.unwrap_or_default()));
        out.extend_from_slice(&payload(&key));
        to_acceptor.stream.write_all(&out).expect("write");
        let frames = to_acceptor.rest();
        assert!(
            !frames.iter().any(|(k, _)| *k == Kind::Resume),
            "round {round}: the master admitted a reflected proof: {frames:?}"
        );
        assert!(frames.iter().any(|(k, _)| *k == Kind::Refuse), "{frames:?}");
        assert_eq!(get(t.node.addr, &key), None, "the copy was applied");
        drop(from_dialer);
    }
    assert_ne!(stat(t.node.addr, "repl_link"), "streaming");
}

#[test]
fn a_peer_whose_stream_offsets_run_past_the_end_of_u64_is_cut_off() {
    // Even an authenticated peer is not trusted with arithmetic: its copy ends at an offset
    // just short of u64::MAX, and its stream then counts past it.
    let t = start_master("sec-repl-offset", support::free_port());
    let (mut r, mut out) = dial(&t, SECRET);
    out.extend_from_slice(&frame(Kind::Resume, &[0, 0]));
    let mut begin = 0u64.to_le_bytes().to_vec();
    begin.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&frame(Kind::CopyBegin, &begin));
    let near_end = u64::MAX - 4;
    let mut end = vec![1u8];
    end.extend_from_slice(&near_end.to_le_bytes());
    out.extend_from_slice(&frame(Kind::CopyEnd, &end));
    // The first 10 bytes of a record: incomplete, so held until the next frame.
    let mut record = Vec::new();
    let version = Version {
        time: 1,
        node: CLIENT_ID,
    };
    wire::encode_set(&mut record, b"wrapped", b"value", 0, 0, version);
    let mut stream = near_end.to_le_bytes().to_vec();
    stream.extend_from_slice(&record[..10]);
    out.extend_from_slice(&frame(Kind::Stream, &stream));
    let mut rest = near_end.wrapping_add(10).to_le_bytes().to_vec();
    rest.extend_from_slice(&record[10..]);
    out.extend_from_slice(&frame(Kind::Stream, &rest));
    r.stream.write_all(&out).expect("write");
    support::wait_for_line(&t.node.log, "out of range");
    r.rest();
    assert_eq!(
        get(t.node.addr, "wrapped"),
        None,
        "the wrapped record was applied"
    );
    assert_ne!(stat(t.node.addr, "repl_link"), "streaming");
    // The node goes on serving.
    let mut c = Conn::connect(t.node.addr);
    c.send(b"set k 0 0 1\r\nv\r\n");
    assert_eq!(c.line(), "STORED");
}
