//! SIGHUP reload of the real `opsconsole --role l7` process under traffic: pools and routes
//! change, not one request fails, and a bad config is refused while the old one serves on.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::http::{HttpConn, HttpServer};
use support::{Process, free_port, signal};

fn config(
    listen: SocketAddr,
    algorithm: &str,
    servers: &[&HttpServer],
    extra_route: bool,
) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("{{ name = \"{}\", address = \"{}\" }}", s.name, s.addr))
        .collect();
    let api = if extra_route {
        "  { path = \"/api/\", pool = \"web\" },\n"
    } else {
        ""
    };
    format!(
        "[l7]\nthreads = 2\n[l7.listeners.main]\nlisten = \"{listen}\"\nroutes = [\n  {{ path = \"/\", pool = \"web\" }},\n{api}]\n[l7.pools.web]\nalgorithm = \"{algorithm}\"\nservers = [{}]\n",
        list.join(", ")
    )
}

/// Requests on kept-alive connections (a new one every 20 requests) until told to stop;
/// every one must get a 200.
fn traffic(
    listen: SocketAddr,
    running: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<Vec<String>, String>> {
    std::thread::spawn(move || {
        let mut served = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while running.load(Ordering::Relaxed) && Instant::now() < deadline {
            let mut c = HttpConn::open(listen).map_err(|e| format!("connect: {e}"))?;
            for _ in 0..20 {
                match c.get("t", "/api/x", &[]) {
                    Ok(r) if r.status == 200 => served.push(r.text()),
                    Ok(r) => {
                        return Err(format!(
                            "after {} good ones: {} {}",
                            served.len(),
                            r.status,
                            r.text()
                        ));
                    }
                    Err(e) => return Err(format!("after {} good ones: {e}", served.len())),
                }
            }
        }
        Ok(served)
    })
}

#[test]
fn sighup_reload_under_traffic_fails_no_request() {
    let (a, b, c) = (
        HttpServer::start("a"),
        HttpServer::start("b"),
        HttpServer::start("c"),
    );
    let dir = support::scratch("l7-reload");
    let path = dir.join("l7.toml");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    std::fs::write(&path, config(listen, "roundrobin", &[&a, &b], false)).expect("write config");
    let config_path = path.to_str().expect("utf-8 path").to_string();
    let log_dir = dir.join("log").to_str().expect("utf-8 path").to_string();
    let node = Process::spawn(&[
        "--headless",
        "--role",
        "l7",
        "--config",
        &config_path,
        "--log-dir",
        &log_dir,
    ]);
    node.wait_for("l7 listener main on");

    let running = Arc::new(AtomicBool::new(true));
    let workers: Vec<_> = (0..3).map(|_| traffic(listen, running.clone())).collect();
    support::wait_until("traffic flows", || a.requests() + b.requests() > 50);

    // Add c, drop b, change the algorithm, add a route.
    std::fs::write(&path, config(listen, "leastconn", &[&a, &c], true)).expect("rewrite config");
    signal(&node.child, "HUP");
    let line = node.wait_for("SIGHUP: config reloaded: l7:");
    assert!(
        line.contains("updated pool web") && line.contains("updated listener main"),
        "{line}"
    );
    support::wait_until("c takes traffic", || c.requests() > 20);
    let b_before = b.requests();

    // A broken config is refused and the running one stays.
    std::fs::write(&path, config(listen, "fastest", &[&a], false)).expect("break config");
    signal(&node.child, "HUP");
    let refused = node.wait_for("SIGHUP: reload refused");
    assert!(refused.contains("fastest"), "{refused}");
    let c_before = c.requests();
    support::wait_until("c still serves", || c.requests() > c_before + 20);

    running.store(false, Ordering::Relaxed);
    let mut served = Vec::new();
    for w in workers {
        served.extend(
            w.join()
                .expect("traffic thread")
                .expect("no request failed"),
        );
    }
    assert!(served.len() > 100, "only {} requests", served.len());
    assert!(b.requests() <= b_before + 3, "b left the pool");
}
