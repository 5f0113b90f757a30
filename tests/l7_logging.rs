//! The L7 balancer's access log and request ids, through real sockets: what a request leaves
//! in the log file, and the id that follows it to the server and back.

mod support;

use std::path::{Path, PathBuf};

use support::http::get;
use support::l7::{Balancer, servers};
use support::{scratch, wait_until};

fn balancer(dir: &Path, format: &str, backend: &support::http::HttpServer) -> Balancer {
    Balancer::from_toml(&format!(
        r#"
[l7]
threads = 2
[l7.listeners.main]
listen = "127.0.0.1:0"
request_id_header = "X-Request-Id"
access_log = {{ dir = "{}", file = "access.log", format = "{format}", rotation = "never" }}
routes = [{{ host = "shop.test", path = "/", pool = "web" }}]
[l7.pools.web]
servers = [{{ name = "a", address = "{}" }}]
"#,
        dir.display(),
        backend.addr
    ))
}

/// The log's lines once one contains `needle`.
fn line_with(path: &Path, needle: &str) -> String {
    let mut found = String::new();
    wait_until(&format!("a log line with {needle}"), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        match text.lines().find(|l| l.contains(needle)) {
            Some(l) => {
                found = l.to_string();
                true
            }
            None => false,
        }
    });
    found
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = scratch(name);
    let _ = std::fs::remove_file(dir.join("access.log"));
    dir
}

#[test]
fn each_request_gets_an_id_the_server_and_client_see_and_a_json_log_line() {
    let s = servers(&["a"]);
    let dir = fresh_dir("l7-json-log");
    let b = balancer(&dir, "json", &s[0]);
    let r = get(
        b.addr(),
        "shop.test",
        "/bytes/1234?x=1",
        &["User-Agent: probe/1.0"],
    )
    .expect("reply");
    assert_eq!(r.status, 200);
    let id = r
        .header("x-request-id")
        .expect("an id comes back")
        .to_string();
    assert_eq!(id.len(), 32, "{id}");
    let seen = s[0].seen();
    assert_eq!(
        seen[0].header("x-request-id"),
        Some(id.as_str()),
        "the server saw it"
    );
    let line = line_with(&dir.join("access.log"), &id);
    for field in [
        "\"listener\":\"main\"",
        "\"client\":\"127.0.0.1\"",
        "\"method\":\"GET\"",
        "\"uri\":\"/bytes/1234?x=1\"",
        "\"host\":\"shop.test\"",
        "\"user_agent\":\"probe/1.0\"",
        "\"pool\":\"web\"",
        "\"server\":\"a\"",
        "\"status\":200",
        "\"bytes\":1234",
        "\"cut_short\":false",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    // An id the client brings is kept end to end.
    let r = get(b.addr(), "shop.test", "/", &["X-Request-Id: trace-77"]).expect("reply");
    assert_eq!(r.header("x-request-id"), Some("trace-77"));
    assert_eq!(s[0].seen()[1].header("x-request-id"), Some("trace-77"));
    line_with(&dir.join("access.log"), "\"request_id\":\"trace-77\"");
}

#[test]
fn the_combined_format_logs_the_proxys_own_answers_too() {
    let s = servers(&["a"]);
    let dir = fresh_dir("l7-combined-log");
    let b = balancer(&dir, "combined", &s[0]);
    let r = get(
        b.addr(),
        "elsewhere.test",
        "/nothing-here",
        &["Referer: http://r.test/"],
    )
    .expect("reply");
    assert_eq!(r.status, 404);
    let line = line_with(&dir.join("access.log"), "/nothing-here");
    let expected_tail = format!(
        "\"GET /nothing-here HTTP/1.1\" 404 {} \"http://r.test/\" \"-\"",
        r.body.len()
    );
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.ends_with(&expected_tail),
        "{line}\nends with {expected_tail}"
    );
}
