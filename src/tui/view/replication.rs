//! Replication: the selected node's role, peer and link state machine, the marugoto copy as
//! a gauge with rate and ETA, the counters, and a timeline of recent events.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Gauge, Paragraph};

use super::common::{age, boxed, bytes, clock, count, link_state, rate, role_badge};
use crate::control::{CacheSnapshot, ReplicationSnapshot};
use crate::replication::shared::{CopyProgress, LinkPhase, NodeRole};
use crate::tui::app::App;
use crate::tui::theme::Theme;

pub fn render(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let [nodes, details, gauge, timeline] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(8),
        Constraint::Length(4),
        Constraint::Min(0),
    ])
    .areas(area);
    render_nodes(f, app, theme, nodes);
    let Some(c) = app.selected_cache() else {
        f.render_widget(
            Paragraph::new("no cache node runs here").style(theme.muted),
            details,
        );
        return;
    };
    render_details(f, app, c, theme, details);
    render_copy(f, app, c, theme, gauge);
    render_timeline(f, app, c, theme, timeline);
}

/// One line choosing the node (j/k), each with its badge.
fn render_nodes(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let mut spans = vec![Span::styled(" nodes (j/k): ", theme.muted)];
    for c in app.visible_caches() {
        let selected = app.selected.as_deref() == Some(c.role.as_str());
        let name = if selected {
            Span::styled(format!("▶ {} ", c.role), theme.selected)
        } else {
            Span::styled(format!("  {} ", c.role), theme.text)
        };
        spans.push(name);
        spans.push(role_badge(c, theme));
        spans.push(Span::raw("  "));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn pair<'a>(label: &str, value: String, theme: &Theme) -> Vec<Span<'a>> {
    vec![
        Span::styled(format!("{label:<10}"), theme.muted),
        Span::styled(value, theme.text),
    ]
}

/// The link's life as a row of states with the current one marked.
fn state_machine<'a>(r: &ReplicationSnapshot, c: &CacheSnapshot, theme: &Theme) -> Line<'a> {
    let (_, style) = link_state(c, theme);
    let mut spans = vec![Span::styled(format!("{:<10}", "link"), theme.muted)];
    let phases = [
        (LinkPhase::Listening, "listening"),
        (LinkPhase::Connecting, "connecting"),
        (LinkPhase::Handshake, "handshake"),
        (LinkPhase::Copying, "marugoto copying"),
        (LinkPhase::Streaming, "streaming"),
    ];
    for (i, (phase, word)) in phases.iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled(" › ", theme.muted));
        }
        if *phase == r.status.link {
            spans.push(Span::styled(format!("[{word}]"), style));
        } else {
            spans.push(Span::styled(word.to_string(), theme.muted));
        }
    }
    let held = r.status.link == LinkPhase::HeldDown;
    spans.push(Span::styled(
        if held { "  [held down]" } else { "  held down" },
        if held { theme.draining } else { theme.muted },
    ));
    Line::from(spans)
}

fn render_details(f: &mut Frame, app: &App, c: &CacheSnapshot, theme: &Theme, area: Rect) {
    let title = format!("Replication: {} {}", c.role, c.listen);
    let block = boxed(title, theme);
    let Some(r) = &c.replication else {
        let text = if c.stopped {
            "stopped: its sockets are closed (R starts it again)"
        } else {
            "standalone cache: no replication configured"
        };
        let style = if c.stopped { theme.down } else { theme.muted };
        f.render_widget(Paragraph::new(text).style(style).block(block), area);
        return;
    };
    let s = &r.status;
    let now = app.snapshot.at_ms;
    let (link, link_style) = link_state(c, theme);
    let mut first = vec![Span::styled(format!("{:<10}", "role"), theme.muted)];
    first.push(role_badge(c, theme));
    first.push(Span::styled(
        format!("  epoch {}  node {}  ", s.epoch, r.node_id),
        theme.text,
    ));
    first.push(Span::styled(link, link_style));
    if !r.serving {
        first.push(Span::styled("  NOT SERVING", theme.warning));
    }
    let peer = match (&s.peer, s.peer_node) {
        (Some(p), Some(id)) => format!("{p} (node {id:08x})"),
        (Some(p), None) => format!("{p} (not connected)"),
        (None, _) => "none yet: waiting for one to connect".into(),
    };
    let peer_cache = s
        .peer_cache
        .as_ref()
        .map(|a| format!("  cache {a}"))
        .unwrap_or_default();
    let heartbeat = match r.heartbeat_age_ms {
        Some(ms) if s.peer_node.is_some() => format!("{} ago", age(ms)),
        _ => "-".into(),
    };
    let held = s
        .held_until_ms
        .map(|t| format!("  held down {} more", age(t.saturating_sub(now))))
        .unwrap_or_default();
    let mut heartbeat_line = pair("heartbeat", format!("{heartbeat:<22}"), theme);
    heartbeat_line.extend(pair("lag", format!("{:<6}", bytes(r.lag_bytes)), theme));
    heartbeat_line.extend(pair("queued", bytes(r.backlog_bytes), theme));
    heartbeat_line.push(Span::styled(held, theme.draining));
    let mut traffic = pair(
        "sent",
        format!(
            "{:<22}",
            format!("{} / {}", count(r.items_sent), bytes(r.bytes_sent))
        ),
        theme,
    );
    traffic.extend(pair(
        "received",
        format!("{} / {}", count(r.items_received), bytes(r.bytes_received)),
        theme,
    ));
    let mut resyncs = pair(
        "resyncs",
        format!(
            "{:<22}",
            format!("{} full, {} partial", r.full_resyncs, r.partial_resyncs)
        ),
        theme,
    );
    resyncs.extend(pair("conflicts", format!("{:<6}", r.conflicts), theme));
    resyncs.extend(pair(
        "losses",
        format!("{}  refused {}", r.link_losses, r.links_refused),
        theme,
    ));
    let lines = vec![
        Line::from(first),
        Line::from(pair("peer", format!("{peer}{peer_cache}"), theme)),
        state_machine(r, c, theme),
        Line::from(heartbeat_line),
        Line::from(traffic),
        Line::from(resyncs),
    ];
    f.render_widget(Paragraph::new(lines).block(block), area);
}

/// The copy worth showing: a running one (the master's outgoing, the slave's incoming
/// first), else the last that ran in this node's direction.
fn current_copy(r: &ReplicationSnapshot) -> Option<(&'static str, &CopyProgress)> {
    let s = &r.status;
    let incoming = s
        .copy_in
        .as_ref()
        .map(|p| ("receiving from the peer", "received from the peer", p));
    let outgoing = s
        .copy_out
        .as_ref()
        .map(|p| ("sending to the peer", "sent to the peer", p));
    let order = if s.role == NodeRole::Master {
        [outgoing, incoming]
    } else {
        [incoming, outgoing]
    };
    if let Some((running, _, p)) = order
        .iter()
        .flatten()
        .find(|(_, _, p)| p.finished_ms.is_none())
    {
        return Some((running, p));
    }
    order
        .into_iter()
        .flatten()
        .next()
        .map(|(_, done, p)| (done, p))
}

fn render_copy(f: &mut Frame, app: &App, c: &CacheSnapshot, theme: &Theme, area: Rect) {
    let Some((what, p)) = c.replication.as_ref().and_then(current_copy) else {
        f.render_widget(
            Paragraph::new("no marugoto copy has run yet")
                .style(theme.muted)
                .block(boxed("Marugoto copy", theme)),
            area,
        );
        return;
    };
    let now = app.snapshot.at_ms;
    let end = p.finished_ms.unwrap_or(now);
    let secs = end.saturating_sub(p.started_ms) as f64 / 1000.0;
    let ratio = if p.finished_ms.is_some() {
        1.0
    } else if p.items_total > 0 {
        p.items_done as f64 / p.items_total as f64
    } else if p.bytes_total > 0 {
        p.bytes_done as f64 / p.bytes_total as f64
    } else {
        0.0
    }
    .clamp(0.0, 1.0);
    let per_sec = if secs > 0.0 {
        p.items_done as f64 / secs
    } else {
        0.0
    };
    let tail = match p.finished_ms {
        Some(_) => format!("done in {}", age((secs * 1000.0) as u64)),
        None if per_sec > 0.0 => {
            let left = p.items_total.saturating_sub(p.items_done) as f64 / per_sec;
            format!("ETA {}", age((left * 1000.0) as u64))
        }
        None => "ETA -".into(),
    };
    let label = format!(
        "{:.0}%  {}/{} items  {}/{}  {} items/s  {tail}",
        ratio * 100.0,
        count(p.items_done),
        count(p.items_total),
        bytes(p.bytes_done),
        bytes(p.bytes_total),
        rate(per_sec)
    );
    let [bar, note] = Layout::vertical([Constraint::Length(1), Constraint::Length(1)])
        .areas(boxed("", theme).inner(area));
    f.render_widget(boxed(format!("Marugoto copy: {what}"), theme), area);
    f.render_widget(
        Gauge::default()
            .ratio(ratio)
            .label(Span::styled(label, theme.title))
            .gauge_style(theme.gauge)
            .use_unicode(true),
        bar,
    );
    f.render_widget(
        Paragraph::new(format!("started {} UTC", clock(p.started_ms))).style(theme.muted),
        note,
    );
}

fn render_timeline(f: &mut Frame, app: &App, c: &CacheSnapshot, theme: &Theme, area: Rect) {
    let Some(r) = &c.replication else {
        return;
    };
    let f_text = app.filter.to_lowercase();
    let lines: Vec<Line> = r
        .status
        .events
        .iter()
        .rev()
        .filter(|(_, t)| f_text.is_empty() || t.to_lowercase().contains(&f_text))
        .take(area.height.saturating_sub(2) as usize)
        .map(|(at, text)| {
            let style = if text.contains("promoted") || text.contains("became master") {
                theme.warning
            } else if text.contains("down") || text.contains("killed") || text.contains("lost") {
                theme.down
            } else if text.contains("streaming") || text.contains("finished") {
                theme.healthy
            } else {
                theme.text
            };
            Line::from(vec![
                Span::styled(format!("{} ", clock(*at)), theme.muted),
                Span::styled(text.clone(), style),
            ])
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(boxed("Events (newest first, UTC)", theme)),
        area,
    );
}
