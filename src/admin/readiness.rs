//! `/readyz`: whether this node should be sent traffic now, with the reasons when not. Pure:
//! read from a snapshot.

use crate::control::Snapshot;
use crate::replication::shared::LinkPhase;

/// Why the node is not ready; empty when it is.
pub fn not_ready(s: &Snapshot) -> Vec<String> {
    let mut why = Vec::new();
    for c in &s.caches {
        if c.stopped {
            why.push(format!("cache {} is stopped", c.role));
            continue;
        }
        if let Some(r) = &c.replication
            && r.status.link == LinkPhase::Copying
            && r.status
                .copy_in
                .as_ref()
                .is_some_and(|p| p.finished_ms.is_none())
        {
            why.push(format!("cache {} is still receiving its full copy", c.role));
        }
    }
    for svc in s.l4.iter().flatten() {
        if !svc.servers.iter().any(|x| x.health.is_up()) && svc.sorry_server.is_none() {
            why.push(format!("l4 service {} has no server up", svc.name));
        }
    }
    for pool in s.l7.iter().flat_map(|l| &l.pools) {
        if !pool.servers.iter().any(|x| x.health.is_up()) {
            why.push(format!("l7 pool {} has no server up", pool.name));
        }
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::CacheSnapshot;

    #[test]
    fn a_stopped_cache_makes_the_node_not_ready() {
        let mut s = Snapshot {
            caches: vec![CacheSnapshot {
                role: "master".into(),
                ..CacheSnapshot::default()
            }],
            ..Snapshot::default()
        };
        assert!(not_ready(&s).is_empty());
        s.caches[0].stopped = true;
        assert_eq!(not_ready(&s), vec!["cache master is stopped".to_string()]);
    }
}
