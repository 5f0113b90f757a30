//! The one key table. Dispatch, the footer hints and the `?` overlay all read it, so what a
//! key does and what the screen says it does cannot drift apart.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::app::{Act, Action, App, Edit, Mode, View};

/// One key as written in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub ctrl: bool,
}

const fn k(c: char) -> Key {
    Key {
        code: KeyCode::Char(c),
        ctrl: false,
    }
}

const fn ctrl(c: char) -> Key {
    Key {
        code: KeyCode::Char(c),
        ctrl: true,
    }
}

const fn code(code: KeyCode) -> Key {
    Key { code, ctrl: false }
}

impl Key {
    pub fn label(&self) -> String {
        let base = match self.code {
            KeyCode::Char(' ') => "Space".to_string(),
            KeyCode::Char(c) => c.to_string(),
            KeyCode::Tab => "Tab".into(),
            KeyCode::BackTab => "S-Tab".into(),
            KeyCode::Up => "↑".into(),
            KeyCode::Down => "↓".into(),
            KeyCode::Left => "←".into(),
            KeyCode::Right => "→".into(),
            KeyCode::PageUp => "PgUp".into(),
            KeyCode::PageDown => "PgDn".into(),
            KeyCode::Home => "Home".into(),
            KeyCode::End => "End".into(),
            KeyCode::Enter => "Enter".into(),
            KeyCode::Esc => "Esc".into(),
            other => format!("{other:?}"),
        };
        if self.ctrl {
            format!("Ctrl-{}", base.to_uppercase())
        } else {
            base
        }
    }

    fn matches(&self, ev: &KeyEvent) -> bool {
        let ctrl = ev.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl != self.ctrl {
            return false;
        }
        match (self.code, ev.code) {
            // Shift is part of the character itself (`K`, `?`), whatever the terminal reports.
            (KeyCode::Char(a), KeyCode::Char(b)) => a == b,
            (KeyCode::BackTab, KeyCode::BackTab) => true,
            (KeyCode::Tab, KeyCode::Tab) => !ev.modifiers.contains(KeyModifiers::SHIFT),
            (a, b) => a == b,
        }
    }
}

/// Where a binding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Browsing, in every view.
    Global,
    /// Browsing, in one view.
    In(View),
    /// Browsing, in any of these views.
    Among(&'static [View]),
    /// While a y/n question is open.
    Confirm,
    /// While typing (the key tester's line, or a filter).
    Typing,
}

pub struct Binding {
    pub keys: &'static [Key],
    pub action: Act,
    /// Short text for the footer.
    pub hint: &'static str,
    /// Longer text for the help overlay.
    pub help: &'static str,
    pub scope: Scope,
    /// Changes something (disabled by `--read-only`).
    pub acts: bool,
    /// Shown in the footer.
    pub footer: bool,
}

macro_rules! bind {
    ($scope:expr, [$($key:expr),+], $action:expr, $hint:literal, $help:literal, acts: $acts:literal, footer: $footer:literal) => {
        Binding {
            keys: &[$($key),+],
            action: $action,
            hint: $hint,
            help: $help,
            scope: $scope,
            acts: $acts,
            footer: $footer,
        }
    };
}

use Scope::{Among, Confirm, Global, In, Typing};

/// The views that list balanced servers, where the server keys work.
const BALANCERS: &[View] = &[View::L4, View::L7];

pub const BINDINGS: &[Binding] = &[
    bind!(Global, [k('q'), ctrl('c')], Act::Quit, "quit", "quit (engines in this process stop; an attached node runs on)", acts: false, footer: true),
    bind!(Global, [k('?')], Act::Help, "help", "this help", acts: false, footer: true),
    bind!(Global, [code(KeyCode::Tab)], Act::NextView, "views", "next view", acts: false, footer: true),
    bind!(Global, [code(KeyCode::BackTab)], Act::PrevView, "", "previous view", acts: false, footer: false),
    bind!(Global, [k('1'), k('2'), k('3'), k('4'), k('5'), k('6'), k('7'), k('8'), k('9')], Act::GoView, "", "go to view 1-9 (the numbers in the tab bar)", acts: false, footer: false),
    bind!(Global, [k('j'), code(KeyCode::Down)], Act::Down, "", "select the next node / scroll down", acts: false, footer: false),
    bind!(Global, [k('k'), code(KeyCode::Up)], Act::Up, "", "select the previous node / scroll up", acts: false, footer: false),
    bind!(Global, [code(KeyCode::PageDown)], Act::PageDown, "", "scroll a page down", acts: false, footer: false),
    bind!(Global, [code(KeyCode::PageUp)], Act::PageUp, "", "scroll a page up", acts: false, footer: false),
    bind!(Global, [k('/')], Act::Filter, "filter", "filter nodes, events and log lines by text", acts: false, footer: true),
    bind!(Global, [k('s')], Act::Sort, "sort", "sort the node tables (name, ops/s, items, memory)", acts: false, footer: true),
    bind!(Global, [k('p')], Act::Pause, "pause", "pause / resume screen updates", acts: false, footer: true),
    bind!(Global, [k('K')], Act::KillPeer, "kill peer", "kill the selected node's peer (asks first); failover follows", acts: true, footer: true),
    bind!(Global, [k('R')], Act::RevivePeer, "revive", "revive the peer: start it again / lift the hold", acts: true, footer: true),
    bind!(Global, [k('S')], Act::Switchover, "", "switchover: the selected master hands over to its slave (asks)", acts: true, footer: false),
    bind!(Global, [k('g')], Act::Traffic, "", "pause / resume the demo's traffic generator", acts: true, footer: false),
    bind!(Global, [k('t')], Act::FocusTester, "tester", "open the key tester and type", acts: false, footer: true),
    bind!(In(View::Log), [k('l')], Act::LogLevel, "level", "show only this level and worse (cycles)", acts: false, footer: true),
    bind!(In(View::Log), [code(KeyCode::End), k('G')], Act::Follow, "follow", "jump to the newest line and follow", acts: false, footer: true),
    bind!(Among(BALANCERS), [k('d')], Act::Drain, "drain", "drain the selected server: no new clients, persistent and open ones go on", acts: true, footer: true),
    bind!(Among(BALANCERS), [k('m')], Act::Maint, "maint", "maintenance: no traffic and no checks for the selected server (asks)", acts: true, footer: true),
    bind!(Among(BALANCERS), [k('r')], Act::Ready, "ready", "make the selected server ready again", acts: true, footer: true),
    bind!(Among(BALANCERS), [k('+')], Act::WeightUp, "weight±", "weight +1 (- is -1)", acts: true, footer: true),
    bind!(Among(BALANCERS), [k('-')], Act::WeightDown, "", "weight -1", acts: true, footer: false),
    bind!(Among(BALANCERS), [k('>')], Act::WeightUp10, "", "weight +10 (< is -10)", acts: true, footer: false),
    bind!(Among(BALANCERS), [k('<')], Act::WeightDown10, "", "weight -10", acts: true, footer: false),
    bind!(Among(BALANCERS), [k('w')], Act::WeightRestore, "", "restore the configured weight", acts: true, footer: false),
    bind!(Among(BALANCERS), [k('x')], Act::KillBackend, "kill/revive", "demo: kill the selected server's app server (asks) / start it again", acts: true, footer: true),
    bind!(Among(BALANCERS), [k('l')], Act::LatencyUp, "latency", "demo: its app server answers slower: 0, 10, 50, 200, 1000 ms", acts: true, footer: true),
    bind!(Among(BALANCERS), [k('L')], Act::LatencyDown, "", "demo: its app server answers faster", acts: true, footer: false),
    bind!(Among(BALANCERS), [k('e')], Act::ErrorsUp, "errors", "demo: its app server fails more: 0, 5, 25, 50, 100 % get 500 or 503", acts: true, footer: true),
    bind!(Among(BALANCERS), [k('E')], Act::ErrorsDown, "", "demo: its app server fails less", acts: true, footer: false),
    bind!(In(View::L4), [k('s')], Act::SortServers, "sort", "sort the servers (name, active, conn/s, bytes/s, state)", acts: false, footer: true),
    bind!(In(View::L7), [k('s')], Act::SortServers, "sort", "sort the servers (name, active, req/s, errors/s, p99, state)", acts: false, footer: true),
    bind!(In(View::Tester), [code(KeyCode::Enter), k('i')], Act::FocusTester, "type", "start typing", acts: false, footer: false),
    bind!(Global, [code(KeyCode::Esc)], Act::Escape, "", "close an overlay, clear the filter", acts: false, footer: false),
    bind!(Confirm, [k('y'), k('Y')], Act::Yes, "yes", "carry out the action", acts: false, footer: true),
    bind!(Confirm, [k('n'), k('N'), code(KeyCode::Esc)], Act::No, "no", "cancel", acts: false, footer: true),
    bind!(Typing, [code(KeyCode::Esc)], Act::Escape, "leave", "stop typing (the line is kept)", acts: false, footer: true),
    bind!(Typing, [code(KeyCode::Enter)], Act::Submit, "send", "send the line (or apply the filter)", acts: false, footer: true),
    bind!(Typing, [code(KeyCode::Up)], Act::HistoryPrev, "history", "previous line", acts: false, footer: true),
    bind!(Typing, [code(KeyCode::Down)], Act::HistoryNext, "", "next line", acts: false, footer: false),
    bind!(Typing, [ctrl('t')], Act::CycleTarget, "target", "send to: this node / its peer", acts: false, footer: true),
    bind!(Typing, [ctrl('u')], Act::ClearLine, "", "clear the line", acts: false, footer: false),
    bind!(Typing, [ctrl('l')], Act::ClearTranscript, "", "clear the transcript", acts: false, footer: false),
    bind!(Typing, [ctrl('c')], Act::Quit, "", "quit", acts: false, footer: false),
];

/// Whether a binding is live in the app's current mode and view.
pub fn active(b: &Binding, app: &App) -> bool {
    match (&app.mode, b.scope) {
        (Mode::Browse, Global) => true,
        (Mode::Browse, In(v)) => v == app.view,
        (Mode::Browse, Among(vs)) => vs.contains(&app.view),
        (Mode::Confirm(_), Confirm) | (Mode::Typing(_), Typing) => true,
        _ => false,
    }
}

/// Turns a key press into an action, through the table.
pub fn dispatch(app: &App, ev: KeyEvent) -> Option<Action> {
    if ev.kind == KeyEventKind::Release {
        return None;
    }
    if app.mode == Mode::Help {
        // Any key closes the help; Ctrl-C still quits.
        let quit = ev.modifiers.contains(KeyModifiers::CONTROL) && ev.code == KeyCode::Char('c');
        return Some(Action::Key(
            if quit { Act::Quit } else { Act::Escape },
            None,
        ));
    }
    // View-specific bindings first, so a view can give a key its own meaning.
    let mut found = None;
    for b in BINDINGS.iter().filter(|b| active(b, app)) {
        if let Some(i) = b.keys.iter().position(|key| key.matches(&ev)) {
            let specific = matches!(b.scope, In(_) | Among(_));
            if found.is_none() || specific {
                found = Some((b, i));
            }
        }
    }
    if let Some((b, i)) = found {
        let arg = (b.action == Act::GoView).then_some(i);
        if b.acts && app.read_only {
            return Some(Action::Denied(b.keys[0].label()));
        }
        return Some(Action::Key(b.action, arg));
    }
    if matches!(app.mode, Mode::Typing(_)) {
        return match ev.code {
            KeyCode::Char(c) if !ev.modifiers.contains(KeyModifiers::CONTROL) => {
                Some(Action::Edit(Edit::Char(c)))
            }
            KeyCode::Backspace => Some(Action::Edit(Edit::Backspace)),
            KeyCode::Delete => Some(Action::Edit(Edit::Delete)),
            KeyCode::Left => Some(Action::Edit(Edit::Left)),
            KeyCode::Right => Some(Action::Edit(Edit::Right)),
            KeyCode::Home => Some(Action::Edit(Edit::Home)),
            KeyCode::End => Some(Action::Edit(Edit::End)),
            _ => None,
        };
    }
    None
}

/// `(keys, hint)` for the footer in the current mode and view.
pub fn footer_hints(app: &App) -> Vec<(String, &'static str, bool)> {
    // What only this view does comes first: a narrow footer cuts from the right.
    let (specific, general): (Vec<&Binding>, Vec<&Binding>) = BINDINGS
        .iter()
        .filter(|b| b.footer && active(b, app) && relevant(b, app))
        .partition(|b| matches!(b.scope, In(_) | Among(_)));
    let overridden = |b: &Binding| specific.iter().any(|s| s.keys.contains(&b.keys[0]));
    let general: Vec<&Binding> = general.into_iter().filter(|b| !overridden(b)).collect();
    specific
        .into_iter()
        .chain(general)
        .map(|b| {
            let keys = b.keys[..b.keys.len().min(1)]
                .iter()
                .map(Key::label)
                .collect::<Vec<_>>()
                .join("/");
            (keys, b.hint, b.acts && app.read_only)
        })
        .collect()
}

/// Whether a footer hint means anything on this node: the cache keys need a cache, the
/// app server key the demo's app servers.
fn relevant(b: &Binding, app: &App) -> bool {
    match b.action {
        Act::KillPeer | Act::RevivePeer | Act::FocusTester | Act::Sort => {
            !app.snapshot.caches.is_empty()
        }
        Act::KillBackend | Act::LatencyUp | Act::ErrorsUp => !app.snapshot.apps.is_empty(),
        _ => true,
    }
}

/// Every binding, labelled, for the help overlay: `(scope title, keys, help, disabled)`.
pub fn help_rows(read_only: bool) -> Vec<(&'static str, String, &'static str, bool)> {
    BINDINGS
        .iter()
        .map(|b| {
            let scope = match b.scope {
                Global => "anywhere",
                In(View::Log) => "log view",
                In(View::Tester) => "key tester",
                In(View::L4) => "L4 balancer view",
                In(View::L7) => "L7 balancer view",
                In(_) => "this view",
                Among(_) => "L4 and L7 views",
                Confirm => "when asked",
                Typing => "while typing",
            };
            let keys = b.keys.iter().map(Key::label).collect::<Vec<_>>();
            let keys = if b.action == Act::GoView {
                "1-9".to_string()
            } else {
                keys.join(" ")
            };
            (scope, keys, b.help, b.acts && read_only)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether some mode and view has both scopes live at once.
    fn overlap(a: Scope, b: Scope) -> bool {
        let views = |s: Scope| -> Option<Vec<View>> {
            match s {
                In(v) => Some(vec![v]),
                Among(vs) => Some(vs.to_vec()),
                _ => None,
            }
        };
        match (views(a), views(b)) {
            (Some(x), Some(y)) => x.iter().any(|v| y.contains(v)),
            _ => a == b,
        }
    }

    #[test]
    fn no_key_means_two_things_in_one_scope() {
        for (i, a) in BINDINGS.iter().enumerate() {
            for b in &BINDINGS[i + 1..] {
                if !overlap(a.scope, b.scope) {
                    continue;
                }
                for key in a.keys {
                    assert!(
                        !b.keys.contains(key),
                        "{} is bound twice in {:?}",
                        key.label(),
                        a.scope
                    );
                }
            }
        }
    }

    #[test]
    fn every_binding_is_documented() {
        for b in BINDINGS {
            assert!(!b.help.is_empty());
            assert!(!b.footer || !b.hint.is_empty());
        }
    }
}
