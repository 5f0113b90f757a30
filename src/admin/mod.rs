//! The admin API: the node's `Snapshot` and `Command`s over HTTP/1.1, for `opsconsole ctl`,
//! remote consoles, scripts and monitoring. Every route but `/healthz` asks for the bearer
//! token when one is configured; every command is logged with who sent it. `client` speaks
//! it from the other side, and `remote` makes a node reached that way a `Control`.
//!
//! - `GET /healthz`: the process is alive.
//! - `GET /readyz`: 200 when the node should get traffic, else 503 with the reasons.
//! - `GET /api/v1/snapshot`: the `Snapshot` as JSON.
//! - `POST /api/v1/commands`: a JSON `Command`; `{"output": ...}` or `{"error": ...}`.
//! - `GET /metrics`: Prometheus's text format.

pub mod client;
pub mod metrics;
pub mod readiness;
pub mod remote;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::{Command, Control};

/// A command body larger than this is refused (a command is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;
/// A client must send its request head within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the API serves from.
pub type Node = Arc<dyn Control + Send + Sync>;

struct Api {
    node: Node,
    token: Option<String>,
}

/// Serves the API on `listener` until `cancel`.
pub fn serve(
    listener: TcpListener,
    node: Node,
    token: Option<String>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let api = Arc::new(Api { node, token });
    let conns = tracker.clone();
    tracker.spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("admin API: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let api = api.clone();
            let cancel = cancel.clone();
            conns.spawn(async move {
                let service = service_fn(move |req| {
                    let api = api.clone();
                    async move { Ok::<_, Infallible>(api.handle(req, peer).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = cancel.cancelled() => conn.as_mut().graceful_shutdown(),
                }
            });
        }
    });
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": message }).to_string();
    json(status, body)
}

/// Compares without stopping at the first difference, so the time taken says nothing about
/// how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Api {
    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        same(given.as_bytes(), token.as_bytes())
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        if path == "/healthz" {
            return text(StatusCode::OK, "ok\n".into());
        }
        if !self.authorized(&req) {
            tracing::warn!(
                "admin API: {peer} sent no valid token for {} {path}",
                req.method()
            );
            let mut r = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"opsconsole\""),
            );
            return r;
        }
        let allowed = match path.as_str() {
            "/readyz" | "/api/v1/snapshot" | "/metrics" => Method::GET,
            "/api/v1/commands" => Method::POST,
            _ => return error(StatusCode::NOT_FOUND, "no such endpoint"),
        };
        if req.method() != allowed {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here");
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static(if allowed == Method::GET {
                    "GET"
                } else {
                    "POST"
                }),
            );
            return r;
        }
        match path.as_str() {
            "/readyz" => self.readyz().await,
            "/api/v1/snapshot" => self.snapshot().await,
            "/metrics" => self.metrics().await,
            _ => self.command(req, peer).await,
        }
    }

    /// The node's work may block briefly (locks, a cache request); it runs off the I/O
    /// threads.
    async fn on_node<T: Send + 'static>(
        &self,
        work: impl FnOnce(&dyn Control) -> T + Send + 'static,
    ) -> Option<T> {
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || work(node.as_ref()))
            .await
            .ok()
    }

    async fn snapshot(&self) -> Response<Full<Bytes>> {
        let body = self.on_node(|n| serde_json::to_string(&n.snapshot())).await;
        match body {
            Some(Ok(body)) => json(StatusCode::OK, body),
            Some(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            None => error(StatusCode::INTERNAL_SERVER_ERROR, "the snapshot failed"),
        }
    }

    async fn metrics(&self) -> Response<Full<Bytes>> {
        match self.on_node(|n| metrics::render(&n.snapshot())).await {
            Some(body) => {
                let mut r = text(StatusCode::OK, body);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            None => error(StatusCode::INTERNAL_SERVER_ERROR, "the snapshot failed"),
        }
    }

    async fn readyz(&self) -> Response<Full<Bytes>> {
        let why = self
            .on_node(|n| readiness::not_ready(&n.snapshot()))
            .await
            .unwrap_or_else(|| vec!["the snapshot failed".into()]);
        if why.is_empty() {
            text(StatusCode::OK, "ready\n".into())
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", why.join("; ")),
            )
        }
    }

    async fn command(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the command body could not be read: {e} (at most {MAX_BODY} bytes)"),
                );
            }
        };
        let command: Command = match serde_json::from_slice(&body) {
            Ok(c) => c,
            Err(e) => {
                return error(StatusCode::BAD_REQUEST, &format!("not a command: {e}"));
            }
        };
        let what = format!("{command:?}");
        let outcome = self.on_node(move |n| n.act(command)).await;
        match outcome {
            Some(Ok(reply)) => {
                tracing::info!("admin API: {peer} ran {what}: {}", reply.output);
                let body = serde_json::json!({ "output": reply.output }).to_string();
                json(StatusCode::OK, body)
            }
            Some(Err(e)) => {
                tracing::warn!("admin API: {peer} ran {what}: refused: {e}");
                error(StatusCode::UNPROCESSABLE_ENTITY, &e)
            }
            None => error(StatusCode::INTERNAL_SERVER_ERROR, "the command failed"),
        }
    }
}
