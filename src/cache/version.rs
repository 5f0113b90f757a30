//! Item versions for replication: a hybrid logical clock (wall-clock milliseconds plus a
//! counter, never going backwards and always ahead of every version it has seen) paired
//! with the writing node's id. Versions order writes the same way on every node, so "newest
//! wins" picks the same survivor everywhere.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A write's place in the global order: clock first, node id to break ties.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    /// Milliseconds since the epoch in the high 48 bits, a counter in the low 16.
    pub time: u64,
    pub node: u32,
}

impl Version {
    pub const ZERO: Version = Version { time: 0, node: 0 };
}

/// A hybrid logical clock.
#[derive(Debug)]
pub struct Hlc {
    node: u32,
    last: AtomicU64,
}

fn physical_now() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ms << 16
}

impl Hlc {
    pub fn new(node: u32) -> Self {
        Hlc {
            node,
            last: AtomicU64::new(0),
        }
    }

    pub fn node(&self) -> u32 {
        self.node
    }

    /// A version later than every version issued or observed so far.
    pub fn next(&self) -> Version {
        self.next_at(physical_now())
    }

    fn next_at(&self, physical: u64) -> Version {
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let candidate = physical.max(last + 1);
            match self.last.compare_exchange_weak(
                last,
                candidate,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Version {
                        time: candidate,
                        node: self.node,
                    };
                }
                Err(seen) => last = seen,
            }
        }
    }

    /// Moves the clock past a version received from the peer, so later local writes order
    /// after it even if the peer's wall clock runs ahead of ours.
    pub fn observe(&self, v: Version) {
        self.last.fetch_max(v.time, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_never_go_backwards() {
        let clock = Hlc::new(7);
        let a = clock.next_at(1000 << 16);
        let b = clock.next_at(900 << 16); // wall clock stepped back
        assert!(b > a);
        assert_eq!(b.node, 7);
    }

    #[test]
    fn observing_a_later_version_moves_the_clock() {
        let clock = Hlc::new(1);
        clock.observe(Version {
            time: 5000 << 16,
            node: 2,
        });
        assert!(clock.next_at(10 << 16).time > 5000 << 16);
    }

    #[test]
    fn ties_on_time_break_by_node() {
        let a = Version { time: 5, node: 1 };
        let b = Version { time: 5, node: 2 };
        assert!(b > a);
    }
}
