//! The health state machine every checked server runs (keepalived's and HAProxy's rise/fall):
//! a server changes state only after `rise` consecutive good checks or `fall` consecutive bad
//! ones, so one lost probe does not flap it. Pure; the probes live in `probe.rs`.

use serde::{Deserialize, Serialize};

/// Where a server stands, as an operator reads it (`going down 1/3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Phase {
    Up,
    Down,
    /// Up, with `failed` of the `fall` bad checks that take it down seen in a row.
    GoingDown {
        failed: u32,
        fall: u32,
    },
    /// Down, with `passed` of the `rise` good checks that bring it up seen in a row.
    GoingUp {
        passed: u32,
        rise: u32,
    },
}

impl Phase {
    /// Whether the server takes traffic in this phase.
    pub fn is_up(self) -> bool {
        matches!(self, Phase::Up | Phase::GoingDown { .. })
    }

    pub fn label(self) -> String {
        match self {
            Phase::Up => "UP".into(),
            Phase::Down => "DOWN".into(),
            Phase::GoingDown { failed, fall } => format!("UP {failed}/{fall}↓"),
            Phase::GoingUp { passed, rise } => format!("DOWN {passed}/{rise}↑"),
        }
    }
}

/// A state change the caller logs (once) and applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    Up,
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    up: bool,
    /// Consecutive results that disagree with `up`.
    streak: u32,
    rise: u32,
    fall: u32,
}

impl Health {
    /// Servers start up, as in HAProxy and keepalived: traffic flows at once and a dead
    /// server is taken out after `fall` failed checks.
    pub fn new(rise: u32, fall: u32) -> Health {
        Health {
            up: true,
            streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// New rise/fall from a reload. Health and the streak so far stay; a streak that already
    /// meets the new threshold flips at the next result that agrees with it.
    pub fn set_thresholds(&mut self, rise: u32, fall: u32) {
        self.rise = rise.max(1);
        self.fall = fall.max(1);
        let needed = if self.up { self.fall } else { self.rise };
        self.streak = self.streak.min(needed - 1);
    }

    /// Records one check result; returns the flip it caused, if any.
    pub fn observe(&mut self, ok: bool) -> Option<Flip> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        Some(if ok { Flip::Up } else { Flip::Down })
    }

    pub fn phase(&self) -> Phase {
        match (self.up, self.streak) {
            (true, 0) => Phase::Up,
            (false, 0) => Phase::Down,
            (true, n) => Phase::GoingDown {
                failed: n,
                fall: self.fall,
            },
            (false, n) => Phase::GoingUp {
                passed: n,
                rise: self.rise,
            },
        }
    }

    /// Back to a fresh start: up, no streak (checks were turned off).
    pub fn reset(&mut self) {
        self.up = true;
        self.streak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_consecutive_failures_take_it_down_and_rise_bring_it_back() {
        let mut h = Health::new(2, 3);
        assert_eq!(h.phase(), Phase::Up);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.phase(), Phase::GoingDown { failed: 1, fall: 3 });
        assert_eq!(h.observe(false), None);
        assert!(h.is_up(), "still up after 2 of 3");
        assert_eq!(h.observe(false), Some(Flip::Down));
        assert_eq!(h.phase(), Phase::Down);
        assert_eq!(h.observe(false), None, "no second flip");
        assert_eq!(h.observe(true), None);
        assert_eq!(h.phase(), Phase::GoingUp { passed: 1, rise: 2 });
        assert_eq!(h.observe(true), Some(Flip::Up));
        assert_eq!(h.phase(), Phase::Up);
    }

    #[test]
    fn a_streak_is_broken_by_one_opposite_result() {
        let mut h = Health::new(3, 2);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), None);
        assert!(h.is_up(), "two failures, but not in a row");
        assert_eq!(h.observe(false), Some(Flip::Down));
        for _ in 0..2 {
            assert_eq!(h.observe(true), None);
        }
        assert_eq!(h.observe(false), None);
        assert_eq!(h.phase(), Phase::Down, "the rise streak restarted");
    }

    #[test]
    fn rise_and_fall_of_one_flip_at_once() {
        let mut h = Health::new(1, 1);
        assert_eq!(h.observe(false), Some(Flip::Down));
        assert_eq!(h.observe(true), Some(Flip::Up));
        let mut z = Health::new(0, 0);
        assert_eq!(z.observe(false), Some(Flip::Down), "0 is treated as 1");
    }

    #[test]
    fn phases_read_as_operators_expect() {
        assert_eq!(Phase::GoingDown { failed: 1, fall: 3 }.label(), "UP 1/3↓");
        assert!(Phase::GoingDown { failed: 1, fall: 3 }.is_up());
        assert!(!Phase::GoingUp { passed: 1, rise: 2 }.is_up());
    }
}
