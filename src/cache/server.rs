//! The cache's network shell: the accept loop (with memcached's `-c` refusal), one task per
//! connection that parses everything buffered and writes all replies with one write, and the
//! background sweep that reclaims expired items.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::engine::{Engine, unix_now};
use super::exec::{Ctx, Flow, execute};
use super::protocol::{ParseError, parse};
use super::stats::{Counter, LocalCounters};

/// Read buffer growth step; one read takes at most this much beyond what is buffered.
const READ_CHUNK: usize = 16 * 1024;
/// What a batch's reply buffer starts with: most batches' replies fit.
const REPLY_START: usize = 4 * 1024;
/// Replies buffered beyond this are written before parsing more, bounding per-connection
/// memory for clients that pipeline many large gets.
const OUT_HIGH_WATER: usize = 1 << 20;
/// How often the sweeper wakes, and how many slots per shard it looks at each time.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const SWEEP_BUDGET: usize = 10_000;

/// Binds a cache listener. Separate from `serve` so callers learn the bound address (and a
/// port conflict) before anything runs; `section` names the config section in the error.
pub async fn bind(section: &str, addr: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} (the [{section}] port/listen settings): {e}"),
        )
    })
}

/// Accepts clients until `cancel` fires, then stops accepting; connections finish the
/// requests they have and close.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracker.spawn(sweep(engine.clone(), cancel.clone()));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = cancel.cancelled() => break,
        };
        match accepted {
            Ok((sock, peer)) => admit(&engine, sock, peer, &cancel, &tracker),
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(role = engine.role, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::info!(
        role = engine.role,
        "cache {} stopped accepting on {local}",
        engine.role
    );
}

fn admit(
    engine: &Arc<Engine>,
    mut sock: TcpStream,
    peer: SocketAddr,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) {
    let counters = &engine.counters;
    let current = counters.curr_connections.fetch_add(1, Ordering::Relaxed);
    if current >= u64::from(engine.config.conn_limit) {
        counters.curr_connections.fetch_sub(1, Ordering::Relaxed);
        counters
            .rejected_connections
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(role = engine.role, %peer, "connection refused: -c limit reached");
        // memcached's exact words, so clients recognise the condition.
        tracker.spawn(async move {
            let _ = sock.write_all(b"ERROR Too many open connections\r\n").await;
            let _ = sock.shutdown().await;
        });
        return;
    }
    counters.total_connections.fetch_add(1, Ordering::Relaxed);
    let _ = sock.set_nodelay(true);
    let engine = engine.clone();
    let cancel = cancel.clone();
    tracker.spawn(async move {
        if let Err(e) = connection(&engine, sock, cancel).await {
            tracing::debug!(role = engine.role, %peer, "connection ended: {e}");
        }
        engine
            .counters
            .curr_connections
            .fetch_sub(1, Ordering::Relaxed);
    });
}

/// The client-facing timeouts of one cache listener (`None` = no limit).
#[derive(Clone, Copy)]
struct Timeouts {
    idle: Option<Duration>,
    request: Option<Duration>,
    send: Option<Duration>,
}

impl Timeouts {
    fn of(engine: &Engine) -> Timeouts {
        let c = &engine.config;
        let some = |d: Duration| (!d.is_zero()).then_some(d);
        Timeouts {
            idle: some(Duration::from_secs(c.idle_timeout_secs)),
            request: some(Duration::from_millis(c.request_timeout_ms)),
            send: some(Duration::from_millis(c.send_timeout_ms)),
        }
    }
}

/// Why a connection's read deadline passed.
#[derive(Clone, Copy)]
enum Waiting {
    /// Between requests, for `idle`.
    Idle,
    /// In the middle of a request, for `request`.
    Request,
}

/// Serves one client and counts what it did, however the connection ends.
async fn connection(
    engine: &Engine,
    mut sock: TcpStream,
    cancel: CancellationToken,
) -> io::Result<()> {
    let mut counters = LocalCounters::default();
    let result = serve_client(engine, &mut sock, &cancel, &mut counters).await;
    engine.counters.merge(&mut counters);
    result
}

/// Read what is available, answer every complete request in it, write the replies once.
async fn serve_client(
    engine: &Engine,
    sock: &mut TcpStream,
    cancel: &CancellationToken,
    counters: &mut LocalCounters,
) -> io::Result<()> {
    let limits = engine.parse_limits();
    let replicated = engine.replicated();
    let timeouts = Timeouts::of(engine);
    let mut input: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let mut records: Vec<u8> = Vec::new();
    let mut swallow = 0usize;
    // When the request now partly read began, and when the client last sent anything; read
    // only when a timeout needs them, so the common case costs no clock reads.
    let mut request_began: Option<Instant> = None;
    let mut last_input = timeouts.idle.map(|_| Instant::now());
    loop {
        if input.is_empty() {
            // Between requests a connection holds no buffers (memcached likewise returns
            // idle connections' read buffers): ten thousand idle clients would otherwise
            // pin 32 KiB each. Allocating them again per request is cheap next to the
            // syscalls a request costs.
            release(&mut input);
            release(&mut out);
            release(&mut records);
        }
        let deadline = match (request_began, timeouts.request, last_input, timeouts.idle) {
            (Some(began), Some(limit), _, _) => Some((began + limit, Waiting::Request)),
            (_, _, Some(last), Some(limit)) => Some((last + limit, Waiting::Idle)),
            _ => None,
        };
        tokio::select! {
            r = sock.readable() => r?,
            _ = cancel.cancelled() => return Ok(()),
            _ = crate::sync::sleep_until_some(deadline.map(|(at, _)| at)) => {
                if let Some((_, waiting)) = deadline {
                    time_out(engine, sock, counters, waiting, &timeouts);
                }
                return Ok(());
            }
        }
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
        let n = match sock.try_read_buf(&mut input) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(());
        }
        counters.add(Counter::BytesRead, n as u64);
        // Room for the common replies in one allocation; big ones grow it.
        out.reserve(REPLY_START);
        wait_while_writes_paused(engine).await;
        let now = unix_now();
        // In sync replication mode: where each write's reply sits in `out`, so a write the
        // peer does not confirm can have its reply replaced by an error.
        let mut write_replies: Vec<(usize, usize)> = Vec::new();
        let track_writes = engine
            .repl
            .as_ref()
            .is_some_and(|r| r.sync_timeout.is_some());
        let mut pos = 0;
        let mut close = false;
        let mut completed = false;
        loop {
            if swallow > 0 {
                let k = swallow.min(input.len() - pos);
                pos += k;
                swallow -= k;
                if swallow > 0 {
                    break;
                }
            }
            match parse(&input[pos..], &limits) {
                Ok(Some((req, used))) => {
                    pos += used;
                    completed = true;
                    let reply_start = out.len();
                    let records_before = records.len();
                    let mut flow = execute(
                        &mut Ctx {
                            engine,
                            now,
                            out: &mut out,
                            counters,
                            repl: replicated.then_some(&mut records),
                        },
                        req,
                    );
                    let mut chunked = false;
                    while let Flow::More(rest) = flow {
                        // A get whose values would not fit the buffer: send what is ready,
                        // then go on with the rest of its keys.
                        chunked = true;
                        settle_writes(engine, &mut records, &mut out, &mut write_replies).await;
                        flush(sock, &mut out, counters, timeouts.send).await?;
                        flow = rest.resume(&mut Ctx {
                            engine,
                            now,
                            out: &mut out,
                            counters,
                            repl: replicated.then_some(&mut records),
                        });
                    }
                    // A chunked `gat` has sent its values already; its touches replicate,
                    // but there is no whole reply left to turn into a sync-mode error.
                    if track_writes && !chunked && records.len() > records_before {
                        write_replies.push((reply_start, out.len()));
                    }
                    match flow {
                        Flow::Continue | Flow::More(_) => {}
                        Flow::Swallow(k) => swallow = k,
                        Flow::Close => {
                            close = true;
                            break;
                        }
                    }
                }
                Ok(None) => break,
                Err(ParseError::LineTooLong) => {
                    out.extend_from_slice(b"CLIENT_ERROR line too long\r\n");
                    close = true;
                    break;
                }
            }
            if out.len() >= OUT_HIGH_WATER {
                settle_writes(engine, &mut records, &mut out, &mut write_replies).await;
                flush(sock, &mut out, counters, timeouts.send).await?;
            }
        }
        input.drain(..pos);
        settle_writes(engine, &mut records, &mut out, &mut write_replies).await;
        flush(sock, &mut out, counters, timeouts.send).await?;
        engine.counters.merge(counters);
        if close {
            let _ = sock.shutdown().await;
            return Ok(());
        }
        if timeouts.request.is_some() {
            let in_request = !input.is_empty() || swallow > 0;
            // A new partial request starts its own clock; one still coming keeps its start.
            request_began = match (in_request, completed) {
                (false, _) => None,
                (true, true) => Some(Instant::now()),
                (true, false) => request_began.or_else(|| Some(Instant::now())),
            };
        }
        if timeouts.idle.is_some() {
            last_input = Some(Instant::now());
        }
    }
}

/// Gives a buffer's memory back; the next use allocates again.
fn release(buf: &mut Vec<u8>) {
    if buf.capacity() > 0 {
        *buf = Vec::new();
    }
}

/// Ends a connection whose deadline passed: silently when idle, as memcached does; with an
/// error line (if the socket takes it without waiting) when a request stalled halfway.
fn time_out(
    engine: &Engine,
    sock: &TcpStream,
    counters: &mut LocalCounters,
    waiting: Waiting,
    timeouts: &Timeouts,
) {
    let peer = sock.peer_addr().ok();
    match waiting {
        Waiting::Idle => {
            counters.incr(Counter::IdleKicks);
            tracing::debug!(role = engine.role, ?peer, "closed an idle connection");
        }
        Waiting::Request => {
            counters.incr(Counter::RequestTimeouts);
            let limit = timeouts.request.unwrap_or_default().as_millis();
            let _ = sock.try_write(
                format!("CLIENT_ERROR request not received within {limit} ms\r\n").as_bytes(),
            );
            tracing::debug!(
                role = engine.role,
                ?peer,
                "closed a connection whose request did not arrive within {limit} ms"
            );
        }
    }
}

/// Hands the batch's change records to replication (one backlog append per batch, after
/// the shard locks are released) and, in sync mode, waits for the peer to confirm them.
async fn settle_writes(
    engine: &Engine,
    records: &mut Vec<u8>,
    out: &mut Vec<u8>,
    write_replies: &mut Vec<(usize, usize)>,
) {
    if records.is_empty() {
        return;
    }
    let offset = engine.publish(records);
    records.clear();
    if !write_replies.is_empty() {
        confirm_writes(engine, offset, out, write_replies).await;
        write_replies.clear();
    }
}

/// A planned switchover pauses writes briefly; requests wait rather than fail.
async fn wait_while_writes_paused(engine: &Engine) {
    let Some(r) = &engine.repl else { return };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while r.writes_paused() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `ack = "sync"`: holds the replies until the peer has applied the batch's writes; if it
/// does not in time (or there is no peer), each write's reply becomes an error saying so.
async fn confirm_writes(
    engine: &Engine,
    offset: u64,
    out: &mut Vec<u8>,
    replies: &[(usize, usize)],
) {
    let Some(r) = &engine.repl else { return };
    let Some(limit) = r.sync_timeout else { return };
    if r.wait_acked(offset, limit).await {
        return;
    }
    crate::replication::shared::Counters::add(&r.counters.sync_failures, replies.len() as u64);
    let error = format!(
        "SERVER_ERROR replication: the peer did not confirm this write within {} ms (it is stored here)\r\n",
        limit.as_millis()
    );
    let mut rebuilt = Vec::with_capacity(out.len() + replies.len() * error.len());
    let mut last = 0;
    for &(start, end) in replies {
        rebuilt.extend_from_slice(&out[last..start]);
        // A `noreply` write had no reply to replace; it stays silent.
        if end > start {
            rebuilt.extend_from_slice(error.as_bytes());
        }
        last = end;
    }
    rebuilt.extend_from_slice(&out[last..]);
    *out = rebuilt;
}

async fn flush(
    sock: &mut TcpStream,
    out: &mut Vec<u8>,
    counters: &mut LocalCounters,
    send_timeout: Option<Duration>,
) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let written = match send_timeout {
        None => sock.write_all(out).await,
        Some(limit) => write_all_within(sock, out, limit).await,
    };
    if let Err(e) = written {
        if e.kind() == io::ErrorKind::TimedOut {
            counters.incr(Counter::SendTimeouts);
        }
        return Err(e);
    }
    counters.add(Counter::BytesWritten, out.len() as u64);
    out.clear();
    Ok(())
}

/// `write_all`, but fails once the client has taken no bytes for `limit`: a client that
/// never reads would otherwise hold its connection and buffers for ever. The timer is only
/// armed when the socket is full, so a reading client costs nothing extra.
async fn write_all_within(sock: &mut TcpStream, buf: &[u8], limit: Duration) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match sock.try_write(&buf[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match tokio::time::timeout(limit, sock.writable()).await {
                    Ok(ready) => ready?,
                    Err(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "the client took no reply bytes for {} ms",
                                limit.as_millis()
                            ),
                        ));
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reclaims expired items in the background so memory frees up without reads.
async fn sweep(engine: Arc<Engine>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let reclaimed = engine.store.sweep(unix_now(), SWEEP_BUDGET);
        if reclaimed > 0 {
            tracing::trace!(role = engine.role, reclaimed, "swept expired items");
        }
    }
}
