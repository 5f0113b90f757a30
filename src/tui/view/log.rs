//! Log: this process's tracing events, coloured by level, filtered by level and text, and
//! scrollable (following the newest line unless scrolled back). Attached to a remote node,
//! it is the record of the link to it: the node's own log does not travel over the API.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::common::{boxed, clock, fold};
use crate::logging::LogLevel;
use crate::tui::app::App;
use crate::tui::theme::Theme;

pub fn render(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let visible = app.visible_log();
    let height = area.height.saturating_sub(2) as usize;
    let width = area.width.saturating_sub(2) as usize;
    // Time and level take 15 columns; a long message folds onto indented rows below it.
    const PREFIX: usize = 15;
    let end = visible.len().saturating_sub(app.log_scroll);
    let mut rows: Vec<Line> = Vec::new();
    for l in visible[..end].iter().rev() {
        if rows.len() >= height {
            break;
        }
        let style = match l.level {
            LogLevel::Error => theme.log_error,
            LogLevel::Warn => theme.log_warn,
            LogLevel::Info => theme.log_info,
            LogLevel::Debug => theme.log_debug,
            LogLevel::Trace => theme.log_trace,
        };
        let room = width.saturating_sub(PREFIX).max(1);
        let entry: Vec<Line> = fold(&l.text, room)
            .into_iter()
            .enumerate()
            .map(|(i, text)| {
                if i == 0 {
                    Line::from(vec![
                        Span::styled(format!("{} ", clock(l.at_ms)), theme.muted),
                        Span::styled(format!("{:<5} ", l.level.label()), style),
                        Span::styled(text, theme.text),
                    ])
                } else {
                    Line::from(Span::styled(format!("{:PREFIX$}{text}", ""), theme.text))
                }
            })
            .collect();
        rows.extend(entry.into_iter().rev());
    }
    rows.truncate(height);
    rows.reverse();
    let lines = rows;
    let level = if app.log_level == LogLevel::Trace {
        "all levels".to_string()
    } else {
        format!("{} and worse", app.log_level.label())
    };
    let what = match &app.remote {
        Some(link) => format!("Log of the link to {}", link.address),
        None => "Log".into(),
    };
    let mut title = format!("{what} ({level}, {} lines", visible.len());
    if !app.filter.is_empty() {
        title.push_str(&format!(", filter: {}", app.filter));
    }
    if app.log_scroll > 0 {
        title.push_str(&format!(", scrolled back {}; End follows", app.log_scroll));
    }
    title.push(')');
    let body = if lines.is_empty() {
        let empty = if app.remote.is_some() {
            "no link events shown (the node's own log stays with the node: its log file, or journalctl)"
        } else {
            "no log lines yet (they also go to the log file)"
        };
        vec![Line::from(Span::styled(empty, theme.muted))]
    } else {
        lines
    };
    f.render_widget(Paragraph::new(body).block(boxed(title, theme)), area);
}
