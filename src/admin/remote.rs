//! A node in another process as a `Control`: what `opsconsole attach` watches and steers.
//!
//! A task polls the admin API's snapshot at the console's refresh rate and keeps the newest
//! one, so `snapshot()` answers at once from memory and the console never waits on the
//! network. A lost node is retried with a growing pause (capped), the last snapshot stays
//! on screen marked by its age, and each flip of the link (connected, lost, back, token
//! refused) is written once to the console's log ring, since the remote node's own log does
//! not travel over the API. Commands go over the API from the caller's thread, which the
//! console keeps off its async workers.
//!
//! `Link` is the pure part: the link's state machine with time passed in.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::client::{ClientError, Endpoint};
use crate::control::{Command, CommandReply, Control, RemoteLink, RemotePhase, Snapshot};
use crate::logging::{LogLevel, LogRing};

/// The pause after the first failed try; it doubles with each failure after that.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest pause between tries while the node is unreachable: a node that comes back
/// is on screen again within this.
const MAX_RETRY: Duration = Duration::from_secs(5);
/// The pause between tries while the token is refused: nothing changes until the node is
/// restarted with another token, so asking often would only fill its log with warnings.
const UNAUTHORIZED_RETRY: Duration = Duration::from_secs(10);
/// A snapshot that takes longer than this counts as a failure: a hung node shows as down
/// instead of leaving an old screen up with no word about it.
const POLL_TIMEOUT: Duration = Duration::from_secs(3);

/// Why one try failed, as the link cares about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// 401: the token was wrong or missing.
    Unauthorized,
    /// Anything else that kept the snapshot from us, said briefly.
    Unreachable(String),
}

impl Failure {
    /// The client's error, said without repeating the address the screen already shows.
    pub fn from_client(e: &ClientError, authority: &str) -> Failure {
        match e {
            ClientError::Unauthorized => Failure::Unauthorized,
            ClientError::Unreachable(why) => Failure::Unreachable(brief(why, authority)),
            ClientError::Protocol(why) => {
                Failure::Unreachable(format!("unexpected answer: {}", brief(why, authority)))
            }
            ClientError::Refused(why) => Failure::Unreachable(format!("refused: {why}")),
        }
    }
}

/// `127.0.0.1:9901: Connection refused (os error 111)` as `connection refused`.
fn brief(why: &str, authority: &str) -> String {
    let why = why
        .strip_prefix(authority)
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(why);
    let why = match why.rfind(" (os error ") {
        Some(i) if why.ends_with(')') => &why[..i],
        _ => why,
    };
    let mut chars = why.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "no reason given".into(),
    }
}

/// A flip of the link, worth one line in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The first snapshot arrived.
    Connected,
    /// Snapshots arrive again after an outage of this long.
    Reconnected { after: Duration },
    /// The node stopped answering.
    Lost { error: String },
    /// The node has not been reached yet (the first tries failed).
    Unreachable { error: String },
    /// The node answers 401.
    TokenRefused,
}

/// The link's state machine: what the last tries said and when to try next.
#[derive(Debug, Clone)]
pub struct Link {
    phase: RemotePhase,
    since: Instant,
    error: Option<String>,
    /// Failed tries in a row.
    failures: u32,
    next_try: Instant,
    /// When the newest snapshot arrived.
    received: Option<Instant>,
    last_outage: Option<Duration>,
}

impl Link {
    pub fn new(now: Instant) -> Link {
        Link {
            phase: RemotePhase::Connecting,
            since: now,
            error: None,
            failures: 0,
            next_try: now,
            received: None,
            last_outage: None,
        }
    }

    pub fn phase(&self) -> RemotePhase {
        self.phase
    }

    /// A snapshot arrived; the next try is a refresh period away.
    pub fn succeeded(&mut self, now: Instant, every: Duration) -> Option<LinkEvent> {
        let event = match self.phase {
            RemotePhase::Up => None,
            // The first snapshot ever, even after failed tries: nothing was on screen.
            _ if self.received.is_none() => Some(LinkEvent::Connected),
            _ => {
                let after = now.saturating_duration_since(self.since);
                self.last_outage = Some(after);
                Some(LinkEvent::Reconnected { after })
            }
        };
        self.enter(RemotePhase::Up, now);
        self.error = None;
        self.failures = 0;
        self.received = Some(now);
        self.next_try = now + every;
        event
    }

    /// A try failed; the next one waits longer the more have failed in a row.
    pub fn failed(&mut self, now: Instant, failure: Failure) -> Option<LinkEvent> {
        self.failures = self.failures.saturating_add(1);
        let (phase, error, pause) = match failure {
            Failure::Unauthorized => (
                RemotePhase::Unauthorized,
                "the token was refused (401)".to_string(),
                UNAUTHORIZED_RETRY,
            ),
            Failure::Unreachable(why) => (RemotePhase::Down, why, backoff(self.failures)),
        };
        let event = match (self.phase, phase) {
            (from, to) if from == to => None,
            (_, RemotePhase::Unauthorized) => Some(LinkEvent::TokenRefused),
            (RemotePhase::Up, _) => Some(LinkEvent::Lost {
                error: error.clone(),
            }),
            _ => Some(LinkEvent::Unreachable {
                error: error.clone(),
            }),
        };
        self.enter(phase, now);
        self.error = Some(error);
        self.next_try = now + pause;
        event
    }

    /// When to try next.
    pub fn next_try(&self) -> Instant {
        self.next_try
    }

    /// The link as the console shows it, at `now`.
    pub fn state(&self, remote: &str, now: Instant) -> RemoteLink {
        let ms = |d: Duration| d.as_millis() as u64;
        let waiting = matches!(self.phase, RemotePhase::Down | RemotePhase::Unauthorized);
        RemoteLink {
            address: remote.to_string(),
            phase: self.phase,
            for_ms: ms(now.saturating_duration_since(self.since)),
            error: self.error.clone(),
            retry_in_ms: waiting.then(|| ms(self.next_try.saturating_duration_since(now))),
            snapshot_age_ms: self
                .received
                .map(|at| ms(now.saturating_duration_since(at))),
            last_outage_ms: self.last_outage.map(ms),
        }
    }

    fn enter(&mut self, phase: RemotePhase, now: Instant) {
        if self.phase != phase {
            self.phase = phase;
            self.since = now;
        }
    }
}

/// The pause after `failures` failed tries in a row: 0.5 s, 1 s, 2 s, 4 s, then 5 s.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY)
}

/// The link event as a log line.
fn event_line(
    event: &LinkEvent,
    remote: &str,
    restarted: Option<(u32, u32)>,
) -> (LogLevel, String) {
    let restart = match restarted {
        Some((was, now)) => format!("; the node restarted meanwhile (pid {was}, now {now})"),
        None => String::new(),
    };
    match event {
        LinkEvent::Connected => (
            LogLevel::Info,
            format!("connected to the node at {remote}{restart}"),
        ),
        LinkEvent::Reconnected { after } => (
            LogLevel::Info,
            format!(
                "reconnected to {remote} after {} s without it{restart}",
                after.as_secs()
            ),
        ),
        LinkEvent::Lost { error } => (
            LogLevel::Warn,
            format!(
                "lost the link to {remote}: {error}; retrying every {} s at most, the screen keeps the last snapshot",
                MAX_RETRY.as_secs()
            ),
        ),
        LinkEvent::Unreachable { error } => (
            LogLevel::Warn,
            format!("cannot reach {remote}: {error}; retrying"),
        ),
        LinkEvent::TokenRefused => (
            LogLevel::Error,
            format!(
                "{remote} refused the token (401): restart the console with the node's token (--token, --token-file or OPSCONSOLE_TOKEN); retrying every {} s",
                UNAUTHORIZED_RETRY.as_secs()
            ),
        ),
    }
}

/// What the poller and the console share.
struct Shared {
    link: Link,
    snapshot: Option<Arc<Snapshot>>,
}

/// A remote node, watched through its admin API.
pub struct RemoteControl {
    endpoint: Endpoint,
    shared: Arc<Mutex<Shared>>,
    runtime: Handle,
    stop: CancellationToken,
}

impl RemoteControl {
    /// Starts polling `endpoint` every `every` on `runtime`; the link's flips are written to
    /// `events` (the console's log ring).
    pub fn start(
        endpoint: Endpoint,
        every: Duration,
        events: LogRing,
        runtime: &Handle,
    ) -> RemoteControl {
        let shared = Arc::new(Mutex::new(Shared {
            link: Link::new(Instant::now()),
            snapshot: None,
        }));
        let stop = CancellationToken::new();
        runtime.spawn(poll(
            endpoint.clone().with_timeout(POLL_TIMEOUT),
            shared.clone(),
            events,
            every,
            stop.clone(),
        ));
        RemoteControl {
            endpoint,
            shared,
            runtime: runtime.clone(),
            stop,
        }
    }

    /// The node's admin API, `host:port`.
    pub fn authority(&self) -> &str {
        self.endpoint.authority()
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }
}

impl Drop for RemoteControl {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl Control for RemoteControl {
    fn snapshot(&self) -> Snapshot {
        let newest = self.shared().snapshot.clone();
        newest.map(|s| (*s).clone()).unwrap_or_default()
    }

    /// Sends the command and waits for the node's answer (up to the endpoint's timeout).
    /// While the node is known to be unreachable it is not sent at all, so a key pressed
    /// during an outage is answered at once rather than after a timeout.
    fn act(&self, command: Command) -> Result<CommandReply, String> {
        let link = self.shared().link.state(self.authority(), Instant::now());
        let why = link.error.as_deref().unwrap_or("no answer");
        match link.phase {
            RemotePhase::Down => {
                return Err(format!(
                    "not sent: {} is unreachable ({why}); the console keeps retrying",
                    link.address
                ));
            }
            RemotePhase::Unauthorized => {
                return Err(format!(
                    "not sent: {} refuses this console's token (401)",
                    link.address
                ));
            }
            RemotePhase::Connecting | RemotePhase::Up => {}
        }
        // Spawned and waited for on a plain channel rather than `block_on`, which would
        // panic if a caller ever ran this on an async worker.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let endpoint = self.endpoint.clone();
        self.runtime.spawn(async move {
            let _ = tx.send(endpoint.command(&command).await);
        });
        match rx.recv() {
            Ok(Ok(reply)) => Ok(reply),
            // The node's own reason, as the console shows a local refusal.
            Ok(Err(ClientError::Refused(why))) => Err(why),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the console is shutting down; not sent".into()),
        }
    }

    fn remote_link(&self) -> Option<RemoteLink> {
        Some(self.shared().link.state(self.authority(), Instant::now()))
    }
}

/// Fetches snapshots until stopped: at the refresh rate while the node answers, with the
/// link's pauses while it does not.
async fn poll(
    endpoint: Endpoint,
    shared: Arc<Mutex<Shared>>,
    events: LogRing,
    every: Duration,
    stop: CancellationToken,
) {
    let remote = endpoint.authority().to_string();
    loop {
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = endpoint.snapshot() => r,
        };
        let now = Instant::now();
        let (event, restarted, next) = {
            let mut s = lock(&shared);
            match result {
                Ok(snapshot) => {
                    let was = s.snapshot.as_ref().map(|old| old.pid);
                    let restarted = was
                        .filter(|&pid| pid != snapshot.pid)
                        .map(|pid| (pid, snapshot.pid));
                    s.snapshot = Some(Arc::new(snapshot));
                    (s.link.succeeded(now, every), restarted, s.link.next_try())
                }
                Err(e) => {
                    let failure = Failure::from_client(&e, &remote);
                    (s.link.failed(now, failure), None, s.link.next_try())
                }
            }
        };
        if let Some(event) = event {
            let (level, text) = event_line(&event, &remote, restarted);
            events.push(level, text);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next.into()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_millis(250);

    fn down(why: &str) -> Failure {
        Failure::Unreachable(why.into())
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn errors_are_said_briefly_without_the_address() {
        let at = "127.0.0.1:9901";
        for (error, want) in [
            (
                ClientError::Unreachable(format!("{at}: Connection refused (os error 111)")),
                down("connection refused"),
            ),
            (
                ClientError::Unreachable(format!("{at} did not answer within 3s")),
                down("127.0.0.1:9901 did not answer within 3s"),
            ),
            (
                ClientError::Protocol("502 Bad Gateway: upstream".into()),
                down("unexpected answer: 502 Bad Gateway: upstream"),
            ),
            (ClientError::Unauthorized, Failure::Unauthorized),
        ] {
            assert_eq!(Failure::from_client(&error, at), want, "{error:?}");
        }
    }

    #[test]
    fn a_lost_node_is_retried_ever_more_slowly_up_to_the_cap_and_welcomed_back() {
        let t0 = Instant::now();
        let mut link = Link::new(t0);
        assert_eq!(link.phase(), RemotePhase::Connecting);
        assert_eq!(link.succeeded(t0, EVERY), Some(LinkEvent::Connected));
        assert_eq!(link.next_try(), t0 + EVERY);
        assert_eq!(link.succeeded(t0 + EVERY, EVERY), None, "no news");

        let lost = t0 + secs(1.0);
        assert_eq!(
            link.failed(lost, down("connection refused")),
            Some(LinkEvent::Lost {
                error: "connection refused".into()
            })
        );
        // One line per flip: the failures after the first say nothing new.
        let mut at = lost;
        let mut pauses = Vec::new();
        pauses.push(link.next_try() - at);
        for _ in 0..6 {
            at = link.next_try();
            assert_eq!(link.failed(at, down("connection refused")), None);
            pauses.push(link.next_try() - at);
        }
        assert_eq!(
            pauses,
            [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0].map(secs),
            "doubling, capped"
        );

        let state = link.state("h:1", at + secs(1.0));
        assert_eq!(state.phase, RemotePhase::Down);
        assert_eq!(state.for_ms, (at + secs(1.0) - lost).as_millis() as u64);
        assert_eq!(state.retry_in_ms, Some(4000));
        assert_eq!(state.error.as_deref(), Some("connection refused"));
        assert_eq!(
            state.snapshot_age_ms,
            Some((at + secs(1.0) - (t0 + EVERY)).as_millis() as u64),
            "the snapshot on screen is the last one that arrived"
        );

        let back = at + secs(2.0);
        assert_eq!(
            link.succeeded(back, EVERY),
            Some(LinkEvent::Reconnected { after: back - lost })
        );
        let state = link.state("h:1", back);
        assert_eq!(
            (state.phase, state.error, state.retry_in_ms),
            (RemotePhase::Up, None, None)
        );
        assert_eq!(state.last_outage_ms, Some((back - lost).as_millis() as u64));
        // The pause starts over after a success.
        link.failed(back + EVERY, down("reset"));
        assert_eq!(link.next_try(), back + EVERY + secs(0.5));
    }

    #[test]
    fn a_node_never_reached_says_so_once_and_connects_rather_than_reconnects() {
        let t0 = Instant::now();
        let mut link = Link::new(t0);
        assert_eq!(
            link.failed(t0, down("connection refused")),
            Some(LinkEvent::Unreachable {
                error: "connection refused".into()
            })
        );
        assert_eq!(
            link.failed(t0 + secs(0.5), down("connection refused")),
            None
        );
        let state = link.state("h:1", t0 + secs(0.6));
        assert_eq!(state.snapshot_age_ms, None, "nothing on screen yet");
        assert_eq!(
            link.succeeded(t0 + secs(2.0), EVERY),
            Some(LinkEvent::Connected)
        );
        assert_eq!(link.state("h:1", t0 + secs(2.0)).last_outage_ms, None);
    }

    #[test]
    fn a_refused_token_is_its_own_phase_and_retried_slowly() {
        let t0 = Instant::now();
        let mut link = Link::new(t0);
        assert_eq!(
            link.failed(t0, Failure::Unauthorized),
            Some(LinkEvent::TokenRefused)
        );
        assert_eq!(link.next_try(), t0 + UNAUTHORIZED_RETRY);
        assert_eq!(link.failed(link.next_try(), Failure::Unauthorized), None);
        let state = link.state("h:1", t0 + UNAUTHORIZED_RETRY);
        assert_eq!(state.phase, RemotePhase::Unauthorized);
        assert_eq!(state.error.as_deref(), Some("the token was refused (401)"));
        // The node went away after that: a different trouble, said again.
        assert!(matches!(
            link.failed(t0 + secs(30.0), down("connection refused")),
            Some(LinkEvent::Unreachable { .. })
        ));
    }
}
