//! The binary's command line as users meet it: help, version, config checking, bad flags,
//! port conflicts and graceful shutdown on signals.

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Output};

use support::{Client, signal, spawn_node, wait_exit};

fn opsconsole(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_opsconsole"))
        .args(args)
        .output()
        .expect("run opsconsole")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_and_help() {
    let out = opsconsole(&["--version"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("opsconsole "));
    let out = opsconsole(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for flag in [
        "--role",
        "--config",
        "--check-config",
        "--headless",
        "-p, --port",
        "-m, --memory-limit",
    ] {
        assert!(help.contains(flag), "help lacks {flag}");
    }
}

#[test]
fn unknown_and_unsupported_switches_are_rejected() {
    let out = opsconsole(&["--role", "master", "-z"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("'-z'"));
    let out = opsconsole(&["--role", "master", "-U", "11211"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("UDP is not supported"));
}

#[test]
fn check_config_prints_the_effective_config() {
    let out = opsconsole(&[
        "--config",
        "configs/master.toml",
        "--check-config",
        "-m",
        "128",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let effective = text(&out.stdout);
    assert!(effective.contains("[master]"));
    assert!(effective.contains("memory_limit_mb = 128"), "{effective}");
}

#[test]
fn check_config_never_prints_a_secret_written_in_the_config() {
    let dir = empty_dir("secrets");
    let path = dir.join("secrets.toml");
    std::fs::write(
        &path,
        "[master]\nport = 0\n[master.replication]\nlisten = \"127.0.0.1:0\"\n\
         secret = \"replication-secret-4711\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"admin-token-0123456789\"\n",
    )
    .expect("write");
    let out = opsconsole(&["--config", path.to_str().expect("utf8"), "--check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    for secret in ["replication-secret-4711", "admin-token-0123456789"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{stdout}{stderr}"
        );
    }
    assert!(stdout.contains("secret = \"HIDDEN\""), "{stdout}");
    assert!(stdout.contains("token = \"HIDDEN\""), "{stdout}");
}

#[test]
fn a_broken_config_names_file_line_column_and_value() {
    let dir = std::env::temp_dir().join(format!("opsconsole-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("broken.toml");
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(b"[master]\nport = 11211\nmemory_limit_mb = \"lots\"\n")
        .expect("write");
    let out = opsconsole(&["--config", path.to_str().expect("utf8"), "--check-config"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("broken.toml:3:19"), "{err}");
    assert!(err.contains("\"lots\""), "{err}");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let out = opsconsole(&[
        "--role",
        "master",
        "--headless",
        "-p",
        &port,
        "--log-dir",
        "/tmp/opsconsole-test-logs",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("[master]"),
        "{err}"
    );
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let mut node = spawn_node(&["--role", "master", "-p", "0"]);
    let mut c = Client::connect(node.addr);
    c.send(b"set k 0 0 1\r\nv\r\n");
    assert_eq!(c.read_exact_n(8), b"STORED\r\n");
    signal(&node.child, "TERM");
    let status = wait_exit(&mut node.child);
    assert_eq!(status.code(), Some(0));
    let log: Vec<String> = node.log.try_iter().collect();
    assert!(
        log.iter().any(|l| l.contains("shutdown complete")),
        "{log:?}"
    );
    assert!(
        std::net::TcpStream::connect(node.addr).is_err(),
        "listener still open"
    );
}

#[test]
fn sigint_shuts_down_gracefully() {
    let mut node = spawn_node(&["--role", "master", "-p", "0"]);
    signal(&node.child, "INT");
    assert_eq!(wait_exit(&mut node.child).code(), Some(0));
}

/// A directory with no `configs/` in it, to run from elsewhere than the repository.
fn empty_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("opsconsole-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[test]
fn the_demo_config_is_built_in_and_valid() {
    let out = Command::new(env!("CARGO_BIN_EXE_opsconsole"))
        .args(["--role", "demo", "--check-config"])
        .current_dir(empty_dir("demo-builtin"))
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = text(&out.stdout);
    for section in ["[master]", "[slave]", "[demo]", "[master.replication]"] {
        assert!(config.contains(section), "{section} missing:\n{config}");
    }
    let out = opsconsole(&["--role", "demo,master", "--check-config"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--role demo runs every role itself"));
}

#[test]
fn a_demo_port_in_use_names_the_port_and_the_config_key() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = empty_dir("demo-port");
    let path = dir.join("demo.toml");
    let (a, b) = (support::free_port(), support::free_port());
    std::fs::write(
        &path,
        format!(
            "[log]\ndir = \"{log}\"\n[demo]\n[master]\nport = {port}\n[master.replication]\nlisten = \"127.0.0.1:{a}\"\npeer = \"127.0.0.1:{b}\"\n[slave]\nport = 0\n[slave.replication]\nlisten = \"127.0.0.1:{b}\"\npeer = \"127.0.0.1:{a}\"\n",
            log = dir.join("log").display()
        ),
    )
    .expect("write");
    let out = opsconsole(&[
        "--role",
        "demo",
        "--headless",
        "--config",
        path.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("[master] port"),
        "{err}"
    );
}

#[test]
fn a_bad_theme_is_a_config_error_naming_the_file_key_and_value() {
    let dir = empty_dir("theme");
    let theme = dir.join("mine.toml");
    std::fs::write(&theme, "[styles]\nhealthy = { fg = \"grean\" }\n").expect("write");
    let out = opsconsole(&[
        "--role",
        "master",
        "--check-config",
        "--theme",
        theme.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("mine.toml") && err.contains("styles.healthy.fg") && err.contains("'grean'"),
        "{err}"
    );
    let out = opsconsole(&["--role", "master", "--check-config", "--theme", "light"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn the_l7_example_validates_and_its_mistakes_are_located() {
    let out = opsconsole(&["--config", "configs/l7.toml", "--check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("[l7.pools.shop]"));

    let out = opsconsole(&["--role", "l7", "--check-config"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--role l7 needs [l7.listeners.NAME]"),
        "{}",
        text(&out.stderr)
    );

    let dir = std::env::temp_dir().join(format!("opsconsole-cli-l7-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("l7.toml");
    let example = std::fs::read_to_string("configs/l7.toml").expect("example");
    std::fs::write(&path, example.replace("pool = \"api\"", "pool = \"apx\"")).expect("write");
    let out = opsconsole(&["--config", path.to_str().expect("utf-8"), "--check-config"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("l7.toml:") && err.contains("no [l7.pools.apx]"),
        "{err}"
    );
}
