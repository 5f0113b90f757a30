//! The cache's network shell: the accept loop (with memcached's `-c` refusal), one task per
//! connection that parses everything buffered and writes all replies with one write, and the
//! background sweep that reclaims expired items.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::engine::{Engine, unix_now};
use super::exec::{Ctx, Flow, execute};
use super::protocol::{ParseError, parse};
use super::stats::{Counter, LocalCounters};

/// Read buffer growth step; one read takes at most this much beyond what is buffered.
const READ_CHUNK: usize = 16 * 1024;
/// Replies buffered beyond this are written before parsing more, bounding per-connection
/// memory for clients that pipeline many large gets.
const OUT_HIGH_WATER: usize = 1 << 20;
/// How often the sweeper wakes, and how many slots per shard it looks at each time.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const SWEEP_BUDGET: usize = 10_000;

/// Binds the cache listener. Separate from `serve` so callers learn the bound address (and a
/// port conflict) before anything runs.
pub async fn bind(engine: &Engine) -> io::Result<TcpListener> {
    let addr = format!("{}:{}", engine.config.listen, engine.config.port);
    TcpListener::bind(&addr).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot listen on {addr} (the [{}] port/listen settings): {e}",
                engine.role
            ),
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

/// Serves one client: read what is available, answer every complete request in it, write
/// the replies once.
async fn connection(
    engine: &Engine,
    mut sock: TcpStream,
    cancel: CancellationToken,
) -> io::Result<()> {
    let limits = engine.parse_limits();
    let replicated = engine.replicated();
    let mut input: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut counters = LocalCounters::default();
    let mut records: Vec<u8> = Vec::new();
    let mut swallow = 0usize;
    loop {
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
        let n = tokio::select! {
            r = sock.read_buf(&mut input) => r?,
            _ = cancel.cancelled() => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        counters.add(Counter::BytesRead, n as u64);
        let now = unix_now();
        let mut pos = 0;
        let mut close = false;
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
                    let mut ctx = Ctx {
                        engine,
                        now,
                        out: &mut out,
                        counters: &mut counters,
                        repl: replicated.then_some(&mut records),
                    };
                    match execute(&mut ctx, req) {
                        Flow::Continue => {}
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
                flush(&mut sock, &mut out, &mut counters).await?;
            }
        }
        input.drain(..pos);
        if !records.is_empty() {
            // One backlog append per batch, after the shard locks are released.
            engine.publish(&records);
            records.clear();
        }
        flush(&mut sock, &mut out, &mut counters).await?;
        engine.counters.merge(&mut counters);
        if close {
            let _ = sock.shutdown().await;
            return Ok(());
        }
    }
}

async fn flush(
    sock: &mut TcpStream,
    out: &mut Vec<u8>,
    counters: &mut LocalCounters,
) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    sock.write_all(out).await?;
    counters.add(Counter::BytesWritten, out.len() as u64);
    out.clear();
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
