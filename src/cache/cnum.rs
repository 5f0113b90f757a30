//! Number parsing exactly as memcached does it (C `strtol`/`strtoul` wrapped in its
//! `safe_strto*` helpers), because clients depend on which odd inputs are accepted: a leading
//! `+`, `-0`, values that wrap into 32 bits, trailing whitespace inside a token.

/// What C's `strtoull`/`strtoll` saw in a token.
struct Scan {
    /// Magnitude of the digits read (saturated on overflow).
    magnitude: u64,
    negative: bool,
    /// The digits did not fit in 64 bits.
    overflow: bool,
    /// Index just past the last digit, or 0 when there were no digits (C sets `endptr = str`).
    end: usize,
}

fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn scan(tok: &[u8]) -> Scan {
    let mut i = 0;
    while i < tok.len() && is_c_space(tok[i]) {
        i += 1;
    }
    let mut negative = false;
    if i < tok.len() && (tok[i] == b'+' || tok[i] == b'-') {
        negative = tok[i] == b'-';
        i += 1;
    }
    let digits_start = i;
    let mut magnitude: u64 = 0;
    let mut overflow = false;
    while i < tok.len() && tok[i].is_ascii_digit() {
        let d = u64::from(tok[i] - b'0');
        match magnitude.checked_mul(10).and_then(|m| m.checked_add(d)) {
            Some(m) => magnitude = m,
            None => overflow = true,
        }
        i += 1;
    }
    let end = if i == digits_start { 0 } else { i };
    Scan {
        magnitude,
        negative,
        overflow,
        end,
    }
}

/// memcached accepts a number only if it is followed by the end of the string (C's NUL) or
/// whitespace.
fn ends_cleanly(tok: &[u8], end: usize) -> bool {
    end != 0 && (end == tok.len() || tok[end] == 0 || is_c_space(tok[end]))
}

/// `safe_strtoull`: unsigned 64-bit; rejects overflow and negative numbers (except `-0`, and
/// negatives small enough to look positive after C's unsigned negation, as memcached does).
pub fn strtoull(tok: &[u8]) -> Option<u64> {
    let s = scan(tok);
    if s.overflow || !ends_cleanly(tok, s.end) {
        return None;
    }
    let value = if s.negative {
        s.magnitude.wrapping_neg()
    } else {
        s.magnitude
    };
    if (value as i64) < 0 && s.negative {
        return None;
    }
    Some(value)
}

/// `safe_strtoul` into a `uint32_t`: parsed as a 64-bit unsigned long, then truncated.
pub fn strtoul32(tok: &[u8]) -> Option<u32> {
    strtoull(tok).map(|v| v as u32)
}

/// `safe_strtol` into an `int32_t`: parsed as a 64-bit long (overflow rejected), then truncated.
pub fn strtol32(tok: &[u8]) -> Option<i32> {
    let s = scan(tok);
    if !ends_cleanly(tok, s.end) {
        return None;
    }
    let limit = if s.negative {
        1u64 << 63
    } else {
        (1u64 << 63) - 1
    };
    if s.overflow || s.magnitude > limit {
        return None;
    }
    let value = if s.negative {
        (s.magnitude as i64).wrapping_neg()
    } else {
        s.magnitude as i64
    };
    Some(value as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_like_memcached() {
        let table: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"42", Some(42)),
            (b"+7", Some(7)),
            (b"-0", Some(0)),
            (b"-1", None),
            (b"18446744073709551615", Some(u64::MAX)),
            (b"18446744073709551616", None),
            (b"", None),
            (b"abc", None),
            (b"12abc", None),
            (b"12\t", Some(12)),
            (b"9223372036854775808", Some(1 << 63)),
        ];
        for (input, want) in table {
            assert_eq!(
                strtoull(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn thirty_two_bit_values_wrap_like_c() {
        assert_eq!(strtoul32(b"4294967296"), Some(0));
        assert_eq!(strtoul32(b"4294967295"), Some(u32::MAX));
        assert_eq!(strtol32(b"4294967295"), Some(-1));
        assert_eq!(strtol32(b"-5"), Some(-5));
        assert_eq!(strtol32(b"9223372036854775808"), None);
        assert_eq!(strtol32(b"-9223372036854775808"), Some(0));
        assert_eq!(strtol32(b"x"), None);
    }
}
