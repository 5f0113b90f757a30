//! One real server as every proxy worker, checker and snapshot sees it: its address, admin
//! state, weight and health, and the counters operators read. Everything the hot path touches
//! is an atomic; the check details sit behind a short mutex only the checker and snapshots
//! take.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::health::{Health, Phase};
use super::http_stats::HttpCounters;
use super::passive::{Passive, PassiveConfig};
use super::queue::Queue;
use super::select::{Load, SHARE_SCALE};
use crate::control::ServerSnapshot;
use crate::sync::lock;

/// What the operator set (ipvsadm weights and HAProxy's ready/drain/maint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// Takes new connections.
    #[default]
    Ready,
    /// Quiescent: open connections continue and persistent clients still reach it; nothing
    /// new. Checks go on.
    Drain,
    /// Out of service: no traffic at all and no checks.
    Maint,
}

impl AdminState {
    pub fn name(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }

    fn from_u8(v: u8) -> AdminState {
        match v {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            AdminState::Ready => 0,
            AdminState::Drain => 1,
            AdminState::Maint => 2,
        }
    }
}

/// The last completed health check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckReport {
    /// HAProxy-style code and detail, e.g. `L7OK 200`, `L4CON connection refused`.
    pub status: String,
    pub duration_us: u64,
}

/// What checks, active and passive, have found.
#[derive(Debug)]
struct Checked {
    health: Health,
    last: Option<CheckReport>,
    passive: Passive,
}

/// A real server.
#[derive(Debug)]
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    /// The weight from the config: what "restore" returns to.
    configured_weight: AtomicU32,
    weight: AtomicU32,
    admin: AtomicU8,
    /// Health as the checker last decided (always true without checks).
    up: AtomicBool,
    overloaded: AtomicBool,
    /// LVS's upper and lower connection thresholds (0 = no limit).
    max_conns: AtomicU32,
    min_conns: AtomicU32,
    active: AtomicU32,
    inactive: AtomicU32,
    pub total: AtomicU64,
    /// Client to server.
    pub bytes_in: AtomicU64,
    /// Server to client.
    pub bytes_out: AtomicU64,
    pub connect_errors: AtomicU64,
    /// Connections that came here after a connect to another server failed.
    pub retries: AtomicU64,
    /// Unix ms of the last admin or health state change.
    state_since_ms: AtomicU64,
    /// Requests, statuses and response times when it serves the L7 balancer.
    pub http: HttpCounters,
    /// HAProxy's `slowstart`: after coming back (up again, out of maintenance, back from a
    /// passive ejection) its share ramps from nothing to its weight over this long. 0 = off.
    slow_start_ms: AtomicU64,
    /// Unix ms the current ramp began; 0 = not ramping.
    ramp_since_ms: AtomicU64,
    /// Failed requests since the last one that succeeded (passive health).
    failures_in_a_row: AtomicU32,
    /// Unix ms a passive ejection ends; 0 = not ejected.
    ejected_until_ms: AtomicU64,
    pub ejections: AtomicU64,
    checked: Mutex<Checked>,
}

/// The per-server settings a config gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSettings {
    pub weight: u32,
    pub max_conns: u32,
    pub min_conns: u32,
    pub rise: u32,
    pub fall: u32,
    pub slow_start_ms: u64,
}

impl BackendSettings {
    /// A configured server's settings; rise and fall come from the pool's check.
    pub fn of(
        s: &crate::config::balance::ServerConfig,
        check: Option<&crate::config::balance::CheckConfig>,
    ) -> BackendSettings {
        BackendSettings {
            weight: s.weight,
            max_conns: s.max_conns,
            min_conns: s.min_conns,
            rise: check.map_or(1, |c| c.rise),
            fall: check.map_or(1, |c| c.fall),
            slow_start_ms: 0,
        }
    }
}

impl Backend {
    pub fn new(
        name: String,
        addr: SocketAddr,
        s: &BackendSettings,
        admin: AdminState,
        now_ms: u64,
    ) -> Backend {
        Backend {
            name,
            addr,
            configured_weight: AtomicU32::new(s.weight),
            weight: AtomicU32::new(s.weight),
            admin: AtomicU8::new(admin.to_u8()),
            up: AtomicBool::new(true),
            overloaded: AtomicBool::new(false),
            max_conns: AtomicU32::new(s.max_conns),
            min_conns: AtomicU32::new(s.min_conns),
            active: AtomicU32::new(0),
            inactive: AtomicU32::new(0),
            total: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            state_since_ms: AtomicU64::new(now_ms),
            http: HttpCounters::default(),
            slow_start_ms: AtomicU64::new(s.slow_start_ms),
            ramp_since_ms: AtomicU64::new(0),
            failures_in_a_row: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            checked: Mutex::new(Checked {
                health: Health::new(s.rise, s.fall),
                last: None,
                passive: Passive::default(),
            }),
        }
    }

    fn checked(&self) -> MutexGuard<'_, Checked> {
        lock(&self.checked)
    }

    pub fn admin(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Relaxed))
    }

    /// Returns the previous state. Leaving maintenance starts a slow start.
    pub fn set_admin(&self, state: AdminState, now_ms: u64) -> AdminState {
        let old = AdminState::from_u8(self.admin.swap(state.to_u8(), Relaxed));
        if old != state {
            self.state_since_ms.store(now_ms, Relaxed);
        }
        if old == AdminState::Maint && state != AdminState::Maint {
            self.start_ramp(now_ms);
        }
        old
    }

    /// Begins a slow start (when one is configured): the server is back and should not get
    /// its whole share of new requests at once.
    pub fn start_ramp(&self, now_ms: u64) {
        if self.slow_start_ms.load(Relaxed) > 0 {
            self.ramp_since_ms.store(now_ms.max(1), Relaxed);
        }
    }

    /// How far through its slow start the server is, in percent; `None` outside one.
    pub fn ramp_percent(&self, now_ms: u64) -> Option<u32> {
        let since = self.ramp_since_ms.load(Relaxed);
        if since == 0 {
            return None;
        }
        let window = self.slow_start_ms.load(Relaxed);
        let elapsed = now_ms.saturating_sub(since);
        if window == 0 || elapsed >= window {
            // Over: later picks skip the clock read. A ramp begun meanwhile is kept.
            let _ = self
                .ramp_since_ms
                .compare_exchange(since, 0, Relaxed, Relaxed);
            return None;
        }
        Some((elapsed * 100 / window) as u32)
    }

    pub fn configured_weight(&self) -> u32 {
        self.configured_weight.load(Relaxed)
    }

    /// The weight in force (what `Load::weight` reports is 0 while draining).
    pub fn current_weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    pub fn set_weight(&self, w: u32) {
        self.weight.store(w, Relaxed);
    }

    /// Applies a reloaded config's settings; a runtime weight change survives only if the
    /// configured weight did not change.
    pub fn reconfigure(&self, s: &BackendSettings) {
        let old = self.configured_weight.swap(s.weight, Relaxed);
        if old != s.weight {
            self.weight.store(s.weight, Relaxed);
        }
        self.max_conns.store(s.max_conns, Relaxed);
        self.min_conns.store(s.min_conns, Relaxed);
        self.slow_start_ms.store(s.slow_start_ms, Relaxed);
        self.checked().health.set_thresholds(s.rise, s.fall);
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    pub fn phase(&self) -> Phase {
        self.checked().health.phase()
    }

    /// Records a check result; returns `Some(up)` when it flipped the server's health.
    pub fn record_check(&self, ok: bool, report: CheckReport, now_ms: u64) -> Option<bool> {
        let mut c = self.checked();
        c.last = Some(report);
        let flip = c.health.observe(ok)?;
        let up = flip == super::health::Flip::Up;
        self.up.store(up, Relaxed);
        self.state_since_ms.store(now_ms, Relaxed);
        if up {
            self.start_ramp(now_ms);
        }
        Some(up)
    }

    pub fn last_check(&self) -> Option<CheckReport> {
        self.checked().last.clone()
    }

    /// Forgets health (checks were turned off by a reload): the server counts as up.
    pub fn clear_health(&self) {
        let mut c = self.checked();
        c.health.reset();
        c.last = None;
        self.up.store(true, Relaxed);
    }

    pub fn state_since_ms(&self) -> u64 {
        self.state_since_ms.load(Relaxed)
    }

    /// In service for the hashing tables: healthy, not ejected and ready. Weight comes on
    /// top.
    pub fn in_service(&self) -> bool {
        self.is_up() && !self.is_ejected() && self.admin() == AdminState::Ready
    }

    /// A persistent client may still come here: healthy and not in maintenance (a draining
    /// server keeps its persistent clients, as LVS's quiescent servers and HAProxy's drain).
    pub fn takes_persistent(&self) -> bool {
        self.is_up()
            && !self.is_ejected()
            && self.admin() != AdminState::Maint
            && !self.overloaded.load(Relaxed)
    }

    /// Taken out by passive health.
    pub fn is_ejected(&self) -> bool {
        self.ejected_until_ms.load(Relaxed) != 0
    }

    /// A request it served went well: the run of failures is over. (Read first so the hot
    /// path does not write a shared line that is already 0.)
    pub fn request_succeeded(&self) {
        if self.failures_in_a_row.load(Relaxed) != 0 {
            self.failures_in_a_row.store(0, Relaxed);
        }
    }

    /// A request it served failed. Returns how long passive health says to take it out; the
    /// caller decides whether it may (`eject`).
    pub fn request_failed(&self, cfg: &PassiveConfig, now_ms: u64) -> Option<u64> {
        let in_a_row = self.failures_in_a_row.fetch_add(1, Relaxed) + 1;
        if self.is_ejected() {
            return None;
        }
        self.checked().passive.failure(cfg, in_a_row, now_ms)
    }

    /// Takes it out of service for `for_ms`. False if it already was (one ejection, one
    /// return).
    pub fn eject(&self, for_ms: u64, now_ms: u64) -> bool {
        let until = now_ms.saturating_add(for_ms).max(1);
        if self
            .ejected_until_ms
            .compare_exchange(0, until, Relaxed, Relaxed)
            .is_err()
        {
            return false;
        }
        self.ejections.fetch_add(1, Relaxed);
        self.failures_in_a_row.store(0, Relaxed);
        self.state_since_ms.store(now_ms, Relaxed);
        true
    }

    /// Back from an ejection, with a slow start if one is configured.
    pub fn return_from_ejection(&self, now_ms: u64) {
        self.checked().passive.returned(now_ms);
        self.ejected_until_ms.store(0, Relaxed);
        self.state_since_ms.store(now_ms, Relaxed);
        self.start_ramp(now_ms);
    }

    pub fn active_conns(&self) -> u32 {
        self.active.load(Relaxed)
    }

    pub fn inactive_conns(&self) -> u32 {
        self.inactive.load(Relaxed)
    }

    pub fn is_overloaded(&self) -> bool {
        self.overloaded.load(Relaxed)
    }

    /// Draining with no connections left: safe to remove.
    pub fn removable(&self) -> bool {
        self.admin() != AdminState::Ready && self.active_conns() == 0 && self.inactive_conns() == 0
    }

    /// Counts a new connection; the guard (which takes this handle on the server) uncounts
    /// it when dropped.
    pub fn connection(self: std::sync::Arc<Self>) -> ConnGuard {
        self.active.fetch_add(1, Relaxed);
        self.total.fetch_add(1, Relaxed);
        self.update_overload();
        ConnGuard {
            backend: self,
            inactive: false,
            queue: None,
        }
    }

    /// Counts a new connection unless that would pass `max_conns` (HAProxy's hard
    /// `maxconn`: two workers racing for the last slot cannot both have it).
    pub fn try_connection(self: std::sync::Arc<Self>) -> Option<ConnGuard> {
        let max = self.max_conns.load(Relaxed);
        if max == 0 {
            return Some(self.connection());
        }
        let mut active = self.active.load(Relaxed);
        loop {
            if active + self.inactive.load(Relaxed) >= max {
                self.update_overload();
                return None;
            }
            match self
                .active
                .compare_exchange_weak(active, active + 1, Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(now) => active = now,
            }
        }
        self.total.fetch_add(1, Relaxed);
        self.update_overload();
        Some(ConnGuard {
            backend: self,
            inactive: false,
            queue: None,
        })
    }

    fn conns(&self) -> u32 {
        self.active.load(Relaxed) + self.inactive.load(Relaxed)
    }

    /// LVS: overloaded once active + inactive reach the upper threshold, usable again when
    /// they fall to the lower one (3/4 of the upper by default). Looks again after setting
    /// the flag: a connection that ended meanwhile must not leave a full flag on a server
    /// with room (its queue would wait for nothing).
    fn update_overload(&self) {
        let max = self.max_conns.load(Relaxed);
        if max == 0 {
            self.overloaded.store(false, Relaxed);
            return;
        }
        let min = match self.min_conns.load(Relaxed) {
            0 => max * 3 / 4,
            m => m,
        };
        let mut conns = self.conns();
        loop {
            if conns >= max {
                self.overloaded.store(true, Relaxed);
            } else if conns <= min {
                self.overloaded.store(false, Relaxed);
            }
            let again = self.conns();
            if again == conns {
                return;
            }
            conns = again;
        }
    }
}

impl Load for std::sync::Arc<Backend> {
    fn weight(&self) -> u32 {
        if self.admin() == AdminState::Ready {
            self.current_weight()
        } else {
            0
        }
    }
    fn share(&self) -> u32 {
        let full = self.weight().saturating_mul(SHARE_SCALE);
        match self.ramp_percent(crate::replication::shared::now_ms()) {
            // Never 0 while the weight is not: the server gets a trickle from the start.
            Some(pct) if full > 0 => (u64::from(full) * u64::from(pct) / 100).max(1) as u32,
            _ => full,
        }
    }
    fn active(&self) -> u32 {
        self.active_conns()
    }
    fn inactive(&self) -> u32 {
        self.inactive_conns()
    }
    fn usable(&self) -> bool {
        self.in_service() && !self.is_overloaded()
    }
}

/// One proxied connection's place in its server's counters.
#[derive(Debug)]
pub struct ConnGuard {
    backend: std::sync::Arc<Backend>,
    inactive: bool,
    /// The pool queue a freed slot is announced to.
    queue: Option<std::sync::Arc<Queue>>,
}

impl ConnGuard {
    /// Announces the slot to `queue` when the connection ends.
    pub fn released_to(mut self, queue: &std::sync::Arc<Queue>) -> ConnGuard {
        self.queue = Some(queue.clone());
        self
    }

    pub fn backend(&self) -> &std::sync::Arc<Backend> {
        &self.backend
    }

    /// One side has closed: LVS counts such a connection as inactive.
    pub fn set_inactive(&mut self) {
        if !self.inactive {
            self.inactive = true;
            self.backend.inactive.fetch_add(1, Relaxed);
            self.backend.active.fetch_sub(1, Relaxed);
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.inactive {
            self.backend.inactive.fetch_sub(1, Relaxed);
        } else {
            self.backend.active.fetch_sub(1, Relaxed);
        }
        self.backend.update_overload();
        if let Some(q) = &self.queue {
            q.slot_freed();
        }
    }
}

impl Backend {
    /// What the snapshot shows of it; `checked` says whether its pool runs health checks.
    pub fn snapshot(&self, checked: bool) -> ServerSnapshot {
        let last = self.last_check();
        let now = crate::replication::shared::now_ms();
        ServerSnapshot {
            name: self.name.clone(),
            address: self.addr.to_string(),
            admin: self.admin(),
            health: self.phase(),
            checked,
            weight: self.current_weight(),
            configured_weight: self.configured_weight(),
            active: self.active_conns(),
            inactive: self.inactive_conns(),
            total_conns: self.total.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            connect_errors: self.connect_errors.load(Relaxed),
            retries: self.retries.load(Relaxed),
            overloaded: self.is_overloaded(),
            removable: self.removable(),
            check_status: last.as_ref().map(|c| c.status.clone()),
            check_duration_us: last.map(|c| c.duration_us),
            state_since_ms: self.state_since_ms(),
            slow_start_pct: self.ramp_percent(now),
            ejected_for_ms: match self.ejected_until_ms.load(Relaxed) {
                0 => None,
                until => Some(until.saturating_sub(now)),
            },
            ejections: self.ejections.load(Relaxed),
            http: None,
        }
    }
}

/// A ready server at a placeholder address, for the pool and persistence tests.
#[cfg(test)]
pub(crate) fn test_server(name: &str, weight: u32) -> std::sync::Arc<Backend> {
    test_backend(name, &test_settings(weight))
}

/// Plain settings for tests: `weight`, no limits, rise and fall of 1, no slow start.
#[cfg(test)]
pub(crate) fn test_settings(weight: u32) -> BackendSettings {
    BackendSettings {
        weight,
        max_conns: 0,
        min_conns: 0,
        rise: 1,
        fall: 1,
        slow_start_ms: 0,
    }
}

/// A ready server at a placeholder address with settings `s`, for tests.
#[cfg(test)]
pub(crate) fn test_backend(name: &str, s: &BackendSettings) -> std::sync::Arc<Backend> {
    let addr = SocketAddr::from(([127, 0, 0, 1], 1));
    std::sync::Arc::new(Backend::new(name.into(), addr, s, AdminState::Ready, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn backend(max: u32, min: u32) -> Arc<Backend> {
        let s = BackendSettings {
            max_conns: max,
            min_conns: min,
            ..test_settings(2)
        };
        test_backend("a", &s)
    }

    #[test]
    fn connection_thresholds_have_hysteresis() {
        let b = backend(4, 2);
        let mut conns: Vec<ConnGuard> = (0..3).map(|_| b.clone().connection()).collect();
        assert!(b.usable());
        conns.push(b.clone().connection());
        assert!(!b.usable(), "4 of 4: overloaded");
        conns.pop();
        assert!(!b.usable(), "3 is above the lower threshold");
        conns.pop();
        assert!(b.usable(), "2: back in");
    }

    #[test]
    fn inactive_connections_are_counted_apart_and_released() {
        let b = backend(0, 0);
        let mut c = b.clone().connection();
        c.set_inactive();
        c.set_inactive();
        assert_eq!((b.active_conns(), b.inactive_conns()), (0, 1));
        drop(c);
        assert_eq!((b.active_conns(), b.inactive_conns()), (0, 0));
        assert_eq!(b.total.load(Relaxed), 1);
    }

    #[test]
    fn drain_is_quiescent_and_reports_removable() {
        let b = backend(0, 0);
        let c = b.clone().connection();
        b.set_admin(AdminState::Drain, 5);
        assert_eq!(b.weight(), 0);
        assert!(b.takes_persistent());
        assert!(!b.removable(), "a connection is still open");
        drop(c);
        assert!(b.removable());
        b.set_admin(AdminState::Maint, 6);
        assert!(!b.takes_persistent());
    }

    #[test]
    fn a_reload_keeps_a_runtime_weight_unless_the_configured_one_changed() {
        let b = backend(0, 0);
        b.set_weight(7);
        let mut s = BackendSettings {
            weight: 2,
            max_conns: 0,
            min_conns: 0,
            rise: 1,
            fall: 1,
            slow_start_ms: 0,
        };
        b.reconfigure(&s);
        assert_eq!(b.current_weight(), 7);
        s.weight = 3;
        b.reconfigure(&s);
        assert_eq!(b.current_weight(), 3);
    }

    #[test]
    fn a_reload_applies_new_rise_and_fall_to_a_kept_server() {
        let b = backend(0, 0);
        let report = CheckReport::default();
        let mut s = BackendSettings {
            weight: 2,
            max_conns: 0,
            min_conns: 0,
            rise: 1,
            fall: 5,
            slow_start_ms: 0,
        };
        b.reconfigure(&s);
        for _ in 0..3 {
            assert_eq!(b.record_check(false, report.clone(), 1), None);
        }
        assert_eq!(b.phase(), Phase::GoingDown { failed: 3, fall: 5 });
        s.fall = 2;
        b.reconfigure(&s);
        assert_eq!(b.phase(), Phase::GoingDown { failed: 1, fall: 2 });
        assert_eq!(
            b.record_check(false, report, 2),
            Some(false),
            "down at the new fall"
        );
    }

    #[test]
    fn slow_start_ramps_the_share_after_a_return_from_down_or_maintenance() {
        let s = BackendSettings {
            slow_start_ms: 10_000,
            ..test_settings(2)
        };
        let b = test_backend("a", &s);
        assert_eq!(
            b.ramp_percent(1_000),
            None,
            "a server that starts up gets its share at once"
        );
        let report = CheckReport::default();
        assert_eq!(b.record_check(false, report.clone(), 1_000), Some(false));
        assert_eq!(b.record_check(true, report, 2_000), Some(true));
        assert_eq!(b.ramp_percent(2_000), Some(0));
        assert_eq!(b.ramp_percent(4_500), Some(25));
        assert_eq!(b.ramp_percent(12_000), None, "over after the window");
        assert_eq!(b.ramp_percent(4_500), None, "and stays over");
        b.set_admin(AdminState::Maint, 20_000);
        b.set_admin(AdminState::Ready, 30_000);
        assert_eq!(
            b.ramp_percent(35_000),
            Some(50),
            "leaving maintenance ramps too"
        );
        b.set_admin(AdminState::Drain, 36_000);
        b.set_admin(AdminState::Ready, 50_000);
        assert_eq!(b.ramp_percent(50_000), None, "drain to ready is no return");
    }
}
