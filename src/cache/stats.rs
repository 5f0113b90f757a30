//! Server counters with memcached's names. Connections count into a plain local array and
//! merge into the shared atomics once per batch of requests, so the hot path does no atomic
//! read-modify-write per command.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// A counter `stats` reports; the name is memcached's.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Counter { $($variant),* }

        impl Counter {
            pub const ALL: &'static [Counter] = &[$(Counter::$variant),*];

            pub fn name(self) -> &'static str {
                match self { $(Counter::$variant => $name),* }
            }
        }
    };
}

counters! {
    CmdGet => "cmd_get",
    CmdSet => "cmd_set",
    CmdFlush => "cmd_flush",
    CmdTouch => "cmd_touch",
    CmdMeta => "cmd_meta",
    GetHits => "get_hits",
    GetMisses => "get_misses",
    DeleteMisses => "delete_misses",
    DeleteHits => "delete_hits",
    IncrMisses => "incr_misses",
    IncrHits => "incr_hits",
    DecrMisses => "decr_misses",
    DecrHits => "decr_hits",
    CasMisses => "cas_misses",
    CasHits => "cas_hits",
    CasBadval => "cas_badval",
    TouchHits => "touch_hits",
    TouchMisses => "touch_misses",
    StoreTooLarge => "store_too_large",
    StoreNoMemory => "store_no_memory",
    BytesRead => "bytes_read",
    BytesWritten => "bytes_written",
    // memcached's name for connections closed by `idle_timeout`.
    IdleKicks => "idle_kicks",
    // Ours: clients cut off by `request_timeout_ms` and `send_timeout_ms`.
    RequestTimeouts => "request_timeouts",
    SendTimeouts => "send_timeouts",
}

const N: usize = Counter::ALL.len();

/// Counters shared by every connection of one cache engine.
#[derive(Debug)]
pub struct SharedCounters {
    values: [AtomicU64; N],
    pub curr_connections: AtomicU64,
    pub total_connections: AtomicU64,
    pub rejected_connections: AtomicU64,
}

impl Default for SharedCounters {
    fn default() -> Self {
        SharedCounters {
            values: std::array::from_fn(|_| AtomicU64::new(0)),
            curr_connections: AtomicU64::new(0),
            total_connections: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
        }
    }
}

impl SharedCounters {
    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize].load(Ordering::Relaxed)
    }

    /// Adds a connection's local counts and zeroes them.
    pub fn merge(&self, local: &mut LocalCounters) {
        for (shared, v) in self.values.iter().zip(local.values.iter_mut()) {
            if *v != 0 {
                shared.fetch_add(*v, Ordering::Relaxed);
                *v = 0;
            }
        }
    }

    /// `stats reset`: zero the command counters (connection totals stay, as in memcached).
    pub fn reset(&self) {
        for v in &self.values {
            v.store(0, Ordering::Relaxed);
        }
        self.total_connections.store(0, Ordering::Relaxed);
        self.rejected_connections.store(0, Ordering::Relaxed);
    }

    /// All counters as (name, value) pairs, in memcached's order.
    pub fn all(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL
            .iter()
            .map(|&c| (c.name(), self.get(c)))
            .collect()
    }
}

/// One connection's not-yet-merged counts.
#[derive(Debug, Default)]
pub struct LocalCounters {
    values: [u64; N],
}

impl LocalCounters {
    pub fn add(&mut self, c: Counter, n: u64) {
        self.values[c as usize] += n;
    }

    pub fn incr(&mut self, c: Counter) {
        self.values[c as usize] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_counts_merge_and_reset() {
        let shared = SharedCounters::default();
        let mut local = LocalCounters::default();
        local.incr(Counter::GetHits);
        local.add(Counter::BytesRead, 10);
        shared.merge(&mut local);
        shared.merge(&mut local);
        assert_eq!(shared.get(Counter::GetHits), 1);
        assert_eq!(shared.get(Counter::BytesRead), 10);
        assert_eq!(Counter::GetHits.name(), "get_hits");
    }
}
