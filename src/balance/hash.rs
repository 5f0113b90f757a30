//! Stable hashes for the hashing schedulers. Stable means the same across processes, builds
//! and machines (unlike std's `RandomState`), so two balancers with the same config map a
//! client to the same server, and a restart does not reshuffle every client.

use std::net::IpAddr;

/// FNV-1a over `bytes`, then murmur3's finaliser so nearby inputs land far apart.
pub fn bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// A client address (and port, when the scheduler hashes it).
pub fn client(ip: IpAddr, port: Option<u16>) -> u64 {
    let mut buf = [0u8; 18];
    let len = match ip {
        IpAddr::V4(v4) => {
            buf[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            buf[..16].copy_from_slice(&v6.octets());
            16
        }
    };
    match port {
        Some(p) => {
            buf[len..len + 2].copy_from_slice(&p.to_be_bytes());
            bytes(0, &buf[..len + 2])
        }
        None => bytes(0, &buf[..len]),
    }
}

/// murmur3's 64-bit finaliser.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_fixed_values() {
        // Pinned so a change that would remap every client across an upgrade shows up here.
        assert_eq!(bytes(0, b"10.0.0.1:80"), 6834485282503893322);
        assert_eq!(
            client(IpAddr::from([192, 168, 1, 2]), Some(443)),
            9936673092839384339
        );
        assert_ne!(bytes(0, b"a"), bytes(1, b"a"));
        let v4 = client(IpAddr::from([10, 0, 0, 1]), None);
        assert_ne!(v4, client(IpAddr::from([10, 0, 0, 2]), None));
        assert_ne!(v4, client(IpAddr::from([10, 0, 0, 1]), Some(80)));
    }
}
