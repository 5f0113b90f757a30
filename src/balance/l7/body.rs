//! The bodies the proxy streams. Nothing is buffered whole: each frame passes through as it
//! arrives, counted on the server it goes to or comes from. A response body also knows what
//! to release when it ends: the upstream connection goes back to the worker's idle pool, the
//! server's active-request count drops, and the client connection becomes idle. A request
//! body the client stops sending for `client_body_timeout` ends with `BodyTimeout`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::access_log::{AccessLog, Entry};
use super::client::Busy;
use super::idle::{self, Sender};
use crate::balance::backend::{Backend, ConnGuard};
use crate::sync::Local;

/// What goes to a server: the client's body, counted, or nothing.
pub type RequestBody = Either<Counted, Empty<Bytes>>;
/// What goes to a client: a server's response, or one of the proxy's own.
pub type ResponseBody = Either<UpstreamBody, Full<Bytes>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client sent no more of its request body for this long.
#[derive(Debug)]
pub struct BodyTimeout(pub Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no more of the request body within {:?}", self.0)
    }
}

impl std::error::Error for BodyTimeout {}

/// How far a request body has come, for the response timeout: the server is not to be
/// timed while the proxy still waits on the client for the body.
pub struct Upload {
    base: Instant,
    /// The last poll found nothing from the client yet.
    waiting_on_client: AtomicBool,
    /// When the whole body had been read from the client (µs after `base`; `NOT_YET`).
    done_us: AtomicU64,
}

const NOT_YET: u64 = u64::MAX;

/// Where a body stands when the response timeout runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadState {
    /// Waiting for the client to send more.
    FromClient,
    /// Waiting for the server to take more: the server's time.
    ToServer,
    /// All of it read from the client at this instant.
    Done(Instant),
}

impl Upload {
    fn new() -> Upload {
        Upload {
            base: Instant::now(),
            waiting_on_client: AtomicBool::new(false),
            done_us: AtomicU64::new(NOT_YET),
        }
    }

    fn finish(&self) {
        if self.done_us.load(Relaxed) == NOT_YET {
            let us = u64::try_from(self.base.elapsed().as_micros()).unwrap_or(NOT_YET - 1);
            self.done_us.store(us, Relaxed);
        }
    }

    pub fn state(&self) -> UploadState {
        match self.done_us.load(Relaxed) {
            NOT_YET if self.waiting_on_client.load(Relaxed) => UploadState::FromClient,
            NOT_YET => UploadState::ToServer,
            us => UploadState::Done(self.base + Duration::from_micros(us)),
        }
    }
}

/// A client's request body on its way to `server`.
pub struct Counted {
    inner: Incoming,
    server: Arc<Backend>,
    timeout: Duration,
    /// Runs while the proxy waits on the client for more (kept to be reset, not remade).
    stall: Option<Pin<Box<Sleep>>>,
    armed: bool,
    upload: Arc<Upload>,
}

impl Counted {
    /// `timeout`: how long the client may leave the proxy waiting for more of the body.
    pub fn new(inner: Incoming, server: Arc<Backend>, timeout: Duration) -> Counted {
        let upload = Arc::new(Upload::new());
        if inner.is_end_stream() {
            upload.finish();
        }
        Counted {
            inner,
            server,
            timeout,
            stall: None,
            armed: false,
            upload,
        }
    }

    pub fn upload(&self) -> Arc<Upload> {
        self.upload.clone()
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.server.bytes_in.fetch_add(data.len() as u64, Relaxed);
                }
                this.armed = false;
                this.upload.waiting_on_client.store(false, Relaxed);
                if this.inner.is_end_stream() {
                    this.upload.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.upload.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => {
                this.upload.waiting_on_client.store(true, Relaxed);
                let deadline = Instant::now() + this.timeout;
                let stall = match &mut this.stall {
                    Some(s) => {
                        if !this.armed {
                            s.as_mut().reset(deadline);
                        }
                        s
                    }
                    None => this
                        .stall
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                this.armed = true;
                if stall.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Released when a response has been carried whole (or abandoned).
pub struct Finish {
    /// The server's active request.
    pub guard: ConnGuard,
    /// The connection it came on, reusable once the body is read to its end.
    pub sender: Option<Sender>,
    pub busy: Busy,
}

/// A server's response body on its way to the client.
pub struct UpstreamBody {
    inner: Incoming,
    finish: Option<Finish>,
    /// The request's access log line, written when the body ends.
    log: Option<(Local<Option<AccessLog>>, Box<Entry>)>,
}

impl UpstreamBody {
    pub fn new(inner: Incoming, finish: Finish) -> UpstreamBody {
        let mut body = UpstreamBody {
            inner,
            finish: Some(finish),
            log: None,
        };
        if body.inner.is_end_stream() {
            // HEAD, 204, 304, Content-Length: 0: the server is done already.
            body.complete();
        }
        body
    }

    /// Writes `entry` to `log` once the body has been carried (at once if it already has).
    pub fn log_at_end(&mut self, log: Local<Option<AccessLog>>, entry: Box<Entry>) {
        self.log = Some((log, entry));
        if self.finish.is_none() {
            self.write_log(false);
        }
    }

    fn write_log(&mut self, cut_short: bool) {
        if let Some((log, mut entry)) = self.log.take()
            && let Some(log) = Option::as_ref(&log)
        {
            entry.cut_short = cut_short;
            log.write(&entry);
        }
    }

    /// The whole body went through: the connection can carry the next request.
    fn complete(&mut self) {
        self.write_log(false);
        if let Some(f) = self.finish.take()
            && let Some(sender) = f.sender
        {
            idle::give_back(f.guard.backend().addr, sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(f)) = (frame.data_ref(), &self.finish) {
                    let n = data.len() as u64;
                    f.guard.backend().bytes_out.fetch_add(n, Relaxed);
                    if let Some((_, entry)) = self.log.as_mut() {
                        entry.bytes += n;
                    }
                }
                if self.inner.is_end_stream() {
                    self.complete();
                }
            }
            Poll::Ready(None) => self.complete(),
            // A broken body: the connection is dropped with `finish`, not reused.
            Poll::Ready(Some(Err(_))) => {
                if let Some(f) = self.finish.take() {
                    f.guard.backend().http.response_errors.fetch_add(1, Relaxed);
                }
                self.write_log(true);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    /// A body dropped before its end (the client went away): its line still gets written.
    fn drop(&mut self) {
        self.write_log(true);
    }
}

/// One of the proxy's own responses (errors, 404).
pub fn local(text: &'static str) -> ResponseBody {
    Either::Right(Full::new(Bytes::from_static(text.as_bytes())))
}
