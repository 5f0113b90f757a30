//! The HTTP counters of a server behind the L7 balancer (and of routes and pools): requests,
//! responses by status class, errors, and the upstream response time as a lock-free histogram
//! over a sliding window, so p50/p90/p99 describe the last seconds rather than the process's
//! whole life.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::control::HttpStats;

/// Values below this get a bucket each; above, every power of two splits in `SUB` buckets.
const LINEAR: u64 = 16;
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Powers of two from 2^4 µs to 2^39 µs (six days): anything slower lands in the last bucket.
const EXPONENTS: usize = 36;
pub const BUCKETS: usize = LINEAR as usize + EXPONENTS * SUB;

/// How long one half of the window lasts: percentiles cover the last 10 to 20 seconds.
const WINDOW_MS: u64 = 10_000;

fn bucket(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros(); // >= 4
    let sub = ((us >> (exp - SUB_BITS)) as usize) & (SUB - 1);
    let i = LINEAR as usize + (exp as usize - 4) * SUB + sub;
    i.min(BUCKETS - 1)
}

/// The largest value a bucket holds (what a percentile in it reports: never optimistic).
fn bucket_ceiling(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let exp = ((i - LINEAR as usize) / SUB) as u32 + 4;
    let sub = ((i - LINEAR as usize) % SUB) as u64;
    ((SUB as u64 + sub + 1) << (exp - SUB_BITS)) - 1
}

/// Bucket counts to add windows together (a pool is the sum of its servers).
pub type Buckets = Vec<u64>;

pub fn empty_buckets() -> Buckets {
    vec![0; BUCKETS]
}

/// p50, p90 and p99 of the counts, in µs; `None` with no samples.
pub fn percentiles(counts: &[u64]) -> Option<[u64; 3]> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let mut out = [0u64; 3];
    for (slot, q) in out.iter_mut().zip([0.50, 0.90, 0.99]) {
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                *slot = bucket_ceiling(i);
                break;
            }
        }
    }
    Some(out)
}

/// Two histograms that take turns: samples go to the current one; every `WINDOW_MS` the
/// older one is cleared and becomes current. Rotation happens on the recording path (no
/// timer task); a reader ignores a half that is too old.
#[derive(Debug)]
pub struct LatencyWindow {
    halves: [Box<[AtomicU32]>; 2],
    current: AtomicUsize,
    /// Unix ms when the current half started.
    started_ms: AtomicU64,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        let half = || (0..BUCKETS).map(|_| AtomicU32::new(0)).collect();
        LatencyWindow {
            halves: [half(), half()],
            current: AtomicUsize::new(0),
            started_ms: AtomicU64::new(0),
        }
    }
}

impl LatencyWindow {
    pub fn record(&self, us: u64, now_ms: u64) {
        let started = self.started_ms.load(Relaxed);
        if now_ms.saturating_sub(started) >= WINDOW_MS
            && self
                .started_ms
                .compare_exchange(started, now_ms, Relaxed, Relaxed)
                .is_ok()
        {
            // This caller won the rotation: the older half is cleared and takes over.
            let next = 1 - self.current.load(Relaxed);
            for b in self.halves[next].iter() {
                b.store(0, Relaxed);
            }
            if now_ms.saturating_sub(started) >= 2 * WINDOW_MS {
                // Nothing recorded for a whole window: the other half is stale too.
                for b in self.halves[1 - next].iter() {
                    b.store(0, Relaxed);
                }
            }
            self.current.store(next, Relaxed);
        }
        self.halves[self.current.load(Relaxed)][bucket(us)].fetch_add(1, Relaxed);
    }

    /// Adds the window's samples (those at most two windows old) to `into`.
    pub fn add_to(&self, into: &mut [u64], now_ms: u64) {
        let age = now_ms.saturating_sub(self.started_ms.load(Relaxed));
        let current = self.current.load(Relaxed);
        let halves: &[usize] = match age {
            a if a < WINDOW_MS => &[0, 1],
            a if a < 2 * WINDOW_MS => &[current],
            _ => &[],
        };
        for &h in halves {
            for (sum, b) in into.iter_mut().zip(self.halves[h].iter()) {
                *sum += u64::from(b.load(Relaxed));
            }
        }
    }
}

/// Upper bounds (µs) of the lifetime latency histogram's buckets, Prometheus-style; one more
/// bucket above the last takes the rest.
pub const HISTOGRAM_BOUNDS_US: [u64; 12] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000,
];

/// Every response time since start, in `HISTOGRAM_BOUNDS_US` buckets (for `/metrics`, which
/// wants counts that only grow; the window above is for percentiles of now).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    counts: [AtomicU64; HISTOGRAM_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    pub fn record(&self, us: u64) {
        let i = HISTOGRAM_BOUNDS_US.partition_point(|&b| b < us);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// Per bucket (not cumulative), and the sum in µs.
    pub fn read(&self) -> (Vec<u64>, u64) {
        let counts = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        (counts, self.sum_us.load(Relaxed))
    }
}

/// What an HTTP proxy counts for one server, route or pool.
#[derive(Debug, Default)]
pub struct HttpCounters {
    pub requests: AtomicU64,
    /// Responses by class: 1xx to 5xx (the proxy's own 502/503/504 included).
    pub responses: [AtomicU64; 5],
    /// Requests sent that got no usable response: reset, timeout, malformed.
    pub response_errors: AtomicU64,
    pub latency: LatencyWindow,
    /// Kept for servers only (a pool's is the sum of its servers').
    pub histogram: LatencyHistogram,
}

impl HttpCounters {
    pub fn count_status(&self, status: u16) {
        if let Some(c) = usize::from(status / 100)
            .checked_sub(1)
            .and_then(|i| self.responses.get(i))
        {
            c.fetch_add(1, Relaxed);
        }
    }

    /// The counters as the snapshot shows them, with percentiles over `buckets` (this
    /// server's window, or a sum of several).
    pub fn stats(&self, buckets: &[u64]) -> HttpStats {
        let p = percentiles(buckets);
        let (latency_buckets, latency_sum_us) = self.histogram.read();
        HttpStats {
            requests: self.requests.load(Relaxed),
            responses: std::array::from_fn(|i| self.responses[i].load(Relaxed)),
            response_errors: self.response_errors.load(Relaxed),
            p50_us: p.map(|p| p[0]),
            p90_us: p.map(|p| p[1]),
            p99_us: p.map(|p| p[2]),
            latency_buckets,
            latency_sum_us,
        }
    }

    /// `stats` over this one window.
    pub fn own_stats(&self, now_ms: u64) -> HttpStats {
        let mut b = empty_buckets();
        self.latency.add_to(&mut b, now_ms);
        self.stats(&b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_within_an_eighth() {
        let mut last = 0;
        for us in [
            0u64,
            1,
            15,
            16,
            17,
            100,
            999,
            1000,
            12_345,
            1 << 30,
            u64::MAX,
        ] {
            let b = bucket(us);
            assert!(b >= last, "{us}");
            last = b;
            if us < 1 << 39 {
                let ceiling = bucket_ceiling(b);
                assert!(ceiling >= us, "{us} -> {ceiling}");
                assert!(ceiling - us <= us / 8 + 1, "{us} -> {ceiling}");
            }
        }
    }

    #[test]
    fn percentiles_come_from_the_window() {
        let w = LatencyWindow::default();
        let now = 1_000_000;
        for i in 0..100u64 {
            w.record(if i < 90 { 1000 } else { 50_000 }, now);
        }
        let mut b = empty_buckets();
        w.add_to(&mut b, now + 1);
        let [p50, p90, p99] = percentiles(&b).expect("samples");
        assert!((1000..=1125).contains(&p50), "{p50}");
        assert!((1000..=1125).contains(&p90), "{p90}");
        assert!((50_000..=56_250).contains(&p99), "{p99}");
        // A window later the old samples still count; two windows later they are gone.
        w.record(10, now + WINDOW_MS);
        let mut b = empty_buckets();
        w.add_to(&mut b, now + WINDOW_MS);
        assert_eq!(b.iter().sum::<u64>(), 101);
        w.record(10, now + 2 * WINDOW_MS);
        let mut b = empty_buckets();
        w.add_to(&mut b, now + 2 * WINDOW_MS);
        assert_eq!(b.iter().sum::<u64>(), 2);
        let mut b = empty_buckets();
        w.add_to(&mut b, now + 5 * WINDOW_MS);
        assert_eq!(percentiles(&b), None, "nothing recent");
    }

    #[test]
    fn statuses_count_by_class() {
        let c = HttpCounters::default();
        for s in [101, 200, 204, 404, 503, 999, 42] {
            c.count_status(s);
        }
        let s = c.own_stats(0);
        assert_eq!(s.responses, [1, 2, 0, 1, 1]);
    }
}
