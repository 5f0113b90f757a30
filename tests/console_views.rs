//! The console's views rendered from fixed snapshots into ratatui's `TestBackend` at 80×24
//! and 160×48, compared with the text in `tests/golden/`. Run with `UPDATE_GOLDEN=1` to
//! rewrite the golden files after an intended change, then review the diff.

mod support;

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use opsconsole::control::Snapshot;
use opsconsole::logging::{LogLevel, LogLine};
use opsconsole::tui::app::{Action, App, TesterOutcome};
use opsconsole::tui::keys;
use opsconsole::tui::theme::Theme;
use opsconsole::tui::view;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use support::fixtures::{T0, app_with, balancer, copying, failed_over, l7_balancer, streaming};

const SIZES: [(u16, u16); 2] = [(80, 24), (160, 48)];

fn draw(app: &App, theme: &Theme, w: u16, h: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("terminal");
    terminal
        .draw(|f| view::render(f, app, theme))
        .expect("draw");
    terminal.backend().buffer().clone()
}

fn text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in 0..area.height {
        let mut line = String::new();
        for x in 0..area.width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Compares the render with `tests/golden/NAME-WxH.txt`.
fn golden(name: &str, app: &App) {
    let theme = Theme::default();
    for (w, h) in SIZES {
        let got = text(&draw(app, &theme, w, h));
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(format!("{name}-{w}x{h}.txt"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &got).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
                path.display()
            )
        });
        assert!(
            got == want,
            "{name} at {w}x{h} differs from {}:\n--- got ---\n{got}--- want ---\n{want}",
            path.display()
        );
    }
}

fn keys_pressed(app: &mut App, pressed: &str) {
    for c in pressed.chars() {
        let ev = KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
        if let Some(a) = keys::dispatch(app, ev) {
            app.update(a);
        }
    }
}

fn app_in(snapshot: Snapshot, pressed: &str) -> App {
    let mut app = app_with(snapshot);
    keys_pressed(&mut app, pressed);
    app
}

#[test]
fn overview() {
    golden("overview", &app_in(streaming(5), ""));
}

#[test]
fn replication_streaming() {
    golden("replication-streaming", &app_in(streaming(5), "2"));
}

#[test]
fn replication_copy_at_37_percent() {
    let app = app_in(copying(), "2j");
    golden("replication-copy37", &app);
    let screen = text(&draw(&app, &Theme::default(), 80, 24));
    assert!(screen.contains("37%"), "{screen}");
    assert!(screen.contains("receiving from the peer"), "{screen}");
    assert!(screen.contains("NOT SERVING"), "{screen}");
}

#[test]
fn replication_just_failed_over() {
    let app = app_in(failed_over(), "2j");
    golden("replication-failover", &app);
    let screen = text(&draw(&app, &Theme::default(), 80, 24));
    assert!(screen.contains("STOPPED"), "{screen}");
    assert!(screen.contains("promoted to master (epoch 2)"), "{screen}");
}

#[test]
fn l4_balancer() {
    // app2 selected: drained to weight 0 and empty.
    let app = app_in(balancer(), "2jjj");
    golden("l4", &app);
    let screen = text(&draw(&app, &Theme::default(), 80, 24));
    for want in [
        "DRAIN empty",
        "DOWN 1/2↑",
        "MAINT",
        "standby",
        "2/3 up",
        "removable",
        "web/app2",
    ] {
        assert!(screen.contains(want), "{want} missing:\n{screen}");
    }
}

#[test]
fn l7_balancer_view() {
    // api/app2 selected: the demo made it slow and failing.
    let app = app_in(l7_balancer(), "3j");
    golden("l7", &app);
    let screen = text(&draw(&app, &Theme::default(), 80, 24));
    for want in [
        "front 127.0.0.1:11590",
        "→ pages",
        "→ api",
        "api leastconn",
        "pages roundrobin",
        "DRAIN empty",
        "api/app2",
        "+200 ms, 25% errors",
        "p99 212ms",
    ] {
        assert!(screen.contains(want), "{want} missing:\n{screen}");
    }
    let wide = text(&draw(&app, &Theme::default(), 160, 48));
    for want in ["127.0.0.1:11582", "0 (1)", "retr", "turned away"] {
        assert!(wide.contains(want), "{want} missing:\n{wide}");
    }
}

#[test]
fn l7_overview() {
    golden("overview-l7", &app_in(l7_balancer(), ""));
}

#[test]
fn l4_overview() {
    golden("overview-l4", &app_in(balancer(), ""));
}

#[test]
fn l4_maintenance_question() {
    golden("confirm-maint", &app_in(balancer(), "2m"));
}

#[test]
fn cache() {
    golden("cache", &app_in(streaming(5), "3"));
}

#[test]
fn key_tester() {
    let mut app = app_in(streaming(5), "tget k");
    app.update(
        keys::dispatch(&app, KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)).expect("enter"),
    );
    app.update(Action::TesterDone(TesterOutcome::Reply {
        target: "master".into(),
        reply: "VALUE k 0 5\r\nhello\r\nEND\r\n".into(),
        micros: 212,
    }));
    golden("tester", &app);
}

#[test]
fn log() {
    let mut app = app_in(streaming(5), "5");
    let lines = [
        (LogLevel::Info, "cache master listening on 127.0.0.1:11311"),
        (
            LogLevel::Warn,
            "replication: link down (peer closed the link) role=slave",
        ),
        (LogLevel::Error, "cannot restart: address in use"),
        (LogLevel::Debug, "connection ended: reset by peer"),
    ];
    let lines = lines
        .iter()
        .enumerate()
        .map(|(i, (level, text))| LogLine {
            seq: i as u64,
            at_ms: T0 + i as u64 * 1000,
            level: *level,
            text: text.to_string(),
        })
        .collect();
    app.update(Action::Refresh(Box::new(streaming(6)), lines));
    golden("log", &app);
}

#[test]
fn help_overlay() {
    golden("help", &app_in(streaming(5), "?"));
}

#[test]
fn kill_confirmation() {
    golden("confirm-kill", &app_in(streaming(5), "2jK"));
}

#[test]
fn read_only_footer_says_so() {
    let mut app = App::new(true, 1000);
    app.update(Action::Refresh(Box::new(streaming(1)), Vec::new()));
    let screen = text(&draw(&app, &Theme::default(), 120, 30));
    let footer = screen.lines().nth(29).expect("footer line");
    assert!(footer.contains("READ-ONLY"), "{footer}");
    assert!(footer.contains("kill peer(off)"), "{footer}");
}

#[test]
fn views_use_the_theme_for_roles() {
    let theme = Theme::default();
    let app = app_in(streaming(5), "2");
    let buf = draw(&app, &theme, 80, 24);
    // The role badge on the details line carries the theme's master style.
    let row = 3;
    let x = (0..80)
        .find(|&x| buf[(x, row)].symbol() == "M" && buf[(x + 1, row)].symbol() == "A")
        .expect("MASTER badge on the role line");
    assert_eq!(buf[(x, row)].style().bg, theme.master.bg);
}

#[test]
fn every_view_survives_tiny_and_odd_sizes() {
    let theme = Theme::default();
    for (snapshot, pressed) in [
        (streaming(5), ""),
        (copying(), "2j"),
        (failed_over(), "2"),
        (streaming(5), "3"),
        (streaming(5), "t"),
        (streaming(5), "5"),
        (streaming(5), "?"),
        (streaming(5), "K"),
        (balancer(), "2"),
        (balancer(), "2m"),
        (balancer(), ""),
        (l7_balancer(), "3"),
        (l7_balancer(), "3jm"),
        (l7_balancer(), "3jjx"),
        (l7_balancer(), ""),
    ] {
        let app = app_in(snapshot, pressed);
        for w in [0u16, 1, 2, 5, 10, 29, 30, 31, 40, 57, 79] {
            for h in [0u16, 1, 2, 3, 5, 6, 7, 10, 13, 23] {
                draw(&app, &theme, w, h);
            }
        }
    }
}

#[test]
fn the_readme_shows_the_current_renders() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    for name in [
        "overview",
        "replication-copy37",
        "cache",
        "tester",
        "l4",
        "l7",
        "log",
    ] {
        let golden = std::fs::read_to_string(root.join(format!("tests/golden/{name}-80x24.txt")))
            .expect("golden");
        assert!(
            readme.contains(golden.trim_end()),
            "README.md's capture of the {name} view is out of date: paste tests/golden/{name}-80x24.txt"
        );
    }
}
