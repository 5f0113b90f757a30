//! The admin API of a real headless `opsconsole` process: tokens, the snapshot, commands and
//! readiness, over plain HTTP/1.1 on loopback.

mod support;

use std::net::SocketAddr;

use support::http::{HttpConn, HttpServer, Reply, get};
use support::{Process, addr_after, scratch};

const TOKEN: &str = "test-token-0123456789";

struct Admin {
    _process: Process,
    addr: SocketAddr,
    /// The balancer's listener.
    proxy: SocketAddr,
}

impl Admin {
    /// A headless L7 node over `backend`, with the admin API on a free port.
    fn start(name: &str, backend: &HttpServer) -> Admin {
        Admin::with_pool(name, backend, "")
    }

    /// The same, with `pool` (TOML lines) added to the pool's section.
    fn with_pool(name: &str, backend: &HttpServer, pool: &str) -> Admin {
        let dir = scratch(name);
        let config = dir.join("node.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[log]
dir = "{}"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"
[l7]
threads = 1
[l7.listeners.main]
listen = "127.0.0.1:0"
routes = [{{ path = "/", pool = "web" }}]
[l7.pools.web]
servers = [{{ name = "a", address = "{}" }}]
{pool}
"#,
                dir.display(),
                backend.addr
            ),
        )
        .expect("write config");
        let process = Process::spawn(&[
            "--role".as_ref(),
            "l7".as_ref(),
            "--headless".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ]);
        // The balancer logs its listener before the admin API starts.
        let proxy = addr_after(&process.wait_for("l7 listener main on "), " on ");
        let addr = addr_after(&process.wait_for("admin API listening on"), "listening on ");
        Admin {
            _process: process,
            addr,
            proxy,
        }
    }

    fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let auth = token.map(|t| format!("Authorization: Bearer {t}"));
        let extra: Vec<&str> = auth.iter().map(String::as_str).collect();
        get(self.addr, "admin", path, &extra).expect("a reply")
    }

    fn post(&self, path: &str, token: Option<&str>, body: &str) -> Reply {
        let auth = token.map(|t| format!("Authorization: Bearer {t}"));
        let mut extra: Vec<&str> = auth.iter().map(String::as_str).collect();
        extra.push("Content-Type: application/json");
        HttpConn::open(self.addr)
            .expect("connect")
            .send_with("POST", "admin", path, &extra, body.as_bytes())
            .expect("a reply")
    }

    fn snapshot(&self) -> serde_json::Value {
        let r = self.get("/api/v1/snapshot", Some(TOKEN));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        serde_json::from_slice(&r.body).expect("the snapshot is JSON")
    }

    fn admin_state(&self) -> String {
        self.snapshot()["l7"]["pools"][0]["servers"][0]["admin"]
            .as_str()
            .expect("admin state")
            .to_string()
    }
}

#[test]
fn only_healthz_goes_without_the_token_and_a_bad_token_changes_nothing() {
    let backend = HttpServer::start("a");
    let admin = Admin::start("admin-tokens", &backend);
    assert_eq!(admin.get("/healthz", None).status, 200);
    for path in ["/api/v1/snapshot", "/readyz", "/nowhere"] {
        let r = admin.get(path, None);
        assert_eq!(r.status, 401, "{path}");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer"))
        );
        assert_eq!(
            admin.get(path, Some("test-token-0123456780")).status,
            401,
            "{path}"
        );
    }
    let drain = r#"{"action":"set_server_state","pool":"web","server":"a","state":"drain"}"#;
    assert_eq!(admin.post("/api/v1/commands", None, drain).status, 401);
    assert_eq!(
        admin.post("/api/v1/commands", Some("wrong"), drain).status,
        401
    );
    assert_eq!(admin.admin_state(), "ready", "refused commands did nothing");
}

/// A command sent with exactly `headers` (no token added): the status, or `None` when the
/// node closed the connection without one.
fn post_raw(admin: &Admin, path: &str, headers: &[&str], body: &str) -> Option<u16> {
    let mut extra = headers.to_vec();
    extra.push("Content-Type: application/json");
    HttpConn::open(admin.addr)
        .expect("connect")
        .send_with("POST", "admin", path, &extra, body.as_bytes())
        .ok()
        .map(|r| r.status)
}

#[test]
fn a_token_in_the_wrong_place_scheme_or_shape_is_refused_and_changes_nothing() {
    let backend = HttpServer::start("a");
    let admin = Admin::start("admin-token-shapes", &backend);
    let drain = r#"{"action":"set_server_state","pool":"web","server":"a","state":"drain"}"#;
    let prefix = &TOKEN[..TOKEN.len() - 1];
    let longer = format!("{TOKEN}0");
    let overlong = format!("Authorization: Bearer {TOKEN}{}", "A".repeat(128 * 1024));
    let overlong_prefix = format!("Authorization: Bearer {}", "A".repeat(128 * 1024));
    let overlong_past_limit = format!("Authorization: Bearer {TOKEN}{}", "A".repeat(1 << 20));
    let refused_headers: Vec<(&str, Vec<String>)> = vec![
        ("no header", vec![]),
        (
            "wrong scheme Basic",
            vec![format!("Authorization: Basic {TOKEN}")],
        ),
        (
            "wrong scheme Token",
            vec![format!("Authorization: Token {TOKEN}")],
        ),
        ("no scheme", vec![format!("Authorization: {TOKEN}")]),
        ("empty bearer", vec!["Authorization: Bearer".into()]),
        (
            "empty bearer with space",
            vec!["Authorization: Bearer ".into()],
        ),
        (
            "two spaces",
            vec![format!("Authorization: Bearer  {TOKEN}")],
        ),
        (
            "a prefix of the token",
            vec![format!("Authorization: Bearer {prefix}")],
        ),
        (
            "one character",
            vec![format!("Authorization: Bearer {}", &TOKEN[..1])],
        ),
        (
            "the token and more",
            vec![format!("Authorization: Bearer {longer}")],
        ),
        ("another header", vec![format!("X-Auth-Token: {TOKEN}")]),
        ("a cookie", vec![format!("Cookie: token={TOKEN}")]),
        ("overlong after the token", vec![overlong]),
        ("overlong garbage", vec![overlong_prefix]),
        ("overlong past the head limit", vec![overlong_past_limit]),
    ];
    for (what, headers) in &refused_headers {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let status = post_raw(&admin, "/api/v1/commands", &headers, drain);
        // An overlong head may be refused by the HTTP layer before the API sees it (431) or
        // the connection dropped; neither may run the command.
        let refused = match status {
            Some(401) => true,
            Some(431) | None => what.starts_with("overlong"),
            _ => false,
        };
        assert!(refused, "{what}: answered {status:?}");
    }
    // The token in the query string is not a credential.
    for query in ["token", "access_token", "bearer", "authorization"] {
        let path = format!("/api/v1/commands?{query}={TOKEN}");
        assert_eq!(post_raw(&admin, &path, &[], drain), Some(401), "{path}");
        let path = format!("/api/v1/snapshot?{query}={TOKEN}");
        assert_eq!(admin.get(&path, None).status, 401, "{path}");
    }
    assert_eq!(
        admin.admin_state(),
        "ready",
        "no refused command did anything"
    );
    // The right token still works on the same node, so the refusals were about the token.
    let auth = format!("Authorization: Bearer {TOKEN}");
    assert_eq!(
        post_raw(&admin, "/api/v1/commands", &[&auth], drain),
        Some(200)
    );
    assert_eq!(admin.admin_state(), "drain");
}

#[test]
fn commands_act_on_the_node_and_bad_ones_get_a_clear_4xx() {
    let backend = HttpServer::start("a");
    let admin = Admin::start("admin-commands", &backend);
    let snap = admin.snapshot();
    assert_eq!(snap["l7"]["pools"][0]["name"], "web");
    assert!(snap["pid"].as_u64().is_some_and(|p| p > 0));
    let drain = r#"{"action":"set_server_state","pool":"web","server":"a","state":"drain"}"#;
    let r = admin.post("/api/v1/commands", Some(TOKEN), drain);
    assert_eq!(r.status, 200, "{}", r.text());
    let reply: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    assert!(
        reply["output"].as_str().is_some_and(|o| !o.is_empty()),
        "{reply}"
    );
    assert_eq!(admin.admin_state(), "drain");
    let weight = r#"{"action":"set_weight","pool":"web","server":"a","change":{"set":7}}"#;
    assert_eq!(
        admin.post("/api/v1/commands", Some(TOKEN), weight).status,
        200
    );
    assert_eq!(
        admin.snapshot()["l7"]["pools"][0]["servers"][0]["weight"],
        7
    );

    let r = admin.post("/api/v1/commands", Some(TOKEN), "{not json");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("not a command"), "{}", r.text());
    let nowhere = r#"{"action":"set_server_state","pool":"nope","server":"a","state":"drain"}"#;
    let r = admin.post("/api/v1/commands", Some(TOKEN), nowhere);
    assert_eq!(r.status, 422);
    assert!(r.text().contains("nope"), "{}", r.text());
    assert_eq!(admin.get("/api/v1/commands", Some(TOKEN)).status, 405);
    assert_eq!(admin.get("/api/v2/anything", Some(TOKEN)).status, 404);
}

#[test]
fn readyz_says_why_a_node_is_not_ready() {
    let mut backend = HttpServer::start("a");
    let check =
        "check = { type = \"tcp\", interval_ms = 100, timeout_ms = 100, rise = 1, fall = 1 }";
    let admin = Admin::with_pool("admin-ready", &backend, check);
    let r = admin.get("/readyz", Some(TOKEN));
    assert_eq!((r.status, r.text().as_str()), (200, "ready\n"));
    backend.kill();
    support::wait_until("not ready", || {
        admin.get("/readyz", Some(TOKEN)).status == 503
    });
    let r = admin.get("/readyz", Some(TOKEN));
    assert_eq!(r.text(), "not ready: l7 pool web has no server up\n");
    backend.restart();
    support::wait_until("ready again", || {
        admin.get("/readyz", Some(TOKEN)).status == 200
    });
}

/// `/metrics` parsed by Python's `prometheus_client` (skipped or failed, per
/// `OPSCONSOLE_REQUIRE_PEERS`, when it is not installed).
fn parse_metrics(text: &[u8]) -> Option<serde_json::Value> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    support::require_program("python3")?;
    let importable = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !importable {
        assert!(
            !support::peers_required(),
            "python3 cannot import prometheus_client and OPSCONSOLE_REQUIRE_PEERS=1"
        );
        eprintln!(
            "SKIPPED: python3 cannot import prometheus_client (pip install prometheus_client)"
        );
        return None;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/metrics_check.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text)
        .expect("write metrics");
    let out = child.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "the exposition did not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("parser JSON"))
}

#[test]
fn metrics_parse_as_prometheus_text_and_agree_with_the_snapshot() {
    let backend = HttpServer::start("a");
    let admin = Admin::start("admin-metrics", &backend);
    let proxy = admin.proxy;
    for _ in 0..7 {
        assert_eq!(get(proxy, "t", "/", &[]).expect("reply").status, 200);
    }
    let r = admin.get("/metrics", None);
    assert_eq!(r.status, 401, "metrics need the token too");
    let r = admin.get("/metrics", Some(TOKEN));
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4"))
    );
    let Some(parsed) = parse_metrics(&r.body) else {
        return;
    };
    let snap = admin.snapshot();
    let sample = |key: &str| {
        parsed["samples"][key]
            .as_f64()
            .unwrap_or_else(|| panic!("no sample {key} in {}", r.text()))
    };
    let pool = &snap["l7"]["pools"][0];
    let server = &pool["servers"][0];
    assert_eq!(pool["http"]["requests"], 7);
    assert_eq!(
        server["http"]["requests"], 7,
        "each server counts its requests"
    );
    assert_eq!(
        sample("opsconsole_l7_pool_requests_total{pool=web,role=l7}"),
        7.0
    );
    assert_eq!(
        sample("opsconsole_balancer_server_connections_total{pool=web,role=l7,server=a}"),
        server["total_conns"].as_f64().expect("total")
    );
    assert_eq!(
        sample("opsconsole_l7_server_responses_total{code=2xx,pool=web,role=l7,server=a}"),
        7.0
    );
    assert_eq!(
        sample("opsconsole_l7_server_response_seconds_count{pool=web,role=l7,server=a}"),
        7.0
    );
    assert_eq!(
        sample("opsconsole_l7_server_response_seconds_bucket{le=+Inf,pool=web,role=l7,server=a}"),
        7.0
    );
    assert_eq!(
        sample("opsconsole_balancer_server_up{pool=web,role=l7,server=a}"),
        1.0
    );
    assert!(parsed["families"].as_u64().is_some_and(|n| n > 10));
}
