//! State the cache engine and the replication tasks share: the backlog of this node's
//! writes, whether this node may serve clients yet, the link's status for `stats` and the
//! console, and counters.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::backlog::Backlog;

/// Which side of the pair this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRole {
    Master,
    Slave,
}

impl NodeRole {
    pub fn label(self) -> &'static str {
        match self {
            NodeRole::Master => "MASTER",
            NodeRole::Slave => "SLAVE",
        }
    }
}

/// Where the link to the peer is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkPhase {
    /// No peer; waiting for one to connect (and dialing it if one is configured).
    Listening,
    /// Trying to reach the configured peer.
    Connecting,
    /// Connected, exchanging identities and proofs.
    Handshake,
    /// A full copy is running (either direction).
    Copying,
    /// Changes flow both ways.
    Streaming,
    /// An operator severed the link and holds it down.
    HeldDown,
}

impl LinkPhase {
    pub fn label(self) -> &'static str {
        match self {
            LinkPhase::Listening => "listening",
            LinkPhase::Connecting => "connecting",
            LinkPhase::Handshake => "handshake",
            LinkPhase::Copying => "marugoto copying",
            LinkPhase::Streaming => "streaming",
            LinkPhase::HeldDown => "held down",
        }
    }
}

/// Progress of one full copy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CopyProgress {
    pub items_done: u64,
    pub items_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Unix milliseconds when the copy began.
    pub started_ms: u64,
    /// Unix milliseconds when it finished, if it did.
    pub finished_ms: Option<u64>,
}

impl CopyProgress {
    /// Counts a batch done. The totals were taken when the copy began; writes made during
    /// it can add items the walk still visits, so the totals grow to match rather than the
    /// progress passing 100%.
    pub fn add(&mut self, items: u64, bytes: u64) {
        self.items_done += items;
        self.bytes_done += bytes;
        self.items_total = self.items_total.max(self.items_done);
        self.bytes_total = self.bytes_total.max(self.bytes_done);
    }
}

/// The replication status shown by `stats`, the snapshot and the console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub role: NodeRole,
    pub epoch: u64,
    pub link: LinkPhase,
    /// The peer's address as configured or as it connected from.
    pub peer: Option<String>,
    pub peer_node: Option<u32>,
    /// Where the peer serves cache clients (announced in its hello), for the key tester.
    pub peer_cache: Option<String>,
    /// Unix milliseconds of the last frame from the peer.
    pub last_heard_ms: Option<u64>,
    /// Unix milliseconds until which the operator holds the link down.
    pub held_until_ms: Option<u64>,
    /// The copy this node receives (as a slave) and the one it sends.
    pub copy_in: Option<CopyProgress>,
    pub copy_out: Option<CopyProgress>,
    /// Recent state changes, newest last, as `(unix ms, text)`.
    pub events: VecDeque<(u64, String)>,
}

/// How many events the status keeps for the console's timeline.
const MAX_EVENTS: usize = 64;

impl Status {
    pub fn event(&mut self, text: String) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back((now_ms(), text));
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Replication counters (monotonic).
#[derive(Debug, Default)]
pub struct Counters {
    pub items_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub items_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub full_resyncs: AtomicU64,
    pub partial_resyncs: AtomicU64,
    /// Writes from the peer that lost to a newer local version (or the reverse).
    pub conflicts: AtomicU64,
    pub links_refused: AtomicU64,
    pub link_losses: AtomicU64,
    /// `sync` mode writes answered with an error because the peer did not confirm in time,
    /// or no peer was linked.
    pub sync_failures: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

pub struct Shared {
    pub node_id: u32,
    /// Identifies this process's change stream; a restart starts a new stream, so a peer
    /// can only resume from offsets of the stream it actually saw.
    pub stream_id: u64,
    backlog: Mutex<Backlog>,
    /// Wakes the link writer when the backlog grows.
    pub notify: Notify,
    serving: AtomicBool,
    pub status: Mutex<Status>,
    pub counters: Counters,
    /// How far the peer has applied this node's stream, and a wake-up for writers waiting
    /// on it in `sync` mode.
    peer_acked: AtomicU64,
    pub acked: Notify,
    /// Set for `ack = "sync"`: how long a write waits for the peer.
    pub sync_timeout: Option<std::time::Duration>,
    /// Writes wait while a planned switchover hands the master role over.
    writes_paused: AtomicBool,
    /// A switchover asks the link writer to hand over mastership at this epoch.
    pub switch_request: Mutex<Option<u64>>,
    /// Asks the link writer to acknowledge promptly (after applying the peer's changes).
    pub ack_due: Notify,
    pub ack_wanted: AtomicBool,
}

impl Shared {
    pub fn new(
        node_id: u32,
        stream_id: u64,
        backlog_bytes: usize,
        role: NodeRole,
        sync_timeout: Option<std::time::Duration>,
    ) -> Self {
        Shared {
            node_id,
            stream_id,
            backlog: Mutex::new(Backlog::new(backlog_bytes)),
            notify: Notify::new(),
            // A slave serves only once it holds a complete copy of the master's data.
            serving: AtomicBool::new(role == NodeRole::Master),
            status: Mutex::new(Status {
                role,
                epoch: if role == NodeRole::Master { 1 } else { 0 },
                link: LinkPhase::Listening,
                peer: None,
                peer_node: None,
                peer_cache: None,
                last_heard_ms: None,
                held_until_ms: None,
                copy_in: None,
                copy_out: None,
                events: VecDeque::new(),
            }),
            counters: Counters::default(),
            peer_acked: AtomicU64::new(0),
            acked: Notify::new(),
            sync_timeout,
            writes_paused: AtomicBool::new(false),
            switch_request: Mutex::new(None),
            ack_due: Notify::new(),
            ack_wanted: AtomicBool::new(false),
        }
    }

    /// Records the peer's acknowledgement of this node's stream up to `offset`.
    pub fn set_peer_acked(&self, offset: u64) {
        self.peer_acked.fetch_max(offset, Ordering::AcqRel);
        self.acked.notify_waiters();
    }

    /// The reader applied peer changes: the writer should confirm them soon.
    pub fn want_ack(&self) {
        self.ack_wanted.store(true, Ordering::Release);
        self.ack_due.notify_one();
    }

    pub fn take_ack_wanted(&self) -> bool {
        self.ack_wanted.swap(false, Ordering::AcqRel)
    }

    pub fn peer_acked(&self) -> u64 {
        self.peer_acked.load(Ordering::Acquire)
    }

    pub fn pause_writes(&self, on: bool) {
        self.writes_paused.store(on, Ordering::Release);
    }

    pub fn writes_paused(&self) -> bool {
        self.writes_paused.load(Ordering::Acquire)
    }

    /// Waits until the peer has applied this node's stream up to `offset`, or `limit`
    /// passes, or there is no streaming link to wait on. True if acknowledged.
    pub async fn wait_acked(&self, offset: u64, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.acked.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.peer_acked() >= offset {
                return true;
            }
            if self.status().link != LinkPhase::Streaming {
                return false;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.peer_acked() >= offset;
            }
        }
    }

    /// Adds a batch of this node's change records to the stream; returns the stream offset
    /// just past them (what the peer must acknowledge for `sync` mode).
    pub fn append(&self, records: &[u8]) -> u64 {
        let end = {
            let mut b = self.backlog();
            b.append(records);
            b.end()
        };
        if !records.is_empty() {
            self.notify.notify_one();
        }
        end
    }

    pub fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    pub fn set_serving(&self, on: bool) {
        self.serving.store(on, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_progress_never_passes_its_totals() {
        let mut p = CopyProgress {
            items_total: 10,
            bytes_total: 100,
            ..CopyProgress::default()
        };
        p.add(6, 60);
        assert_eq!((p.items_done, p.items_total), (6, 10));
        p.add(7, 70);
        assert_eq!((p.items_done, p.items_total), (13, 13));
        assert_eq!((p.bytes_done, p.bytes_total), (130, 130));
    }
}
