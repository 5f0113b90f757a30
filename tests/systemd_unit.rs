//! `configs/opsconsole.service`: the command it starts is one the binary accepts, and, where
//! `systemd-analyze` is installed, systemd finds nothing wrong with the unit.

mod support;

use std::process::Command;

const UNIT: &str = include_str!("../configs/opsconsole.service");

fn setting<'a>(key: &str) -> Vec<&'a str> {
    UNIT.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn the_unit_runs_the_engines_headless_under_a_hardened_sandbox() {
    let exec = setting("ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart");
    let words: Vec<&str> = exec[0].split_whitespace().collect();
    assert_eq!(words[0], "/usr/bin/opsconsole");
    for flag in ["--headless", "--config", "/etc/opsconsole/opsconsole.toml"] {
        assert!(words.contains(&flag), "ExecStart lacks {flag}");
    }
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("LogsDirectory", "opsconsole"),
        ("Restart", "on-failure"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(setting(key), vec![value], "{key}");
    }
    assert!(setting("LimitNOFILE").len() == 1);
    assert!(
        setting("AmbientCapabilities").is_empty(),
        "no capability unless a port below 1024 asks for it"
    );

    // The same flags, pointed at an example config, pass the binary's own check.
    let log_dir = support::scratch("unit").join("log");
    let args: Vec<String> = words[1..]
        .iter()
        .map(|w| match *w {
            "/etc/opsconsole/opsconsole.toml" => "configs/l7.toml".to_string(),
            "/var/log/opsconsole" => log_dir.display().to_string(),
            other => other.to_string(),
        })
        .chain(["--check-config".to_string()])
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_opsconsole"))
        .args(&args)
        .output()
        .expect("run opsconsole");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    // verify wants the binary and the man pages the unit names; point it at this build's.
    let dir = support::scratch("unit-verify");
    let man = dir.join("man/man1");
    std::fs::create_dir_all(&man).expect("man dir");
    for (page, args) in [
        ("opsconsole.1", &["manpage"][..]),
        ("opsconsole-ctl.1", &["manpage", "ctl"]),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_opsconsole"))
            .args(args)
            .output()
            .expect("manpage");
        std::fs::write(man.join(page), out.stdout).expect("write page");
    }
    let unit = dir.join("opsconsole.service");
    std::fs::write(
        &unit,
        UNIT.replace("/usr/bin/opsconsole", env!("CARGO_BIN_EXE_opsconsole")),
    )
    .expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", dir.join("man"))
        .output()
        .expect("run systemd-analyze");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
