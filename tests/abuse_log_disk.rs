//! The log disk full: a real node (a cache and an L7 balancer with an access log) whose log
//! directory is a small tmpfs filled to the last byte. Serving must go on, nothing may block
//! or die, and logging must resume once space is freed. Needs root for the mount; skipped
//! without it, failed instead under `OPSCONSOLE_REQUIRE_PEERS=1`.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::http::{HttpServer, get};
use support::l7::servers_toml;
use support::{Client, Process, addr_after, listening_addr, peers_required, scratch, wait_until};

/// A tmpfs mounted on a directory of its own; unmounted when dropped, also when the test
/// fails.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "2m"), or says why it cannot: skipped, or a panic
    /// under `OPSCONSOLE_REQUIRE_PEERS=1`.
    fn mount(name: &str, size: &str) -> Option<Tmpfs> {
        let dir = scratch(name).join("mnt");
        std::fs::create_dir_all(&dir).expect("mount point");
        let why = match Command::new("id").arg("-u").output() {
            Ok(o) if String::from_utf8_lossy(&o.stdout).trim() != "0" => {
                "not running as root".to_string()
            }
            Err(e) => format!("cannot run id: {e}"),
            Ok(_) => {
                let out = Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                    .arg(&dir)
                    .output();
                match out {
                    Ok(o) if o.status.success() => return Some(Tmpfs { dir }),
                    Ok(o) => format!(
                        "mount -t tmpfs failed: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                    Err(e) => format!("cannot run mount: {e}"),
                }
            }
        };
        if peers_required() {
            panic!("a tmpfs mount is needed and OPSCONSOLE_REQUIRE_PEERS=1: {why}");
        }
        eprintln!("SKIPPED: the log-disk-full test needs root to mount a tmpfs ({why})");
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file there: detach it now, it goes when released.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Writes zeros into `path` until the filesystem refuses another byte; returns how many.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("filler");
    let mut total = 0u64;
    for chunk in [65536usize, 4096, 512, 1] {
        let zeros = vec![0u8; chunk];
        loop {
            match f.write(&zeros) {
                Ok(n) if n > 0 => total += n as u64,
                Ok(_) => break,
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling: {e}");
                    break;
                }
            }
        }
    }
    let mut probe = std::fs::File::create(path.with_extension("probe")).expect("probe file");
    let e = probe.write_all(b"x").expect_err("the disk is full");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    total
}

/// Total size of the files in `dir` whose names start with `prefix`.
fn logged(dir: &Path, prefix: &str) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

fn contents(dir: &Path, prefix: &str) -> String {
    std::fs::read_dir(dir).map_or(String::new(), |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect()
    })
}

/// A cache set and get, and an HTTP request, each answered: the slowest time.
fn traffic(cache: &mut Client, http: std::net::SocketAddr, round: usize, path: &str) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..round {
        let started = Instant::now();
        let key = format!("k{i}");
        let set = cache.call(format!("set {key} 0 0 5\r\nvalue\r\n").as_bytes(), b"\r\n");
        assert_eq!(set, b"STORED\r\n");
        let got = cache.call(format!("get {key}\r\n").as_bytes(), b"END\r\n");
        assert!(got.starts_with(format!("VALUE {key} 0 5\r\nvalue\r\n").as_bytes()));
        let r = get(http, "t", &format!("{path}{i}"), &[]).expect("an HTTP reply");
        assert_eq!(r.status, 200);
        slowest = slowest.max(started.elapsed());
    }
    slowest
}

#[test]
fn a_full_log_disk_stops_neither_serving_nor_logging_once_space_is_back() {
    let Some(disk) = Tmpfs::mount("abuse-log-disk", "2m") else {
        return;
    };
    let backend = HttpServer::start("a");
    let access_dir = disk.dir.join("access");
    let config = disk.dir.parent().expect("scratch").join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\ndir = \"{}\"\n[master]\nport = 0\n[l7]\nthreads = 1\n[l7.listeners.main]\nlisten = \"127.0.0.1:0\"\naccess_log = {{ dir = \"{}\", file = \"access.log\" }}\nroutes = [{{ path = \"/\", pool = \"web\" }}]\n[l7.pools.web]\n{}\n",
            disk.dir.display(),
            access_dir.display(),
            servers_toml(&[&backend])
        ),
    )
    .expect("write config");
    // The node goes before the mount (dropped in reverse order), so the unmount finds
    // nothing open.
    let mut node = Process::spawn(&[
        "--headless".as_ref(),
        "--status-interval".as_ref(),
        "1".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    let cache_addr = listening_addr(&node.wait_for("listening on")).expect("cache address");
    let http = addr_after(&node.wait_for("l7 listener main on "), " on ");
    let mut cache = Client::connect(cache_addr);
    traffic(&mut cache, http, 20, "/before-");
    wait_until("the access log to be written", || {
        contents(&access_dir, "access.log").contains("/before-19")
    });

    let filled = fill(&disk.dir.join("filler"));
    eprintln!("log disk filled: {filled} bytes of zeros, the next byte refused (ENOSPC)");
    let access_full = logged(&access_dir, "access.log");
    // Traffic on a full disk: every request answered, none slow. Enough of it to fill any
    // buffer between the proxy and the file many times over.
    let started = Instant::now();
    let slowest = traffic(&mut cache, http, 1000, "/full-");
    let status_lines = {
        let mut n = 0;
        while node.log.try_recv().is_ok() {
            n += 1;
        }
        n
    };
    eprintln!(
        "on the full disk: 1000 cache set+get pairs and 1000 HTTP requests in {:?}, the slowest round {slowest:?}; {status_lines} lines on stderr meanwhile",
        started.elapsed()
    );
    assert!(slowest < Duration::from_secs(2), "a round took {slowest:?}");
    assert!(
        node.child.try_wait().expect("status").is_none(),
        "still running"
    );
    assert!(status_lines > 0, "the node kept logging to stderr");
    // Only the rest of the file's last page, which the filesystem had already given it.
    let access_now = logged(&access_dir, "access.log");
    assert!(
        access_now <= access_full.div_ceil(4096) * 4096,
        "nothing more fits: {access_full} bytes, then {access_now}"
    );

    // Space back: both logs are written again, without a restart.
    std::fs::remove_file(disk.dir.join("filler")).expect("free the space");
    std::fs::remove_file(disk.dir.join("filler.probe")).expect("free the probe");
    let freed = Instant::now();
    traffic(&mut cache, http, 20, "/after-");
    wait_until("the access log to be written again", || {
        contents(&access_dir, "access.log").contains("/after-19")
    });
    // A status line made after the space came back (stderr shows it as it is made) must
    // reach the file too.
    while node.log.try_recv().is_ok() {}
    let line = node.wait_for("status: uptime=");
    let uptime = line
        .split_whitespace()
        .find(|w| w.starts_with("uptime="))
        .expect("uptime")
        .to_string();
    wait_until("the node's own log to be written again", || {
        contents(&disk.dir, "opsconsole.log").contains(&format!("status: {uptime} "))
    });
    eprintln!(
        "space freed: the access log and the node's log written again within {:?}",
        freed.elapsed()
    );
    let text = contents(&disk.dir, "opsconsole.log");
    assert!(text.contains("status:"), "status lines in the node's log");
    assert!(node.child.try_wait().expect("status").is_none());
}
