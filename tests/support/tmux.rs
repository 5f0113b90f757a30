//! A console in a detached tmux session on a private tmux server: keys in with send-keys,
//! the screen out with capture-pane, as an operator would see it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(40);

pub struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// Runs `command` in a new session. The server's socket sits beside `dir`, not in it, so
    /// a test that removes its directory before this is dropped still stops the server.
    pub fn start(dir: &Path, command: &str) -> Tmux {
        let t = Tmux {
            socket: dir.with_extension("tmux.sock"),
        };
        let out = t.run(&[
            "new-session",
            "-d",
            "-s",
            "console",
            "-x",
            "100",
            "-y",
            "30",
            command,
        ]);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        t
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "console"];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success());
    }

    pub fn text(&self, text: &str) {
        assert!(
            self.run(&["send-keys", "-t", "console", "-l", text])
                .status
                .success()
        );
    }

    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "console"]).stdout)
            .into_owned()
    }

    pub fn format(&self, f: &str) -> String {
        String::from_utf8_lossy(
            &self
                .run(&["display-message", "-p", "-t", "console", f])
                .stdout,
        )
        .trim()
        .to_string()
    }

    /// Polls the screen until `cond` holds; on timeout shows what the screen said.
    pub fn wait_for(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let mut screen = String::new();
        while Instant::now() < deadline {
            screen = self.screen();
            if cond(&screen) {
                return screen;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}; the screen shows:\n{screen}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A line of the screen containing all of `words`.
pub fn line_with(screen: &str, words: &[&str]) -> bool {
    screen.lines().any(|l| words.iter().all(|w| l.contains(w)))
}

/// The terminal after the console ended: the shell's screen, cursor shown.
pub fn assert_restored(tmux: &Tmux) {
    let screen = tmux.wait_for("the process to exit", |s| s.contains("EXITED"));
    assert!(screen.contains("EXITED 0"), "{screen}");
    assert_eq!(
        tmux.format("#{alternate_on}"),
        "0",
        "left the alternate screen"
    );
    assert_eq!(
        tmux.format("#{cursor_flag}"),
        "1",
        "the cursor is visible again"
    );
    assert!(
        !screen.contains('╭'),
        "no console left on the screen:\n{screen}"
    );
}
