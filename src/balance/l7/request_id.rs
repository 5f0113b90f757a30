//! Request ids: one value per request in a configured header, sent to the server and back to
//! the client, and written in the access log, so one request can be followed through every
//! log it touches. An id the client (or a proxy in front) already sent is kept; otherwise one
//! is made up: 32 hex digits, as nginx's `$request_id`.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

/// Longest id taken from a client; a longer one is replaced.
const MAX_LEN: usize = 128;

/// The request's id under `name`, made up and set when it has none (or an unusable one).
pub fn ensure(headers: &mut HeaderMap, name: &HeaderName) -> HeaderValue {
    if let Some(v) = headers.get(name)
        && (1..=MAX_LEN).contains(&v.len())
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return v.clone();
    }
    let id = fresh();
    headers.insert(name.clone(), id.clone());
    id
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

/// Different on every thread and every start: the clock, the thread and a stack address.
fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let here = &nanos as *const u64 as u64;
    let thread =
        crate::balance::hash::bytes(9, format!("{:?}", std::thread::current().id()).as_bytes());
    nanos ^ here.rotate_left(32) ^ thread
}

/// splitmix64: each call a new, well-mixed 64-bit value.
fn next() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

fn fresh() -> HeaderValue {
    let text = format!("{:016x}{:016x}", next(), next());
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_made_up_once_and_a_client_id_is_kept() {
        let name = HeaderName::from_static("x-request-id");
        let mut h = HeaderMap::new();
        let id = ensure(&mut h, &name);
        assert_eq!(id.len(), 32);
        assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_eq!(h.get(&name), Some(&id));
        assert_eq!(ensure(&mut h, &name), id, "an id already there stays");
        let mut other = HeaderMap::new();
        assert_ne!(ensure(&mut other, &name), id, "each request its own");
    }

    #[test]
    fn an_unusable_client_id_is_replaced() {
        let name = HeaderName::from_static("x-request-id");
        let mut h = HeaderMap::new();
        h.insert(
            &name,
            HeaderValue::from_str(&"a".repeat(500)).expect("value"),
        );
        assert_eq!(ensure(&mut h, &name).len(), 32);
        h.insert(&name, HeaderValue::from_static("has space"));
        assert_eq!(ensure(&mut h, &name).len(), 32);
    }
}
