//! Fixed snapshots for the console tests: a streaming pair, a slave 37% through its
//! marugoto copy, and a pair just after failover. Times are fixed so renders are repeatable.

use std::collections::VecDeque;

use opsconsole::control::{CacheSnapshot, ReplicationSnapshot, Snapshot, TrafficSnapshot};
use opsconsole::replication::shared::{CopyProgress, LinkPhase, NodeRole, Status};
use opsconsole::tui::app::{Action, App};

/// 2023-11-14 22:13:20 UTC.
pub const T0: u64 = 1_700_000_000_000;

fn status(
    role: NodeRole,
    epoch: u64,
    link: LinkPhase,
    peer: &str,
    peer_node: Option<u32>,
) -> Status {
    Status {
        role,
        epoch,
        link,
        peer: Some(peer.to_string()),
        peer_node,
        peer_cache: None,
        last_heard_ms: peer_node.map(|_| T0 - 120),
        held_until_ms: None,
        copy_in: None,
        copy_out: None,
        events: VecDeque::new(),
    }
}

fn replication(node: &str, listen: &str, status: Status) -> ReplicationSnapshot {
    ReplicationSnapshot {
        node_id: node.to_string(),
        listen: listen.to_string(),
        serving: true,
        lag_bytes: 0,
        backlog_bytes: 48_213,
        heartbeat_age_ms: status.last_heard_ms.map(|t| T0 - t),
        items_sent: 1_204,
        bytes_sent: 160_311,
        items_received: 388,
        bytes_received: 51_020,
        full_resyncs: 1,
        partial_resyncs: 0,
        conflicts: 0,
        links_refused: 0,
        link_losses: 0,
        sync_failures: 0,
        status,
    }
}

fn cache(role: &str, listen: &str, scale: u64) -> CacheSnapshot {
    CacheSnapshot {
        role: role.to_string(),
        listen: listen.to_string(),
        stopped: false,
        local_peer: Some(if role == "master" { "slave" } else { "master" }.to_string()),
        curr_items: 1_500 * scale,
        total_items: 2_000 * scale,
        bytes: 310_000 * scale,
        limit_maxbytes: 64 << 20,
        evictions: 0,
        reclaimed: 3,
        curr_connections: 2,
        total_connections: 5,
        rejected_connections: 0,
        cmd_get: 9_000 * scale,
        cmd_set: 3_000 * scale,
        cmd_touch: 0,
        get_hits: 6_300 * scale,
        get_misses: 2_700 * scale,
        delete_hits: 10,
        delete_misses: 2,
        incr_hits: 0,
        decr_hits: 0,
        bytes_read: 400_000 * scale,
        bytes_written: 900_000 * scale,
        replication: None,
    }
}

fn snapshot(caches: Vec<CacheSnapshot>, at_ms: u64) -> Snapshot {
    Snapshot {
        version: "0.1.0".into(),
        pid: 4242,
        uptime_secs: 600,
        at_ms,
        caches,
        traffic: Some(TrafficSnapshot {
            paused: false,
            rate_per_sec: 40,
            requests: 24_000,
            errors: 3,
        }),
        l4: None,
    }
}

/// Master and slave, both streaming. `step` advances counters by one second's traffic.
pub fn streaming(step: u64) -> Snapshot {
    let mut m = cache("master", "127.0.0.1:11311", 1);
    let mut s = cache("slave", "127.0.0.1:11411", 1);
    m.cmd_get += 30 * step;
    m.get_hits += 20 * step;
    m.get_misses += 10 * step;
    m.cmd_set += 10 * step;
    s.cmd_get += 30 * step;
    s.get_hits += 15 * step;
    s.get_misses += 15 * step;
    let mut ms = status(
        NodeRole::Master,
        1,
        LinkPhase::Streaming,
        "127.0.0.1:11412",
        Some(0x5e6f7a8b),
    );
    ms.peer_cache = Some("127.0.0.1:11411".into());
    ms.events = VecDeque::from(vec![
        (T0 - 60_000, "listening for a slave".to_string()),
        (
            T0 - 59_000,
            "link up with node 5e6f7a8b at 127.0.0.1:11412 as MASTER".to_string(),
        ),
        (
            T0 - 59_000,
            "marugoto copy to the peer started: 1500 items".to_string(),
        ),
        (
            T0 - 58_000,
            "marugoto copy to the peer complete".to_string(),
        ),
        (T0 - 58_000, "streaming".to_string()),
    ]);
    ms.copy_out = Some(CopyProgress {
        items_done: 1_500,
        items_total: 1_500,
        bytes_done: 310_000,
        bytes_total: 310_000,
        started_ms: T0 - 59_000,
        finished_ms: Some(T0 - 58_000),
    });
    let mut ss = status(
        NodeRole::Slave,
        1,
        LinkPhase::Streaming,
        "127.0.0.1:11312",
        Some(0x1a2b3c4d),
    );
    ss.peer_cache = Some("127.0.0.1:11311".into());
    ss.events = VecDeque::from(vec![
        (
            T0 - 59_000,
            "link up with node 1a2b3c4d at 127.0.0.1:40112 as SLAVE".to_string(),
        ),
        (T0 - 58_000, "streaming".to_string()),
    ]);
    m.replication = Some(replication("1a2b3c4d", "127.0.0.1:11312", ms));
    s.replication = Some(replication("5e6f7a8b", "127.0.0.1:11412", ss));
    snapshot(vec![m, s], T0 + step * 1000)
}

/// The slave 37% through receiving its marugoto copy (not serving yet).
pub fn copying() -> Snapshot {
    let mut snap = streaming(0);
    for c in &mut snap.caches {
        let Some(r) = c.replication.as_mut() else {
            continue;
        };
        r.status.link = LinkPhase::Copying;
        let progress = CopyProgress {
            items_done: 37_000,
            items_total: 100_000,
            bytes_done: 4_850_000,
            bytes_total: 13_100_000,
            started_ms: T0 - 2_000,
            finished_ms: None,
        };
        if r.status.role == NodeRole::Slave {
            r.serving = false;
            r.status.copy_in = Some(progress);
            r.status.events.push_back((
                T0 - 2_000,
                "marugoto copy from the peer started: 100000 items".into(),
            ));
        } else {
            r.status.copy_out = Some(progress);
            r.lag_bytes = 6_900_000;
        }
    }
    snap
}

/// The master's node was stopped; the slave took over a moment ago.
pub fn failed_over() -> Snapshot {
    let mut snap = streaming(0);
    let m = &mut snap.caches[0];
    *m = CacheSnapshot {
        role: "master".into(),
        listen: "127.0.0.1:11311".into(),
        stopped: true,
        local_peer: Some("slave".into()),
        limit_maxbytes: 64 << 20,
        ..CacheSnapshot::default()
    };
    let s = &mut snap.caches[1];
    let Some(r) = s.replication.as_mut() else {
        return snap;
    };
    r.status.role = NodeRole::Master;
    r.status.epoch = 2;
    r.status.link = LinkPhase::Listening;
    r.status.peer_node = None;
    r.heartbeat_age_ms = Some(1_400);
    r.link_losses = 1;
    r.status
        .events
        .push_back((T0 - 400, "link down: peer closed the link".into()));
    r.status.events.push_back((
        T0 - 400,
        "promoted to master (epoch 2): lost the master".into(),
    ));
    snap
}

/// An app that has watched `snapshot`'s traffic for a minute (so it has rates and a
/// sparkline): one refresh a second, traffic rising and falling.
pub fn app_with(snapshot: Snapshot) -> App {
    let mut app = App::new(false, 300_000);
    const SECONDS: u64 = 60;
    // Gets in the second that ended `t` seconds before the snapshot.
    let gets_in = |t: u64| 20 + (t * 7 % 30);
    for s in (1..=SECONDS).rev() {
        let mut earlier = snapshot.clone();
        earlier.at_ms = snapshot.at_ms.saturating_sub(s * 1000);
        let back: u64 = (1..=s).map(gets_in).sum();
        for c in &mut earlier.caches {
            c.cmd_get = c.cmd_get.saturating_sub(back);
            c.get_hits = c.get_hits.saturating_sub(back * 2 / 3);
            c.get_misses = c.cmd_get.saturating_sub(c.get_hits);
        }
        app.update(Action::Refresh(Box::new(earlier), Vec::new()));
    }
    app.update(Action::Refresh(Box::new(snapshot), Vec::new()));
    app
}
