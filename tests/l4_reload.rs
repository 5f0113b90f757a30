//! SIGHUP reload of the real `opsconsole --role l4` process under traffic: pool changes apply,
//! no connection is reset, and a bad config is refused while the old one keeps serving.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::backends::{Backend, Behaviour, ask, hold, round_trip};
use support::{Process, free_port, signal};

fn config(listen: SocketAddr, scheduler: &str, servers: &[&Backend]) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|b| format!("{{ name = \"{}\", address = \"{}\" }}", b.name, b.addr))
        .collect();
    format!(
        "[l4]\nthreads = 2\n[l4.services.web]\nlisten = \"{listen}\"\nscheduler = \"{scheduler}\"\nservers = [{}]\n",
        list.join(", ")
    )
}

#[test]
fn sighup_reload_under_traffic_resets_no_connection() {
    let (a, b, c) = (
        Backend::start("a", Behaviour::Echo),
        Backend::start("b", Behaviour::Echo),
        Backend::start("c", Behaviour::Echo),
    );
    let dir = support::scratch("l4-reload");
    let path = dir.join("l4.toml");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    std::fs::write(&path, config(listen, "rr", &[&a, &b])).expect("write config");
    let config_path = path.to_str().expect("utf-8 path").to_string();
    let log_dir = dir.join("log").to_str().expect("utf-8 path").to_string();
    let node = Process::spawn(&[
        "--headless",
        "--role",
        "l4",
        "--config",
        &config_path,
        "--log-dir",
        &log_dir,
    ]);
    node.wait_for("l4 service web listening on");

    // A connection that lives across both reloads.
    let (_, mut long_lived) = hold(listen);

    // Steady traffic while we reload; every conversation must succeed.
    let running = Arc::new(AtomicBool::new(true));
    let traffic = {
        let running = running.clone();
        std::thread::spawn(move || {
            let mut served = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while running.load(Ordering::Relaxed) && Instant::now() < deadline {
                match ask(listen) {
                    Ok(name) => served.push(name),
                    Err(e) => return Err(format!("after {} good ones: {e}", served.len())),
                }
            }
            Ok(served)
        })
    };
    std::thread::sleep(Duration::from_millis(200));

    // Add c, drop b, change the scheduler.
    std::fs::write(&path, config(listen, "wrr", &[&a, &c])).expect("rewrite config");
    signal(&node.child, "HUP");
    node.wait_for("SIGHUP: config reloaded: l4: updated web");
    support::wait_until("c takes traffic", || c.accepted() > 0);
    let b_before = b.accepted();

    // A broken config is refused and the running one stays.
    std::fs::write(
        &path,
        "[l4.services.web]\nlisten = \"127.0.0.1:0\"\nscheduler = \"nope\"\n",
    )
    .expect("break config");
    signal(&node.child, "HUP");
    let refused = node.wait_for("SIGHUP: reload refused");
    assert!(refused.contains("nope"), "{refused}");
    std::thread::sleep(Duration::from_millis(200));

    running.store(false, Ordering::Relaxed);
    let served = traffic
        .join()
        .expect("traffic thread")
        .expect("no conversation failed");
    assert!(served.len() > 20, "only {} conversations", served.len());
    assert!(served.iter().any(|n| n == "c"));
    assert_eq!(
        b.accepted(),
        b_before,
        "b left the pool: nothing new reached it"
    );
    assert_eq!(
        round_trip(&mut long_lived, "still connected"),
        "still connected"
    );
}
