//! The checker task: probes one server every interval (spread so a pool's checks do not all
//! fire at once), feeds the results to its health state machine, logs each flip once and
//! tells the pool so schedulers stop or start sending it clients.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::backend::{AdminState, Backend};
use super::pool::Pool;
use super::probe::Probe;
use crate::replication::shared::now_ms;

/// Runs until `cancel`: the server left the pool, the checks were reconfigured, or the node
/// stops.
pub async fn run(
    pool: Arc<Pool>,
    server: Arc<Backend>,
    probe: Probe,
    interval: Duration,
    cancel: CancellationToken,
) {
    // Start somewhere inside the first interval, fixed per server, so that 100 servers do
    // not take their checks in one burst.
    let spread = super::hash::bytes(2, server.name.as_bytes()) % interval.as_millis().max(1) as u64;
    let mut next = tokio::time::Instant::now() + Duration::from_millis(spread);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        next += interval;
        if server.admin() == AdminState::Maint {
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
        let now = tokio::time::Instant::now();
        if next < now {
            next = now; // a probe that took longer than the interval: no burst to catch up
        }
    }
}
