//! The console: a ratatui face over any `Control`: the node in this process, or a remote one
//! (`attach`). It takes a snapshot on every tick, turns key presses into `Action`s for
//! `App::update`, and runs the `Effect`s that come back on tasks of their own, so neither a
//! slow command nor a slow server ever freezes the screen, and the screen never holds up an
//! engine.

pub mod app;
pub mod attach;
pub mod exchange;
pub mod keys;
pub mod l7;
pub mod servers;
pub mod tester;
pub mod theme;
pub mod trend;
pub mod view;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{Event, EventStream};
use futures_core::Stream;
use tokio::sync::mpsc;

use crate::control::{Command, Control};
use crate::logging::LogRing;
use app::{Action, App, Effect, TesterOutcome};
use tester::Target;
use theme::Theme;

/// How the console was asked to look and behave.
pub struct Options {
    pub refresh: Duration,
    pub theme: Theme,
    pub read_only: bool,
    pub kill_hold: Duration,
}

/// Restores the terminal however the console ends (return, error, or unwinding panic;
/// ratatui's own panic hook covers a panic that aborts).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs the console until the operator quits or `stop` resolves (a signal).
pub async fn run(
    control: Arc<dyn Control + Send + Sync>,
    options: Options,
    log: Option<LogRing>,
    stop: impl Future<Output = &'static str>,
) -> io::Result<&'static str> {
    let mut terminal = ratatui::try_init()?;
    let _restore = Restore;
    let mut app = App::new(options.read_only, options.kill_hold.as_millis() as u64);
    let (tx, mut rx) = mpsc::unbounded_channel::<Action>();
    let commands = command_runner(control.clone(), tx.clone());
    let mut events = EventStream::new();
    let mut ticker = tokio::time::interval(options.refresh);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(stop);
    let why = loop {
        let action = tokio::select! {
            why = &mut stop => break why,
            _ = ticker.tick() => {
                observe(&mut app, control.as_ref(), log.as_ref());
                terminal.draw(|f| view::render(f, &app, &options.theme))?;
                continue;
            }
            ev = next_event(&mut events) => match ev {
                Some(Ok(Event::Key(key))) => match keys::dispatch(&app, key) {
                    Some(a) => a,
                    None => continue,
                },
                // A resize (or anything else) only needs the redraw below.
                Some(Ok(_)) => {
                    terminal.draw(|f| view::render(f, &app, &options.theme))?;
                    continue;
                }
                Some(Err(e)) => return Err(e),
                None => break "end of input",
            },
            Some(a) = rx.recv() => a,
        };
        if let Some(effect) = app.update(action) {
            run_effect(control.clone(), effect, tx.clone(), &commands);
        }
        if app.quit {
            break "quit";
        }
        terminal.draw(|f| view::render(f, &app, &options.theme))?;
    };
    Ok(why)
}

async fn next_event(events: &mut EventStream) -> Option<io::Result<Event>> {
    std::future::poll_fn(|cx| Pin::new(&mut *events).poll_next(cx)).await
}

/// One tick's look at the node: how it is reached (a remote node only), its snapshot, and
/// the log lines the console has not shown yet.
pub fn observe(app: &mut App, control: &dyn Control, log: Option<&LogRing>) {
    if let Some(link) = control.remote_link() {
        app.update(Action::RemoteLink(link));
    }
    let lines = log.map(|l| l.since(app.log_next)).unwrap_or_default();
    app.update(Action::Refresh(Box::new(control.snapshot()), lines));
}

/// One task that runs the node commands in the order they were given (`e` pressed twice
/// must end at the second step, not whichever finished last), each reported back as an
/// action.
fn command_runner(
    control: Arc<dyn Control + Send + Sync>,
    tx: mpsc::UnboundedSender<Action>,
) -> mpsc::UnboundedSender<(String, Command)> {
    let (queue, mut commands) = mpsc::unbounded_channel::<(String, Command)>();
    tokio::spawn(async move {
        while let Some((what, command)) = commands.recv().await {
            let result = act(control.clone(), command).await;
            if tx.send(Action::CommandDone { what, result }).is_err() {
                return;
            }
        }
    });
    queue
}

/// Runs an effect on its own task (a command in its turn on the command runner) and sends
/// its outcome back as an action.
fn run_effect(
    control: Arc<dyn Control + Send + Sync>,
    effect: Effect,
    tx: mpsc::UnboundedSender<Action>,
    commands: &mpsc::UnboundedSender<(String, Command)>,
) {
    if let Effect::Command { what, command } = effect {
        let _ = commands.send((what, command));
        return;
    }
    tokio::spawn(async move {
        let action = match effect {
            // Taken by the command runner above.
            Effect::Command { .. } => return,
            Effect::Request { target, request } => {
                let label = target.label();
                Action::TesterDone(match send(&control, &target, request).await {
                    Ok((reply, micros)) => TesterOutcome::Reply {
                        target: label,
                        reply,
                        micros,
                    },
                    Err(error) => TesterOutcome::Failed {
                        target: label,
                        error,
                    },
                })
            }
            Effect::Check {
                here,
                peer,
                key,
                value,
            } => Action::TesterDone(check(&control, here, peer, key, value).await),
        };
        let _ = tx.send(action);
    });
}

/// A command through the control surface, off the async workers (a remote control may
/// block on the network).
async fn act(control: Arc<dyn Control + Send + Sync>, command: Command) -> Result<String, String> {
    tokio::task::spawn_blocking(move || control.act(command).map(|r| r.output))
        .await
        .map_err(|e| format!("the command did not finish: {e}"))?
}

async fn send(
    control: &Arc<dyn Control + Send + Sync>,
    target: &Target,
    request: Vec<u8>,
) -> Result<(String, u64), String> {
    match target {
        Target::Addr(addr) => exchange::request(addr, &request).await,
        Target::Node(role) => {
            let started = Instant::now();
            let command = Command::CacheRequest {
                role: role.clone(),
                request: String::from_utf8_lossy(&request).into_owned(),
            };
            let reply = act(control.clone(), command).await?;
            Ok((reply, started.elapsed().as_micros() as u64))
        }
    }
}

/// The replication check: a fresh value set on `here`, then `get` on the peer until it
/// returns that value.
async fn check(
    control: &Arc<dyn Control + Send + Sync>,
    here: Target,
    peer: Target,
    key: String,
    value: String,
) -> TesterOutcome {
    let result = async {
        let set = format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
        let since = Instant::now();
        match send(control, &here, set.into_bytes()).await {
            Ok((reply, _)) if reply.starts_with("STORED") => {}
            Ok((reply, _)) => {
                return Err(format!(
                    "the set on {} answered {}",
                    here.label(),
                    reply.trim()
                ));
            }
            Err(e) => return Err(format!("the set on {} failed: {e}", here.label())),
        }
        let get = format!("get {key}\r\n").into_bytes();
        exchange::wait_for_value(
            || {
                let get = get.clone();
                let peer = peer.clone();
                let control = control.clone();
                async move { send(&control, &peer, get).await.map(|(r, _)| r) }
            },
            &value,
            since,
        )
        .await
    }
    .await;
    TesterOutcome::Check {
        peer: peer.label(),
        detail: result.as_ref().err().cloned().unwrap_or_default(),
        replicated_micros: result.ok(),
    }
}
