//! Each worker's idle upstream connections, per server address: HTTP keep-alive towards the
//! servers, so a request does not pay a TCP handshake. A worker's connections are its own
//! (no lock); a connection the server closed is noticed and dropped when taken.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hashbrown::HashMap;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::RequestBody;

pub type Sender = SendRequest<RequestBody>;

/// Idle connections a worker keeps per server; more are closed when they come back.
const MAX_IDLE_PER_SERVER: usize = 64;

thread_local! {
    static IDLE: RefCell<HashMap<SocketAddr, Vec<Sender>>> = RefCell::new(HashMap::new());
}

/// A connection to `addr` ready for a request: an idle one if there is a live one, else a
/// new one. The flag says whether it was reused (a reused one may have been closed by the
/// server at the very moment it was taken).
pub async fn connection(addr: SocketAddr, connect_timeout: Duration) -> io::Result<(Sender, bool)> {
    while let Some(mut sender) = take(addr) {
        // Usually ready at once; a connection whose last response just ended may need a
        // moment, and one the server closed says so here.
        if sender.ready().await.is_ok() {
            return Ok((sender, true));
        }
    }
    connect(addr, connect_timeout).await.map(|s| (s, false))
}

fn take(addr: SocketAddr) -> Option<Sender> {
    IDLE.with(|idle| idle.borrow_mut().get_mut(&addr)?.pop())
}

/// A connection whose exchange is complete goes back for the next request.
pub fn give_back(addr: SocketAddr, sender: Sender) {
    if sender.is_closed() {
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() < MAX_IDLE_PER_SERVER {
            list.push(sender);
        }
    });
}

/// A new connection (never pooled first: upgrades take theirs over).
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Sender> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(s) => s?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            ));
        }
    };
    let _ = stream.set_nodelay(true);
    // One buffer, one `write`: a request head is small, and copying it beats the kernel
    // walking several slices of it.
    let (sender, conn) = Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("upstream connection to {addr} ended: {e}");
        }
    });
    Ok(sender)
}
