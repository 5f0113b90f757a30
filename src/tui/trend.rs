//! Rates and short histories derived from successive snapshots: engines only count, the
//! console turns counts into per-second rates and keeps a few minutes of them for
//! sparklines.

use std::collections::VecDeque;

use crate::control::CacheSnapshot;

/// One sample a second, five minutes of them.
pub const HISTORY_SECS: usize = 300;
/// Rates are taken over at least this much time, so a fast refresh does not make them jumpy.
const MIN_SPAN_MS: u64 = 1000;

/// Per-second rates of one cache.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CacheRates {
    pub ops: f64,
    pub gets: f64,
    pub sets: f64,
    pub touches: f64,
    pub deletes: f64,
    pub incr_decr: f64,
    pub hits: f64,
    pub misses: f64,
    pub evictions: f64,
    pub conns: f64,
    pub bytes_in: f64,
    pub bytes_out: f64,
}

/// Every operation a client asked for (memcached counts misses of incr/decr elsewhere).
pub fn total_ops(c: &CacheSnapshot) -> u64 {
    c.cmd_get
        + c.cmd_set
        + c.cmd_touch
        + c.delete_hits
        + c.delete_misses
        + c.incr_hits
        + c.decr_hits
}

/// Rates and history of one cache.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheTrend {
    base: Option<(u64, CacheSnapshot)>,
    pub rates: CacheRates,
    /// Operations per second, oldest first.
    pub ops: VecDeque<u64>,
    /// Hit ratio in percent per sample (gets in that second), oldest first.
    pub hit_pct: VecDeque<u64>,
}

impl CacheTrend {
    /// Folds in a new snapshot taken at `at_ms`.
    pub fn observe(&mut self, at_ms: u64, c: &CacheSnapshot) {
        let Some((t0, old)) = &self.base else {
            self.base = Some((at_ms, c.clone()));
            return;
        };
        // A restarted engine starts its counters again: start the rates over too.
        if c.stopped || total_ops(c) < total_ops(old) || c.total_connections < old.total_connections
        {
            self.base = Some((at_ms, c.clone()));
            self.rates = CacheRates::default();
            return;
        }
        let span = at_ms.saturating_sub(*t0);
        if span < MIN_SPAN_MS {
            return;
        }
        let secs = span as f64 / 1000.0;
        let per = |new: u64, old: u64| new.saturating_sub(old) as f64 / secs;
        let r = CacheRates {
            ops: per(total_ops(c), total_ops(old)),
            gets: per(c.cmd_get, old.cmd_get),
            sets: per(c.cmd_set, old.cmd_set),
            touches: per(c.cmd_touch, old.cmd_touch),
            deletes: per(
                c.delete_hits + c.delete_misses,
                old.delete_hits + old.delete_misses,
            ),
            incr_decr: per(c.incr_hits + c.decr_hits, old.incr_hits + old.decr_hits),
            hits: per(c.get_hits, old.get_hits),
            misses: per(c.get_misses, old.get_misses),
            evictions: per(c.evictions, old.evictions),
            conns: per(c.total_connections, old.total_connections),
            bytes_in: per(c.bytes_read, old.bytes_read),
            bytes_out: per(c.bytes_written, old.bytes_written),
        };
        self.rates = r;
        // One history sample per elapsed second (a stalled refresh repeats the rate).
        let samples = (span / 1000).clamp(1, HISTORY_SECS as u64);
        let lookups = r.hits + r.misses;
        let hit = if lookups > 0.0 {
            (100.0 * r.hits / lookups).round() as u64
        } else {
            0
        };
        for _ in 0..samples {
            push_capped(&mut self.ops, r.ops.round() as u64);
            push_capped(&mut self.hit_pct, hit);
        }
        self.base = Some((at_ms, c.clone()));
    }
}

/// The counters a balanced service or server keeps, as rates are taken from them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConnCounters {
    pub connections: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Per-second rates of a balanced service or server: `ipvsadm -L --rate`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConnRates {
    /// New connections per second.
    pub cps: f64,
    /// Client to server.
    pub bytes_in: f64,
    /// Server to client.
    pub bytes_out: f64,
}

/// Rates and history of one balanced service or server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnTrend {
    base: Option<(u64, ConnCounters)>,
    pub rates: ConnRates,
    /// New connections per second, oldest first.
    pub cps: VecDeque<u64>,
    /// Bytes per second both ways, oldest first.
    pub bytes: VecDeque<u64>,
}

impl ConnTrend {
    /// Folds in the counters read at `at_ms`.
    pub fn observe(&mut self, at_ms: u64, c: ConnCounters) {
        let Some((t0, old)) = self.base else {
            self.base = Some((at_ms, c));
            return;
        };
        // Counters that went back belong to a new server of the same name (a reload).
        if c.connections < old.connections
            || c.bytes_in < old.bytes_in
            || c.bytes_out < old.bytes_out
        {
            self.base = Some((at_ms, c));
            self.rates = ConnRates::default();
            return;
        }
        let span = at_ms.saturating_sub(t0);
        if span < MIN_SPAN_MS {
            return;
        }
        let secs = span as f64 / 1000.0;
        let per = |new: u64, old: u64| new.saturating_sub(old) as f64 / secs;
        let r = ConnRates {
            cps: per(c.connections, old.connections),
            bytes_in: per(c.bytes_in, old.bytes_in),
            bytes_out: per(c.bytes_out, old.bytes_out),
        };
        self.rates = r;
        let samples = (span / 1000).clamp(1, HISTORY_SECS as u64);
        for _ in 0..samples {
            push_capped(&mut self.cps, r.cps.round() as u64);
            push_capped(&mut self.bytes, (r.bytes_in + r.bytes_out).round() as u64);
        }
        self.base = Some((at_ms, c));
    }
}

/// The counters of an L7 server, pool or route, as rates are taken from them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RequestCounters {
    pub requests: u64,
    /// Answers that went wrong: 5xx, response errors and (for a server) failed connects.
    pub errors: u64,
}

/// Per-second rates of an L7 server, pool or route.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RequestRates {
    pub requests: f64,
    pub errors: f64,
}

/// Rates and history of an L7 server, pool or route.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestTrend {
    base: Option<(u64, RequestCounters)>,
    pub rates: RequestRates,
    /// Requests per second, oldest first.
    pub requests: VecDeque<u64>,
    /// The p99 response time in µs at each sample (0 without responses), oldest first.
    pub p99_us: VecDeque<u64>,
}

impl RequestTrend {
    /// Folds in the counters (and the current p99) read at `at_ms`.
    pub fn observe(&mut self, at_ms: u64, c: RequestCounters, p99_us: Option<u64>) {
        let Some((t0, old)) = self.base else {
            self.base = Some((at_ms, c));
            return;
        };
        // Counters that went back belong to a new server or pool of the same name (a reload).
        if c.requests < old.requests || c.errors < old.errors {
            self.base = Some((at_ms, c));
            self.rates = RequestRates::default();
            return;
        }
        let span = at_ms.saturating_sub(t0);
        if span < MIN_SPAN_MS {
            return;
        }
        let secs = span as f64 / 1000.0;
        let per = |new: u64, old: u64| new.saturating_sub(old) as f64 / secs;
        let r = RequestRates {
            requests: per(c.requests, old.requests),
            errors: per(c.errors, old.errors),
        };
        self.rates = r;
        let samples = (span / 1000).clamp(1, HISTORY_SECS as u64);
        for _ in 0..samples {
            push_capped(&mut self.requests, r.requests.round() as u64);
            push_capped(&mut self.p99_us, p99_us.unwrap_or(0));
        }
        self.base = Some((at_ms, c));
    }
}

fn push_capped(v: &mut VecDeque<u64>, x: u64) {
    if v.len() >= HISTORY_SECS {
        v.pop_front();
    }
    v.push_back(x);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(gets: u64, hits: u64) -> CacheSnapshot {
        CacheSnapshot {
            cmd_get: gets,
            get_hits: hits,
            get_misses: gets - hits,
            ..CacheSnapshot::default()
        }
    }

    #[test]
    fn rates_come_from_deltas_over_at_least_a_second() {
        let mut t = CacheTrend::default();
        t.observe(0, &snap(0, 0));
        t.observe(500, &snap(50, 25));
        assert_eq!(t.rates.ops, 0.0, "half a second is too short to rate");
        t.observe(2000, &snap(200, 150));
        assert_eq!(t.rates.gets, 100.0);
        assert_eq!(t.rates.hits, 75.0);
        assert_eq!(t.ops.iter().copied().collect::<Vec<_>>(), [100, 100]);
        assert_eq!(t.hit_pct.back(), Some(&75));
    }

    fn conns(connections: u64, bytes_in: u64) -> ConnCounters {
        ConnCounters {
            connections,
            bytes_in,
            bytes_out: 2 * bytes_in,
        }
    }

    #[test]
    fn connection_rates_come_from_deltas_and_reset_when_counters_go_back() {
        let mut t = ConnTrend::default();
        t.observe(0, conns(10, 1000));
        t.observe(2000, conns(30, 5000));
        assert_eq!(t.rates.cps, 10.0);
        assert_eq!(t.rates.bytes_in, 2000.0);
        assert_eq!(t.rates.bytes_out, 4000.0);
        assert_eq!(t.cps.iter().copied().collect::<Vec<_>>(), [10, 10]);
        assert_eq!(t.bytes.back(), Some(&6000));
        t.observe(3000, conns(1, 10));
        assert_eq!(
            t.rates,
            ConnRates::default(),
            "a replaced server starts over"
        );
    }

    #[test]
    fn request_rates_come_from_deltas_and_keep_the_p99() {
        let c = |requests, errors| RequestCounters { requests, errors };
        let mut t = RequestTrend::default();
        t.observe(0, c(100, 1), Some(900));
        t.observe(400, c(110, 1), Some(900));
        assert_eq!(t.rates, RequestRates::default(), "too short to rate");
        t.observe(2000, c(140, 5), Some(1200));
        assert_eq!(t.rates.requests, 20.0);
        assert_eq!(t.rates.errors, 2.0);
        assert_eq!(t.requests.iter().copied().collect::<Vec<_>>(), [20, 20]);
        assert_eq!(t.p99_us.iter().copied().collect::<Vec<_>>(), [1200, 1200]);
        t.observe(3000, c(140, 5), None);
        assert_eq!(t.rates.requests, 0.0);
        assert_eq!(t.p99_us.back(), Some(&0), "no responses, no latency");
        t.observe(4000, c(3, 0), None);
        assert_eq!(t.rates, RequestRates::default(), "a reload starts over");
    }

    #[test]
    fn a_restarted_engine_resets_the_rates() {
        let mut t = CacheTrend::default();
        t.observe(0, &snap(1000, 0));
        t.observe(1000, &snap(2000, 0));
        assert_eq!(t.rates.gets, 1000.0);
        t.observe(2000, &snap(10, 0));
        assert_eq!(t.rates, CacheRates::default());
        t.observe(3000, &snap(20, 0));
        assert_eq!(t.rates.gets, 10.0);
    }
}
