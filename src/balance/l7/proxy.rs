//! One request through the L7 balancer: check the limits, route by host and path, pick a
//! server (the persistence cookie first, else the pool's algorithm), send the request on a
//! kept-alive connection, and stream the response back. Failed tries go to other servers as
//! `retry` allows; the client gets 502/503/504 when none is left. A `Proxy` is one worker's
//! view of one listener: its own cursors over the pools, so a pick takes no lock.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use http_body_util::{Either, Empty};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::uri::Uri;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;

use super::access_log::{AccessLog, Entry};
use super::body::{
    BodyTimeout, Counted, Finish, RequestBody, ResponseBody, Upload, UploadState, UpstreamBody,
    local,
};
use super::client::Busy;
use super::idle::{self, Sender};
use super::listener::{Limits, Listener, Routing};
use super::retry::{self, Attempt, Failure};
use super::upstream::{Settings, Upstream};
use super::{cookie, headers, key, request_id};
use crate::balance::backend::{Backend, ConnGuard};
use crate::balance::http_stats::HttpCounters;
use crate::balance::pool::PoolCursor;
use crate::balance::queue::{NoSlot, Pick};
use crate::balance::select::Client;
use crate::replication::shared::now_ms;
use crate::sync::{Follower, Local};

pub struct Proxy {
    pub listener: Arc<Listener>,
    /// This worker's connections on the listener, for `max_conns`.
    pub conns: super::client::Conns,
    seed: u64,
    view: RefCell<View>,
}

/// The worker's copy of the listener's settings, routes and pools.
struct View {
    limits: Follower<Limits>,
    routing: Follower<Routing>,
    access_log: Follower<Option<AccessLog>>,
    /// Per pool of `routing.upstreams`, in the same order.
    pools: Vec<PoolView>,
}

struct PoolView {
    cursor: PoolCursor,
    settings: Follower<Settings>,
}

impl View {
    fn pools_for(routing: &Routing, seed: u64) -> Vec<PoolView> {
        routing
            .upstreams
            .iter()
            .map(|u| PoolView {
                cursor: PoolCursor::new(&u.pool, seed),
                settings: Follower::new(&u.settings),
            })
            .collect()
    }
}

/// The target as the request line carried it, for the URI length limit.
fn uri_len(uri: &Uri) -> usize {
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    let path = uri.path_and_query().map_or(1, |p| p.as_str().len());
    scheme + authority + path
}

/// The host the client asked for: the absolute URI's authority, else the Host header (a
/// share of the request's buffer, not a copy).
pub fn requested_host(uri: &Uri, headers: &HeaderMap) -> Option<HeaderValue> {
    if let Some(a) = uri.authority() {
        return HeaderValue::from_str(a.as_str()).ok();
    }
    let h = headers.get(header::HOST)?;
    (!h.is_empty() && h.to_str().is_ok()).then(|| h.clone())
}

/// A Host as text; `requested_host` only returns values that are.
pub fn host_str(host: &Option<HeaderValue>) -> Option<&str> {
    host.as_ref().and_then(|h| h.to_str().ok())
}

/// The client end of a connection, as every request on it is forwarded.
pub struct Peer {
    pub addr: SocketAddr,
    /// Its `X-Forwarded-For` value, made once for all the connection's requests.
    pub forwarded_for: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            forwarded_for: headers::forwarded_for(addr.ip()),
        }
    }
}

fn reply(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut r = Response::new(local(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn failure_reply(status: StatusCode) -> Response<ResponseBody> {
    match status {
        StatusCode::GATEWAY_TIMEOUT => reply(
            status,
            "504 Gateway Timeout: the server did not answer in time.\n",
        ),
        StatusCode::BAD_GATEWAY => reply(
            status,
            "502 Bad Gateway: the server's connection broke or its answer was invalid.\n",
        ),
        StatusCode::BAD_REQUEST => reply(
            status,
            "400 Bad Request: the request body broke off before its end.\n",
        ),
        StatusCode::REQUEST_TIMEOUT => {
            // The rest of the body is not coming: the connection cannot carry another
            // request, so say so rather than leave the client to find out.
            let mut r = reply(
                status,
                "408 Request Timeout: the request body stopped arriving.\n",
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
        _ => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Unavailable: no server is available to handle this request.\n",
        ),
    }
}

/// An access log entry with what the request says; the rest is filled in as it goes.
fn begin_entry(
    req: &Request<Incoming>,
    peer: SocketAddr,
    listener: &str,
    request_id: Option<&str>,
) -> Entry {
    let header = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    Entry {
        at: std::time::SystemTime::now(),
        started: Instant::now(),
        listener: listener.to_string(),
        client: peer.ip().to_canonical(),
        method: req.method().clone(),
        target: req.uri().to_string(),
        version: req.version(),
        host: host_str(&requested_host(req.uri(), req.headers())).map(str::to_string),
        referer: header(header::REFERER),
        user_agent: header(header::USER_AGENT),
        request_id: request_id.map(str::to_string),
        pool: None,
        server: None,
        status: 0,
        bytes: 0,
        upstream_us: None,
        cut_short: false,
    }
}

/// Everything one try needs that outlives it.
struct Outgoing {
    method: hyper::Method,
    uri: Uri,
    headers: HeaderMap,
    /// The client's body until a try takes it (a request with a body is sent once).
    body: Option<Incoming>,
    has_body: bool,
    /// How long the client may stall its body.
    body_timeout: std::time::Duration,
    /// The body's progress, once a try has taken it.
    upload: Option<Arc<Upload>>,
}

impl Outgoing {
    /// The request for one try; `keep` leaves a copy of the head for a later try.
    fn request(&mut self, server: &Arc<Backend>, keep: bool) -> Request<RequestBody> {
        let body: RequestBody = match self.body.take() {
            Some(b) if self.has_body => {
                let counted = Counted::new(b, server.clone(), self.body_timeout);
                self.upload = Some(counted.upload());
                Either::Left(counted)
            }
            _ => Either::Right(Empty::new()),
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = if keep {
            self.headers.clone()
        } else {
            std::mem::take(&mut self.headers)
        };
        req
    }
}

/// How one try ended.
enum Tried {
    Answered(Response<Incoming>, Sender, u64),
    Failed(Failure),
}

impl Proxy {
    pub fn new(listener: Arc<Listener>, seed: u64) -> Proxy {
        let limits = Follower::new(&listener.limits);
        let access_log = Follower::new(&listener.access_log);
        let mut routing = Follower::new(&listener.routing);
        let pools = View::pools_for(routing.latest(&listener.routing).0, seed);
        Proxy {
            view: RefCell::new(View {
                limits,
                routing,
                access_log,
                pools,
            }),
            listener,
            conns: Default::default(),
            seed,
        }
    }

    pub fn limits(&self) -> Local<Limits> {
        let mut v = self.view.borrow_mut();
        v.limits.latest(&self.listener.limits).0.clone()
    }

    fn rejected(&self, status: StatusCode, text: &'static str) -> Response<ResponseBody> {
        self.listener.rejected.fetch_add(1, Relaxed);
        reply(status, text)
    }

    /// A 400 after which the connection closes: the client sent something no correct
    /// client sends, so nothing more it sends on this connection is trusted either.
    fn rejected_closing(&self, text: &'static str) -> Response<ResponseBody> {
        let mut r = self.rejected(StatusCode::BAD_REQUEST, text);
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    }

    /// The listener's access log as this worker last saw it.
    fn access_log(&self) -> Local<Option<AccessLog>> {
        let mut v = self.view.borrow_mut();
        v.access_log.latest(&self.listener.access_log).0.clone()
    }

    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
        busy: Busy,
    ) -> Response<ResponseBody> {
        let limits = self.limits();
        let request_id = limits
            .request_id
            .as_ref()
            .map(|name| (name, request_id::ensure(req.headers_mut(), name)));
        let log = self.access_log();
        let mut entry = log.is_some().then(|| {
            let id = request_id.as_ref().and_then(|(_, v)| v.to_str().ok());
            Box::new(begin_entry(&req, peer.addr, &self.listener.name, id))
        });
        let mut response = self.respond(req, peer, busy, &limits, &mut entry).await;
        if let Some((name, id)) = request_id {
            response.headers_mut().insert(name.clone(), id);
        }
        if let Some(mut entry) = entry {
            entry.status = response.status().as_u16();
            match response.body_mut() {
                Either::Left(upstream) => upstream.log_at_end(log, entry),
                Either::Right(own) => {
                    entry.bytes = own.size_hint().exact().unwrap_or(0);
                    if let Some(l) = Option::as_ref(&log) {
                        l.write(&entry);
                    }
                }
            }
        }
        response
    }

    async fn respond(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
        busy: Busy,
        limits: &Limits,
        entry: &mut Option<Box<Entry>>,
    ) -> Response<ResponseBody> {
        if uri_len(req.uri()) > limits.max_uri_bytes {
            return self.rejected(StatusCode::URI_TOO_LONG, "414 URI Too Long\n");
        }
        // RFC 9112 §3.2: more than one Host, or one that is not a host, is a 400. Either
        // would otherwise reach routing, the access log and X-Forwarded-Host as whatever
        // bytes the client chose, and two could be read differently by the server behind.
        let mut hosts = req.headers().get_all(header::HOST).iter();
        let first = hosts.next();
        if hosts.next().is_some() {
            return self.rejected_closing("400 Bad Request: more than one Host header.\n");
        }
        if first.is_some_and(|h| !h.is_empty() && !headers::valid_host(h.as_bytes())) {
            return self.rejected_closing("400 Bad Request: the Host header is not a host.\n");
        }
        let host = requested_host(req.uri(), req.headers());
        if host.is_none() && req.version() == Version::HTTP_11 {
            return self.rejected(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: an HTTP/1.1 request needs a Host header.\n",
            );
        }
        // The routing and settings this request goes by, held for its whole life (a reload
        // meanwhile applies to the next request).
        let (routing, m, settings) = {
            let mut guard = self.view.borrow_mut();
            let view = &mut *guard;
            let (routing, changed) = view.routing.latest(&self.listener.routing);
            let routing = routing.clone();
            if changed {
                view.pools = View::pools_for(&routing, self.seed);
            }
            let Some(m) = routing.table.route(host_str(&host), req.uri().path()) else {
                self.listener.no_route.fetch_add(1, Relaxed);
                return reply(
                    StatusCode::NOT_FOUND,
                    "404 Not Found: no route for this host and path.\n",
                );
            };
            let settings = view.pools[m.pool]
                .settings
                .latest(&routing.upstreams[m.pool].settings)
                .0
                .clone();
            (routing, m, settings)
        };
        let (pool, upstream) = (m.pool, &*routing.upstreams[m.pool]);
        let route_http = &*routing.routes[m.route].http;
        route_http.requests.fetch_add(1, Relaxed);
        upstream.http.requests.fetch_add(1, Relaxed);
        if let Some(e) = entry.as_mut() {
            e.pool = Some(upstream.name.clone());
        }
        let response = self
            .forward(
                req,
                peer,
                host,
                (pool, upstream),
                route_http,
                &settings,
                limits.client_body_timeout,
                busy,
                entry,
            )
            .await;
        let status = response.status().as_u16();
        route_http.count_status(status);
        upstream.http.count_status(status);
        response
    }

    /// Picks the server for a try: the cookie's server while it takes persistent clients,
    /// else the pool's algorithm.
    fn pick(
        &self,
        pool: usize,
        upstream: &Upstream,
        client: &Client,
        sticky: Option<&str>,
        tried: &[Arc<Backend>],
    ) -> Option<Arc<Backend>> {
        let mut view = self.view.borrow_mut();
        let cursor = &mut view.pools.get_mut(pool)?.cursor;
        if let Some(name) = sticky
            && let Some(s) = cursor.find(&upstream.pool, name)
            && s.takes_persistent()
            && !tried.iter().any(|t| Arc::ptr_eq(t, &s))
        {
            return Some(s);
        }
        cursor.pick(&upstream.pool, client, tried, Instant::now)
    }

    /// A server for a try with its slot taken. When the pool limits its servers'
    /// connections and all are full, the request waits in the pool's queue.
    async fn take_slot(
        &self,
        pool: usize,
        upstream: &Upstream,
        client: &Client,
        sticky: Option<&str>,
        tried: &[Arc<Backend>],
        settings: &Settings,
    ) -> Result<ConnGuard, NoSlot> {
        if !settings.limited {
            let server = self.pick(pool, upstream, client, sticky, tried);
            return server.map(|s| s.connection()).ok_or(NoSlot::Nothing);
        }
        let try_pick = || match self.pick(pool, upstream, client, sticky, tried) {
            Some(server) => server.try_connection().map_or(Pick::Full, Pick::Slot),
            None if upstream.any_full(tried) => Pick::Full,
            None => Pick::Nothing,
        };
        upstream
            .queue
            .acquire(settings.queue_timeout, try_pick)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
        host: Option<HeaderValue>,
        (pool, upstream): (usize, &Upstream),
        route_http: &HttpCounters,
        settings: &Settings,
        body_timeout: std::time::Duration,
        busy: Busy,
        entry: &mut Option<Box<Entry>>,
    ) -> Response<ResponseBody> {
        let sticky = settings
            .cookie
            .as_deref()
            .and_then(|name| cookie::take(req.headers_mut(), name));
        let key = key::request_key(
            settings.algorithm,
            &settings.hash_key,
            req.uri(),
            req.headers(),
        );
        let client = Client {
            ip: peer.addr.ip(),
            port: peer.addr.port(),
            key,
        };
        let upgrade = headers::is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        // RFC 9112 §3.2.2: with an absolute-form target the Host header is replaced by the
        // target's authority, which is what routing used. Forwarded as the client wrote it,
        // the server would act on one host while this balancer routed by another.
        if parts.uri.authority().is_some()
            && let Some(h) = &host
        {
            headers.insert(header::HOST, h.clone());
        }
        headers::forward_request(&mut headers, &peer.forwarded_for, host);
        // The length hyper framed the body by, written once and in plain decimal: a client's
        // `0005` or a repeated `5` forwarded as sent leaves the server to read them its own
        // way, and a server that reads a different length splits the stream differently.
        if headers.contains_key(header::CONTENT_LENGTH)
            && let Some(n) = body.size_hint().exact()
        {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        let has_body = !body.is_end_stream();
        let mut out = Outgoing {
            method: parts.method,
            uri: parts
                .uri
                .path_and_query()
                .map_or_else(|| Uri::from_static("/"), |p| Uri::from(p.clone())),
            headers,
            body: Some(body),
            has_body,
            body_timeout,
            upload: None,
        };
        let mut tried: Vec<Arc<Backend>> = Vec::new();
        // The first server tried, to count a redispatch (compared by address only).
        let mut first: Option<*const Backend> = None;
        let mut last = Failure::Connect;
        for attempt in 0..=settings.retries {
            let slot = self
                .take_slot(pool, upstream, &client, sticky.as_deref(), &tried, settings)
                .await;
            let guard = match slot {
                Ok(g) => g,
                Err(NoSlot::Nothing) => {
                    upstream.pool.no_server.fetch_add(1, Relaxed);
                    break;
                }
                Err(NoSlot::TimedOut) => {
                    return reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "503 Service Unavailable: every server is at its connection limit and none came free in time.\n",
                    );
                }
            };
            let server = guard.backend();
            server.http.requests.fetch_add(1, Relaxed);
            if attempt > 0 {
                server.retries.fetch_add(1, Relaxed);
                upstream.retries.fetch_add(1, Relaxed);
            }
            let first = *first.get_or_insert(Arc::as_ptr(server));
            let may_try_again = |f: Failure, out: &Outgoing| {
                attempt < settings.retries
                    && retry::may_retry(
                        f,
                        Attempt {
                            method: &out.method,
                            body_sent: out.has_body && out.body.is_none(),
                            response_started: false,
                            retry_non_idempotent: settings.retry_non_idempotent,
                        },
                    )
            };
            // The head is copied only when a response could still send it elsewhere.
            let keep = !out.has_body
                && (retry::is_idempotent(&out.method) || settings.retry_non_idempotent)
                && attempt < settings.retries;
            let tried_once = self
                .try_server(server, &mut out, settings, upgrade, keep)
                .await;
            match tried_once {
                Tried::Answered(mut resp, sender, latency_us) => {
                    let status = resp.status();
                    server.http.count_status(status.as_u16());
                    if status.is_server_error() {
                        upstream.request_failed(server, settings);
                    } else {
                        server.request_succeeded();
                    }
                    let now = now_ms();
                    server.http.latency.record(latency_us, now);
                    server.http.histogram.record(latency_us);
                    if retry::is_retryable_status(status)
                        && may_try_again(Failure::Status(status), &out)
                    {
                        last = Failure::Status(status);
                        tried.push(server.clone());
                        continue;
                    }
                    upstream.http.latency.record(latency_us, now);
                    route_http.latency.record(latency_us, now);
                    if let Some(e) = entry.as_mut() {
                        e.server = Some(server.name.clone());
                        e.upstream_us = Some(latency_us);
                    }
                    if !std::ptr::eq(first, Arc::as_ptr(server)) {
                        upstream.redispatches.fetch_add(1, Relaxed);
                    }
                    let switching = status == StatusCode::SWITCHING_PROTOCOLS && upgrade;
                    if switching && let Some(client_side) = client_upgrade {
                        let server_side = hyper::upgrade::on(&mut resp);
                        tokio::task::spawn_local(tunnel(
                            client_side,
                            server_side,
                            guard,
                            settings.tunnel_timeout,
                        ));
                        let (mut parts, _) = resp.into_parts();
                        headers::forward_response(&mut parts.headers, true);
                        drop(busy);
                        return Response::from_parts(parts, local(""));
                    }
                    let (mut parts, body) = resp.into_parts();
                    // The client's connection is ours: it speaks our version, whatever the
                    // server's was (hyper answers an HTTP/1.0 client in kind).
                    parts.version = Version::HTTP_11;
                    headers::forward_response(&mut parts.headers, false);
                    if let Some(name) = &settings.cookie
                        && sticky.as_deref() != Some(server.name.as_str())
                    {
                        cookie::insert(&mut parts.headers, name, &server.name);
                    }
                    let finish = Finish {
                        guard,
                        sender: (!upgrade).then_some(sender),
                        busy,
                    };
                    return Response::from_parts(
                        parts,
                        Either::Left(UpstreamBody::new(body, finish)),
                    );
                }
                Tried::Failed(f) => {
                    if f.is_server_fault() {
                        upstream.request_failed(server, settings);
                    }
                    last = f;
                    let again = may_try_again(f, &out);
                    tried.push(server.clone());
                    if !again {
                        break;
                    }
                }
            }
        }
        failure_reply(retry::client_status(last))
    }

    /// Sends the request to `server` and waits for the response head. A kept-alive
    /// connection the server closed just as it was taken gets the request back untouched,
    /// and the request goes again on a new connection to the same server.
    async fn try_server(
        &self,
        server: &Arc<Backend>,
        out: &mut Outgoing,
        settings: &Settings,
        upgrade: bool,
        keep: bool,
    ) -> Tried {
        let mut fresh_only = upgrade;
        let mut pending: Option<Request<RequestBody>> = None;
        loop {
            let connected = if fresh_only {
                idle::connect(server.addr, settings.connect_timeout)
                    .await
                    .map(|s| (s, false))
            } else {
                idle::connection(server.addr, settings.connect_timeout).await
            };
            let (mut sender, reused) = match connected {
                Ok(c) => c,
                Err(e) => {
                    server.connect_errors.fetch_add(1, Relaxed);
                    tracing::debug!(server = %server.name, "connect to {} failed: {e}", server.addr);
                    return Tried::Failed(Failure::Connect);
                }
            };
            let request = pending.take().unwrap_or_else(|| out.request(server, keep));
            // One clock read serves both the deadline and the latency.
            let started = tokio::time::Instant::now();
            let sending = sender.try_send_request(request);
            tokio::pin!(sending);
            let mut due = started + settings.response_timeout;
            let sent = loop {
                match tokio::time::timeout_at(due, &mut sending).await {
                    Ok(r) => break Ok(r),
                    Err(elapsed) => {
                        // The server's clock runs from the end of the body: time spent
                        // waiting on a slow client is not the server's (the body timeout
                        // bounds that), and charging it would eject healthy servers.
                        let state = out.upload.as_ref().map(|u| u.state());
                        match state {
                            Some(UploadState::FromClient) => {
                                due = tokio::time::Instant::now() + settings.response_timeout;
                            }
                            Some(UploadState::Done(at)) if at + settings.response_timeout > due => {
                                due = at + settings.response_timeout;
                            }
                            _ => break Err(elapsed),
                        }
                    }
                }
            };
            let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            match sent {
                Ok(Ok(resp)) => return Tried::Answered(resp, sender, latency_us),
                Ok(Err(mut e)) => {
                    if reused && let Some(back) = e.take_message() {
                        pending = Some(back);
                        fresh_only = true;
                        continue;
                    }
                    tracing::debug!(server = %server.name, "request to {} failed: {}", server.addr, e.error());
                    // hyper says "user" when the body we gave it failed: the client's upload
                    // broke off or stalled, and the server did nothing wrong.
                    if is_body_timeout(e.error()) {
                        return Tried::Failed(Failure::ClientTimeout);
                    }
                    if e.error().is_user() {
                        return Tried::Failed(Failure::ClientAborted);
                    }
                    server.http.response_errors.fetch_add(1, Relaxed);
                    return Tried::Failed(Failure::Broken);
                }
                Err(_) => {
                    server.http.response_errors.fetch_add(1, Relaxed);
                    return Tried::Failed(Failure::Timeout);
                }
            }
        }
    }
}

/// Whether a failed exchange failed because the client's body stalled.
fn is_body_timeout(e: &hyper::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<BodyTimeout>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Carries an upgraded connection (WebSocket) both ways until either side closes, or until
/// no byte has moved either way for `idle` (HAProxy's `timeout tunnel`): a tunnel nobody
/// uses would otherwise hold a client slot and a server connection for ever.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    server: hyper::upgrade::OnUpgrade,
    guard: crate::balance::backend::ConnGuard,
    idle: Option<std::time::Duration>,
) {
    let (client, server) = match tokio::try_join!(client, server) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!("upgrade failed: {e}");
            return;
        }
    };
    let last = Rc::new(Cell::new(tokio::time::Instant::now()));
    let mut client = Traffic::new(TokioIo::new(client), &last);
    let mut server = Traffic::new(TokioIo::new(server), &last);
    {
        let copying = tokio::io::copy_bidirectional(&mut client, &mut server);
        tokio::pin!(copying);
        loop {
            let quiet_until = idle.map(|limit| last.get() + limit);
            tokio::select! {
                _ = &mut copying => break,
                _ = crate::sync::sleep_until_some(quiet_until) => {
                    // Bytes moved since the timer was set: wait again from the latest one.
                    if quiet_until == idle.map(|limit| last.get() + limit) {
                        tracing::debug!("closing a tunnel idle for {:?}", idle.unwrap_or_default());
                        break;
                    }
                }
            }
        }
    }
    // Counted as the bytes went, so a tunnel ended by the timeout or an error counts too.
    let backend = guard.backend();
    backend.bytes_in.fetch_add(client.bytes, Relaxed);
    backend.bytes_out.fetch_add(server.bytes, Relaxed);
}

/// One side of a tunnel: counts the bytes read from it and notes when any last moved.
struct Traffic<T> {
    io: T,
    last: Rc<Cell<tokio::time::Instant>>,
    bytes: u64,
}

impl<T> Traffic<T> {
    fn new(io: T, last: &Rc<Cell<tokio::time::Instant>>) -> Traffic<T> {
        Traffic {
            io,
            last: last.clone(),
            bytes: 0,
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Traffic<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.bytes += n as u64;
            self.last.set(tokio::time::Instant::now());
        }
        polled
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Traffic<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
