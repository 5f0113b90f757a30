//! One client connection to an L7 listener: hyper serves HTTP/1.1 on it (keep-alive,
//! pipelining, upgrades) and a watchdog enforces the two client timeouts hyper alone would
//! merge into one: a request head must arrive whole within `client_header_timeout` of its
//! first byte (slowloris), and a kept-alive connection with no request in flight is closed
//! after `idle_timeout`. The state the watchdog reads is updated on the I/O path with plain
//! atomics; the watchdog itself wakes at most once per `client_header_timeout`.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
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
}

const NONE: u64 = u64::MAX;

impl ClientState {
    fn new() -> ClientState {
        ClientState {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            head_started: AtomicU64::new(NONE),
            idle_since: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_micros()).unwrap_or(NONE - 1)
    }

    fn at(&self, us: u64) -> Instant {
        self.opened + Duration::from_micros(us)
    }

    /// When the connection must have made progress by, and whether missing it means a
    /// slow request head rather than plain idleness. `None` while a request is in flight
    /// (the upstream timeouts govern then), or while idle without an idle timeout.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, bool)> {
        if self.in_flight.load(Relaxed) > 0 {
            return None;
        }
        match self.head_started.load(Relaxed) {
            NONE => limits
                .idle_timeout
                .map(|idle| (self.at(self.idle_since.load(Relaxed)) + idle, false)),
            t => Some((self.at(t) + limits.client_header_timeout, true)),
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

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
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

/// Counts an open client connection on its listener for as long as it lives. Taken by the
/// accept loop before it accepts again, so `max_conns` sees every connection at once.
pub struct Open(Arc<Listener>);

impl Open {
    pub fn new(listener: &Arc<Listener>) -> Open {
        listener.total_conns.fetch_add(1, Relaxed);
        listener.active_conns.fetch_add(1, Relaxed);
        Open(listener.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.active_conns.fetch_sub(1, Relaxed);
        self.0.slot_freed.notify_waiters();
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
    // The watchdog never sleeps longer than one client_header_timeout: a request head that
    // starts while it sleeps has a deadline at least that far away, so it is never missed,
    // and requests cost the watchdog nothing (no wake-up, no timer per request).
    let wake = |state: &ClientState| {
        let check = Instant::now() + limits.client_header_timeout;
        match state.deadline(&limits) {
            Some((due, _)) => due.min(check),
            None => check,
        }
    };
    let timer = tokio::time::sleep_until(wake(&state));
    tokio::pin!(timer);
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            r = &mut conn => {
                if let Err(e) = r {
                    tracing::debug!("client {peer}: {e}");
                }
                return;
            }
            _ = &mut timer => {
                if let Some((due, slow_head)) = state.deadline(&limits)
                    && due <= Instant::now()
                {
                    if slow_head {
                        tracing::debug!("client {peer}: request head not complete within {:?}, closed", limits.client_header_timeout);
                    }
                    return;
                }
                timer.as_mut().reset(wake(&state));
            }
            _ = &mut stopped => return,
        }
    }
}
