//! The node: starts the configured engines in this process, owns their shutdown, and is the
//! local implementation of `Control`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::Engine;
use crate::cache::engine::unix_now;
use crate::cache::exec::run_text;
use crate::cache::stats::Counter;
use crate::config::{Config, ReplicationConfig};
use crate::control::{
    CacheSnapshot, Command, CommandReply, Control, ReplicationSnapshot, Snapshot,
};
use crate::replication::replicator::{Replicator, Settings};
use crate::replication::shared::{Counters, Shared, now_ms};

/// A running cache engine and where it listens.
pub struct CacheHandle {
    pub engine: Arc<Engine>,
    pub addr: SocketAddr,
    pub replicator: Option<Arc<Replicator>>,
}

pub struct Node {
    pub caches: Vec<CacheHandle>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    started: Instant,
}

impl Node {
    /// Binds every listener first (so a port conflict fails the start cleanly), then starts
    /// serving.
    pub async fn start(config: &Config) -> io::Result<Node> {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut bound = Vec::new();
        for (role, cache) in config.caches() {
            let engine = Arc::new(Engine::new(role.name(), cache.clone()));
            let listener = crate::cache::server::bind(&engine).await?;
            let addr = listener.local_addr()?;
            let repl = match &cache.replication {
                Some(r) => Some(bind_replication(&engine, r).await?),
                None => None,
            };
            tracing::info!(
                role = engine.role,
                "cache {} listening on {addr}",
                engine.role
            );
            bound.push((engine, listener, addr, repl));
        }
        let mut caches = Vec::new();
        for (engine, listener, addr, repl) in bound {
            let replicator = match (repl, engine.repl.clone()) {
                (Some((settings, repl_listener, listen)), Some(shared)) => {
                    let r = Replicator::new(
                        engine.clone(),
                        shared,
                        settings,
                        listen,
                        cancel.child_token(),
                    );
                    r.start(repl_listener, &tracker);
                    Some(r)
                }
                _ => None,
            };
            tracker.spawn(crate::cache::server::serve(
                engine.clone(),
                listener,
                cancel.clone(),
                tracker.clone(),
            ));
            caches.push(CacheHandle {
                engine,
                addr,
                replicator,
            });
        }
        Ok(Node {
            caches,
            cancel,
            tracker,
            started: Instant::now(),
        })
    }

    /// Stops accepting, lets connections finish, and waits up to `grace` for them.
    /// Returns false if something was still running when the grace period ended.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }

    fn replicator(&self, role: &str) -> Result<&Arc<Replicator>, String> {
        self.cache(role)?
            .replicator
            .as_ref()
            .ok_or_else(|| format!("the {role} cache does not replicate"))
    }

    fn cache(&self, role: &str) -> Result<&CacheHandle, String> {
        self.caches
            .iter()
            .find(|c| c.engine.role == role)
            .ok_or_else(|| format!("no cache role '{role}' runs on this node"))
    }
}

/// Binds a cache role's replication listener and resolves its settings.
async fn bind_replication(
    engine: &Engine,
    r: &ReplicationConfig,
) -> io::Result<(Settings, TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(&r.listen).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot listen on {} (the [{}.replication] listen setting): {e}",
                r.listen, engine.role
            ),
        )
    })?;
    let listen = listener.local_addr()?;
    let secret = r.load_secret().map_err(io::Error::other)?;
    let settings = Settings {
        peer: r.peer.clone(),
        secret,
        heartbeat_interval: Duration::from_millis(r.heartbeat_interval_ms),
        heartbeat_timeout: Duration::from_millis(r.heartbeat_timeout_ms),
        reconnect_max: Duration::from_millis(r.reconnect_max_ms),
    };
    tracing::info!(role = engine.role, "replication listening on {listen}");
    Ok((settings, listener, listen))
}

fn cache_snapshot(handle: &CacheHandle) -> CacheSnapshot {
    let e = &handle.engine;
    let c = &e.counters;
    let st = e.store.stats();
    CacheSnapshot {
        role: e.role.to_string(),
        listen: handle.addr.to_string(),
        curr_items: st.curr_items,
        total_items: st.total_items,
        bytes: st.bytes,
        limit_maxbytes: e.store.limit() as u64,
        evictions: st.evictions,
        reclaimed: st.reclaimed,
        curr_connections: c.curr_connections.load(Ordering::Relaxed),
        total_connections: c.total_connections.load(Ordering::Relaxed),
        rejected_connections: c.rejected_connections.load(Ordering::Relaxed),
        cmd_get: c.get(Counter::CmdGet),
        cmd_set: c.get(Counter::CmdSet),
        cmd_touch: c.get(Counter::CmdTouch),
        get_hits: c.get(Counter::GetHits),
        get_misses: c.get(Counter::GetMisses),
        delete_hits: c.get(Counter::DeleteHits),
        delete_misses: c.get(Counter::DeleteMisses),
        incr_hits: c.get(Counter::IncrHits),
        decr_hits: c.get(Counter::DecrHits),
        bytes_read: c.get(Counter::BytesRead),
        bytes_written: c.get(Counter::BytesWritten),
        replication: e.repl.as_ref().map(|r| replication_snapshot(r, handle)),
    }
}

fn replication_snapshot(shared: &Shared, handle: &CacheHandle) -> ReplicationSnapshot {
    let st = shared.status().clone();
    let c = &shared.counters;
    let (backlog_bytes, stream_end) = {
        let b = shared.backlog();
        (b.len() as u64, b.end())
    };
    ReplicationSnapshot {
        node_id: format!("{:08x}", shared.node_id),
        listen: handle
            .replicator
            .as_ref()
            .map(|r| r.listen.to_string())
            .unwrap_or_default(),
        serving: shared.serving(),
        lag_bytes: stream_end.saturating_sub(shared.peer_acked()),
        backlog_bytes,
        heartbeat_age_ms: st.last_heard_ms.map(|t| now_ms().saturating_sub(t)),
        items_sent: Counters::get(&c.items_sent),
        bytes_sent: Counters::get(&c.bytes_sent),
        items_received: Counters::get(&c.items_received),
        bytes_received: Counters::get(&c.bytes_received),
        full_resyncs: Counters::get(&c.full_resyncs),
        partial_resyncs: Counters::get(&c.partial_resyncs),
        conflicts: Counters::get(&c.conflicts),
        links_refused: Counters::get(&c.links_refused),
        link_losses: Counters::get(&c.link_losses),
        sync_failures: Counters::get(&c.sync_failures),
        status: st,
    }
}

impl Control for Node {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            caches: self.caches.iter().map(cache_snapshot).collect(),
        }
    }

    fn act(&self, command: Command) -> Result<CommandReply, String> {
        match command {
            Command::KillPeer { role, hold_ms } => {
                let r = self.replicator(&role)?;
                Ok(CommandReply {
                    output: r.kill(Duration::from_millis(hold_ms)),
                })
            }
            Command::Switchover { role } => {
                let r = self.replicator(&role)?.clone();
                // The handover takes up to a few seconds; it runs on its own and logs how it
                // ended, so the caller (a key press, an API request) is not held up.
                let limit = r.settings.heartbeat_timeout.max(Duration::from_secs(2));
                let runtime = tokio::runtime::Handle::try_current()
                    .map_err(|_| "switchover needs the node's runtime".to_string())?;
                runtime.spawn(async move {
                    match r.switchover(limit).await {
                        Ok(msg) => tracing::info!(role = r.engine.role, "replication: {msg}"),
                        Err(msg) => tracing::error!(
                            role = r.engine.role,
                            "replication: switchover failed: {msg}"
                        ),
                    }
                });
                Ok(CommandReply {
                    output: "switchover started; the log says how it ends".into(),
                })
            }
            Command::RevivePeer { role } => {
                let r = self.replicator(&role)?;
                Ok(CommandReply { output: r.revive() })
            }
            Command::CacheRequest { role, request } => {
                let handle = self.cache(&role)?;
                let output = run_text(&handle.engine, unix_now(), request.as_bytes());
                Ok(CommandReply {
                    output: String::from_utf8_lossy(&output).into_owned(),
                })
            }
        }
    }
}

/// A one-line status for headless logs.
pub fn status_line(s: &Snapshot) -> String {
    let parts: Vec<String> = s
        .caches
        .iter()
        .map(|c| {
            let ratio = c
                .hit_ratio()
                .map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0));
            format!(
                "{} {} items={} mem={}/{}MiB conns={} get={} set={} hit={} evictions={}",
                c.role,
                c.listen,
                c.curr_items,
                c.bytes >> 20,
                c.limit_maxbytes >> 20,
                c.curr_connections,
                c.cmd_get,
                c.cmd_set,
                ratio,
                c.evictions
            )
        })
        .collect();
    format!("status: uptime={}s {}", s.uptime_secs, parts.join(" | "))
}
