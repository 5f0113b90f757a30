//! What the binary prints about itself: shell completions and man pages generated from the
//! command line's definition, and ctl's help with the exit codes scripts rely on.

use std::process::{Command, Output};

fn opsconsole(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_opsconsole"))
        .args(args)
        .env_remove("OPSCONSOLE_TOKEN")
        .output()
        .expect("run opsconsole")
}

fn stdout_of(args: &[&str]) -> String {
    let out = opsconsole(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn completions_cover_every_shell_and_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_of(&["completions", shell]);
        assert!(script.len() > 1000, "{shell}: {script}");
        for word in [
            "opsconsole",
            "ctl",
            "kill-peer",
            "check-config",
            "token-file",
        ] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = opsconsole(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn the_man_page_is_roff_and_documents_the_options() {
    let page = stdout_of(&["manpage"]);
    assert!(page.starts_with(".TH opsconsole 1 "), "{}", &page[..80]);
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH EXAMPLES"] {
        assert!(page.contains(section), "no {section}");
    }
    for option in [
        "\\-\\-role",
        "\\-\\-config",
        "\\-\\-check\\-config",
        "\\-\\-headless",
        "\\-\\-memory\\-limit",
    ] {
        assert!(page.contains(option), "the page lacks {option}");
    }
    assert!(
        page.contains("opsconsole\\-ctl(1)"),
        "it points at ctl's page"
    );

    let ctl = stdout_of(&["manpage", "ctl"]);
    assert!(ctl.starts_with(".TH opsconsole-ctl 1 "), "{}", &ctl[..80]);
    for text in [
        ".SH COMMANDS",
        "opsconsole ctl weight <POOL/SERVER> <N|+N|\\-N|restore>",
        "kill\\-peer",
        "\\-\\-token\\-file",
        "OPSCONSOLE_ADMIN",
        ".SH \"EXIT CODES\"",
        "4  unauthorized",
    ] {
        assert!(ctl.contains(text), "ctl's page lacks {text}:\n{ctl}");
    }
    let out = opsconsole(&["manpage", "nothing"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ctl"));
}

#[test]
fn ctl_help_lists_the_subcommands_and_the_exit_codes() {
    let help = stdout_of(&["ctl", "--help"]);
    for word in [
        "show",
        "drain",
        "ready",
        "maint",
        "weight",
        "kill-peer",
        "revive-peer",
        "switchover",
        "get",
        "set",
        "reload",
        "traffic",
        "app",
        "--admin",
        "--token-file",
        "OPSCONSOLE_TOKEN",
    ] {
        assert!(help.contains(word), "ctl --help lacks {word}");
    }
    for code in 0..=5 {
        assert!(
            help.contains(&format!("\n  {code}  ")),
            "no exit code {code}:\n{help}"
        );
    }
}
