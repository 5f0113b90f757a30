//! The key tester's network half: one request to a memcached server over TCP, and the
//! replication check (set on one node, poll the peer until it returns the value).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connecting and each reply have this long.
const TIMEOUT: Duration = Duration::from_secs(3);
/// The replication check gives up after this long.
const CHECK_LIMIT: Duration = Duration::from_secs(5);
/// Largest reply read (a multi-get of big values is cut off here).
const MAX_REPLY: usize = 4 << 20;
/// The meta no-op: every memcached since 1.6 answers `MN`, after everything sent before it,
/// so its answer marks the end of the reply however many lines that was.
const END_MARK: &[u8] = b"mn\r\n";
const END_REPLY: &[u8] = b"MN\r\n";

/// Sends `request` to `addr` and returns the reply and how long it took.
pub async fn request(addr: &str, request: &[u8]) -> Result<(String, u64), String> {
    let mut sock = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting timed out after {} s", TIMEOUT.as_secs()))?
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = sock.set_nodelay(true);
    let connected = Instant::now();
    let reply = tokio::time::timeout(TIMEOUT, exchange(&mut sock, request))
        .await
        .map_err(|_| format!("no complete reply within {} s", TIMEOUT.as_secs()))??;
    // The latency shown is the request's, without the connection set-up.
    let micros = connected.elapsed().as_micros() as u64;
    Ok((reply, micros))
}

async fn exchange(sock: &mut TcpStream, request: &[u8]) -> Result<String, String> {
    let mut out = Vec::with_capacity(request.len() + END_MARK.len());
    out.extend_from_slice(request);
    out.extend_from_slice(END_MARK);
    sock.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = sock.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            // The server closed: show what it said before it did.
            return Ok(format!(
                "{}(connection closed by the server)",
                String::from_utf8_lossy(&reply)
            ));
        }
        reply.extend_from_slice(&chunk[..n]);
        let body = reply.len().saturating_sub(END_REPLY.len());
        if reply.ends_with(END_REPLY) && (body == 0 || reply[..body].ends_with(b"\n")) {
            reply.truncate(body);
            return Ok(String::from_utf8_lossy(&reply).into_owned());
        }
        if reply.len() > MAX_REPLY {
            return Ok(format!(
                "{}… (cut off at {} bytes)",
                String::from_utf8_lossy(&reply[..1024]),
                MAX_REPLY
            ));
        }
    }
}

/// Polls `get key` through `get` until the reply carries `value`, or the limit passes.
/// Returns how long after `since` the value appeared.
pub async fn wait_for_value<F, Fut>(get: F, value: &str, since: Instant) -> Result<u64, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let mut last = String::new();
    while since.elapsed() < CHECK_LIMIT {
        match get().await {
            Ok(reply) if reply.contains(value) => return Ok(since.elapsed().as_micros() as u64),
            Ok(reply) => last = reply.lines().next().unwrap_or_default().to_string(),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(format!(
        "still not there after {} s (last reply: {})",
        CHECK_LIMIT.as_secs(),
        if last.is_empty() { "none" } else { &last }
    ))
}
