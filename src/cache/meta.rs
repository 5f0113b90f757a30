//! The meta protocol's flag tokens (`mg ms md ma`): the validation pass memcached calls
//! "preparse" (duplicates, unknown flags, numeric arguments) and the base64 key codec used by
//! the `b` flag. Pure; the executor walks the tokens again in order to build replies.

use super::cnum::{strtol32, strtoul32, strtoull};

/// At most this many tokens (command, key and flags, plus the terminator) on a meta line.
pub const MAX_OPT_TOKENS: usize = 20;
/// Longest opaque (`O`) token echoed back.
pub const MAX_OPAQUE_LENGTH: usize = 32;

/// Everything the flags of one meta command asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MetaFlags {
    pub no_update: bool,
    pub vivify: bool,
    pub value: bool,
    pub set_stale: bool,
    pub no_reply: bool,
    pub has_cas: bool,
    pub new_ttl: bool,
    pub key_binary: bool,
    /// Single-character mode switch (`M`) for ms and ma.
    pub mode: Option<u8>,
    /// `T`: new TTL as the client sent it (converted to absolute time by the executor).
    pub exptime: i32,
    /// `N`: TTL for an item auto-created on miss.
    pub autoviv_exptime: i32,
    /// `R`: recache threshold.
    pub recache_time: Option<i32>,
    pub client_flags: u32,
    pub req_cas_id: u64,
    pub delta: u64,
    pub initial: u64,
    /// The key decoded from base64 when `b` was given.
    pub decoded_key: Option<Vec<u8>>,
}

/// Why a meta command's flags were refused; the text is memcached's.
pub type MetaError = &'static str;

pub const BAD_FORMAT: MetaError = "CLIENT_ERROR bad command line format";

/// Validates flag tokens and collects their arguments, as memcached's `_meta_flag_preparse`,
/// decoding `key` when `b` asks for it. Returns the flags, or the error text. Like memcached,
/// argument errors keep scanning (the last message wins) while a duplicate or unknown flag
/// stops at once.
pub fn preparse(flag_tokens: &[&[u8]], key: &[u8]) -> Result<MetaFlags, MetaError> {
    let mut of = MetaFlags::default();
    let mut seen = [false; 127];
    let mut error: Option<MetaError> = None;
    for tok in flag_tokens {
        let o = tok[0];
        if o >= 127 || seen[o as usize] {
            return Err("CLIENT_ERROR duplicate flag");
        }
        seen[o as usize] = true;
        let arg = &tok[1..];
        match o {
            b'b' => {
                of.key_binary = true;
                match base64_decode(key) {
                    Some(k) => of.decoded_key = Some(k),
                    None => error = Some("CLIENT_ERROR error decoding key"),
                }
            }
            b'N' => {
                of.vivify = true;
                match strtol32(arg) {
                    Some(v) => of.autoviv_exptime = v,
                    None => error = Some("CLIENT_ERROR bad token in command line format"),
                }
            }
            b'T' => match strtol32(arg) {
                Some(v) => {
                    of.exptime = v;
                    of.new_ttl = true;
                }
                None => error = Some("CLIENT_ERROR bad token in command line format"),
            },
            b'R' => match strtol32(arg) {
                Some(v) => of.recache_time = Some(v),
                None => error = Some("CLIENT_ERROR bad token in command line format"),
            },
            b'l' | b'O' | b'P' | b'L' | b'k' | b's' | b't' | b'c' | b'f' | b'h' => {}
            b'v' => of.value = true,
            b'u' => of.no_update = true,
            b'q' => of.no_reply = true,
            b'F' => match strtoul32(arg) {
                Some(v) => of.client_flags = v,
                None => error = Some(error.unwrap_or(BAD_FORMAT)),
            },
            b'C' => match strtoull(arg) {
                Some(v) => {
                    of.req_cas_id = v;
                    of.has_cas = true;
                }
                None => error = Some("CLIENT_ERROR bad token in command line format"),
            },
            b'M' => {
                if tok.len() != 2 {
                    error = Some("CLIENT_ERROR incorrect length for M token");
                } else {
                    of.mode = Some(tok[1]);
                }
            }
            b'J' => match strtoull(arg) {
                Some(v) => of.initial = v,
                None => error = Some("CLIENT_ERROR invalid numeric initial value"),
            },
            b'D' => match strtoull(arg) {
                Some(v) => of.delta = v,
                None => error = Some("CLIENT_ERROR invalid numeric delta value"),
            },
            b'I' => of.set_stale = true,
            _ => return Err("CLIENT_ERROR invalid flag"),
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(of),
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_value(c: u8) -> Option<u32> {
    B64.iter().position(|&x| x == c).map(|p| p as u32)
}

/// Decodes a base64 key (standard alphabet, padded). `None` if it is not valid base64.
pub fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    if input.is_empty() || input.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    for (i, chunk) in input.chunks(4).enumerate() {
        let last = i == input.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n: u32 = 0;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | b64_value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// Encodes a binary key for echoing it back (`k` flag on a `b` key).
pub fn base64_encode(input: &[u8], out: &mut Vec<u8>) {
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for input in [&b"a"[..], b"ab", b"abc", b"abcd", b"\x00\xff\x10key"] {
            let mut enc = Vec::new();
            base64_encode(input, &mut enc);
            assert_eq!(base64_decode(&enc).as_deref(), Some(input));
        }
        assert_eq!(base64_decode(b"Zm9v"), Some(b"foo".to_vec()));
        assert_eq!(base64_decode(b"Zm9"), None);
        assert_eq!(base64_decode(b"Z!9v"), None);
        assert_eq!(base64_decode(b"Zg==Zg=="), None);
    }

    #[test]
    fn preparse_rejects_duplicates_and_unknown_flags() {
        assert_eq!(
            preparse(&[b"v", b"v"], b"k"),
            Err("CLIENT_ERROR duplicate flag")
        );
        assert_eq!(preparse(&[b"Z"], b"k"), Err("CLIENT_ERROR invalid flag"));
        assert_eq!(
            preparse(&[b"Tabc"], b"k"),
            Err("CLIENT_ERROR bad token in command line format")
        );
        assert_eq!(
            preparse(&[b"MSS"], b"k"),
            Err("CLIENT_ERROR incorrect length for M token")
        );
        // The last argument error wins; a bad F sets no message of its own.
        assert_eq!(
            preparse(&[b"MES", b"b"], b"abc"),
            Err("CLIENT_ERROR error decoding key")
        );
        assert_eq!(
            preparse(&[b"b", b"F"], b"!!!!"),
            Err("CLIENT_ERROR error decoding key")
        );
        assert_eq!(preparse(&[b"Fx"], b"k"), Err(BAD_FORMAT));
        let f = preparse(&[b"b", b"v"], b"Zm9v").expect("valid");
        assert_eq!(f.decoded_key.as_deref(), Some(&b"foo"[..]));
        let f = preparse(&[b"v", b"T30", b"C7", b"F5", b"q", b"MA"], b"k").expect("valid");
        assert!(f.value && f.new_ttl && f.has_cas && f.no_reply);
        assert_eq!((f.exptime, f.req_cas_id, f.client_flags), (30, 7, 5));
        assert_eq!(f.mode, Some(b'A'));
    }
}
