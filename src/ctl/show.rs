//! `ctl show`: a node's snapshot as compact text tables for a terminal (the console's
//! number formats), and `ctl show --json`: the snapshot as the node sent it, pretty.

use std::fmt::Write as _;

use hyper::StatusCode;

use crate::balance::backend::AdminState;
use crate::control::{CacheSnapshot, HttpStats, ServerSnapshot, Snapshot};
use crate::replication::shared::CopyProgress;
use crate::tui::view::common::{age, bytes, latency, link_word};

/// The snapshot's JSON, indented; every field the node sent is kept, known here or not.
pub fn pretty_json(status: StatusCode, body: &str) -> Result<String, String> {
    if status != StatusCode::OK {
        return Err(format!("{status}: {}", body.trim()));
    }
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("the snapshot is not JSON: {e}"))?;
    serde_json::to_string_pretty(&value)
        .map(|s| s + "\n")
        .map_err(|e| e.to_string())
}

/// Every engine of the node, one table per kind.
pub fn render(s: &Snapshot) -> String {
    let mut out = format!(
        "opsconsole {}  pid {}  up {}\n",
        s.version,
        s.pid,
        age(s.uptime_secs.saturating_mul(1000))
    );
    if !s.caches.is_empty() {
        out.push('\n');
        out.push_str(&caches(&s.caches).render(""));
        if s.caches.iter().any(|c| c.replication.is_some()) {
            out.push('\n');
            out.push_str(&replication(&s.caches).render(""));
        }
    }
    for svc in s.l4.iter().flatten() {
        let _ = writeln!(
            out,
            "\nL4 service {}  {}  {}{}  active {}  conns {}  no server {}{}",
            svc.name,
            svc.listen,
            svc.scheduler,
            if svc.persistence_secs > 0 {
                format!(" persist {}s", svc.persistence_secs)
            } else {
                String::new()
            },
            svc.active,
            svc.total_conns,
            svc.no_server,
            if svc.quorum_met { "" } else { "  QUORUM LOST" }
        );
        let mut table = servers(false);
        for server in &svc.servers {
            table.row(server_row(server, None));
        }
        if let Some(sorry) = &svc.sorry_server {
            let mut row = server_row(sorry, None);
            row[0] = format!("{} (sorry)", sorry.name);
            table.row(row);
        }
        out.push_str(&table.render("  "));
    }
    if let Some(l7) = &s.l7 {
        for l in &l7.listeners {
            let routes: Vec<String> = l
                .routes
                .iter()
                .map(|r| match &r.host {
                    Some(host) => format!("{host}{} -> {}", r.path, r.pool),
                    None => format!("{} -> {}", r.path, r.pool),
                })
                .collect();
            let _ = writeln!(
                out,
                "\nL7 listener {}  {}  active {}  conns {}  routes {}",
                l.name,
                l.listen,
                l.active_conns,
                l.total_conns,
                routes.join(", ")
            );
        }
        for pool in &l7.pools {
            let _ = writeln!(
                out,
                "\nL7 pool {}  {}  active {}  queued {}  requests {}  retries {}  redispatches {}  no server {}",
                pool.name,
                pool.algorithm,
                pool.active,
                pool.queued,
                pool.http.requests,
                pool.retries,
                pool.redispatches,
                pool.no_server
            );
            let mut table = servers(true);
            for server in &pool.servers {
                let http = server.http.clone().unwrap_or_default();
                table.row(server_row(server, Some(&http)));
            }
            out.push_str(&table.render("  "));
        }
    }
    if let Some(t) = &s.traffic {
        let _ = write!(
            out,
            "\ndemo traffic {}  cache {}/s: {} requests, {} errors",
            if t.paused { "PAUSED" } else { "running" },
            t.rate_per_sec,
            t.requests,
            t.errors
        );
        if t.http_rate_per_sec > 0 {
            let _ = write!(
                out,
                "  http {}/s: {} requests, {} errors",
                t.http_rate_per_sec, t.http_requests, t.http_errors
            );
        }
        out.push('\n');
    }
    if !s.apps.is_empty() {
        let mut table = Table::new(&[
            "APP",
            "ADDRESS",
            "STATE",
            "LATENCY",
            "ERROR RATE",
            "REQUESTS",
            "ERRORS",
        ]);
        for a in &s.apps {
            table.row(vec![
                a.name.clone(),
                a.address.clone(),
                if a.running { "up" } else { "down" }.into(),
                format!("{}ms", a.latency_ms),
                format!("{}%", a.error_percent),
                a.requests.to_string(),
                a.errors.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render(""));
    }
    out
}

fn caches(caches: &[CacheSnapshot]) -> Table {
    let mut table = Table::new(&[
        "CACHE",
        "LISTEN",
        "ITEMS",
        "MEMORY",
        "CONNS",
        "GETS",
        "HIT",
        "SETS",
        "EVICTIONS",
    ]);
    for c in caches {
        if c.stopped {
            table.row(vec![c.role.clone(), c.listen.clone(), "stopped".into()]);
            continue;
        }
        table.row(vec![
            c.role.clone(),
            c.listen.clone(),
            c.curr_items.to_string(),
            format!("{}/{}", bytes(c.bytes), bytes(c.limit_maxbytes)),
            c.curr_connections.to_string(),
            c.cmd_get.to_string(),
            c.hit_ratio()
                .map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
            c.cmd_set.to_string(),
            c.evictions.to_string(),
        ]);
    }
    table
}

fn replication(caches: &[CacheSnapshot]) -> Table {
    let mut table = Table::new(&[
        "REPLICATION",
        "ROLE",
        "LINK",
        "PEER",
        "LAG",
        "HEARD",
        "COPY",
    ]);
    for c in caches {
        if c.stopped {
            table.row(vec![c.role.clone(), "-".into(), "stopped".into()]);
            continue;
        }
        let Some(r) = &c.replication else {
            continue;
        };
        let st = &r.status;
        let copy = [("in", &st.copy_in), ("out", &st.copy_out)]
            .into_iter()
            .find_map(|(way, p)| {
                p.as_ref()
                    .filter(|p| p.finished_ms.is_none())
                    .map(|p| copy_progress(way, p))
            })
            .unwrap_or_else(|| "-".into());
        table.row(vec![
            c.role.clone(),
            format!("{} (epoch {})", st.role.label(), st.epoch),
            if r.serving {
                link_word(st)
            } else {
                format!("{}, not serving", link_word(st))
            },
            st.peer.clone().unwrap_or_else(|| "-".into()),
            bytes(r.lag_bytes),
            r.heartbeat_age_ms
                .map_or("-".into(), |ms| format!("{} ago", age(ms))),
            copy,
        ]);
    }
    table
}

fn copy_progress(way: &str, p: &CopyProgress) -> String {
    let percent = (p.items_done * 100)
        .checked_div(p.items_total)
        .unwrap_or(100)
        .min(100);
    format!(
        "{way} {percent}% ({}/{} items, {}/{})",
        p.items_done,
        p.items_total,
        bytes(p.bytes_done),
        bytes(p.bytes_total)
    )
}

/// The server table of an L4 service (connections), or of an L7 pool (requests and their
/// answers).
fn servers(http: bool) -> Table {
    let mut header = vec!["SERVER", "ADDRESS", "STATE", "HEALTH", "WEIGHT", "ACTIVE"];
    if http {
        header.extend(["REQUESTS", "5XX", "P99"]);
    } else {
        header.push("CONNS");
    }
    header.push("CHECK");
    Table::new(&header)
}

fn server_row(s: &ServerSnapshot, http: Option<&HttpStats>) -> Vec<String> {
    let mut state = s.admin.name().to_string();
    if s.removable && s.admin != AdminState::Ready {
        state.push_str(" (empty)");
    }
    let mut health = match s.ejected_for_ms {
        Some(ms) => format!("EJECTED {}", age(ms)),
        None => s.health.label(),
    };
    if let Some(pct) = s.slow_start_pct {
        let _ = write!(health, " slow start {pct}%");
    }
    if s.overloaded {
        health.push_str(" full");
    }
    let weight = if s.weight == s.configured_weight {
        s.weight.to_string()
    } else {
        format!("{} (config {})", s.weight, s.configured_weight)
    };
    let check = match (&s.check_status, s.check_duration_us) {
        _ if !s.checked => "off".to_string(),
        (Some(status), Some(us)) => format!("{status} {}", latency(Some(us))),
        (Some(status), None) => status.clone(),
        (None, _) => "-".into(),
    };
    let mut row = vec![
        s.name.clone(),
        s.address.clone(),
        state,
        health,
        weight,
        s.active.to_string(),
    ];
    match http {
        Some(h) => row.extend([
            h.requests.to_string(),
            h.responses[4].to_string(),
            latency(h.p99_us),
        ]),
        None => row.push(s.total_conns.to_string()),
    }
    row.push(check);
    row
}

/// Left-aligned columns as wide as their widest cell.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn render(&self, indent: &str) -> String {
        let columns = self.header.len();
        let mut widths = vec![0; columns];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = indent.to_string();
            for (i, cell) in row.iter().enumerate().take(columns) {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_by_characters() {
        let mut t = Table::new(&["A", "HEALTH", "Z"]);
        t.row(vec!["long name".into(), "UP 1/2↓".into(), "1".into()]);
        t.row(vec!["x".into(), "DOWN".into(), "22".into()]);
        t.row(vec!["short row".into()]);
        assert_eq!(
            t.render("  "),
            "  A          HEALTH   Z\n  long name  UP 1/2↓  1\n  x          DOWN     22\n  short row\n"
        );
    }

    #[test]
    fn json_is_pretty_and_errors_say_the_status() {
        let out = pretty_json(StatusCode::OK, r#"{"a":1,"new_field":[2]}"#).expect("json");
        assert_eq!(out, "{\n  \"a\": 1,\n  \"new_field\": [\n    2\n  ]\n}\n");
        assert!(pretty_json(StatusCode::OK, "<html>").is_err());
        let e = pretty_json(StatusCode::NOT_FOUND, "{\"error\":\"no\"}").expect_err("404");
        assert!(e.starts_with("404"), "{e}");
    }
}
