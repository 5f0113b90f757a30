//! Building in-process replicated nodes for tests: a runtime, fast replication settings and
//! a one-role config.

use opsconsole::config::{CacheConfig, Config, ReplicationConfig};

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Replication settings fast enough for tests.
pub fn repl(listen: u16, peer: u16) -> ReplicationConfig {
    ReplicationConfig {
        listen: format!("127.0.0.1:{listen}"),
        peer: Some(format!("127.0.0.1:{peer}")),
        heartbeat_interval_ms: 100,
        heartbeat_timeout_ms: 1000,
        reconnect_max_ms: 200,
        ..ReplicationConfig::default()
    }
}

/// A config running one cache role (`master` or `slave`) on an OS-chosen port.
pub fn config(role: &str, r: ReplicationConfig) -> Config {
    let cache = CacheConfig {
        port: 0,
        replication: Some(r),
        ..CacheConfig::default()
    };
    let mut c = Config::default();
    match role {
        "master" => c.master = Some(cache),
        _ => c.slave = Some(cache),
    }
    c
}
