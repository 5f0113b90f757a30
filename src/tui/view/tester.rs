//! The key tester: where requests go, the transcript of requests and raw replies with their
//! latency, and the input line.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::common::{boxed, fold};
use crate::tui::app::{App, Field, Mode};
use crate::tui::tester::Said;
use crate::tui::theme::Theme;

pub fn render(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let [target, transcript, input] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(3),
    ])
    .areas(area);
    let typing = app.mode == Mode::Typing(Field::Tester);
    let mut spans = vec![
        Span::styled(" sending to ", theme.muted),
        Span::styled(app.target_label(), theme.accent),
    ];
    if app.tester.in_flight > 0 {
        spans.push(Span::styled(
            format!("  ({} waiting for a reply)", app.tester.in_flight),
            theme.warning,
        ));
    }
    spans.push(Span::styled(
        if typing {
            "   Ctrl-T here/peer · @host:port · Esc stops typing"
        } else {
            "   t or Enter to type"
        },
        theme.muted,
    ));
    f.render_widget(Paragraph::new(Line::from(spans)), target);

    // Long lines are folded to the panel's width here, so scrolling counts screen rows.
    let width = transcript.width.saturating_sub(2).max(1) as usize;
    let rows: Vec<(Said, String)> = app
        .tester
        .transcript
        .iter()
        .flat_map(|(kind, text)| fold(text, width).into_iter().map(move |r| (*kind, r)))
        .collect();
    let height = transcript.height.saturating_sub(2) as usize;
    let end = rows.len().saturating_sub(app.tester_scroll);
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = rows[start..end]
        .iter()
        .map(|(kind, text)| {
            let style = match kind {
                Said::Sent => theme.prompt,
                Said::Reply => theme.reply,
                Said::Info => theme.muted,
                Said::Error => theme.error,
            };
            Line::from(Span::styled(text.clone(), style))
        })
        .collect();
    let title = if app.tester_scroll > 0 {
        format!("Transcript (scrolled back {})", app.tester_scroll)
    } else {
        "Transcript".into()
    };
    f.render_widget(Paragraph::new(lines).block(boxed(title, theme)), transcript);

    let prompt = app.tester.prompt(&app.target_label());
    let text = &app.tester.input.text;
    let line = Line::from(vec![
        Span::styled(prompt.clone(), theme.prompt),
        Span::styled(text.clone(), theme.input),
    ]);
    let block = boxed(if typing { "Input (typing)" } else { "Input" }, theme)
        .border_style(if typing { theme.accent } else { theme.border });
    let inner = block.inner(input);
    f.render_widget(Paragraph::new(line).block(block), input);
    if typing {
        let x = inner.x + (prompt.chars().count() + app.tester.input.cursor) as u16;
        if x < inner.right() {
            f.set_cursor_position(Position::new(x, inner.y));
        }
    }
}
