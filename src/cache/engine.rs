//! One cache engine: the store, its counters and its settings, shared by every connection.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::protocol::ParseLimits;
use super::stats::SharedCounters;
use super::store::Store;
use crate::config::CacheConfig;

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
}

impl Engine {
    pub fn new(role: &'static str, config: CacheConfig) -> Self {
        let store = Store::new(
            config.memory_limit_bytes() as usize,
            config.max_item_size_bytes() as usize,
            !config.disable_cas,
        );
        Engine {
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
        48 + nkey
            + 1
            + if flags == 0 { 0 } else { 4 }
            + value_len
            + 2
            + if self.config.disable_cas { 0 } else { 8 }
    }
}
