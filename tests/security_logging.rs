//! Secrets stay out of logs: a replicated pair with a shared secret and an admin token runs
//! at `-vv` (debug logging) through good and bad handshakes, API calls with good and bad
//! tokens and `--check-config`, and neither the secret nor any token, right or wrong, shows
//! up on stderr, in the log files or in the admin snapshot. `{:?}` of every type that holds
//! a secret or a token shows it as hidden.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use support::http::get;

const SECRET: &str = "repl-secret-7f3a9c2e";
const TOKEN: &str = "admin-token-5b2e8d41c0ff";
/// Wrong credentials an attacker (or a typo) sends: a near miss must not be logged either.
const WRONG_SECRET: &str = "repl-secret-7f3a9c2X";
const WRONG_TOKEN: &str = "admin-token-5b2e8d41c0fX";
const ALL: [&str; 4] = [SECRET, TOKEN, WRONG_SECRET, WRONG_TOKEN];

#[test]
fn debug_output_of_config_and_credential_types_hides_secrets() {
    let toml = format!(
        "[admin]\ntoken = \"{TOKEN}\"\n[master.replication]\npeer = \"127.0.0.1:1\"\nsecret = \"{SECRET}\"\n"
    );
    let config =
        opsconsole::config::Config::from_toml(&toml, Path::new("t.toml")).expect("config parses");
    let repl = config
        .master
        .as_ref()
        .and_then(|m| m.replication.clone())
        .expect("replication");
    let admin = config.admin.clone().expect("admin");
    let endpoint =
        opsconsole::admin::client::Endpoint::parse("http://127.0.0.1:9", Some(TOKEN.into()))
            .expect("endpoint");
    let settings = opsconsole::replication::replicator::Settings {
        peer: None,
        secret: Some(SECRET.as_bytes().to_vec()),
        heartbeat_interval: Duration::from_millis(1),
        heartbeat_timeout: Duration::from_millis(1),
        reconnect_max: Duration::from_millis(1),
        copy_rate: None,
    };
    let cli = opsconsole::cli::Cli::try_parse_from(["opsconsole", "ctl", "--token", TOKEN, "show"])
        .expect("ctl parses");
    let shown = [
        ("Config", format!("{config:?}"), format!("{config:#?}")),
        (
            "ReplicationConfig",
            format!("{repl:?}"),
            format!("{repl:#?}"),
        ),
        ("AdminConfig", format!("{admin:?}"), format!("{admin:#?}")),
        (
            "Endpoint",
            format!("{endpoint:?}"),
            format!("{endpoint:#?}"),
        ),
        (
            "Settings",
            format!("{settings:?}"),
            format!("{settings:#?}"),
        ),
        ("Cli (ctl)", format!("{cli:?}"), format!("{cli:#?}")),
    ];
    let secret_bytes = format!("{:?}", SECRET.as_bytes());
    for (what, plain, pretty) in &shown {
        for text in [plain, pretty] {
            assert!(
                !text.contains(SECRET) && !text.contains(TOKEN),
                "{what}: {text}"
            );
            assert!(
                !text.contains(&secret_bytes[1..secret_bytes.len() - 1]),
                "{what} shows the secret's bytes: {text}"
            );
            assert!(
                text.contains("HIDDEN"),
                "{what} says nothing is set: {text}"
            );
        }
    }
    // The other fields are still there to debug with.
    assert!(shown[1].1.contains("127.0.0.1:1"), "{}", shown[1].1);
    assert!(shown[3].1.contains("127.0.0.1:9"), "{}", shown[3].1);
}

/// Every stderr line of a process, kept as they arrive.
struct Logged {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    fn spawn(args: &[&str]) -> Logged {
        let (child, rx) = support::spawn_logged(args);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in rx.iter() {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Logged { child, lines }
    }

    fn find(&self, needle: &str) -> Option<String> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().find(|l| l.contains(needle)).cloned()
    }

    fn wait_for(&self, needle: &str) -> String {
        let mut found = None;
        support::wait_until(needle, || {
            found = self.find(needle);
            found.is_some()
        });
        found.unwrap_or_default()
    }

    fn text(&self) -> String {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// SIGTERM and wait, so the file appender flushes everything it was given.
    fn stop(&mut self) {
        support::signal(&self.child, "TERM");
        support::wait_exit(&mut self.child);
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addr_after(line: &str, marker: &str) -> SocketAddr {
    line.split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("an address after {marker:?} in {line}"))
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn assert_clean(what: &str, text: &str) {
    for s in ALL {
        assert!(!text.contains(s), "{what} contains {s:?}:\n{text}");
    }
}

#[test]
fn no_secret_or_token_is_logged_at_debug_level() {
    let dir = support::scratch("sec-logging");
    let (ma, sa) = (support::free_port(), support::free_port());
    let config = dir.join("node.toml");
    let repl = "heartbeat_interval_ms = 100\nheartbeat_timeout_ms = 2000\nreconnect_max_ms = 200\n";
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
             [master.replication]\nlisten = \"127.0.0.1:{ma}\"\npeer = \"127.0.0.1:{sa}\"\nsecret = \"{SECRET}\"\n{repl}\
             [slave.replication]\nlisten = \"127.0.0.1:{sa}\"\npeer = \"127.0.0.1:{ma}\"\n{repl}"
        ),
    )
    .expect("write config");
    let secret_file = dir.join("slave.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("write secret");
    let token_file = dir.join("ctl.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    let (config, secret_file, token_file) = (
        config.to_str().expect("utf-8").to_string(),
        secret_file.to_str().expect("utf-8").to_string(),
        token_file.to_str().expect("utf-8").to_string(),
    );
    let master_logs = dir.join("master-logs");
    let slave_logs = dir.join("slave-logs");

    // --check-config at -vv: the effective config, never the secret.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_opsconsole"))
        .args([
            "--config",
            &config,
            "--role",
            "master",
            "-vv",
            "--check-config",
        ])
        .output()
        .expect("run --check-config");
    assert!(out.status.success(), "{out:?}");
    assert_clean(
        "--check-config stdout",
        &String::from_utf8_lossy(&out.stdout),
    );
    assert_clean(
        "--check-config stderr",
        &String::from_utf8_lossy(&out.stderr),
    );

    let mut master = Logged::spawn(&[
        "--headless",
        "-vv",
        "--role",
        "master",
        "-p",
        "0",
        "--config",
        &config,
        "--log-dir",
        master_logs.to_str().expect("utf-8"),
    ]);
    let admin = addr_after(&master.wait_for("admin API listening on"), "listening on ");
    let cache = support::listening_addr(&master.wait_for("cache master listening on"))
        .expect("the cache address");
    // The slave has no admin section of its own in this file, so the [admin] above would
    // clash: it gets the secret from a file and no admin API.
    let slave_config = dir.join("slave.toml");
    std::fs::write(
        &slave_config,
        format!(
            "[slave.replication]\nlisten = \"127.0.0.1:{sa}\"\npeer = \"127.0.0.1:{ma}\"\n{repl}"
        ),
    )
    .expect("write slave config");
    let mut slave = Logged::spawn(&[
        "--headless",
        "-vv",
        "--role",
        "slave",
        "-p",
        "0",
        "--config",
        slave_config.to_str().expect("utf-8"),
        "--repl-secret-file",
        &secret_file,
        "--log-dir",
        slave_logs.to_str().expect("utf-8"),
    ]);
    // A good handshake: the pair streams.
    master.wait_for("replication: start");
    // Bad handshakes: a stray client, and a peer with a wrong proof.
    let repl: SocketAddr = format!("127.0.0.1:{ma}").parse().expect("addr");
    let mut stray = TcpStream::connect(repl).expect("connect");
    let _ = stray.write_all(format!("AUTH {WRONG_SECRET}\r\n").as_bytes());
    drop(stray);
    let mut bad = TcpStream::connect(repl).expect("connect");
    let mut frames = opsconsole::replication::wire::MAGIC.to_vec();
    opsconsole::replication::link::Hello {
        node_id: 7,
        epoch: 0,
        is_master: false,
        stream_id: 1,
        nonce: [9; 16],
        auth: true,
        dialer: true,
        cache_port: 1,
    }
    .encode(&mut frames);
    let at = opsconsole::replication::wire::begin_frame(
        &mut frames,
        opsconsole::replication::wire::Kind::Auth,
    );
    frames.extend_from_slice(WRONG_SECRET.as_bytes());
    opsconsole::replication::wire::finish_frame(&mut frames, at);
    let _ = bad.write_all(&frames);
    master.wait_for("wrong replication secret");
    drop(bad);

    // API calls with the right token, a wrong one, a wrong one in the query string.
    let good = format!("Authorization: Bearer {TOKEN}");
    let wrong = format!("Authorization: Bearer {WRONG_TOKEN}");
    let snap = get(admin, "admin", "/api/v1/snapshot", &[&good]).expect("reply");
    assert_eq!(snap.status, 200);
    assert_clean("the admin snapshot", &snap.text());
    let metrics = get(admin, "admin", "/metrics", &[&good]).expect("reply");
    assert_eq!(metrics.status, 200);
    assert_clean("/metrics", &metrics.text());
    assert_eq!(
        get(admin, "admin", "/api/v1/snapshot", &[&wrong])
            .expect("reply")
            .status,
        401
    );
    let query = format!("/api/v1/snapshot?token={WRONG_TOKEN}");
    assert_eq!(get(admin, "admin", &query, &[]).expect("reply").status, 401);
    master.wait_for("sent no valid token");
    // ctl with the token, and with a wrong one, at -vv.
    let url = format!("http://{admin}");
    for (token_args, ok) in [
        (vec!["--token-file", token_file.as_str()], true),
        (vec!["--token", WRONG_TOKEN], false),
    ] {
        let mut args = vec!["ctl", "--admin", &url];
        args.extend(token_args);
        args.push("show");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_opsconsole"))
            .args(&args)
            .output()
            .expect("run ctl");
        assert_eq!(out.status.success(), ok, "{out:?}");
        assert_clean("ctl stdout", &String::from_utf8_lossy(&out.stdout));
        assert_clean("ctl stderr", &String::from_utf8_lossy(&out.stderr));
    }
    // A cache client sees no secret in stats either.
    let stats = support::conn::stats(cache, true);
    assert_clean("stats", &format!("{stats:?}"));

    master.stop();
    slave.stop();
    assert!(
        master.find("DEBUG").is_some(),
        "-vv logged nothing at debug level"
    );
    assert_clean("the master's stderr", &master.text());
    assert_clean("the slave's stderr", &slave.text());
    let files: Vec<PathBuf> = all_files(&master_logs)
        .into_iter()
        .chain(all_files(&slave_logs))
        .collect();
    assert!(!files.is_empty(), "no log files");
    for file in files {
        let text = String::from_utf8_lossy(&std::fs::read(&file).expect("read log")).into_owned();
        assert_clean(&file.display().to_string(), &text);
    }
}
