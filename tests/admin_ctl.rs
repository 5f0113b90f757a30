//! `opsconsole ctl` against real headless processes: every `Command` sent both as JSON to the
//! admin API and through ctl, its effect read back from the snapshot; reload from an edited
//! config file; and the exit codes scripts rely on (refused 1, usage 2, unreachable 3,
//! unauthorized 4, unexpected 5).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use opsconsole::balance::backend::AdminState;
use opsconsole::control::{CacheSnapshot, ServerSnapshot, Snapshot};
use opsconsole::replication::shared::{LinkPhase, NodeRole};
use support::http::{HttpConn, HttpServer, get};
use support::{Process, addr_after, demo_on_free_ports, scratch, wait_until};

const TOKEN: &str = "ctl-test-token-0123456789";

/// A headless opsconsole with its admin API on a free port, and the config it runs from.
struct Node {
    _process: Process,
    admin: SocketAddr,
    config: PathBuf,
}

const ADMIN_SECTION: &str =
    "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"ctl-test-token-0123456789\"\n\n";

impl Node {
    fn start(dir: &Path, config_text: &str, role: &str) -> Node {
        let config = dir.join("node.toml");
        std::fs::write(&config, config_text).expect("write config");
        let process = Process::spawn(&[
            "--role".as_ref(),
            role.as_ref(),
            "--headless".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ]);
        let admin = addr_after(&process.wait_for("admin API listening on"), "listening on ");
        Node {
            _process: process,
            admin,
            config,
        }
    }

    /// The built-in demo on free ports, with a small preload so copies are quick.
    fn demo(name: &str) -> Node {
        let dir = scratch(name);
        let text = demo_config(&dir);
        Node::start(&dir, &text, "demo")
    }

    fn url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// `opsconsole ctl --admin URL --token TOKEN ARGS...`.
    fn ctl(&self, args: &[&str]) -> Output {
        let url = self.url();
        let mut all = vec!["--admin", url.as_str(), "--token", TOKEN];
        all.extend(args);
        ctl(&all, &[])
    }

    /// ctl that must succeed; its stdout.
    fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "ctl {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// A JSON command to the API: status and body.
    fn api(&self, command: &str) -> (u16, String) {
        let auth = format!("Authorization: Bearer {TOKEN}");
        let reply = HttpConn::open(self.admin)
            .expect("connect")
            .send_with(
                "POST",
                "admin",
                "/api/v1/commands",
                &[&auth, "Content-Type: application/json"],
                command.as_bytes(),
            )
            .expect("a reply");
        (reply.status, reply.text())
    }

    fn api_ok(&self, command: &str) -> String {
        let (status, body) = self.api(command);
        assert_eq!(status, 200, "{command}: {body}");
        body
    }

    fn snapshot(&self) -> Snapshot {
        let auth = format!("Authorization: Bearer {TOKEN}");
        let r = get(self.admin, "admin", "/api/v1/snapshot", &[&auth]).expect("a reply");
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).expect("a snapshot")
    }

    fn server(&self, pool: &str, server: &str) -> ServerSnapshot {
        find_server(&self.snapshot(), pool, server)
    }

    fn cache(&self, role: &str) -> CacheSnapshot {
        self.snapshot()
            .caches
            .into_iter()
            .find(|c| c.role == role)
            .unwrap_or_else(|| panic!("no cache {role}"))
    }
}

/// The demo config on free ports, `[admin]` first (so a test can cut sections off the end).
fn demo_config(dir: &Path) -> String {
    let demo =
        demo_on_free_ports(&dir.join("log")).replace("preload_keys = 50000", "preload_keys = 200");
    format!("{ADMIN_SECTION}{demo}")
}

fn find_server(snap: &Snapshot, pool: &str, server: &str) -> ServerSnapshot {
    let l4 = snap
        .l4
        .iter()
        .flatten()
        .filter(|s| s.name == pool)
        .flat_map(|s| &s.servers);
    let l7 = snap
        .l7
        .iter()
        .flat_map(|l| &l.pools)
        .filter(|p| p.name == pool)
        .flat_map(|p| &p.servers);
    l4.chain(l7)
        .find(|s| s.name == server)
        .cloned()
        .unwrap_or_else(|| panic!("no server {pool}/{server}"))
}

/// `opsconsole ctl ARGS` with `env` set and nothing inherited that ctl reads.
fn ctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_opsconsole"));
    command
        .arg("ctl")
        .args(args)
        .env_remove("OPSCONSOLE_ADMIN")
        .env_remove("OPSCONSOLE_TOKEN");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run opsconsole ctl");
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !text(stream).contains(TOKEN),
            "ctl {args:?} printed the token"
        );
    }
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit code and stderr of a ctl run that must fail.
fn failed(out: &Output) -> (i32, String) {
    let stderr = text(&out.stderr);
    assert!(
        out.stdout.is_empty(),
        "a failure prints nothing on stdout: {}",
        text(&out.stdout)
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line on stderr: {stderr}"
    );
    (out.status.code().expect("an exit code"), stderr)
}

fn app(node: &Node, name: &str) -> opsconsole::control::AppServerSnapshot {
    node.snapshot()
        .apps
        .into_iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no app {name}"))
}

#[test]
fn balancer_and_demo_commands_round_trip_through_the_api_and_ctl() {
    let node = Node::demo("ctl-balancers");
    assert_eq!(node.server("pages", "app1").admin, AdminState::Ready);

    // Server states, on an L7 pool and an L4 service.
    node.api_ok(r#"{"action":"set_server_state","pool":"pages","server":"app1","state":"drain"}"#);
    assert_eq!(node.server("pages", "app1").admin, AdminState::Drain);
    let out = node.ctl_ok(&["ready", "pages/app1"]);
    assert!(out.contains("pages/app1: drain -> ready"), "{out}");
    assert_eq!(node.server("pages", "app1").admin, AdminState::Ready);
    node.ctl_ok(&["maint", "pages/app1"]);
    assert_eq!(node.server("pages", "app1").admin, AdminState::Maint);
    node.api_ok(r#"{"action":"set_server_state","pool":"pages","server":"app1","state":"ready"}"#);
    assert_eq!(node.server("pages", "app1").admin, AdminState::Ready);
    node.ctl_ok(&["drain", "web/l7"]);
    assert_eq!(node.server("web", "l7").admin, AdminState::Drain);
    node.ctl_ok(&["ready", "web/l7"]);
    assert_eq!(node.server("web", "l7").admin, AdminState::Ready);

    // Weights: absolute, relative both ways, restored.
    assert_eq!(node.server("pages", "app3").weight, 2);
    node.ctl_ok(&["weight", "pages/app3", "7"]);
    assert_eq!(node.server("pages", "app3").weight, 7);
    node.ctl_ok(&["weight", "pages/app3", "-2"]);
    assert_eq!(node.server("pages", "app3").weight, 5);
    node.ctl_ok(&["weight", "pages/app3", "+1"]);
    assert_eq!(node.server("pages", "app3").weight, 6);
    node.api_ok(r#"{"action":"set_weight","pool":"pages","server":"app3","change":"restore"}"#);
    assert_eq!(node.server("pages", "app3").weight, 2);
    node.api_ok(r#"{"action":"set_weight","pool":"web","server":"l7","change":{"set":9}}"#);
    assert_eq!(node.server("web", "l7").weight, 9);
    node.ctl_ok(&["weight", "web/l7", "restore"]);
    assert_eq!(node.server("web", "l7").weight, 1);

    // The demo's traffic generator.
    node.ctl_ok(&["traffic", "pause"]);
    assert!(node.snapshot().traffic.expect("traffic").paused);
    node.api_ok(r#"{"action":"pause_traffic","paused":false}"#);
    assert!(!node.snapshot().traffic.expect("traffic").paused);
    node.api_ok(r#"{"action":"pause_traffic","paused":true}"#);
    assert!(node.snapshot().traffic.expect("traffic").paused);
    node.ctl_ok(&["traffic", "resume"]);
    assert!(!node.snapshot().traffic.expect("traffic").paused);

    // The demo's app servers: down and up, slow and failing.
    node.ctl_ok(&["app", "app2", "down"]);
    assert!(!app(&node, "app2").running);
    node.api_ok(r#"{"action":"set_app_server","name":"app2","running":true}"#);
    assert!(app(&node, "app2").running);
    node.api_ok(r#"{"action":"set_app_server","name":"app2","running":false}"#);
    assert!(!app(&node, "app2").running);
    node.ctl_ok(&["app", "app2", "up"]);
    assert!(app(&node, "app2").running);
    node.ctl_ok(&["app", "app2", "--latency-ms", "50", "--error-percent", "25"]);
    let a = app(&node, "app2");
    assert_eq!((a.latency_ms, a.error_percent), (50, 25));
    node.api_ok(r#"{"action":"set_app_behaviour","name":"app2","latency_ms":0}"#);
    let a = app(&node, "app2");
    assert_eq!(
        (a.latency_ms, a.error_percent),
        (0, 25),
        "absent: unchanged"
    );
    node.ctl_ok(&["app", "app2", "--error-percent", "0"]);
    assert_eq!(app(&node, "app2").error_percent, 0);

    // Reload: an edited weight applies, through ctl and through the API.
    let original = std::fs::read_to_string(&node.config).expect("config");
    let app3 = |w: u32| {
        let pages_app3 = original
            .lines()
            .find(|l| l.contains("name = \"app3\"") && l.contains("weight = 2"))
            .expect("pages' app3 line");
        original.replace(
            pages_app3,
            &pages_app3.replace("weight = 2", &format!("weight = {w}")),
        )
    };
    std::fs::write(&node.config, app3(4)).expect("edit config");
    let out = node.ctl_ok(&["reload"]);
    assert!(out.starts_with("config reloaded: "), "{out}");
    let s = node.server("pages", "app3");
    assert_eq!((s.weight, s.configured_weight), (4, 4));
    std::fs::write(&node.config, app3(3)).expect("edit config");
    let body = node.api_ok(r#"{"action":"reload"}"#);
    assert!(body.contains("config reloaded: "), "{body}");
    assert_eq!(node.server("pages", "app3").weight, 3);

    // A config that does not parse is refused, and nothing changes.
    std::fs::write(&node.config, format!("{}\nweight = lots\n", app3(8))).expect("break config");
    let (code, stderr) = failed(&node.ctl(&["reload"]));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("reload refused, the running config stays"),
        "{stderr}"
    );
    assert!(
        stderr.contains("node.toml"),
        "the error names the file: {stderr}"
    );
    let (status, body) = node.api(r#"{"action":"reload"}"#);
    assert_eq!(status, 422, "{body}");
    assert_eq!(node.server("pages", "app3").weight, 3);

    // A config that drops the L7 balancer is refused as a whole: the L4 change in it does
    // not apply either.
    let edited = original.replace(
        "{ name = \"l7\", address",
        "{ name = \"l7\", weight = 5, address",
    );
    assert_ne!(edited, original, "the web service's server line");
    let without_l7 = &edited[..edited.find("\n[l7]").expect("the [l7] section")];
    std::fs::write(&node.config, without_l7).expect("edit config");
    let (code, stderr) = failed(&node.ctl(&["reload"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("no [l7] section"), "{stderr}");
    assert_eq!(
        node.server("web", "l7").configured_weight,
        1,
        "a refused reload changed the L4 balancer"
    );
}

fn replication_role(node: &Node, role: &str) -> Option<NodeRole> {
    node.cache(role).replication.map(|r| r.status.role)
}

fn streaming(node: &Node) -> bool {
    node.snapshot().caches.iter().all(|c| {
        c.replication
            .as_ref()
            .is_some_and(|r| r.serving && r.status.link == LinkPhase::Streaming)
    })
}

#[test]
fn cache_and_replication_commands_round_trip_through_the_api_and_ctl() {
    let node = Node::demo("ctl-caches");
    wait_until("the pair to stream", || streaming(&node));

    // Items, through ctl and as raw requests through the API.
    assert_eq!(
        node.ctl_ok(&["set", "k", "two words", "--role", "master"]),
        "STORED\n"
    );
    assert_eq!(
        node.ctl_ok(&["get", "k", "--role", "master"]),
        "two words\n"
    );
    node.api_ok(r#"{"action":"cache_request","role":"slave","request":"set k2 5 0 2\r\nhi\r\n"}"#);
    assert_eq!(node.ctl_ok(&["get", "k2", "--role", "slave"]), "hi\n");
    let body = node.api_ok(r#"{"action":"cache_request","role":"master","request":"get k\r\n"}"#);
    assert!(body.contains("two words"), "{body}");
    node.ctl_ok(&[
        "set", "ttl", "x", "--ttl", "100", "--flags", "3", "--role", "slave",
    ]);
    let body =
        node.api_ok(r#"{"action":"cache_request","role":"slave","request":"mg ttl f t v\r\n"}"#);
    assert!(body.contains(" f3 ") && body.contains(" t"), "{body}");
    let (code, stderr) = failed(&node.ctl(&["get", "missing", "--role", "master"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("missing"), "{stderr}");

    // Two cache roles: ctl asks which one, naming them.
    let (code, stderr) = failed(&node.ctl(&["kill-peer"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("master, slave") && stderr.contains("--role"),
        "{stderr}"
    );

    // Kill and revive: the demo stops the peer node and starts it again.
    let out = node.ctl_ok(&["kill-peer", "--role", "slave"]);
    assert!(out.contains("stopped the peer node master"), "{out}");
    assert!(node.cache("master").stopped);
    wait_until("the slave to take over", || {
        replication_role(&node, "slave") == Some(NodeRole::Master)
    });
    node.api_ok(r#"{"action":"revive_peer","role":"slave"}"#);
    wait_until("the old master to rejoin and stream", || {
        !node.cache("master").stopped && streaming(&node)
    });
    assert_eq!(replication_role(&node, "master"), Some(NodeRole::Slave));
    node.api_ok(r#"{"action":"kill_peer","role":"slave","hold_ms":1000}"#);
    assert!(node.cache("master").stopped);
    node.ctl_ok(&["revive-peer", "--role", "slave"]);
    wait_until("the master node to run and stream again", || {
        !node.cache("master").stopped && streaming(&node)
    });

    // Switchover, sent to whichever is master, back and forth. Sent to the slave it is
    // refused at once, with the reason, rather than started and failed in the log.
    assert_eq!(replication_role(&node, "slave"), Some(NodeRole::Master));
    let (status, body) = node.api(r#"{"action":"switchover","role":"master"}"#);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("needs this node to be a master"), "{body}");
    let (code, stderr) = failed(&node.ctl(&["switchover", "--role", "master"]));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("SLAVE"), "{stderr}");
    node.api_ok(r#"{"action":"switchover","role":"slave"}"#);
    wait_until("the switchover to the master role", || {
        replication_role(&node, "master") == Some(NodeRole::Master)
            && replication_role(&node, "slave") == Some(NodeRole::Slave)
    });
    wait_until("streaming after the switchover", || streaming(&node));
    node.ctl_ok(&["switchover", "--role", "master"]);
    wait_until("the switchover back", || {
        replication_role(&node, "slave") == Some(NodeRole::Master)
            && replication_role(&node, "master") == Some(NodeRole::Slave)
    });

    // Items written before all that are still there.
    wait_until("streaming at the end", || streaming(&node));
    assert_eq!(node.ctl_ok(&["get", "k2", "--role", "master"]), "hi\n");

    let shown = node.ctl_ok(&["show"]);
    for word in [
        "CACHE",
        "master",
        "slave",
        "REPLICATION",
        "streaming",
        "L4 service web",
        "L7 pool pages",
        "app1",
    ] {
        assert!(shown.contains(word), "show lacks {word}:\n{shown}");
    }
}

/// A single cache role and an L7 pool over `backend`: ctl's defaults and failures.
fn single_cache_node(name: &str, backend: &HttpServer) -> Node {
    let dir = scratch(name);
    let text = format!(
        r#"{ADMIN_SECTION}
[log]
dir = "{}"
[master]
port = 0
[l7]
threads = 1
[l7.listeners.main]
listen = "127.0.0.1:0"
routes = [{{ path = "/", pool = "web" }}]
[l7.pools.web]
servers = [{{ name = "a", address = "{}" }}]
"#,
        dir.join("log").display(),
        backend.addr
    );
    Node::start(&dir, &text, "master,l7")
}

#[test]
fn ctl_defaults_to_the_only_cache_role_and_its_failures_have_their_exit_codes() {
    let backend = HttpServer::start("a");
    let node = single_cache_node("ctl-exits", &backend);
    let url = node.url();

    // The one cache role is the default.
    assert_eq!(node.ctl_ok(&["set", "k", "v"]), "STORED\n");
    assert_eq!(node.ctl_ok(&["get", "k"]), "v\n");
    let (code, _) = failed(&node.ctl(&["get", "nothing"]));
    assert_eq!(code, 1);

    // Refused by the node: 1, with its reason.
    let (code, stderr) = failed(&node.ctl(&["kill-peer"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("does not replicate"), "{stderr}");
    let (code, stderr) = failed(&node.ctl(&["drain", "web/nope"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("no server 'nope'"), "{stderr}");
    let (code, stderr) = failed(&node.ctl(&["traffic", "pause"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("demo"), "{stderr}");

    // Usage: 2.
    for args in [
        &["weight", "web/a", "lots"][..],
        &["drain", "web"],
        &["get", "two words"],
        &["app", "app1"],
        &["app", "app1", "up", "--latency-ms", "5"],
        &["nonsense"],
    ] {
        let out = node.ctl(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

    // No token, a wrong token: 4, and nothing changes.
    let (code, stderr) = failed(&ctl(&["--admin", &url, "drain", "web/a"], &[]));
    assert_eq!(code, 4);
    assert!(stderr.contains("wants a token"), "{stderr}");
    let (code, stderr) = failed(&ctl(
        &[
            "--admin",
            &url,
            "--token",
            "ctl-test-token-0123456780",
            "drain",
            "web/a",
        ],
        &[],
    ));
    assert_eq!(code, 4);
    assert!(stderr.contains("refused the token"), "{stderr}");
    assert_eq!(node.server("web", "a").admin, AdminState::Ready);

    // The environment gives the address and the token; a token file wins over both.
    let out = ctl(
        &["drain", "web/a"],
        &[("OPSCONSOLE_ADMIN", &url), ("OPSCONSOLE_TOKEN", TOKEN)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(node.server("web", "a").admin, AdminState::Drain);
    let token_file = scratch("ctl-exits").join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let file = token_file.to_str().expect("path");
    let out = ctl(
        &["--token-file", file, "ready", "web/a"],
        &[
            ("OPSCONSOLE_ADMIN", &url),
            ("OPSCONSOLE_TOKEN", "wrong-token-0000000000"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(node.server("web", "a").admin, AdminState::Ready);
    let help = ctl(&["--help"], &[("OPSCONSOLE_TOKEN", TOKEN)]);
    assert!(text(&help.stdout).contains("Exit codes:"));

    // Nothing listening: 3.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let (code, stderr) = failed(&ctl(
        &["--admin", &closed_url, "--token", TOKEN, "show"],
        &[],
    ));
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
    // Listening but never answering: 3 once --timeout is over.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_url = format!("http://{}", silent.local_addr().expect("addr"));
    let (code, stderr) = failed(&ctl(
        &[
            "--admin",
            &silent_url,
            "--timeout",
            "0.5",
            "--token",
            TOKEN,
            "reload",
        ],
        &[],
    ));
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("did not answer"), "{stderr}");

    // Something that is not the admin API: 5.
    let other_url = format!("http://{}", backend.addr);
    let (code, stderr) = failed(&ctl(
        &["--admin", &other_url, "--token", TOKEN, "show"],
        &[],
    ));
    assert_eq!(code, 5, "{stderr}");
    let (code, _) = failed(&ctl(
        &["--admin", &other_url, "--token", TOKEN, "show", "--json"],
        &[],
    ));
    assert_eq!(code, 5);

    // show --json is the snapshot, pretty.
    let json = node.ctl_ok(&["show", "--json"]);
    assert!(json.starts_with("{\n  \""), "{json}");
    let snap: Snapshot = serde_json::from_str(&json).expect("the snapshot");
    assert_eq!(snap.caches[0].role, "master");
}

/// `show` over fixed snapshots: a copy in progress, a failover, every server state.
#[test]
fn show_renders_copies_failovers_and_every_server_state() {
    use opsconsole::ctl::show::render;
    use support::fixtures;
    let copying = render(&fixtures::copying());
    for text in [
        "slave   127.0.0.1:11411",
        "marugoto copying, not serving",
        "in 37% (37000/100000 items, 4.6M/12M)",
        "out 37%",
        "demo traffic running  cache 40/s: 24000 requests, 3 errors\n",
    ] {
        assert!(copying.contains(text), "no {text:?} in\n{copying}");
    }
    let failed_over = render(&fixtures::failed_over());
    for text in [
        "master  127.0.0.1:11311  stopped",
        "MASTER (epoch 2)  down (listening)",
    ] {
        assert!(failed_over.contains(text), "no {text:?} in\n{failed_over}");
    }
    let balancer = render(&fixtures::balancer());
    for text in [
        "L4 service cache  127.0.0.1:11211  sh persist 300s",
        "maint",
        "drain (empty)",
        "0 (config 10)",
        "DOWN 1/2↑",
        "L4CON connection refused",
        "sorry (sorry)",
    ] {
        assert!(balancer.contains(text), "no {text:?} in\n{balancer}");
    }
    let l7 = render(&fixtures::l7_balancer());
    for text in [
        "L7 listener front  127.0.0.1:11590",
        "routes / -> pages, /api/ -> api",
        "L7 pool api  leastconn",
        "212ms",
        "app2  127.0.0.1:11582  up     200ms    25%",
    ] {
        assert!(l7.contains(text), "no {text:?} in\n{l7}");
    }
}

/// A hold longer than the clock can count (`--hold` of u64::MAX seconds, or the largest
/// `hold_ms` in JSON) holds the link down for good rather than overflowing.
#[test]
fn a_peer_held_down_for_longer_than_the_clock_counts_stays_held() {
    let dir = scratch("ctl-hold");
    let text = format!(
        r#"{ADMIN_SECTION}
[log]
dir = "{}"
[master]
port = 0
[master.replication]
listen = "127.0.0.1:0"
peer = "127.0.0.1:{}"
"#,
        dir.join("log").display(),
        support::free_port()
    );
    let node = Node::start(&dir, &text, "master");
    let held_until = |node: &Node| {
        node.cache("master")
            .replication
            .expect("it replicates")
            .status
            .held_until_ms
    };
    let out = node.ctl_ok(&["kill-peer", "--hold", &u64::MAX.to_string()]);
    assert!(out.contains("held down"), "{out}");
    let century_ms = 100 * 365 * 86_400_000;
    let now = opsconsole::replication::shared::now_ms();
    assert!(held_until(&node).is_some_and(|t| t > now + century_ms));
    node.ctl_ok(&["revive-peer"]);
    assert_eq!(held_until(&node), None);
    node.api_ok(r#"{"action":"kill_peer","role":"master","hold_ms":18446744073709551615}"#);
    assert!(held_until(&node).is_some_and(|t| t > now + century_ms));
    node.api_ok(r#"{"action":"revive_peer","role":"master"}"#);
    assert_eq!(held_until(&node), None);
}
