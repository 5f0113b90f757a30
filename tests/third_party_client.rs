//! A real third-party client against opsconsole: Python's `pymemcache` runs
//! `tests/clients/pymemcache_check.py` (set/get/get_many, gets/cas, incr/decr, delete, touch,
//! add/replace/append/prepend, flush_all, with and without `default_noreply`). The same script
//! also runs against the real memcached, which proves its expectations are memcached's.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/pymemcache_check.py"
);
const SCRIPT_DEADLINE: Duration = Duration::from_secs(60);
/// memcached refuses to run as root without `-u`; for other users the switch is ignored.
const MEMCACHED_ARGS: &[&str] = &["-u", "root"];

/// Whether `python3` with `pymemcache` is available; skips (None) or fails per
/// `OPSCONSOLE_REQUIRE_PEERS` when it is not.
fn require_pymemcache() -> Option<()> {
    support::require_program("python3")?;
    let importable = Command::new("python3")
        .args(["-c", "import pymemcache"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if importable {
        return Some(());
    }
    if support::peers_required() {
        panic!("python3 cannot import pymemcache and OPSCONSOLE_REQUIRE_PEERS=1");
    }
    eprintln!("SKIPPED: python3 cannot import pymemcache (pip install pymemcache)");
    None
}

/// Runs the check script against `addr`; returns its combined output on failure.
fn run_script(addr: SocketAddr) -> Result<(), String> {
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start python3: {e}"))?;
    let deadline = Instant::now() + SCRIPT_DEADLINE;
    // Poll instead of blocking on wait(), so a hung client cannot hang the test run.
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "pymemcache script still running after {SCRIPT_DEADLINE:?}"
                ));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if status.success() {
        Ok(())
    } else {
        Err(format!("exit {status}:\n{text}"))
    }
}

#[test]
fn pymemcache_works_against_memcached_and_opsconsole() {
    if require_pymemcache().is_none() {
        return;
    }
    // The script's expectations are checked against the real thing first.
    if let Some(memcached) = support::spawn_memcached(MEMCACHED_ARGS) {
        if let Err(e) = run_script(memcached.addr) {
            panic!("pymemcache script fails against the real memcached (the script is wrong): {e}");
        }
    }
    let node = support::spawn_node(&["--role", "master", "-p", "0"]);
    if let Err(e) = run_script(node.addr) {
        panic!("pymemcache against opsconsole at {}: {e}", node.addr);
    }
}
