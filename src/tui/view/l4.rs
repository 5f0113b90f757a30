//! L4 balancer: each virtual service with its real servers under it (state, weight,
//! connections, rates, last check), and below, the selected server in detail with
//! sparklines of its connection and byte rates.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Sparkline};

use super::common::{
    age, boxed, bytes, count, detail_halves, fit, newest, no_server_selected, rate, server_table,
};
use crate::balance::backend::AdminState;
use crate::balance::health::Phase;
use crate::control::{ServerSnapshot, ServiceSnapshot};
use crate::tui::app::{App, format_micros};
use crate::tui::theme::Theme;
use crate::tui::trend::ConnRates;

/// The detail panel's height, borders included.
const DETAIL_H: u16 = 9;

pub fn render(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let detail_h = if area.height >= 16 { DETAIL_H } else { 0 };
    let [table, detail] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(detail_h)]).areas(area);
    render_table(f, app, theme, table);
    if detail_h > 0 {
        render_detail(f, app, theme, detail);
    }
}

/// The style that says how a server is doing.
pub fn state_style(s: &ServerSnapshot, theme: &Theme) -> Style {
    match (s.admin, s.health) {
        (AdminState::Maint, _) => theme.stopped,
        (_, Phase::Up | Phase::GoingDown { .. }) if s.ejected_for_ms.is_some() => theme.down,
        (AdminState::Ready, Phase::Up) if s.slow_start_pct.is_some() => theme.warning,
        (_, Phase::Down) => theme.down,
        (_, Phase::GoingUp { .. } | Phase::GoingDown { .. }) => theme.warning,
        (AdminState::Drain, Phase::Up) => theme.draining,
        (AdminState::Ready, Phase::Up) if s.overloaded => theme.warning,
        (AdminState::Ready, Phase::Up) => theme.healthy,
    }
}

/// The state word with what an operator acts on: a drained server with nothing left on it
/// can go, a full one takes nothing new.
pub fn state_text(s: &ServerSnapshot) -> String {
    let mut t = s.state_label();
    if let Some(ms) = s.ejected_for_ms {
        t.push_str(&format!(" {}s", ms.div_ceil(1000)));
    } else if let Some(pct) = s.slow_start_pct {
        t.push_str(&format!(" {pct}%"));
    }
    if s.removable {
        t.push_str(" empty");
    } else if s.overloaded {
        t.push_str(" full");
    }
    t
}

pub(super) fn check_text(s: &ServerSnapshot) -> String {
    if s.admin == AdminState::Maint && s.checked {
        return "off (maint)".into();
    }
    match (&s.check_status, s.check_duration_us) {
        (Some(status), Some(us)) => format!("{status} {}", format_micros(us)),
        (Some(status), None) => status.clone(),
        (None, _) if s.checked => "pending".into(),
        (None, _) => "no check".into(),
    }
}

/// The check's code alone (`L7OK 200`, `L4CON`), for a narrow column.
pub(super) fn check_code(s: &ServerSnapshot) -> String {
    let full = check_text(s);
    let mut words = full.split(' ');
    let first = words.next().unwrap_or_default();
    match (s.check_status.is_some(), words.next()) {
        (true, Some(code)) if code.chars().all(|c| c.is_ascii_digit()) => {
            format!("{first} {code}")
        }
        (true, _) => first.to_string(),
        (false, _) => full,
    }
}

/// Servers taking traffic out of all of them, for the service's line.
fn up_count(svc: &ServiceSnapshot) -> (usize, usize) {
    let up = svc
        .servers
        .iter()
        .filter(|s| s.health.is_up() && s.admin != AdminState::Maint)
        .count();
    (up, svc.servers.len())
}

struct Columns {
    wide: bool,
}

impl Columns {
    fn head(&self) -> String {
        if self.wide {
            format!(
                "  {} {} {} {:>7} {:>11} {:>6} {:>6} {:>8} {:>7} {:>8} {:>8}  {}",
                fit("server", 14),
                fit("address", 21),
                fit("state", 13),
                "since",
                "weight",
                "active",
                "inact",
                "total",
                "conn/s",
                "in/s",
                "out/s",
                "check"
            )
        } else {
            format!(
                "  {} {} {:>5} {:>4} {:>5} {:>6} {:>6} {:>6}  {}",
                fit("server", 10),
                fit("state", 11),
                "wt",
                "act",
                "inact",
                "total",
                "conn/s",
                "B/s",
                "check"
            )
        }
    }

    fn weight(&self, s: &ServerSnapshot) -> String {
        if self.wide && s.weight != s.configured_weight {
            format!("{} ({})", s.weight, s.configured_weight)
        } else {
            s.weight.to_string()
        }
    }

    fn server<'a>(
        &self,
        s: &ServerSnapshot,
        r: ConnRates,
        now_ms: u64,
        selected: bool,
        theme: &Theme,
    ) -> Line<'a> {
        let weight_style = if s.weight == 0 {
            theme.draining
        } else if s.weight != s.configured_weight {
            theme.warning
        } else {
            theme.text
        };
        let mut spans = vec![
            Span::styled(if selected { "▶ " } else { "  " }, theme.accent),
            Span::styled(fit(&s.name, if self.wide { 14 } else { 10 }), theme.title),
            Span::raw(" "),
        ];
        if self.wide {
            spans.push(Span::styled(fit(&s.address, 21), theme.text));
            spans.push(Span::raw(" "));
            spans.push(Span::styled(fit(&state_text(s), 13), state_style(s, theme)));
            spans.push(Span::styled(
                format!(" {:>7}", age(now_ms.saturating_sub(s.state_since_ms))),
                theme.muted,
            ));
            spans.push(Span::styled(
                format!(" {:>11}", self.weight(s)),
                weight_style,
            ));
            spans.push(Span::styled(
                format!(
                    " {:>6} {:>6} {:>8} {:>7} {:>8} {:>8}  ",
                    s.active,
                    s.inactive,
                    count(s.total_conns),
                    rate(r.cps),
                    bytes(r.bytes_in as u64),
                    bytes(r.bytes_out as u64)
                ),
                theme.text,
            ));
        } else {
            spans.push(Span::styled(fit(&state_text(s), 11), state_style(s, theme)));
            spans.push(Span::styled(
                format!(" {:>5}", self.weight(s)),
                weight_style,
            ));
            spans.push(Span::styled(
                format!(
                    " {:>4} {:>5} {:>6} {:>6} {:>6}  ",
                    s.active,
                    s.inactive,
                    count(s.total_conns),
                    rate(r.cps),
                    bytes((r.bytes_in + r.bytes_out) as u64)
                ),
                theme.text,
            ));
        }
        let check_style = match &s.check_status {
            Some(st) if st.contains("OK") => theme.muted,
            Some(_) => theme.down,
            None => theme.muted,
        };
        let check = if self.wide {
            check_text(s)
        } else {
            check_code(s)
        };
        spans.push(Span::styled(check, check_style));
        let line = Line::from(spans);
        if selected {
            line.style(theme.selected)
        } else {
            line
        }
    }

    fn service<'a>(&self, svc: &ServiceSnapshot, r: ConnRates, theme: &Theme) -> Line<'a> {
        service_line(svc, r, self.wide, theme)
    }
}

/// A service on one line: address, scheduler, servers up, connections, rates, trouble.
pub fn service_line<'a>(
    svc: &ServiceSnapshot,
    r: ConnRates,
    wide: bool,
    theme: &Theme,
) -> Line<'a> {
    let (up, all) = up_count(svc);
    let up_style = if up == all {
        theme.healthy
    } else if up == 0 {
        theme.down
    } else {
        theme.warning
    };
    let mut spans = vec![
        Span::styled(format!("{} ", svc.name), theme.accent),
        Span::styled(format!("{} {}", svc.listen, svc.scheduler), theme.text),
    ];
    if svc.persistence_secs > 0 {
        spans.push(Span::styled(
            format!(" persist {}s", svc.persistence_secs),
            theme.text,
        ));
    }
    spans.push(Span::styled(format!("  {up}/{all} up"), up_style));
    if !svc.quorum_met {
        let word = if svc.sorry_server.is_some() {
            "  QUORUM LOST: sorry server"
        } else {
            "  QUORUM LOST"
        };
        spans.push(Span::styled(word, theme.down));
    }
    let numbers = if wide {
        format!(
            "  {} active {} inactive {} total  {} conn/s  in {}/s out {}/s",
            svc.active,
            svc.inactive,
            count(svc.total_conns),
            rate(r.cps),
            bytes(r.bytes_in as u64),
            bytes(r.bytes_out as u64)
        )
    } else {
        format!(
            "  {} act  {} c/s  {}/s",
            svc.active,
            rate(r.cps),
            bytes((r.bytes_in + r.bytes_out) as u64)
        )
    };
    spans.push(Span::styled(numbers, theme.text));
    let mut trouble = Vec::new();
    if svc.connect_errors > 0 {
        trouble.push(format!("{} connect errors", svc.connect_errors));
    }
    if svc.no_server > 0 {
        trouble.push(format!("{} turned away", svc.no_server));
    }
    if !trouble.is_empty() {
        spans.push(Span::styled(
            format!("  {}", trouble.join(", ")),
            theme.warning,
        ));
    }
    Line::from(spans)
}

impl Columns {
    fn sorry<'a>(&self, s: &ServerSnapshot, in_use: bool, theme: &Theme) -> Line<'a> {
        let (word, style) = if in_use {
            ("IN USE", theme.warning)
        } else {
            ("standby", theme.muted)
        };
        let name_w = if self.wide { 14 } else { 10 };
        let mut spans = vec![
            Span::raw("  "),
            Span::styled(fit("(sorry)", name_w), theme.muted),
            Span::raw(" "),
        ];
        if self.wide {
            spans.push(Span::styled(fit(&s.address, 21), theme.muted));
            spans.push(Span::raw(" "));
            spans.push(Span::styled(fit(word, 13), style));
            spans.push(Span::styled(
                format!(" {:>7} {:>11} {:>6}", "", "", s.active),
                theme.muted,
            ));
        } else {
            spans.push(Span::styled(fit(word, 11), style));
            spans.push(Span::styled(
                format!(" {:>5} {:>4}", "", s.active),
                theme.muted,
            ));
        }
        Line::from(spans)
    }
}

fn render_table(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let cols = Columns {
        wide: area.width >= 130,
    };
    let mut lines = vec![Line::from(Span::styled(cols.head(), theme.muted))];
    let mut selected_line = 0;
    let services = app.visible_l4();
    if services.is_empty() {
        let text = if app.snapshot.l4.as_ref().is_none_or(|v| v.is_empty()) {
            "  no L4 service runs here"
        } else {
            "  no service or server matches the filter"
        };
        lines.push(Line::from(Span::styled(text, theme.muted)));
    }
    let now = app.snapshot.at_ms;
    let chosen = app.l4_selected.as_ref();
    for (svc, servers) in &services {
        let r = app.l4_trend(&svc.name, None).map(|t| t.rates);
        lines.push(cols.service(svc, r.unwrap_or_default(), theme));
        for s in servers {
            let selected = chosen.is_some_and(|c| c.service == svc.name && c.server == s.name);
            if selected {
                selected_line = lines.len();
            }
            let r = app.l4_trend(&svc.name, Some(&s.name)).map(|t| t.rates);
            lines.push(cols.server(s, r.unwrap_or_default(), now, selected, theme));
        }
        if let Some(sorry) = &svc.sorry_server {
            lines.push(cols.sorry(sorry, !svc.quorum_met, theme));
        }
    }
    server_table(
        f,
        lines,
        selected_line,
        format!("L4 services (sort: {})", app.l4_sort.label()),
        &app.filter,
        theme,
        area,
    );
}

fn render_detail(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let Some((svc, s)) = app.selected_server() else {
        no_server_selected(f, theme, area);
        return;
    };
    let [info, sparks] = detail_halves(area);
    let trend = app.l4_trend(&svc.name, Some(&s.name));
    let r = trend.map(|t| t.rates).unwrap_or_default();
    let label = |t: &str| Span::styled(format!("{t:<9}"), theme.muted);
    let since = age(app.snapshot.at_ms.saturating_sub(s.state_since_ms));
    let mut state = vec![
        label("state"),
        Span::styled(s.state_label(), state_style(s, theme)),
        Span::styled(format!(" for {since}"), theme.text),
    ];
    if s.admin == AdminState::Drain {
        // DRAIN hides the health, and a drained server is still checked.
        state.push(Span::styled(
            format!(", health {}", s.health.label()),
            theme.text,
        ));
    }
    if s.removable {
        state.push(Span::styled(", removable", theme.healthy));
    } else if s.overloaded {
        state.push(Span::styled(", full (max_conns)", theme.warning));
    }
    let weight = if s.weight == s.configured_weight {
        format!("{}", s.weight)
    } else {
        format!(
            "{} (configured {}; w restores)",
            s.weight, s.configured_weight
        )
    };
    let lines = vec![
        Line::from(state),
        Line::from(vec![label("weight"), Span::styled(weight, theme.text)]),
        Line::from(vec![
            label("conns"),
            Span::styled(
                format!(
                    "{} active, {} inactive, {} total",
                    s.active, s.inactive, s.total_conns
                ),
                theme.text,
            ),
        ]),
        Line::from(vec![
            label("bytes"),
            Span::styled(
                format!(
                    "in {} {}/s, out {} {}/s",
                    bytes(s.bytes_in),
                    bytes(r.bytes_in as u64),
                    bytes(s.bytes_out),
                    bytes(r.bytes_out as u64)
                ),
                theme.text,
            ),
        ]),
        Line::from(vec![
            label("errors"),
            Span::styled(
                format!(
                    "{} connect errors; {} came as retries",
                    s.connect_errors, s.retries
                ),
                if s.connect_errors > 0 {
                    theme.warning
                } else {
                    theme.text
                },
            ),
        ]),
        Line::from(vec![
            label("check"),
            Span::styled(check_text(s), theme.text),
        ]),
    ];
    f.render_widget(
        Paragraph::new(lines).block(boxed(
            format!("{}/{} {}", svc.name, s.name, s.address),
            theme,
        )),
        info,
    );
    let [cps, bps] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(sparks);
    let Some(trend) = trend else {
        return;
    };
    sparkline(f, theme, cps, "conn/s", &trend.cps, |v| rate(v as f64));
    sparkline(f, theme, bps, "bytes/s", &trend.bytes, |v| {
        format!("{}/s", bytes(v))
    });
}

pub(super) fn sparkline(
    f: &mut Frame,
    theme: &Theme,
    area: Rect,
    what: &str,
    history: &std::collections::VecDeque<u64>,
    show: impl Fn(u64) -> String,
) {
    let data = newest(history, area.width.saturating_sub(2) as usize);
    let peak = data.iter().copied().max().unwrap_or(0);
    let now = data.last().copied().unwrap_or(0);
    f.render_widget(
        Sparkline::default()
            .block(boxed(
                format!("{what} {} (peak {})", show(now), show(peak)),
                theme,
            ))
            .data(&data)
            .style(theme.sparkline),
        area,
    );
}
