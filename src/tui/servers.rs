//! Actions on the selected balanced server, in the L4 view or the L7 view: its state and
//! weight through the pool commands, and, when it is one of the demo's app servers, killing
//! and reviving it and changing its latency and error rate.

use crate::balance::backend::AdminState;
use crate::control::{AppServerSnapshot, Command, ServerSnapshot, WeightChange};

use super::app::{Act, App, Effect, Mode, Pending, View, command_title};

/// The latencies `l` and `L` step through, in ms.
pub const LATENCY_STEPS: [u64; 5] = [0, 10, 50, 200, 1000];
/// The error rates `e` and `E` step through, in percent.
pub const ERROR_STEPS: [u8; 5] = [0, 5, 25, 50, 100];

/// The step after `now` going up (or down), staying at the ends; a value between steps
/// goes to the nearest step in that direction.
pub fn step<T: Copy + PartialOrd>(steps: &[T], now: T, up: bool) -> T {
    let found = if up {
        steps.iter().copied().find(|&s| s > now)
    } else {
        steps.iter().rev().copied().find(|&s| s < now)
    };
    found.unwrap_or(now)
}

/// How long (snapshot time) a change sent is shown before a snapshot has it: a snapshot
/// taken while the command was on its way must not undo it on screen, or a key pressed
/// again would step from the old value.
const CHANGE_HOLD_MS: u64 = 3_000;

/// A demo app server change sent, shown until a snapshot has it or its command fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppChange {
    latency_ms: Option<u64>,
    error_percent: Option<u8>,
    sent_at_ms: u64,
    /// The title its command's outcome comes back under.
    sent_as: String,
}

impl AppChange {
    fn apply(&self, a: &mut AppServerSnapshot) {
        a.latency_ms = self.latency_ms.unwrap_or(a.latency_ms);
        a.error_percent = self.error_percent.unwrap_or(a.error_percent);
    }

    fn seen_in(&self, a: &AppServerSnapshot) -> bool {
        self.latency_ms.is_none_or(|v| v == a.latency_ms)
            && self.error_percent.is_none_or(|v| v == a.error_percent)
    }
}

/// Which balancer the selected server belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    L4,
    L7,
}

impl App {
    /// The selected server of the balancer view shown, with its pool's name (an L4
    /// service's name is its pool's).
    pub fn selected_balanced(&self) -> Option<(Tier, &str, &ServerSnapshot)> {
        match self.view {
            View::L7 => self
                .selected_l7_server()
                .map(|(p, s)| (Tier::L7, p.name.as_str(), s)),
            _ => self
                .selected_server()
                .map(|(svc, s)| (Tier::L4, svc.name.as_str(), s)),
        }
    }

    /// The demo app server at the selected server's address, if the demo runs one there.
    pub fn selected_app_server(&self) -> Option<&AppServerSnapshot> {
        let (_, _, s) = self.selected_balanced()?;
        self.snapshot.apps.iter().find(|a| a.address == s.address)
    }

    /// A state or weight action on the selected server.
    pub(super) fn server_action(&mut self, act: Act) -> Option<Effect> {
        let Some((tier, pool, s)) = self.selected_balanced() else {
            self.flash_error("no balanced server is selected".into());
            return None;
        };
        let (pool, server) = (pool.to_string(), s.name.clone());
        let state = |state| Command::SetServerState {
            pool: pool.clone(),
            server: server.clone(),
            state,
        };
        let weight = |change| Command::SetWeight {
            pool: pool.clone(),
            server: server.clone(),
            change,
        };
        let command = match act {
            Act::Drain => state(AdminState::Drain),
            Act::Ready => state(AdminState::Ready),
            Act::Maint => {
                let (what, sticky, open) = match (tier, s.active) {
                    (Tier::L4, 0) => (
                        "connection",
                        "persistent clients",
                        "It has no open connection.".to_string(),
                    ),
                    (Tier::L4, n) => (
                        "connection",
                        "persistent clients",
                        format!("Its {n} open connections go on until they end."),
                    ),
                    (Tier::L7, 0) => (
                        "request",
                        "clients with its cookie",
                        "It has no request in flight.".to_string(),
                    ),
                    (Tier::L7, n) => (
                        "request",
                        "clients with its cookie",
                        format!("Its {n} requests in flight are answered."),
                    ),
                };
                let question = format!(
                    "Put {pool}/{server} ({}) in maintenance?\nIt takes no new {what}, not even from {sticky}, and its health checks stop. {open}\nr makes it ready again.",
                    s.address
                );
                self.mode = Mode::Confirm(Pending {
                    question,
                    command: state(AdminState::Maint),
                });
                return None;
            }
            Act::WeightUp => weight(WeightChange::Add(1)),
            Act::WeightDown => weight(WeightChange::Add(-1)),
            Act::WeightUp10 => weight(WeightChange::Add(10)),
            Act::WeightDown10 => weight(WeightChange::Add(-10)),
            Act::WeightRestore => weight(WeightChange::Restore),
            _ => return None,
        };
        Some(Effect::command(command))
    }

    /// The demo app server behind the selected server, or a flash saying why there is none.
    fn app_or_say(&mut self, keys: &str) -> Option<(String, AppServerSnapshot)> {
        let Some((_, pool, s)) = self.selected_balanced() else {
            self.flash_error("no balanced server is selected".into());
            return None;
        };
        let who = format!("{pool}/{}", s.name);
        match self.selected_app_server() {
            Some(app) => Some((who, app.clone())),
            None => {
                let text = format!(
                    "{who} ({}) is not one of the demo's app servers; {keys} those",
                    s.address
                );
                self.flash_error(text);
                None
            }
        }
    }

    /// A command failed: a change it carried is not shown any longer. Waiting out the
    /// hold would not do: the snapshots of an unreachable remote node are the last one
    /// again, their time standing still.
    pub(super) fn forget_failed_change(&mut self, what: &str) {
        self.app_changes.retain(|_, change| change.sent_as != what);
    }

    /// After a refresh: changes sent still show until the snapshot has them (or for a
    /// while, should the command have been lost: the hold runs out).
    pub(super) fn hold_app_changes(&mut self) {
        let now = self.snapshot.at_ms;
        let apps = &mut self.snapshot.apps;
        self.app_changes.retain(|name, change| {
            let Some(a) = apps.iter_mut().find(|a| &a.name == name) else {
                return false;
            };
            if change.seen_in(a) || now.saturating_sub(change.sent_at_ms) > CHANGE_HOLD_MS {
                return false;
            }
            change.apply(a);
            true
        });
    }

    /// `x`: a dead backend on demand (asks first), and back again.
    pub(super) fn toggle_app_server(&mut self) -> Option<Effect> {
        let (who, app) = self.app_or_say("x kills and revives")?;
        let command = Command::SetAppServer {
            name: app.name.clone(),
            running: !app.running,
        };
        if app.running {
            self.mode = Mode::Confirm(Pending {
                question: format!(
                    "Kill the demo app server {} ({})?\nIts port closes and its open connections drop, as if it crashed. Watch {who} go DOWN after its failed checks.\nx starts it again.",
                    app.name, app.address
                ),
                command,
            });
            return None;
        }
        Some(Effect::command(command))
    }

    /// `l` `L` `e` `E`: the app server behind the selected server a step slower or faster,
    /// failing more or less often.
    pub(super) fn app_behaviour(&mut self, act: Act) -> Option<Effect> {
        let (_, app) = self.app_or_say("l/L and e/E slow down and fail")?;
        let (mut latency_ms, mut error_percent) = (None, None);
        let unchanged = match act {
            Act::LatencyUp | Act::LatencyDown => {
                let to = step(&LATENCY_STEPS, app.latency_ms, act == Act::LatencyUp);
                latency_ms = Some(to);
                (to == app.latency_ms).then(|| format!("latency {to} ms"))
            }
            Act::ErrorsUp | Act::ErrorsDown => {
                let to = step(&ERROR_STEPS, app.error_percent, act == Act::ErrorsUp);
                error_percent = Some(to);
                (to == app.error_percent).then(|| format!("error rate {to}%"))
            }
            _ => return None,
        };
        if let Some(what) = unchanged {
            self.flash_error(format!(
                "{}'s {what} is already at the end of the steps",
                app.name
            ));
            return None;
        }
        // Shown at once, so a key pressed again before a snapshot has it steps on from here.
        let held = self.app_changes.remove(&app.name);
        let command = Command::SetAppBehaviour {
            name: app.name.clone(),
            latency_ms,
            error_percent,
        };
        let change = AppChange {
            latency_ms: latency_ms.or(held.as_ref().and_then(|h| h.latency_ms)),
            error_percent: error_percent.or(held.as_ref().and_then(|h| h.error_percent)),
            sent_at_ms: self.snapshot.at_ms,
            sent_as: command_title(&command),
        };
        if let Some(shown) = self.snapshot.apps.iter_mut().find(|a| a.name == app.name) {
            change.apply(shown);
        }
        self.app_changes.insert(app.name, change);
        Some(Effect::command(command))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_go_up_and_down_and_stay_at_the_ends() {
        assert_eq!(step(&LATENCY_STEPS, 0, true), 10);
        assert_eq!(step(&LATENCY_STEPS, 200, true), 1000);
        assert_eq!(step(&LATENCY_STEPS, 1000, true), 1000);
        assert_eq!(step(&LATENCY_STEPS, 1000, false), 200);
        assert_eq!(step(&LATENCY_STEPS, 0, false), 0);
        assert_eq!(
            step(&LATENCY_STEPS, 120, true),
            200,
            "set headless between steps"
        );
        assert_eq!(step(&LATENCY_STEPS, 120, false), 50);
        assert_eq!(step(&ERROR_STEPS, 5, true), 25);
        assert_eq!(step(&ERROR_STEPS, 100, false), 50);
    }
}
