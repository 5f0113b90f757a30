//! Cookie persistence as HAProxy's `cookie NAME insert indirect nocache`: the balancer sets
//! a cookie naming the server a client was sent to; a request carrying it goes back to that
//! server while it can take persistent clients; the cookie is removed from requests
//! (indirect), so servers never see it, and responses that set it are marked private
//! (nocache), so a shared cache does not hand one client's server to everyone. Pure.

use hyper::header::{self, HeaderMap, HeaderValue};

/// Takes the persistence cookie out of the request's `Cookie` headers and returns its
/// value. Other cookies stay as they were; a header left empty goes.
pub fn take(headers: &mut HeaderMap, name: &str) -> Option<String> {
    if !headers.contains_key(header::COOKIE) {
        return None;
    }
    let mut found = None;
    let mut kept: Vec<HeaderValue> = Vec::new();
    let mut changed = false;
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else {
            kept.push(value.clone());
            continue;
        };
        let mut others: Vec<&str> = Vec::new();
        for pair in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((k, v)) if k.trim() == name => {
                    found.get_or_insert_with(|| v.trim().trim_matches('"').to_string());
                    changed = true;
                }
                _ => others.push(pair),
            }
        }
        if others.is_empty() {
            continue;
        }
        match HeaderValue::from_str(&others.join("; ")) {
            Ok(v) => kept.push(v),
            Err(_) => kept.push(value.clone()),
        }
    }
    if changed {
        headers.remove(header::COOKIE);
        for v in kept {
            headers.append(header::COOKIE, v);
        }
    }
    found
}

/// Adds the cookie that pins the client to `server`, and marks the response private.
pub fn insert(headers: &mut HeaderMap, name: &str, server: &str) {
    if let Ok(v) = HeaderValue::from_str(&format!("{name}={server}; path=/")) {
        headers.append(header::SET_COOKIE, v);
    }
    // nocache: a response that sets a persistence cookie must not be cached for others.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookies(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn cookie_values(h: &HeaderMap) -> Vec<&str> {
        h.get_all(header::COOKIE)
            .iter()
            .map(|v| v.to_str().expect("text"))
            .collect()
    }

    #[test]
    fn the_persistence_cookie_is_read_and_stripped_leaving_the_others() {
        let mut h = cookies(&["a=1; SERVERID=app2; b=2"]);
        assert_eq!(take(&mut h, "SERVERID").as_deref(), Some("app2"));
        assert_eq!(cookie_values(&h), ["a=1; b=2"]);

        let mut h = cookies(&["SERVERID=app1", "theme=dark"]);
        assert_eq!(take(&mut h, "SERVERID").as_deref(), Some("app1"));
        assert_eq!(cookie_values(&h), ["theme=dark"]);

        let mut h = cookies(&["SERVERID=\"app3\""]);
        assert_eq!(take(&mut h, "SERVERID").as_deref(), Some("app3"));
        assert!(h.get(header::COOKIE).is_none(), "an emptied header goes");
    }

    #[test]
    fn requests_without_it_are_left_alone() {
        let mut h = cookies(&["SERVERIDX=app1; XSERVERID=app2"]);
        assert_eq!(take(&mut h, "SERVERID"), None);
        assert_eq!(cookie_values(&h), ["SERVERIDX=app1; XSERVERID=app2"]);
        let mut h = HeaderMap::new();
        assert_eq!(take(&mut h, "SERVERID"), None);
    }

    #[test]
    fn inserting_sets_the_cookie_and_marks_the_response_private() {
        let mut h = HeaderMap::new();
        h.append(header::SET_COOKIE, HeaderValue::from_static("session=x"));
        insert(&mut h, "SERVERID", "app1");
        let set: Vec<&str> = h
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("text"))
            .collect();
        assert_eq!(set, ["session=x", "SERVERID=app1; path=/"]);
        assert_eq!(h[header::CACHE_CONTROL], "private");
    }
}
