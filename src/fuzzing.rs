//! The bodies of the fuzz targets in `fuzz/`: each takes arbitrary bytes, drives the same
//! functions a connection, a link, `Config::load` or the L7 proxy does, and panics only
//! when one of those breaks a rule (a panic, a reply past the input, memory past the
//! limit, a header that should have gone). They live here rather than in `fuzz/` so the
//! stable test suite can replay every committed corpus file through them
//! (`tests/fuzz_corpus.rs`) without a nightly toolchain.

#![doc(hidden)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::Uri;

use crate::balance::l7::route::{Route, RouteTable};
use crate::balance::l7::{cookie, headers, key, proxy};
use crate::cache::engine::Engine;
use crate::cache::exec::run_text;
use crate::cache::protocol::{ParseLimits, parse};
use crate::cli::RunArgs;
use crate::config::l7::Algorithm;
use crate::config::{CacheConfig, Config};
use crate::replication::auth;
use crate::replication::link::{Hello, Resume, refusal};
use crate::replication::wire::{self, Kind, Reader, Record};

/// A fuzz target's body: bytes in, a panic when a rule breaks.
pub type Harness = fn(&[u8]);

/// The fuzz targets by name (the directory names under `fuzz/corpus/`), with their bodies.
pub const TARGETS: &[(&str, Harness)] = &[
    ("cache_protocol", cache_protocol),
    ("replication_wire", replication_wire),
    ("config_load", config_load),
    ("l7_request", l7_request),
];

/// A fixed clock, so a run depends on nothing but its input.
const NOW: u32 = 1_700_000_000;

/// Client bytes into the cache: first the parser alone, walked the way a connection walks
/// its buffer; then parser and executor together on a small store.
pub fn cache_protocol(data: &[u8]) {
    let limits = ParseLimits {
        item_size_max: 1 << 20,
        cas_enabled: true,
    };
    let mut pos = 0;
    while pos < data.len() {
        let buf = &data[pos..];
        let Ok(Some((req, used))) = parse(buf, &limits) else {
            break;
        };
        assert!(
            used > 0 && used <= buf.len(),
            "used {used} of {}",
            buf.len()
        );
        // The request is decided by its own bytes: the same bytes alone parse the same,
        // and a strict prefix of them is never a complete request.
        assert_eq!(
            parse(&buf[..used], &limits).ok().flatten(),
            Some((req, used))
        );
        assert!(!matches!(parse(&buf[..used - 1], &limits), Ok(Some(_))));
        pos += used;
    }

    let engine = Engine::new(
        "master",
        CacheConfig {
            memory_limit_mb: 1,
            ..CacheConfig::default()
        },
    );
    run_text(&engine, NOW, data);
    let bytes = engine.store.stats().bytes;
    assert!(
        bytes <= engine.store.limit() as u64,
        "store holds {bytes} bytes over its limit of {}",
        engine.store.limit()
    );
}

/// Peer bytes on a replication link: the greeting, then frames, each body decoded as the
/// link decodes that kind; and the same bytes as a run of change records (a copy chunk or
/// the stream). Decoding must fail cleanly, and whatever decodes must encode back to the
/// same bytes.
pub fn replication_wire(data: &[u8]) {
    let mut buf = data.strip_prefix(wire::MAGIC.as_slice()).unwrap_or(data);
    while let Ok(Some((kind, body, used))) = wire::parse_frame(buf) {
        assert!(used >= 5 && used <= buf.len() && body.len() == used - 5);
        // Every strict prefix of a whole frame is incomplete, not wrong.
        for cut in [0, 4, used / 2, used - 1] {
            assert_eq!(wire::parse_frame(&buf[..cut]), Ok(None), "cut at {cut}");
        }
        frame_body(kind, body);
        buf = &buf[used..];
    }
    records(data);
}

fn frame_body(kind: Kind, body: &[u8]) {
    match kind {
        Kind::Hello => {
            if let Ok(hello) = Hello::decode(body) {
                // What a node decodes is what it would have sent (any non-zero byte reads
                // as true, so the bytes themselves need not come back).
                let mut out = Vec::new();
                hello.encode(&mut out);
                let again = Hello::decode(&out[5..]).map(|h| format!("{h:?}"));
                assert_eq!(again, Ok(format!("{hello:?}")));
            }
        }
        Kind::Auth => {
            // The body as a proof (of any length), and as a secret: a proof made with it
            // checks out, and only for the label it was made for.
            let t = auth::Transcript {
                dialer_id: 1,
                dialer_nonce: [1u8; 16],
                acceptor_id: 2,
                acceptor_nonce: [2u8; 16],
            };
            let _ = auth::verify(b"secret", auth::Side::Acceptor, &t, body);
            let proof = auth::proof(body, auth::Side::Dialer, &t);
            assert!(auth::verify(body, auth::Side::Dialer, &t, &proof));
            assert!(!auth::verify(body, auth::Side::Acceptor, &t, &proof));
        }
        Kind::Resume => {
            let _ = Resume::decode(body);
        }
        Kind::Refuse => {
            let _ = refusal(body);
        }
        Kind::CopyChunk => records(body),
        Kind::Stream => {
            if body.len() >= 8 {
                records(&body[8..]);
            }
        }
        Kind::CopyBegin | Kind::CopyEnd | Kind::Ping | Kind::Switch => {
            let mut rd = Reader::new(body);
            let _ = (rd.u8(), rd.u64(), rd.u64());
        }
    }
}

fn records(bytes: &[u8]) {
    let mut rd = Reader::new(bytes);
    loop {
        let start = rd.position();
        match rd.record_if_complete() {
            Ok(Some(record)) => {
                let end = rd.position();
                assert!(end > start && end <= bytes.len());
                assert_eq!(encode(&record), &bytes[start..end]);
            }
            Ok(None) => {
                assert_eq!(rd.position(), start, "an incomplete record is not consumed");
                break;
            }
            Err(_) => break,
        }
    }
}

fn encode(record: &Record<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    match *record {
        Record::Set {
            key,
            value,
            flags,
            exptime,
            version,
        } => wire::encode_set(&mut out, key, value, flags, exptime, version),
        Record::Delete { key, version } => wire::encode_delete(&mut out, key, version),
        Record::Flush { version } => wire::encode_flush(&mut out, version),
    }
    out
}

/// A config file's text, as `Config::load` takes it after reading the file: parsed,
/// validated, and an error pointed at its line. A config that loads also prints (as
/// `--check-config` does) as TOML that parses again.
pub fn config_load(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_text(text, Path::new("fuzz.toml"), &RunArgs::default()) {
        Ok(config) => {
            let shown = config.to_toml();
            if let Err(e) = Config::from_toml(&shown, Path::new("shown.toml")) {
                panic!("--check-config output does not parse: {e}\n{shown}");
            }
        }
        Err(e) => {
            if let Some((line, col)) = e.position {
                assert!(line >= 1 && col >= 1);
                assert!(line <= text.lines().count() + 1, "line {line} past the end");
            }
            let _ = e.to_string();
        }
    }
}

/// The routes the L7 target matches against when the request brings none: every kind of
/// host pattern, nested path prefixes and a default host.
const ROUTES: &[(Option<&str>, &str)] = &[
    (None, "/"),
    (None, "/api/"),
    (Some("example.com"), "/"),
    (Some("example.com"), "/static/"),
    (Some("*.example.com"), "/"),
    (Some("www.*"), "/app"),
];

/// Headers carrying routes for the table (`x-fuzz-route: HOST PATH`, `-` for the default
/// host), so route building is fuzzed with the request that is routed by it.
const ROUTE_HEADER: &str = "x-fuzz-route";

/// Hop-by-hop headers no forwarded message may keep.
const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// A request head as a client sends it, through what the L7 proxy does to every request:
/// the head parsed as hyper parses it (`httparse`), the Host picked, routed, the
/// persistence cookie taken out, the balancing key computed, headers rewritten both ways,
/// and the cookie set on the response.
pub fn l7_request(data: &[u8]) {
    let mut raw = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut raw);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return;
    };
    // What hyper would refuse with a 400 never reaches the proxy.
    let Some(uri) = req.path.and_then(|p| p.parse::<Uri>().ok()) else {
        return;
    };
    let mut map = HeaderMap::new();
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return;
        };
        map.append(name, value);
    }

    let (table, pools) = route_table(&map);
    let host = proxy::requested_host(&uri, &map);
    let matched = table.route(proxy::host_str(&host), uri.path());
    if let Some(m) = matched {
        assert!(m.pool < pools, "pool {} of {pools}", m.pool);
    }

    let sticky = cookie::take(&mut map, "SERVERID");
    let left = map
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .any(|pair| {
            pair.split_once('=')
                .is_some_and(|(k, _)| k.trim() == "SERVERID")
        });
    assert!(
        !(sticky.is_some() && left),
        "the persistence cookie reached the server"
    );

    for algorithm in [
        Algorithm::Uri,
        Algorithm::UrlParam,
        Algorithm::Hdr,
        Algorithm::Source,
    ] {
        for name in ["user", "x-user", "", "="] {
            let _ = key::request_key(algorithm, name, &uri, &map);
        }
    }
    let _ = uri.path_and_query().map(|p| Uri::from(p.clone()));

    let upgrade = headers::is_upgrade(&map);
    let mut response = map.clone();
    let client = headers::forwarded_for(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    headers::forward_request(&mut map, &client, host);
    assert_eq!(map.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(map["x-forwarded-for"], client);
    assert!(map.contains_key(header::VIA));
    no_hop_by_hop(&map, upgrade);

    headers::forward_response(&mut response, upgrade);
    cookie::insert(&mut response, "SERVERID", "app1");
    no_hop_by_hop(&response, upgrade);
    assert_eq!(response[header::CACHE_CONTROL], "private");
}

/// The table to route by, and how many pools its routes name.
fn route_table(map: &HeaderMap) -> (RouteTable, usize) {
    let given: Vec<Route> = map
        .get_all(ROUTE_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .enumerate()
        .map(|(pool, v)| {
            let (host, path) = v.split_once(' ').unwrap_or((v, "/"));
            Route {
                host: (host != "-").then(|| host.to_string()),
                path: path.to_string(),
                pool,
            }
        })
        .collect();
    if !given.is_empty() {
        if let Ok(table) = RouteTable::new(&given) {
            return (table, given.len());
        }
    }
    let fixed: Vec<Route> = ROUTES
        .iter()
        .enumerate()
        .map(|(pool, (host, path))| Route {
            host: host.map(str::to_string),
            path: path.to_string(),
            pool,
        })
        .collect();
    let table =
        RouteTable::new(&fixed).unwrap_or_else(|e| panic!("the fixed routes are valid: {e}"));
    (table, fixed.len())
}

fn no_hop_by_hop(map: &HeaderMap, upgrade: bool) {
    for name in HOP_BY_HOP {
        assert!(!map.contains_key(*name), "{name} was forwarded");
    }
    if upgrade {
        assert_eq!(map[header::CONNECTION], "upgrade");
    } else {
        assert!(!map.contains_key(header::CONNECTION));
        assert!(!map.contains_key(header::UPGRADE));
    }
}
