//! The link handshake's authentication: each side sends a random challenge and proves it
//! knows the shared secret with an HMAC-SHA256 over both challenges and its own role in the
//! exchange, so the secret never crosses the wire and a recorded proof cannot be replayed.
//! The node ids are part of what is proved, so a node's proof cannot be reflected back to it
//! on a second connection either (see [`Transcript`]).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Random bytes from the kernel; falls back to the clock and pid (only if /dev/urandom is
/// unreadable, which leaves ids unique enough but challenges weak, and is logged by callers).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        if std::io::Read::read_exact(&mut f, &mut out).is_ok() {
            return out;
        }
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        ^ u128::from(std::process::id()) << 64;
    for (i, b) in out.iter_mut().enumerate() {
        *b = (seed >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(31);
    }
    out
}

pub fn random_u64() -> u64 {
    u64::from_le_bytes(random_bytes::<8>())
}

/// Which end of the connection a node is: the one that dialed, or the one that accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Dialer,
    Acceptor,
}

impl Side {
    fn label(self) -> &'static [u8] {
        match self {
            Side::Dialer => b"dialer",
            Side::Acceptor => b"acceptor",
        }
    }
}

/// One handshake as both ends see it: each node's id and challenge, by its side. Both
/// nodes build the same transcript, so a proof covers who is talking to whom as well as
/// the two fresh challenges.
///
/// The ids are what stops a reflection: a node that dials an impostor (one standing where
/// its peer should be) while the impostor dials it back could otherwise be made to compute,
/// as the dialer of one connection, the very proof it expects from the dialer of the other
/// (the impostor sends each connection the other's challenge). With the ids in the
/// transcript that proof would have to name this node as the dialer of the connection it
/// accepted, and a peer claiming this node's own id is refused before any proof is checked.
#[derive(Debug, Clone, Copy)]
pub struct Transcript {
    pub dialer_id: u32,
    pub dialer_nonce: [u8; 16],
    pub acceptor_id: u32,
    pub acceptor_nonce: [u8; 16],
}

fn mac(secret: &[u8], side: Side, t: &Transcript) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(side.label());
    mac.update(&t.dialer_id.to_le_bytes());
    mac.update(&t.dialer_nonce);
    mac.update(&t.acceptor_id.to_le_bytes());
    mac.update(&t.acceptor_nonce);
    mac
}

/// The proof the node on `side` sends: HMAC(secret, side || transcript). The side label
/// keeps one end's proof from being echoed back as the other's on the same connection.
pub fn proof(secret: &[u8], side: Side, t: &Transcript) -> [u8; 32] {
    mac(secret, side, t).finalize().into_bytes().into()
}

/// Checks the proof of the node on `side` in constant time.
pub fn verify(secret: &[u8], side: Side, t: &Transcript, proof: &[u8]) -> bool {
    mac(secret, side, t).verify_slice(proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript() -> Transcript {
        Transcript {
            dialer_id: 1,
            dialer_nonce: [1u8; 16],
            acceptor_id: 2,
            acceptor_nonce: [2u8; 16],
        }
    }

    #[test]
    fn a_proof_verifies_only_with_the_same_secret_side_and_transcript() {
        let t = transcript();
        let p = proof(b"s3cret", Side::Dialer, &t);
        assert!(verify(b"s3cret", Side::Dialer, &t, &p));
        assert!(!verify(b"other", Side::Dialer, &t, &p));
        assert!(!verify(b"s3cret", Side::Acceptor, &t, &p));
        let swapped = Transcript {
            dialer_nonce: t.acceptor_nonce,
            acceptor_nonce: t.dialer_nonce,
            ..t
        };
        assert!(!verify(b"s3cret", Side::Dialer, &swapped, &p));
        let other_ids = Transcript {
            dialer_id: 2,
            acceptor_id: 1,
            ..t
        };
        assert!(!verify(b"s3cret", Side::Dialer, &other_ids, &p));
    }

    #[test]
    fn random_values_differ() {
        assert_ne!(random_u64(), random_u64());
    }
}
