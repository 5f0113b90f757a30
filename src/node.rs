//! The node: starts the configured engines in this process, owns their shutdown (of the
//! whole node, or of one cache when the demo stops it), and is the local implementation of
//! `Control`.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balance::actions;
use crate::balance::l4::L4;
use crate::balance::l7::L7;
use crate::balance::pool::Pool;
use crate::cache::Engine;
use crate::cache::engine::unix_now;
use crate::cache::exec::run_text;
use crate::cache::stats::Counter;
use crate::config::{CacheConfig, Config, ReplicationConfig};
use crate::control::{
    CacheSnapshot, Command, CommandReply, Control, ReplicationSnapshot, Snapshot,
};
use crate::demo::Traffic;
use crate::demo::app_server::AppServer;
use crate::replication::replicator::{Replicator, Settings};
use crate::replication::shared::{Counters, Shared, now_ms};
use crate::sync::lock;

/// How long a stopped cache's connections get to close before it may start again.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// One configured cache engine. Its addresses stay fixed for the node's life, so a cache
/// stopped and started again (the demo's kill and revive) comes back where clients and its
/// peer expect it.
pub struct CacheSlot {
    /// The config section it runs from (`master`, `slave`): its identity in commands.
    pub name: &'static str,
    pub addr: SocketAddr,
    pub repl_addr: Option<SocketAddr>,
    /// The section's settings with the bound ports filled in.
    config: CacheConfig,
    /// Replication settings, the secret already read.
    repl_settings: Option<Settings>,
    running: Mutex<Option<Running>>,
    /// The tasks of a stop still closing, which a restart waits for.
    stopping: Mutex<Option<TaskTracker>>,
}

/// A started cache engine and the tasks serving it.
#[derive(Clone)]
pub struct Running {
    pub engine: Arc<Engine>,
    pub replicator: Option<Arc<Replicator>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl CacheSlot {
    /// The engine while it runs.
    pub fn running(&self) -> Option<Running> {
        lock(&self.running).clone()
    }

    pub fn engine(&self) -> Option<Arc<Engine>> {
        self.running().map(|r| r.engine)
    }

    /// Binds both listeners at the slot's fixed addresses.
    async fn bind(&self) -> io::Result<(TcpListener, Option<TcpListener>)> {
        let cache = crate::cache::server::bind(self.name, &self.addr.to_string()).await?;
        let repl = match self.repl_addr {
            Some(a) => Some(bind_replication(self.name, &a.to_string()).await?),
            None => None,
        };
        Ok((cache, repl))
    }

    /// Starts a fresh engine (empty store) on bound listeners.
    fn launch(&self, cache: TcpListener, repl: Option<TcpListener>, root: &CancellationToken) {
        let engine = Arc::new(Engine::new(self.name, self.config.clone()));
        let cancel = root.child_token();
        let tracker = TaskTracker::new();
        let replicator = match (repl, engine.repl.clone(), &self.repl_settings) {
            (Some(listener), Some(shared), Some(settings)) => {
                let listen = self.repl_addr.unwrap_or(self.addr);
                let rep = Replicator::new(
                    engine.clone(),
                    shared,
                    settings.clone(),
                    listen,
                    cancel.child_token(),
                );
                rep.start(listener, &tracker);
                Some(rep)
            }
            _ => None,
        };
        tracker.spawn(crate::cache::server::serve(
            engine.clone(),
            cache,
            cancel.clone(),
            tracker.clone(),
        ));
        *lock(&self.running) = Some(Running {
            engine,
            replicator,
            cancel,
            tracker,
        });
    }

    /// Stops the engine entirely: listeners and connections close, its data is gone, as if
    /// its process had died. False if it was not running.
    fn stop(&self) -> bool {
        let Some(running) = lock(&self.running).take() else {
            return false;
        };
        running.cancel.cancel();
        running.tracker.close();
        *lock(&self.stopping) = Some(running.tracker);
        true
    }

    /// Waits (bounded) for the last stop's connections to close.
    async fn stopped(&self) {
        let tracker = lock(&self.stopping).take();
        if let Some(t) = tracker {
            let _ = tokio::time::timeout(STOP_WAIT, t.wait()).await;
        }
    }

    fn snapshot(&self) -> CacheSnapshot {
        match self.running() {
            Some(r) => cache_snapshot(self, &r),
            None => CacheSnapshot {
                role: self.name.to_string(),
                listen: self.addr.to_string(),
                stopped: true,
                limit_maxbytes: self.config.memory_limit_bytes(),
                ..CacheSnapshot::default()
            },
        }
    }

    /// True when `peer` (a `host:port` from a config) is this slot's replication address.
    fn is_replication_peer(&self, peer: &str) -> bool {
        match (self.repl_addr, peer.parse::<SocketAddr>()) {
            (Some(mine), Ok(p)) => mine == p,
            _ => false,
        }
    }
}

pub struct Node {
    pub caches: Vec<Arc<CacheSlot>>,
    /// The demo's traffic generator, when the config has a `[demo]` section.
    pub traffic: Option<Arc<Traffic>>,
    /// The L4 balancer, when the config has an `[l4]` section.
    pub l4: Option<L4>,
    /// The L7 balancer, when the config has an `[l7]` section.
    pub l7: Option<L7>,
    /// The demo's HTTP app servers.
    pub apps: Vec<Arc<AppServer>>,
    cancel: CancellationToken,
    /// Stops the demo's traffic generator, first thing at shutdown: it is a client, and
    /// its connection through the L4 balancer would otherwise hold that balancer's grace
    /// period open to the end.
    traffic_stop: CancellationToken,
    /// Tasks that are the node's rather than one cache's (traffic, restarts).
    tracker: TaskTracker,
    /// The runtime the engines run on: actions may arrive from any thread (the console's
    /// blocking pool, a test), and what they start must run here.
    runtime: tokio::runtime::Handle,
    started: Instant,
    /// Where a reload reads the config again; also held while one runs, so a SIGHUP and a
    /// reload command arriving together apply one after the other.
    config_source: Mutex<Option<ConfigSource>>,
}

/// Reads the config again, the way the node first read it (the same file, the same command
/// line overrides). `main` sets it; a node started from config text (tests) has none.
pub type ConfigSource = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

impl Node {
    /// Binds every listener first (so a port conflict fails the start cleanly), then starts
    /// serving.
    pub async fn start(config: &Config) -> io::Result<Node> {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut bound = Vec::new();
        for (role, cache) in config.caches() {
            let name = role.name();
            let addr = format!("{}:{}", cache.listen, cache.port);
            let listener = crate::cache::server::bind(name, &addr).await?;
            let addr = listener.local_addr()?;
            let mut resolved = cache.clone();
            resolved.port = addr.port();
            let repl_settings = match &cache.replication {
                Some(r) => Some(replication_settings(r)?),
                None => None,
            };
            let repl = match &cache.replication {
                Some(r) => {
                    let l = bind_replication(name, &r.listen).await?;
                    let a = l.local_addr()?;
                    if let Some(rr) = resolved.replication.as_mut() {
                        rr.listen = a.to_string();
                    }
                    tracing::info!(role = name, "replication listening on {a}");
                    Some((l, a))
                }
                None => None,
            };
            tracing::info!(role = name, "cache {name} listening on {addr}");
            let slot = CacheSlot {
                name,
                addr,
                repl_addr: repl.as_ref().map(|(_, a)| *a),
                config: resolved,
                repl_settings,
                running: Mutex::new(None),
                stopping: Mutex::new(None),
            };
            bound.push((slot, listener, repl.map(|(l, _)| l)));
        }
        // App servers first, so the balancers' first checks find them.
        let mut apps = Vec::new();
        if let Some(d) = &config.demo {
            for (i, addr) in d.apps.iter().enumerate() {
                apps.push(AppServer::start(
                    format!("app{}", i + 1),
                    addr,
                    &cancel,
                    &tracker,
                )?);
            }
        }
        // L7 before L4, so that an L4 service in front of an L7 listener finds it.
        let l7 = match &config.l7 {
            Some(c) => Some(L7::start(c)?),
            None => None,
        };
        let l4 = match &config.l4 {
            Some(c) => Some(L4::start(c)?),
            None => None,
        };
        let mut caches: Vec<Arc<CacheSlot>> = Vec::new();
        for (slot, listener, repl) in bound {
            slot.launch(listener, repl, &cancel);
            // The demo's preload goes into the first cache before its peer starts, so the
            // first marugoto copy carries all of it.
            if let (Some(d), true) = (&config.demo, caches.is_empty())
                && d.preload_keys > 0
                && let Some(engine) = slot.engine()
            {
                crate::demo::preload(&engine, d);
                tracing::info!(
                    role = slot.name,
                    "demo: preloaded {} items into {}",
                    d.preload_keys,
                    slot.name
                );
            }
            caches.push(Arc::new(slot));
        }
        let via_l4 = |service: &Option<String>| {
            let name = service.as_deref()?;
            l4.as_ref()?.listen_addr(name)
        };
        let traffic_stop = cancel.child_token();
        let traffic = config.demo.as_ref().map(|d| {
            let mut targets: Vec<_> = caches.iter().map(|s| s.addr).collect();
            targets.extend(via_l4(&d.cache_service));
            let t = Arc::new(Traffic::new(d.clone(), targets, via_l4(&d.http_service)));
            tracker.spawn(t.clone().run(traffic_stop.clone()));
            t
        });
        Ok(Node {
            caches,
            traffic,
            l4,
            l7,
            apps,
            cancel,
            traffic_stop,
            tracker,
            runtime: tokio::runtime::Handle::current(),
            started: Instant::now(),
            config_source: Mutex::new(None),
        })
    }

    /// Stops accepting, lets connections finish, and waits up to `grace` for them.
    /// Returns false if something was still running when the grace period ended.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        let started = Instant::now();
        self.traffic_stop.cancel();
        let l4_done = match &self.l4 {
            Some(l4) => l4.shutdown(grace).await,
            None => true,
        };
        let l7_done = match &self.l7 {
            Some(l7) => l7.shutdown(grace.saturating_sub(started.elapsed())).await,
            None => true,
        };
        let grace = grace.saturating_sub(started.elapsed());
        self.cancel.cancel();
        self.tracker.close();
        let trackers: Vec<TaskTracker> = self
            .caches
            .iter()
            .flat_map(|s| {
                let running = s.running().map(|r| r.tracker);
                let stopping = lock(&s.stopping).clone();
                running.into_iter().chain(stopping)
            })
            .collect();
        for t in &trackers {
            t.close();
        }
        let caches_done = tokio::time::timeout(grace, async {
            self.tracker.wait().await;
            for t in &trackers {
                t.wait().await;
            }
        })
        .await
        .is_ok();
        l4_done && l7_done && caches_done
    }

    /// Sets where `reload_from_source` reads the config.
    pub fn set_config_source(&self, source: ConfigSource) {
        *lock(&self.config_source) = Some(source);
    }

    /// Reads the config again and applies it: what SIGHUP and `Command::Reload` both do.
    /// `config reloaded: <changes>`, or why nothing changed.
    pub fn reload_from_source(&self) -> Result<String, String> {
        let source = lock(&self.config_source);
        let load = source
            .as_ref()
            .ok_or("this node has no config file to read again")?;
        let refused = |e: String| format!("reload refused, the running config stays: {e}");
        let config = load().map_err(refused)?;
        let changes = self.reload(&config).map_err(refused)?;
        Ok(format!("config reloaded: {changes}"))
    }

    /// Applies a re-read config to the running balancers. Cache settings need a restart and
    /// are left as they are.
    pub fn reload(&self, config: &crate::config::Config) -> Result<String, String> {
        // Roles come and go only with a restart. Checked for both balancers before either
        // changes, so a refused reload leaves the L4 side as it was too.
        let roles = [
            ("l4", "an L4", self.l4.is_some(), config.l4.is_some()),
            ("l7", "an L7", self.l7.is_some(), config.l7.is_some()),
        ];
        for (section, balancer, running, configured) in roles {
            match (running, configured) {
                (true, false) => {
                    return Err(format!(
                        "the new config has no [{section}] section; {balancer} balancer cannot be removed by a reload"
                    ));
                }
                (false, true) => {
                    return Err(format!(
                        "the new config adds [{section}]; starting a role needs a restart"
                    ));
                }
                _ => {}
            }
        }
        let mut done = Vec::new();
        if let (Some(l4), Some(c)) = (&self.l4, &config.l4) {
            done.push(format!("l4: {}", l4.reload(c).map_err(|e| e.to_string())?));
        }
        if let (Some(l7), Some(c)) = (&self.l7, &config.l7) {
            done.push(format!("l7: {}", l7.reload(c).map_err(|e| e.to_string())?));
        }
        if done.is_empty() {
            return Ok(
                "nothing to reload (only balancers reload; cache settings need a restart)".into(),
            );
        }
        Ok(done.join("; "))
    }

    /// A balanced pool by name: an L7 pool or an L4 service (their names differ).
    fn pool(&self, name: &str) -> Result<Arc<Pool>, String> {
        let l7 = self.l7.as_ref().and_then(|b| b.pool(name));
        let found = l7.or_else(|| self.l4.as_ref().and_then(|b| b.pool(name)));
        match found {
            Some(p) => Ok(p),
            None if self.l4.is_none() && self.l7.is_none() => {
                Err("no balancer runs on this node".into())
            }
            None => Err(format!("no pool '{name}' here")),
        }
    }

    fn app(&self, name: &str) -> Result<&Arc<AppServer>, String> {
        self.apps
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| format!("no demo app server '{name}' runs here"))
    }

    fn slot(&self, role: &str) -> Result<&Arc<CacheSlot>, String> {
        self.caches
            .iter()
            .find(|c| c.name == role)
            .ok_or_else(|| format!("no cache role '{role}' runs on this node"))
    }

    fn replicator(&self, role: &str) -> Result<Arc<Replicator>, String> {
        let slot = self.slot(role)?;
        let running = slot
            .running()
            .ok_or_else(|| format!("the {role} cache is stopped"))?;
        running
            .replicator
            .ok_or_else(|| format!("the {role} cache does not replicate"))
    }

    /// The cache in this process that `role`'s replication peers with (the demo's pair).
    fn local_peer(&self, role: &str) -> Result<Option<&Arc<CacheSlot>>, String> {
        let slot = self.slot(role)?;
        let peer = slot
            .config
            .replication
            .as_ref()
            .and_then(|r| r.peer.as_deref());
        Ok(peer.and_then(|p| {
            self.caches
                .iter()
                .find(|c| c.name != role && c.is_replication_peer(p))
        }))
    }

    /// Kill the peer: one that runs in this process is stopped entirely (its sockets close,
    /// as when its process dies); a remote one is cut off by severing and holding the link.
    fn kill_peer(&self, role: &str, hold_ms: u64) -> Result<String, String> {
        if let Some(peer) = self.local_peer(role)? {
            return if peer.stop() {
                tracing::warn!(
                    role = peer.name,
                    "cache {} on {} stopped by an operator (its sockets are closed)",
                    peer.name,
                    peer.addr
                );
                Ok(format!(
                    "stopped the peer node {} ({})",
                    peer.name, peer.addr
                ))
            } else {
                Err(format!("the peer node {} is already stopped", peer.name))
            };
        }
        Ok(self.replicator(role)?.kill(Duration::from_millis(hold_ms)))
    }

    fn revive_peer(&self, role: &str) -> Result<String, String> {
        if let Some(peer) = self.local_peer(role)? {
            if peer.running().is_some() {
                return Err(format!("the peer node {} is already running", peer.name));
            }
            let reply = format!("starting the peer node {} again", peer.name);
            let peer = peer.clone();
            let root = self.cancel.clone();
            let restart = async move {
                peer.stopped().await;
                if peer.running().is_some() {
                    return;
                }
                match peer.bind().await {
                    Ok((cache, repl)) => {
                        peer.launch(cache, repl, &root);
                        tracing::info!(
                            role = peer.name,
                            "cache {} started again on {} with an empty store",
                            peer.name,
                            peer.addr
                        );
                    }
                    Err(e) => tracing::error!(role = peer.name, "cannot restart: {e}"),
                }
            };
            self.tracker.spawn_on(restart, &self.runtime);
            return Ok(reply);
        }
        Ok(self.replicator(role)?.revive())
    }
}

/// Binds a cache role's replication listener.
async fn bind_replication(section: &str, addr: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} (the [{section}.replication] listen setting): {e}"),
        )
    })
}

fn replication_settings(r: &ReplicationConfig) -> io::Result<Settings> {
    Ok(Settings {
        peer: r.peer.clone(),
        secret: r.load_secret().map_err(io::Error::other)?,
        heartbeat_interval: Duration::from_millis(r.heartbeat_interval_ms),
        heartbeat_timeout: Duration::from_millis(r.heartbeat_timeout_ms),
        reconnect_max: Duration::from_millis(r.reconnect_max_ms),
        copy_rate: crate::cli::parse_size(&r.copy_bytes_per_sec)
            .ok()
            .filter(|&b| b > 0),
    })
}

fn cache_snapshot(slot: &CacheSlot, running: &Running) -> CacheSnapshot {
    let e = &running.engine;
    let c = &e.counters;
    let st = e.store.stats();
    CacheSnapshot {
        role: slot.name.to_string(),
        listen: slot.addr.to_string(),
        stopped: false,
        local_peer: None,
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
        idle_kicks: c.get(Counter::IdleKicks),
        request_timeouts: c.get(Counter::RequestTimeouts),
        send_timeouts: c.get(Counter::SendTimeouts),
        replication: e
            .repl
            .as_ref()
            .map(|r| replication_snapshot(r, running.replicator.as_deref())),
    }
}

fn replication_snapshot(shared: &Shared, replicator: Option<&Replicator>) -> ReplicationSnapshot {
    let st = shared.status().clone();
    let c = &shared.counters;
    let (backlog_bytes, stream_end) = {
        let b = shared.backlog();
        (b.len() as u64, b.end())
    };
    ReplicationSnapshot {
        node_id: format!("{:08x}", shared.node_id),
        listen: replicator.map(|r| r.listen.to_string()).unwrap_or_default(),
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
            at_ms: now_ms(),
            caches: self
                .caches
                .iter()
                .map(|s| {
                    let mut c = s.snapshot();
                    c.local_peer = self
                        .local_peer(s.name)
                        .ok()
                        .flatten()
                        .map(|p| p.name.to_string());
                    c
                })
                .collect(),
            traffic: self.traffic.as_ref().map(|t| t.snapshot()),
            l4: self.l4.as_ref().map(|l| l.snapshot()),
            l7: self.l7.as_ref().map(|l| l.snapshot()),
            apps: self.apps.iter().map(|a| a.snapshot()).collect(),
        }
    }

    fn act(&self, command: Command) -> Result<CommandReply, String> {
        let output = match command {
            Command::KillPeer { role, hold_ms } => self.kill_peer(&role, hold_ms)?,
            Command::RevivePeer { role } => self.revive_peer(&role)?,
            Command::Switchover { role } => {
                let r = self.replicator(&role)?;
                // Refused here, with the reason, rather than "started" and failed in the log.
                r.switchover_possible()?;
                // The handover takes up to a few seconds; it runs on its own and logs how it
                // ended, so the caller (a key press, an API request) is not held up.
                let limit = r.settings.heartbeat_timeout.max(Duration::from_secs(2));
                let switchover = async move {
                    match r.switchover(limit).await {
                        Ok(msg) => tracing::info!(role = r.engine.role, "replication: {msg}"),
                        Err(msg) => tracing::error!(
                            role = r.engine.role,
                            "replication: switchover failed: {msg}"
                        ),
                    }
                };
                self.tracker.spawn_on(switchover, &self.runtime);
                "switchover started; the log says how it ends".into()
            }
            Command::CacheRequest { role, request } => {
                let engine = self
                    .slot(&role)?
                    .engine()
                    .ok_or_else(|| format!("the {role} cache is stopped"))?;
                let output = run_text(&engine, unix_now(), request.as_bytes());
                String::from_utf8_lossy(&output).into_owned()
            }
            Command::PauseTraffic { paused } => {
                let t = self
                    .traffic
                    .as_ref()
                    .ok_or("no traffic generator runs here (it is part of the demo)")?;
                t.set_paused(paused);
                tracing::info!(
                    "demo traffic {} by an operator",
                    if paused { "paused" } else { "resumed" }
                );
                if paused {
                    "traffic paused".into()
                } else {
                    "traffic resumed".into()
                }
            }
            Command::SetAppServer { name, running } => {
                let app = self.app(&name)?;
                if running {
                    app.revive(&self.cancel, &self.tracker, &self.runtime)?
                } else {
                    app.kill()?
                }
            }
            Command::SetAppBehaviour {
                name,
                latency_ms,
                error_percent,
            } => self.app(&name)?.set_behaviour(latency_ms, error_percent)?,
            Command::SetServerState {
                pool,
                server,
                state,
            } => actions::set_state(&*self.pool(&pool)?, &server, state, now_ms())?,
            Command::SetWeight {
                pool,
                server,
                change,
            } => actions::set_weight(&*self.pool(&pool)?, &server, change)?,
            Command::Reload => self.reload_from_source()?,
        };
        Ok(CommandReply { output })
    }
}

/// A one-line status for headless logs.
pub fn status_line(s: &Snapshot) -> String {
    let parts: Vec<String> = s
        .caches
        .iter()
        .map(|c| {
            if c.stopped {
                return format!("{} {} stopped", c.role, c.listen);
            }
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
    let mut parts = parts;
    for svc in s.l4.iter().flatten() {
        let up = svc
            .servers
            .iter()
            .filter(|x| x.health.is_up() && x.admin == crate::balance::backend::AdminState::Ready)
            .count();
        parts.push(format!(
            "l4 {} {} servers={}/{} active={} conns={} in={} out={} errors={}",
            svc.name,
            svc.listen,
            up,
            svc.servers.len(),
            svc.active,
            svc.total_conns,
            svc.bytes_in,
            svc.bytes_out,
            svc.connect_errors
        ));
    }
    for pool in s.l7.iter().flat_map(|l| &l.pools) {
        let up = pool
            .servers
            .iter()
            .filter(|x| {
                x.health.is_up()
                    && x.ejected_for_ms.is_none()
                    && x.admin == crate::balance::backend::AdminState::Ready
            })
            .count();
        let ejected = pool
            .servers
            .iter()
            .filter(|x| x.ejected_for_ms.is_some())
            .count();
        let [_, ok, redirect, client, server] = pool.http.responses;
        parts.push(format!(
            "l7 {} servers={}/{} ejected={ejected} active={} queued={} requests={} 2xx={ok} 3xx={redirect} 4xx={client} 5xx={server} retries={}",
            pool.name,
            up,
            pool.servers.len(),
            pool.active,
            pool.queued,
            pool.http.requests,
            pool.retries
        ));
    }
    format!("status: uptime={}s {}", s.uptime_secs, parts.join(" | "))
}
