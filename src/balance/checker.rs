//! The checker task: probes one server every interval (spread so a pool's checks do not all
//! fire at once), feeds the results to its health state machine, logs each flip once and
//! tells the pool so schedulers stop or start sending it clients. `CheckSet` keeps one such
//! task per server of a pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backend::{AdminState, Backend};
use super::health::Phase;
use super::pool::Pool;
use super::probe::Probe;
use crate::config::balance::CheckConfig;
use crate::replication::shared::now_ms;
use crate::sync::lock;

/// How long to wait before the next check, by where the server stands (HAProxy's `inter`,
/// `fastinter` and `downinter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    pub normal: Duration,
    /// While part way to a change of state: the verdict comes sooner.
    pub fast: Duration,
    pub down: Duration,
}

impl Intervals {
    pub fn of(cfg: &CheckConfig) -> Intervals {
        let or_normal = |ms: u64| Duration::from_millis(if ms == 0 { cfg.interval_ms } else { ms });
        Intervals {
            normal: Duration::from_millis(cfg.interval_ms),
            fast: or_normal(cfg.fastinter_ms),
            down: or_normal(cfg.downinter_ms),
        }
    }

    pub fn after(&self, phase: Phase) -> Duration {
        match phase {
            Phase::Up => self.normal,
            Phase::GoingDown { .. } | Phase::GoingUp { .. } => self.fast,
            Phase::Down => self.down,
        }
    }
}

/// Runs until `cancel`: the server left the pool, the checks were reconfigured, or the node
/// stops.
pub async fn run(
    pool: Arc<Pool>,
    server: Arc<Backend>,
    probe: Probe,
    intervals: Intervals,
    cancel: CancellationToken,
) {
    let interval = intervals.normal;
    // Start somewhere inside the first interval, fixed per server, so that 100 servers do
    // not take their checks in one burst.
    let spread = super::hash::bytes(2, server.name.as_bytes()) % interval.as_millis().max(1) as u64;
    let mut next = tokio::time::Instant::now() + Duration::from_millis(spread);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        if server.admin() == AdminState::Maint {
            next += interval;
            continue; // maintenance stops checks; the last verdict stays as it was
        }
        let (ok, report) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = probe.run(server.addr) => r,
        };
        let status = report.status.clone();
        if let Some(up) = server.record_check(ok, report, now_ms()) {
            if up {
                tracing::info!(pool = %pool.name, server = %server.name, "server {} in {} is UP ({status})", server.name, pool.name);
            } else {
                tracing::warn!(pool = %pool.name, server = %server.name, "server {} in {} is DOWN ({status})", server.name, pool.name);
            }
            pool.changed();
        }
        next += intervals.after(server.phase());
        let now = tokio::time::Instant::now();
        if next < now {
            next = now; // a probe that took longer than the interval: no burst to catch up
        }
    }
}

/// The checker tasks of one pool: one per server while checks are configured.
#[derive(Default)]
pub struct CheckSet {
    inner: Mutex<Running>,
}

#[derive(Default)]
struct Running {
    config: Option<CheckConfig>,
    /// Per server name, the checker task's token.
    tasks: HashMap<String, CancellationToken>,
}

impl CheckSet {
    /// Whether the pool's servers are checked.
    pub fn is_on(&self) -> bool {
        lock(&self.inner).config.is_some()
    }

    /// Makes the running checkers match `check`: one per server, restarted when the check
    /// settings changed, stopped for servers that left. Turning checks off forgets the
    /// servers' health (they count as up again).
    pub fn sync(
        &self,
        pool: &Arc<Pool>,
        check: Option<&CheckConfig>,
        tracker: &TaskTracker,
        runtime: &tokio::runtime::Handle,
        root: &CancellationToken,
    ) {
        let table = pool.table();
        let mut running = lock(&self.inner);
        if running.config.as_ref() != check {
            for (_, token) in running.tasks.drain() {
                token.cancel();
            }
            if check.is_none() {
                for s in &table.servers {
                    s.clear_health();
                }
                pool.changed();
            }
            running.config = check.cloned();
        }
        let Some(cfg) = check else { return };
        running.tasks.retain(|name, token| {
            let stays = table.find(name).is_some();
            if !stays {
                token.cancel();
            }
            stays
        });
        let probe = Probe::new(cfg);
        let intervals = Intervals::of(cfg);
        for server in &table.servers {
            if running.tasks.contains_key(&server.name) {
                continue;
            }
            let token = root.child_token();
            running.tasks.insert(server.name.clone(), token.clone());
            let task = run(
                pool.clone(),
                server.clone(),
                probe.clone(),
                intervals,
                token,
            );
            tracker.spawn_on(task, runtime);
        }
    }

    /// Stops every checker (the pool is removed or the node stops).
    pub fn stop(&self) {
        for (_, token) in lock(&self.inner).tasks.drain() {
            token.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_changing_state_is_checked_at_fastinter_and_a_down_one_at_downinter() {
        let cfg = CheckConfig {
            interval_ms: 2000,
            fastinter_ms: 200,
            downinter_ms: 5000,
            ..CheckConfig::default()
        };
        let i = Intervals::of(&cfg);
        let ms = Duration::from_millis;
        assert_eq!(i.after(Phase::Up), ms(2000));
        assert_eq!(i.after(Phase::GoingDown { failed: 1, fall: 3 }), ms(200));
        assert_eq!(i.after(Phase::GoingUp { passed: 1, rise: 2 }), ms(200));
        assert_eq!(i.after(Phase::Down), ms(5000));
        let plain = Intervals::of(&CheckConfig::default());
        assert_eq!(
            plain.after(Phase::Down),
            plain.normal,
            "0 means interval_ms"
        );
        assert_eq!(
            plain.after(Phase::GoingUp { passed: 1, rise: 2 }),
            plain.normal
        );
    }
}
