//! The `stats` family of replies: `stats`, `stats settings`, `stats items`, `stats slabs`,
//! `stats reset`, with the names memcached's tools read.

use std::fmt::Write as _;

use super::engine::Engine;

fn stat(out: &mut String, name: &str, value: impl std::fmt::Display) {
    let _ = write!(out, "STAT {name} {value}\r\n");
}

/// CPU time used by this process, from /proc (user, system) in seconds.
fn rusage() -> (f64, f64) {
    let Ok(text) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let Some(after) = text.rsplit_once(')').map(|(_, rest)| rest) else {
        return (0.0, 0.0);
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 100.0
    };
    (ticks(11), ticks(12))
}

pub fn write(engine: &Engine, sub: &[u8], now: u32, out: &mut Vec<u8>) {
    let mut s = String::new();
    match sub {
        b"" => general(engine, now, &mut s),
        b"settings" => settings(engine, &mut s),
        b"items" => items(engine, now, &mut s),
        b"slabs" => {
            let st = engine.store.stats();
            stat(
                &mut s,
                "active_slabs",
                if st.curr_items > 0 { 1 } else { 0 },
            );
            stat(&mut s, "total_malloced", st.bytes);
        }
        b"replication" => replication(engine, now, &mut s, true),
        b"reset" => {
            engine.counters.reset();
            out.extend_from_slice(b"RESET\r\n");
            return;
        }
        _ => {
            out.extend_from_slice(b"ERROR\r\n");
            return;
        }
    }
    s.push_str("END\r\n");
    out.extend_from_slice(s.as_bytes());
}

fn general(engine: &Engine, now: u32, s: &mut String) {
    let c = &engine.counters;
    let st = engine.store.stats();
    let (user, system) = rusage();
    stat(s, "pid", std::process::id());
    stat(s, "uptime", now.saturating_sub(engine.started));
    stat(s, "time", now);
    stat(s, "version", super::VERSION);
    stat(s, "pointer_size", usize::BITS);
    stat(s, "rusage_user", format!("{user:.6}"));
    stat(s, "rusage_system", format!("{system:.6}"));
    stat(s, "max_connections", engine.config.conn_limit);
    stat(
        s,
        "curr_connections",
        c.curr_connections
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    stat(
        s,
        "total_connections",
        c.total_connections
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    stat(
        s,
        "rejected_connections",
        c.rejected_connections
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    for (name, value) in c.all() {
        stat(s, name, value);
    }
    stat(s, "limit_maxbytes", engine.store.limit());
    stat(s, "threads", engine.config.threads());
    stat(s, "curr_items", st.curr_items);
    stat(s, "total_items", st.total_items);
    stat(s, "bytes", st.bytes);
    stat(s, "evictions", st.evictions);
    stat(s, "reclaimed", st.reclaimed);
    stat(s, "expired_unfetched", st.expired_unfetched);
    stat(s, "evicted_unfetched", st.evicted_unfetched);
    stat(s, "role", engine.role);
    replication(engine, now, s, false);
}

/// Replication state; `detailed` adds the per-link counters and the content digest (which
/// walks every item, so it is only in `stats replication`).
fn replication(engine: &Engine, now: u32, s: &mut String, detailed: bool) {
    let Some(r) = &engine.repl else {
        if detailed {
            stat(s, "replication", "OFF");
        }
        return;
    };
    let st = r.status().clone();
    stat(s, "replication", st.role.label());
    stat(s, "repl_link", st.link.label().replace(' ', "_"));
    stat(s, "repl_peer", st.peer.as_deref().unwrap_or("-"));
    stat(s, "repl_serving", if r.serving() { "yes" } else { "no" });
    if !detailed {
        return;
    }
    use crate::replication::shared::{Counters, now_ms};
    let c = &r.counters;
    let (backlog_len, stream_end) = {
        let b = r.backlog();
        (b.len(), b.end())
    };
    stat(s, "repl_node_id", format!("{:08x}", r.node_id));
    stat(s, "repl_epoch", st.epoch);
    stat(
        s,
        "repl_ack",
        if r.sync_timeout.is_some() {
            "sync"
        } else {
            "async"
        },
    );
    stat(
        s,
        "repl_peer_node",
        st.peer_node.map_or("-".to_string(), |n| format!("{n:08x}")),
    );
    stat(
        s,
        "repl_heartbeat_age_ms",
        st.last_heard_ms
            .map_or("-".to_string(), |t| now_ms().saturating_sub(t).to_string()),
    );
    stat(
        s,
        "repl_lag_bytes",
        stream_end.saturating_sub(r.peer_acked()),
    );
    stat(s, "repl_backlog_bytes", backlog_len);
    for (name, counter) in [
        ("repl_items_sent", &c.items_sent),
        ("repl_bytes_sent", &c.bytes_sent),
        ("repl_items_received", &c.items_received),
        ("repl_bytes_received", &c.bytes_received),
        ("repl_full_resyncs", &c.full_resyncs),
        ("repl_partial_resyncs", &c.partial_resyncs),
        ("repl_conflicts", &c.conflicts),
        ("repl_links_refused", &c.links_refused),
        ("repl_link_losses", &c.link_losses),
        ("repl_sync_failures", &c.sync_failures),
    ] {
        stat(s, name, Counters::get(counter));
    }
    for (name, progress) in [
        ("repl_copy_in", &st.copy_in),
        ("repl_copy_out", &st.copy_out),
    ] {
        if let Some(p) = progress {
            let state = if p.finished_ms.is_some() {
                "done"
            } else {
                "running"
            };
            stat(
                s,
                name,
                format!("{}/{}_items_{}", p.items_done, p.items_total, state),
            );
        }
    }
    let (count, digest) = engine.store.digest(now);
    stat(s, "repl_digest", format!("{count}:{digest:016x}"));
}

fn settings(engine: &Engine, s: &mut String) {
    let cfg = &engine.config;
    stat(s, "maxbytes", engine.store.limit());
    stat(s, "maxconns", cfg.conn_limit);
    stat(s, "tcpport", cfg.port);
    stat(s, "udpport", 0);
    stat(s, "interface", &cfg.listen);
    stat(s, "verbosity", engine.verbosity());
    stat(s, "evictions", "on");
    stat(s, "num_threads", cfg.threads());
    stat(s, "cas_enabled", if cfg.disable_cas { "no" } else { "yes" });
    stat(s, "item_size_max", cfg.max_item_size_bytes());
    stat(
        s,
        "flush_enabled",
        if cfg.disable_flush_all { "no" } else { "yes" },
    );
    stat(s, "shards", engine.store.shard_count());
}

fn items(engine: &Engine, now: u32, s: &mut String) {
    let st = engine.store.stats();
    if st.curr_items == 0 {
        return;
    }
    let mut oldest = now;
    engine.store.for_each_shard(|shard| {
        if let Some(t) = shard.oldest_time() {
            oldest = oldest.min(t);
        }
    });
    stat(s, "items:1:number", st.curr_items);
    stat(s, "items:1:age", now.saturating_sub(oldest));
    stat(s, "items:1:evicted", st.evictions);
    stat(s, "items:1:evicted_unfetched", st.evicted_unfetched);
    stat(s, "items:1:reclaimed", st.reclaimed);
    stat(s, "items:1:expired_unfetched", st.expired_unfetched);
}
