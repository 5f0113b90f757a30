//! The link to a remote node, for a console attached to one: the badge in the header that
//! names the node, the banner under it that says when the screen is not live (the node
//! cannot be reached, refuses the token) and when it is live again, and what stands in for
//! the views until the first snapshot arrives.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::common::{age, boxed};
use crate::control::{RemoteLink, RemotePhase};
use crate::tui::theme::Theme;

/// How long the banner says "reconnected" after the link comes back.
const RECONNECTED_NOTE_MS: u64 = 5_000;

/// The header's badge: which node this console shows, and a word when it is not live
/// (the words carry the meaning for themes without colour).
pub fn badge(link: &RemoteLink, wide: bool, theme: &Theme) -> Span<'static> {
    let (word, style) = match link.phase {
        RemotePhase::Up => ("", theme.healthy),
        RemotePhase::Connecting => (" connecting", theme.warning),
        RemotePhase::Down => (" LOST", theme.down),
        RemotePhase::Unauthorized => (" 401", theme.down),
    };
    let lead = if wide { "attached to " } else { "@" };
    Span::styled(format!(" {lead}{}{word} ", link.address), style)
}

/// The banner's text and style, or `None` when the screen is live and there is nothing to
/// say.
pub fn banner(link: &RemoteLink, theme: &Theme) -> Option<(String, Style)> {
    let at = &link.address;
    let retry = link
        .retry_in_ms
        .map(|ms| format!("retrying in {}", seconds(ms)))
        .unwrap_or_else(|| "retrying".into());
    let last = link.error.as_deref().unwrap_or("no answer");
    match link.phase {
        RemotePhase::Up => {
            let outage = link.last_outage_ms?;
            (link.for_ms < RECONNECTED_NOTE_MS).then(|| {
                (
                    format!(
                        "reconnected to {at} after {} without it: the screen is live again",
                        seconds(outage)
                    ),
                    theme.healthy,
                )
            })
        }
        RemotePhase::Connecting => Some((format!("connecting to {at}…"), theme.warning)),
        RemotePhase::Down => {
            let shown = match link.snapshot_age_ms {
                Some(ms) => format!("STALE: showing the last snapshot, from {} ago", age(ms)),
                None => "nothing received from it yet".into(),
            };
            Some((
                format!(
                    "remote {at} unreachable for {}, {retry} — last: {last} · {shown}",
                    seconds(link.for_ms)
                ),
                theme.down,
            ))
        }
        RemotePhase::Unauthorized => Some((
            format!(
                "remote {at} refused the token (401): restart attach with the node's token (--token, --token-file or OPSCONSOLE_TOKEN) · {retry}"
            ),
            theme.down,
        )),
    }
}

/// In place of a view while nothing has arrived from the node: empty tables would read as
/// a node that runs nothing.
pub fn render_waiting(f: &mut Frame, link: &RemoteLink, theme: &Theme, area: Rect) {
    let at = &link.address;
    let why = link.error.as_deref().unwrap_or("no answer");
    let text = match link.phase {
        RemotePhase::Connecting | RemotePhase::Up => {
            format!("Asking the admin API at {at} for the node's first snapshot…")
        }
        RemotePhase::Down => format!(
            "The admin API at {at} does not answer: {why}.\n\nThe console keeps trying and shows the node as soon as it answers. Check that the node runs with an [admin] section and that the URL is its listen address (through an SSH tunnel for a node on another machine)."
        ),
        RemotePhase::Unauthorized => format!(
            "The admin API at {at} refused the token (401).\n\nStart attach again with the token in the node's [admin] section: --token-file FILE, the OPSCONSOLE_TOKEN environment variable, or --token."
        ),
    };
    let lines: Vec<Line> = text
        .lines()
        .map(|l| Line::from(Span::styled(l.to_string(), theme.text)))
        .collect();
    f.render_widget(
        Paragraph::new(lines)
            .block(boxed(format!("Nothing received from {at} yet"), theme))
            .wrap(Wrap { trim: true }),
        area,
    );
}

/// Whole seconds under a minute (a banner that ticks in tenths is hard to read).
fn seconds(ms: u64) -> String {
    if ms < 60_000 {
        format!("{} s", ms / 1000)
    } else {
        age(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(phase: RemotePhase) -> RemoteLink {
        RemoteLink {
            address: "127.0.0.1:9901".into(),
            phase,
            for_ms: 12_400,
            error: Some("connection refused".into()),
            retry_in_ms: Some(3_900),
            snapshot_age_ms: Some(14_000),
            last_outage_ms: None,
        }
    }

    #[test]
    fn the_banner_says_what_is_wrong_how_old_the_screen_is_and_when_it_is_live_again() {
        let theme = Theme::default();
        let (text, _) = banner(&link(RemotePhase::Down), &theme).expect("down");
        assert_eq!(
            text,
            "remote 127.0.0.1:9901 unreachable for 12 s, retrying in 3 s — last: connection refused · STALE: showing the last snapshot, from 14.0s ago"
        );
        let (text, _) = banner(&link(RemotePhase::Unauthorized), &theme).expect("401");
        assert!(text.contains("refused the token (401)"), "{text}");
        let mut up = link(RemotePhase::Up);
        assert_eq!(banner(&up, &theme), None, "live, nothing to say");
        up.last_outage_ms = Some(75_000);
        up.for_ms = 1_000;
        let (text, _) = banner(&up, &theme).expect("just back");
        assert_eq!(
            text,
            "reconnected to 127.0.0.1:9901 after 1m15s without it: the screen is live again"
        );
        up.for_ms = RECONNECTED_NOTE_MS;
        assert_eq!(banner(&up, &theme), None, "the note goes after a while");
    }
}
