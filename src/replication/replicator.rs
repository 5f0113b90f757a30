//! The replication role state machine for one cache node: the listener for the peer, the
//! dialer that keeps trying to reach it, admission of links (one peer at a time, a
//! deterministic master), failover when a link is lost, and the operator's kill/revive.

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth;
use super::link::{self, Hello};
use super::shared::{LinkPhase, NodeRole, Shared, now_ms};
use crate::cache::Engine;
use crate::sync::lock;

/// Resolved replication settings.
#[derive(Clone)]
pub struct Settings {
    pub peer: Option<String>,
    pub secret: Option<Vec<u8>>,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub reconnect_max: Duration,
    /// Bytes per second a full copy may send (`None` = unlimited).
    pub copy_rate: Option<u64>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field named, so a new one is a compile error here rather than missing.
        let Settings {
            peer,
            secret,
            heartbeat_interval,
            heartbeat_timeout,
            reconnect_max,
            copy_rate,
        } = self;
        f.debug_struct("Settings")
            .field("peer", peer)
            .field("secret", &crate::config::Redacted(secret))
            .field("heartbeat_interval", heartbeat_interval)
            .field("heartbeat_timeout", heartbeat_timeout)
            .field("reconnect_max", reconnect_max)
            .field("copy_rate", copy_rate)
            .finish()
    }
}

/// The link currently holding the single peer slot.
struct ActiveLink {
    id: u64,
    peer_node: u32,
    /// Which node dialed it; when links cross, both nodes keep the one the lower id dialed.
    dialer: u32,
    /// Both nodes admitted it and roles were applied.
    committed: bool,
    cancel: CancellationToken,
    reason: Arc<Mutex<String>>,
}

/// A link that passed admission.
pub struct Admitted {
    pub id: u64,
    pub is_master: bool,
    pub cancel: CancellationToken,
    reason: Arc<Mutex<String>>,
}

impl Admitted {
    /// Why the link was cancelled from outside (operator kill, replaced, shutdown).
    pub fn cancel_reason(&self) -> String {
        self.reason.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

pub struct Replicator {
    pub engine: Arc<Engine>,
    pub shared: Arc<Shared>,
    pub settings: Settings,
    pub listen: SocketAddr,
    slot: Mutex<Option<ActiveLink>>,
    next_link: AtomicU64,
    wake_dialer: Notify,
    /// An operator lifted a hold: retry now rather than after the backoff.
    revived: Notify,
    /// The peer's change stream this node holds, as (stream id, offset), once a copy of it
    /// completed; kept across link losses so a short break resumes instead of recopying.
    peer_stream: Mutex<Option<(u64, u64)>>,
    copy_in_done: AtomicBool,
    copy_out_done: AtomicBool,
    cancel: CancellationToken,
}

/// The peer's cache address: its host as this link sees it, with the port it announced.
fn peer_cache_addr(peer_addr: &str, cache_port: u16) -> Option<String> {
    if cache_port == 0 {
        return None;
    }
    let host = match peer_addr.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().to_string(),
        Err(_) => peer_addr.rsplit_once(':')?.0.to_string(),
    };
    Some(if host.contains(':') {
        format!("[{host}]:{cache_port}")
    } else {
        format!("{host}:{cache_port}")
    })
}

impl Replicator {
    pub fn new(
        engine: Arc<Engine>,
        shared: Arc<Shared>,
        settings: Settings,
        listen: SocketAddr,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Replicator {
            engine,
            shared,
            settings,
            listen,
            slot: Mutex::new(None),
            next_link: AtomicU64::new(1),
            wake_dialer: Notify::new(),
            revived: Notify::new(),
            peer_stream: Mutex::new(None),
            copy_in_done: AtomicBool::new(false),
            copy_out_done: AtomicBool::new(false),
            cancel,
        })
    }

    /// Starts the listener and (with a peer configured) the dialer.
    pub fn start(self: &Arc<Self>, listener: TcpListener, tracker: &TaskTracker) {
        {
            let mut st = self.shared.status();
            st.peer = self.settings.peer.clone();
            if st.role == NodeRole::Master {
                st.event("listening for a slave".into());
            }
        }
        if self.shared.status().role == NodeRole::Master {
            tracing::info!(
                role = self.engine.role,
                "replication: listen ({})",
                self.listen
            );
        }
        tracker.spawn(self.clone().accept_loop(listener, tracker.clone()));
        if self.settings.peer.is_some() {
            tracker.spawn(self.clone().dial_loop());
        } else if self.shared.status().role == NodeRole::Slave {
            // A slave with no peer to reach can only serve as a master.
            self.promote("no peer configured");
        }
    }

    pub fn secret(&self) -> Option<&[u8]> {
        self.settings.secret.as_deref()
    }

    pub fn hello(&self, dialed: bool) -> Hello {
        let st = self.shared.status();
        Hello {
            node_id: self.shared.node_id,
            epoch: st.epoch,
            is_master: st.role == NodeRole::Master,
            stream_id: self.shared.stream_id,
            nonce: auth::random_bytes::<16>(),
            auth: self.settings.secret.is_some(),
            dialer: dialed,
            cache_port: self.engine.config.port,
        }
    }

    fn held(&self) -> bool {
        let mut st = self.shared.status();
        match st.held_until_ms {
            Some(until) if until > now_ms() => true,
            Some(_) => {
                st.held_until_ms = None;
                if st.link == LinkPhase::HeldDown {
                    st.link = LinkPhase::Listening;
                }
                false
            }
            None => false,
        }
    }

    /// Reserves the single peer slot for a handshaken link and decides who will be master.
    /// Nothing else changes yet: the link is committed only once the peer has admitted it
    /// too (its `Resume` arrives), so a link the peer refuses, or a crossing link dropped on
    /// the way, never moves roles or stops serving.
    pub fn admit(&self, peer: &Hello, dialed: bool) -> Result<Admitted, String> {
        if self.held() {
            return Err("the link is held down by an operator".into());
        }
        let me = self.shared.node_id;
        if peer.node_id == me {
            return Err(format!(
                "the peer has this node's own id {me:08x} (connected to itself?)"
            ));
        }
        let mut slot = lock(&self.slot);
        let dialer = if dialed { me } else { peer.node_id };
        if let Some(current) = slot.as_ref() {
            if current.peer_node != peer.node_id {
                return Err(format!(
                    "already paired with node {:08x}; a second slave is refused",
                    current.peer_node
                ));
            }
            // Two links to the same peer (both nodes dialed at once): the one already being
            // set up stays. Replacing it could strand a peer that has already committed to
            // it; refusing both sometimes is harmless, the jittered retries pair them.
            return Err(format!(
                "links crossed; keeping the one node {:08x} dialed",
                current.dialer
            ));
        }
        let is_master = {
            let mut st = self.shared.status();
            let my_rank = (st.role == NodeRole::Master, st.epoch, Reverse(me));
            let peer_rank = (peer.is_master, peer.epoch, Reverse(peer.node_id));
            if st.peer_node.is_none() {
                st.link = LinkPhase::Handshake;
            }
            my_rank > peer_rank
        };
        let id = self.next_link.fetch_add(1, Ordering::Relaxed);
        let cancel = self.cancel.child_token();
        let reason = Arc::new(Mutex::new(String::from("link cancelled")));
        *slot = Some(ActiveLink {
            id,
            peer_node: peer.node_id,
            dialer,
            committed: false,
            cancel: cancel.clone(),
            reason: reason.clone(),
        });
        Ok(Admitted {
            id,
            is_master,
            cancel,
            reason,
        })
    }

    /// Both nodes admitted the link: apply the role decision. False if the link was
    /// replaced in the meantime.
    pub fn commit(&self, id: u64, peer: &Hello, is_master: bool, peer_addr: &str) -> bool {
        let mut slot = lock(&self.slot);
        let Some(link) = slot.as_mut().filter(|l| l.id == id) else {
            return false;
        };
        link.committed = true;
        let mut st = self.shared.status();
        if is_master {
            if st.role != NodeRole::Master {
                st.role = NodeRole::Master;
                st.epoch = st.epoch.max(peer.epoch) + 1;
                let text = format!("became master (epoch {}) on meeting the peer", st.epoch);
                st.event(text);
            }
        } else {
            if st.role != NodeRole::Slave {
                st.event(format!("became slave of node {:08x}", peer.node_id));
                tracing::info!(
                    role = self.engine.role,
                    "replication: node {:08x} outranks this node; becoming its slave",
                    peer.node_id
                );
            }
            st.role = NodeRole::Slave;
            st.epoch = peer.epoch;
            // Never serve a data set that is not yet a complete copy of the master's.
            self.shared.set_serving(false);
        }
        st.link = LinkPhase::Copying;
        // The configured peer address is what an operator recognises; a dialing peer's
        // socket address has a temporary port.
        st.peer = Some(
            self.settings
                .peer
                .clone()
                .unwrap_or_else(|| peer_addr.to_string()),
        );
        st.peer_node = Some(peer.node_id);
        st.peer_cache = peer_cache_addr(peer_addr, peer.cache_port);
        st.last_heard_ms = Some(now_ms());
        st.copy_in = None;
        st.copy_out = None;
        let text = format!(
            "link up with node {:08x} at {peer_addr} as {}",
            peer.node_id,
            st.role.label()
        );
        st.event(text);
        self.copy_in_done.store(false, Ordering::Relaxed);
        self.copy_out_done.store(false, Ordering::Relaxed);
        true
    }

    /// What this node holds of a peer stream, if it is the stream the peer still has.
    pub fn held_peer_stream(&self, peer_stream_id: u64) -> Option<(u64, u64)> {
        lock(&self.peer_stream).filter(|(id, _)| *id == peer_stream_id)
    }

    pub fn set_held_peer_stream(&self, stream_id: u64, offset: u64) {
        *lock(&self.peer_stream) = Some((stream_id, offset));
    }

    pub fn applied_peer_offset(&self) -> u64 {
        lock(&self.peer_stream).map_or(0, |(_, off)| off)
    }

    pub fn backlog_holds(&self, offset: u64) -> bool {
        let b = self.shared.backlog();
        offset >= b.start() && offset <= b.end()
    }

    /// A full copy from the peer begins: until it ends, what this node holds of the peer's
    /// stream is not a complete base to resume from.
    pub fn copy_in_started(&self) {
        *lock(&self.peer_stream) = None;
        self.copy_in_done.store(false, Ordering::Relaxed);
    }

    pub fn copy_in_finished(&self, full: bool) {
        self.shared.set_serving(true);
        self.copy_in_done.store(true, Ordering::Relaxed);
        {
            let mut st = self.shared.status();
            if let Some(p) = st.copy_in.as_mut() {
                p.finished_ms = Some(now_ms());
            }
            if full {
                st.event("marugoto copy from the peer complete".into());
            }
        }
        if full {
            tracing::info!(
                role = self.engine.role,
                "replication: marugoto copy complete"
            );
        }
        self.maybe_streaming();
    }

    pub fn copy_out_finished(&self, full: bool) {
        self.copy_out_done.store(true, Ordering::Relaxed);
        if full {
            let mut st = self.shared.status();
            if let Some(p) = st.copy_out.as_mut() {
                p.finished_ms = Some(now_ms());
            }
            st.event("marugoto copy to the peer complete".into());
        }
        self.maybe_streaming();
    }

    fn maybe_streaming(&self) {
        if self.copy_in_done.load(Ordering::Relaxed) && self.copy_out_done.load(Ordering::Relaxed) {
            let mut st = self.shared.status();
            if st.link == LinkPhase::Copying {
                st.link = LinkPhase::Streaming;
                st.event("streaming".into());
                drop(st);
                tracing::info!(role = self.engine.role, "replication: start");
            }
        }
    }

    /// Called when a link ends for any reason. Returns whether it had been committed.
    pub fn link_ended(&self, id: u64, reason: &str) -> bool {
        // The slot stays locked throughout, so a link admitted meanwhile cannot have its
        // state overwritten by this one's end.
        let mut slot = lock(&self.slot);
        let Some(link) = slot.as_ref().filter(|l| l.id == id) else {
            return false; // a replaced link; the one that replaced it owns the slot
        };
        let committed = link.committed;
        *slot = None;
        let held = {
            let mut st = self.shared.status();
            let held = st.held_until_ms.is_some();
            if st.peer_node.is_none() || committed {
                st.link = if held {
                    LinkPhase::HeldDown
                } else {
                    LinkPhase::Listening
                };
            }
            if committed {
                st.event(format!("link down: {reason}"));
                st.peer_node = None;
            }
            held
        };
        if !committed {
            tracing::info!(
                role = self.engine.role,
                "replication: the peer did not take the link ({reason})"
            );
            self.wake_dialer.notify_one();
            return false;
        }
        super::shared::Counters::add(&self.shared.counters.link_losses, 1);
        tracing::warn!(role = self.engine.role, "replication: link down ({reason})");
        if self.shared.status().role == NodeRole::Slave {
            self.promote("lost the master");
        } else if !self.cancel.is_cancelled() && !held {
            tracing::info!(
                role = self.engine.role,
                "replication: listen ({})",
                self.listen
            );
        }
        drop(slot);
        self.wake_dialer.notify_one();
        true
    }

    /// Takes over as master (failover, or a slave that cannot reach its master).
    fn promote(&self, why: &str) {
        if self.cancel.is_cancelled() {
            return;
        }
        let mut st = self.shared.status();
        if st.role == NodeRole::Master {
            return;
        }
        st.role = NodeRole::Master;
        st.epoch += 1;
        let epoch = st.epoch;
        let complete = self.shared.serving() || st.copy_in.is_none();
        if complete {
            self.shared.set_serving(true);
            st.event(format!("promoted to master (epoch {epoch}): {why}"));
            drop(st);
            tracing::warn!(
                role = self.engine.role,
                "replication: promoted to master (epoch {epoch}): {why}"
            );
            tracing::info!(
                role = self.engine.role,
                "replication: listen ({})",
                self.listen
            );
        } else {
            st.event(format!(
                "master (epoch {epoch}) but not serving: the copy was incomplete"
            ));
            drop(st);
            tracing::error!(
                role = self.engine.role,
                "replication: link lost during the marugoto copy; not serving a partial data set until a copy completes"
            );
        }
    }

    /// The peer handed mastership to this node (planned switchover).
    pub fn take_over(&self, epoch: u64) {
        {
            let mut st = self.shared.status();
            st.role = NodeRole::Master;
            st.epoch = st.epoch.max(epoch);
            st.event(format!("switchover: now master (epoch {epoch})"));
        }
        self.shared.set_serving(true);
        tracing::warn!(
            role = self.engine.role,
            "replication: switchover: this node is now master (epoch {epoch})"
        );
    }

    /// This node handed mastership to the peer (planned switchover). Its data is complete,
    /// so it keeps serving as a slave.
    pub fn hand_over(&self, epoch: u64) {
        {
            let mut st = self.shared.status();
            st.role = NodeRole::Slave;
            st.epoch = st.epoch.max(epoch);
            st.event(format!("switchover: now slave (epoch {epoch})"));
        }
        tracing::warn!(
            role = self.engine.role,
            "replication: switchover: this node is now slave (epoch {epoch})"
        );
    }

    /// Planned switchover, run on the master: pause writes, wait until the slave has
    /// applied every write, swap roles, resume writes. Nothing acknowledged is lost.
    /// Whether a switchover can start now: only a master whose slave is streaming can hand
    /// over without losing a write. The reason when not.
    pub fn switchover_possible(&self) -> Result<(), String> {
        let st = self.shared.status();
        if st.role != NodeRole::Master || st.link != LinkPhase::Streaming {
            return Err(format!(
                "switchover needs this node to be a master with a streaming link (it is {} and {})",
                st.role.label(),
                st.link.label()
            ));
        }
        Ok(())
    }

    pub async fn switchover(&self, limit: Duration) -> Result<String, String> {
        self.switchover_possible()?;
        let epoch = self.shared.status().epoch + 1;
        self.shared.pause_writes(true);
        tracing::info!(
            role = self.engine.role,
            "replication: switchover: writes paused, waiting for the slave to catch up"
        );
        let target = self.shared.backlog().end();
        if !self.shared.wait_acked(target, limit).await {
            self.shared.pause_writes(false);
            return Err(format!(
                "the slave did not confirm every write within {} ms; switchover abandoned, writes resumed",
                limit.as_millis()
            ));
        }
        if let Ok(mut s) = self.shared.switch_request.lock() {
            *s = Some(epoch);
        }
        self.shared.notify.notify_one();
        let deadline = tokio::time::Instant::now() + limit;
        while self.shared.status().role == NodeRole::Master
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.shared.pause_writes(false);
        if self.shared.status().role == NodeRole::Master {
            if let Ok(mut s) = self.shared.switch_request.lock() {
                s.take();
            }
            return Err(
                "the link did not carry the handover in time; writes resumed, roles unchanged"
                    .into(),
            );
        }
        Ok(format!(
            "switched over: the peer is now master (epoch {epoch})"
        ))
    }

    /// Operator action: sever the link and refuse a new one for `hold`.
    pub fn kill(&self, hold: Duration) -> String {
        // Any hold the API accepts (up to u64::MAX ms) is a hold, never an overflow.
        let hold_ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX);
        let until = now_ms().saturating_add(hold_ms);
        {
            let mut st = self.shared.status();
            st.held_until_ms = Some(until);
            st.event(format!(
                "link killed by an operator, held down for {:.1} s",
                hold.as_secs_f64()
            ));
            if st.peer_node.is_none() {
                st.link = LinkPhase::HeldDown;
            }
        }
        tracing::warn!(
            role = self.engine.role,
            "replication: link killed by an operator; held down for {:.1} s",
            hold.as_secs_f64()
        );
        if let Some(l) = lock(&self.slot).as_ref() {
            *lock(&l.reason) = "killed by an operator".into();
            l.cancel.cancel();
        }
        format!(
            "peer link severed; held down for {:.1} s",
            hold.as_secs_f64()
        )
    }

    /// Operator action: lift a hold so the link can come back at once.
    pub fn revive(&self) -> String {
        {
            let mut st = self.shared.status();
            st.held_until_ms = None;
            if st.link == LinkPhase::HeldDown {
                st.link = LinkPhase::Listening;
            }
            st.event("link revived by an operator".into());
        }
        tracing::info!(
            role = self.engine.role,
            "replication: link revived by an operator"
        );
        self.wake_dialer.notify_one();
        self.revived.notify_one();
        "peer link may reconnect".into()
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener, tracker: TaskTracker) {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = self.cancel.cancelled() => return,
            };
            match accepted {
                Ok((sock, addr)) => {
                    let r = self.clone();
                    tracker.spawn(link::run(r, sock, false, addr.to_string()));
                }
                Err(e) => {
                    tracing::warn!(role = self.engine.role, "replication: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Keeps trying to reach the configured peer whenever there is no link.
    async fn dial_loop(self: Arc<Self>) {
        let Some(peer) = self.settings.peer.clone() else {
            return;
        };
        let first = Duration::from_millis(100);
        let mut backoff = first;
        let mut announced = false;
        let started = tokio::time::Instant::now();
        loop {
            // Wait while a link is up or an operator holds it down.
            while lock(&self.slot).is_some() || self.held() {
                tokio::select! {
                    _ = self.wake_dialer.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = self.cancel.cancelled() => return,
                }
            }
            if !announced {
                tracing::info!(
                    role = self.engine.role,
                    "replication: connect (peer={peer})"
                );
                announced = true;
            }
            {
                let mut st = self.shared.status();
                if st.peer_node.is_none() && st.link == LinkPhase::Listening {
                    st.link = LinkPhase::Connecting;
                }
            }
            let attempt = tokio::time::timeout(
                self.settings.heartbeat_timeout,
                TcpStream::connect(peer.as_str()),
            );
            let outcome = tokio::select! {
                r = attempt => r,
                _ = self.cancel.cancelled() => return,
            };
            let mut unreachable = true;
            match outcome {
                Ok(Ok(sock)) => {
                    unreachable = false;
                    // Only a link that was established resets the backoff: a peer that
                    // accepts TCP but refuses the link is retried ever more slowly.
                    match link::run(self.clone(), sock, true, peer.clone()).await {
                        link::Outcome::Established => {
                            backoff = first;
                            announced = false;
                        }
                        link::Outcome::HandshakeFailed => unreachable = true,
                        link::Outcome::NotTaken => {}
                    }
                }
                Ok(Err(e)) => tracing::debug!(
                    role = self.engine.role,
                    "replication: cannot reach {peer}: {e}"
                ),
                Err(_) => tracing::debug!(
                    role = self.engine.role,
                    "replication: connecting to {peer} timed out"
                ),
            }
            // repcached's rule: a slave that cannot reach its master listens (takes over).
            // A peer that answers but has not taken the link is given one heartbeat timeout
            // first, since crossing connections at start are refused before one pairs.
            let waited = started.elapsed() >= self.settings.heartbeat_timeout;
            if (unreachable || waited)
                && lock(&self.slot).is_none()
                && self.shared.status().role == NodeRole::Slave
            {
                self.promote(if unreachable {
                    "the master is unreachable"
                } else {
                    "the master did not take the link"
                });
            }
            // Jitter keeps two nodes that lost each other at the same moment from retrying
            // in lockstep.
            let jitter = Duration::from_millis(auth::random_u64() % 100);
            {
                let mut st = self.shared.status();
                if st.peer_node.is_none() && st.link == LinkPhase::Connecting {
                    st.link = LinkPhase::Listening;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff + jitter) => {}
                _ = self.revived.notified() => backoff = first,
                _ = self.cancel.cancelled() => return,
            }
            backoff = (backoff * 2).min(self.settings.reconnect_max);
        }
    }
}
