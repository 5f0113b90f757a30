//! One connection to the peer: handshake (identity, protocol version, proof of the shared
//! secret), then a reader and a writer running side by side. The writer sends this node's
//! data (a full copy or a resume from the backlog) and then its change stream; the reader
//! applies the peer's. Either side failing, or silence past the heartbeat timeout, ends the
//! link.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

use super::apply::apply_record;
use super::auth;
use super::replicator::Replicator;
use super::shared::{CopyProgress, Counters, LinkPhase, now_ms};
use super::wire::{self, Kind, Reader, WireError};
use crate::cache::engine::unix_now;
use crate::cache::store::Applied;

/// Largest stream or copy frame body this side sends.
const CHUNK: usize = 256 * 1024;
/// Items read from one shard per lock during a full copy.
const COPY_BATCH: usize = 512;

/// What each side announces first.
#[derive(Debug, Clone)]
pub struct Hello {
    pub node_id: u32,
    pub epoch: u64,
    pub is_master: bool,
    pub stream_id: u64,
    pub nonce: [u8; 16],
    pub auth: bool,
    pub dialer: bool,
    /// The port this node serves cache clients on, so the peer's console can reach it.
    pub cache_port: u16,
}

impl Hello {
    /// The `Hello` frame (without the greeting that precedes it on a new connection).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let at = wire::begin_frame(out, Kind::Hello);
        out.extend_from_slice(&wire::PROTOCOL_VERSION.to_le_bytes());
        out.extend_from_slice(&self.node_id.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.push(u8::from(self.is_master));
        out.extend_from_slice(&self.stream_id.to_le_bytes());
        out.extend_from_slice(&self.nonce);
        out.push(u8::from(self.auth));
        out.push(u8::from(self.dialer));
        out.extend_from_slice(&self.cache_port.to_le_bytes());
        wire::finish_frame(out, at);
    }

    /// A `Hello` frame's body, checking the protocol version.
    pub fn decode(body: &[u8]) -> Result<Hello, String> {
        let mut r = Reader::new(body);
        let proto = r.u16().map_err(text)?;
        if proto != wire::PROTOCOL_VERSION {
            return Err(format!(
                "protocol version {proto}, this node speaks {}",
                wire::PROTOCOL_VERSION
            ));
        }
        let node_id = r.u32().map_err(text)?;
        let epoch = r.u64().map_err(text)?;
        let is_master = r.u8().map_err(text)? != 0;
        let stream_id = r.u64().map_err(text)?;
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(r.bytes(16).map_err(text)?);
        let auth = r.u8().map_err(text)? != 0;
        let dialer = r.u8().map_err(text)? != 0;
        let cache_port = r.u16().map_err(text)?;
        Ok(Hello {
            node_id,
            epoch,
            is_master,
            stream_id,
            nonce,
            auth,
            dialer,
            cache_port,
        })
    }
}

/// The position each side asks the other to continue from, and its settled role.
#[derive(Debug, Clone, Copy)]
pub struct Resume {
    pub is_master: bool,
    /// The peer's stream this side holds, up to `offset`; `None` asks for a full copy.
    pub have: Option<(u64, u64)>,
}

impl Resume {
    /// A `Resume` frame's body.
    pub fn decode(body: &[u8]) -> Result<Resume, String> {
        let mut rd = Reader::new(body);
        let is_master = rd.u8().map_err(text)? != 0;
        let have = if rd.u8().map_err(text)? != 0 {
            Some((rd.u64().map_err(text)?, rd.u64().map_err(text)?))
        } else {
            None
        };
        Ok(Resume { is_master, have })
    }
}

fn text(e: WireError) -> String {
    e.to_string()
}

fn frame(kind: Kind, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    let at = wire::begin_frame(&mut out, kind);
    body(&mut out);
    wire::finish_frame(&mut out, at);
    out
}

fn refuse_frame(reason: &str) -> Vec<u8> {
    frame(Kind::Refuse, |out| {
        wire::put_short_bytes(out, reason.as_bytes())
    })
}

/// The peer's reason from a `Refuse` frame body, as an error text.
pub fn refusal(body: &[u8]) -> String {
    let reason = Reader::new(body)
        .short_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned());
    format!("peer refused: {}", reason.unwrap_or_default())
}

/// Reads until one whole frame is buffered and returns its kind and body.
async fn read_frame(rd: &mut OwnedReadHalf, buf: &mut Vec<u8>) -> Result<(Kind, Vec<u8>), String> {
    loop {
        if let Some((kind, body, used)) = wire::parse_frame(buf).map_err(text)? {
            let body = body.to_vec();
            buf.drain(..used);
            if kind == Kind::Refuse {
                return Err(refusal(&body));
            }
            return Ok((kind, body));
        }
        if rd.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("peer closed the connection".into());
        }
    }
}

/// Exchanges hellos and, with a secret configured, proofs. Returns the peer's hello.
async fn handshake(
    r: &Replicator,
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    dialed: bool,
    buf: &mut Vec<u8>,
) -> Result<Hello, String> {
    let mine = r.hello(dialed);
    let mut out = wire::MAGIC.to_vec();
    mine.encode(&mut out);
    wr.write_all(&out).await.map_err(|e| e.to_string())?;

    while buf.len() < wire::MAGIC.len() {
        if rd.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("peer closed the connection during the handshake".into());
        }
    }
    if &buf[..wire::MAGIC.len()] != wire::MAGIC {
        return Err("not an opsconsole replication peer (bad greeting)".into());
    }
    buf.drain(..wire::MAGIC.len());
    let (kind, body) = read_frame(rd, buf).await?;
    if kind != Kind::Hello {
        return Err(format!("expected a hello, got {kind:?}"));
    }
    let theirs = match Hello::decode(&body) {
        Ok(h) => h,
        Err(e) => {
            let _ = wr.write_all(&refuse_frame(&e)).await;
            return Err(e);
        }
    };
    if theirs.auth != mine.auth {
        let why = "a replication secret is configured on one side only";
        let _ = wr.write_all(&refuse_frame(why)).await;
        return Err(why.into());
    }
    if theirs.node_id == mine.node_id {
        // Refused before any proof is checked: the proof's transcript names both nodes by
        // id, and only a peer posing as this node could pass it off as its own.
        let why = "the peer claims this node's own id";
        let _ = wr.write_all(&refuse_frame(why)).await;
        return Err(why.into());
    }
    if let Some(secret) = r.secret() {
        let (me, peer) = ((mine.node_id, mine.nonce), (theirs.node_id, theirs.nonce));
        let ((dialer_id, dialer_nonce), (acceptor_id, acceptor_nonce)) =
            if dialed { (me, peer) } else { (peer, me) };
        let transcript = auth::Transcript {
            dialer_id,
            dialer_nonce,
            acceptor_id,
            acceptor_nonce,
        };
        let (my_side, their_side) = if dialed {
            (auth::Side::Dialer, auth::Side::Acceptor)
        } else {
            (auth::Side::Acceptor, auth::Side::Dialer)
        };
        let proof = auth::proof(secret, my_side, &transcript);
        wr.write_all(&frame(Kind::Auth, |out| out.extend_from_slice(&proof)))
            .await
            .map_err(|e| e.to_string())?;
        let (kind, body) = read_frame(rd, buf).await?;
        if kind != Kind::Auth || !auth::verify(secret, their_side, &transcript, &body) {
            let why = "wrong replication secret";
            let _ = wr.write_all(&refuse_frame(why)).await;
            return Err(why.into());
        }
    }
    Ok(theirs)
}

/// How a link attempt ended, for the dialer's backoff and takeover decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Both nodes admitted it; it ran until it failed.
    Established,
    /// The handshake failed (wrong secret, other protocol, not a peer): as good as
    /// unreachable.
    HandshakeFailed,
    /// A node did not take the link (already paired, crossing links, held down).
    NotTaken,
}

/// Runs a connected peer link to its end.
pub async fn run(r: Arc<Replicator>, sock: TcpStream, dialed: bool, peer_addr: String) -> Outcome {
    let _ = sock.set_nodelay(true);
    let (mut rd, mut wr) = sock.into_split();
    let mut buf = Vec::with_capacity(64 * 1024);
    let handshake_limit = r.settings.heartbeat_timeout;
    let theirs = match tokio::time::timeout(
        handshake_limit,
        handshake(&r, &mut rd, &mut wr, dialed, &mut buf),
    )
    .await
    {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            Counters::add(&r.shared.counters.links_refused, 1);
            tracing::warn!(
                role = r.engine.role,
                "replication: refused peer {peer_addr}: {e}"
            );
            // A refusal on identity (secret, protocol) is final; a connection that merely
            // dropped mid-handshake (crossing links at start) is worth another try.
            let transport = ["closed", "reset", "Broken pipe", "refused: links crossed"]
                .iter()
                .any(|t| e.contains(t));
            return if transport {
                Outcome::NotTaken
            } else {
                Outcome::HandshakeFailed
            };
        }
        Err(_) => {
            tracing::warn!(
                role = r.engine.role,
                "replication: handshake with {peer_addr} timed out"
            );
            return Outcome::NotTaken;
        }
    };
    let admitted = match r.admit(&theirs, dialed) {
        Ok(a) => a,
        Err(reason) => {
            Counters::add(&r.shared.counters.links_refused, 1);
            tracing::warn!(
                role = r.engine.role,
                "replication: refused peer {peer_addr}: {reason}"
            );
            let _ = wr.write_all(&refuse_frame(&reason)).await;
            return Outcome::NotTaken;
        }
    };
    let resume = Resume {
        is_master: admitted.is_master,
        have: r.held_peer_stream(theirs.stream_id),
    };
    let hello_resume = frame(Kind::Resume, |out| {
        out.push(u8::from(resume.is_master));
        match resume.have {
            Some((id, off)) => {
                out.push(1);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&off.to_le_bytes());
            }
            None => out.push(0),
        }
    });
    let reason = match wr.write_all(&hello_resume).await {
        Err(e) => e.to_string(),
        Ok(()) => {
            let (resume_tx, resume_rx) = oneshot::channel();
            let me = LinkSide {
                id: admitted.id,
                is_master: admitted.is_master,
                peer_addr: &peer_addr,
            };
            let reader = read_loop(&r, &mut rd, buf, &theirs, &me, resume_tx);
            let writer = write_loop(&r, &mut wr, resume_rx);
            tokio::select! {
                e = reader => e,
                e = writer => e,
                _ = admitted.cancel.cancelled() => admitted.cancel_reason(),
            }
        }
    };
    if r.link_ended(admitted.id, &reason) {
        Outcome::Established
    } else {
        Outcome::NotTaken
    }
}

/// This side's view of an admitted link, for committing it when the peer's resume arrives.
struct LinkSide<'a> {
    id: u64,
    is_master: bool,
    peer_addr: &'a str,
}

/// Applies everything the peer sends until the link fails.
async fn read_loop(
    r: &Replicator,
    rd: &mut OwnedReadHalf,
    mut buf: Vec<u8>,
    theirs: &Hello,
    me: &LinkSide<'_>,
    resume_tx: oneshot::Sender<Resume>,
) -> String {
    let mut resume_tx = Some(resume_tx);
    // The peer's change stream: bytes not yet forming a whole record, and the stream offset
    // of their first byte.
    let mut pending: Vec<u8> = Vec::new();
    let mut stream_pos: Option<u64> = None;
    let mut copy = CopyReceiver::default();
    let timeout = r.settings.heartbeat_timeout;
    loop {
        loop {
            let parsed = match wire::parse_frame(&buf) {
                Ok(p) => p,
                Err(e) => return format!("malformed frame from peer: {e}"),
            };
            let Some((kind, body, used)) = parsed else {
                break;
            };
            let outcome = match kind {
                Kind::Resume => on_resume(r, body, theirs, me, &mut resume_tx),
                Kind::CopyBegin => copy.begin(r, body),
                Kind::CopyChunk => copy.chunk(r, body),
                Kind::CopyEnd => copy.end(r, body, theirs.stream_id).map(|offset| {
                    stream_pos = Some(offset);
                    pending.clear();
                }),
                Kind::Stream => on_stream(r, body, theirs.stream_id, &mut stream_pos, &mut pending),
                Kind::Ping => {
                    let mut rd = Reader::new(body);
                    if let Ok(applied) = rd.u64() {
                        r.shared.set_peer_acked(applied);
                    }
                    Ok(())
                }
                Kind::Switch => Reader::new(body)
                    .u64()
                    .map_err(text)
                    .map(|epoch| r.take_over(epoch)),
                Kind::Refuse => Err(refusal(body)),
                other => Err(format!("unexpected {other:?} frame")),
            };
            buf.drain(..used);
            if let Err(e) = outcome {
                return e;
            }
        }
        match tokio::time::timeout(timeout, rd.read_buf(&mut buf)).await {
            Err(_) => return format!("no heartbeat from the peer for {} ms", timeout.as_millis()),
            Ok(Ok(0)) => return "peer closed the link".into(),
            Ok(Err(e)) => return format!("read error: {e}"),
            Ok(Ok(_)) => r.shared.status().last_heard_ms = Some(now_ms()),
        }
    }
}

/// The peer admitted the link and says where to resume: commit the link (roles change
/// now), then let the writer start sending.
fn on_resume(
    r: &Replicator,
    body: &[u8],
    theirs: &Hello,
    me: &LinkSide<'_>,
    tx: &mut Option<oneshot::Sender<Resume>>,
) -> Result<(), String> {
    let Resume { is_master, have } = Resume::decode(body)?;
    if is_master == me.is_master {
        // Both nodes rank each other from the same hellos, so this means a state changed
        // between hello and admission; dropping the link makes both retry cleanly.
        return Err(format!(
            "both nodes settled as {}; retrying",
            if is_master { "master" } else { "slave" }
        ));
    }
    let Some(tx) = tx.take() else {
        return Err("peer sent a second resume".into());
    };
    if !r.commit(me.id, theirs, me.is_master, me.peer_addr) {
        return Err("replaced by a crossing link".into());
    }
    let _ = tx.send(Resume { is_master, have });
    Ok(())
}

fn on_stream(
    r: &Replicator,
    body: &[u8],
    peer_stream: u64,
    stream_pos: &mut Option<u64>,
    pending: &mut Vec<u8>,
) -> Result<(), String> {
    let mut rd = Reader::new(body);
    let offset = rd.u64().map_err(text)?;
    let Some(pos) = *stream_pos else {
        return Err("stream data before the copy finished".into());
    };
    // Offsets come from the peer (its copy's end, then each frame): checked, so a peer
    // counting past u64::MAX ends the link instead of wrapping around.
    let beyond = |n: usize| {
        pos.checked_add(n as u64)
            .ok_or_else(|| format!("stream offset {pos} + {n} is out of range"))
    };
    let expected = beyond(pending.len())?;
    if offset != expected {
        return Err(format!(
            "stream gap: expected offset {expected}, got {offset}"
        ));
    }
    beyond(pending.len() + body.len() - 8)?;
    pending.extend_from_slice(&body[8..]);
    let now = unix_now();
    let (items, used) = apply_records(r, pending, now)?;
    pending.drain(..used);
    let new_pos = beyond(used)?;
    *stream_pos = Some(new_pos);
    r.set_held_peer_stream(peer_stream, new_pos);
    r.shared.want_ack();
    let c = &r.shared.counters;
    Counters::add(&c.items_received, items);
    Counters::add(&c.bytes_received, body.len() as u64);
    Ok(())
}

/// Applies every whole record in `bytes`; returns how many and how many bytes they used.
fn apply_records(r: &Replicator, bytes: &[u8], now: u32) -> Result<(u64, usize), String> {
    let mut rd = Reader::new(bytes);
    let mut items = 0;
    let mut conflicts = 0;
    while let Some(record) = rd
        .record_if_complete()
        .map_err(|e| format!("malformed record: {e}"))?
    {
        match apply_record(&r.engine, &record, now) {
            Applied::Applied => {}
            Applied::Older => conflicts += 1,
            Applied::NoMemory => {
                tracing::warn!(
                    role = r.engine.role,
                    "replication: an item from the peer does not fit in memory"
                );
            }
        }
        items += 1;
    }
    Counters::add(&r.shared.counters.conflicts, conflicts);
    Ok((items, rd.position()))
}

/// The receiving side of a full copy.
#[derive(Default)]
struct CopyReceiver {
    last_logged: Option<Instant>,
}

impl CopyReceiver {
    fn begin(&mut self, r: &Replicator, body: &[u8]) -> Result<(), String> {
        let mut rd = Reader::new(body);
        let items_total = rd.u64().map_err(text)?;
        let bytes_total = rd.u64().map_err(text)?;
        r.copy_in_started();
        let mut st = r.shared.status();
        st.link = LinkPhase::Copying;
        st.copy_in = Some(CopyProgress {
            items_total,
            bytes_total,
            started_ms: now_ms(),
            ..CopyProgress::default()
        });
        st.event(format!(
            "marugoto copy from the peer started: {items_total} items"
        ));
        drop(st);
        tracing::info!(
            role = r.engine.role,
            "replication: marugoto copying (receiving {items_total} items, {bytes_total} bytes)"
        );
        self.last_logged = Some(Instant::now());
        Ok(())
    }

    fn chunk(&mut self, r: &Replicator, body: &[u8]) -> Result<(), String> {
        let (items, used) = apply_records(r, body, unix_now())?;
        if used != body.len() {
            return Err("a copy chunk ended inside a record".into());
        }
        let c = &r.shared.counters;
        Counters::add(&c.items_received, items);
        Counters::add(&c.bytes_received, body.len() as u64);
        let mut st = r.shared.status();
        if let Some(p) = st.copy_in.as_mut() {
            p.add(items, body.len() as u64);
            if self
                .last_logged
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            {
                self.last_logged = Some(Instant::now());
                let pct = (p.items_done * 100)
                    .checked_div(p.items_total)
                    .unwrap_or(100);
                tracing::info!(
                    role = r.engine.role,
                    "replication: marugoto copy {pct}% ({}/{} items, {} KiB)",
                    p.items_done,
                    p.items_total,
                    p.bytes_done >> 10
                );
            }
        }
        Ok(())
    }

    /// The peer's data is complete here; returns the stream offset to continue from.
    fn end(&mut self, r: &Replicator, body: &[u8], peer_stream: u64) -> Result<u64, String> {
        let mut rd = Reader::new(body);
        let full = rd.u8().map_err(text)? != 0;
        let offset = rd.u64().map_err(text)?;
        r.set_held_peer_stream(peer_stream, offset);
        r.copy_in_finished(full);
        Ok(offset)
    }
}

/// Sends this node's data and then its change stream until the link fails.
async fn write_loop(
    r: &Replicator,
    wr: &mut OwnedWriteHalf,
    resume_rx: oneshot::Receiver<Resume>,
) -> String {
    let resume = match tokio::time::timeout(r.settings.heartbeat_timeout, resume_rx).await {
        Ok(Ok(resume)) => resume,
        _ => return "peer did not say where to resume".into(),
    };
    let mut cursor = match resume.have {
        Some((id, offset)) if id == r.shared.stream_id && r.backlog_holds(offset) => {
            Counters::add(&r.shared.counters.partial_resyncs, 1);
            tracing::info!(
                role = r.engine.role,
                "replication: partial resync from offset {offset}"
            );
            r.shared
                .status()
                .event(format!("partial resync from offset {offset}"));
            let end = frame(Kind::CopyEnd, |out| {
                out.push(0);
                out.extend_from_slice(&offset.to_le_bytes());
            });
            if let Err(e) = wr.write_all(&end).await {
                return e.to_string();
            }
            r.copy_out_finished(false);
            offset
        }
        _ => match send_full_copy(r, wr).await {
            Ok(offset) => offset,
            Err(e) => return e,
        },
    };
    let interval = r.settings.heartbeat_interval;
    // Due at once, so the first heartbeat goes out with the first frames.
    let mut last_ping = Instant::now()
        .checked_sub(interval)
        .unwrap_or_else(Instant::now);
    let mut out = Vec::with_capacity(CHUNK + 64);
    loop {
        let handover = r
            .shared
            .switch_request
            .lock()
            .map(|mut s| s.take())
            .unwrap_or(None);
        if let Some(epoch) = handover {
            let switch = frame(Kind::Switch, |o| o.extend_from_slice(&epoch.to_le_bytes()));
            if let Err(e) = wr.write_all(&switch).await {
                return e.to_string();
            }
            r.hand_over(epoch);
        }
        // Acknowledge promptly after applying peer changes (sync mode waits on it), and
        // at least every interval as the heartbeat.
        if r.shared.take_ack_wanted() || last_ping.elapsed() >= interval {
            let applied = r.applied_peer_offset();
            let ping = frame(Kind::Ping, |o| o.extend_from_slice(&applied.to_le_bytes()));
            if let Err(e) = wr.write_all(&ping).await {
                return e.to_string();
            }
            last_ping = Instant::now();
        }
        out.clear();
        let at = wire::begin_frame(&mut out, Kind::Stream);
        out.extend_from_slice(&cursor.to_le_bytes());
        let read = r.shared.backlog().read(cursor, CHUNK, &mut out);
        let Some(n) = read else {
            return "the peer fell further behind than the backlog holds; it will get a full copy"
                .into();
        };
        if n > 0 {
            wire::finish_frame(&mut out, at);
            if let Err(e) = wr.write_all(&out).await {
                return e.to_string();
            }
            cursor += n as u64;
            Counters::add(&r.shared.counters.bytes_sent, n as u64);
            continue;
        }
        let wait = interval.saturating_sub(last_ping.elapsed());
        tokio::select! {
            _ = r.shared.notify.notified() => {}
            _ = r.shared.ack_due.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends every live item and tombstone, a batch per shard lock; returns the stream offset
/// the peer continues from (changes made during the copy are in the stream after it).
async fn send_full_copy(r: &Replicator, wr: &mut OwnedWriteHalf) -> Result<u64, String> {
    let store = &r.engine.store;
    let start_offset = r.shared.backlog().end();
    let totals = store.stats();
    let begin = frame(Kind::CopyBegin, |out| {
        out.extend_from_slice(&totals.curr_items.to_le_bytes());
        out.extend_from_slice(&totals.bytes.to_le_bytes());
    });
    wr.write_all(&begin).await.map_err(|e| e.to_string())?;
    Counters::add(&r.shared.counters.full_resyncs, 1);
    {
        let mut st = r.shared.status();
        st.copy_out = Some(CopyProgress {
            items_total: totals.curr_items,
            bytes_total: totals.bytes,
            started_ms: now_ms(),
            ..CopyProgress::default()
        });
        st.event(format!(
            "marugoto copy to the peer started: {} items",
            totals.curr_items
        ));
    }
    tracing::info!(
        role = r.engine.role,
        "replication: marugoto copying (sending {} items)",
        totals.curr_items
    );
    let mut body = Vec::with_capacity(CHUNK + 4096);
    let mut pace = Pace::new(r.settings.copy_rate);
    let now = unix_now();
    let mut floor = crate::cache::version::Version::ZERO;
    for i in 0..store.shard_count() {
        floor = floor.max(store.lock_shard(i).flush_floor());
    }
    if floor != crate::cache::version::Version::ZERO {
        wire::encode_flush(&mut body, floor);
    }
    for i in 0..store.shard_count() {
        let mut cursor = Some(0);
        let mut tombstones_sent = false;
        while let Some(c) = cursor {
            let mut items = 0u64;
            {
                let shard = store.lock_shard(i);
                if !tombstones_sent {
                    shard.visit_tombstones(|key, version| {
                        wire::encode_delete(&mut body, key, version)
                    });
                    tombstones_sent = true;
                }
                cursor = shard.visit_items(c, COPY_BATCH, now, |it| {
                    wire::encode_set(
                        &mut body,
                        it.key(),
                        it.value(),
                        it.flags,
                        it.exptime,
                        it.version,
                    );
                    items += 1;
                });
            }
            Counters::add(&r.shared.counters.items_sent, items);
            if let Some(p) = r.shared.status().copy_out.as_mut() {
                p.add(items, 0);
            }
            if body.len() >= CHUNK || cursor.is_none() {
                send_chunk(r, wr, &mut body, &mut pace).await?;
            }
        }
    }
    send_chunk(r, wr, &mut body, &mut pace).await?;
    let end = frame(Kind::CopyEnd, |out| {
        out.push(1);
        out.extend_from_slice(&start_offset.to_le_bytes());
    });
    wr.write_all(&end).await.map_err(|e| e.to_string())?;
    r.copy_out_finished(true);
    Ok(start_offset)
}

/// Holds a full copy to its configured rate.
struct Pace {
    rate: Option<u64>,
    started: Instant,
    sent: u64,
}

impl Pace {
    fn new(rate: Option<u64>) -> Pace {
        Pace {
            rate,
            started: Instant::now(),
            sent: 0,
        }
    }

    async fn sent(&mut self, n: usize) {
        self.sent += n as u64;
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

async fn send_chunk(
    r: &Replicator,
    wr: &mut OwnedWriteHalf,
    body: &mut Vec<u8>,
    pace: &mut Pace,
) -> Result<(), String> {
    if body.is_empty() {
        return Ok(());
    }
    pace.sent(body.len()).await;
    let chunk = frame(Kind::CopyChunk, |out| out.extend_from_slice(body));
    wr.write_all(&chunk).await.map_err(|e| e.to_string())?;
    Counters::add(&r.shared.counters.bytes_sent, body.len() as u64);
    if let Some(p) = r.shared.status().copy_out.as_mut() {
        p.add(0, body.len() as u64);
    }
    body.clear();
    Ok(())
}
