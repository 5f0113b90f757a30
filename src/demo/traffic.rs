//! The demo's gentle traffic generator: a steady trickle of memcached sets and gets spread
//! over the cache nodes (and the L4 service in front of them) through real TCP connections,
//! and HTTP requests through the L4 web service, one connection each, alternating between
//! page and API paths so an L7 balancer behind it routes them to different pools. The
//! console has something to show, and a failover or a dead backend is visible as errors
//! that stop once the survivor takes over.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::cache::Engine;
use crate::cache::engine::unix_now;
use crate::cache::exec::run_text;
use crate::config::DemoConfig;
use crate::control::TrafficSnapshot;

/// A request that takes longer than this counts as an error and drops the connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// The same for HTTP, where an app server may be made slow on purpose (up to a second).
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP requests waiting for their reply at most; beyond it a tick counts as an error
/// rather than pile up connections on a chain that stalled.
const HTTP_IN_FLIGHT: usize = 64;
/// A node that failed is left alone this long before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Longest reply accepted; the generator's own values are far smaller.
const MAX_REPLY: usize = 1 << 21;

pub struct Traffic {
    config: DemoConfig,
    /// Where cache requests go, in turn.
    targets: Vec<SocketAddr>,
    /// Where HTTP requests go.
    http_target: Option<SocketAddr>,
    paused: AtomicBool,
    requests: AtomicU64,
    errors: AtomicU64,
    http_requests: AtomicU64,
    http_errors: AtomicU64,
}

impl Traffic {
    pub fn new(
        config: DemoConfig,
        targets: Vec<SocketAddr>,
        http_target: Option<SocketAddr>,
    ) -> Traffic {
        Traffic {
            config,
            targets,
            http_target,
            paused: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            http_requests: AtomicU64::new(0),
            http_errors: AtomicU64::new(0),
        }
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> TrafficSnapshot {
        TrafficSnapshot {
            paused: self.paused.load(Ordering::Relaxed),
            rate_per_sec: self.config.requests_per_sec,
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            http_rate_per_sec: self
                .http_target
                .map_or(0, |_| self.config.http_requests_per_sec),
            http_requests: self.http_requests.load(Ordering::Relaxed),
            http_errors: self.http_errors.load(Ordering::Relaxed),
        }
    }

    pub async fn run(self: std::sync::Arc<Self>, cancel: CancellationToken) {
        tokio::join!(
            self.clone().run_cache(cancel.clone()),
            self.run_http(cancel)
        );
    }

    /// HTTP GETs at `http_requests_per_sec`, each on a connection of its own: a balancer
    /// sees new connections per second, as it would from browsers. Requests overlap, as
    /// browsers' do, so one slow server does not hold up the rest: it holds more requests
    /// in flight, which is what `leastconn` balancing sees.
    async fn run_http(self: std::sync::Arc<Self>, cancel: CancellationToken) {
        let (Some(target), rate) = (self.http_target, self.config.http_requests_per_sec) else {
            return;
        };
        if rate == 0 {
            return;
        }
        let mut ticker = pacer(rate);
        let mut n = 0u64;
        // Dropped when this returns (cancelled): requests still in flight end with it.
        let mut in_flight = JoinSet::new();
        while self.next_turn(&mut ticker, &cancel).await {
            while in_flight.try_join_next().is_some() {}
            n += 1;
            self.http_requests.fetch_add(1, Ordering::Relaxed);
            if in_flight.len() >= HTTP_IN_FLIGHT {
                self.http_errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let me = self.clone();
            in_flight.spawn(async move {
                let outcome = tokio::time::timeout(HTTP_TIMEOUT, http_get(target, n)).await;
                if !matches!(outcome, Ok(Ok(()))) {
                    me.http_errors.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }

    /// Waits for the next tick the generator is not paused at; false once cancelled.
    async fn next_turn(&self, ticker: &mut Interval, cancel: &CancellationToken) -> bool {
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = cancel.cancelled() => return false,
            }
            if !self.paused.load(Ordering::Relaxed) {
                return true;
            }
        }
    }

    async fn run_cache(self: std::sync::Arc<Self>, cancel: CancellationToken) {
        if self.config.requests_per_sec == 0 || self.targets.is_empty() {
            return;
        }
        let mut ticker = pacer(self.config.requests_per_sec);
        let mut conns: Vec<Option<TcpStream>> = self.targets.iter().map(|_| None).collect();
        let mut resting_until: Vec<Option<Instant>> = vec![None; self.targets.len()];
        let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
        let mut n = 0u64;
        while self.next_turn(&mut ticker, &cancel).await {
            n += 1;
            let i = (n % self.targets.len() as u64) as usize;
            if resting_until[i].is_some_and(|t| Instant::now() < t) {
                continue;
            }
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let key = rng % u64::from(self.config.keys);
            let request = if n % 4 == 0 {
                let value = format!("{n:0>width$}", width = self.config.value_size.max(1));
                format!("set demo:{key} 0 0 {}\r\n{value}\r\n", value.len())
            } else {
                format!("get demo:{key}\r\n")
            };
            self.requests.fetch_add(1, Ordering::Relaxed);
            let outcome = tokio::select! {
                r = tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut conns[i], self.targets[i], &request)) => r,
                _ = cancel.cancelled() => return,
            };
            match outcome {
                Ok(Ok(())) => resting_until[i] = None,
                Ok(Err(_)) | Err(_) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    conns[i] = None;
                    resting_until[i] = Some(Instant::now() + RETRY_AFTER);
                }
            }
        }
    }
}

/// Writes `preload_keys` items into `engine` through the same executor clients use, so
/// they are versioned and replicated like any other write.
pub fn preload(engine: &Engine, config: &DemoConfig) {
    const BATCH: u32 = 1000;
    let value = "p".repeat(config.value_size.max(1));
    let mut batch = String::new();
    let mut i = 0;
    while i < config.preload_keys {
        batch.clear();
        for n in i..(i + BATCH).min(config.preload_keys) {
            batch.push_str(&format!(
                "set demo:preload:{n} 0 0 {} noreply\r\n{value}\r\n",
                value.len()
            ));
        }
        run_text(engine, unix_now(), batch.as_bytes());
        i += BATCH;
    }
}

/// Ticks `rate` times a second; ticks missed while a request was slow are skipped, not
/// made up in a burst.
fn pacer(rate: u32) -> Interval {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    ticker
}

/// The path of the `n`th request: pages and API calls in turn.
fn http_path(n: u64) -> String {
    if n % 2 == 0 {
        format!("/api/items/{n}")
    } else {
        format!("/demo/{n}")
    }
}

/// One `GET` on a new connection; anything but a whole `200` reply is an error.
async fn http_get(target: SocketAddr, n: u64) -> io::Result<()> {
    let mut sock = TcpStream::connect(target).await?;
    sock.set_nodelay(true)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n",
        http_path(n)
    );
    sock.write_all(request.as_bytes()).await?;
    let mut reply = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let got = sock.read(&mut chunk).await?;
        if got == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..got]);
        if reply.len() > MAX_REPLY {
            return Err(io::Error::other("reply too long"));
        }
    }
    if reply.starts_with(b"HTTP/1.1 200 ") || reply.starts_with(b"HTTP/1.0 200 ") {
        Ok(())
    } else {
        Err(io::Error::other("not a 200 reply"))
    }
}

/// Sends one request on the node's connection (opening it if needed) and reads the whole
/// reply. A server error reply counts as a failure.
async fn exchange(conn: &mut Option<TcpStream>, addr: SocketAddr, request: &str) -> io::Result<()> {
    if conn.is_none() {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        *conn = Some(s);
    }
    let Some(sock) = conn.as_mut() else {
        return Err(io::ErrorKind::NotConnected.into());
    };
    sock.write_all(request.as_bytes()).await?;
    let is_get = request.starts_with("get ");
    let mut reply = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        reply.extend_from_slice(&chunk[..n]);
        if reply.len() > MAX_REPLY {
            return Err(io::Error::other("reply too long"));
        }
        if !reply.ends_with(b"\r\n") {
            continue;
        }
        if reply.starts_with(b"SERVER_ERROR")
            || reply.starts_with(b"CLIENT_ERROR")
            || reply.starts_with(b"ERROR")
        {
            return Err(io::Error::other(
                String::from_utf8_lossy(&reply).into_owned(),
            ));
        }
        if !is_get || reply.ends_with(b"END\r\n") {
            return Ok(());
        }
    }
}
