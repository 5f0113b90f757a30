//! The console attached to a real headless node through its admin API, driven as the
//! console drives itself (`tui::observe` on each tick, keys through the key table into
//! `App::update`, commands through `RemoteControl::act`) and rendered into ratatui's
//! `TestBackend`: the remote views, a drain that reaches the node, the node killed and
//! started again on the same port, and a token the node refuses. And `opsconsole attach`
//! itself in tmux, over a headless demo.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use opsconsole::admin::client::Endpoint;
use opsconsole::admin::remote::RemoteControl;
use opsconsole::balance::backend::AdminState;
use opsconsole::control::{Control, RemotePhase, Snapshot};
use opsconsole::logging::LogRing;
use opsconsole::tui::app::{Action, App, Effect, View};
use opsconsole::tui::theme::Theme;
use opsconsole::tui::{self, keys, view};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use support::http::HttpServer;
use support::tmux::{Tmux, assert_restored, line_with};
use support::{DEADLINE, Process, demo_on_free_ports, require_program, scratch};

const TOKEN: &str = "attach-token-0123456789";
/// Fast, so the tests wait less; the link's own pauses are what they are.
const REFRESH: Duration = Duration::from_millis(50);

/// A headless node with a cache, an L7 pool of two servers, and the admin API.
struct RemoteNode {
    process: Process,
    admin: SocketAddr,
}

/// The admin API's address in a node's log line `admin API listening on ADDR (...)`.
fn admin_addr(line: &str) -> Option<SocketAddr> {
    line.split("admin API listening on ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl RemoteNode {
    /// Starts it with the admin API on `admin` (`127.0.0.1:0` for a free port); `None` when
    /// the process ended before listening (the port was taken).
    fn try_start(dir: &Path, backends: &[&HttpServer], admin: &str) -> Option<RemoteNode> {
        let config = dir.join("node.toml");
        let servers: Vec<String> = ["a", "b"]
            .iter()
            .zip(backends)
            .map(|(name, b)| format!("{{ name = \"{name}\", address = \"{}\" }}", b.addr))
            .collect();
        std::fs::write(
            &config,
            format!(
                r#"
[log]
dir = "{log}"
[admin]
listen = "{admin}"
token = "{TOKEN}"
[master]
port = 0
threads = 1
[l7]
threads = 1
[l7.listeners.main]
listen = "127.0.0.1:0"
routes = [{{ path = "/", pool = "web" }}]
[l7.pools.web]
servers = [{servers}]
"#,
                log = dir.join("log").display(),
                servers = servers.join(", "),
            ),
        )
        .expect("write config");
        let process = Process::spawn(&[
            "--headless".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ]);
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            match process.log.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("admin API listening on ") => {
                    let admin = admin_addr(&line).unwrap_or_else(|| panic!("an address in {line}"));
                    return Some(RemoteNode { process, admin });
                }
                Ok(line) if line.contains("cannot listen") => return None,
                Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
        panic!("the node did not start its admin API within {DEADLINE:?}");
    }

    fn start(dir: &Path, backends: &[&HttpServer]) -> RemoteNode {
        RemoteNode::try_start(dir, backends, "127.0.0.1:0").expect("a node on a free port")
    }

    fn url(&self) -> String {
        format!("http://{}", self.admin)
    }
}

/// The console's side: the app, the remote control it reads, and the log ring the link's
/// events go to, on a runtime of its own as in `opsconsole attach`.
struct Attached {
    app: App,
    control: Arc<RemoteControl>,
    log: LogRing,
    theme: Theme,
    runtime: tokio::runtime::Runtime,
}

impl Attached {
    fn to(url: &str, token: &str) -> Attached {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let endpoint = Endpoint::parse(url, Some(token.into())).expect("url");
        let log = LogRing::new(100);
        let control = Arc::new(RemoteControl::start(
            endpoint,
            REFRESH,
            log.clone(),
            runtime.handle(),
        ));
        Attached {
            app: App::new(false, 300_000),
            control,
            log,
            theme: Theme::default(),
            runtime,
        }
    }

    /// One tick of the console.
    fn tick(&mut self) {
        tui::observe(&mut self.app, self.control.as_ref(), Some(&self.log));
    }

    fn screen(&self) -> String {
        let mut terminal = Terminal::new(TestBackend::new(120, 40)).expect("terminal");
        terminal
            .draw(|f| view::render(f, &self.app, &self.theme))
            .expect("draw");
        let buf = terminal.backend().buffer();
        let mut out = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    /// Ticks and renders until `cond` holds for the app and its screen; the screen then.
    fn wait_for(&mut self, what: &str, cond: impl Fn(&App, &str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.tick();
            let screen = self.screen();
            if cond(&self.app, &screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; the screen shows:\n{screen}");
            }
            std::thread::sleep(REFRESH);
        }
    }

    fn press(&mut self, c: char) -> Option<Effect> {
        let ev = KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
        let action = keys::dispatch(&self.app, ev)?;
        self.app.update(action)
    }

    /// The tab key of a view, as the header numbers it.
    fn go(&mut self, view: View) {
        let at = self.app.views().iter().position(|v| *v == view);
        let at = at.unwrap_or_else(|| panic!("no {view:?} view in {:?}", self.app.views()));
        let digit = char::from_digit(at as u32 + 1, 10).expect("a digit");
        assert_eq!(self.press(digit), None);
        assert_eq!(self.app.view, view);
    }

    /// A command effect as the console's runner does it: `act` off the async workers, and
    /// the outcome back into the app. Returns the outcome and how long it took.
    fn run(&mut self, effect: Option<Effect>) -> (Result<String, String>, Duration) {
        let Some(Effect::Command { what, command }) = effect else {
            panic!("expected a command, got {effect:?}");
        };
        let started = Instant::now();
        let result = self.control.act(command).map(|r| r.output);
        let took = started.elapsed();
        self.app.update(Action::CommandDone {
            what,
            result: result.clone(),
        });
        (result, took)
    }

    /// The node's snapshot, fetched afresh (not the console's copy).
    fn fetch(&self, url: &str) -> Snapshot {
        let endpoint = Endpoint::parse(url, Some(TOKEN.into())).expect("url");
        self.runtime
            .block_on(endpoint.snapshot())
            .expect("the node's snapshot")
    }

    fn log_text(&self) -> String {
        self.log
            .since(0)
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn phase(app: &App) -> Option<RemotePhase> {
    app.remote.as_ref().map(|r| r.phase)
}

fn backends() -> (HttpServer, HttpServer) {
    (HttpServer::start("a"), HttpServer::start("b"))
}

fn dir(name: &str) -> PathBuf {
    let d = scratch(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

#[test]
fn attach_shows_the_remote_views_and_a_drain_pressed_there_reaches_the_node() {
    let (a, b) = backends();
    let dir = dir("attach-views");
    let node = RemoteNode::start(&dir, &[&a, &b]);
    let mut console = Attached::to(&node.url(), TOKEN);

    let screen = console.wait_for("the remote overview", |app, s| {
        phase(app) == Some(RemotePhase::Up) && s.contains("Cache nodes") && s.contains("master")
    });
    assert!(
        screen.contains(&format!("@{}", node.admin)) || screen.contains("attached to"),
        "the header names the node:\n{screen}"
    );
    assert_eq!(
        console.app.views(),
        [
            View::Overview,
            View::Cache,
            View::Tester,
            View::L7,
            View::Log
        ],
        "the tabs follow the remote node's roles"
    );

    console.go(View::L7);
    console.wait_for("the remote pool", |_, s| {
        s.contains("web") && s.contains("web/a")
    });
    let effect = console.press('d');
    let (result, _) = console.run(effect);
    assert!(result.is_ok(), "the drain was refused: {result:?}");
    assert!(
        !console.app.flash.as_ref().expect("a flash").error,
        "{:?}",
        console.app.flash
    );
    // On the node itself, fetched afresh.
    let pool = |s: &Snapshot| s.l7.as_ref().expect("l7").pools[0].clone();
    let fetched = pool(&console.fetch(&node.url()));
    let a_state = fetched.servers.iter().find(|s| s.name == "a").expect("a");
    assert_eq!(a_state.admin, AdminState::Drain);
    // And on the console's screen, from the next snapshots.
    let screen = console.wait_for("a shown draining", |_, s| {
        s.lines().any(|l| l.contains(" a ") && l.contains("DRAIN"))
    });
    assert!(!screen.contains("unreachable"), "{screen}");

    console.go(View::Log);
    let screen = console.wait_for("the link's log", |_, s| s.contains("connected to"));
    assert!(
        screen.contains(&format!("Log of the link to {}", node.admin)),
        "{screen}"
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_killed_node_shows_as_lost_with_its_last_snapshot_and_comes_back_on_the_same_port() {
    let (a, b) = backends();
    let dir = dir("attach-lost");
    let node = RemoteNode::start(&dir, &[&a, &b]);
    let url = node.url();
    let port = node.admin.port();
    let first_pid = node.process.child.id();
    let mut console = Attached::to(&url, TOKEN);
    console.wait_for("the remote node", |app, _| {
        phase(app) == Some(RemotePhase::Up) && app.snapshot.pid == first_pid
    });
    console.go(View::L7);
    console.wait_for("the remote pool", |_, s| s.contains("web/a"));

    drop(node);
    let screen = console.wait_for("the link shown as lost", |app, s| {
        phase(app) == Some(RemotePhase::Down) && s.contains("unreachable for")
    });
    assert!(screen.contains("LOST"), "the header badge:\n{screen}");
    assert!(screen.contains("STALE:"), "{screen}");
    assert!(
        screen.contains("web/a"),
        "the last snapshot stays:\n{screen}"
    );
    assert_eq!(console.app.snapshot.pid, first_pid);

    // A key pressed meanwhile fails at once and says why.
    let effect = console.press('d');
    let (result, took) = console.run(effect);
    let error = result.expect_err("not sent while down");
    assert!(
        error.contains("not sent") && error.contains("unreachable"),
        "{error}"
    );
    assert!(took < Duration::from_secs(1), "answered at once: {took:?}");
    let screen = console.screen();
    assert!(screen.contains("failed: not sent"), "{screen}");

    // The same port again (another process may have taken it meanwhile: rare, retried).
    let deadline = Instant::now() + DEADLINE;
    let node = loop {
        if let Some(n) = RemoteNode::try_start(&dir, &[&a, &b], &format!("127.0.0.1:{port}")) {
            break n;
        }
        assert!(Instant::now() < deadline, "port {port} stayed taken");
        std::thread::sleep(Duration::from_millis(200));
    };
    let second_pid = node.process.child.id();
    let screen = console.wait_for("the link back with fresh data", |app, s| {
        phase(app) == Some(RemotePhase::Up)
            && app.snapshot.pid == second_pid
            && s.contains("reconnected to")
    });
    assert!(!screen.contains("STALE"), "{screen}");
    assert!(screen.contains("web/a"), "{screen}");
    let log = console.log_text();
    assert!(log.contains("lost the link to"), "{log}");
    assert!(
        log.contains(&format!(
            "the node restarted meanwhile (pid {first_pid}, now {second_pid})"
        )),
        "{log}"
    );
    // Commands go through again.
    let effect = console.press('d');
    assert!(console.run(effect).0.is_ok());
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_refused_token_is_shown_as_such() {
    let (a, b) = backends();
    let dir = dir("attach-token");
    let node = RemoteNode::start(&dir, &[&a, &b]);
    let mut console = Attached::to(&node.url(), "not-the-token-0123456789");
    let screen = console.wait_for("the token refused", |app, s| {
        phase(app) == Some(RemotePhase::Unauthorized) && s.contains("refused the token (401)")
    });
    assert!(screen.contains("401"), "{screen}");
    assert!(
        screen.contains("Nothing received from"),
        "no empty views in place of the node:\n{screen}"
    );
    assert!(console.log_text().contains("refused the token (401)"));
    let error = console
        .control
        .act(opsconsole::control::Command::PauseTraffic { paused: true })
        .expect_err("not sent");
    assert!(error.contains("401"), "{error}");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn opsconsole_attach_in_a_terminal_over_a_headless_demo() {
    if require_program("tmux").is_none() {
        return;
    }
    let dir = dir("attach-tmux");
    let config = dir.join("demo.toml");
    let text = format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
        demo_on_free_ports(&dir.join("log"))
    );
    std::fs::write(&config, text).expect("write config");
    let demo = Process::spawn(&[
        "--role".as_ref(),
        "demo".as_ref(),
        "--headless".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    let admin = admin_addr(&demo.wait_for("admin API listening on ")).expect("admin address");
    let command = format!(
        "{} attach http://{admin} --token {TOKEN}; echo EXITED $?; sleep 60",
        env!("CARGO_BIN_EXE_opsconsole")
    );
    let tmux = Tmux::start(&dir, &command);

    let badge = format!("@{admin}");
    tmux.wait_for("the demo's overview", |s| {
        s.contains(&badge) && s.contains("Cache nodes") && line_with(s, &["master", "MASTER"])
    });
    tmux.keys(&["2"]);
    tmux.wait_for("the replication view", |s| {
        s.contains("Replication: master") && s.contains("[streaming]")
    });
    tmux.keys(&["5"]);
    tmux.wait_for("the L4 view", |s| {
        s.contains("L4 services") && line_with(s, &["web", "1/1 up"])
    });
    tmux.keys(&["6"]);
    tmux.wait_for("the L7 view", |s| {
        s.contains("L7 listeners and pools") && line_with(s, &["api leastconn", "3/3 up"])
    });
    tmux.keys(&["j"]);
    tmux.wait_for("api/app2 selected", |s| s.contains("api/app2"));
    tmux.keys(&["d"]);
    let screen = tmux.wait_for("app2 draining", |s| line_with(s, &["▶ app2", "DRAIN"]));
    assert!(
        screen.contains("drain api/app2"),
        "the outcome is flashed:\n{screen}"
    );
    assert!(
        !screen.contains(TOKEN),
        "the token is never shown:\n{screen}"
    );
    // On the node itself.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let endpoint = Endpoint::parse(&format!("http://{admin}"), Some(TOKEN.into())).expect("url");
    let snapshot = runtime.block_on(endpoint.snapshot()).expect("snapshot");
    let api = snapshot
        .l7
        .iter()
        .flat_map(|l7| &l7.pools)
        .find(|p| p.name == "api")
        .expect("the api pool");
    let app2 = api.servers.iter().find(|s| s.name == "app2").expect("app2");
    assert_eq!(app2.admin, AdminState::Drain);

    tmux.keys(&["7"]);
    tmux.wait_for("the link's log", |s| {
        s.contains(&format!("Log of the link to {admin}")) && s.contains("connected to the node")
    });
    tmux.keys(&["q"]);
    assert_restored(&tmux);
    drop(demo);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn attach_refuses_what_it_cannot_use_with_the_reason_and_never_echoes_the_token() {
    let secret = "s3cr3t-attach-token-value";
    let attach = |args: &[&str], env_token: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_opsconsole"));
        command
            .arg("attach")
            .args(args)
            .env_remove("OPSCONSOLE_TOKEN");
        if let Some(t) = env_token {
            command.env("OPSCONSOLE_TOKEN", t);
        }
        // stdout is a pipe here, as from a script: no terminal for the console.
        let out = command.output().expect("run opsconsole attach");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("s3cr3t"), "the token is echoed: {stderr}");
        (out.status.code(), stderr)
    };
    for (args, env_token, code, why) in [
        (&["ftp://127.0.0.1:1"][..], None, 1, "only http:// URLs"),
        (&["127.0.0.1"][..], None, 1, "expected http://HOST:PORT"),
        (
            &["http://127.0.0.1:1", "--refresh-hz", "0"][..],
            None,
            1,
            "--refresh-hz 0",
        ),
        (
            &["http://127.0.0.1:1", "--token", secret, "--token-file", "t"][..],
            None,
            2,
            "cannot be used with",
        ),
        (
            &["http://127.0.0.1:1", "--token", secret][..],
            None,
            1,
            "needs a terminal",
        ),
        (
            &["http://127.0.0.1:1"][..],
            Some("s3cr3t\nwith a newline"),
            1,
            "cannot go in a header",
        ),
    ] {
        let (got, stderr) = attach(args, env_token);
        assert_eq!(got, Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
}
