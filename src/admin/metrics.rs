//! `/metrics`: the snapshot in Prometheus's text exposition format (0.0.4). Cache metrics
//! carry memcached's `stats` names; balancer metrics carry `role`, `service` (L4) or `pool`
//! (L7) and `server` labels; L7 upstream response times are a histogram. Pure: written from a
//! snapshot.

use std::fmt::Write as _;

use crate::balance::backend::AdminState;
use crate::balance::http_stats::HISTOGRAM_BOUNDS_US;
use crate::control::{CacheSnapshot, HttpStats, ServerSnapshot, Snapshot};

/// One metric family: its HELP and TYPE lines once, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn begin<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"");
                escape(self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A family with one sample per item.
fn family<T>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    items: &[T],
    labels: impl Fn(&T) -> Vec<(&'static str, String)>,
    value: impl Fn(&T) -> u64,
) {
    if items.is_empty() {
        return;
    }
    let mut f = Family::begin(out, name, kind, help);
    for item in items {
        let owned = labels(item);
        let borrowed: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        f.sample(name, &borrowed, value(item));
    }
}

pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let mut info = Family::begin(&mut out, "opsconsole_info", "gauge", "The running version.");
    info.sample("opsconsole_info", &[("version", &s.version)], 1);
    let mut up = Family::begin(
        &mut out,
        "opsconsole_uptime_seconds",
        "gauge",
        "Seconds since start.",
    );
    up.sample("opsconsole_uptime_seconds", &[], s.uptime_secs);
    caches(&mut out, &s.caches);
    replication(&mut out, &s.caches);
    balancers(&mut out, s);
    out
}

type CacheField = (
    &'static str,
    &'static str,
    &'static str,
    fn(&CacheSnapshot) -> u64,
);

fn caches(out: &mut String, caches: &[CacheSnapshot]) {
    let fields: [CacheField; 24] = [
        ("up", "gauge", "1 while the cache runs.", |c| {
            u64::from(!c.stopped)
        }),
        ("curr_items", "gauge", "Items stored now.", |c| c.curr_items),
        ("total_items_total", "counter", "Items ever stored.", |c| {
            c.total_items
        }),
        ("bytes", "gauge", "Bytes of items stored now.", |c| c.bytes),
        ("limit_maxbytes", "gauge", "The memory limit.", |c| {
            c.limit_maxbytes
        }),
        (
            "evictions_total",
            "counter",
            "Items evicted to make room.",
            |c| c.evictions,
        ),
        (
            "reclaimed_total",
            "counter",
            "Expired items whose room was reused.",
            |c| c.reclaimed,
        ),
        (
            "curr_connections",
            "gauge",
            "Open client connections.",
            |c| c.curr_connections,
        ),
        (
            "total_connections_total",
            "counter",
            "Client connections accepted.",
            |c| c.total_connections,
        ),
        (
            "rejected_connections_total",
            "counter",
            "Connections refused at the limit.",
            |c| c.rejected_connections,
        ),
        (
            "cmd_get_total",
            "counter",
            "Get commands (one per key).",
            |c| c.cmd_get,
        ),
        ("cmd_set_total", "counter", "Storage commands.", |c| {
            c.cmd_set
        }),
        ("cmd_touch_total", "counter", "Touch commands.", |c| {
            c.cmd_touch
        }),
        ("get_hits_total", "counter", "Keys found.", |c| c.get_hits),
        ("get_misses_total", "counter", "Keys not found.", |c| {
            c.get_misses
        }),
        (
            "delete_hits_total",
            "counter",
            "Deletes of a present key.",
            |c| c.delete_hits,
        ),
        (
            "delete_misses_total",
            "counter",
            "Deletes of a missing key.",
            |c| c.delete_misses,
        ),
        (
            "incr_hits_total",
            "counter",
            "Increments of a present key.",
            |c| c.incr_hits,
        ),
        (
            "decr_hits_total",
            "counter",
            "Decrements of a present key.",
            |c| c.decr_hits,
        ),
        (
            "bytes_read_total",
            "counter",
            "Bytes read from clients.",
            |c| c.bytes_read,
        ),
        (
            "bytes_written_total",
            "counter",
            "Bytes written to clients.",
            |c| c.bytes_written,
        ),
        (
            "idle_kicks_total",
            "counter",
            "Connections closed after idle_timeout_secs without a request.",
            |c| c.idle_kicks,
        ),
        (
            "request_timeouts_total",
            "counter",
            "Connections closed because a request did not arrive whole within request_timeout_ms.",
            |c| c.request_timeouts,
        ),
        (
            "send_timeouts_total",
            "counter",
            "Connections closed because the client took no reply bytes for send_timeout_ms.",
            |c| c.send_timeouts,
        ),
    ];
    for (name, kind, help, get) in fields {
        let name = format!("opsconsole_cache_{name}");
        family(
            out,
            &name,
            kind,
            help,
            caches,
            |c| vec![("role", c.role.clone())],
            get,
        );
    }
}

fn replication(out: &mut String, caches: &[CacheSnapshot]) {
    let linked: Vec<&CacheSnapshot> = caches.iter().filter(|c| c.replication.is_some()).collect();
    fn role(c: &&CacheSnapshot) -> Vec<(&'static str, String)> {
        vec![("role", c.role.clone())]
    }
    type Field = (
        &'static str,
        &'static str,
        &'static str,
        fn(&CacheSnapshot) -> u64,
    );
    let fields: [Field; 10] = [
        (
            "serving",
            "gauge",
            "1 while this node serves clients (a master, or a slave that took over).",
            |c| c.replication.as_ref().map_or(0, |r| u64::from(r.serving)),
        ),
        (
            "lag_bytes",
            "gauge",
            "Changes not yet confirmed by the peer.",
            |c| c.replication.as_ref().map_or(0, |r| r.lag_bytes),
        ),
        (
            "backlog_bytes",
            "gauge",
            "Changes kept for a peer that reconnects.",
            |c| c.replication.as_ref().map_or(0, |r| r.backlog_bytes),
        ),
        (
            "items_sent_total",
            "counter",
            "Items sent to the peer.",
            |c| c.replication.as_ref().map_or(0, |r| r.items_sent),
        ),
        (
            "items_received_total",
            "counter",
            "Items received from the peer.",
            |c| c.replication.as_ref().map_or(0, |r| r.items_received),
        ),
        (
            "full_resyncs_total",
            "counter",
            "Full copies (marugoto).",
            |c| c.replication.as_ref().map_or(0, |r| r.full_resyncs),
        ),
        (
            "partial_resyncs_total",
            "counter",
            "Reconnects resumed from the backlog.",
            |c| c.replication.as_ref().map_or(0, |r| r.partial_resyncs),
        ),
        (
            "link_losses_total",
            "counter",
            "Replication links lost.",
            |c| c.replication.as_ref().map_or(0, |r| r.link_losses),
        ),
        (
            "conflicts_total",
            "counter",
            "Writes that lost to a newer version.",
            |c| c.replication.as_ref().map_or(0, |r| r.conflicts),
        ),
        (
            "sync_failures_total",
            "counter",
            "Sync-mode writes the peer did not confirm in time.",
            |c| c.replication.as_ref().map_or(0, |r| r.sync_failures),
        ),
    ];
    for (name, kind, help, get) in fields {
        let name = format!("opsconsole_replication_{name}");
        family(out, &name, kind, help, &linked, role, |c| get(c));
    }
    if linked.is_empty() {
        return;
    }
    let mut link = Family::begin(
        out,
        "opsconsole_replication_link",
        "gauge",
        "1 for the replication link's current phase.",
    );
    for c in &linked {
        if let Some(r) = &c.replication {
            link.sample(
                "opsconsole_replication_link",
                &[("role", &c.role), ("phase", r.status.link.label())],
                1,
            );
        }
    }
    let mut copy = Family::begin(
        out,
        "opsconsole_replication_copy_bytes",
        "gauge",
        "The last full copy's bytes: done and total, per direction.",
    );
    for c in &linked {
        let Some(r) = &c.replication else { continue };
        for (direction, progress) in [("in", &r.status.copy_in), ("out", &r.status.copy_out)] {
            if let Some(p) = progress {
                let labels = |what| {
                    [
                        ("role", c.role.as_str()),
                        ("direction", direction),
                        ("of", what),
                    ]
                };
                copy.sample(
                    "opsconsole_replication_copy_bytes",
                    &labels("done"),
                    p.bytes_done,
                );
                copy.sample(
                    "opsconsole_replication_copy_bytes",
                    &labels("total"),
                    p.bytes_total,
                );
            }
        }
    }
}

/// One balanced server with the labels that place it.
struct Placed<'a> {
    role: &'static str,
    group_label: &'static str,
    group: &'a str,
    server: &'a ServerSnapshot,
}

impl Placed<'_> {
    fn base(&self) -> [(&'static str, &str); 3] {
        [
            ("role", self.role),
            (self.group_label, self.group),
            ("server", &self.server.name),
        ]
    }

    fn labels(&self) -> Vec<(&'static str, String)> {
        self.base()
            .iter()
            .map(|(k, v)| (*k, v.to_string()))
            .collect()
    }
}

fn balancers(out: &mut String, s: &Snapshot) {
    let mut servers: Vec<Placed> = Vec::new();
    for svc in s.l4.iter().flatten() {
        for server in svc.servers.iter().chain(svc.sorry_server.as_ref()) {
            servers.push(Placed {
                role: "l4",
                group_label: "service",
                group: &svc.name,
                server,
            });
        }
    }
    for pool in s.l7.iter().flat_map(|l| &l.pools) {
        for server in &pool.servers {
            servers.push(Placed {
                role: "l7",
                group_label: "pool",
                group: &pool.name,
                server,
            });
        }
    }
    type Field = (
        &'static str,
        &'static str,
        &'static str,
        fn(&ServerSnapshot) -> u64,
    );
    let fields: [Field; 11] = [
        (
            "up",
            "gauge",
            "1 while health checks (or their absence) count the server up.",
            |x| u64::from(x.health.is_up()),
        ),
        (
            "ready",
            "gauge",
            "1 in the ready admin state (0: drain or maint).",
            |x| u64::from(x.admin == AdminState::Ready),
        ),
        ("weight", "gauge", "The weight in force.", |x| {
            u64::from(x.weight)
        }),
        (
            "active",
            "gauge",
            "Active connections (L4) or requests (L7).",
            |x| u64::from(x.active),
        ),
        (
            "inactive",
            "gauge",
            "Connections with one side closed (L4).",
            |x| u64::from(x.inactive),
        ),
        (
            "connections_total",
            "counter",
            "Connections (L4) or requests (L7) sent to the server.",
            |x| x.total_conns,
        ),
        (
            "bytes_in_total",
            "counter",
            "Bytes from clients to the server.",
            |x| x.bytes_in,
        ),
        (
            "bytes_out_total",
            "counter",
            "Bytes from the server to clients.",
            |x| x.bytes_out,
        ),
        ("connect_errors_total", "counter", "Failed connects.", |x| {
            x.connect_errors
        }),
        (
            "retries_total",
            "counter",
            "Tries that came here after another server failed.",
            |x| x.retries,
        ),
        (
            "ejections_total",
            "counter",
            "Passive health ejections.",
            |x| x.ejections,
        ),
    ];
    for (name, kind, help, get) in fields {
        let name = format!("opsconsole_balancer_server_{name}");
        family(out, &name, kind, help, &servers, Placed::labels, |p| {
            get(p.server)
        });
    }
    let l7: Vec<(&Placed, &HttpStats)> = servers
        .iter()
        .filter_map(|p| p.server.http.as_ref().map(|h| (p, h)))
        .collect();
    if l7.is_empty() {
        return;
    }
    let mut responses = Family::begin(
        out,
        "opsconsole_l7_server_responses_total",
        "counter",
        "Responses by status class.",
    );
    for (p, h) in &l7 {
        for (class, n) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().zip(h.responses) {
            let [role, group, server] = p.base();
            let labels = [role, group, server, ("code", class)];
            responses.sample("opsconsole_l7_server_responses_total", &labels, n);
        }
    }
    let name = "opsconsole_l7_server_response_seconds";
    let mut hist = Family::begin(
        out,
        name,
        "histogram",
        "Upstream response time: request sent to response head received.",
    );
    for (p, h) in &l7 {
        let base = p.base();
        let mut cumulative = 0u64;
        for (i, bound) in HISTOGRAM_BOUNDS_US.iter().enumerate() {
            cumulative += h.latency_buckets.get(i).copied().unwrap_or(0);
            let le = format!("{}", *bound as f64 / 1e6);
            let labels = [base[0], base[1], base[2], ("le", le.as_str())];
            hist.sample(&format!("{name}_bucket"), &labels, cumulative);
        }
        let count: u64 = h.latency_buckets.iter().sum();
        let labels = [base[0], base[1], base[2], ("le", "+Inf")];
        hist.sample(&format!("{name}_bucket"), &labels, count);
        hist.sample(&format!("{name}_sum"), &base, h.latency_sum_us as f64 / 1e6);
        hist.sample(&format!("{name}_count"), &base, count);
    }
    pools(out, s);
}

fn pools(out: &mut String, s: &Snapshot) {
    let pools: Vec<_> = s.l7.iter().flat_map(|l| &l.pools).collect();
    type Field = (
        &'static str,
        &'static str,
        &'static str,
        fn(&crate::control::PoolSnapshot) -> u64,
    );
    let fields: [Field; 7] = [
        (
            "requests_total",
            "counter",
            "Requests routed to the pool.",
            |p| p.http.requests,
        ),
        ("active", "gauge", "Requests in progress.", |p| p.active),
        (
            "retries_total",
            "counter",
            "Further tries after a failed one.",
            |p| p.retries,
        ),
        (
            "redispatches_total",
            "counter",
            "Requests that ended on another server than the first picked.",
            |p| p.redispatches,
        ),
        (
            "no_server_total",
            "counter",
            "Picks that found no usable server.",
            |p| p.no_server,
        ),
        (
            "queued",
            "gauge",
            "Requests waiting for a server below its max_conns.",
            |p| p.queued,
        ),
        (
            "queue_timeouts_total",
            "counter",
            "Requests refused after waiting the queue timeout.",
            |p| p.queue_timeouts,
        ),
    ];
    for (name, kind, help, get) in fields {
        let name = format!("opsconsole_l7_pool_{name}");
        family(
            out,
            &name,
            kind,
            help,
            &pools,
            |p| vec![("role", "l7".into()), ("pool", p.name.clone())],
            |p| get(p),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::CacheSnapshot;

    #[test]
    fn cache_counters_carry_memcached_names_and_labels_are_escaped() {
        let s = Snapshot {
            version: "1.0".into(),
            caches: vec![CacheSnapshot {
                role: "ma\"ster".into(),
                get_hits: 42,
                ..CacheSnapshot::default()
            }],
            ..Snapshot::default()
        };
        let text = render(&s);
        assert!(text.contains("# TYPE opsconsole_cache_get_hits_total counter\n"));
        assert!(
            text.contains("opsconsole_cache_get_hits_total{role=\"ma\\\"ster\"} 42\n"),
            "{text}"
        );
        assert!(
            !text.contains("opsconsole_balancer"),
            "no balancer, no balancer metrics"
        );
    }
}
