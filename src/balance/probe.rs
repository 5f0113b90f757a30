//! The health checks themselves: one probe of one server, with a verdict and an
//! HAProxy-style status (`L4OK`, `L4CON connection refused`, `L7STS 503`, `L7TOUT`, ...).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::backend::CheckReport;
use crate::config::balance::{CheckConfig, CheckKind, parse_status_ranges};

/// A check, ready to run: the config with its parts parsed.
#[derive(Debug, Clone)]
pub struct Probe {
    pub kind: CheckKind,
    pub timeout: Duration,
    pub port: Option<u16>,
    method: String,
    path: String,
    host: Option<String>,
    expect: Vec<(u16, u16)>,
}

/// Longest reply head a probe reads.
const MAX_REPLY: usize = 4096;

impl Probe {
    pub fn new(c: &CheckConfig) -> Probe {
        Probe {
            kind: c.kind,
            timeout: Duration::from_millis(c.timeout_ms),
            port: c.port,
            method: c.method.clone(),
            path: c.path.clone(),
            host: c.host.clone(),
            // Validated at config load; the default range is the fallback.
            expect: parse_status_ranges(&c.expect_status).unwrap_or_else(|_| vec![(200, 399)]),
        }
    }

    /// Probes the server at `addr`; `ok` says whether it passed.
    pub async fn run(&self, addr: SocketAddr) -> (bool, CheckReport) {
        let target = match self.port {
            Some(p) => SocketAddr::new(addr.ip(), p),
            None => addr,
        };
        let started = Instant::now();
        let (ok, status) = match tokio::time::timeout(self.timeout, self.attempt(target)).await {
            Ok(result) => result,
            Err(_) => (false, timeout_status(self.kind).to_string()),
        };
        let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        (
            ok,
            CheckReport {
                status,
                duration_us,
            },
        )
    }

    async fn attempt(&self, target: SocketAddr) -> (bool, String) {
        let mut stream = match TcpStream::connect(target).await {
            Ok(s) => s,
            Err(e) => return (false, format!("L4CON {}", short_error(&e))),
        };
        match self.kind {
            CheckKind::Tcp => (true, "L4OK".into()),
            CheckKind::Http => self.http(&mut stream, target).await,
            CheckKind::Memcached => memcached(&mut stream).await,
            CheckKind::Mysql => mysql(&mut stream).await,
        }
    }

    async fn http(&self, stream: &mut TcpStream, target: SocketAddr) -> (bool, String) {
        let host = self.host.clone().unwrap_or_else(|| target.to_string());
        let request = format!(
            "{} {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: opsconsole-check\r\nConnection: close\r\n\r\n",
            self.method, self.path
        );
        if let Err(e) = stream.write_all(request.as_bytes()).await {
            return (false, format!("L7RSP {}", short_error(&e)));
        }
        let head = match read_line(stream).await {
            Ok(h) => h,
            Err(e) => return (false, format!("L7RSP {e}")),
        };
        let code = head
            .strip_prefix("HTTP/1.")
            .and_then(|r| r.get(2..5))
            .and_then(|c| c.parse::<u16>().ok());
        match code {
            Some(c) if self.expect.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) => {
                (true, format!("L7OK {c}"))
            }
            Some(c) => (false, format!("L7STS {c}")),
            None => (false, format!("L7RSP not HTTP: {}", printable(&head))),
        }
    }
}

fn timeout_status(kind: CheckKind) -> &'static str {
    match kind {
        CheckKind::Tcp => "L4TOUT",
        _ => "L7TOUT",
    }
}

/// `version` proves the process answers; a `get` proves it serves data. A replicated node
/// that is still receiving its marugoto copy answers `version` but refuses data commands
/// (`SERVER_ERROR replication: marugoto copy in progress, not serving yet`): counted as up,
/// an `fo` service would send every client to it for as long as the copy takes. A plain
/// memcached answers the `get` with END (or the value, should someone have stored the key).
async fn memcached(stream: &mut TcpStream) -> (bool, String) {
    if let Err(e) = stream.write_all(b"version\r\n").await {
        return (false, format!("L7RSP {}", short_error(&e)));
    }
    let version = match read_line(stream).await {
        Ok(line) if line.starts_with("VERSION ") => line,
        Ok(line) => return (false, format!("L7RSP {}", printable(&line))),
        Err(e) => return (false, format!("L7RSP {e}")),
    };
    // Sent only after the first reply, so each read holds exactly one reply line.
    if let Err(e) = stream.write_all(b"get opsconsole-check\r\n").await {
        return (false, format!("L7RSP {}", short_error(&e)));
    }
    match read_line(stream).await {
        Ok(line) if line == "END" || line.starts_with("VALUE ") => {
            (true, format!("L7OK {version}"))
        }
        Ok(line) => (false, format!("L7STS {}", printable(&line))),
        Err(e) => (false, format!("L7RSP {e}")),
    }
}

/// MySQL speaks first: a greeting (protocol 10) means it accepts clients; an error packet
/// (too many connections, host blocked) means it does not.
async fn mysql(stream: &mut TcpStream) -> (bool, String) {
    let mut header = [0u8; 4];
    if let Err(e) = stream.read_exact(&mut header).await {
        return (false, format!("L7RSP {}", short_error(&e)));
    }
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut body = vec![0u8; len.min(MAX_REPLY)];
    if let Err(e) = stream.read_exact(&mut body).await {
        return (false, format!("L7RSP {}", short_error(&e)));
    }
    match body.first() {
        Some(10) => {
            let version: String = body[1..]
                .iter()
                .take_while(|&&b| b != 0)
                .map(|&b| char::from(b))
                .collect();
            (true, format!("L7OK mysql {}", printable(&version)))
        }
        Some(0xff) => {
            let message = String::from_utf8_lossy(body.get(3..).unwrap_or(&[]));
            (false, format!("L7STS {}", printable(&message)))
        }
        _ => (false, "L7RSP not a MySQL greeting".into()),
    }
}

/// Reads one line (without its CRLF), at most `MAX_REPLY` bytes.
async fn read_line(stream: &mut TcpStream) -> Result<String, String> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            buf.truncate(end);
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() >= MAX_REPLY {
            return Err("reply line too long".into());
        }
        match stream.read(&mut chunk).await {
            Ok(0) if buf.is_empty() => return Err("closed without a reply".into()),
            Ok(0) => return Ok(String::from_utf8_lossy(&buf).into_owned()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(short_error(&e)),
        }
    }
}

fn short_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        std::io::ErrorKind::UnexpectedEof => "closed early".into(),
        _ => e.to_string(),
    }
}

/// At most 60 printable characters of what a server said, for a status line.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(60).collect()
}
