//! Small pieces every view uses: badges, state words, number formats and boxes. Times are
//! always relative to the snapshot's own clock, so a fixed snapshot renders the same way
//! every time.

use std::collections::VecDeque;

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Paragraph};

use crate::control::CacheSnapshot;
use crate::replication::shared::{LinkPhase, NodeRole, Status};
use crate::tui::theme::Theme;

/// The node's role as a badge: MASTER, SLAVE, CACHE (no replication) or STOPPED.
pub fn role_badge(c: &CacheSnapshot, theme: &Theme) -> Span<'static> {
    if c.stopped {
        return Span::styled(" STOPPED ", theme.stopped);
    }
    match c.replication.as_ref().map(|r| r.status.role) {
        Some(NodeRole::Master) => Span::styled(" MASTER ", theme.master),
        Some(NodeRole::Slave) => Span::styled(" SLAVE  ", theme.slave),
        None => Span::styled(" CACHE  ", theme.accent),
    }
}

/// The link's state word and the style that says how healthy that is.
pub fn link_state(c: &CacheSnapshot, theme: &Theme) -> (String, Style) {
    if c.stopped {
        return ("down (stopped)".into(), theme.down);
    }
    let Some(r) = &c.replication else {
        return ("standalone".into(), theme.muted);
    };
    let s = &r.status;
    let word = link_word(s);
    let style = match s.link {
        LinkPhase::Streaming => theme.healthy,
        LinkPhase::Copying | LinkPhase::Handshake | LinkPhase::Connecting => theme.warning,
        LinkPhase::HeldDown => theme.draining,
        LinkPhase::Listening if s.role == NodeRole::Master && s.peer.is_some() => theme.down,
        LinkPhase::Listening => theme.warning,
    };
    (word, style)
}

/// `listening` with a configured peer that is gone reads as "down": the pair is broken.
pub fn link_word(s: &Status) -> String {
    match s.link {
        LinkPhase::Listening if s.peer.is_some() && s.peer_node.is_none() => {
            "down (listening)".into()
        }
        other => other.label().into(),
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else if v < 10.0 {
        format!("{v:.1}{}", UNITS[u])
    } else {
        format!("{v:.0}{}", UNITS[u])
    }
}

/// A count with k/M suffixes, for narrow columns.
pub fn count(n: u64) -> String {
    if n < 10_000 {
        n.to_string()
    } else if n < 10_000_000 {
        format!("{:.1}k", n as f64 / 1000.0)
    } else {
        format!("{:.1}M", n as f64 / 1e6)
    }
}

pub fn rate(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.1}")
    } else if r < 10_000.0 {
        format!("{r:.0}")
    } else {
        format!("{:.1}k", r / 1000.0)
    }
}

/// A response time in µs for a narrow column; `-` when there is none.
pub fn latency(us: Option<u64>) -> String {
    match us {
        None => "-".into(),
        Some(us) if us < 1000 => format!("{us}µs"),
        Some(us) if us < 10_000 => format!("{:.1}ms", us as f64 / 1000.0),
        Some(us) if us < 1_000_000 => format!("{}ms", us / 1000),
        Some(us) => format!("{:.1}s", us as f64 / 1e6),
    }
}

/// A duration in ms as the shortest readable form.
pub fn age(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// Wall-clock time of day (UTC) of a unix-ms instant.
pub fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

pub fn boxed<'a>(title: impl Into<String>, theme: &Theme) -> Block<'a> {
    Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(theme.border)
        .title(Span::styled(format!(" {} ", title.into()), theme.title))
}

/// A rectangle of at most `w`×`h` centred in `area`.
/// A boxed list of balancer lines, scrolled so that `selected_line` stays in sight (the
/// header row scrolls with the rest); the title says the sort and any filter.
pub fn server_table(
    f: &mut Frame,
    lines: Vec<Line<'_>>,
    selected_line: usize,
    mut title: String,
    filter: &str,
    theme: &Theme,
    area: Rect,
) {
    let shown = area.height.saturating_sub(2) as usize;
    let scroll = (selected_line + 1).saturating_sub(shown);
    if !filter.is_empty() {
        title.push_str(&format!(" filter: {filter}"));
    }
    f.render_widget(
        Paragraph::new(lines)
            .block(boxed(title, theme))
            .scroll((scroll as u16, 0)),
        area,
    );
}

/// The server detail panel when no server is selected.
pub fn no_server_selected(f: &mut Frame, theme: &Theme, area: Rect) {
    f.render_widget(
        Paragraph::new("no server selected (j/k select one)")
            .style(theme.muted)
            .block(boxed("Server", theme)),
        area,
    );
}

/// The server detail panel's two halves: facts, then sparklines (the facts get more of a
/// narrow screen).
pub fn detail_halves(area: Rect) -> [Rect; 2] {
    let info_share = if area.width < 120 { 60 } else { 50 };
    Layout::horizontal([
        Constraint::Percentage(info_share),
        Constraint::Percentage(100 - info_share),
    ])
    .areas(area)
}

pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let [r] = Layout::vertical([Constraint::Length(h.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [r] = Layout::horizontal([Constraint::Length(w.min(area.width))])
        .flex(Flex::Center)
        .areas(r);
    r
}

/// Pads or cuts `s` to exactly `w` columns.
pub fn fit(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n > w {
        let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
        if w > 0 {
            t.push('…');
        }
        t
    } else {
        format!("{s:<w$}")
    }
}

/// The newest samples of a history, as many as `width` columns show (a sparkline draws
/// them right-aligned to now).
pub fn newest(history: &VecDeque<u64>, width: usize) -> Vec<u64> {
    history
        .iter()
        .skip(history.len().saturating_sub(width))
        .copied()
        .collect()
}

/// Splits `text` into rows of at most `width` characters (an empty text is one empty row),
/// so a panel can fold long lines and still count the rows it shows.
pub fn fold(text: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars
        .chunks(width.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_stay_short() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(64 << 20), "64M");
        assert_eq!(count(123_456), "123.5k");
        assert_eq!(age(1500), "1.5s");
        assert_eq!(latency(None), "-");
        assert_eq!(latency(Some(850)), "850µs");
        assert_eq!(latency(Some(1_240)), "1.2ms");
        assert_eq!(latency(Some(201_900)), "201ms");
        assert_eq!(latency(Some(1_020_000)), "1.0s");
        assert_eq!(age(61_000), "1m01s");
        assert_eq!(clock(3_723_000), "01:02:03");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("ab", 4), "ab  ");
        assert_eq!(fold("abcde", 2), ["ab", "cd", "e"]);
        assert_eq!(fold("", 3), [""]);
    }
}
