//! L7 balancer: each listener with its routes (host and path to a pool), each pool with its
//! algorithm and its servers under it (state, weight, requests in flight, req/s, answers by
//! class, errors, latency, last check), and below, the selected server in detail with
//! sparklines of its request rate and its p99.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::common::{
    age, boxed, count, detail_halves, fit, latency, no_server_selected, rate, server_table,
};
use super::l4::{check_code, check_text, sparkline, state_style, state_text};
use crate::balance::backend::AdminState;
use crate::control::{
    AppServerSnapshot, HttpStats, ListenerSnapshot, PoolSnapshot, RouteSnapshot, ServerSnapshot,
};
use crate::tui::app::{App, format_micros};
use crate::tui::l7::{route_label, server_requests};
use crate::tui::theme::Theme;
use crate::tui::trend::RequestRates;

/// The detail panel's lines (one more for a demo app server's), and the fewest it is
/// given when the table needs the room: the last lines are the ones to lose.
const DETAIL_LINES: u16 = 6;
const DETAIL_MIN_LINES: u16 = 5;
/// The table's wide layout needs this many columns.
const WIDE: u16 = 156;

pub fn render(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let wanted = DETAIL_LINES + u16::from(app.selected_app_server().is_some()) + 2;
    let table_wanted = table_lines(app) + 2;
    let detail_h = if area.height >= 16 {
        wanted.min(
            area.height
                .saturating_sub(table_wanted)
                .max(DETAIL_MIN_LINES + 2),
        )
    } else {
        0
    };
    let [table, detail] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(detail_h)]).areas(area);
    render_table(f, app, theme, table);
    if detail_h > 0 {
        render_detail(f, app, theme, detail);
    }
}

/// The table's lines: header, listeners and routes, pools and servers.
fn table_lines(app: &App) -> u16 {
    let v = app.visible_l7();
    let listeners: usize = v.listeners.iter().map(|(_, r)| 1 + r.len()).sum();
    let pools: usize = v.pools.iter().map(|(_, s)| 1 + s.len()).sum();
    u16::try_from(1 + listeners + pools).unwrap_or(u16::MAX)
}

fn http(s: &ServerSnapshot) -> HttpStats {
    s.http.clone().unwrap_or_default()
}

/// Servers taking traffic out of all of them.
fn up_count(pool: &PoolSnapshot) -> (usize, usize) {
    let up = pool
        .servers
        .iter()
        .filter(|s| s.health.is_up() && s.admin != AdminState::Maint)
        .count();
    (up, pool.servers.len())
}

struct Columns {
    wide: bool,
}

impl Columns {
    fn head(&self) -> String {
        if self.wide {
            format!(
                "  {} {} {} {:>7} {:>9} {:>4} {:>7} {:>6} {:>7} {:>6} {:>6} {:>5} {:>5} {:>6} {:>6}  {}",
                fit("server", 12),
                fit("address", 21),
                fit("state", 13),
                "since",
                "weight",
                "act",
                "total",
                "req/s",
                "2xx",
                "4xx",
                "5xx",
                "err",
                "retr",
                "p50",
                "p99",
                "check"
            )
        } else {
            format!(
                "  {} {} {:>3} {:>3} {:>5} {:>5} {:>4} {:>4} {:>3} {:>5} {:>5}  {}",
                fit("server", 8),
                fit("state", 11),
                "wt",
                "act",
                "req/s",
                "2xx",
                "4xx",
                "5xx",
                "err",
                "p50",
                "p99",
                "check"
            )
        }
    }

    fn server<'a>(
        &self,
        s: &ServerSnapshot,
        r: RequestRates,
        now_ms: u64,
        selected: bool,
        theme: &Theme,
    ) -> Line<'a> {
        let h = http(s);
        let errors = s.connect_errors + h.response_errors;
        let weight_style = if s.weight == 0 {
            theme.draining
        } else if s.weight != s.configured_weight {
            theme.warning
        } else {
            theme.text
        };
        let mut spans = vec![
            Span::styled(if selected { "▶ " } else { "  " }, theme.accent),
            Span::styled(fit(&s.name, if self.wide { 12 } else { 8 }), theme.title),
            Span::raw(" "),
        ];
        let counts = |w2: usize, w4: usize| {
            vec![
                Span::styled(format!(" {:>w2$}", count(h.responses[1])), theme.text),
                Span::styled(format!(" {:>w4$}", count(h.responses[3])), theme.text),
                Span::styled(
                    format!(" {:>w4$}", count(h.responses[4])),
                    if h.responses[4] > 0 {
                        theme.warning
                    } else {
                        theme.text
                    },
                ),
            ]
        };
        let error_style = if errors > 0 {
            theme.warning
        } else {
            theme.text
        };
        if self.wide {
            let weight = if s.weight != s.configured_weight {
                format!("{} ({})", s.weight, s.configured_weight)
            } else {
                s.weight.to_string()
            };
            spans.push(Span::styled(fit(&s.address, 21), theme.text));
            spans.push(Span::raw(" "));
            spans.push(Span::styled(fit(&state_text(s), 13), state_style(s, theme)));
            spans.push(Span::styled(
                format!(" {:>7}", age(now_ms.saturating_sub(s.state_since_ms))),
                theme.muted,
            ));
            spans.push(Span::styled(format!(" {weight:>9}"), weight_style));
            spans.push(Span::styled(
                format!(
                    " {:>4} {:>7} {:>6}",
                    s.active,
                    count(server_requests(s)),
                    rate(r.requests)
                ),
                theme.text,
            ));
            spans.extend(counts(7, 6));
            spans.push(Span::styled(format!(" {:>5}", count(errors)), error_style));
            spans.push(Span::styled(
                format!(
                    " {:>5} {:>6} {:>6}  ",
                    count(s.retries),
                    latency(h.p50_us),
                    latency(h.p99_us)
                ),
                theme.text,
            ));
        } else {
            spans.push(Span::styled(fit(&state_text(s), 11), state_style(s, theme)));
            spans.push(Span::styled(format!(" {:>3}", s.weight), weight_style));
            spans.push(Span::styled(
                format!(" {:>3} {:>5}", s.active, rate(r.requests)),
                theme.text,
            ));
            spans.extend(counts(5, 4));
            spans.push(Span::styled(format!(" {:>3}", count(errors)), error_style));
            spans.push(Span::styled(
                format!(" {:>5} {:>5}  ", latency(h.p50_us), latency(h.p99_us)),
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

    fn listener<'a>(&self, l: &ListenerSnapshot, theme: &Theme) -> Line<'a> {
        let numbers = if self.wide {
            format!(
                "  {} open connections, {} total  {} without a route (404)  {} refused (400, 414)",
                l.active_conns, l.total_conns, l.no_route, l.rejected
            )
        } else {
            format!(
                "  {} conns {} total  no route {}  rejected {}",
                l.active_conns,
                count(l.total_conns),
                l.no_route,
                l.rejected
            )
        };
        let trouble = if l.no_route + l.rejected > 0 {
            theme.warning
        } else {
            theme.text
        };
        Line::from(vec![
            Span::styled(format!("{} ", l.name), theme.accent),
            Span::styled(l.listen.clone(), theme.text),
            Span::styled(numbers, trouble),
        ])
    }

    fn route<'a>(&self, r: &RouteSnapshot, rates: RequestRates, theme: &Theme) -> Line<'a> {
        let h = &r.http;
        let label_w = if self.wide { 34 } else { 24 };
        let mut spans = vec![
            Span::raw("  "),
            Span::styled(fit_tail(&route_label(r), label_w), theme.text),
            Span::styled(" → ", theme.muted),
            Span::styled(fit(&r.pool, 8), theme.accent),
            Span::styled(format!(" {:>5} req/s", rate(rates.requests)), theme.text),
        ];
        let [_, ok, redirect, client, server] = h.responses;
        let mut classes = if self.wide {
            format!(
                "  {} requests  2xx {}  3xx {}  4xx {}  5xx {}",
                count(h.requests),
                count(ok),
                count(redirect),
                count(client),
                count(server)
            )
        } else {
            format!(
                "  2xx {}  4xx {}  5xx {}",
                count(ok),
                count(client),
                count(server)
            )
        };
        if h.p99_us.is_some() {
            classes.push_str(&format!("  p99 {}", latency(h.p99_us)));
        }
        spans.push(Span::styled(
            classes,
            if server > 0 {
                theme.warning
            } else {
                theme.text
            },
        ));
        Line::from(spans)
    }

    fn pool<'a>(&self, p: &PoolSnapshot, rates: RequestRates, theme: &Theme) -> Line<'a> {
        pool_line(p, rates, self.wide, theme)
    }
}

/// A pool on one line: algorithm, servers up, req/s, requests in flight, retries,
/// redispatches, requests turned away.
pub fn pool_line<'a>(p: &PoolSnapshot, rates: RequestRates, wide: bool, theme: &Theme) -> Line<'a> {
    let (up, all) = up_count(p);
    let up_style = if up == all {
        theme.healthy
    } else if up == 0 {
        theme.down
    } else {
        theme.warning
    };
    let mut spans = vec![
        Span::styled(format!("{} ", p.name), theme.accent),
        Span::styled(p.algorithm.clone(), theme.text),
        Span::styled(format!("  {up}/{all} up"), up_style),
    ];
    let numbers = if wide {
        format!(
            "  {} req/s  {} in flight  {} requests  p50 {}  p99 {}  {} retries  {} redispatched",
            rate(rates.requests),
            p.active,
            count(p.http.requests),
            latency(p.http.p50_us),
            latency(p.http.p99_us),
            count(p.retries),
            count(p.redispatches)
        )
    } else {
        format!(
            "  {} req/s  {} act  retr {}  redisp {}",
            rate(rates.requests),
            p.active,
            count(p.retries),
            count(p.redispatches)
        )
    };
    spans.push(Span::styled(numbers, theme.text));
    let (no_server, style) = match (p.no_server, wide) {
        (0, true) => ("  0 turned away (503)".to_string(), theme.text),
        (0, false) => ("  no srv 0".to_string(), theme.text),
        (n, true) => (format!("  {n} turned away (503)"), theme.warning),
        (n, false) => (format!("  no srv {}", count(n)), theme.warning),
    };
    spans.push(Span::styled(no_server, style));
    // The queue shows only once a server limit has made anyone wait.
    if p.queued > 0 || p.queue_timeouts > 0 {
        let text = if wide {
            format!(
                "  {} queued  {} queue timeouts",
                p.queued,
                count(p.queue_timeouts)
            )
        } else {
            format!("  q {}/{}", p.queued, count(p.queue_timeouts))
        };
        let style = if p.queued > 0 {
            theme.warning
        } else {
            theme.text
        };
        spans.push(Span::styled(text, style));
    }
    Line::from(spans)
}

/// Pads `s` to `w` columns, or cuts its start: routes of one host differ at the end.
fn fit_tail(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n <= w {
        return fit(s, w);
    }
    let tail: String = s.chars().skip(n + 1 - w).collect();
    format!("…{tail}")
}

fn render_table(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let cols = Columns {
        wide: area.width >= WIDE,
    };
    let mut lines = vec![Line::from(Span::styled(cols.head(), theme.muted))];
    let mut selected_line = 0;
    let visible = app.visible_l7();
    if visible.listeners.is_empty() && visible.pools.is_empty() {
        let text = if app.snapshot.l7.is_none() {
            "  no L7 listener runs here"
        } else {
            "  no listener, route, pool or server matches the filter"
        };
        lines.push(Line::from(Span::styled(text, theme.muted)));
    }
    let rates_of =
        |t: Option<&crate::tui::trend::RequestTrend>| t.map(|t| t.rates).unwrap_or_default();
    for (l, routes) in &visible.listeners {
        lines.push(cols.listener(l, theme));
        for r in routes {
            let rates = rates_of(app.l7.route_trend(&l.name, r));
            lines.push(cols.route(r, rates, theme));
        }
    }
    let now = app.snapshot.at_ms;
    let chosen = app.l7.selected.as_ref();
    for (pool, servers) in &visible.pools {
        lines.push(cols.pool(pool, rates_of(app.l7.pool_trend(&pool.name)), theme));
        for s in servers {
            let selected = chosen.is_some_and(|c| c.service == pool.name && c.server == s.name);
            if selected {
                selected_line = lines.len();
            }
            let rates = rates_of(app.l7.server_trend(&pool.name, &s.name));
            lines.push(cols.server(s, rates, now, selected, theme));
        }
    }
    server_table(
        f,
        lines,
        selected_line,
        format!("L7 listeners and pools (sort: {})", app.l7.sort.label()),
        &app.filter,
        theme,
        area,
    );
}

fn render_detail(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let Some((pool, s)) = app.selected_l7_server() else {
        no_server_selected(f, theme, area);
        return;
    };
    let [info, sparks] = detail_halves(area);
    let trend = app.l7.server_trend(&pool.name, &s.name);
    let r = trend.map(|t| t.rates).unwrap_or_default();
    let h = http(s);
    let label = |t: &str| Span::styled(format!("{t:<9}"), theme.muted);
    let since = age(app.snapshot.at_ms.saturating_sub(s.state_since_ms));
    let mut state = vec![
        label("state"),
        Span::styled(s.state_label(), state_style(s, theme)),
        Span::styled(format!(" for {since}"), theme.text),
    ];
    if s.admin == AdminState::Drain {
        state.push(Span::styled(
            format!(", health {}", s.health.label()),
            theme.text,
        ));
    }
    if s.removable {
        state.push(Span::styled(", removable", theme.healthy));
    }
    state.push(Span::styled(
        if s.weight == s.configured_weight {
            format!(", weight {}", s.weight)
        } else {
            format!(
                ", weight {} (configured {}; w restores)",
                s.weight, s.configured_weight
            )
        },
        if s.weight == s.configured_weight {
            theme.text
        } else {
            theme.warning
        },
    ));
    let [info1, ok, redirect, client, server] = h.responses;
    let mut answers = format!(
        "2xx {}  3xx {}  4xx {}  5xx {}",
        count(ok),
        count(redirect),
        count(client),
        count(server)
    );
    if info1 > 0 {
        answers = format!("1xx {}  {answers}", count(info1));
    }
    let errors = s.connect_errors + h.response_errors;
    let mut lines = vec![
        Line::from(state),
        Line::from(vec![
            label("requests"),
            Span::styled(
                format!(
                    "{} total, {} in flight, {}/s",
                    server_requests(s),
                    s.active,
                    rate(r.requests)
                ),
                theme.text,
            ),
        ]),
        Line::from(vec![
            label("answers"),
            Span::styled(
                answers,
                if server > 0 {
                    theme.warning
                } else {
                    theme.text
                },
            ),
        ]),
        Line::from(vec![
            label("errors"),
            Span::styled(
                format!(
                    "{} connect, {} response; {} retries",
                    s.connect_errors, h.response_errors, s.retries
                ),
                if errors > 0 {
                    theme.warning
                } else {
                    theme.text
                },
            ),
        ]),
        Line::from(vec![
            label("latency"),
            Span::styled(
                format!(
                    "p50 {}  p90 {}  p99 {}",
                    latency(h.p50_us),
                    latency(h.p90_us),
                    latency(h.p99_us)
                ),
                theme.text,
            ),
        ]),
    ];
    if let Some(a) = app.selected_app_server() {
        lines.push(demo_line(a, label("demo"), theme));
    }
    // Last: the table's row shows the check's code already.
    lines.push(Line::from(vec![
        label("check"),
        Span::styled(check_text(s), theme.text),
    ]));
    f.render_widget(
        Paragraph::new(lines).block(boxed(
            format!("{}/{} {}", pool.name, s.name, s.address),
            theme,
        )),
        info,
    );
    let [rps, p99] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(sparks);
    let Some(trend) = trend else {
        return;
    };
    sparkline(f, theme, rps, "req/s", &trend.requests, |v| rate(v as f64));
    sparkline(f, theme, p99, "p99", &trend.p99_us, |v| {
        if v == 0 { "-".into() } else { format_micros(v) }
    });
}

/// What the demo made of this app server: dead, slow, failing on purpose.
fn demo_line<'a>(a: &AppServerSnapshot, label: Span<'a>, theme: &Theme) -> Line<'a> {
    if !a.running {
        return Line::from(vec![
            label,
            Span::styled(format!("{} killed (x starts it)", a.name), theme.down),
        ]);
    }
    let style = if a.latency_ms > 0 || a.error_percent > 0 {
        theme.warning
    } else {
        theme.text
    };
    Line::from(vec![
        label,
        Span::styled(
            format!(
                "{} +{} ms, {}% errors (l/L, e/E)",
                a.name, a.latency_ms, a.error_percent
            ),
            style,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_routes_keep_their_path() {
        assert_eq!(fit_tail("/api/", 8), "/api/   ");
        assert_eq!(fit_tail("shop.example.com/api/", 12), "…le.com/api/");
        assert_eq!(fit_tail("shop.example.com/api/", 12).chars().count(), 12);
    }
}
