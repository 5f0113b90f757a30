//! The L4 proxy workers: one thread per core, each with its own single-threaded runtime and
//! its own `SO_REUSEPORT` listener per service, so the kernel spreads connections over them
//! and a connection never changes threads. Each worker keeps its own scheduler state per
//! service; only the servers' counters are shared.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::forward;
use super::service::Service;
use crate::balance::pool::PoolCursor;

/// A listener for one worker to serve a service on.
pub struct Assignment {
    pub service: Arc<Service>,
    pub listener: std::net::TcpListener,
}

/// Binds `count` listeners on `addr` with `SO_REUSEPORT` (the first decides the port when
/// `addr` asks for port 0). Errors name the service's config section.
pub fn bind(
    service: &str,
    addr: SocketAddr,
    count: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    let explain = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} (listen in [l4.services.{service}]): {e}"),
        )
    };
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(count);
    let mut at = addr;
    for _ in 0..count.max(1) {
        let l = reuseport_listener(at).map_err(explain)?;
        at = l.local_addr().map_err(explain)?;
        out.push(l);
    }
    Ok(out)
}

fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Starts `count` worker threads; returns the channels that hand them listeners.
/// Accepting stops at `cancel`; connections are dropped at `stop`.
pub fn spawn(
    count: usize,
    cancel: CancellationToken,
    stop: CancellationToken,
    conns: TaskTracker,
) -> io::Result<Vec<mpsc::UnboundedSender<Assignment>>> {
    let mut senders = Vec::with_capacity(count);
    for index in 0..count {
        let (tx, rx) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (cancel, stop, conns) = (cancel.clone(), stop.clone(), conns.clone());
        std::thread::Builder::new()
            .name(format!("l4-worker-{index}"))
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, run(index, rx, cancel, stop, conns));
            })?;
        senders.push(tx);
    }
    Ok(senders)
}

async fn run(
    index: usize,
    mut assignments: mpsc::UnboundedReceiver<Assignment>,
    cancel: CancellationToken,
    stop: CancellationToken,
    conns: TaskTracker,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            a = assignments.recv() => match a {
                Some(a) => {
                    match TcpListener::from_std(a.listener) {
                        Ok(listener) => {
                            let seed = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                            tokio::task::spawn_local(accept(a.service, listener, seed, conns.clone(), stop.clone()));
                        }
                        Err(e) => tracing::error!(service = %a.service.name, "worker {index} cannot use its listener: {e}"),
                    }
                }
                None => break,
            },
        }
    }
    // Open connections finish on their own until the node's grace period ends.
    stop.cancelled().await;
}

async fn accept(
    service: Arc<Service>,
    listener: TcpListener,
    seed: u64,
    conns: TaskTracker,
    stop: CancellationToken,
) {
    let cursor = Rc::new(RefCell::new(PoolCursor::new(&service.pool, seed)));
    let mut warned = false;
    loop {
        let accepted = tokio::select! {
            _ = service.accepting.cancelled() => return,
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                warned = false;
                let task =
                    forward::serve(service.clone(), cursor.clone(), stream, peer, stop.clone());
                tokio::task::spawn_local(conns.track_future(task));
            }
            Err(e) => {
                // Out of file descriptors and the like: say so once, back off, keep going.
                if !warned {
                    tracing::warn!(service = %service.name, "accept failed: {e}");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
