//! `App::update` for every action, through the key table, with no terminal: what each key
//! does to the console's state and which effect (command or request) it sends out.

mod support;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use opsconsole::balance::backend::AdminState;
use opsconsole::control::{Command, WeightChange};
use opsconsole::logging::{LogLevel, LogLine};
use opsconsole::tui::app::{
    Action, App, Effect, Field, Mode, ServerSort, SortKey, TesterOutcome, View,
};
use opsconsole::tui::keys;
use opsconsole::tui::l7::L7Sort;
use opsconsole::tui::tester::{Said, Target, TargetChoice};
use support::fixtures::{T0, app_with, balancer, copying, failed_over, l7_balancer, streaming};

fn key(app: &mut App, code: KeyCode) -> Option<Effect> {
    press(app, KeyEvent::new(code, KeyModifiers::NONE))
}

fn ch(app: &mut App, c: char) -> Option<Effect> {
    key(app, KeyCode::Char(c))
}

fn ctrl(app: &mut App, c: char) -> Option<Effect> {
    press(app, KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

fn press(app: &mut App, ev: KeyEvent) -> Option<Effect> {
    let action = keys::dispatch(app, ev)?;
    app.update(action)
}

fn type_line(app: &mut App, text: &str) -> Option<Effect> {
    for c in text.chars() {
        assert_eq!(ch(app, c), None);
    }
    key(app, KeyCode::Enter)
}

fn transcript(app: &App) -> String {
    app.tester
        .transcript
        .iter()
        .map(|(_, t)| t.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn q_and_ctrl_c_quit() {
    let mut app = app_with(streaming(5));
    ch(&mut app, 'q');
    assert!(app.quit);
    let mut app = app_with(streaming(5));
    ctrl(&mut app, 'c');
    assert!(app.quit);
    // Ctrl-C quits even while typing; a plain q is text there.
    let mut app = app_with(streaming(5));
    ch(&mut app, 't');
    ch(&mut app, 'q');
    assert!(!app.quit);
    assert_eq!(app.tester.input.text, "q");
    ctrl(&mut app, 'c');
    assert!(app.quit);
}

#[test]
fn help_opens_and_any_key_closes_it() {
    let mut app = app_with(streaming(5));
    ch(&mut app, '?');
    assert_eq!(app.mode, Mode::Help);
    ch(&mut app, 'K');
    assert_eq!(
        app.mode,
        Mode::Browse,
        "a key closes help rather than acting"
    );
}

#[test]
fn views_switch_by_tab_shift_tab_and_number() {
    let mut app = app_with(streaming(5));
    assert_eq!(
        app.views(),
        [
            View::Overview,
            View::Replication,
            View::Cache,
            View::Tester,
            View::Log
        ]
    );
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.view, View::Replication);
    key(&mut app, KeyCode::BackTab);
    key(&mut app, KeyCode::BackTab);
    assert_eq!(app.view, View::Log);
    ch(&mut app, '3');
    assert_eq!(app.view, View::Cache);
    ch(&mut app, '9');
    assert_eq!(app.view, View::Cache, "a number with no view does nothing");
}

#[test]
fn the_tabs_follow_the_roles_running() {
    let mut snap = streaming(1);
    for c in &mut snap.caches {
        c.replication = None;
    }
    let app = app_with(snap);
    assert!(!app.views().contains(&View::Replication));
}

#[test]
fn arrows_and_j_k_select_nodes_and_scroll_the_log() {
    let mut app = app_with(streaming(5));
    assert_eq!(app.selected.as_deref(), Some("master"));
    ch(&mut app, 'j');
    assert_eq!(app.selected.as_deref(), Some("slave"));
    key(&mut app, KeyCode::Down);
    assert_eq!(app.selected.as_deref(), Some("slave"), "stops at the end");
    key(&mut app, KeyCode::Up);
    assert_eq!(app.selected.as_deref(), Some("master"));

    let lines = (0..50)
        .map(|i| LogLine {
            seq: i,
            at_ms: T0,
            level: LogLevel::Info,
            text: format!("line {i}"),
        })
        .collect();
    app.update(Action::Refresh(Box::new(streaming(6)), lines));
    assert_eq!(app.log_next, 50);
    ch(&mut app, '5');
    assert_eq!(app.view, View::Log);
    ch(&mut app, 'k');
    key(&mut app, KeyCode::PageUp);
    assert_eq!(app.log_scroll, 11);
    key(&mut app, KeyCode::End);
    assert_eq!(app.log_scroll, 0, "End follows the tail again");
}

#[test]
fn slash_filters_as_you_type_and_esc_clears() {
    let mut app = app_with(streaming(5));
    ch(&mut app, '/');
    assert_eq!(app.mode, Mode::Typing(Field::Filter));
    for c in "sla".chars() {
        ch(&mut app, c);
    }
    let names: Vec<_> = app
        .visible_caches()
        .iter()
        .map(|c| c.role.clone())
        .collect();
    assert_eq!(names, ["slave"]);
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.mode, Mode::Browse);
    assert_eq!(app.filter, "sla");
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.filter, "");
    assert_eq!(app.visible_caches().len(), 2);
}

#[test]
fn s_cycles_the_sort_order() {
    let mut app = app_with(streaming(5));
    assert_eq!(app.sort, SortKey::Name);
    ch(&mut app, 's');
    assert_eq!(app.sort, SortKey::Ops);
    ch(&mut app, 's');
    ch(&mut app, 's');
    ch(&mut app, 's');
    assert_eq!(app.sort, SortKey::Name);
}

#[test]
fn p_pauses_updates() {
    let mut app = app_with(streaming(5));
    ch(&mut app, 'p');
    assert!(app.paused);
    app.update(Action::Refresh(Box::new(failed_over()), Vec::new()));
    assert!(
        !app.snapshot.caches[0].stopped,
        "a paused console keeps its picture"
    );
    ch(&mut app, 'p');
    app.update(Action::Refresh(Box::new(failed_over()), Vec::new()));
    assert!(app.snapshot.caches[0].stopped);
}

#[test]
fn k_asks_first_and_y_kills_the_peer() {
    let mut app = app_with(streaming(5));
    ch(&mut app, 'j'); // the slave: killing its peer is a failover
    assert_eq!(ch(&mut app, 'K'), None);
    let Mode::Confirm(p) = &app.mode else {
        panic!("K must ask first, got {:?}", app.mode);
    };
    assert!(
        p.question
            .contains("master (127.0.0.1:11311) stops entirely"),
        "{}",
        p.question
    );
    assert!(
        p.question.contains("slave takes over as MASTER"),
        "{}",
        p.question
    );
    assert_eq!(
        ch(&mut app, 'y'),
        Some(Effect::Command {
            what: "kill slave's peer".into(),
            command: Command::KillPeer {
                role: "slave".into(),
                hold_ms: 300_000
            }
        })
    );
    assert_eq!(app.mode, Mode::Browse);
}

#[test]
fn n_or_esc_cancels_the_kill() {
    let mut app = app_with(streaming(5));
    ch(&mut app, 'K');
    assert_eq!(ch(&mut app, 'n'), None);
    assert_eq!(app.mode, Mode::Browse);
    ch(&mut app, 'K');
    assert_eq!(key(&mut app, KeyCode::Esc), None);
    assert_eq!(app.mode, Mode::Browse);
}

#[test]
fn r_revives_and_a_stopped_node_is_revived_through_its_partner() {
    let mut app = app_with(streaming(5));
    assert_eq!(
        ch(&mut app, 'R'),
        Some(Effect::Command {
            what: "revive master's peer".into(),
            command: Command::RevivePeer {
                role: "master".into()
            }
        })
    );
    let mut app = app_with(failed_over());
    assert_eq!(app.selected.as_deref(), Some("master"));
    let Some(Effect::Command { command, .. }) = ch(&mut app, 'R') else {
        panic!("R sends a command");
    };
    assert_eq!(
        command,
        Command::RevivePeer {
            role: "slave".into()
        }
    );
    // K on the stopped node explains instead of asking.
    assert_eq!(ch(&mut app, 'K'), None);
    assert_eq!(app.mode, Mode::Browse);
    assert!(app.flash.as_ref().is_some_and(|f| f.error));
}

#[test]
fn capital_s_switches_over_only_from_a_master() {
    let mut app = app_with(streaming(5));
    ch(&mut app, 'S');
    assert!(matches!(app.mode, Mode::Confirm(_)));
    assert_eq!(
        ch(&mut app, 'y'),
        Some(Effect::Command {
            what: "switch over master".into(),
            command: Command::Switchover {
                role: "master".into()
            }
        })
    );
    ch(&mut app, 'j');
    ch(&mut app, 'S');
    assert_eq!(app.mode, Mode::Browse, "a slave cannot switch over");
}

#[test]
fn g_pauses_the_demo_traffic() {
    let mut app = app_with(streaming(5));
    assert_eq!(
        ch(&mut app, 'g'),
        Some(Effect::Command {
            what: "pause traffic".into(),
            command: Command::PauseTraffic { paused: true }
        })
    );
}

#[test]
fn command_results_are_flashed() {
    let mut app = app_with(streaming(5));
    app.update(Action::CommandDone {
        what: "kill slave's peer".into(),
        result: Err("no such role".into()),
    });
    let flash = app.flash.clone().expect("flash");
    assert!(flash.error && flash.text.contains("no such role"));
}

#[test]
fn read_only_disables_every_action_key() {
    let mut app = App::new(true, 1000);
    app.update(Action::Refresh(Box::new(streaming(1)), Vec::new()));
    for c in ['K', 'R', 'S', 'g'] {
        assert_eq!(ch(&mut app, c), None, "{c} must do nothing");
        assert_eq!(app.mode, Mode::Browse);
        let flash = app.flash.clone().expect("says why");
        assert!(flash.text.contains("read-only"), "{}", flash.text);
    }
    let hints = keys::footer_hints(&app);
    assert!(hints.iter().any(|(k, _, off)| k == "K" && *off));
    // Watching still works.
    ch(&mut app, 'j');
    assert_eq!(app.selected.as_deref(), Some("slave"));
}

#[test]
fn t_focuses_the_tester_and_a_line_is_sent_to_the_selected_node() {
    let mut app = app_with(streaming(5));
    ch(&mut app, 't');
    assert_eq!(app.view, View::Tester);
    assert_eq!(app.mode, Mode::Typing(Field::Tester));
    assert_eq!(
        type_line(&mut app, "get k"),
        Some(Effect::Request {
            target: Target::Node("master".into()),
            request: b"get k\r\n".to_vec()
        })
    );
    app.update(Action::TesterDone(TesterOutcome::Reply {
        target: "master".into(),
        reply: "VALUE k 0 1\r\nv\r\nEND\r\n".into(),
        micros: 250,
    }));
    let t = transcript(&app);
    assert!(t.contains("master> get k"), "{t}");
    assert!(t.contains("VALUE k 0 1\nv\nEND"), "{t}");
    assert!(t.contains("← master in 250 µs"), "{t}");
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.mode, Mode::Browse);
}

#[test]
fn the_raw_set_dialogue_waits_for_the_data_line() {
    let mut app = app_with(streaming(5));
    ch(&mut app, 't');
    assert_eq!(type_line(&mut app, "set aa 0 0 3"), None);
    assert_eq!(app.tester.prompt("master"), "data> ");
    assert_eq!(
        type_line(&mut app, "111"),
        Some(Effect::Request {
            target: Target::Node("master".into()),
            request: b"set aa 0 0 3\r\n111\r\n".to_vec()
        })
    );
    assert_eq!(app.tester.prompt("master"), "master> ");
}

#[test]
fn convenience_set_computes_the_length() {
    let mut app = app_with(streaming(5));
    ch(&mut app, 't');
    assert_eq!(
        type_line(&mut app, "set greeting \"hi there\" 60"),
        Some(Effect::Request {
            target: Target::Node("master".into()),
            request: b"set greeting 0 60 8\r\nhi there\r\n".to_vec()
        })
    );
}

#[test]
fn targets_peer_and_any_address() {
    let mut app = app_with(streaming(5));
    ch(&mut app, 't');
    ctrl(&mut app, 't');
    assert_eq!(app.tester.target, TargetChoice::Peer);
    assert_eq!(app.target_label(), "peer slave");
    assert_eq!(
        type_line(&mut app, "get k"),
        Some(Effect::Request {
            target: Target::Node("slave".into()),
            request: b"get k\r\n".to_vec()
        })
    );
    type_line(&mut app, "@127.0.0.1:11211");
    assert_eq!(
        type_line(&mut app, "version"),
        Some(Effect::Request {
            target: Target::Addr("127.0.0.1:11211".into()),
            request: b"version\r\n".to_vec()
        })
    );
    // A remote peer (not in this process) is reached at the cache address it announced.
    let mut snap = streaming(6);
    for c in &mut snap.caches {
        c.local_peer = None;
    }
    app.update(Action::Refresh(Box::new(snap), Vec::new()));
    type_line(&mut app, "@peer");
    assert_eq!(
        app.resolve(&TargetChoice::Peer),
        Ok(Target::Addr("127.0.0.1:11411".into()))
    );
}

#[test]
fn check_sets_here_and_reads_on_the_peer() {
    let mut app = app_with(streaming(5));
    ch(&mut app, 't');
    let Some(Effect::Check {
        here,
        peer,
        key,
        value,
    }) = type_line(&mut app, "check")
    else {
        panic!("check sends a check");
    };
    assert_eq!(here, Target::Node("master".into()));
    assert_eq!(peer, Target::Node("slave".into()));
    assert_eq!(key, "opsconsole:replcheck");
    assert!(!value.is_empty());
    app.update(Action::TesterDone(TesterOutcome::Check {
        peer: "slave".into(),
        replicated_micros: Some(1_690),
        detail: String::new(),
    }));
    assert!(
        transcript(&app).contains("after 1.69 ms"),
        "{}",
        transcript(&app)
    );
    assert_eq!(app.tester.in_flight, 0);
}

#[test]
fn history_recalls_earlier_lines() {
    let mut app = app_with(streaming(5));
    ch(&mut app, 't');
    type_line(&mut app, "stats");
    type_line(&mut app, "get a");
    key(&mut app, KeyCode::Up);
    assert_eq!(app.tester.input.text, "get a");
    key(&mut app, KeyCode::Up);
    assert_eq!(app.tester.input.text, "stats");
    key(&mut app, KeyCode::Down);
    assert_eq!(app.tester.input.text, "get a");
    ctrl(&mut app, 'u');
    assert_eq!(app.tester.input.text, "");
    ctrl(&mut app, 'l');
    assert!(app.tester.transcript.is_empty());
}

#[test]
fn a_failed_request_is_shown_as_an_error() {
    let mut app = app_with(streaming(5));
    app.update(Action::TesterDone(TesterOutcome::Failed {
        target: "127.0.0.1:1".into(),
        error: "cannot connect: refused".into(),
    }));
    let last = app.tester.transcript.back().expect("a line");
    assert_eq!(last.0, Said::Error);
    assert!(last.1.contains("refused"));
}

#[test]
fn l_cycles_the_log_level_in_the_log_view() {
    let mut app = app_with(streaming(5));
    let lines = vec![
        LogLine {
            seq: 0,
            at_ms: T0,
            level: LogLevel::Info,
            text: "hello".into(),
        },
        LogLine {
            seq: 1,
            at_ms: T0,
            level: LogLevel::Warn,
            text: "careful".into(),
        },
    ];
    app.update(Action::Refresh(Box::new(streaming(6)), lines));
    ch(&mut app, 'l');
    assert_eq!(
        app.log_level,
        LogLevel::Trace,
        "l only means level in the log view"
    );
    ch(&mut app, '5');
    ch(&mut app, 'l');
    ch(&mut app, 'l');
    assert_eq!(app.log_level, LogLevel::Warn);
    let texts: Vec<_> = app.visible_log().iter().map(|l| l.text.clone()).collect();
    assert_eq!(texts, ["careful"]);
}

#[test]
fn a_node_that_failed_over_keeps_the_selection_and_rates_restart() {
    let mut app = app_with(copying());
    ch(&mut app, 'j');
    app.update(Action::Refresh(Box::new(failed_over()), Vec::new()));
    assert_eq!(app.selected.as_deref(), Some("slave"));
    let master = app.trends.get("master").expect("trend");
    assert_eq!(master.rates.ops, 0.0, "a stopped node has no rate");
}

#[test]
fn the_readme_lists_every_key_as_the_table_defines_it() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let mut missing = Vec::new();
    for (scope, keys, help, _) in keys::help_rows(false) {
        let keys = keys
            .split(' ')
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(" ");
        let row = format!("| {scope} | {keys} | {help} |");
        if !readme.contains(&row) {
            missing.push(row);
        }
    }
    assert!(
        missing.is_empty(),
        "README.md lacks these key table rows:\n{}",
        missing.join("\n")
    );
}

fn balancer_view() -> App {
    let mut app = app_with(balancer());
    assert_eq!(app.views(), [View::Overview, View::L4, View::Log]);
    ch(&mut app, '2');
    assert_eq!(app.view, View::L4);
    app
}

fn selected(app: &App) -> String {
    let r = app.l4_selected.as_ref().expect("a server is selected");
    format!("{}/{}", r.service, r.server)
}

fn command(effect: Option<Effect>) -> Command {
    match effect {
        Some(Effect::Command { command, .. }) => command,
        other => panic!("expected a command, got {other:?}"),
    }
}

#[test]
fn a_balancer_node_has_the_l4_view_and_no_cache_views() {
    let app = balancer_view();
    assert_eq!(
        selected(&app),
        "cache/master",
        "the first server is selected"
    );
    let hints = keys::footer_hints(&app);
    let first: Vec<&str> = hints.iter().take(4).map(|(_, h, _)| *h).collect();
    assert_eq!(
        first,
        ["drain", "maint", "ready", "weight±"],
        "view keys lead"
    );
    assert!(
        !hints
            .iter()
            .any(|(_, h, _)| *h == "kill peer" || *h == "tester"),
        "no cache key is offered without a cache: {hints:?}"
    );
    assert_eq!(
        hints.iter().filter(|(k, _, _)| k == "s").count(),
        1,
        "s is offered once, as the servers' sort"
    );
}

#[test]
fn j_k_walk_the_servers_of_every_service() {
    let mut app = balancer_view();
    let mut seen = vec![selected(&app)];
    for _ in 0..5 {
        ch(&mut app, 'j');
        seen.push(selected(&app));
    }
    assert_eq!(
        seen,
        [
            "cache/master",
            "cache/slave",
            "web/app1",
            "web/app2",
            "web/app3",
            "web/app3"
        ]
    );
    key(&mut app, KeyCode::Up);
    assert_eq!(selected(&app), "web/app2");
}

#[test]
fn d_and_r_drain_and_ready_the_selected_server() {
    let mut app = balancer_view();
    ch(&mut app, 'j');
    ch(&mut app, 'j');
    let drain = command(ch(&mut app, 'd'));
    assert_eq!(
        drain,
        Command::SetServerState {
            pool: "web".into(),
            server: "app1".into(),
            state: AdminState::Drain
        }
    );
    let ready = command(ch(&mut app, 'r'));
    assert!(matches!(
        ready,
        Command::SetServerState {
            state: AdminState::Ready,
            ..
        }
    ));
}

#[test]
fn m_asks_before_maintenance() {
    let mut app = balancer_view();
    assert_eq!(ch(&mut app, 'm'), None);
    let Mode::Confirm(p) = &app.mode else {
        panic!("m must ask first, mode is {:?}", app.mode);
    };
    assert!(p.question.contains("cache/master"), "{}", p.question);
    assert!(
        p.question.contains("open connections go on"),
        "{}",
        p.question
    );
    let maint = command(ch(&mut app, 'y'));
    assert_eq!(
        maint,
        Command::SetServerState {
            pool: "cache".into(),
            server: "master".into(),
            state: AdminState::Maint
        }
    );
    ch(&mut app, 'm');
    ch(&mut app, 'n');
    assert_eq!(app.mode, Mode::Browse);
}

#[test]
fn weight_keys_step_by_one_and_ten_and_w_restores() {
    let mut app = balancer_view();
    let expect = [
        ('+', WeightChange::Add(1)),
        ('-', WeightChange::Add(-1)),
        ('>', WeightChange::Add(10)),
        ('<', WeightChange::Add(-10)),
        ('w', WeightChange::Restore),
    ];
    for (c, change) in expect {
        assert_eq!(
            command(ch(&mut app, c)),
            Command::SetWeight {
                pool: "cache".into(),
                server: "master".into(),
                change
            },
            "key {c}"
        );
    }
}

#[test]
fn s_sorts_the_servers_and_worst_state_comes_first() {
    let mut app = balancer_view();
    let cache_sort = app.sort;
    let names = |app: &App| -> Vec<String> {
        app.visible_l4()
            .iter()
            .flat_map(|(svc, servers)| {
                servers
                    .iter()
                    .map(move |s| format!("{}/{}", svc.name, s.name))
            })
            .collect()
    };
    while app.l4_sort != ServerSort::State {
        ch(&mut app, 's');
    }
    assert_eq!(app.sort, cache_sort, "the cache tables keep their order");
    assert_eq!(
        names(&app),
        [
            "cache/slave",
            "cache/master",
            "web/app3",
            "web/app2",
            "web/app1"
        ]
    );
    ch(&mut app, 's');
    assert_eq!(app.l4_sort, ServerSort::Name);
}

#[test]
fn the_filter_narrows_services_and_servers() {
    let mut app = balancer_view();
    type_line_filter(&mut app, "down");
    let shown: Vec<(String, usize)> = app
        .visible_l4()
        .iter()
        .map(|(svc, servers)| (svc.name.clone(), servers.len()))
        .collect();
    assert_eq!(shown, [("web".to_string(), 1)], "only app3 is down");
    ch(&mut app, 'j');
    assert_eq!(selected(&app), "web/app3", "the hidden selection gives way");
    type_line_filter(&mut app, "cache");
    assert_eq!(
        app.visible_l4()[0].1.len(),
        2,
        "a service's name shows all of it"
    );
}

fn type_line_filter(app: &mut App, text: &str) {
    key(app, KeyCode::Esc);
    ch(app, '/');
    for _ in 0..20 {
        key(app, KeyCode::Backspace);
    }
    type_line(app, text);
}

#[test]
fn server_rates_come_from_the_snapshots() {
    let app = balancer_view();
    let app1 = app.l4_trend("web", Some("app1")).expect("app1 has a trend");
    assert!(app1.rates.cps > 0.0, "{:?}", app1.rates);
    assert!(
        app1.cps.len() >= 50,
        "a minute of history: {}",
        app1.cps.len()
    );
    let web = app.l4_trend("web", None).expect("web has a trend");
    assert!(web.rates.cps >= app1.rates.cps);
}

#[test]
fn read_only_disables_the_server_keys() {
    let mut app = App::new(true, 1000);
    app.update(Action::Refresh(Box::new(balancer()), Vec::new()));
    ch(&mut app, '2');
    for c in ['d', 'm', 'r', '+', '-', '>', '<', 'w'] {
        assert_eq!(ch(&mut app, c), None, "{c} must do nothing");
        assert_eq!(app.mode, Mode::Browse);
        assert!(
            app.flash
                .clone()
                .expect("says why")
                .text
                .contains("read-only")
        );
    }
}

// The L7 view, over the demo's chain: front routes `/` to pages and `/api/` to api.

fn l7_view() -> App {
    let mut app = app_with(l7_balancer());
    assert_eq!(app.views(), [View::Overview, View::L4, View::L7, View::Log]);
    ch(&mut app, '3');
    assert_eq!(app.view, View::L7);
    app
}

fn l7_selected(app: &App) -> String {
    let r = app.l7.selected.as_ref().expect("an L7 server is selected");
    format!("{}/{}", r.service, r.server)
}

fn l7_rows(app: &App) -> Vec<String> {
    app.visible_l7()
        .pools
        .iter()
        .flat_map(|(pool, servers)| {
            servers
                .iter()
                .map(move |s| format!("{}/{}", pool.name, s.name))
        })
        .collect()
}

#[test]
fn an_l7_only_node_has_the_l7_view_and_no_replication_view() {
    let mut snap = l7_balancer();
    snap.l4 = None;
    snap.apps.clear();
    let app = app_with(snap);
    assert_eq!(app.views(), [View::Overview, View::L7, View::Log]);
    let mut app = app;
    ch(&mut app, '2');
    assert_eq!(app.view, View::L7);
    let hints = keys::footer_hints(&app);
    let first: Vec<&str> = hints.iter().take(4).map(|(_, h, _)| *h).collect();
    assert_eq!(
        first,
        ["drain", "maint", "ready", "weight±"],
        "view keys lead"
    );
    assert!(
        !hints
            .iter()
            .any(|(_, h, _)| ["kill/revive", "latency", "errors"].contains(h)),
        "no demo key without the demo's app servers: {hints:?}"
    );
}

#[test]
fn j_k_walk_the_servers_of_every_l7_pool() {
    let mut app = l7_view();
    let mut seen = vec![l7_selected(&app)];
    for _ in 0..6 {
        ch(&mut app, 'j');
        seen.push(l7_selected(&app));
    }
    assert_eq!(
        seen,
        [
            "api/app1",
            "api/app2",
            "api/app3",
            "pages/app1",
            "pages/app2",
            "pages/app3",
            "pages/app3"
        ]
    );
    key(&mut app, KeyCode::Up);
    assert_eq!(l7_selected(&app), "pages/app2");
    assert_eq!(
        selected(&app),
        "web/l7",
        "the L4 selection is the L4 view's own"
    );
}

#[test]
fn server_keys_in_the_l7_view_name_the_l7_pool() {
    let mut app = l7_view();
    ch(&mut app, 'j');
    assert_eq!(
        command(ch(&mut app, 'd')),
        Command::SetServerState {
            pool: "api".into(),
            server: "app2".into(),
            state: AdminState::Drain
        }
    );
    assert_eq!(
        command(ch(&mut app, 'r')),
        Command::SetServerState {
            pool: "api".into(),
            server: "app2".into(),
            state: AdminState::Ready
        }
    );
    for (c, change) in [
        ('+', WeightChange::Add(1)),
        ('-', WeightChange::Add(-1)),
        ('>', WeightChange::Add(10)),
        ('<', WeightChange::Add(-10)),
        ('w', WeightChange::Restore),
    ] {
        assert_eq!(
            command(ch(&mut app, c)),
            Command::SetWeight {
                pool: "api".into(),
                server: "app2".into(),
                change
            },
            "key {c}"
        );
    }
    assert_eq!(ch(&mut app, 'm'), None);
    let Mode::Confirm(p) = &app.mode else {
        panic!("m must ask first, mode is {:?}", app.mode);
    };
    assert!(p.question.contains("api/app2"), "{}", p.question);
    assert!(
        p.question.contains("2 requests in flight are answered")
            && p.question.contains("clients with its cookie"),
        "{}",
        p.question
    );
    assert_eq!(
        command(ch(&mut app, 'y')),
        Command::SetServerState {
            pool: "api".into(),
            server: "app2".into(),
            state: AdminState::Maint
        }
    );
}

#[test]
fn s_sorts_the_l7_servers_and_leaves_the_l4_order() {
    let mut app = l7_view();
    assert_eq!(app.l7.sort, L7Sort::Name);
    ch(&mut app, 's');
    assert_eq!(app.l7.sort, L7Sort::Active);
    assert_eq!(app.l4_sort, ServerSort::Name, "the L4 order is its own");
    assert_eq!(
        l7_rows(&app)[0],
        "api/app2",
        "the busiest first: {:?}",
        l7_rows(&app)
    );
    while app.l7.sort != L7Sort::Errors {
        ch(&mut app, 's');
    }
    assert_eq!(
        l7_rows(&app),
        [
            "api/app2",
            "api/app1",
            "api/app3",
            "pages/app2",
            "pages/app1",
            "pages/app3"
        ],
        "failing servers first"
    );
    while app.l7.sort != L7Sort::State {
        ch(&mut app, 's');
    }
    assert_eq!(
        l7_rows(&app)[0],
        "api/app3",
        "the drained one before the UP ones"
    );
    ch(&mut app, 's');
    assert_eq!(app.l7.sort, L7Sort::Name);
    assert!(app.flash.clone().expect("flash").text.contains("name"));
}

#[test]
fn the_filter_narrows_l7_pools_servers_and_routes() {
    let mut app = l7_view();
    type_line_filter(&mut app, "drain");
    assert_eq!(l7_rows(&app), ["api/app3"]);
    assert!(app.visible_l7().listeners.is_empty());
    ch(&mut app, 'j');
    assert_eq!(
        l7_selected(&app),
        "api/app3",
        "the hidden selection gives way"
    );
    type_line_filter(&mut app, "pages");
    assert_eq!(l7_rows(&app).len(), 3, "a pool's name shows all of it");
    let routes = &app.visible_l7().listeners[0].1;
    assert_eq!(routes.len(), 1, "and the route to it");
    assert_eq!(routes[0].path, "/");
}

#[test]
fn l7_request_rates_and_history_come_from_the_snapshots() {
    let app = l7_view();
    let app1 = app.l7.server_trend("api", "app1").expect("api/app1 trend");
    assert!(app1.rates.requests > 0.0, "{:?}", app1.rates);
    assert!(app1.requests.len() >= 50, "a minute of history");
    assert_eq!(app1.p99_us.back(), Some(&2_000));
    let api = app.l7.pool_trend("api").expect("api trend");
    assert!(api.rates.requests > app1.rates.requests);
    let drained = app.l7.server_trend("api", "app3").expect("api/app3 trend");
    assert_eq!(drained.rates.requests, 0.0, "a drained server gets nothing");
}

#[test]
fn l_and_e_step_the_selected_app_servers_latency_and_error_rate() {
    let mut app = l7_view();
    ch(&mut app, 'j'); // api/app2: 200 ms, 25% errors
    let behaviour = |latency_ms, error_percent| Command::SetAppBehaviour {
        name: "app2".into(),
        latency_ms,
        error_percent,
    };
    assert_eq!(command(ch(&mut app, 'l')), behaviour(Some(1000), None));
    assert_eq!(
        ch(&mut app, 'l'),
        None,
        "already at the top step: nothing to send"
    );
    assert!(app.flash.clone().expect("flash").error);
    assert_eq!(command(ch(&mut app, 'L')), behaviour(Some(200), None));
    assert_eq!(
        command(ch(&mut app, 'L')),
        behaviour(Some(50), None),
        "a second press steps on from the first, before any refresh"
    );
    // A snapshot taken before the commands ran must not undo them on screen.
    let mut stale = l7_balancer();
    stale.at_ms = T0 + 1_000;
    app.update(Action::Refresh(Box::new(stale.clone()), Vec::new()));
    assert_eq!(command(ch(&mut app, 'L')), behaviour(Some(10), None));
    assert_eq!(command(ch(&mut app, 'e')), behaviour(None, Some(50)));
    assert_eq!(command(ch(&mut app, 'E')), behaviour(None, Some(25)));
    assert_eq!(command(ch(&mut app, 'E')), behaviour(None, Some(5)));
    let app2 = app.selected_app_server().expect("app2").clone();
    assert_eq!((app2.latency_ms, app2.error_percent), (10, 5));
    // Once a snapshot has the change (or it is long overdue), the snapshot is the truth.
    stale.at_ms = T0 + 10_000;
    app.update(Action::Refresh(Box::new(stale), Vec::new()));
    let app2 = app.selected_app_server().expect("app2");
    assert_eq!((app2.latency_ms, app2.error_percent), (200, 25));
}

#[test]
fn an_app_server_change_that_failed_is_not_shown_as_made() {
    // An attached console's node unreachable: the command fails and the snapshots that
    // follow are the last one again, its time standing still.
    let mut app = l7_view();
    ch(&mut app, 'j'); // api/app2: 200 ms, 25% errors
    let Some(Effect::Command { what, .. }) = ch(&mut app, 'e') else {
        panic!("e sends a command");
    };
    assert_eq!(app.selected_app_server().expect("app2").error_percent, 50);
    app.update(Action::CommandDone {
        what,
        result: Err("not sent: 127.0.0.1:9901 is unreachable".into()),
    });
    for _ in 0..3 {
        app.update(Action::Refresh(Box::new(l7_balancer()), Vec::new()));
    }
    let app2 = app.selected_app_server().expect("app2");
    assert_eq!(
        (app2.latency_ms, app2.error_percent),
        (200, 25),
        "the node's values, not the change that never reached it"
    );
    assert!(app.flash.as_ref().is_some_and(|f| f.error));
}

#[test]
fn app_keys_on_a_server_that_is_no_demo_app_say_so() {
    let mut app = l7_view();
    ch(&mut app, '2'); // the L4 view: web/l7 is the L7 listener, not an app server
    assert_eq!(app.view, View::L4);
    assert_eq!(selected(&app), "web/l7");
    for c in ['l', 'e', 'x'] {
        assert_eq!(ch(&mut app, c), None);
        let flash = app.flash.clone().expect("says why");
        assert!(
            flash.error && flash.text.contains("not one of the demo's app servers"),
            "{c}: {}",
            flash.text
        );
    }
}

#[test]
fn x_in_the_l7_view_kills_the_app_server_behind_the_selected_server() {
    let mut app = l7_view();
    for _ in 0..4 {
        ch(&mut app, 'j');
    }
    assert_eq!(l7_selected(&app), "pages/app2");
    assert_eq!(ch(&mut app, 'x'), None);
    let Mode::Confirm(p) = &app.mode else {
        panic!("x must ask first, mode is {:?}", app.mode);
    };
    assert!(p.question.contains("pages/app2 go DOWN"), "{}", p.question);
    assert_eq!(
        command(ch(&mut app, 'y')),
        Command::SetAppServer {
            name: "app2".into(),
            running: false
        }
    );
}

#[test]
fn read_only_disables_the_l7_server_and_app_keys() {
    let mut app = App::new(true, 1000);
    app.update(Action::Refresh(Box::new(l7_balancer()), Vec::new()));
    ch(&mut app, '3');
    assert_eq!(app.view, View::L7);
    for c in [
        'd', 'm', 'r', '+', '-', '>', '<', 'w', 'x', 'l', 'L', 'e', 'E',
    ] {
        assert_eq!(ch(&mut app, c), None, "{c} must do nothing");
        assert_eq!(app.mode, Mode::Browse);
        assert!(
            app.flash
                .clone()
                .expect("says why")
                .text
                .contains("read-only")
        );
    }
    ch(&mut app, 's');
    assert_eq!(app.l7.sort, L7Sort::Active, "sorting only watches");
}
