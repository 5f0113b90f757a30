//! The PROXY protocol header (HAProxy's `send-proxy` / `send-proxy-v2`): sent to the real
//! server before the client's first byte so it learns who the client is, since a userspace
//! proxy's connection comes from the proxy's own address.

use std::net::SocketAddr;

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\x00\r\nQUIT\n";

/// v1: `PROXY TCP4 client proxy client-port proxy-port\r\n`.
pub fn v1(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = same_family(client, local);
    let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        client.ip(),
        local.ip(),
        client.port(),
        local.port()
    )
    .into_bytes()
}

/// v2: the binary form (PROXY command, TCP over IPv4 or IPv6).
pub fn v2(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = same_family(client, local);
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY
    match (client, local) {
        (SocketAddr::V4(c), SocketAddr::V4(l)) => {
            out.push(0x11); // AF_INET, STREAM
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&c.ip().octets());
            out.extend_from_slice(&l.ip().octets());
        }
        (c, l) => {
            out.push(0x21); // AF_INET6, STREAM
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(c.ip()).octets());
            out.extend_from_slice(&v6(l.ip()).octets());
        }
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&local.port().to_be_bytes());
    out
}

fn v6(ip: std::net::IpAddr) -> std::net::Ipv6Addr {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    }
}

/// Both addresses in one family: an IPv4 client on a dual-stack listener arrives as a mapped
/// IPv6 address, which is shown as the IPv4 address it is when the other side is IPv4 too.
fn same_family(client: SocketAddr, local: SocketAddr) -> (SocketAddr, SocketAddr) {
    let unmap = |a: SocketAddr| match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        v4 => v4,
    };
    let (c, l) = (unmap(client), unmap(local));
    if c.is_ipv4() == l.is_ipv4() {
        (c, l)
    } else {
        let map = |a: SocketAddr| SocketAddr::new(v6(a.ip()).into(), a.port());
        (map(c), map(l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn v1_is_haproxys_text_line() {
        assert_eq!(
            v1(addr("192.168.0.1:56324"), addr("10.0.0.2:443")),
            b"PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\n"
        );
        assert_eq!(
            v1(addr("[2001:db8::1]:1000"), addr("[::1]:80")),
            b"PROXY TCP6 2001:db8::1 ::1 1000 80\r\n"
        );
        assert_eq!(
            v1(addr("[::ffff:10.1.2.3]:7"), addr("10.0.0.2:80")),
            b"PROXY TCP4 10.1.2.3 10.0.0.2 7 80\r\n"
        );
    }

    #[test]
    fn v2_is_the_binary_header() {
        let h = v2(addr("192.168.0.1:56324"), addr("10.0.0.2:443"));
        assert_eq!(&h[..12], &V2_SIGNATURE);
        assert_eq!(&h[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&h[16..20], &[192, 168, 0, 1]);
        assert_eq!(&h[20..24], &[10, 0, 0, 2]);
        assert_eq!(&h[24..], &[0xdc, 0x04, 0x01, 0xbb]);
        let h6 = v2(addr("[2001:db8::1]:1"), addr("10.0.0.2:2"));
        assert_eq!(&h6[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(h6.len(), 16 + 36);
    }
}
