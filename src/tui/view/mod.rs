//! Drawing: the frame (header with tabs and node badges, footer with the key hints) around
//! one panel per view, and the overlays (help, confirmation). Views read only `App` and the
//! theme; they take no locks and do no I/O.

pub mod cache;
pub mod common;
pub mod l4;
pub mod l7;
pub mod link;
pub mod log;
pub mod overview;
pub mod replication;
pub mod tester;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

use super::app::{App, Field, Mode, View};
use super::keys;
use super::theme::Theme;
use common::{boxed, centered, role_badge};

/// Smallest area the console draws into; below it, it says so instead.
const MIN_W: u16 = 30;
const MIN_H: u16 = 6;

pub fn render(f: &mut Frame, app: &App, theme: &Theme) {
    let area = f.area();
    if area.width < MIN_W || area.height < MIN_H {
        f.render_widget(
            Paragraph::new(format!(
                "opsconsole: the terminal is {}x{}; it needs at least {MIN_W}x{MIN_H}",
                area.width, area.height
            ))
            .style(theme.warning)
            .wrap(Wrap { trim: true }),
            area,
        );
        return;
    }
    // An attached console whose screen is not live says so under the header.
    let banner = app
        .remote
        .as_ref()
        .and_then(|link| link::banner(link, theme));
    let banner_rows = banner.as_ref().map_or(0, |(text, _)| {
        (text.chars().count() as u16)
            .div_ceil(area.width.max(1))
            .clamp(1, 2)
    });
    let [header, banner_area, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(banner_rows),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(f, app, theme, header);
    if let Some((text, style)) = banner {
        f.render_widget(
            Paragraph::new(text).style(style).wrap(Wrap { trim: true }),
            banner_area,
        );
    }
    // Until the first snapshot arrives, empty tables would read as a node that runs nothing.
    let waiting = app
        .remote
        .as_ref()
        .filter(|link| link.snapshot_age_ms.is_none() && app.view != View::Log);
    if let Some(link) = waiting {
        link::render_waiting(f, link, theme, body);
    } else {
        match app.view {
            View::Overview => overview::render(f, app, theme, body),
            View::Replication => replication::render(f, app, theme, body),
            View::Cache => cache::render(f, app, theme, body),
            View::Tester => tester::render(f, app, theme, body),
            View::L4 => l4::render(f, app, theme, body),
            View::L7 => l7::render(f, app, theme, body),
            View::Log => log::render(f, app, theme, body),
        }
    }
    render_footer(f, app, theme, footer);
    match &app.mode {
        Mode::Help => render_help(f, app, theme, body),
        Mode::Confirm(p) => render_confirm(f, &p.question, theme, body),
        _ => {}
    }
}

fn render_header(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let views = app.views();
    let tab = |i: usize, v: &View, wide: bool| {
        let title = if wide { v.title() } else { v.short_title() };
        format!(" {} {title} ", i + 1)
    };
    // The long titles only where they fit beside the remote node's badge: the tabs are how
    // one gets around, so they are the last thing to cut.
    let wide = area.width >= 110 && {
        let badge = app
            .remote
            .as_ref()
            .map_or(0, |r| link::badge(r, true, theme).width() + 1);
        let tabs: usize = views
            .iter()
            .enumerate()
            .map(|(i, v)| tab(i, v, true).chars().count())
            .sum();
        " opsconsole ".len() + badge + tabs <= area.width as usize
    };
    let mut spans = vec![Span::styled(
        if wide { " opsconsole " } else { " " },
        theme.title,
    )];
    if let Some(remote) = &app.remote {
        spans.push(link::badge(remote, wide, theme));
        spans.push(Span::raw(" "));
    }
    for (i, v) in views.iter().enumerate() {
        let style = if *v == app.view {
            theme.tab_active
        } else {
            theme.tab
        };
        spans.push(Span::styled(tab(i, v, wide), style));
    }
    spans.push(Span::raw("  "));
    for c in &app.snapshot.caches {
        spans.push(Span::styled(format!("{} ", c.role), theme.header));
        spans.push(role_badge(c, theme));
        spans.push(Span::raw(" "));
    }
    if app.paused {
        spans.push(Span::styled(" PAUSED ", theme.warning));
    }
    f.render_widget(Paragraph::new(Line::from(spans)).style(theme.header), area);
}

fn render_footer(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let mut spans = Vec::new();
    if app.read_only {
        spans.push(Span::styled(" READ-ONLY ", theme.warning));
    }
    if let Some(flash) = &app.flash {
        let style = if flash.error {
            theme.error
        } else {
            theme.accent
        };
        spans.push(Span::styled(format!(" {} ", flash.text), style));
        spans.push(Span::raw("│"));
    }
    for (key, hint, disabled) in keys::footer_hints(app) {
        let key_style = if disabled { theme.muted } else { theme.key };
        spans.push(Span::styled(format!(" {key}"), key_style));
        let hint = if disabled {
            format!(" {hint}(off)")
        } else {
            format!(" {hint}")
        };
        spans.push(Span::styled(hint, theme.footer));
    }
    if let Mode::Typing(Field::Filter) = app.mode {
        spans.insert(
            0,
            Span::styled(format!(" filter: {}▏", app.filter_input.text), theme.input),
        );
    }
    f.render_widget(Paragraph::new(Line::from(spans)).style(theme.footer), area);
}

fn render_help(f: &mut Frame, app: &App, theme: &Theme, body: Rect) {
    let rows = keys::help_rows(app.read_only);
    let mut lines = Vec::new();
    let mut last_scope = "";
    for (scope, keys, help, disabled) in rows {
        if scope != last_scope {
            lines.push(Line::from(Span::styled(scope.to_string(), theme.accent)));
            last_scope = scope;
        }
        let style = if disabled { theme.muted } else { theme.text };
        let mut spans = vec![
            Span::styled(
                format!("  {keys:<12}"),
                if disabled { theme.muted } else { theme.key },
            ),
            Span::styled(help.to_string(), style),
        ];
        if disabled {
            spans.push(Span::styled(" (read-only)", theme.muted));
        }
        lines.push(Line::from(spans));
    }
    let area = centered(body, 84, lines.len() as u16 + 2);
    let visible = area.height.saturating_sub(2) as usize;
    let scroll = app.help_scroll.min(lines.len().saturating_sub(visible));
    let more = lines.len() > visible + scroll;
    let title = match (scroll > 0, more) {
        (_, true) => "Keys (j/k scroll, any other key closes) ↓",
        (true, false) => "Keys (j/k scroll, any other key closes) ↑",
        (false, false) => "Keys (any key closes)",
    };
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(lines)
            .block(boxed(title, theme))
            .style(theme.overlay)
            .scroll((scroll as u16, 0)),
        area,
    );
}

fn render_confirm(f: &mut Frame, question: &str, theme: &Theme, body: Rect) {
    let mut lines: Vec<Line> = question
        .lines()
        .map(|l| Line::from(Span::styled(l.to_string(), theme.text)))
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(vec![
        Span::styled(" y ", theme.key),
        Span::styled("yes   ", theme.text),
        Span::styled(" n ", theme.key),
        Span::styled("no", theme.text),
    ]));
    let width = 72.min(body.width);
    // Room for wrapped lines: a rough count is enough, the box only needs to fit.
    let wrapped: u16 = question
        .lines()
        .map(|l| {
            (l.chars().count() as u16)
                .div_ceil(width.saturating_sub(4).max(1))
                .max(1)
        })
        .sum();
    let area = centered(body, width, wrapped + 4);
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(lines)
            .block(boxed("Are you sure?", theme).border_style(theme.warning))
            .style(theme.overlay)
            .wrap(Wrap { trim: true }),
        area,
    );
}
