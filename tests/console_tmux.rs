//! The console end to end, as an operator sees it: `opsconsole --role demo` in a detached
//! tmux session (a private tmux server), driven with send-keys and read with capture-pane.
//! Kill the master from the slave's view, watch the slave take over, revive the master and
//! watch the marugoto gauge run, use the key tester, quit, and find the terminal clean. And
//! the built-in demo's chain in the L7 view: live traffic, an app server made to fail.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::tmux::{Tmux, assert_restored, line_with};
use support::{demo_on_free_ports, free_port, require_program};

fn demo_config(dir: &Path) -> PathBuf {
    let (a, b) = (free_port(), free_port());
    let apps: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let servers: Vec<String> = apps
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{{ name = \"app{}\", address = \"{a}\" }}", i + 1))
        .collect();
    let text = format!(
        r#"
[log]
dir = "{log}"
file = "demo.log"

[demo]
requests_per_sec = 40
keys = 200
value_size = 100
preload_keys = 20000
apps = [{apps}]
http_service = "web"
http_requests_per_sec = 20

[l4]
threads = 1
[l4.services.web]
listen = "127.0.0.1:0"
check = {{ type = "http", path = "/health", interval_ms = 200, timeout_ms = 150, rise = 2, fall = 2 }}
servers = [{servers}]

[master]
port = 0
[master.replication]
listen = "127.0.0.1:{a}"
peer = "127.0.0.1:{b}"
heartbeat_interval_ms = 200
heartbeat_timeout_ms = 2000
copy_bytes_per_sec = "1m"

[slave]
port = 0
[slave.replication]
listen = "127.0.0.1:{b}"
peer = "127.0.0.1:{a}"
heartbeat_interval_ms = 200
heartbeat_timeout_ms = 2000
copy_bytes_per_sec = "1m"
"#,
        log = dir.join("log").display(),
        apps = apps
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", "),
        servers = servers.join(", ")
    );
    let path = dir.join("demo.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Starts the demo console in its own tmux server; the shell prints `EXITED <status>` when
/// the console ends, and stays, so the screen it leaves behind can be read.
fn start_demo(name: &str) -> Option<(Tmux, PathBuf, PathBuf)> {
    start_demo_with(name, demo_config)
}

/// The same with the config `write` puts in the test's directory.
fn start_demo_with(name: &str, write: fn(&Path) -> PathBuf) -> Option<(Tmux, PathBuf, PathBuf)> {
    require_program("tmux")?;
    let dir = std::env::temp_dir().join(format!("opsconsole-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = write(&dir);
    let command = format!(
        "{} --role demo --config {}; echo EXITED $?; sleep 60",
        env!("CARGO_BIN_EXE_opsconsole"),
        config.display()
    );
    let tmux = Tmux::start(&dir, &command);
    tmux.wait_for("the console", |s| s.contains("1 Over"));
    Some((tmux, dir, config))
}

#[test]
fn sigterm_stops_the_console_and_restores_the_terminal() {
    let Some((tmux, dir, config)) = start_demo("sigterm") else {
        return;
    };
    let out = Command::new("pgrep")
        .arg("-f")
        .arg(config.display().to_string())
        .output()
        .expect("pgrep");
    let pids = String::from_utf8_lossy(&out.stdout).into_owned();
    // The shell running the command line matches too; the console is the one named opsconsole.
    let pid = pids
        .lines()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "opsconsole")
        })
        .unwrap_or_else(|| panic!("no opsconsole process among {pids:?}"));
    let status = Command::new("kill")
        .args(["-TERM", pid])
        .status()
        .expect("kill");
    assert!(status.success());
    assert_restored(&tmux);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_failover_revive_key_tester_and_a_clean_exit() {
    let Some((tmux, dir, _)) = start_demo("tmux") else {
        return;
    };

    tmux.keys(&["2"]);
    tmux.wait_for("the pair streaming", |s| {
        s.contains("Replication: master") && s.contains("[streaming]")
    });

    // From the slave's side, kill its peer: the master node stops entirely.
    tmux.keys(&["j"]);
    tmux.wait_for("the slave selected", |s| s.contains("Replication: slave"));
    tmux.keys(&["K"]);
    tmux.wait_for("the confirmation", |s| s.contains("Are you sure?"));
    tmux.keys(&["y"]);
    let screen = tmux.wait_for("the survivor to become MASTER", |s| {
        line_with(s, &["role", "MASTER", "epoch"]) && s.contains("STOPPED")
    });
    assert!(screen.contains("promoted to master"), "{screen}");

    // Revive: the old master rejoins as slave and gets a marugoto copy.
    tmux.keys(&["R"]);
    tmux.wait_for("the copy gauge running", |s| {
        s.contains("Marugoto copy: sending to the peer") && s.contains("ETA")
    });
    tmux.wait_for("streaming again", |s| {
        s.contains("[streaming]") && s.contains("done in") && line_with(s, &["master", "SLAVE"])
    });

    // The key tester: a set and a get on this node.
    tmux.keys(&["t"]);
    tmux.text("set tmuxkey hello");
    tmux.keys(&["Enter"]);
    tmux.wait_for("STORED", |s| s.contains("STORED"));
    tmux.text("get tmuxkey");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the value", |s| {
        s.contains("VALUE tmuxkey 0 5") && s.contains("hello")
    });
    tmux.keys(&["Escape"]);

    tmux.keys(&["q"]);
    assert_restored(&tmux);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_l4_view_shows_a_killed_app_server_go_down_and_come_back() {
    let Some((tmux, dir, _)) = start_demo("tmux-l4") else {
        return;
    };
    tmux.keys(&["5"]);
    tmux.wait_for("the web service with its servers up", |s| {
        s.contains("L4 services")
            && line_with(s, &["web", "3/3 up"])
            && line_with(s, &["app2", "UP", "L7OK"])
    });
    tmux.keys(&["j"]);
    tmux.wait_for("app2 selected", |s| s.contains("web/app2"));
    tmux.keys(&["x"]);
    tmux.wait_for("the confirmation", |s| {
        s.contains("Kill the demo app server app2")
    });
    tmux.keys(&["y"]);
    let screen = tmux.wait_for("app2 marked DOWN", |s| {
        line_with(s, &["app2", "DOWN", "L4CON"]) && line_with(s, &["web", "2/3 up"])
    });
    assert!(
        screen.contains("app2 killed"),
        "the outcome is flashed:\n{screen}"
    );
    tmux.keys(&["x"]);
    tmux.wait_for("app2 back UP", |s| {
        line_with(s, &["app2", "UP", "L7OK"]) && line_with(s, &["web", "3/3 up"])
    });
    tmux.keys(&["q"]);
    assert_restored(&tmux);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The built-in demo config on free ports.
fn builtin_demo_config(dir: &Path) -> PathBuf {
    let path = dir.join("demo.toml");
    std::fs::write(&path, demo_on_free_ports(&dir.join("log"))).expect("write config");
    path
}

/// The number after `word` on the first line containing `on`.
fn number_after(screen: &str, on: &str, word: &str) -> Option<u64> {
    let line = screen.lines().find(|l| l.contains(on))?;
    let rest = line.split(word).nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn demo_l7_view_shows_the_chain_live_and_an_app_server_made_to_fail() {
    let Some((tmux, dir, _)) = start_demo_with("tmux-l7", builtin_demo_config) else {
        return;
    };
    tmux.keys(&["6"]);
    // Requests come in through L4 and take both routes.
    tmux.wait_for("both routes with traffic", |s| {
        s.contains("L7 listeners and pools")
            && line_with(s, &["front", "conns"])
            && line_with(s, &["→ pages", "req/s"])
            && line_with(s, &["→ api", "req/s"])
            && !line_with(s, &["→ pages", " 0.0 req/s"])
            && !line_with(s, &["→ api", " 0.0 req/s"])
            && line_with(s, &["api leastconn", "3/3 up"])
            && line_with(s, &["pages roundrobin", "3/3 up"])
    });
    tmux.keys(&["j"]);
    tmux.wait_for("api/app2 selected", |s| {
        s.contains("api/app2") && line_with(s, &["demo", "app2 +0 ms, 0% errors"])
    });
    // Four steps up: every answer of app2 is an error now.
    tmux.keys(&["e", "e", "e", "e"]);
    tmux.wait_for("app2 failing and its 5xx counted", |s| {
        line_with(s, &["demo", "app2 +0 ms, 100% errors"])
            && number_after(s, "answers", "5xx").is_some_and(|n| n > 0)
    });
    // Still UP: its /health is never failed on purpose.
    let screen = tmux.screen();
    assert!(line_with(&screen, &["▶ app2", "UP", "L7OK"]), "{screen}");
    tmux.keys(&["E", "E", "E", "E", "l"]);
    tmux.wait_for("app2 healthy again, only slower", |s| {
        line_with(s, &["demo", "app2 +10 ms, 0% errors"])
            && s.contains("latency 10 ms, error rate 0%")
    });
    tmux.keys(&["q"]);
    assert_restored(&tmux);
    let _ = std::fs::remove_dir_all(&dir);
}
