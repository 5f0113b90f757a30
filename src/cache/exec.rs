//! Executes parsed requests against the store and encodes replies into the connection's
//! output buffer. Pure apart from the shard locks: time comes in as `now`, and nothing here
//! touches a socket. Semantics follow memcached 1.6's `do_store_item`, `do_add_delta` and the
//! meta command handlers, quirks included where clients can observe them.

use super::engine::Engine;
use super::meta::{MAX_OPAQUE_LENGTH, MetaFlags, base64_encode};
use super::protocol::{FlagTokens, KEY_MAX_LENGTH, Request, StoreMode, key_ok, parse};
use super::stats::{Counter, LocalCounters};
use super::store::{Item, NewItem, Shard};
use super::version::Version;
use crate::replication::wire;

/// A multi-key get stops adding values once this much is buffered, so the connection can
/// send it before going on: a get of 10,000 keys at the item size limit would otherwise
/// build gigabytes of replies in memory (memcached streams them from the items instead).
pub const REPLY_CHUNK: usize = 1 << 20;

/// What the connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow<'a> {
    Continue,
    /// Throw away this many incoming bytes (the data block of a refused value).
    Swallow(usize),
    /// Send what is buffered, then close.
    Close,
    /// Send what is buffered, then `resume` the rest of this get.
    More(GetRest<'a>),
}

/// The keys of a multi-key get not answered yet (already checked, so resuming cannot turn
/// into an error after values have been sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetRest<'a> {
    keys: &'a [u8],
    with_cas: bool,
    touch: Option<i32>,
}

impl<'a> GetRest<'a> {
    pub fn resume(self, ctx: &mut Ctx<'_>) -> Flow<'a> {
        get_checked(ctx, self)
    }
}

/// Per-connection context the executor needs.
pub struct Ctx<'a> {
    pub engine: &'a Engine,
    pub now: u32,
    pub out: &'a mut Vec<u8>,
    pub counters: &'a mut LocalCounters,
    /// This node's writes, encoded for the replication peer (`None` when not replicating).
    pub repl: Option<&'a mut Vec<u8>>,
}

/// A fresh version for a local write (zero when the node does not replicate).
fn new_version(engine: &Engine) -> Version {
    if engine.replicated() {
        engine.clock.next()
    } else {
        Version::ZERO
    }
}

/// Records an item's current state for the replication peer.
fn emit_item(repl: &mut Option<&mut Vec<u8>>, item: &Item) {
    if let Some(out) = repl.as_deref_mut() {
        wire::encode_set(
            out,
            item.key(),
            item.value(),
            item.flags,
            item.exptime,
            item.version,
        );
    }
}

fn emit_delete(repl: &mut Option<&mut Vec<u8>>, key: &[u8], version: Version) {
    if let Some(out) = repl.as_deref_mut() {
        wire::encode_delete(out, key, version);
    }
}

/// Requests a slave answers even before it holds a complete copy of the master's data.
fn allowed_while_not_serving(req: &Request<'_>) -> bool {
    matches!(
        req,
        Request::Reply { .. }
            | Request::Version
            | Request::Verbosity { .. }
            | Request::Quit
            | Request::Stats { .. }
            | Request::MetaNoop
            | Request::MetaError { .. }
            | Request::Close
    )
}

/// What a slave says while its copy of the master's data is incomplete.
pub const NOT_SERVING: &str =
    "SERVER_ERROR replication: marugoto copy in progress, not serving yet";

/// Relative exptimes are at most 30 days; larger values are absolute unix times.
const REALTIME_MAXDELTA: i32 = 60 * 60 * 24 * 30;

/// Converts a client exptime into an absolute unix time (0 = never). Negative values and
/// absolute times in the past mean "already expired", which 1 (the distant past) encodes.
pub fn absolute_exptime(exptime: i32, now: u32) -> u32 {
    if exptime == 0 {
        0
    } else if exptime < 0 {
        1
    } else if exptime > REALTIME_MAXDELTA {
        exptime as u32
    } else {
        now.saturating_add(exptime as u32)
    }
}

pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn line(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Replies unless the client asked for silence.
fn reply(ctx: &mut Ctx<'_>, text: &str, noreply: bool) {
    if !noreply {
        line(ctx.out, text);
    }
}

/// Runs a complete piece of protocol text through the parser and executor, exactly as a
/// client connection would, and returns the replies (the key tester and tests use this).
pub fn run_text(engine: &Engine, now: u32, input: &[u8]) -> Vec<u8> {
    let limits = engine.parse_limits();
    let mut out = Vec::new();
    let mut counters = LocalCounters::default();
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < input.len() {
        match parse(&input[pos..], &limits) {
            Ok(Some((req, used))) => {
                pos += used;
                let mut ctx = Ctx {
                    engine,
                    now,
                    out: &mut out,
                    counters: &mut counters,
                    repl: engine.replicated().then_some(&mut records),
                };
                let mut flow = execute(&mut ctx, req);
                while let Flow::More(rest) = flow {
                    flow = rest.resume(&mut ctx);
                }
                match flow {
                    Flow::Continue | Flow::More(_) => {}
                    Flow::Swallow(n) => pos = (pos + n).min(input.len()),
                    Flow::Close => break,
                }
            }
            Ok(None) => {
                out.extend_from_slice(b"(incomplete request: waiting for more input)\r\n");
                break;
            }
            Err(_) => {
                out.extend_from_slice(b"CLIENT_ERROR line too long\r\n");
                break;
            }
        }
    }
    engine.counters.merge(&mut counters);
    engine.publish(&records);
    out
}

pub fn execute<'a>(ctx: &mut Ctx<'_>, req: Request<'a>) -> Flow<'a> {
    if !ctx.engine.serving() && !allowed_while_not_serving(&req) {
        line(ctx.out, NOT_SERVING);
        return match req {
            Request::TooLarge { swallow, .. } | Request::MetaTooLarge { swallow, .. } => {
                Flow::Swallow(swallow)
            }
            _ => Flow::Continue,
        };
    }
    match req {
        Request::Reply { text, noreply } => reply(ctx, text, noreply),
        Request::Get {
            keys,
            with_cas,
            touch,
        } => return get(ctx, keys, with_cas, touch),
        Request::Store {
            mode,
            key,
            flags,
            exptime,
            cas,
            data,
            noreply,
        } => {
            ctx.counters.incr(Counter::CmdSet);
            let exptime = absolute_exptime(exptime, ctx.now);
            let op = StoreOp {
                mode,
                key,
                flags,
                exptime,
                value: data,
                req_cas: cas,
                set_stale: false,
            };
            let text = match store(ctx, &op) {
                Stored::Stored(_) => "STORED",
                Stored::Exists => "EXISTS",
                Stored::NotFound => "NOT_FOUND",
                Stored::NotStored => "NOT_STORED",
                Stored::NoMemory => "SERVER_ERROR out of memory storing object",
            };
            reply(ctx, text, noreply);
        }
        Request::BadDataChunk { noreply } => {
            ctx.counters.incr(Counter::CmdSet);
            reply(ctx, "CLIENT_ERROR bad data chunk", noreply);
        }
        Request::TooLarge {
            key,
            unlink,
            noreply,
            swallow,
        } => {
            ctx.counters.incr(Counter::StoreTooLarge);
            if unlink {
                remove_key(ctx, key);
            }
            reply(ctx, "SERVER_ERROR object too large for cache", noreply);
            return Flow::Swallow(swallow);
        }
        Request::Touch {
            key,
            exptime,
            noreply,
        } => touch(ctx, key, exptime, noreply),
        Request::Arith {
            key,
            incr,
            delta,
            noreply,
        } => {
            let text = match add_delta(ctx, key, incr, delta, 0) {
                Delta::Ok { value, .. } => {
                    if !noreply {
                        push_u64(ctx.out, value);
                        ctx.out.extend_from_slice(b"\r\n");
                    }
                    return Flow::Continue;
                }
                Delta::NonNumeric => "CLIENT_ERROR cannot increment or decrement non-numeric value",
                Delta::NotFound => "NOT_FOUND",
                Delta::CasMismatch => "EXISTS",
            };
            reply(ctx, text, noreply);
        }
        Request::Delete { key, noreply } => {
            let text = if remove_key(ctx, key) {
                ctx.counters.incr(Counter::DeleteHits);
                "DELETED"
            } else {
                ctx.counters.incr(Counter::DeleteMisses);
                "NOT_FOUND"
            };
            reply(ctx, text, noreply);
        }
        Request::FlushAll { delay, noreply } => {
            ctx.counters.incr(Counter::CmdFlush);
            if !ctx.engine.flush_enabled() {
                reply(ctx, "CLIENT_ERROR flush_all not allowed", noreply);
            } else {
                let at = if delay > 0 {
                    Some(absolute_exptime(delay, ctx.now))
                } else {
                    None
                };
                if ctx.engine.replicated() && at.is_none() {
                    // Replicated as a version floor so both nodes drop the same writes.
                    let version = ctx.engine.clock.next();
                    ctx.engine.store.flush_older_than(version);
                    if let Some(out) = ctx.repl.as_deref_mut() {
                        wire::encode_flush(out, version);
                    }
                } else {
                    ctx.engine.store.flush(at, ctx.now);
                }
                reply(ctx, "OK", noreply);
            }
        }
        Request::Version => line(ctx.out, &format!("VERSION {}", super::VERSION)),
        Request::Verbosity { level, noreply } => {
            ctx.engine.set_verbosity(level.min(2));
            reply(ctx, "OK", noreply);
        }
        Request::Quit => return Flow::Close,
        Request::Stats { sub } => super::stats_reply::write(ctx.engine, sub, ctx.now, ctx.out),
        Request::MetaNoop => line(ctx.out, "MN"),
        Request::MetaGet { key, flags, tokens } => meta_get(ctx, &key, &flags, tokens),
        Request::MetaSet {
            key,
            flags,
            tokens,
            data,
        } => meta_set(ctx, &key, &flags, tokens, data),
        Request::MetaDelete { key, flags, tokens } => meta_delete(ctx, &key, &flags, tokens),
        Request::MetaArith { key, flags, tokens } => meta_arith(ctx, &key, &flags, tokens),
        Request::MetaDebug { key } => meta_debug(ctx, &key),
        Request::MetaTooLarge { key, swallow } => {
            ctx.counters.incr(Counter::StoreTooLarge);
            remove_key(ctx, &key);
            line(ctx.out, "SERVER_ERROR object too large for cache");
            return Flow::Swallow(swallow);
        }
        Request::MetaError { text, swallow } => {
            line(ctx.out, text);
            if swallow > 0 {
                return Flow::Swallow(swallow);
            }
        }
        Request::Close => return Flow::Close,
    }
    Flow::Continue
}

/// Runs `f` on the shard holding `key` with the key's live item (if any).
fn with_item<R>(
    engine: &Engine,
    now: u32,
    key: &[u8],
    f: impl FnOnce(&mut Shard, u64, Option<u32>) -> R,
) -> R {
    let store = &engine.store;
    let hash = store.hash(key);
    let mut shard = store.lock(hash);
    let idx = shard.find(hash, key, now, store.flush_mark());
    f(&mut shard, hash, idx)
}

/// Deletes a key, leaving a tombstone and a record for the peer.
fn remove_key(ctx: &mut Ctx<'_>, key: &[u8]) -> bool {
    let engine = ctx.engine;
    let now = ctx.now;
    let repl = &mut ctx.repl;
    with_item(engine, now, key, |shard, hash, idx| match idx {
        Some(i) => {
            let version = new_version(engine);
            shard.remove(hash, i);
            shard.bury(key, version, now);
            emit_delete(repl, key, version);
            true
        }
        None => false,
    })
}

/// Writes ` <flags> <bytes>[ <cas>]\r\n<data>\r\n` after `VALUE <key>`.
fn write_value(out: &mut Vec<u8>, shard: &Shard, idx: u32, with_cas: bool) {
    let item = shard.item(idx);
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(item.key());
    out.push(b' ');
    push_u64(out, u64::from(item.flags));
    out.push(b' ');
    push_u64(out, item.value().len() as u64);
    if with_cas {
        out.push(b' ');
        push_u64(out, item.cas);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(item.value());
    out.extend_from_slice(b"\r\n");
}

fn get<'a>(ctx: &mut Ctx<'_>, keys: &'a [u8], with_cas: bool, touch: Option<i32>) -> Flow<'a> {
    let rest = GetRest {
        keys,
        with_cas,
        touch,
    };
    // Every key is checked before any value goes out: a bad key answers the whole get with
    // an error, and that must not come after values already sent.
    let Some(bad_at) = first_bad_key(keys) else {
        return get_checked(ctx, rest);
    };
    // memcached has already looked up (and for `gat`, touched) the keys before the bad one
    // when it finds it: those effects stand, only their values are not sent. Run them with
    // the output thrown away chunk by chunk, so memory stays bounded here too.
    let start = ctx.out.len();
    let mut before = GetRest {
        keys: &keys[..bad_at],
        ..rest
    };
    loop {
        let flow = get_checked(ctx, before);
        ctx.out.truncate(start);
        match flow {
            Flow::More(more) => before = more,
            _ => break,
        }
    }
    line(ctx.out, "CLIENT_ERROR bad command line format");
    Flow::Continue
}

/// Where the first key that is too long or has a forbidden byte starts.
fn first_bad_key(keys: &[u8]) -> Option<usize> {
    let mut at = 0;
    for key in keys.split(|&b| b == b' ') {
        if !key.is_empty() && (key.len() > KEY_MAX_LENGTH || !key_ok(key)) {
            return Some(at);
        }
        at += key.len() + 1;
    }
    None
}

/// Answers checked keys until the buffered replies reach `REPLY_CHUNK`, then hands back
/// the rest; `END` follows the last key.
fn get_checked<'a>(ctx: &mut Ctx<'_>, rest: GetRest<'a>) -> Flow<'a> {
    let GetRest {
        keys,
        with_cas,
        touch,
    } = rest;
    let new_exptime = touch.map(|e| absolute_exptime(e, ctx.now));
    let (cmd, hit_c, miss_c) = if touch.is_some() {
        (Counter::CmdTouch, Counter::TouchHits, Counter::TouchMisses)
    } else {
        (Counter::CmdGet, Counter::GetHits, Counter::GetMisses)
    };
    let mut at = 0;
    while at < keys.len() {
        let end = memchr::memchr(b' ', &keys[at..]).map_or(keys.len(), |i| at + i);
        let key = &keys[at..end];
        at = end + 1;
        if key.is_empty() {
            continue;
        }
        let now = ctx.now;
        let engine = ctx.engine;
        let out = &mut *ctx.out;
        let repl = &mut ctx.repl;
        let hit = with_item(engine, now, key, |shard, _, idx| {
            let idx = idx?;
            if let Some(e) = new_exptime {
                let it = shard.item_mut(idx);
                it.exptime = e;
                it.version = new_version(engine);
                emit_item(repl, it);
            }
            shard.bump(idx, now);
            shard.item_mut(idx).fetched = true;
            write_value(out, shard, idx, with_cas);
            Some(())
        });
        ctx.counters.incr(cmd);
        ctx.counters
            .incr(if hit.is_some() { hit_c } else { miss_c });
        if ctx.out.len() >= REPLY_CHUNK && at < keys.len() {
            return Flow::More(GetRest {
                keys: &keys[at..],
                with_cas,
                touch,
            });
        }
    }
    ctx.out.extend_from_slice(b"END\r\n");
    Flow::Continue
}

/// One storage operation, classic or meta.
struct StoreOp<'a> {
    mode: StoreMode,
    key: &'a [u8],
    flags: u32,
    exptime: u32,
    value: &'a [u8],
    req_cas: u64,
    /// Meta `I`: a CAS older than the item's still stores, but marks the item stale.
    set_stale: bool,
}

/// The outcome of a storage operation, with the new CAS when stored.
#[allow(clippy::enum_variant_names)] // memcached's own reply names
enum Stored {
    Stored(u64),
    Exists,
    NotFound,
    NotStored,
    NoMemory,
}

enum CasCheck {
    None,
    Match,
    BadVal,
    Stale,
}

/// memcached's `do_store_item`.
fn store(ctx: &mut Ctx<'_>, op: &StoreOp<'_>) -> Stored {
    let engine = ctx.engine;
    let now = ctx.now;
    let item_size_max = engine.item_size_max();
    let counters = &mut *ctx.counters;
    let repl = &mut ctx.repl;
    with_item(engine, now, op.key, |shard, hash, idx| {
        let hasher = engine.store.hasher();
        let mut insert = |shard: &mut Shard, value: &[u8], flags: u32, exptime: u32| {
            let cas = engine.store.next_cas();
            let new = NewItem {
                key: op.key,
                value,
                flags,
                exptime,
                cas,
                version: new_version(engine),
            };
            let idx = shard.insert(hash, new, now, hasher)?;
            emit_item(repl, shard.item(idx));
            Ok::<_, super::store::StoreError>((idx, cas))
        };
        let Some(old) = idx else {
            return match op.mode {
                StoreMode::Add | StoreMode::Set => {
                    match insert(shard, op.value, op.flags, op.exptime) {
                        Ok((_, cas)) => Stored::Stored(cas),
                        Err(_) => {
                            counters.incr(Counter::StoreNoMemory);
                            Stored::NoMemory
                        }
                    }
                }
                StoreMode::Cas => {
                    counters.incr(Counter::CasMisses);
                    Stored::NotFound
                }
                StoreMode::Replace | StoreMode::Append | StoreMode::Prepend => Stored::NotStored,
            };
        };
        let (old_cas, old_flags, old_exptime, old_token_sent) = {
            let it = shard.item(old);
            (it.cas, it.flags, it.exptime, it.token_sent)
        };
        let check = if op.req_cas == 0 {
            CasCheck::None
        } else if op.req_cas == old_cas {
            CasCheck::Match
        } else if op.set_stale && op.req_cas < old_cas {
            CasCheck::Stale
        } else {
            CasCheck::BadVal
        };
        let result = match op.mode {
            StoreMode::Add => {
                shard.bump(old, now);
                return Stored::NotStored;
            }
            StoreMode::Cas => match check {
                CasCheck::Match => {
                    counters.incr(Counter::CasHits);
                    insert(shard, op.value, op.flags, op.exptime)
                }
                CasCheck::Stale => {
                    counters.incr(Counter::CasHits);
                    // The stale value keeps the old TTL and recache state.
                    let r = insert(shard, op.value, op.flags, old_exptime);
                    if let Ok((i, _)) = r {
                        let it = shard.item_mut(i);
                        it.stale = true;
                        it.token_sent = old_token_sent;
                    }
                    r
                }
                CasCheck::None | CasCheck::BadVal => {
                    counters.incr(Counter::CasBadval);
                    return Stored::Exists;
                }
            },
            StoreMode::Append | StoreMode::Prepend => {
                if !matches!(check, CasCheck::None | CasCheck::Match) {
                    return Stored::Exists;
                }
                let old_value = shard.item(old).value();
                let total = op.value.len() + old_value.len();
                if engine.item_total_size(op.key.len(), old_flags, total) > item_size_max {
                    return Stored::NotStored;
                }
                let mut joined = Vec::with_capacity(total);
                if op.mode == StoreMode::Append {
                    joined.extend_from_slice(old_value);
                    joined.extend_from_slice(op.value);
                } else {
                    joined.extend_from_slice(op.value);
                    joined.extend_from_slice(old_value);
                }
                insert(shard, &joined, old_flags, old_exptime)
            }
            StoreMode::Set | StoreMode::Replace => insert(shard, op.value, op.flags, op.exptime),
        };
        match result {
            Ok((_, cas)) => Stored::Stored(cas),
            Err(_) => {
                counters.incr(Counter::StoreNoMemory);
                Stored::NoMemory
            }
        }
    })
}

fn touch(ctx: &mut Ctx<'_>, key: &[u8], exptime: i32, noreply: bool) {
    let now = ctx.now;
    let exptime = absolute_exptime(exptime, now);
    let hit = with_item(ctx.engine, now, key, |shard, _, idx| {
        let idx = idx?;
        shard.bump(idx, now);
        let version = new_version(ctx.engine);
        let it = shard.item_mut(idx);
        it.fetched = true;
        it.exptime = exptime;
        it.version = version;
        emit_item(&mut ctx.repl, it);
        Some(())
    });
    ctx.counters.incr(Counter::CmdTouch);
    if hit.is_some() {
        ctx.counters.incr(Counter::TouchHits);
        reply(ctx, "TOUCHED", noreply);
    } else {
        ctx.counters.incr(Counter::TouchMisses);
        reply(ctx, "NOT_FOUND", noreply);
    }
}

/// The result of incr/decr, with what meta replies need to report.
enum Delta {
    Ok { value: u64, cas: u64, exptime: u32 },
    NonNumeric,
    NotFound,
    CasMismatch,
}

/// memcached's `do_add_delta`: 64-bit unsigned arithmetic, incr wraps, decr stops at 0; a
/// result no longer than the old value is written in place, padded with spaces.
fn add_delta(ctx: &mut Ctx<'_>, key: &[u8], incr: bool, delta: u64, req_cas: u64) -> Delta {
    let engine = ctx.engine;
    let now = ctx.now;
    let repl = &mut ctx.repl;
    let result = with_item(engine, now, key, |shard, hash, idx| {
        let Some(idx) = idx else {
            return Delta::NotFound;
        };
        let (current, flags, exptime) = {
            let it = shard.item(idx);
            if it.value().is_empty() {
                return Delta::NonNumeric;
            }
            if req_cas != 0 && it.cas != req_cas {
                return Delta::CasMismatch;
            }
            let Some(v) = super::cnum::strtoull(it.value()) else {
                return Delta::NonNumeric;
            };
            (v, it.flags, it.exptime)
        };
        let value = if incr {
            current.wrapping_add(delta)
        } else {
            current.saturating_sub(delta)
        };
        let mut digits = Vec::with_capacity(20);
        push_u64(&mut digits, value);
        let old_len = shard.item(idx).value().len();
        let new_cas = engine.store.next_cas();
        if digits.len() <= old_len {
            digits.resize(old_len, b' ');
            shard.overwrite_value(idx, &digits);
            let it = shard.item_mut(idx);
            it.cas = new_cas;
            it.version = new_version(engine);
            emit_item(repl, it);
            shard.bump(idx, now);
            return Delta::Ok {
                value,
                cas: new_cas,
                exptime,
            };
        }
        let new = NewItem {
            key,
            value: &digits,
            flags,
            exptime,
            cas: new_cas,
            version: new_version(engine),
        };
        match shard.insert(hash, new, now, engine.store.hasher()) {
            Ok(i) => {
                emit_item(repl, shard.item(i));
                Delta::Ok {
                    value,
                    cas: new_cas,
                    exptime,
                }
            }
            Err(_) => Delta::NotFound,
        }
    });
    let (hit, miss) = if incr {
        (Counter::IncrHits, Counter::IncrMisses)
    } else {
        (Counter::DecrHits, Counter::DecrMisses)
    };
    match result {
        Delta::Ok { .. } => ctx.counters.incr(hit),
        Delta::NotFound => ctx.counters.incr(miss),
        _ => {}
    }
    result
}

/// Appends ` k<key>`, base64-encoding binary keys.
fn push_key_flag(out: &mut Vec<u8>, key: &[u8], binary: bool) {
    out.extend_from_slice(b" k");
    if binary {
        base64_encode(key, out);
        out.extend_from_slice(b" b");
    } else {
        out.extend_from_slice(key);
    }
}

fn opaque_too_long(tokens: &FlagTokens<'_>) -> bool {
    tokens
        .iter()
        .any(|t| t[0] == b'O' && t.len() > MAX_OPAQUE_LENGTH)
}

/// Echoes `O` and `k` tokens, the only flags a meta miss or failure reports.
fn push_opaque_and_key(out: &mut Vec<u8>, tokens: &FlagTokens<'_>, key: &[u8], binary: bool) {
    for t in tokens.iter() {
        match t[0] {
            b'O' => {
                out.push(b' ');
                out.extend_from_slice(t);
            }
            b'k' => push_key_flag(out, key, binary),
            _ => {}
        }
    }
}

/// Remaining TTL as the meta `t` flag prints it: -1 for "never".
fn push_ttl(out: &mut Vec<u8>, exptime: u32, now: u32) {
    if exptime == 0 {
        out.extend_from_slice(b"-1");
    } else {
        push_u64(out, u64::from(exptime.wrapping_sub(now)));
    }
}

fn meta_get(ctx: &mut Ctx<'_>, key: &[u8], of: &MetaFlags, tokens: FlagTokens<'_>) {
    ctx.counters.incr(Counter::CmdMeta);
    let now = ctx.now;
    let engine = ctx.engine;
    let start = ctx.out.len();
    let out = &mut *ctx.out;
    let repl = &mut ctx.repl;
    let mut ttl_set = false;
    let outcome = with_item(engine, now, key, |shard, hash, idx| {
        let mut created = false;
        let idx = match idx {
            Some(i) => i,
            None if of.vivify => {
                let new = NewItem {
                    key,
                    value: b"",
                    flags: 0,
                    exptime: 0,
                    cas: engine.store.next_cas(),
                    version: new_version(engine),
                };
                match shard.insert(hash, new, now, engine.store.hasher()) {
                    Ok(i) => {
                        created = true;
                        i
                    }
                    Err(_) => return Err(false),
                }
            }
            None => return Err(false),
        };
        let was_fetched = shard.item(idx).fetched;
        // memcached bumps (and marks fetched) at lookup unless a flag needs the item's state
        // from before this request; then it bumps after replying, and not at all on error.
        let bump_late = tokens
            .iter()
            .any(|t| matches!(t[0], b'T' | b'N' | b'R' | b'l' | b'h'));
        if !of.no_update && !bump_late {
            shard.item_mut(idx).fetched = true;
        }
        let mut won = false;
        {
            let it = shard.item(idx);
            if of.value {
                out.extend_from_slice(b"VA ");
                push_u64(out, it.value().len() as u64);
            } else {
                out.extend_from_slice(b"HD");
            }
        }
        for t in tokens.iter() {
            let it = shard.item_mut(idx);
            match t[0] {
                b'T' => {
                    ttl_set = true;
                    it.exptime = absolute_exptime(of.exptime, now);
                    it.version = new_version(engine);
                }
                b'N' if created => {
                    it.exptime = absolute_exptime(of.autoviv_exptime, now);
                    won = true;
                }
                b'R' => {
                    let recache = absolute_exptime(of.recache_time.unwrap_or(0), now);
                    if !it.token_sent && !created && it.exptime != 0 && it.exptime < recache {
                        won = true;
                    }
                }
                b's' => {
                    out.extend_from_slice(b" s");
                    push_u64(out, it.value().len() as u64);
                }
                b't' => {
                    out.extend_from_slice(b" t");
                    push_ttl(out, it.exptime, now);
                }
                b'c' => {
                    out.extend_from_slice(b" c");
                    push_u64(out, it.cas);
                }
                b'f' => {
                    out.extend_from_slice(b" f");
                    push_u64(out, u64::from(it.flags));
                }
                b'l' => {
                    out.extend_from_slice(b" l");
                    push_u64(out, u64::from(now.saturating_sub(it.time)));
                }
                b'h' => {
                    out.extend_from_slice(if was_fetched { b" h1" } else { b" h0" });
                }
                b'O' => {
                    if t.len() > MAX_OPAQUE_LENGTH {
                        // Changes made by earlier flags stand, as in memcached.
                        if created || ttl_set {
                            emit_item(repl, it);
                        }
                        return Err(true);
                    }
                    out.push(b' ');
                    out.extend_from_slice(t);
                }
                b'k' => {
                    let binary = it.key_binary;
                    push_key_flag(out, key, binary);
                }
                _ => {}
            }
        }
        let it = shard.item_mut(idx);
        if created || ttl_set {
            emit_item(repl, it);
        }
        if it.token_sent {
            out.extend_from_slice(b" Z");
        }
        if it.stale {
            out.extend_from_slice(b" X");
            if !it.token_sent {
                won = true;
            }
        }
        if won {
            out.extend_from_slice(b" W");
            it.token_sent = true;
        }
        out.extend_from_slice(b"\r\n");
        if of.value {
            out.extend_from_slice(it.value());
            out.extend_from_slice(b"\r\n");
        }
        if !of.no_update {
            it.fetched = true;
            shard.bump(idx, now);
        }
        Ok(())
    });
    let (cmd, hit, miss) = if ttl_set {
        (Counter::CmdTouch, Counter::TouchHits, Counter::TouchMisses)
    } else {
        (Counter::CmdGet, Counter::GetHits, Counter::GetMisses)
    };
    ctx.counters.incr(cmd);
    match outcome {
        Ok(()) => ctx.counters.incr(hit),
        Err(true) => {
            ctx.out.truncate(start);
            line(ctx.out, "CLIENT_ERROR opaque token too long");
        }
        Err(false) => {
            ctx.counters.incr(miss);
            if opaque_too_long(&tokens) {
                line(ctx.out, "CLIENT_ERROR opaque token too long");
            } else if !of.no_reply {
                ctx.out.extend_from_slice(b"EN");
                push_opaque_and_key(ctx.out, &tokens, key, of.key_binary);
                ctx.out.extend_from_slice(b"\r\n");
            }
        }
    }
}

fn meta_set(ctx: &mut Ctx<'_>, key: &[u8], of: &MetaFlags, tokens: FlagTokens<'_>, data: &[u8]) {
    ctx.counters.incr(Counter::CmdSet);
    let mut mode = match of.mode {
        Some(b'E') => StoreMode::Add,
        Some(b'A') => StoreMode::Append,
        Some(b'P') => StoreMode::Prepend,
        Some(b'R') => StoreMode::Replace,
        _ => StoreMode::Set,
    };
    if of.has_cas && matches!(mode, StoreMode::Set | StoreMode::Replace) {
        mode = StoreMode::Cas;
    }
    let exptime = if of.new_ttl {
        absolute_exptime(of.exptime, ctx.now)
    } else {
        0
    };
    let op = StoreOp {
        mode,
        key,
        flags: of.client_flags,
        exptime,
        value: data,
        req_cas: of.req_cas_id,
        set_stale: of.set_stale && mode == StoreMode::Cas,
    };
    let result = store(ctx, &op);
    // Append and prepend build a new item from the old one, which memcached leaves unmarked.
    if of.key_binary && !matches!(mode, StoreMode::Append | StoreMode::Prepend) {
        if let Stored::Stored(_) = result {
            with_item(ctx.engine, ctx.now, key, |shard, _, idx| {
                if let Some(i) = idx {
                    shard.item_mut(i).key_binary = true;
                }
            });
        }
    }
    let (code, cas) = match result {
        Stored::Stored(cas) => {
            if of.no_reply {
                return;
            }
            ("HD", cas)
        }
        Stored::Exists => ("EX", 0),
        Stored::NotFound => ("NF", 0),
        Stored::NotStored => ("NS", 0),
        Stored::NoMemory => {
            line(ctx.out, "SERVER_ERROR out of memory storing object");
            return;
        }
    };
    let out = &mut *ctx.out;
    out.extend_from_slice(code.as_bytes());
    for t in tokens.iter() {
        match t[0] {
            b'O' => {
                out.push(b' ');
                out.extend_from_slice(t);
            }
            b'k' => push_key_flag(out, key, of.key_binary),
            b'c' => {
                out.extend_from_slice(b" c");
                push_u64(out, cas);
            }
            _ => {}
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn meta_delete(ctx: &mut Ctx<'_>, key: &[u8], of: &MetaFlags, tokens: FlagTokens<'_>) {
    ctx.counters.incr(Counter::CmdMeta);
    if opaque_too_long(&tokens) {
        line(ctx.out, "CLIENT_ERROR opaque token too long");
        return;
    }
    let now = ctx.now;
    let engine = ctx.engine;
    let repl = &mut ctx.repl;
    let code = with_item(engine, now, key, |shard, hash, idx| {
        let Some(idx) = idx else { return "NF" };
        if of.has_cas && shard.item(idx).cas != of.req_cas_id {
            return "EX";
        }
        if of.set_stale {
            // Staleness is this node's recache bookkeeping; only a TTL change replicates.
            let cas = engine.store.next_cas();
            let it = shard.item_mut(idx);
            if of.new_ttl {
                it.exptime = absolute_exptime(of.exptime, now);
                it.version = new_version(engine);
                emit_item(repl, it);
            }
            it.stale = true;
            it.token_sent = false;
            it.cas = cas;
        } else {
            let version = new_version(engine);
            shard.remove(hash, idx);
            shard.bury(key, version, now);
            emit_delete(repl, key, version);
        }
        "HD"
    });
    match code {
        "HD" => ctx.counters.incr(Counter::DeleteHits),
        _ => ctx.counters.incr(Counter::DeleteMisses),
    }
    if code == "HD" && of.no_reply {
        return;
    }
    ctx.out.extend_from_slice(code.as_bytes());
    push_opaque_and_key(ctx.out, &tokens, key, of.key_binary);
    ctx.out.extend_from_slice(b"\r\n");
}

fn meta_arith(ctx: &mut Ctx<'_>, key: &[u8], of: &MetaFlags, tokens: FlagTokens<'_>) {
    ctx.counters.incr(Counter::CmdMeta);
    let incr = match of.mode {
        None | Some(b'I' | b'+') => true,
        Some(b'D' | b'-') => false,
        Some(_) => {
            line(ctx.out, "CLIENT_ERROR invalid mode for ma M token");
            return;
        }
    };
    let delta = if tokens.iter().any(|t| t[0] == b'D') {
        of.delta
    } else {
        1
    };
    let now = ctx.now;
    let mut created = false;
    let result = match add_delta(ctx, key, incr, delta, of.req_cas_id) {
        Delta::NotFound if of.vivify => {
            let mut digits = Vec::with_capacity(20);
            push_u64(&mut digits, of.initial);
            let op = StoreOp {
                mode: StoreMode::Add,
                key,
                flags: 0,
                exptime: 0,
                value: &digits,
                req_cas: 0,
                set_stale: false,
            };
            match store(ctx, &op) {
                Stored::Stored(cas) => {
                    created = true;
                    Delta::Ok {
                        value: of.initial,
                        cas,
                        exptime: 0,
                    }
                }
                Stored::NoMemory => {
                    line(ctx.out, "SERVER_ERROR Out of memory allocating new item");
                    return;
                }
                _ => {
                    ctx.out.extend_from_slice(b"NS");
                    push_opaque_and_key(ctx.out, &tokens, key, of.key_binary);
                    ctx.out.extend_from_slice(b"\r\n");
                    return;
                }
            }
        }
        other => other,
    };
    let (value, cas, mut exptime) = match result {
        Delta::Ok {
            value,
            cas,
            exptime,
        } => (value, cas, exptime),
        Delta::NonNumeric => {
            line(
                ctx.out,
                "CLIENT_ERROR cannot increment or decrement non-numeric value",
            );
            return;
        }
        Delta::NotFound | Delta::CasMismatch => {
            let code: &[u8] = if matches!(result, Delta::NotFound) {
                b"NF"
            } else {
                b"EX"
            };
            if opaque_too_long(&tokens) {
                line(ctx.out, "CLIENT_ERROR opaque token too long");
                return;
            }
            ctx.out.extend_from_slice(code);
            push_opaque_and_key(ctx.out, &tokens, key, of.key_binary);
            ctx.out.extend_from_slice(b"\r\n");
            return;
        }
    };
    let mut digits = Vec::with_capacity(20);
    push_u64(&mut digits, value);
    let start = ctx.out.len();
    let out = &mut *ctx.out;
    if of.value {
        out.extend_from_slice(b"VA ");
        push_u64(out, digits.len() as u64);
    } else {
        out.extend_from_slice(b"HD");
    }
    let mut new_exptime = None;
    for t in tokens.iter() {
        match t[0] {
            b'c' => {
                out.extend_from_slice(b" c");
                push_u64(out, cas);
            }
            b't' => {
                out.extend_from_slice(b" t");
                push_ttl(out, exptime, now);
            }
            b'T' => {
                exptime = absolute_exptime(of.exptime, now);
                new_exptime = Some(exptime);
            }
            b'N' if created => {
                exptime = absolute_exptime(of.autoviv_exptime, now);
                new_exptime = Some(exptime);
            }
            b'O' => {
                if t.len() > MAX_OPAQUE_LENGTH {
                    out.truncate(start);
                    line(out, "CLIENT_ERROR opaque token too long");
                    // Like memcached, TTL flags before the bad opaque still took effect.
                    if let Some(e) = new_exptime {
                        set_exptime(ctx, key, e);
                    }
                    return;
                }
                out.push(b' ');
                out.extend_from_slice(t);
            }
            b'k' => push_key_flag(out, key, of.key_binary),
            _ => {}
        }
    }
    if let Some(e) = new_exptime {
        set_exptime(ctx, key, e);
    }
    let out = &mut *ctx.out;
    // Quiet mode hides a successful result, but not the reply for an auto-created item.
    if of.no_reply && !created {
        out.truncate(start);
        return;
    }
    out.extend_from_slice(b"\r\n");
    if of.value {
        out.extend_from_slice(&digits);
        out.extend_from_slice(b"\r\n");
    }
}

fn set_exptime(ctx: &mut Ctx<'_>, key: &[u8], exptime: u32) {
    let engine = ctx.engine;
    let repl = &mut ctx.repl;
    with_item(engine, ctx.now, key, |shard, _, idx| {
        if let Some(i) = idx {
            let it = shard.item_mut(i);
            it.exptime = exptime;
            it.version = new_version(engine);
            emit_item(repl, it);
        }
    });
}

fn meta_debug(ctx: &mut Ctx<'_>, key: &[u8]) {
    ctx.counters.incr(Counter::CmdMeta);
    let now = ctx.now;
    let engine = ctx.engine;
    let text = with_item(engine, now, key, |shard, _, idx| {
        let it = shard.item(idx?);
        let exp: i64 = if it.exptime == 0 {
            -1
        } else {
            i64::from(now) - i64::from(it.exptime)
        };
        let mut key_text = Vec::new();
        if it.key_binary {
            base64_encode(it.key(), &mut key_text);
        } else {
            key_text.extend_from_slice(it.key());
        }
        Some(format!(
            "ME {} exp={} la={} cas={} fetch={} cls=1 size={}",
            String::from_utf8_lossy(&key_text),
            exp,
            now.saturating_sub(it.time),
            it.cas,
            if it.fetched { "yes" } else { "no" },
            engine.item_total_size(it.key().len(), it.flags, it.value().len()),
        ))
    });
    line(ctx.out, text.as_deref().unwrap_or("EN"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CacheConfig;

    const T0: u32 = 1_800_000_000;

    fn engine() -> Engine {
        Engine::new("master", CacheConfig::default())
    }

    fn run(engine: &Engine, now: u32, input: &str) -> String {
        String::from_utf8_lossy(&run_text(engine, now, input.as_bytes())).into_owned()
    }

    #[test]
    fn a_get_larger_than_a_reply_chunk_stops_and_resumes_where_it_left_off() {
        let e = engine();
        let value = "v".repeat(REPLY_CHUNK / 2 + 1);
        run(
            &e,
            T0,
            &format!(
                "set a 0 0 {0}\r\n{value}\r\nset b 0 0 {0}\r\n{value}\r\nset c 0 0 {0}\r\n{value}\r\n",
                value.len()
            ),
        );
        let mut out = Vec::new();
        let mut counters = LocalCounters::default();
        let mut ctx = Ctx {
            engine: &e,
            now: T0,
            out: &mut out,
            counters: &mut counters,
            repl: None,
        };
        let Flow::More(rest) = get(&mut ctx, b"a  b missing c", false, None) else {
            panic!("two values fill a chunk");
        };
        assert_eq!(rest.keys, b"missing c");
        // Nothing was sent here, so the buffer stays over a chunk and every resume answers
        // one more key: still progress, never a loop.
        let Flow::More(rest) = rest.resume(&mut ctx) else {
            panic!("still over a chunk");
        };
        assert_eq!(rest.keys, b"c");
        assert_eq!(rest.resume(&mut ctx), Flow::Continue);
        let one = |k: &str| format!("VALUE {k} 0 {}\r\n{value}\r\n", value.len());
        let whole = format!("{}{}{}END\r\n", one("a"), one("b"), one("c"));
        assert!(out == whole.as_bytes(), "the pieces make the whole reply");
        // A bad key anywhere answers the whole get with an error, before any value.
        let bad = format!("get a b {}\r\n", "k".repeat(KEY_MAX_LENGTH + 1));
        assert_eq!(
            run(&e, T0, &bad),
            "CLIENT_ERROR bad command line format\r\n"
        );
    }

    #[test]
    fn relative_absolute_and_negative_exptimes() {
        let e = engine();
        run(
            &e,
            T0,
            "set rel 0 100 1\r\nx\r\nset abs 0 1800000050 1\r\nx\r\nset neg 0 -1 1\r\nx\r\n",
        );
        run(
            &e,
            T0,
            "set past 0 1700000000 1\r\nx\r\nset max 0 2592000 1\r\nx\r\n",
        );
        assert_eq!(run(&e, T0, "get neg past\r\n"), "END\r\n");
        assert_eq!(run(&e, T0 + 49, "mg abs t\r\n"), "HD t1\r\n");
        assert_eq!(run(&e, T0 + 50, "mg abs\r\n"), "EN\r\n");
        assert_eq!(run(&e, T0 + 99, "mg rel t\r\n"), "HD t1\r\n");
        assert_eq!(run(&e, T0 + 100, "mg rel\r\n"), "EN\r\n");
        assert_eq!(run(&e, T0 + 2_591_999, "mg max t\r\n"), "HD t1\r\n");
    }

    #[test]
    fn touch_and_gat_move_expiry() {
        let e = engine();
        run(&e, T0, "set k 0 10 1\r\nx\r\n");
        assert_eq!(run(&e, T0 + 5, "touch k 100\r\n"), "TOUCHED\r\n");
        assert_eq!(
            run(&e, T0 + 50, "gat 0 k\r\n"),
            "VALUE k 0 1\r\nx\r\nEND\r\n"
        );
        assert_eq!(run(&e, T0 + 10_000, "mg k t\r\n"), "HD t-1\r\n");
    }

    #[test]
    fn cas_values_are_unique_and_checked() {
        let e = engine();
        assert_eq!(
            run(&e, T0, "ms a 1 c\r\nx\r\nms b 1 c\r\nx\r\n"),
            "HD c1\r\nHD c2\r\n"
        );
        assert_eq!(run(&e, T0, "cas a 0 0 1 2\r\ny\r\n"), "EXISTS\r\n");
        assert_eq!(run(&e, T0, "cas a 0 0 1 0\r\ny\r\n"), "EXISTS\r\n");
        assert_eq!(run(&e, T0, "cas a 0 0 1 1\r\ny\r\n"), "STORED\r\n");
        assert_eq!(run(&e, T0, "gets a\r\n"), "VALUE a 0 1 3\r\ny\r\nEND\r\n");
        assert_eq!(
            run(&e, T0, "incr missing 1\r\nmg a c\r\n"),
            "NOT_FOUND\r\nHD c3\r\n"
        );
    }

    #[test]
    fn cas_disabled_reports_zero() {
        let e = Engine::new(
            "master",
            CacheConfig {
                disable_cas: true,
                ..CacheConfig::default()
            },
        );
        assert_eq!(
            run(&e, T0, "set a 0 0 1\r\nx\r\ngets a\r\n"),
            "STORED\r\nVALUE a 0 1 0\r\nx\r\nEND\r\n"
        );
    }

    #[test]
    fn incr_decr_edges() {
        let e = engine();
        run(
            &e,
            T0,
            "set n 0 0 20\r\n18446744073709551614\r\nset d 0 0 3\r\n100\r\n",
        );
        assert_eq!(run(&e, T0, "incr n 3\r\n"), "1\r\n");
        assert_eq!(
            run(&e, T0, "get n\r\n"),
            "VALUE n 0 20\r\n1                   \r\nEND\r\n"
        );
        assert_eq!(
            run(&e, T0, "decr d 1\r\nget d\r\n"),
            "99\r\nVALUE d 0 3\r\n99 \r\nEND\r\n"
        );
        assert_eq!(run(&e, T0, "decr d 1000\r\n"), "0\r\n");
        assert_eq!(
            run(&e, T0, "incr d 12345\r\nget d\r\n"),
            "12345\r\nVALUE d 0 5\r\n12345\r\nEND\r\n"
        );
        run(&e, T0, "set e 0 0 0\r\n\r\nset neg 0 0 2\r\n-1\r\n");
        let non_numeric = "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n";
        assert_eq!(run(&e, T0, "incr e 1\r\n"), non_numeric);
        assert_eq!(run(&e, T0, "incr neg 1\r\n"), non_numeric);
        assert_eq!(
            run(&e, T0, "incr d 18446744073709551616\r\n"),
            "CLIENT_ERROR invalid numeric delta argument\r\n"
        );
    }

    #[test]
    fn flush_all_now_and_delayed() {
        let e = engine();
        run(&e, T0, "set a 0 0 1\r\nx\r\n");
        assert_eq!(run(&e, T0, "flush_all\r\nget a\r\n"), "OK\r\nEND\r\n");
        run(&e, T0, "set b 0 0 1\r\nx\r\n");
        assert_eq!(run(&e, T0, "flush_all 10\r\n"), "OK\r\n");
        assert_eq!(run(&e, T0 + 8, "get b\r\n"), "VALUE b 0 1\r\nx\r\nEND\r\n");
        assert_eq!(run(&e, T0 + 9, "get b\r\n"), "END\r\n");
        let disabled = Engine::new(
            "master",
            CacheConfig {
                disable_flush_all: true,
                ..CacheConfig::default()
            },
        );
        assert_eq!(
            run(&disabled, T0, "flush_all\r\n"),
            "CLIENT_ERROR flush_all not allowed\r\n"
        );
    }

    #[test]
    fn a_slave_without_a_complete_copy_refuses_data_commands() {
        use crate::config::ReplicationConfig;
        let config = CacheConfig {
            replication: Some(ReplicationConfig::default()),
            ..CacheConfig::default()
        };
        let slave = Engine::new("slave", config);
        let refused = format!("{NOT_SERVING}\r\n");
        assert_eq!(run(&slave, T0, "get k\r\n"), refused);
        assert_eq!(
            run(&slave, T0, "set k 0 0 1\r\nx\r\nmn\r\n"),
            format!("{refused}MN\r\n")
        );
        assert!(run(&slave, T0, "version\r\n").starts_with("VERSION "));
        slave.repl.as_ref().expect("replicating").set_serving(true);
        assert_eq!(run(&slave, T0, "set k 0 0 1\r\nx\r\n"), "STORED\r\n");
    }

    #[test]
    fn stale_while_revalidate_hands_out_one_win() {
        let e = engine();
        run(&e, T0, "ms k 1 T100\r\nx\r\n");
        assert_eq!(run(&e, T0, "md k I T30\r\n"), "HD\r\n");
        assert_eq!(run(&e, T0, "mg k v c\r\n"), "VA 1 c2 X W\r\nx\r\n");
        assert_eq!(run(&e, T0, "mg k v\r\n"), "VA 1 Z X\r\nx\r\n");
        // An older CAS with I still stores, keeping the item stale and its token state.
        assert_eq!(run(&e, T0, "ms k 1 C1 I\r\ny\r\n"), "HD\r\n");
        assert_eq!(run(&e, T0, "mg k v c\r\n"), "VA 1 c3 Z X\r\ny\r\n");
        assert_eq!(run(&e, T0, "ms k 1 C2\r\nz\r\n"), "EX\r\n");
        assert_eq!(
            run(&e, T0, "ms k 1 C3\r\nz\r\nmg k v\r\n"),
            "HD\r\nVA 1\r\nz\r\n"
        );
    }
}
