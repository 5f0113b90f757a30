//! One client connection through the L4 balancer: pick a server (retrying others when a
//! connect fails), send the PROXY header if asked, then copy bytes both ways until both
//! sides are done. A half-close is passed on (the client's FIN becomes a FIN to the server and
//! the other direction keeps flowing), and a connection idle for too long is closed.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;

use super::proxy_header;
use super::service::Service;
use crate::balance::backend::{Backend, ConnGuard};
use crate::balance::pool::PoolCursor;
use crate::balance::select::Client;
use crate::config::balance::{SendProxy, Splice};

/// Bytes read per syscall in each direction.
const BUFFER: usize = 32 * 1024;
/// Free buffers a worker keeps for its next connections (8 MiB per worker at most).
const POOLED_BUFFERS: usize = 256;

thread_local! {
    /// Each worker thread's free copy buffers. Short connections would otherwise allocate
    /// and zero two buffers each, which showed as the largest user-space cost per new
    /// connection.
    static FREE_BUFFERS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A copy buffer from this thread's pool; it goes back to the pool when dropped.
struct PooledBuffer(Option<Box<[u8]>>);

impl PooledBuffer {
    fn take() -> PooledBuffer {
        let reused = FREE_BUFFERS.with(|f| f.borrow_mut().pop());
        PooledBuffer(Some(
            reused.unwrap_or_else(|| vec![0u8; BUFFER].into_boxed_slice()),
        ))
    }

    fn bytes(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or_default()
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            FREE_BUFFERS.with(|f| {
                let mut free = f.borrow_mut();
                if free.len() < POOLED_BUFFERS {
                    free.push(b);
                }
            });
        }
    }
}

pub async fn serve(
    service: Arc<Service>,
    cursor: Rc<RefCell<PoolCursor>>,
    mut client: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    service.accepted.fetch_add(1, Relaxed);
    let _ = client.set_nodelay(true);
    let Some((mut upstream, mut guard)) = connect(&service, &cursor, peer).await else {
        return; // no server could take it: the client sees the connection close
    };
    let server = guard.backend().clone();
    let header = match service.send_proxy() {
        SendProxy::None => None,
        SendProxy::V1 => client.local_addr().ok().map(|l| proxy_header::v1(peer, l)),
        SendProxy::V2 => client.local_addr().ok().map(|l| proxy_header::v2(peer, l)),
    };
    if let Some(h) = header
        && upstream.write_all(&h).await.is_err()
    {
        server.connect_errors.fetch_add(1, Relaxed);
        return;
    }
    let idle = service.idle_timeout();
    // From this worker's view of the pool, so ending a connection takes no shared lock.
    let persistence = cursor.borrow().persistence();
    tokio::select! {
        _ = relay(&mut client, &mut upstream, &mut guard, idle, service.splice()) => {}
        _ = stop.cancelled() => {}
    }
    if let Some(p) = &persistence {
        p.touch(peer.ip(), &server, Instant::now());
    }
}

/// Picks and connects, trying other servers when a connect fails or times out, up to the
/// service's retries.
async fn connect(
    service: &Service,
    cursor: &RefCell<PoolCursor>,
    peer: SocketAddr,
) -> Option<(TcpStream, ConnGuard)> {
    let client = Client::new(peer.ip(), peer.port());
    let mut tried: Vec<Arc<Backend>> = Vec::new();
    let timeout = service.connect_timeout();
    loop {
        let picked = cursor
            .borrow_mut()
            .pick(&service.pool, &client, &tried, Instant::now);
        let Some(server) = picked else {
            service.pool.no_server.fetch_add(1, Relaxed);
            return None;
        };
        if !tried.is_empty() {
            server.retries.fetch_add(1, Relaxed);
        }
        // Counted from the start of the connect, so least-connection schedulers on other
        // workers see it at once.
        let guard = server.clone().connection();
        let error = match tokio::time::timeout(timeout, TcpStream::connect(server.addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, guard));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {timeout:?}"),
        };
        server.connect_errors.fetch_add(1, Relaxed);
        tracing::debug!(
            service = %service.name,
            server = %server.name,
            "connect to {} failed: {error}",
            server.addr
        );
        drop(guard);
        tried.push(server);
        if tried.len() > service.retries() as usize {
            return None;
        }
    }
}

/// Copies both ways until both directions ended, one failed, or nothing moved for `idle`.
async fn relay(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    guard: &mut ConnGuard,
    idle: Option<Duration>,
    splice: Splice,
) {
    let server = guard.backend().clone();
    let last = Cell::new(tokio::time::Instant::now());
    let ended = Cell::new(false);
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = upstream.split();
    let inbound = pump(
        client_read,
        server_write,
        &server.bytes_in,
        &last,
        &ended,
        splice,
    );
    let outbound = pump(
        server_read,
        client_write,
        &server.bytes_out,
        &last,
        &ended,
        splice,
    );
    tokio::pin!(inbound, outbound);
    let (mut inbound_done, mut outbound_done) = (false, false);
    let far = Duration::from_secs(365 * 24 * 3600);
    let idle_timer = tokio::time::sleep(idle.unwrap_or(far));
    tokio::pin!(idle_timer);
    while !(inbound_done && outbound_done) {
        tokio::select! {
            r = &mut inbound, if !inbound_done => {
                inbound_done = true;
                guard.set_inactive();
                if r.is_err() { return; }
            }
            r = &mut outbound, if !outbound_done => {
                outbound_done = true;
                guard.set_inactive();
                if r.is_err() { return; }
            }
            _ = &mut idle_timer => {
                let Some(limit) = idle else { continue };
                let deadline = last.get() + limit;
                if tokio::time::Instant::now() >= deadline {
                    return;
                }
                idle_timer.as_mut().reset(deadline);
            }
        }
    }
}

/// One direction: move bytes on until end of input, then pass the half-close on.
/// `ended` is shared by both directions: the first to end sets it.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    counter: &AtomicU64,
    last: &Cell<tokio::time::Instant>,
    ended: &Cell<bool>,
    splice: Splice,
) -> io::Result<()> {
    carry(&mut from, &mut to, counter, last, splice).await?;
    // The first direction to end passes the half-close on; when the other one ends too,
    // both sockets close at once, and that close sends the FIN by itself.
    if !ended.replace(true) {
        let _ = to.shutdown().await;
    }
    Ok(())
}

/// Moves bytes until `from` reaches end of input: through a user-space buffer, or with
/// splice(2) as `splice` says.
async fn carry(
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    counter: &AtomicU64,
    last: &Cell<tokio::time::Instant>,
    splice: Splice,
) -> io::Result<()> {
    if splice == Splice::Always
        && let Some(done) = carry_spliced(from.as_ref(), to.as_ref(), counter, last).await
    {
        return done;
    }
    let mut auto = splice == Splice::Auto;
    while copy(from, to, counter, last, auto).await? == Copied::Bulk {
        match carry_spliced(from.as_ref(), to.as_ref(), counter, last).await {
            Some(done) => return done,
            None => auto = false, // no pipe to be had: stay in user space
        }
    }
    Ok(())
}

#[derive(PartialEq)]
enum Copied {
    /// `from` reached end of input.
    All,
    /// A read filled the whole buffer, so more is queued: a bulk transfer, where the
    /// kernel-side copy pays off.
    Bulk,
}

/// Copies through a pooled user-space buffer until end of input or, when `stop_at_bulk`,
/// the first full buffer (the buffer goes back to the pool before any splicing starts).
async fn copy(
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    counter: &AtomicU64,
    last: &Cell<tokio::time::Instant>,
    stop_at_bulk: bool,
) -> io::Result<Copied> {
    let mut buffer = PooledBuffer::take();
    let buf = buffer.bytes();
    loop {
        let n = from.read(buf).await?;
        if n == 0 {
            return Ok(Copied::All);
        }
        to.write_all(&buf[..n]).await?;
        counter.fetch_add(n as u64, Relaxed);
        last.set(tokio::time::Instant::now());
        if stop_at_bulk && n == buf.len() {
            return Ok(Copied::Bulk);
        }
    }
}

/// Carries the rest of a direction with splice(2); `None` when no pipe could be opened.
#[cfg(target_os = "linux")]
async fn carry_spliced(
    from: &TcpStream,
    to: &TcpStream,
    counter: &AtomicU64,
    last: &Cell<tokio::time::Instant>,
) -> Option<io::Result<()>> {
    let mut pipe = match super::splice::PooledPipe::take() {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!("no pipe for splice(2), copying in user space: {e}");
            return None;
        }
    };
    Some(super::splice::carry(from, to, &mut pipe, counter, last).await)
}

/// splice(2) is Linux's: elsewhere bytes always go through user space.
#[cfg(not(target_os = "linux"))]
async fn carry_spliced(
    _from: &TcpStream,
    _to: &TcpStream,
    _counter: &AtomicU64,
    _last: &Cell<tokio::time::Instant>,
) -> Option<io::Result<()>> {
    None
}
