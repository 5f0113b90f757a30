//! Cache: the selected node's operations by command with totals and rates, hits and misses,
//! evictions, items, memory and connections.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Gauge, Paragraph};

use super::common::{boxed, bytes, rate};
use crate::tui::app::App;
use crate::tui::theme::Theme;

pub fn render(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let Some(c) = app.selected_cache() else {
        f.render_widget(
            Paragraph::new("no cache node runs here").style(theme.muted),
            area,
        );
        return;
    };
    if c.stopped {
        f.render_widget(
            Paragraph::new("stopped: R starts it again")
                .style(theme.down)
                .block(boxed(format!("Cache: {} {}", c.role, c.listen), theme)),
            area,
        );
        return;
    }
    let r = app.trends.get(&c.role).map(|t| t.rates).unwrap_or_default();
    let [mem, body] = Layout::vertical([Constraint::Length(3), Constraint::Min(0)]).areas(area);
    let [ops, other] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(body);

    let ratio = if c.limit_maxbytes > 0 {
        (c.bytes as f64 / c.limit_maxbytes as f64).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mem_style = if ratio > 0.9 {
        theme.warning
    } else {
        theme.gauge
    };
    f.render_widget(
        Gauge::default()
            .block(boxed(format!("Memory: {} {}", c.role, c.listen), theme))
            .ratio(ratio)
            .label(Span::styled(
                format!(
                    "{} of {} ({:.0}%)  {} items",
                    bytes(c.bytes),
                    bytes(c.limit_maxbytes),
                    ratio * 100.0,
                    c.curr_items
                ),
                theme.title,
            ))
            .gauge_style(mem_style)
            .use_unicode(true),
        mem,
    );

    let row = |name: &str, total: u64, per: f64| {
        Line::from(vec![
            Span::styled(format!("{name:<14}"), theme.muted),
            Span::styled(format!("{total:>12}"), theme.text),
            Span::styled(format!("{:>10}/s", rate(per)), theme.accent),
        ])
    };
    let head = Line::from(Span::styled(
        format!("{:<14}{:>12}{:>12}", "command", "total", "rate"),
        theme.muted,
    ));
    let hit = c
        .hit_ratio()
        .map_or("-".to_string(), |h| format!("{:.1}%", h * 100.0));
    let ops_lines = vec![
        head.clone(),
        row("get", c.cmd_get, r.gets),
        row("  hits", c.get_hits, r.hits),
        row("  misses", c.get_misses, r.misses),
        row("set", c.cmd_set, r.sets),
        row("touch", c.cmd_touch, r.touches),
        row("delete", c.delete_hits + c.delete_misses, r.deletes),
        row("incr/decr", c.incr_hits + c.decr_hits, r.incr_decr),
        Line::from(vec![
            Span::styled(format!("{:<14}", "hit ratio"), theme.muted),
            Span::styled(format!("{hit:>12}"), theme.healthy),
        ]),
    ];
    f.render_widget(
        Paragraph::new(ops_lines).block(boxed("Operations", theme)),
        ops,
    );
    let other_lines = vec![
        head,
        row("items", c.curr_items, 0.0),
        row("  stored ever", c.total_items, r.sets),
        row("evictions", c.evictions, r.evictions),
        row("reclaimed", c.reclaimed, 0.0),
        row("connections", c.curr_connections, 0.0),
        row("  total", c.total_connections, r.conns),
        row("  rejected", c.rejected_connections, 0.0),
        Line::from(vec![
            Span::styled(format!("{:<14}", "bytes in/out"), theme.muted),
            Span::styled(
                format!(
                    "{:>12}",
                    format!("{}/{}", bytes(c.bytes_read), bytes(c.bytes_written))
                ),
                theme.text,
            ),
            Span::styled(
                format!(
                    "{:>12}",
                    format!("{}/{}", bytes(r.bytes_in as u64), bytes(r.bytes_out as u64))
                ),
                theme.accent,
            ),
        ]),
    ];
    f.render_widget(
        Paragraph::new(other_lines).block(boxed("Items, evictions, connections", theme)),
        other,
    );
}
