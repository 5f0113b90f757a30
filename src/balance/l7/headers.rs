//! Header rewriting between client and server. Hop-by-hop headers (RFC 9110 §7.6.1: the
//! fixed list plus whatever `Connection` names) belong to one connection and are removed in
//! both directions; an `Upgrade` handshake keeps its two. Requests get `X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host` and `Via`; values a client sent for the
//! `X-Forwarded-*` headers are replaced, not trusted, since this balancer is where clients
//! arrive. Pure: header maps in, header maps out.

use std::net::IpAddr;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers every message loses. Names, not strings: a lookup by string would
/// parse the name again for every message.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

const VIA: &str = "1.1 opsconsole";

/// `Connection: upgrade` with an `Upgrade` header: the client asks to switch protocols
/// (WebSocket), and the two headers must reach the server.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_lists(headers, "upgrade")
}

fn connection_lists(headers: &HeaderMap, token: &str) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(token))
}

/// The comma-separated options of every `Connection` header.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Removes hop-by-hop headers; with `upgrade`, leaves `Connection: upgrade` and `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // `keep-alive` (the usual option) is on the fixed list and `upgrade` is decided below,
    // so only other options need their names parsed.
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("upgrade"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    // One look at each name finds what to remove; a message usually carries one of them
    // (`Connection`) or none, so this beats a removal attempt for every listed name.
    let hop = |name: &HeaderName| {
        HOP_BY_HOP.iter().any(|h| h == name) || (!upgrade && name == header::UPGRADE)
    };
    while let Some(name) = headers.keys().find(|n| hop(n)).cloned() {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// A request on its way to a server: hop-by-hop headers out, forwarding headers in.
/// `client` is the client's address as `X-Forwarded-For` carries it (see
/// [`forwarded_for`]); `host` is the Host the client asked for (the request line's
/// authority or header).
pub fn forward_request(headers: &mut HeaderMap, client: &HeaderValue, host: Option<HeaderValue>) {
    let upgrade = is_upgrade(headers);
    strip_hop_by_hop(headers, upgrade);
    headers.insert(X_FORWARDED_FOR, client.clone());
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    match host {
        Some(v) => {
            headers.insert(X_FORWARDED_HOST, v);
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
    add_via(headers);
}

/// Whether a Host value is `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a
/// registered name or IPv4 address from the URI's own characters, or a bracketed IPv6
/// literal. RFC 9112 §3.2 asks for a 400 otherwise; it also keeps bytes no URI may carry
/// (spaces, quotes, angle brackets, controls, non-ASCII) out of `X-Forwarded-Host`, the
/// access log and host routing.
pub fn valid_host(v: &[u8]) -> bool {
    let (host, port) = if v.first() == Some(&b'[') {
        let Some(end) = v.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &v[1..end];
        let ok = !literal.is_empty()
            && literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !ok {
            return false;
        }
        (&v[..=end], &v[end + 1..])
    } else {
        match v.iter().rposition(|&b| b == b':') {
            Some(at) => (&v[..at], &v[at..]),
            None => (v, &v[v.len()..]),
        }
    };
    let reg_name = |b: u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b);
    let host_ok =
        host.first() == Some(&b'[') || (!host.is_empty() && host.iter().all(|&b| reg_name(b)));
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    host_ok && port_ok
}

/// A client address as `X-Forwarded-For` writes it (a v4-mapped v6 address as v4), made
/// once per client connection rather than per request.
pub fn forwarded_for(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_canonical().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// A response on its way to the client.
pub fn forward_response(headers: &mut HeaderMap, upgrade: bool) {
    strip_hop_by_hop(headers, upgrade);
    add_via(headers);
}

fn add_via(headers: &mut HeaderMap) {
    let via = match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(earlier) => HeaderValue::from_str(&format!("{earlier}, {VIA}")).ok(),
        None => Some(HeaderValue::from_static(VIA)),
    };
    if let Some(v) = via {
        headers.insert(header::VIA, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic abc"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn an_upgrade_keeps_its_two_headers() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("keep-alive", "1"),
        ]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(get(&h, "connection"), Some("upgrade"));
        assert_eq!(get(&h, "upgrade"), Some("websocket"));
        assert!(h.get("keep-alive").is_none());
        assert!(
            !is_upgrade(&map(&[("upgrade", "websocket")])),
            "needs Connection: upgrade"
        );
    }

    #[test]
    fn host_values_are_checked_against_the_uri_grammar() {
        for ok in [
            "example.com",
            "example.com:8080",
            "EXAMPLE.com:",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::1]",
            "a-b_c~d%41.example",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            &b""[..],
            b":80",
            b"a b.example",
            b"a\0b",
            b"a\x7fb",
            b"caf\xe9.example",
            b"\"<x>\"",
            b"a.example:80x",
            b"a.example:123456",
            b"[::1",
            b"[]",
            b"[::g]",
            b"[::1]x",
            b"a/b",
            b"user@host",
        ] {
            assert!(!valid_host(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn forwarding_headers_replace_what_the_client_claimed() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("host", "www.example.com"),
        ]);
        forward_request(
            &mut h,
            &forwarded_for("10.1.2.3".parse().expect("ip")),
            Some(HeaderValue::from_static("www.example.com")),
        );
        assert_eq!(get(&h, "x-forwarded-for"), Some("10.1.2.3"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("www.example.com"));
        assert_eq!(get(&h, "via"), Some("1.1 opsconsole"));
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn a_v4_mapped_client_is_written_as_v4_and_via_is_appended() {
        let mut h = map(&[("via", "1.0 fred")]);
        forward_request(
            &mut h,
            &forwarded_for("::ffff:10.0.0.1".parse().expect("ip")),
            None,
        );
        assert_eq!(get(&h, "x-forwarded-for"), Some("10.0.0.1"));
        assert_eq!(get(&h, "via"), Some("1.0 fred, 1.1 opsconsole"));
        assert!(h.get("x-forwarded-host").is_none());
        let mut r = map(&[("connection", "close"), ("content-length", "3")]);
        forward_response(&mut r, false);
        assert!(r.get("connection").is_none());
        assert_eq!(get(&r, "content-length"), Some("3"));
    }
}
