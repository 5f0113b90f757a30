//! One client connection to an L7 listener: hyper serves HTTP/1.1 on it (keep-alive,
//! pipelining, upgrades) and a watchdog enforces the client timeouts hyper alone would
//! merge into one: a request head must arrive whole within `client_header_timeout` of its
//! first byte (slowloris), and the first byte of the first request within that of the
//! connect; a kept-alive connection with no request in flight is closed after
//! `idle_timeout`; a write the client does not take for `client_send_timeout` (it stopped
//! reading) closes the connection. The state the watchdog reads is updated on the I/O path
//! with plain atomics; the watchdog itself wakes at most once per the shorter of the header
//! and send timeouts. `Conns` lists a worker's connections so that, at `max_conns`, the one
//! idle longest can be closed to let a new client in.

use std::cell::RefCell;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::listener::{Limits, Listener};
use super::proxy::{Peer, Proxy};

/// What the watchdog knows about a connection. Atomics rather than cells only because an
/// upgraded connection's socket must be `Send`; nothing else shares them.
pub struct ClientState {
    /// When the connection was accepted: the times below are µs after it.
    opened: Instant,
    /// Requests whose response is not finished.
    in_flight: AtomicU32,
    /// When the first byte of the next request head arrived while none was in flight
    /// (`NONE` otherwise).
    head_started: AtomicU64,
    /// When the connection last became idle (accepted, or its last response ended).
    idle_since: AtomicU64,
    /// Whether a request has come on it yet.
    served: AtomicBool,
    /// Since when a write to the client has been waiting for room (`NONE`: it is not).
    write_stalled: AtomicU64,
    /// Cancelled to close the connection while it is idle, for a new client at `max_conns`.
    reclaim: CancellationToken,
}

/// Why the watchdog closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// A request head begun and not finished in time.
    Head,
    /// Nothing sent at all since the connect.
    FirstByte,
    /// Kept alive with no request for the idle timeout.
    Idle,
    /// A response the client stopped reading.
    Send,
}

const NONE: u64 = u64::MAX;

impl ClientState {
    fn new() -> ClientState {
        ClientState {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            head_started: AtomicU64::new(NONE),
            idle_since: AtomicU64::new(0),
            served: AtomicBool::new(false),
            write_stalled: AtomicU64::new(NONE),
            reclaim: CancellationToken::new(),
        }
    }

    /// No request in flight or begun and nothing waiting to be written: closing it loses
    /// nothing a client sent or is owed (an HTTP client retries a request on a kept-alive
    /// connection closed under it, as at any idle timeout).
    fn is_idle(&self) -> bool {
        self.in_flight.load(Relaxed) == 0
            && self.head_started.load(Relaxed) == NONE
            && self.write_stalled.load(Relaxed) == NONE
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_micros()).unwrap_or(NONE - 1)
    }

    fn at(&self, us: u64) -> Instant {
        self.opened + Duration::from_micros(us)
    }

    /// When the connection must have made progress by, and which rule that is. A stalled
    /// write counts whatever else is going on; otherwise `None` while a request is in flight
    /// (the upstream timeouts and the body timeout govern then), or while idle without an
    /// idle timeout after a first request.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Due)> {
        match self.write_stalled.load(Relaxed) {
            NONE => {}
            t => return Some((self.at(t) + limits.client_send_timeout, Due::Send)),
        }
        if self.in_flight.load(Relaxed) > 0 {
            return None;
        }
        let idle = limits
            .idle_timeout
            .map(|idle| (self.at(self.idle_since.load(Relaxed)) + idle, Due::Idle));
        match self.head_started.load(Relaxed) {
            // A connection that never sent a byte is held to the header timeout from its
            // connect (nginx's and HAProxy's rule for a first request), or to the idle
            // timeout if that is shorter.
            NONE if !self.served.load(Relaxed) => {
                let first = (self.opened + limits.client_header_timeout, Due::FirstByte);
                Some(idle.map_or(first, |i| if i.0 < first.0 { i } else { first }))
            }
            NONE => idle,
            t => Some((self.at(t) + limits.client_header_timeout, Due::Head)),
        }
    }
}

/// A request in flight on a client connection; dropping it (the response ended or was
/// abandoned) makes the connection idle again.
pub struct Busy(Arc<ClientState>);

impl Busy {
    fn new(state: &Arc<ClientState>) -> Busy {
        state.in_flight.fetch_add(1, Relaxed);
        state.head_started.store(NONE, Relaxed);
        state.served.store(true, Relaxed);
        Busy(state.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let s = &self.0;
        if s.in_flight.fetch_sub(1, Relaxed) == 1 {
            s.idle_since.store(s.now(), Relaxed);
        }
    }
}

/// The client socket, noting when a request head starts arriving.
struct Watched {
    stream: TcpStream,
    state: Arc<ClientState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let s = &self.state;
        if buf.filled().len() > before
            && s.in_flight.load(Relaxed) == 0
            && s.head_started.load(Relaxed) == NONE
        {
            s.head_started.store(s.now(), Relaxed);
        }
        polled
    }
}

impl Watched {
    /// A write that found no room starts the send clock; one that went through stops it.
    fn note_write(&self, blocked: bool) {
        let s = &self.state;
        let stalled = s.write_stalled.load(Relaxed);
        if blocked && stalled == NONE {
            s.write_stalled.store(s.now(), Relaxed);
        } else if !blocked && stalled != NONE {
            s.write_stalled.store(NONE, Relaxed);
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.note_write(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.note_write(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A place under the listener's `max_conns`, taken before an accept loop accepts: the
/// check and the count are one atomic step, so two workers accepting at once cannot both
/// take the last place. Released when dropped (unused, or with its connection).
pub struct Slot(Arc<Listener>);

impl Slot {
    /// `None` when the listener is at `max` (0: no limit).
    pub fn take(listener: &Arc<Listener>, max: u64) -> Option<Slot> {
        let mut taken = listener.slots.load(Relaxed);
        loop {
            if max > 0 && taken >= max {
                return None;
            }
            match listener
                .slots
                .compare_exchange_weak(taken, taken + 1, Relaxed, Relaxed)
            {
                Ok(_) => return Some(Slot(listener.clone())),
                Err(now) => taken = now,
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.slots.fetch_sub(1, Relaxed);
        self.0.slot_freed.notify_waiters();
    }
}

/// Counts an open client connection on its listener for as long as it lives, in the slot
/// the accept loop took for it.
pub struct Open(Slot);

impl Open {
    pub fn new(slot: Slot) -> Open {
        let listener = &slot.0;
        listener.total_conns.fetch_add(1, Relaxed);
        listener.active_conns.fetch_add(1, Relaxed);
        Open(slot)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        // The slot itself is released (and waiting accept loops woken) right after.
        self.0.0.active_conns.fetch_sub(1, Relaxed);
    }
}

/// One worker's connections on one listener, so that at `max_conns` the one idle longest
/// can be closed for a new client (nginx's reuse of keep-alive connections when
/// `worker_connections` run out). Only the worker's own thread touches it.
#[derive(Default)]
pub struct Conns {
    all: RefCell<Vec<Weak<ClientState>>>,
    /// Idle connections found by the last look through `all`, the one idle longest last.
    /// Taken from until empty, each checked again as it is taken, so a look through every
    /// connection is made once per batch rather than once per new client.
    candidates: RefCell<Vec<Weak<ClientState>>>,
}

impl Conns {
    fn add(&self, state: &Arc<ClientState>) {
        let mut all = self.all.borrow_mut();
        if all.len() == all.capacity() {
            // Closed connections leave dead entries; dropping them when the list would grow
            // keeps it within twice the open ones.
            all.retain(|w| w.strong_count() > 0);
        }
        all.push(Arc::downgrade(state));
    }

    /// Asks the connection idle longest to close; returns it (to wait for it to be gone),
    /// or `None` when no connection of this worker is idle.
    pub fn reclaim_one(&self) -> Option<Weak<ClientState>> {
        let mut looked = false;
        loop {
            let next = self.candidates.borrow_mut().pop();
            match next {
                Some(w) => {
                    if let Some(s) = w.upgrade()
                        && s.is_idle()
                        && !s.reclaim.is_cancelled()
                    {
                        s.reclaim.cancel();
                        return Some(w);
                    }
                }
                None if looked => return None,
                None => {
                    self.look();
                    looked = true;
                }
            }
        }
    }

    fn look(&self) {
        let mut all = self.all.borrow_mut();
        all.retain(|w| w.strong_count() > 0);
        let mut idle: Vec<(Instant, Weak<ClientState>)> = all
            .iter()
            .filter_map(|w| {
                let s = w.upgrade()?;
                s.is_idle()
                    .then(|| (s.at(s.idle_since.load(Relaxed)), w.clone()))
            })
            .collect();
        // Newest first: the vector is taken from the end.
        idle.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        *self.candidates.borrow_mut() = idle.into_iter().map(|(_, w)| w).collect();
    }
}

/// Serves one client connection until it closes, times out, or the node stops.
pub async fn serve(
    proxy: Rc<Proxy>,
    stream: TcpStream,
    peer: SocketAddr,
    open: Open,
    stop: CancellationToken,
) {
    let _open = open;
    let _ = stream.set_nodelay(true);
    let limits = proxy.limits();
    let state = Arc::new(ClientState::new());
    proxy.conns.add(&state);
    let io = TokioIo::new(Watched {
        stream,
        state: state.clone(),
    });
    let handler = {
        let state = state.clone();
        let peer = Rc::new(Peer::new(peer));
        service_fn(move |req| {
            let busy = Busy::new(&state);
            let proxy = proxy.clone();
            let peer = peer.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req, &peer, busy).await) }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_header_size(limits.max_header_bytes)
        .max_buf_size((limits.max_header_bytes + 16 * 1024).max(400 * 1024))
        .header_read_timeout(None)
        // A response head and its body go out as one buffer in one `write` rather than a
        // `writev` of several slices: a copy of a chunk costs less than the kernel walking
        // the slices, which is most of what a small response costs.
        .writev(false);
    let conn = http.serve_connection(io, handler).with_upgrades();
    tokio::pin!(conn);
    // The watchdog never sleeps longer than the shorter of the header and send timeouts: a
    // request head or a stalled write that starts while it sleeps has a deadline at least
    // that far away, so it is never missed, and requests cost the watchdog nothing (no
    // wake-up, no timer per request).
    let period = limits.client_header_timeout.min(limits.client_send_timeout);
    let wake = |state: &ClientState| {
        let check = Instant::now() + period;
        match state.deadline(&limits) {
            Some((due, _)) => due.min(check),
            None => check,
        }
    };
    let timer = tokio::time::sleep_until(wake(&state));
    tokio::pin!(timer);
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    let reclaimed = state.reclaim.cancelled();
    tokio::pin!(reclaimed);
    loop {
        tokio::select! {
            // Before hyper reads again: a connection asked to make room is closed while it
            // is still idle, not after it has taken a request.
            biased;
            _ = &mut reclaimed => {
                tracing::debug!("client {peer}: idle, closed to make room at max_conns");
                return;
            }
            _ = &mut stopped => return,
            r = &mut conn => {
                if let Err(e) = r {
                    tracing::debug!("client {peer}: {e}");
                }
                return;
            }
            _ = &mut timer => {
                if let Some((due, why)) = state.deadline(&limits)
                    && due <= Instant::now()
                {
                    match why {
                        Due::Head => tracing::debug!("client {peer}: request head not complete within {:?}, closed", limits.client_header_timeout),
                        Due::Send => tracing::debug!("client {peer}: not reading its response for {:?}, closed", limits.client_send_timeout),
                        Due::FirstByte | Due::Idle => {}
                    }
                    return;
                }
                timer.as_mut().reset(wake(&state));
            }
        }
    }
}
