//! From a ctl subcommand to the one `Command` the node acts on, and from the node's answer
//! to what ctl prints. Pure: the network is `mod.rs`'s.

use crate::balance::backend::AdminState;
use crate::control::{Command, Snapshot};

use super::args::{AppState, CtlCommand, RoleArg, Target, TrafficAction};
use super::{Exit, Failure, cache};

/// A command ready to send, and how to read the node's answer to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub command: Command,
    reading: Reading,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Reading {
    /// The node's output is the answer.
    AsIs,
    /// A memcached `get` reply: the value, or exit 1.
    Get { key: String, role: String },
    /// A memcached storage reply: `STORED`, or exit 1.
    Stored,
}

impl Planned {
    fn as_is(command: Command) -> Planned {
        Planned {
            command,
            reading: Reading::AsIs,
        }
    }

    /// What to print for the node's `output`, or why the command did not do its job.
    pub fn read(&self, output: &str) -> Result<String, Failure> {
        match &self.reading {
            Reading::AsIs => Ok(output.to_string()),
            Reading::Get { key, role } => cache::read_get(output, key, role),
            Reading::Stored => cache::read_stored(output),
        }
    }
}

/// Whether `plan` needs the node's snapshot: a cache command that names no role goes to
/// the node's only cache role, which only the snapshot tells.
pub fn needs_snapshot(command: &CtlCommand) -> bool {
    role_arg(command).is_some_and(|r| r.role.is_none())
}

fn role_arg(command: &CtlCommand) -> Option<&RoleArg> {
    match command {
        CtlCommand::KillPeer { role, .. }
        | CtlCommand::RevivePeer { role }
        | CtlCommand::Switchover { role }
        | CtlCommand::Get { role, .. }
        | CtlCommand::Set { role, .. } => Some(role),
        _ => None,
    }
}

/// The role given, or the node's only cache role.
pub fn cache_role(given: &RoleArg, snapshot: Option<&Snapshot>) -> Result<String, Failure> {
    if let Some(role) = &given.role {
        return Ok(role.clone());
    }
    let roles: Vec<&str> = snapshot
        .map(|s| s.caches.iter().map(|c| c.role.as_str()).collect())
        .unwrap_or_default();
    match roles.as_slice() {
        [] => Err(Failure::new(Exit::Refused, "the node runs no cache role")),
        [only] => Ok((*only).to_string()),
        several => Err(Failure::usage(format!(
            "the node runs the cache roles {}: say which with --role",
            several.join(", ")
        ))),
    }
}

fn server_state(target: &Target, state: AdminState) -> Planned {
    let (pool, server) = target.target.clone();
    Planned::as_is(Command::SetServerState {
        pool,
        server,
        state,
    })
}

/// The command for `command` (`show` excepted: it only reads).
pub fn plan(command: &CtlCommand, snapshot: Option<&Snapshot>) -> Result<Planned, Failure> {
    let role = |r: &RoleArg| cache_role(r, snapshot);
    Ok(match command {
        CtlCommand::Show { .. } => {
            return Err(Failure::usage(
                "show reads the snapshot; it sends no command",
            ));
        }
        CtlCommand::Drain(t) => server_state(t, AdminState::Drain),
        CtlCommand::Ready(t) => server_state(t, AdminState::Ready),
        CtlCommand::Maint(t) => server_state(t, AdminState::Maint),
        CtlCommand::Weight { target, change } => {
            let (pool, server) = target.target.clone();
            Planned::as_is(Command::SetWeight {
                pool,
                server,
                change: *change,
            })
        }
        CtlCommand::KillPeer { hold, role: r } => Planned::as_is(Command::KillPeer {
            role: role(r)?,
            hold_ms: hold.saturating_mul(1000),
        }),
        CtlCommand::RevivePeer { role: r } => {
            Planned::as_is(Command::RevivePeer { role: role(r)? })
        }
        CtlCommand::Switchover { role: r } => {
            Planned::as_is(Command::Switchover { role: role(r)? })
        }
        CtlCommand::Get { key, role: r } => {
            let role = role(r)?;
            Planned {
                command: Command::CacheRequest {
                    role: role.clone(),
                    request: cache::get_request(key)?,
                },
                reading: Reading::Get {
                    key: key.clone(),
                    role,
                },
            }
        }
        CtlCommand::Set {
            key,
            value,
            ttl,
            flags,
            role: r,
        } => Planned {
            command: Command::CacheRequest {
                role: role(r)?,
                request: cache::set_request(key, value, *flags, *ttl)?,
            },
            reading: Reading::Stored,
        },
        CtlCommand::Reload => Planned::as_is(Command::Reload),
        CtlCommand::Traffic { action } => Planned::as_is(Command::PauseTraffic {
            paused: *action == TrafficAction::Pause,
        }),
        CtlCommand::App {
            name,
            state: Some(state),
            ..
        } => Planned::as_is(Command::SetAppServer {
            name: name.clone(),
            running: *state == AppState::Up,
        }),
        CtlCommand::App {
            name,
            state: None,
            latency_ms,
            error_percent,
        } => Planned::as_is(Command::SetAppBehaviour {
            name: name.clone(),
            latency_ms: *latency_ms,
            error_percent: *error_percent,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{CacheSnapshot, WeightChange};

    fn node_with(roles: &[&str]) -> Snapshot {
        Snapshot {
            caches: roles
                .iter()
                .map(|r| CacheSnapshot {
                    role: r.to_string(),
                    ..CacheSnapshot::default()
                })
                .collect(),
            ..Snapshot::default()
        }
    }

    fn no_role() -> RoleArg {
        RoleArg { role: None }
    }

    #[test]
    fn a_role_left_out_is_the_only_cache_role_or_a_usage_error_naming_them() {
        assert_eq!(
            cache_role(&no_role(), Some(&node_with(&["master"]))),
            Ok("master".into())
        );
        let e =
            cache_role(&no_role(), Some(&node_with(&["master", "slave"]))).expect_err("two roles");
        assert_eq!(e.exit, Exit::Usage);
        assert!(e.message.contains("master, slave"), "{}", e.message);
        let e = cache_role(&no_role(), Some(&node_with(&[]))).expect_err("none");
        assert_eq!(e.exit, Exit::Refused);
        let given = RoleArg {
            role: Some("slave".into()),
        };
        assert_eq!(cache_role(&given, None), Ok("slave".into()));
    }

    #[test]
    fn only_cache_commands_without_a_role_look_at_the_node_first() {
        assert!(needs_snapshot(&CtlCommand::Switchover { role: no_role() }));
        assert!(!needs_snapshot(&CtlCommand::Switchover {
            role: RoleArg {
                role: Some("master".into())
            }
        }));
        assert!(!needs_snapshot(&CtlCommand::Reload));
    }

    #[test]
    fn subcommands_become_their_commands() {
        let target = Target {
            target: ("web".into(), "app1".into()),
        };
        let plan = |c: CtlCommand| plan(&c, Some(&node_with(&["master"]))).expect("plans");
        assert_eq!(
            plan(CtlCommand::Maint(target.clone())).command,
            Command::SetServerState {
                pool: "web".into(),
                server: "app1".into(),
                state: AdminState::Maint
            }
        );
        assert_eq!(
            plan(CtlCommand::Weight {
                target,
                change: WeightChange::Add(-2)
            })
            .command,
            Command::SetWeight {
                pool: "web".into(),
                server: "app1".into(),
                change: WeightChange::Add(-2)
            }
        );
        assert_eq!(
            plan(CtlCommand::KillPeer {
                hold: 30,
                role: no_role()
            })
            .command,
            Command::KillPeer {
                role: "master".into(),
                hold_ms: 30_000
            }
        );
        assert_eq!(
            plan(CtlCommand::Traffic {
                action: TrafficAction::Resume
            })
            .command,
            Command::PauseTraffic { paused: false }
        );
        assert_eq!(
            plan(CtlCommand::App {
                name: "app2".into(),
                state: None,
                latency_ms: Some(50),
                error_percent: None
            })
            .command,
            Command::SetAppBehaviour {
                name: "app2".into(),
                latency_ms: Some(50),
                error_percent: None
            }
        );
        assert_eq!(
            plan(CtlCommand::App {
                name: "app2".into(),
                state: Some(AppState::Down),
                latency_ms: None,
                error_percent: None
            })
            .command,
            Command::SetAppServer {
                name: "app2".into(),
                running: false
            }
        );
    }
}
