//! One cache engine: the store, its counters and its settings, shared by every connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::protocol::ParseLimits;
use super::stats::SharedCounters;
use super::store::{Store, TombstonePolicy};
use super::version::Hlc;
use crate::config::CacheConfig;
use crate::replication::shared::{NodeRole, Shared};

/// Current unix time in whole seconds, the resolution memcached's expiry works at.
pub fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

pub struct Engine {
    /// The role name this engine runs as (`master`, `slave`), for logs and `stats`.
    pub role: &'static str,
    pub config: CacheConfig,
    pub store: Store,
    pub counters: SharedCounters,
    verbosity: AtomicU32,
    pub started: u32,
    /// Versions for this node's writes.
    pub clock: Hlc,
    /// Replication state shared with the link tasks (`None` for a standalone cache).
    pub repl: Option<Arc<Shared>>,
}

impl Engine {
    pub fn new(role: &'static str, config: CacheConfig) -> Self {
        // Deletes only need remembering when a peer may send an older write later.
        let tombstones = config.replication.as_ref().map(|r| TombstonePolicy {
            ttl: r.tombstone_ttl_secs.min(u64::from(u32::MAX)) as u32,
            cap: r.tombstone_cap,
        });
        let store = Store::new(
            config.memory_limit_bytes() as usize,
            config.max_item_size_bytes() as usize,
            !config.disable_cas,
            tombstones,
        );
        let node_id = match config.replication.as_ref().map(|r| r.node_id) {
            Some(id) if id != 0 => id,
            _ => (crate::replication::auth::random_u64() as u32).max(1),
        };
        let repl = config.replication.as_ref().map(|r| {
            let role = if role == "slave" {
                NodeRole::Slave
            } else {
                NodeRole::Master
            };
            let backlog = (r.backlog_mb.saturating_mul(1 << 20)) as usize;
            let sync =
                (r.ack == "sync").then(|| std::time::Duration::from_millis(r.sync_timeout_ms));
            Arc::new(Shared::new(
                node_id,
                crate::replication::auth::random_u64(),
                backlog,
                role,
                sync,
            ))
        });
        Engine {
            repl,
            clock: Hlc::new(node_id),
            role,
            verbosity: AtomicU32::new(u32::from(config.verbosity)),
            config,
            store,
            counters: SharedCounters::default(),
            started: unix_now(),
        }
    }

    pub fn parse_limits(&self) -> ParseLimits {
        ParseLimits {
            item_size_max: self.item_size_max(),
            cas_enabled: !self.config.disable_cas,
        }
    }

    pub fn item_size_max(&self) -> usize {
        self.config.max_item_size_bytes() as usize
    }

    /// Whether writes are recorded for a replication peer.
    pub fn replicated(&self) -> bool {
        self.repl.is_some()
    }

    /// Whether clients may use the data set (a slave waits for a complete copy).
    pub fn serving(&self) -> bool {
        self.repl.as_ref().is_none_or(|r| r.serving())
    }

    /// Hands a batch of this node's change records to replication.
    /// Returns the stream offset the peer must reach to have them.
    pub fn publish(&self, records: &[u8]) -> u64 {
        self.repl.as_ref().map_or(0, |r| r.append(records))
    }

    pub fn flush_enabled(&self) -> bool {
        !self.config.disable_flush_all
    }

    pub fn set_verbosity(&self, level: u32) {
        self.verbosity.store(level, Ordering::Relaxed);
    }

    pub fn verbosity(&self) -> u32 {
        self.verbosity.load(Ordering::Relaxed)
    }

    /// An item's size as memcached counts it against `-I` (header, key, flags, value, CAS).
    pub fn item_total_size(&self, nkey: usize, flags: u32, value_len: usize) -> usize {
        super::protocol::item_total_size(nkey, flags, value_len + 2, !self.config.disable_cas)
    }
}
