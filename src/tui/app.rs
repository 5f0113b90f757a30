//! The console's state and its one entry point, `App::update(Action)`. Everything the screen
//! shows is here (snapshots, rates, view state); everything that happens arrives as an
//! `Action`; anything that must reach an engine or the network leaves as an `Effect`. No
//! terminal, no locks, no I/O, so every action is testable as plain data.

use std::collections::{BTreeMap, VecDeque};

use crate::balance::backend::AdminState;
use crate::balance::health::Phase;
use crate::control::{
    CacheSnapshot, Command, PoolSnapshot, RemoteLink, ServerSnapshot, ServiceSnapshot, Snapshot,
    WeightChange,
};
use crate::logging::{LogLevel, LogLine};
use crate::replication::shared::NodeRole;

use super::l7::{L7State, Visible};
use super::tester::{self, Interpretation, Said, Target, TargetChoice, Tester};
use super::trend::{CacheTrend, ConnCounters, ConnTrend};

/// Log lines the console keeps.
const LOG_LINES: usize = 5000;
/// Lines a page key scrolls.
const PAGE: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    Overview,
    Replication,
    Cache,
    Tester,
    L4,
    L7,
    Log,
}

impl View {
    /// For narrow terminals.
    pub fn short_title(self) -> &'static str {
        match self {
            View::Overview => "Over",
            View::Replication => "Repl",
            View::Cache => "Cache",
            View::Tester => "Keys",
            View::L4 => "L4",
            View::L7 => "L7",
            View::Log => "Log",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Replication => "Replication",
            View::Cache => "Cache",
            View::Tester => "Key tester",
            View::L4 => "L4 balancer",
            View::L7 => "L7 balancer",
            View::Log => "Log",
        }
    }
}

/// What a line being typed is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Tester,
    Filter,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Browse,
    Typing(Field),
    /// A destructive action waits for y/n.
    Confirm(Pending),
    Help,
}

/// An action that asked "are you sure?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub question: String,
    pub command: Command,
}

/// The node tables' order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Name,
    Ops,
    Items,
    Memory,
}

impl SortKey {
    pub fn label(self) -> &'static str {
        match self {
            SortKey::Name => "name",
            SortKey::Ops => "ops/s",
            SortKey::Items => "items",
            SortKey::Memory => "memory",
        }
    }

    fn next(self) -> SortKey {
        match self {
            SortKey::Name => SortKey::Ops,
            SortKey::Ops => SortKey::Items,
            SortKey::Items => SortKey::Memory,
            SortKey::Memory => SortKey::Name,
        }
    }
}

/// The order of servers within a balanced service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSort {
    Name,
    Active,
    Cps,
    Bytes,
    /// Worst first: DOWN, coming up, going down, MAINT, DRAIN, UP.
    State,
}

impl ServerSort {
    pub fn label(self) -> &'static str {
        match self {
            ServerSort::Name => "name",
            ServerSort::Active => "active",
            ServerSort::Cps => "conn/s",
            ServerSort::Bytes => "bytes/s",
            ServerSort::State => "state",
        }
    }

    fn next(self) -> ServerSort {
        match self {
            ServerSort::Name => ServerSort::Active,
            ServerSort::Active => ServerSort::Cps,
            ServerSort::Cps => ServerSort::Bytes,
            ServerSort::Bytes => ServerSort::State,
            ServerSort::State => ServerSort::Name,
        }
    }
}

/// A balanced server by service and server name (stable across sorting and reloads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRef {
    pub service: String,
    pub server: String,
}

/// What a key in the table asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Quit,
    Help,
    NextView,
    PrevView,
    /// With the index of the key pressed (`1` is 0).
    GoView,
    Up,
    Down,
    PageUp,
    PageDown,
    Filter,
    Sort,
    Pause,
    KillPeer,
    RevivePeer,
    Switchover,
    Traffic,
    FocusTester,
    LogLevel,
    Follow,
    SortServers,
    Drain,
    Maint,
    Ready,
    /// Weight changes by a step: +1, -1, +10, -10.
    WeightUp,
    WeightDown,
    WeightUp10,
    WeightDown10,
    WeightRestore,
    /// Kill or revive the demo app server behind the selected server.
    KillBackend,
    /// The demo app server behind the selected server: latency and error rate a step up
    /// or down.
    LatencyUp,
    LatencyDown,
    ErrorsUp,
    ErrorsDown,
    Escape,
    Yes,
    No,
    Submit,
    HistoryPrev,
    HistoryNext,
    CycleTarget,
    ClearLine,
    ClearTranscript,
}

/// Editing the line being typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    Char(char),
    Backspace,
    Delete,
    Left,
    Right,
    Home,
    End,
}

/// Everything that can happen to the console.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Key(Act, Option<usize>),
    Edit(Edit),
    /// An action key pressed in read-only mode (its label).
    Denied(String),
    /// A refresh: the engines' state and the log lines since the last one.
    Refresh(Box<Snapshot>, Vec<LogLine>),
    /// How the link to a remote node stands (before each refresh, when attached).
    RemoteLink(RemoteLink),
    /// A command sent to the node finished.
    CommandDone {
        what: String,
        result: Result<String, String>,
    },
    /// A key tester request finished.
    TesterDone(TesterOutcome),
}

/// How a key tester request went.
#[derive(Debug, Clone, PartialEq)]
pub enum TesterOutcome {
    Reply {
        target: String,
        reply: String,
        micros: u64,
    },
    Failed {
        target: String,
        error: String,
    },
    /// The replication check: set here, polled on the peer.
    Check {
        peer: String,
        replicated_micros: Option<u64>,
        detail: String,
    },
}

/// Work for the runner: engine commands and network requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Command {
        what: String,
        command: Command,
    },
    Request {
        target: Target,
        request: Vec<u8>,
    },
    Check {
        here: Target,
        peer: Target,
        key: String,
        value: String,
    },
}

impl Effect {
    /// A command, titled the way the footer reports its outcome.
    pub(super) fn command(command: Command) -> Effect {
        Effect::Command {
            what: command_title(&command),
            command,
        }
    }
}

/// A short message in the footer about the last thing done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub text: String,
    pub error: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub view: View,
    pub mode: Mode,
    pub snapshot: Snapshot,
    pub trends: BTreeMap<String, CacheTrend>,
    /// The selected cache node, by its role name (stable across sorting and restarts).
    pub selected: Option<String>,
    pub sort: SortKey,
    /// Rates of the L4 services (by service name) and servers (by `service/server`).
    pub l4_trends: BTreeMap<String, ConnTrend>,
    pub l4_selected: Option<ServerRef>,
    pub l4_sort: ServerSort,
    /// The L7 view's rates, selection and order.
    pub l7: L7State,
    pub filter: String,
    pub filter_input: tester::LineInput,
    pub paused: bool,
    pub read_only: bool,
    /// How long `K` holds a remote peer's link down.
    pub kill_hold_ms: u64,
    pub log: VecDeque<LogLine>,
    pub log_next: u64,
    /// Lines scrolled back from the newest (0 follows the tail).
    pub log_scroll: usize,
    pub log_level: LogLevel,
    pub tester: Tester,
    pub tester_scroll: usize,
    /// Lines the help overlay is scrolled down.
    pub help_scroll: usize,
    pub flash: Option<Flash>,
    pub quit: bool,
    /// The link to the node shown, when it runs in another process (`opsconsole attach`).
    pub remote: Option<RemoteLink>,
    /// Counts replication checks, so each writes a value of its own.
    checks: u64,
    /// Demo app server changes sent and not yet seen in a snapshot, by app name.
    pub(super) app_changes: BTreeMap<String, super::servers::AppChange>,
}

impl App {
    pub fn new(read_only: bool, kill_hold_ms: u64) -> App {
        App {
            view: View::Overview,
            mode: Mode::Browse,
            snapshot: Snapshot::default(),
            trends: BTreeMap::new(),
            selected: None,
            sort: SortKey::Name,
            l4_trends: BTreeMap::new(),
            l4_selected: None,
            l4_sort: ServerSort::Name,
            l7: L7State::default(),
            filter: String::new(),
            filter_input: tester::LineInput::default(),
            paused: false,
            read_only,
            kill_hold_ms,
            log: VecDeque::new(),
            log_next: 0,
            log_scroll: 0,
            log_level: LogLevel::Trace,
            tester: Tester::default(),
            tester_scroll: 0,
            help_scroll: 0,
            flash: None,
            quit: false,
            remote: None,
            checks: 0,
            app_changes: BTreeMap::new(),
        }
    }

    /// The views this node has, in tab order: the layout follows the roles running.
    pub fn views(&self) -> Vec<View> {
        let mut v = vec![View::Overview];
        let caches = &self.snapshot.caches;
        let balancer = self.snapshot.l4.is_some() || self.snapshot.l7.is_some();
        if caches.iter().any(|c| c.replication.is_some()) || (caches.is_empty() && !balancer) {
            v.push(View::Replication);
        }
        if !caches.is_empty() {
            v.push(View::Cache);
            v.push(View::Tester);
        }
        if self.snapshot.l4.is_some() {
            v.push(View::L4);
        }
        if self.snapshot.l7.is_some() {
            v.push(View::L7);
        }
        v.push(View::Log);
        v
    }

    /// The cache nodes the tables show: filtered, then sorted.
    pub fn visible_caches(&self) -> Vec<&CacheSnapshot> {
        let f = self.filter.to_lowercase();
        let mut v: Vec<&CacheSnapshot> = self
            .snapshot
            .caches
            .iter()
            .filter(|c| f.is_empty() || cache_matches(c, &f))
            .collect();
        let rate = |c: &CacheSnapshot| self.trends.get(&c.role).map_or(0.0, |t| t.rates.ops);
        match self.sort {
            SortKey::Name => {}
            SortKey::Ops => v.sort_by(|a, b| rate(b).total_cmp(&rate(a))),
            SortKey::Items => v.sort_by_key(|c| std::cmp::Reverse(c.curr_items)),
            SortKey::Memory => v.sort_by_key(|c| std::cmp::Reverse(c.bytes)),
        }
        v
    }

    pub fn selected_cache(&self) -> Option<&CacheSnapshot> {
        let name = self.selected.as_ref()?;
        self.snapshot.caches.iter().find(|c| &c.role == name)
    }

    /// The cache in this process that `c` replicates with, if it runs here (the demo).
    pub fn local_peer_of(&self, c: &CacheSnapshot) -> Option<&CacheSnapshot> {
        let peer = c.local_peer.as_deref()?;
        self.snapshot.caches.iter().find(|o| o.role == peer)
    }

    /// The L4 services and, under each, the servers the view shows: filtered, then sorted.
    /// A service whose name or address matches the filter shows all its servers.
    pub fn visible_l4(&self) -> Vec<(&ServiceSnapshot, Vec<&ServerSnapshot>)> {
        let f = self.filter.to_lowercase();
        let mut out = Vec::new();
        for svc in self.snapshot.l4.iter().flatten() {
            let whole =
                f.is_empty() || svc.name.to_lowercase().contains(&f) || svc.listen.contains(&f);
            let mut servers: Vec<&ServerSnapshot> = svc
                .servers
                .iter()
                .filter(|s| whole || server_matches(s, &f))
                .collect();
            if servers.is_empty() && !whole {
                continue;
            }
            let trend = |s: &ServerSnapshot| {
                self.l4_trends
                    .get(&server_key(&svc.name, &s.name))
                    .map(|t| t.rates)
                    .unwrap_or_default()
            };
            match self.l4_sort {
                ServerSort::Name => servers.sort_by(|a, b| a.name.cmp(&b.name)),
                ServerSort::Active => servers.sort_by_key(|s| std::cmp::Reverse(s.active)),
                ServerSort::Cps => servers.sort_by(|a, b| trend(b).cps.total_cmp(&trend(a).cps)),
                ServerSort::Bytes => servers.sort_by(|a, b| {
                    let total = |s| {
                        let r = trend(s);
                        r.bytes_in + r.bytes_out
                    };
                    total(b).total_cmp(&total(a))
                }),
                ServerSort::State => servers.sort_by_key(|s| state_rank(s)),
            }
            out.push((svc, servers));
        }
        out
    }

    /// The selected balanced server and its service.
    pub fn selected_server(&self) -> Option<(&ServiceSnapshot, &ServerSnapshot)> {
        let r = self.l4_selected.as_ref()?;
        let svc = self
            .snapshot
            .l4
            .iter()
            .flatten()
            .find(|s| s.name == r.service)?;
        let server = svc.servers.iter().find(|s| s.name == r.server)?;
        Some((svc, server))
    }

    /// The rates of a service, or of a server when `server` is given.
    pub fn l4_trend(&self, service: &str, server: Option<&str>) -> Option<&ConnTrend> {
        match server {
            Some(s) => self.l4_trends.get(&server_key(service, s)),
            None => self.l4_trends.get(service),
        }
    }

    /// The L7 listeners, routes, pools and servers the view shows: filtered, then sorted.
    pub fn visible_l7(&self) -> Visible<'_> {
        self.l7.visible(self.snapshot.l7.as_ref(), &self.filter)
    }

    /// The selected L7 server and its pool.
    pub fn selected_l7_server(&self) -> Option<(&PoolSnapshot, &ServerSnapshot)> {
        self.l7.selected_server(self.snapshot.l7.as_ref())
    }

    /// Log lines passing the level and text filters, oldest first.
    pub fn visible_log(&self) -> Vec<&LogLine> {
        let f = self.filter.to_lowercase();
        self.log
            .iter()
            .filter(|l| l.level <= self.log_level)
            .filter(|l| f.is_empty() || l.text.to_lowercase().contains(&f))
            .collect()
    }

    pub fn update(&mut self, action: Action) -> Option<Effect> {
        match action {
            Action::Refresh(snapshot, lines) => {
                self.refresh(*snapshot, lines);
                None
            }
            Action::RemoteLink(link) => {
                self.remote = Some(link);
                None
            }
            Action::Key(act, arg) => self.key(act, arg),
            Action::Edit(e) => {
                self.edit(e);
                None
            }
            Action::Denied(key) => {
                self.flash_error(format!("read-only console: {key} is disabled"));
                None
            }
            Action::CommandDone { what, result } => {
                match result {
                    Ok(out) => self.flash_ok(format!("{what}: {out}")),
                    Err(e) => {
                        self.flash_error(format!("{what} failed: {e}"));
                        self.forget_failed_change(&what);
                    }
                }
                None
            }
            Action::TesterDone(outcome) => {
                self.tester_done(outcome);
                None
            }
        }
    }

    fn refresh(&mut self, snapshot: Snapshot, lines: Vec<LogLine>) {
        if let Some(last) = lines.last() {
            self.log_next = last.seq + 1;
        }
        for line in lines {
            if self.log.len() >= LOG_LINES {
                self.log.pop_front();
            }
            if self.log_scroll > 0 {
                // Stay on the lines being read while new ones arrive below.
                self.log_scroll += 1;
            }
            self.log.push_back(line);
        }
        if self.paused {
            return;
        }
        for c in &snapshot.caches {
            self.trends
                .entry(c.role.clone())
                .or_default()
                .observe(snapshot.at_ms, c);
        }
        self.trends
            .retain(|name, _| snapshot.caches.iter().any(|c| &c.role == name));
        self.observe_l4(&snapshot);
        self.l7.observe(snapshot.at_ms, snapshot.l7.as_ref());
        self.snapshot = snapshot;
        self.hold_app_changes();
        let still_there = self
            .selected
            .as_ref()
            .is_some_and(|s| self.snapshot.caches.iter().any(|c| &c.role == s));
        if !still_there {
            self.selected = self.snapshot.caches.first().map(|c| c.role.clone());
        }
        if self.selected_server().is_none() {
            self.l4_selected = self.first_visible_server();
        }
        self.l7
            .keep_selection(self.snapshot.l7.as_ref(), &self.filter);
        if !self.views().contains(&self.view) {
            self.view = View::Overview;
        }
    }

    fn observe_l4(&mut self, snapshot: &Snapshot) {
        let mut seen = std::collections::BTreeSet::new();
        for svc in snapshot.l4.iter().flatten() {
            let counters = ConnCounters {
                connections: svc.total_conns,
                bytes_in: svc.bytes_in,
                bytes_out: svc.bytes_out,
            };
            self.l4_trends
                .entry(svc.name.clone())
                .or_default()
                .observe(snapshot.at_ms, counters);
            seen.insert(svc.name.clone());
            for s in &svc.servers {
                let key = server_key(&svc.name, &s.name);
                let counters = ConnCounters {
                    connections: s.total_conns,
                    bytes_in: s.bytes_in,
                    bytes_out: s.bytes_out,
                };
                self.l4_trends
                    .entry(key.clone())
                    .or_default()
                    .observe(snapshot.at_ms, counters);
                seen.insert(key);
            }
        }
        self.l4_trends.retain(|k, _| seen.contains(k));
    }

    fn first_visible_server(&self) -> Option<ServerRef> {
        self.visible_l4().iter().find_map(|(svc, servers)| {
            servers.first().map(|s| ServerRef {
                service: svc.name.clone(),
                server: s.name.clone(),
            })
        })
    }

    fn move_server(&mut self, delta: isize) {
        let rows: Vec<ServerRef> = self
            .visible_l4()
            .iter()
            .flat_map(|(svc, servers)| {
                servers.iter().map(|s| ServerRef {
                    service: svc.name.clone(),
                    server: s.name.clone(),
                })
            })
            .collect();
        if let Some(to) = step_selection(&rows, self.l4_selected.as_ref(), delta) {
            self.l4_selected = Some(to);
        }
    }

    fn key(&mut self, act: Act, arg: Option<usize>) -> Option<Effect> {
        match act {
            Act::Quit => self.quit = true,
            Act::Help => {
                self.mode = Mode::Help;
                self.help_scroll = 0;
            }
            Act::Escape => match self.mode {
                Mode::Browse if !self.filter.is_empty() => {
                    self.filter.clear();
                    self.filter_input.clear();
                }
                _ => self.mode = Mode::Browse,
            },
            Act::NextView | Act::PrevView => {
                let views = self.views();
                let at = views.iter().position(|v| *v == self.view).unwrap_or(0);
                let n = views.len();
                let next = if act == Act::NextView {
                    (at + 1) % n
                } else {
                    (at + n - 1) % n
                };
                self.view = views[next];
            }
            Act::GoView => {
                if let Some(v) = arg.and_then(|i| self.views().get(i).copied()) {
                    self.view = v;
                }
            }
            Act::Up => self.move_by(-1),
            Act::Down => self.move_by(1),
            Act::PageUp => self.move_by(-(PAGE as isize)),
            Act::PageDown => self.move_by(PAGE as isize),
            Act::Filter => {
                self.filter_input.clear();
                for c in self.filter.chars() {
                    self.filter_input.insert(c);
                }
                self.mode = Mode::Typing(Field::Filter);
            }
            Act::Sort => {
                self.sort = self.sort.next();
                self.flash_ok(format!("sorted by {}", self.sort.label()));
            }
            Act::Pause => {
                self.paused = !self.paused;
                self.flash_ok(
                    if self.paused {
                        "updates paused (p resumes)"
                    } else {
                        "updates resumed"
                    }
                    .into(),
                );
            }
            Act::KillPeer => self.ask_kill(),
            Act::Switchover => self.ask_switchover(),
            Act::RevivePeer => {
                let c = self.selected_cache()?;
                if c.replication.is_none() && c.local_peer.is_none() {
                    self.flash_error(format!("{} does not replicate: it has no peer", c.role));
                    return None;
                }
                // With the stopped node itself selected, revive it through its partner.
                let role = match (&c.local_peer, c.stopped) {
                    (Some(p), true) => p.clone(),
                    _ => c.role.clone(),
                };
                return Some(Effect::command(Command::RevivePeer { role }));
            }
            Act::Traffic => {
                let Some(t) = &self.snapshot.traffic else {
                    self.flash_error(
                        "no traffic generator runs here (it is part of the demo)".into(),
                    );
                    return None;
                };
                return Some(Effect::command(Command::PauseTraffic { paused: !t.paused }));
            }
            Act::FocusTester => {
                if self.views().contains(&View::Tester) {
                    self.view = View::Tester;
                    self.mode = Mode::Typing(Field::Tester);
                }
            }
            Act::LogLevel => {
                self.log_level = match self.log_level {
                    LogLevel::Trace => LogLevel::Info,
                    LogLevel::Debug => LogLevel::Info,
                    LogLevel::Info => LogLevel::Warn,
                    LogLevel::Warn => LogLevel::Error,
                    LogLevel::Error => LogLevel::Trace,
                };
                self.log_scroll = 0;
            }
            Act::Follow => self.log_scroll = 0,
            Act::SortServers => {
                let by = if self.view == View::L7 {
                    self.l7.sort = self.l7.sort.next();
                    self.l7.sort.label()
                } else {
                    self.l4_sort = self.l4_sort.next();
                    self.l4_sort.label()
                };
                self.flash_ok(format!("servers sorted by {by}"));
            }
            Act::Drain
            | Act::Maint
            | Act::Ready
            | Act::WeightUp
            | Act::WeightDown
            | Act::WeightUp10
            | Act::WeightDown10
            | Act::WeightRestore => return self.server_action(act),
            Act::KillBackend => return self.toggle_app_server(),
            Act::LatencyUp | Act::LatencyDown | Act::ErrorsUp | Act::ErrorsDown => {
                return self.app_behaviour(act);
            }
            Act::Yes => {
                if let Mode::Confirm(p) = std::mem::replace(&mut self.mode, Mode::Browse) {
                    return Some(Effect::command(p.command));
                }
            }
            Act::No => {
                self.mode = Mode::Browse;
                self.flash_ok("cancelled".into());
            }
            Act::Submit => return self.submit(),
            Act::HistoryPrev => self.line().history_prev(),
            Act::HistoryNext => self.line().history_next(),
            Act::ClearLine => self.line().clear(),
            Act::ClearTranscript => {
                self.tester.transcript.clear();
                self.tester_scroll = 0;
            }
            Act::CycleTarget => {
                self.tester.target = match self.tester.target {
                    TargetChoice::Here => TargetChoice::Peer,
                    _ => TargetChoice::Here,
                };
                let t = self.target_label();
                self.tester.say(Said::Info, format!("target: {t}"));
            }
        }
        None
    }

    fn line(&mut self) -> &mut tester::LineInput {
        match self.mode {
            Mode::Typing(Field::Filter) => &mut self.filter_input,
            _ => &mut self.tester.input,
        }
    }

    fn edit(&mut self, e: Edit) {
        let filtering = self.mode == Mode::Typing(Field::Filter);
        let line = self.line();
        match e {
            Edit::Char(c) => line.insert(c),
            Edit::Backspace => line.backspace(),
            Edit::Delete => line.delete(),
            Edit::Left => line.left(),
            Edit::Right => line.right(),
            Edit::Home => line.home(),
            Edit::End => line.end(),
        }
        if filtering {
            // The filter applies as it is typed.
            self.filter = self.filter_input.text.clone();
        }
    }

    fn move_by(&mut self, delta: isize) {
        if self.mode == Mode::Help {
            // The overlay clamps what it cannot show.
            self.help_scroll = offset(self.help_scroll, delta).min(super::keys::BINDINGS.len());
            return;
        }
        match self.view {
            View::Log => {
                let max = self.visible_log().len().saturating_sub(1);
                self.log_scroll = offset(self.log_scroll, -delta).min(max);
            }
            View::Tester => {
                let max = self.tester.transcript.len().saturating_sub(1);
                self.tester_scroll = offset(self.tester_scroll, -delta).min(max);
            }
            View::L4 => self.move_server(delta),
            View::L7 => self
                .l7
                .move_by(self.snapshot.l7.as_ref(), &self.filter, delta),
            _ => {
                let names: Vec<String> = self
                    .visible_caches()
                    .iter()
                    .map(|c| c.role.clone())
                    .collect();
                if names.is_empty() {
                    return;
                }
                let at = self
                    .selected
                    .as_ref()
                    .and_then(|s| names.iter().position(|n| n == s))
                    .unwrap_or(0);
                let to = offset(at, delta).min(names.len() - 1);
                self.selected = Some(names[to].clone());
            }
        }
    }

    fn ask_kill(&mut self) {
        let Some(c) = self.selected_cache() else {
            self.flash_error("no cache node is selected".into());
            return;
        };
        if c.stopped {
            self.flash_error(format!("{} is stopped; select the running node", c.role));
            return;
        }
        let Some(r) = &c.replication else {
            self.flash_error(format!("{} does not replicate: it has no peer", c.role));
            return;
        };
        let me = format!("{} ({}, {})", c.role, c.listen, r.status.role.label());
        let question = match self.local_peer_of(c) {
            Some(p) if p.stopped => {
                self.flash_error(format!(
                    "the peer {} is already stopped (R starts it)",
                    p.role
                ));
                return;
            }
            Some(p) => {
                let peer_role = p.replication.as_ref().map(|r| r.status.role);
                let outcome = match (peer_role, r.status.role) {
                    (Some(NodeRole::Master), _) => format!("{} takes over as MASTER", c.role),
                    _ => format!("{} stays MASTER and waits for a new slave", c.role),
                };
                format!(
                    "Kill the peer of {me}?\nThe peer node {} ({}) stops entirely: its sockets close and its data is lost.\nThen {outcome}. R starts it again.",
                    p.role, p.listen
                )
            }
            None => format!(
                "Kill the peer of {me}?\nThe link to {} is severed and held down for {} s (R lifts it); the slave side takes over as master.",
                r.status.peer.as_deref().unwrap_or("the peer"),
                self.kill_hold_ms / 1000
            ),
        };
        let role = c.role.clone();
        self.mode = Mode::Confirm(Pending {
            question,
            command: Command::KillPeer {
                role,
                hold_ms: self.kill_hold_ms,
            },
        });
    }

    fn ask_switchover(&mut self) {
        let Some(c) = self.selected_cache() else {
            return;
        };
        let Some(r) = &c.replication else {
            self.flash_error(format!("{} does not replicate: it has no peer", c.role));
            return;
        };
        if r.status.role != NodeRole::Master {
            self.flash_error(format!(
                "{} is a slave; select the master to switch over",
                c.role
            ));
            return;
        }
        self.mode = Mode::Confirm(Pending {
            question: format!(
                "Switch over: {} ({}) hands the master role to its slave?\nWrites pause until the slave has every one of them.",
                c.role, c.listen
            ),
            command: Command::Switchover {
                role: c.role.clone(),
            },
        });
    }

    fn submit(&mut self) -> Option<Effect> {
        if self.mode == Mode::Typing(Field::Filter) {
            self.filter = self.filter_input.text.clone();
            self.mode = Mode::Browse;
            return None;
        }
        let line = self.tester.input.submit();
        self.tester_scroll = 0;
        let prompt = self.tester.prompt(&self.target_label());
        match tester::interpret(&line, self.tester.pending.as_deref()) {
            Interpretation::Nothing => None,
            Interpretation::Help => {
                self.tester.say(Said::Info, tester::HELP.into());
                None
            }
            Interpretation::AwaitData(command) => {
                self.tester.say(Said::Sent, format!("{prompt}{command}"));
                self.tester.pending = Some(command);
                None
            }
            Interpretation::SwitchTarget(choice) => {
                self.tester.target = choice;
                let t = self.target_label();
                self.tester.say(Said::Info, format!("target: {t}"));
                None
            }
            Interpretation::Send { request, shown } => {
                if self.tester.pending.take().is_some() {
                    self.tester.say(Said::Sent, format!("data> {line}"));
                } else {
                    self.tester.say(Said::Sent, format!("{prompt}{shown}"));
                }
                match self.resolve(&self.tester.target.clone()) {
                    Ok(target) => {
                        self.tester.in_flight += 1;
                        Some(Effect::Request { target, request })
                    }
                    Err(e) => {
                        self.tester.say(Said::Error, e);
                        None
                    }
                }
            }
            Interpretation::ReplCheck { key } => {
                self.tester.say(Said::Sent, format!("{prompt}check {key}"));
                let here = self.resolve(&TargetChoice::Here);
                let peer = self.resolve(&TargetChoice::Peer);
                match (here, peer) {
                    (Ok(here), Ok(peer)) => {
                        self.checks += 1;
                        let value = format!("check-{}-{}", self.snapshot.at_ms, self.checks);
                        self.tester.in_flight += 1;
                        Some(Effect::Check {
                            here,
                            peer,
                            key,
                            value,
                        })
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        self.tester.say(Said::Error, e);
                        None
                    }
                }
            }
        }
    }

    /// Where a target choice points now.
    pub fn resolve(&self, choice: &TargetChoice) -> Result<Target, String> {
        let here = self
            .selected_cache()
            .ok_or("no cache node runs here; use @host:port")?;
        match choice {
            TargetChoice::Here => Ok(Target::Node(here.role.clone())),
            TargetChoice::Node(n) => self
                .snapshot
                .caches
                .iter()
                .find(|c| &c.role == n)
                .map(|c| Target::Node(c.role.clone()))
                .ok_or_else(|| format!("no cache node '{n}' runs here")),
            TargetChoice::Addr(a) => Ok(Target::Addr(a.clone())),
            TargetChoice::Peer => {
                if let Some(p) = self.local_peer_of(here) {
                    return Ok(Target::Node(p.role.clone()));
                }
                let r = here
                    .replication
                    .as_ref()
                    .ok_or_else(|| format!("{} does not replicate: it has no peer", here.role))?;
                r.status
                    .peer_cache
                    .clone()
                    .map(Target::Addr)
                    .ok_or_else(|| {
                        "the peer's cache address is not known until its link has been up once; use @host:port".to_string()
                    })
            }
        }
    }

    /// The tester's target as the prompt shows it.
    pub fn target_label(&self) -> String {
        match (&self.tester.target, self.resolve(&self.tester.target)) {
            (TargetChoice::Peer, Ok(t)) => format!("peer {}", t.label()),
            (TargetChoice::Peer, Err(_)) => "peer ?".into(),
            (_, Ok(t)) => t.label(),
            (TargetChoice::Addr(a), Err(_)) => a.clone(),
            (_, Err(_)) => "?".into(),
        }
    }

    fn tester_done(&mut self, outcome: TesterOutcome) {
        self.tester.in_flight = self.tester.in_flight.saturating_sub(1);
        match outcome {
            TesterOutcome::Reply {
                target,
                reply,
                micros,
            } => {
                let body = reply.trim_end_matches("\r\n").replace("\r\n", "\n");
                self.tester.say(Said::Reply, body);
                self.tester.say(
                    Said::Info,
                    format!("  ← {target} in {}", format_micros(micros)),
                );
            }
            TesterOutcome::Failed { target, error } => {
                self.tester.say(Said::Error, format!("{target}: {error}"));
            }
            TesterOutcome::Check {
                peer,
                replicated_micros,
                detail,
            } => match replicated_micros {
                Some(us) => self.tester.say(
                    Said::Reply,
                    format!(
                        "replicated: the peer {peer} returned the new value after {}",
                        format_micros(us)
                    ),
                ),
                None => self
                    .tester
                    .say(Said::Error, format!("not replicated to {peer}: {detail}")),
            },
        }
    }

    pub(super) fn flash_ok(&mut self, text: String) {
        self.flash = Some(Flash { text, error: false });
    }

    pub(super) fn flash_error(&mut self, text: String) {
        self.flash = Some(Flash { text, error: true });
    }
}

fn cache_matches(c: &CacheSnapshot, f: &str) -> bool {
    let role = c
        .replication
        .as_ref()
        .map(|r| r.status.role.label().to_lowercase())
        .unwrap_or_default();
    c.role.contains(f) || c.listen.contains(f) || role.contains(f)
}

pub(super) fn server_matches(s: &ServerSnapshot, f: &str) -> bool {
    s.name.to_lowercase().contains(f)
        || s.address.contains(f)
        || s.state_label().to_lowercase().contains(f)
}

pub(super) fn server_key(service: &str, server: &str) -> String {
    format!("{service}/{server}")
}

/// Worst first, so trouble sorts to the top.
pub(super) fn state_rank(s: &ServerSnapshot) -> u8 {
    match (s.admin, s.health) {
        (AdminState::Maint, _) => 3,
        (_, Phase::Down) => 0,
        (_, Phase::GoingUp { .. }) => 1,
        (_, Phase::GoingDown { .. }) => 2,
        (AdminState::Drain, _) => 4,
        (AdminState::Ready, Phase::Up) => 5,
    }
}

/// The row `delta` rows from `current` in `rows` (clamped to the ends); a selection not
/// among the rows (the filter hides it) gives way to the first row. `None` without rows.
pub(super) fn step_selection<T: PartialEq + Clone>(
    rows: &[T],
    current: Option<&T>,
    delta: isize,
) -> Option<T> {
    let last = rows.len().checked_sub(1)?;
    let to = match current.and_then(|r| rows.iter().position(|x| x == r)) {
        Some(at) => offset(at, delta).min(last),
        None => 0,
    };
    Some(rows[to].clone())
}

pub(super) fn offset(at: usize, delta: isize) -> usize {
    if delta < 0 {
        at.saturating_sub(delta.unsigned_abs())
    } else {
        at.saturating_add(delta as usize)
    }
}

/// How the footer names a command when it reports the outcome.
pub(super) fn command_title(c: &Command) -> String {
    match c {
        Command::KillPeer { role, .. } => format!("kill {role}'s peer"),
        Command::RevivePeer { role } => format!("revive {role}'s peer"),
        Command::Switchover { role } => format!("switch over {role}"),
        Command::CacheRequest { role, .. } => format!("request to {role}"),
        Command::SetAppServer { name, running } => {
            format!(
                "{} demo app server {name}",
                if *running { "revive" } else { "kill" }
            )
        }
        Command::SetAppBehaviour { name, .. } => format!("demo app server {name}"),
        Command::PauseTraffic { paused } => if *paused {
            "pause traffic"
        } else {
            "resume traffic"
        }
        .into(),
        Command::SetServerState {
            pool,
            server,
            state,
        } => format!("{} {pool}/{server}", state.name()),
        Command::SetWeight {
            pool,
            server,
            change,
        } => match change {
            WeightChange::Set(w) => format!("weight {pool}/{server} = {w}"),
            WeightChange::Add(d) => format!("weight {pool}/{server} {d:+}"),
            WeightChange::Restore => format!("restore {pool}/{server}'s weight"),
        },
        Command::Reload => "reload the config".into(),
    }
}

pub fn format_micros(us: u64) -> String {
    if us < 1000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}
