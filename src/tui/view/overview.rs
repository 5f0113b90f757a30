//! Overview: every running role at a glance, one row per cache node, and sparklines of the
//! last minutes of traffic.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Sparkline};

use super::common::{boxed, bytes, count, fit, link_state, newest, rate, role_badge};
use super::{l4, l7};
use crate::tui::app::App;
use crate::tui::theme::Theme;

pub fn render(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let caches = app.visible_caches();
    // A balancer-only node has no cache table to show, not an empty one.
    let balancer = app.snapshot.l4.is_some() || app.snapshot.l7.is_some();
    let table_h = if app.snapshot.caches.is_empty() && balancer {
        0
    } else {
        (caches.len() as u16 + 3).max(4)
    };
    let services = app
        .snapshot
        .l4
        .as_ref()
        .map_or(0, |v| v.len().max(1) as u16);
    let l4_h = if app.snapshot.l4.is_some() {
        services + 2
    } else {
        0
    };
    let l7_h = app
        .snapshot
        .l7
        .as_ref()
        .map_or(0, |l| l.pools.len().max(1) as u16 + 2);
    let traffic_h = u16::from(app.snapshot.traffic.is_some()) * 3;
    let [table, l4_table, l7_table, traffic, sparks] = Layout::vertical([
        Constraint::Length(table_h),
        Constraint::Length(l4_h),
        Constraint::Length(l7_h),
        Constraint::Length(traffic_h),
        Constraint::Min(0),
    ])
    .areas(area);
    if table_h > 0 {
        render_table(f, app, theme, table);
    }
    if l4_h > 0 {
        render_services(f, app, theme, l4_table);
    }
    if l7_h > 0 {
        render_pools(f, app, theme, l7_table);
    }
    if let Some(t) = &app.snapshot.traffic {
        let (word, style) = if t.paused {
            ("PAUSED (g resumes)", theme.warning)
        } else {
            ("running (g pauses)", theme.healthy)
        };
        let mut spans = vec![
            Span::styled(format!("{} req/s target, ", t.rate_per_sec), theme.text),
            Span::styled(word, style),
            Span::styled(
                format!(", {} requests, {} errors", t.requests, t.errors),
                theme.text,
            ),
        ];
        if t.http_rate_per_sec > 0 {
            spans.push(Span::styled(
                format!(
                    "; HTTP {}/s: {} requests, {} errors",
                    t.http_rate_per_sec, t.http_requests, t.http_errors
                ),
                theme.text,
            ));
        }
        let line = Line::from(spans);
        f.render_widget(
            Paragraph::new(line).block(boxed("Demo traffic", theme)),
            traffic,
        );
    }
    render_sparklines(f, app, theme, sparks);
}

fn render_table(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let wide = area.width >= 110;
    let mut lines = Vec::new();
    let head = if wide {
        format!(
            "  {} {} {} {:>8} {:>6} {:>15} {:>7} {:>9} {:>9}",
            fit("node", 8),
            fit("address", 16),
            fit("role     link", 27),
            "ops/s",
            "hit",
            "memory",
            "conns",
            "items",
            "evicted"
        )
    } else {
        format!(
            "  {} {} {:>7} {:>5} {:>11} {:>5}",
            fit("node", 7),
            fit("role     link", 25),
            "ops/s",
            "hit",
            "memory",
            "conns"
        )
    };
    lines.push(Line::from(Span::styled(head, theme.muted)));
    let caches = app.visible_caches();
    if caches.is_empty() {
        lines.push(Line::from(Span::styled(
            "  no cache node matches the filter",
            theme.muted,
        )));
    }
    for c in caches {
        let selected = app.selected.as_deref() == Some(c.role.as_str());
        let rates = app.trends.get(&c.role).map(|t| t.rates).unwrap_or_default();
        let (link, link_style) = link_state(c, theme);
        let hit = c
            .hit_ratio()
            .map_or("-".into(), |r| format!("{:.0}%", r * 100.0));
        let mem = format!("{}/{}", bytes(c.bytes), bytes(c.limit_maxbytes));
        let mut spans = vec![
            Span::styled(if selected { "▶ " } else { "  " }, theme.accent),
            Span::styled(fit(&c.role, if wide { 8 } else { 7 }), theme.title),
            Span::raw(" "),
        ];
        if wide {
            spans.push(Span::styled(fit(&c.listen, 16), theme.text));
            spans.push(Span::raw(" "));
        }
        spans.push(role_badge(c, theme));
        spans.push(Span::raw(" "));
        spans.push(Span::styled(
            fit(&link, if wide { 18 } else { 16 }),
            link_style,
        ));
        let numbers = if c.stopped {
            String::new()
        } else if wide {
            format!(
                " {:>8} {:>6} {:>15} {:>7} {:>9} {:>9}",
                rate(rates.ops),
                hit,
                mem,
                c.curr_connections,
                count(c.curr_items),
                count(c.evictions)
            )
        } else {
            format!(
                " {:>7} {:>5} {:>11} {:>5}",
                rate(rates.ops),
                hit,
                mem,
                c.curr_connections
            )
        };
        spans.push(Span::styled(numbers, theme.text));
        let line = Line::from(spans);
        lines.push(if selected {
            line.style(theme.selected)
        } else {
            line
        });
    }
    let mut title = format!("Cache nodes (sort: {})", app.sort.label());
    if !app.filter.is_empty() {
        title.push_str(&format!(" filter: {}", app.filter));
    }
    f.render_widget(Paragraph::new(lines).block(boxed(title, theme)), area);
}

/// One line per L4 service: servers up, connections and rates.
fn render_services(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let wide = area.width >= 130;
    let mut lines: Vec<Line> = app
        .snapshot
        .l4
        .iter()
        .flatten()
        .map(|svc| {
            let r = app
                .l4_trend(&svc.name, None)
                .map(|t| t.rates)
                .unwrap_or_default();
            l4::service_line(svc, r, wide, theme)
        })
        .collect();
    if lines.is_empty() {
        lines.push(Line::from(Span::styled(
            "  no L4 service is configured",
            theme.muted,
        )));
    }
    f.render_widget(
        Paragraph::new(lines).block(boxed("L4 services", theme)),
        area,
    );
}

/// One line per L7 pool: servers up, req/s, retries and requests turned away.
fn render_pools(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let wide = area.width >= 130;
    let mut lines: Vec<Line> = app
        .snapshot
        .l7
        .iter()
        .flat_map(|l| &l.pools)
        .map(|p| {
            let r = app
                .l7
                .pool_trend(&p.name)
                .map(|t| t.rates)
                .unwrap_or_default();
            l7::pool_line(p, r, wide, theme)
        })
        .collect();
    if lines.is_empty() {
        lines.push(Line::from(Span::styled(
            "  no L7 pool is configured",
            theme.muted,
        )));
    }
    f.render_widget(Paragraph::new(lines).block(boxed("L7 pools", theme)), area);
}

/// A sparkline worth of history: its title and samples.
struct Series {
    title: String,
    data: Vec<u64>,
}

fn render_sparklines(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    if area.height < 3 {
        return;
    }
    let width = area.width.saturating_sub(2) as usize;
    let mut series: Vec<Series> = Vec::new();
    for c in app.visible_caches() {
        let Some(trend) = app.trends.get(&c.role) else {
            continue;
        };
        let data = newest(&trend.ops, width);
        let peak = data.iter().copied().max().unwrap_or(0);
        series.push(Series {
            title: format!(
                "{} ops/s, last {} s (now {}, peak {})",
                c.role,
                data.len(),
                rate(trend.rates.ops),
                peak
            ),
            data,
        });
    }
    for svc in app.snapshot.l4.iter().flatten() {
        let Some(trend) = app.l4_trend(&svc.name, None) else {
            continue;
        };
        let data = newest(&trend.cps, width);
        let peak = data.iter().copied().max().unwrap_or(0);
        series.push(Series {
            title: format!(
                "{} new conn/s, last {} s (now {}, peak {})",
                svc.name,
                data.len(),
                rate(trend.rates.cps),
                peak
            ),
            data,
        });
    }
    for p in app.snapshot.l7.iter().flat_map(|l| &l.pools) {
        let Some(trend) = app.l7.pool_trend(&p.name) else {
            continue;
        };
        let data = newest(&trend.requests, width);
        let peak = data.iter().copied().max().unwrap_or(0);
        series.push(Series {
            title: format!(
                "{} req/s, last {} s (now {}, peak {})",
                p.name,
                data.len(),
                rate(trend.rates.requests),
                peak
            ),
            data,
        });
    }
    if series.is_empty() {
        return;
    }
    // Each sparkline needs three rows; those that do not fit are left out.
    let shown = series.len().min((area.height / 3) as usize).max(1);
    let rows = Layout::vertical((0..shown).map(|_| Constraint::Ratio(1, shown as u32))).split(area);
    for (s, row) in series.iter().zip(rows.iter()) {
        f.render_widget(
            Sparkline::default()
                .block(boxed(s.title.clone(), theme))
                .data(&s.data)
                .style(theme.sparkline),
            *row,
        );
    }
}
