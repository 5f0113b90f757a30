//! HTTP servers and a raw HTTP/1.1 client for the L7 balancer tests. Each server is a real
//! hyper server on its own thread and loopback port; it says who it is, records what it was
//! sent, and can echo bodies, send large ones, fail on demand, accept a WebSocket-style
//! upgrade and echo over it, or be killed (its port then refuses connects). The client writes
//! exactly the bytes a test gives it and parses replies itself, so tests see what a client
//! on the wire sees.

#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use super::DEADLINE;

/// What a server was sent.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    requests: AtomicUsize,
    /// Answer every request with this status (0: behave).
    fail_with: AtomicU16,
    /// Wait this long before answering.
    delay_ms: AtomicU64,
    seen: Mutex<Vec<Seen>>,
}

pub struct HttpServer {
    pub name: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Byte `i` of a `/bytes/N` body: a pattern that shows any loss, duplication or reordering.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 31 + 7) % 251) as u8).collect()
}

impl HttpServer {
    pub fn start(name: &str) -> HttpServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind http server");
        HttpServer::serve(name, listener)
    }

    /// Serves again on the address it was killed on.
    pub fn restart(&mut self) {
        let listener = std::net::TcpListener::bind(self.addr).expect("rebind http server");
        let fresh = HttpServer::serve(&self.name, listener);
        *self = fresh;
    }

    fn serve(name: &str, listener: std::net::TcpListener) -> HttpServer {
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::new(Shared::default());
        let stop = CancellationToken::new();
        let thread = {
            let (name, shared, stop) = (name.to_string(), shared.clone(), stop.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(accept(name, listener, shared, stop));
            })
        };
        HttpServer {
            name: name.to_string(),
            addr,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the port and every open connection.
    pub fn kill(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub fn fail_with(&self, status: u16) {
        self.shared.fail_with.store(status, Ordering::SeqCst);
    }

    pub fn delay(&self, d: Duration) {
        self.shared
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("seen").clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn accept(
    name: String,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(_) => continue,
            },
        };
        let (name, shared, stop) = (name.clone(), shared.clone(), stop.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (name, shared) = (name.clone(), shared.clone());
                async move { Ok::<_, Infallible>(answer(&name, &shared, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}

type Body = Either<Incoming, Full<Bytes>>;

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    r
}

async fn answer(name: &str, shared: &Shared, mut req: Request<Incoming>) -> Response<Body> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    shared.seen.lock().expect("seen").push(Seen {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map_or(path.clone(), |p| p.to_string()),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect(),
    });
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let fail = shared.fail_with.load(Ordering::SeqCst);
    if fail != 0 {
        let status = StatusCode::from_u16(fail).expect("status");
        return text(status, format!("{name} fails with {fail}"));
    }
    if path == "/echo" {
        return Response::new(Either::Left(req.into_body()));
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().expect("a size");
        let mut r = Response::new(Either::Right(Full::new(Bytes::from(pattern(n)))));
        *r.status_mut() = StatusCode::OK;
        return r;
    }
    if path == "/ws" {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = upgrade.await {
                let mut io = TokioIo::new(up);
                let (mut r, mut w) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut r = Response::new(Either::Right(Full::new(Bytes::new())));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert(hyper::header::UPGRADE, "websocket".parse().expect("value"));
        r.headers_mut()
            .insert(hyper::header::CONNECTION, "upgrade".parse().expect("value"));
        return r;
    }
    if path == "/drain-body" {
        let n = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().len())
            .unwrap_or(0);
        return text(StatusCode::OK, format!("{name} read {n}"));
    }
    text(StatusCode::OK, name.to_string())
}

/// A parsed reply.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that may carry several requests (keep-alive).
pub struct HttpConn {
    pub reader: BufReader<TcpStream>,
}

impl HttpConn {
    pub fn open(addr: SocketAddr) -> io::Result<HttpConn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(DEADLINE))?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            reader: BufReader::new(stream),
        })
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    /// Sends `GET path` with `Host: host` and `extra` header lines, and reads the reply.
    pub fn get(&mut self, host: &str, path: &str, extra: &[&str]) -> io::Result<Reply> {
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
        for line in extra {
            head.push_str(line);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        self.stream().write_all(head.as_bytes())?;
        self.reply(false)
    }

    /// Sends a request with a body (Content-Length framing).
    pub fn send_body(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        body: &[u8],
    ) -> io::Result<Reply> {
        self.send_with(method, host, path, &[], body)
    }

    /// Sends a request with `extra` header lines and a body (Content-Length framing).
    pub fn send_with(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        extra: &[&str],
        body: &[u8],
    ) -> io::Result<Reply> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n",
            body.len()
        );
        for line in extra {
            head.push_str(line);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        self.stream().write_all(head.as_bytes())?;
        self.stream().write_all(body)?;
        self.reply(false)
    }

    /// Reads one reply; `head_only` for a HEAD request.
    pub fn reply(&mut self, head_only: bool) -> io::Result<Reply> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a reply",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("not a status line: {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only || status < 200 || status == 204 || status == 304 {
            return Ok(reply);
        }
        if let Some(n) = reply.header("content-length") {
            let n: usize = n.parse().map_err(io::Error::other)?;
            let mut body = vec![0u8; n];
            self.reader.read_exact(&mut body)?;
            reply.body = body;
        } else if reply
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(io::Error::other)?;
                if n == 0 {
                    let mut end = String::new();
                    self.reader.read_line(&mut end)?;
                    break;
                }
                let at = reply.body.len();
                reply.body.resize(at + n, 0);
                self.reader.read_exact(&mut reply.body[at..])?;
                let mut crlf = [0u8; 2];
                self.reader.read_exact(&mut crlf)?;
            }
        } else {
            self.reader.read_to_end(&mut reply.body)?;
        }
        Ok(reply)
    }
}

/// One `GET` on a new connection.
pub fn get(addr: SocketAddr, host: &str, path: &str, extra: &[&str]) -> io::Result<Reply> {
    HttpConn::open(addr)?.get(host, path, extra)
}
