//! What a hashing pool hashes for a request: the URI, one query parameter or one header
//! (HAProxy's `balance uri`, `url_param`, `hdr`). `None` leaves the scheduler to hash the
//! client address, which is also what `source` does, and where a request without the
//! parameter or header goes: the same client still lands on the same server.

use hyper::header::HeaderMap;
use hyper::http::uri::Uri;

use crate::balance::hash;
use crate::config::l7::Algorithm;

pub fn request_key(
    algorithm: Algorithm,
    hash_key: &str,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<u64> {
    let text: &[u8] = match algorithm {
        Algorithm::Uri => uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes(),
        Algorithm::UrlParam => query_param(uri.query()?, hash_key)?.as_bytes(),
        Algorithm::Hdr => headers.get(hash_key)?.as_bytes(),
        _ => return None,
    };
    Some(hash::bytes(0, text))
}

/// The first value of `name` in a query string, as sent (not percent-decoded).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn key(algorithm: Algorithm, name: &str, uri: &str, header: Option<&str>) -> Option<u64> {
        let mut headers = HeaderMap::new();
        if let Some(v) = header {
            headers.insert("x-user", HeaderValue::from_str(v).expect("value"));
        }
        request_key(algorithm, name, &uri.parse().expect("uri"), &headers)
    }

    #[test]
    fn uri_hashes_path_and_query() {
        let a = key(Algorithm::Uri, "", "/a?x=1", None);
        assert_eq!(a, key(Algorithm::Uri, "", "http://h/a?x=1", None));
        assert_ne!(a, key(Algorithm::Uri, "", "/a?x=2", None));
    }

    #[test]
    fn url_param_hashes_the_parameter_and_nothing_else() {
        let a = key(Algorithm::UrlParam, "user", "/p?a=1&user=ann&b=2", None);
        assert_eq!(a, key(Algorithm::UrlParam, "user", "/q?user=ann", None));
        assert_ne!(a, key(Algorithm::UrlParam, "user", "/q?user=bob", None));
        assert_eq!(
            key(Algorithm::UrlParam, "user", "/q?username=ann", None),
            None
        );
        assert_eq!(key(Algorithm::UrlParam, "user", "/q", None), None);
    }

    #[test]
    fn hdr_hashes_the_header_and_source_hashes_nothing_here() {
        let a = key(Algorithm::Hdr, "x-user", "/", Some("ann"));
        assert!(a.is_some());
        assert_eq!(a, key(Algorithm::Hdr, "x-user", "/other", Some("ann")));
        assert_eq!(key(Algorithm::Hdr, "x-user", "/", None), None);
        assert_eq!(key(Algorithm::Source, "", "/", Some("ann")), None);
        assert_eq!(key(Algorithm::Roundrobin, "", "/", None), None);
    }
}
