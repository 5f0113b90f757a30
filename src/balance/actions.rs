//! Operator actions on one server, the same for both balancers: admin state (ready, drain,
//! maint) and weight, logged once and made visible to every worker's scheduler.

use std::sync::Arc;

use crate::balance::backend::{AdminState, Backend};
use crate::balance::pool::Pool;
use crate::control::WeightChange;

fn find(pool: &Pool, server: &str) -> Result<Arc<Backend>, String> {
    pool.table()
        .find(server)
        .cloned()
        .ok_or_else(|| format!("no server '{server}' in pool '{}'", pool.name))
}

pub fn set_state(
    pool: &Pool,
    server: &str,
    state: AdminState,
    now_ms: u64,
) -> Result<String, String> {
    let server = find(pool, server)?;
    let (p, s) = (&pool.name, &server.name);
    let old = server.set_admin(state, now_ms);
    pool.changed();
    if old == state {
        return Ok(format!("{p}/{s} is already {}", state.name()));
    }
    tracing::info!(
        pool = %p,
        server = %s,
        "server {s} in {p}: {} -> {} by an operator",
        old.name(),
        state.name()
    );
    Ok(format!("{p}/{s}: {} -> {}", old.name(), state.name()))
}

pub fn set_weight(pool: &Pool, server: &str, change: WeightChange) -> Result<String, String> {
    let server = find(pool, server)?;
    let (p, s) = (&pool.name, &server.name);
    let old = server.current_weight();
    let new = match change {
        WeightChange::Set(w) if w > 65535 => {
            return Err(format!("weight {w} is more than 65535"));
        }
        WeightChange::Set(w) => w,
        WeightChange::Add(d) => (i64::from(old) + i64::from(d)).clamp(0, 65535) as u32,
        WeightChange::Restore => server.configured_weight(),
    };
    server.set_weight(new);
    pool.changed();
    if old != new {
        tracing::info!(
            pool = %p,
            server = %s,
            "server {s} in {p}: weight {old} -> {new} by an operator"
        );
    }
    Ok(format!("{p}/{s}: weight {old} -> {new}"))
}
