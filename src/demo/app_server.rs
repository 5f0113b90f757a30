//! The demo's app servers: small HTTP/1.1 responders for the balancers to front, so health
//! checks, distribution and a dying backend can be watched without installing anything.
//! Each can be killed (its port closes and its connections drop, as a crash would) and
//! started again on the same address, and made slow or failing at runtime: a latency added
//! to every answer and a share of answers that are `500` or `503`. `/health` is exempt from
//! both, so checks fail only for a dead server and what a balancer does with a slow or
//! failing one that still passes its checks (leastconn, retries) can be watched.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::AppServerSnapshot;
use crate::sync::lock;

/// Request heads longer than this get `431` and the connection closes.
const MAX_HEAD: usize = 16 * 1024;
/// A kept-alive connection with nothing to say is closed after this long.
const IDLE: Duration = Duration::from_secs(30);
/// The longest latency an operator may add.
pub const MAX_LATENCY_MS: u64 = 60_000;

pub struct AppServer {
    pub name: String,
    pub addr: SocketAddr,
    /// Present while it runs; cancelling it closes the listener and every connection.
    running: Mutex<Option<CancellationToken>>,
    requests: AtomicU64,
    latency_ms: AtomicU64,
    error_percent: AtomicU8,
    /// Requests the error rate applied to, which decides the next error.
    eligible: AtomicU64,
    errors: AtomicU64,
}

impl AppServer {
    /// Binds `addr` and starts serving; call it inside the runtime it is to run on.
    pub fn start(
        name: String,
        addr: &str,
        parent: &CancellationToken,
        tracker: &TaskTracker,
    ) -> io::Result<Arc<AppServer>> {
        let listener = bind(&name, addr)?;
        let server = Arc::new(AppServer {
            name,
            addr: listener.local_addr()?,
            running: Mutex::new(None),
            requests: AtomicU64::new(0),
            latency_ms: AtomicU64::new(0),
            error_percent: AtomicU8::new(0),
            eligible: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        });
        server.serve(listener, parent, tracker);
        Ok(server)
    }

    fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        parent: &CancellationToken,
        tracker: &TaskTracker,
    ) {
        let token = parent.child_token();
        *lock(&self.running) = Some(token.clone());
        tracing::info!("demo app server {} listening on {}", self.name, self.addr);
        let me = self.clone();
        let conns = tracker.clone();
        tracker.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = token.cancelled() => return,
                };
                match accepted {
                    Ok((sock, _)) => {
                        let me = me.clone();
                        let token = token.clone();
                        conns.spawn(async move {
                            tokio::select! {
                                _ = me.converse(sock) => {}
                                _ = token.cancelled() => {}
                            }
                        });
                    }
                    Err(e) => {
                        // Out of descriptors and the like: wait instead of spinning.
                        tracing::warn!("demo app server {}: accept failed: {e}", me.name);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }

    pub fn is_running(&self) -> bool {
        lock(&self.running).is_some()
    }

    /// Closes the port and drops every connection, as if the process died.
    pub fn kill(&self) -> Result<String, String> {
        let token = lock(&self.running)
            .take()
            .ok_or_else(|| format!("{} is already down", self.name))?;
        token.cancel();
        tracing::warn!("demo app server {} killed by an operator", self.name);
        Ok(format!("{} killed: its port is closed", self.name))
    }

    /// Listens on the same address again, serving on `runtime`.
    pub fn revive(
        self: &Arc<Self>,
        parent: &CancellationToken,
        tracker: &TaskTracker,
        runtime: &tokio::runtime::Handle,
    ) -> Result<String, String> {
        if self.is_running() {
            return Err(format!("{} is already running", self.name));
        }
        let _inside = runtime.enter();
        let listener = bind(&self.name, &self.addr.to_string()).map_err(|e| e.to_string())?;
        self.serve(listener, parent, tracker);
        Ok(format!("{} started again on {}", self.name, self.addr))
    }

    /// Changes the latency and the error rate (`None` keeps one as it is).
    pub fn set_behaviour(
        &self,
        latency_ms: Option<u64>,
        error_percent: Option<u8>,
    ) -> Result<String, String> {
        if let Some(ms) = latency_ms
            && ms > MAX_LATENCY_MS
        {
            return Err(format!("latency {ms} ms is more than {MAX_LATENCY_MS} ms"));
        }
        if let Some(pct) = error_percent
            && pct > 100
        {
            return Err(format!("error rate {pct}% is more than 100%"));
        }
        if let Some(ms) = latency_ms {
            self.latency_ms.store(ms, Ordering::Relaxed);
        }
        if let Some(pct) = error_percent {
            self.error_percent.store(pct, Ordering::Relaxed);
        }
        let (ms, pct) = (
            self.latency_ms.load(Ordering::Relaxed),
            self.error_percent.load(Ordering::Relaxed),
        );
        tracing::info!(
            "demo app server {} set by an operator: latency {ms} ms, error rate {pct}%",
            self.name
        );
        Ok(format!("latency {ms} ms, error rate {pct}%"))
    }

    pub fn snapshot(&self) -> AppServerSnapshot {
        AppServerSnapshot {
            name: self.name.clone(),
            address: self.addr.to_string(),
            running: self.is_running(),
            requests: self.requests.load(Ordering::Relaxed),
            latency_ms: self.latency_ms.load(Ordering::Relaxed),
            error_percent: self.error_percent.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    /// The status this request is failed with, if the error rate picks it.
    fn planned_error(&self) -> Option<u16> {
        let pct = self.error_percent.load(Ordering::Relaxed);
        if pct == 0 {
            return None;
        }
        let k = self.eligible.fetch_add(1, Ordering::Relaxed);
        if !picked(k, pct) {
            return None;
        }
        let e = self.errors.fetch_add(1, Ordering::Relaxed);
        Some(if e % 2 == 0 { 500 } else { 503 })
    }

    /// Serves requests on one connection until the client closes, asks to close, idles out
    /// or sends something that is not HTTP.
    async fn converse(&self, mut sock: TcpStream) {
        let _ = sock.set_nodelay(true);
        let mut buf = Vec::with_capacity(1024);
        loop {
            let head = match tokio::time::timeout(IDLE, read_head(&mut sock, &mut buf)).await {
                Ok(Ok(Some(head))) => head,
                Ok(Err(status)) => {
                    let _ = sock
                        .write_all(&response(
                            status,
                            "text/plain",
                            status_text(status),
                            &self.name,
                            false,
                        ))
                        .await;
                    return;
                }
                Ok(Ok(None)) | Err(_) => return,
            };
            let keep_alive = head.keep_alive;
            if !skip_body(&mut sock, &mut buf, head.content_length).await {
                return;
            }
            let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
            let (status, body) = if head.path == "/health" {
                (200, "ok\n".to_string())
            } else {
                // Only this connection waits: every connection is a task of its own.
                let latency = self.latency_ms.load(Ordering::Relaxed);
                if latency > 0 {
                    tokio::time::sleep(Duration::from_millis(latency)).await;
                }
                match self.planned_error() {
                    Some(status) => (
                        status,
                        format!(
                            "{} at {} failed {} {} on purpose (request {n})\n",
                            self.name, self.addr, head.method, head.path
                        ),
                    ),
                    None => (
                        200,
                        format!(
                            "{} at {} served {} {} (request {n})\n",
                            self.name, self.addr, head.method, head.path
                        ),
                    ),
                }
            };
            let reply = response(status, "text/plain", &body, &self.name, keep_alive);
            if sock.write_all(&reply).await.is_err() || !keep_alive {
                return;
            }
        }
    }
}

/// Binds without waiting (std sets SO_REUSEADDR, so a revive is not held up by TIME_WAIT).
fn bind(name: &str, addr: &str) -> io::Result<TcpListener> {
    let named = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("demo app server {name} cannot listen on {addr} ([demo] apps): {e}"),
        )
    };
    let listener = std::net::TcpListener::bind(addr).map_err(named)?;
    listener.set_nonblocking(true).map_err(named)?;
    TcpListener::from_std(listener).map_err(named)
}

/// What the responder needs from a request head.
#[derive(Debug, PartialEq)]
struct Head {
    method: String,
    path: String,
    content_length: usize,
    keep_alive: bool,
}

/// Reads until a whole head is buffered and parses it; what follows stays in `buf`.
/// `Ok(None)` is a clean close between requests; `Err` is the status to answer with.
async fn read_head(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<Head>, u16> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = parse_head(&buf[..end]);
            buf.drain(..end + 4);
            return head.map(Some);
        }
        if buf.len() > MAX_HEAD {
            return Err(431);
        }
        let mut chunk = [0u8; 4096];
        match sock.read(&mut chunk).await {
            // A close mid-head is a client gone, not a request to answer.
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn parse_head(raw: &[u8]) -> Result<Head, u16> {
    let text = std::str::from_utf8(raw).map_err(|_| 400u16)?;
    let mut lines = text.split("\r\n");
    let mut request = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(path), Some(version), None) = (
        request.next(),
        request.next(),
        request.next(),
        request.next(),
    ) else {
        return Err(400);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !path.starts_with('/') {
        return Err(400);
    }
    let mut head = Head {
        method: method.to_string(),
        path: path.to_string(),
        content_length: 0,
        keep_alive: version == "HTTP/1.1",
    };
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(400u16)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().map_err(|_| 400u16)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // A responder this small takes sized bodies only.
            return Err(501);
        } else if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                head.keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                head.keep_alive = true;
            }
        }
    }
    Ok(head)
}

/// Reads and drops a request body of `len` bytes (part of it may be buffered already).
async fn skip_body(sock: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> bool {
    let buffered = len.min(buf.len());
    buf.drain(..buffered);
    let mut left = len - buffered;
    let mut chunk = [0u8; 8192];
    while left > 0 {
        match sock.read(&mut chunk[..left.min(8192)]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => left -= n,
        }
    }
    true
}

/// Whether the `k`th request (from 0) is one of the `pct` in a hundred to fail: spread
/// evenly, exactly `pct` of every hundred, so a rate shows at once and tests can count on it.
fn picked(k: u64, pct: u8) -> bool {
    let pct = u64::from(pct.min(100));
    (k + 1) * pct / 100 > k * pct / 100
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn response(status: u16, content_type: &str, body: &str, name: &str, keep_alive: bool) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nX-Served-By: {name}\r\nConnection: {connection}\r\n\r\n{body}",
        status_text(status),
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_and_bad_ones_get_a_status() {
        let h = parse_head(b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3").expect("parses");
        assert_eq!(
            h,
            Head {
                method: "GET".into(),
                path: "/x".into(),
                content_length: 3,
                keep_alive: true
            }
        );
        let h = parse_head(b"GET / HTTP/1.0").expect("parses");
        assert!(!h.keep_alive, "HTTP/1.0 closes unless asked");
        let h = parse_head(b"GET / HTTP/1.1\r\nConnection: close").expect("parses");
        assert!(!h.keep_alive);
        assert_eq!(parse_head(b"GET /"), Err(400));
        assert_eq!(parse_head(b"GET / SPDY/3"), Err(400));
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nno colon"), Err(400));
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nContent-Length: x"), Err(400));
        assert_eq!(
            parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked"),
            Err(501)
        );
    }

    #[test]
    fn the_error_rate_picks_exactly_that_share_spread_evenly() {
        for pct in [0u8, 5, 25, 50, 100] {
            let hits: Vec<u64> = (0..200).filter(|&k| picked(k, pct)).collect();
            assert_eq!(hits.len(), 2 * usize::from(pct), "{pct}%");
        }
        let quarter: Vec<u64> = (0..8).filter(|&k| picked(k, 25)).collect();
        assert_eq!(quarter, [3, 7], "every fourth, not the first 25 in a row");
        assert!((0..10).all(|k| picked(k, 100)));
    }
}
