//! Passive health: a server whose requests fail is taken out for a while, without waiting for
//! a check to notice. Two rules, either or both:
//!
//! - nginx's `max_fails` / `fail_timeout`: `max_fails` failures within `fail_timeout` take the
//!   server out for `fail_timeout`.
//! - Consecutive errors (Envoy's outlier detection): `consecutive_errors` failed requests in a
//!   row take it out for `eject_ms`, doubled for each ejection that follows soon after the
//!   last (a server that keeps failing stays out longer), up to `eject_max_ms`. Each
//!   `eject_ms` it then spends in service without an ejection takes one doubling back off.
//!
//! A failure is a refused or timed-out connect, a timed-out or broken response, or a 5xx
//! status. Pure: the caller owns the clock and the server.

use serde::{Deserialize, Serialize};

/// `passive = { ... }` in an `[l7.pools.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveConfig {
    /// Failures within `fail_timeout_ms` that take a server out; 0 = rule off.
    pub max_fails: u32,
    /// The window `max_fails` counts in, and how long the server is then out.
    pub fail_timeout_ms: u64,
    /// Failed requests in a row that take a server out; 0 = rule off.
    pub consecutive_errors: u32,
    /// The first ejection's length under the consecutive rule.
    pub eject_ms: u64,
    /// The longest an ejection grows to.
    pub eject_max_ms: u64,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        PassiveConfig {
            max_fails: 0,
            fail_timeout_ms: 10_000,
            consecutive_errors: 0,
            eject_ms: 5_000,
            eject_max_ms: 300_000,
        }
    }
}

/// One server's passive record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Passive {
    /// Start of the current `fail_timeout` window, and the failures in it.
    window_start_ms: u64,
    fails: u32,
    /// Doublings the next consecutive-rule ejection gets (ejections in close succession).
    level: u32,
    /// When the server last came back from an ejection.
    back_since_ms: u64,
}

impl Passive {
    /// Records a failure; `in_a_row` counts it and the failures just before it with no
    /// success between. Returns how long to take the server out, if a rule says so.
    pub fn failure(&mut self, cfg: &PassiveConfig, in_a_row: u32, now_ms: u64) -> Option<u64> {
        let mut out: Option<u64> = None;
        if cfg.max_fails > 0 {
            if self.fails == 0 || now_ms.saturating_sub(self.window_start_ms) >= cfg.fail_timeout_ms
            {
                self.window_start_ms = now_ms;
                self.fails = 0;
            }
            self.fails += 1;
            if self.fails >= cfg.max_fails {
                self.fails = 0;
                out = Some(cfg.fail_timeout_ms);
            }
        }
        if cfg.consecutive_errors > 0 && in_a_row >= cfg.consecutive_errors {
            let calm = now_ms.saturating_sub(self.back_since_ms) / cfg.eject_ms.max(1);
            let level = self
                .level
                .saturating_sub(u32::try_from(calm).unwrap_or(u32::MAX));
            let length = cfg
                .eject_ms
                .saturating_mul(1u64 << level.min(32))
                .min(cfg.eject_max_ms.max(cfg.eject_ms));
            self.level = level + 1;
            out = Some(out.map_or(length, |o| o.max(length)));
        }
        out
    }

    /// The server is back in service after an ejection.
    pub fn returned(&mut self, now_ms: u64) {
        self.back_since_ms = now_ms;
        self.fails = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nginx(max_fails: u32, fail_timeout_ms: u64) -> PassiveConfig {
        PassiveConfig {
            max_fails,
            fail_timeout_ms,
            ..PassiveConfig::default()
        }
    }

    fn consecutive(n: u32, eject_ms: u64, eject_max_ms: u64) -> PassiveConfig {
        PassiveConfig {
            consecutive_errors: n,
            eject_ms,
            eject_max_ms,
            ..PassiveConfig::default()
        }
    }

    #[test]
    fn max_fails_within_fail_timeout_take_a_server_out_for_fail_timeout() {
        let cfg = nginx(3, 10_000);
        let mut p = Passive::default();
        assert_eq!(p.failure(&cfg, 1, 1_000), None);
        assert_eq!(p.failure(&cfg, 1, 2_000), None);
        assert_eq!(p.failure(&cfg, 1, 3_000), Some(10_000));
        assert_eq!(p.failure(&cfg, 1, 4_000), None, "the count starts again");
    }

    #[test]
    fn failures_spread_wider_than_fail_timeout_do_not_add_up() {
        let cfg = nginx(2, 1_000);
        let mut p = Passive::default();
        assert_eq!(p.failure(&cfg, 1, 1_000), None);
        assert_eq!(p.failure(&cfg, 1, 2_500), None, "a new window");
        assert_eq!(p.failure(&cfg, 1, 3_000), Some(1_000));
    }

    #[test]
    fn consecutive_errors_eject_with_a_growing_back_off_that_calms_down() {
        let cfg = consecutive(3, 1_000, 5_000);
        let mut p = Passive::default();
        assert_eq!(p.failure(&cfg, 1, 10_000), None);
        assert_eq!(p.failure(&cfg, 2, 10_000), None);
        assert_eq!(p.failure(&cfg, 3, 10_000), Some(1_000));
        p.returned(11_000);
        assert_eq!(
            p.failure(&cfg, 3, 11_100),
            Some(2_000),
            "failing again at once: doubled"
        );
        p.returned(13_100);
        assert_eq!(p.failure(&cfg, 3, 13_200), Some(4_000));
        p.returned(17_200);
        assert_eq!(
            p.failure(&cfg, 3, 17_300),
            Some(5_000),
            "capped at eject_max_ms"
        );
        p.returned(22_300);
        // Two calm eject_ms periods take two doublings off.
        assert_eq!(p.failure(&cfg, 3, 24_400), Some(4_000));
        p.returned(28_400);
        assert_eq!(
            p.failure(&cfg, 3, 60_000),
            Some(1_000),
            "long calm: back to the start"
        );
    }

    #[test]
    fn no_rule_no_ejection_and_both_rules_take_the_longer() {
        let mut p = Passive::default();
        assert_eq!(p.failure(&PassiveConfig::default(), 100, 1), None);
        let both = PassiveConfig {
            max_fails: 1,
            fail_timeout_ms: 3_000,
            consecutive_errors: 1,
            eject_ms: 1_000,
            eject_max_ms: 60_000,
        };
        assert_eq!(p.failure(&both, 1, 5), Some(3_000));
    }
}
