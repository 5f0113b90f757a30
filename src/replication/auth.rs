//! The link handshake's authentication: each side sends a random challenge and proves it
//! knows the shared secret with an HMAC-SHA256 over both challenges and its own role in the
//! exchange, so the secret never crosses the wire and a recorded proof cannot be replayed.

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

/// The proof one side sends: HMAC(secret, label || my challenge || your challenge).
/// `label` differs for the dialing and the accepting side, so a proof cannot be reflected.
pub fn proof(secret: &[u8], label: &[u8], mine: &[u8; 16], theirs: &[u8; 16]) -> [u8; 32] {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(label);
    mac.update(mine);
    mac.update(theirs);
    mac.finalize().into_bytes().into()
}

/// Checks a peer's proof in constant time.
pub fn verify(
    secret: &[u8],
    label: &[u8],
    theirs: &[u8; 16],
    mine: &[u8; 16],
    proof: &[u8],
) -> bool {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(label);
    mac.update(theirs);
    mac.update(mine);
    mac.verify_slice(proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_verifies_only_with_the_same_secret_label_and_challenges() {
        let a = [1u8; 16];
        let b = [2u8; 16];
        let p = proof(b"s3cret", b"dialer", &a, &b);
        assert!(verify(b"s3cret", b"dialer", &a, &b, &p));
        assert!(!verify(b"other", b"dialer", &a, &b, &p));
        assert!(!verify(b"s3cret", b"acceptor", &a, &b, &p));
        assert!(!verify(b"s3cret", b"dialer", &b, &a, &p));
    }

    #[test]
    fn random_values_differ() {
        assert_ne!(random_u64(), random_u64());
    }
}
