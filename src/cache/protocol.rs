//! Pure parsing of memcached's text and meta protocols: a byte buffer in, one `Request` out.
//!
//! The rules follow memcached 1.6 (`proto_text.c`) closely because clients and tools depend on
//! its exact replies, including for malformed input: the same tokenizer (spaces only, at most 24
//! tokens, a NUL ends the line), the same token-count checks (`ERROR`), the same number parsing,
//! and the same order of checks. Incomplete input is not an error: every strict prefix of a
//! valid request parses to `Ok(None)`.

use std::borrow::Cow;

use super::cnum::{strtol32, strtoul32, strtoull};
use super::meta::{self, MAX_OPT_TOKENS, MetaFlags};

/// Longest key memcached accepts.
pub const KEY_MAX_LENGTH: usize = 250;
/// memcached's tokenizer stops after this many tokens (including the terminator).
const MAX_TOKENS: usize = 24;
/// Bytes without a newline after which a connection is dropped (memcached's 2048)...
pub const LINE_LIMIT: usize = 2048;
/// ...except for multi-gets, which are legitimately long. memcached leaves them unbounded; a
/// bound keeps one client from taking unbounded memory.
pub const MULTIGET_LINE_LIMIT: usize = 16 << 20;

/// Server settings the parser needs to judge a request.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    /// `-I`: the largest item, header included, as memcached counts it.
    pub item_size_max: usize,
    /// `-C` turns CAS off, which makes items 8 bytes smaller.
    pub cas_enabled: bool,
}

/// Input the connection cannot continue from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// No newline within the line limit.
    LineTooLong,
}

/// The storage commands of the classic protocol (and the modes `ms` maps onto them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
}

/// A key as the client named it: borrowed from the buffer, or decoded from base64 (`b`).
pub type Key<'a> = Cow<'a, [u8]>;

/// One parsed request. Borrowed slices point into the connection's read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// A reply decided by the parser (a malformed line). `noreply` suppresses it, as memcached
    /// does for classic commands once it has seen the `noreply` token.
    Reply {
        text: &'static str,
        noreply: bool,
    },
    /// `get gets gat gats bget`: `keys` is the rest of the line (space separated).
    Get {
        keys: &'a [u8],
        with_cas: bool,
        touch: Option<i32>,
    },
    Store {
        mode: StoreMode,
        key: &'a [u8],
        flags: u32,
        exptime: i32,
        cas: u64,
        data: &'a [u8],
        noreply: bool,
    },
    /// A storage command whose data block did not end in `\r\n`.
    BadDataChunk {
        noreply: bool,
    },
    /// A value over the item size limit: memcached replies with an error, throws away the data
    /// block as it arrives, and a plain `set` also removes the old value.
    TooLarge {
        key: &'a [u8],
        unlink: bool,
        noreply: bool,
        swallow: usize,
    },
    Touch {
        key: &'a [u8],
        exptime: i32,
        noreply: bool,
    },
    Arith {
        key: &'a [u8],
        incr: bool,
        delta: u64,
        noreply: bool,
    },
    Delete {
        key: &'a [u8],
        noreply: bool,
    },
    FlushAll {
        delay: i32,
        noreply: bool,
    },
    Version,
    Verbosity {
        level: u32,
        noreply: bool,
    },
    Quit,
    /// `stats` with its (possibly empty) sub-command.
    Stats {
        sub: &'a [u8],
    },
    /// `mn`: always answered, so clients use it as a pipeline barrier.
    MetaNoop,
    MetaGet {
        key: Key<'a>,
        flags: MetaFlags,
        tokens: FlagTokens<'a>,
    },
    MetaSet {
        key: Key<'a>,
        flags: MetaFlags,
        tokens: FlagTokens<'a>,
        data: &'a [u8],
    },
    MetaDelete {
        key: Key<'a>,
        flags: MetaFlags,
        tokens: FlagTokens<'a>,
    },
    MetaArith {
        key: Key<'a>,
        flags: MetaFlags,
        tokens: FlagTokens<'a>,
    },
    MetaDebug {
        key: Key<'a>,
    },
    /// `ms` with a value over the item size limit: error, drop the old value, swallow the data.
    MetaTooLarge {
        key: Key<'a>,
        swallow: usize,
    },
    /// A meta error that must be sent even in quiet mode; `swallow` data bytes follow it.
    MetaError {
        text: &'static str,
        swallow: usize,
    },
    /// Someone spoke HTTP to us: close without a reply, as memcached does.
    Close,
}

/// The flag tokens of a meta command, kept in order because replies echo them in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagTokens<'a> {
    toks: [&'a [u8]; MAX_OPT_TOKENS],
    len: usize,
}

impl<'a> FlagTokens<'a> {
    fn new(src: &[&'a [u8]]) -> Self {
        let mut toks: [&'a [u8]; MAX_OPT_TOKENS] = [&[]; MAX_OPT_TOKENS];
        let len = src.len().min(MAX_OPT_TOKENS);
        toks[..len].copy_from_slice(&src[..len]);
        FlagTokens { toks, len }
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.toks[..self.len].iter().copied()
    }
}

/// memcached's `tokenize_command`: split on spaces only, at most 23 tokens plus a terminator
/// that records whether anything was left unscanned.
struct Tokens<'a> {
    toks: [&'a [u8]; MAX_TOKENS],
    len: usize,
}

impl<'a> Tokens<'a> {
    fn split(line: &'a [u8]) -> Self {
        let mut toks: [&'a [u8]; MAX_TOKENS] = [&[]; MAX_TOKENS];
        let mut len = 0;
        for tok in line.split(|&b| b == b' ').filter(|t| !t.is_empty()) {
            toks[len] = tok;
            len += 1;
            if len == MAX_TOKENS - 1 {
                break;
            }
        }
        Tokens { toks, len }
    }

    /// memcached's `ntokens`: the real tokens plus the terminator.
    fn ntokens(&self) -> usize {
        self.len + 1
    }

    fn get(&self, i: usize) -> &'a [u8] {
        if i < self.len { self.toks[i] } else { &[] }
    }

    /// memcached's `set_noreply_maybe`: the last real token is `noreply`.
    fn noreply(&self) -> bool {
        self.len >= 1 && self.toks[self.len - 1] == b"noreply"
    }
}

const ERROR: &str = "ERROR";
const BAD_FORMAT: &str = "CLIENT_ERROR bad command line format";

/// Whether a key is acceptable: memcached's length bound, plus no control characters (they
/// cannot be sent back safely in a `VALUE` line and are never intentional).
pub fn key_ok(key: &[u8]) -> bool {
    key.len() <= KEY_MAX_LENGTH && key.iter().all(|&b| b > b' ' && b != 0x7f)
}

/// Parses the next request at the start of `buf`. Returns the request and how many bytes it
/// used, `Ok(None)` if more bytes are needed, or an error if the connection must close.
pub fn parse<'a>(
    buf: &'a [u8],
    limits: &ParseLimits,
) -> Result<Option<(Request<'a>, usize)>, ParseError> {
    let Some(nl) = memchr::memchr(b'\n', buf) else {
        let too_long = (buf.len() > LINE_LIMIT && !may_be_long_multiget(buf))
            || buf.len() > MULTIGET_LINE_LIMIT;
        return if too_long {
            Err(ParseError::LineTooLong)
        } else {
            Ok(None)
        };
    };
    // memcached strips a '\r' only from lines of two or more bytes.
    let mut line = if nl > 1 && buf[nl - 1] == b'\r' {
        &buf[..nl - 1]
    } else {
        &buf[..nl]
    };
    // The C tokenizer works on a NUL-terminated string.
    if let Some(nul) = memchr::memchr(0, line) {
        line = &line[..nul];
    }
    let used = nl + 1;
    let rest = &buf[used..];
    let toks = Tokens::split(line);
    let request = match command(&toks, line, rest, limits) {
        Parsed::Done(r) => (r, used),
        Parsed::WithData(r, data_len) => (r, used + data_len),
        Parsed::NeedData => return Ok(None),
    };
    Ok(Some(request))
}

/// memcached lets an over-long line live only if it looks like a multi-get.
fn may_be_long_multiget(buf: &[u8]) -> bool {
    let spaces = buf.iter().take_while(|&&b| b == b' ').count();
    let rest = &buf[spaces..];
    spaces <= 100 && (rest.starts_with(b"get ") || rest.starts_with(b"gets "))
}

enum Parsed<'a> {
    Done(Request<'a>),
    /// The request also consumed this many bytes after the line.
    WithData(Request<'a>, usize),
    NeedData,
}

fn reply(text: &'static str) -> Parsed<'static> {
    Parsed::Done(Request::Reply {
        text,
        noreply: false,
    })
}

fn command<'a>(
    toks: &Tokens<'a>,
    line: &'a [u8],
    rest: &'a [u8],
    limits: &ParseLimits,
) -> Parsed<'a> {
    let n = toks.ntokens();
    let cmd = toks.get(0);
    if n < 2 || cmd.len() < 2 {
        return reply(ERROR);
    }
    if cmd[0] == b'm' && cmd.len() == 2 {
        return match cmd[1] {
            b'g' => meta_get(toks),
            b's' => meta_set(toks, rest, limits),
            b'd' => meta_keyed(toks, MetaKind::Delete),
            b'a' => meta_keyed(toks, MetaKind::Arith),
            b'n' => Parsed::Done(Request::MetaNoop),
            b'e' => meta_debug(toks),
            _ => reply(ERROR),
        };
    }
    match cmd {
        b"get" | b"bget" => get(toks, line, false, false),
        b"gets" => get(toks, line, true, false),
        b"gat" => get(toks, line, false, true),
        b"gats" => get(toks, line, true, true),
        b"set" => storage(toks, rest, StoreMode::Set, limits),
        b"add" => storage(toks, rest, StoreMode::Add, limits),
        b"replace" => storage(toks, rest, StoreMode::Replace, limits),
        b"append" => storage(toks, rest, StoreMode::Append, limits),
        b"prepend" => storage(toks, rest, StoreMode::Prepend, limits),
        b"cas" => storage(toks, rest, StoreMode::Cas, limits),
        b"incr" | b"decr" => arith(toks, cmd == b"incr"),
        b"delete" => delete(toks),
        b"touch" => touch(toks),
        b"flush_all" => flush_all(toks),
        b"stats" => Parsed::Done(Request::Stats { sub: toks.get(1) }),
        b"version" => Parsed::Done(Request::Version),
        b"quit" => Parsed::Done(Request::Quit),
        b"verbosity" => verbosity(toks),
        _ if toks.get(n - 2).starts_with(b"HTTP/") => Parsed::Done(Request::Close),
        _ => reply(ERROR),
    }
}

fn get<'a>(toks: &Tokens<'a>, line: &'a [u8], with_cas: bool, touch: bool) -> Parsed<'a> {
    if toks.ntokens() < 3 {
        return reply(ERROR);
    }
    let mut skip = 1;
    let touch = if touch {
        let Some(exptime) = strtol32(toks.get(1)) else {
            return reply("CLIENT_ERROR invalid exptime argument");
        };
        skip = 2;
        Some(exptime)
    } else {
        None
    };
    Parsed::Done(Request::Get {
        keys: after_tokens(line, skip),
        with_cas,
        touch,
    })
}

/// The part of `line` after its first `n` space-separated tokens.
fn after_tokens(line: &[u8], n: usize) -> &[u8] {
    let mut i = 0;
    for _ in 0..n {
        while i < line.len() && line[i] == b' ' {
            i += 1;
        }
        while i < line.len() && line[i] != b' ' {
            i += 1;
        }
    }
    &line[i..]
}

/// memcached's item header size for a key and value, as `item_size_ok` computes it.
pub fn item_total_size(nkey: usize, flags: u32, vlen_with_crlf: usize, cas: bool) -> usize {
    const ITEM_HEADER: usize = 48;
    let suffix = if flags == 0 { 0 } else { 4 };
    ITEM_HEADER + nkey + 1 + suffix + vlen_with_crlf + if cas { 8 } else { 0 }
}

fn storage<'a>(
    toks: &Tokens<'a>,
    rest: &'a [u8],
    mode: StoreMode,
    limits: &ParseLimits,
) -> Parsed<'a> {
    let n = toks.ntokens();
    let with_cas = mode == StoreMode::Cas;
    let ok_counts = if with_cas { [7, 8] } else { [6, 7] };
    if !ok_counts.contains(&n) {
        return reply(ERROR);
    }
    let noreply = toks.noreply();
    let bad = Parsed::Done(Request::Reply {
        text: BAD_FORMAT,
        noreply,
    });
    let key = toks.get(1);
    if !key_ok(key) {
        return bad;
    }
    let (Some(flags), Some(exptime), Some(vlen)) = (
        strtoul32(toks.get(2)),
        strtol32(toks.get(3)),
        strtol32(toks.get(4)),
    ) else {
        return bad;
    };
    let cas = if with_cas {
        match strtoull(toks.get(5)) {
            Some(c) => c,
            None => return bad,
        }
    } else {
        0
    };
    if !(0..=i32::MAX - 2).contains(&vlen) {
        return bad;
    }
    let vlen = vlen as usize + 2;
    if item_total_size(key.len(), flags, vlen, limits.cas_enabled) > limits.item_size_max {
        return Parsed::Done(Request::TooLarge {
            key,
            unlink: mode == StoreMode::Set,
            noreply,
            swallow: vlen,
        });
    }
    if rest.len() < vlen {
        return Parsed::NeedData;
    }
    let block = &rest[..vlen];
    let request = if block.ends_with(b"\r\n") {
        Request::Store {
            mode,
            key,
            flags,
            exptime,
            cas,
            data: &block[..vlen - 2],
            noreply,
        }
    } else {
        Request::BadDataChunk { noreply }
    };
    Parsed::WithData(request, vlen)
}

fn arith<'a>(toks: &Tokens<'a>, incr: bool) -> Parsed<'a> {
    if !matches!(toks.ntokens(), 4 | 5) {
        return reply(ERROR);
    }
    let noreply = toks.noreply();
    let key = toks.get(1);
    if !key_ok(key) {
        return Parsed::Done(Request::Reply {
            text: BAD_FORMAT,
            noreply,
        });
    }
    match strtoull(toks.get(2)) {
        Some(delta) => Parsed::Done(Request::Arith {
            key,
            incr,
            delta,
            noreply,
        }),
        None => Parsed::Done(Request::Reply {
            text: "CLIENT_ERROR invalid numeric delta argument",
            noreply,
        }),
    }
}

fn delete<'a>(toks: &Tokens<'a>) -> Parsed<'a> {
    let n = toks.ntokens();
    if !(3..=5).contains(&n) {
        return reply(ERROR);
    }
    let mut noreply = false;
    if n > 3 {
        let hold_is_zero = toks.get(2) == b"0";
        noreply = toks.noreply();
        let valid = (n == 4 && (hold_is_zero || noreply)) || (n == 5 && hold_is_zero && noreply);
        if !valid {
            return Parsed::Done(Request::Reply {
                text: "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]",
                noreply,
            });
        }
    }
    let key = toks.get(1);
    if !key_ok(key) {
        return Parsed::Done(Request::Reply {
            text: BAD_FORMAT,
            noreply,
        });
    }
    Parsed::Done(Request::Delete { key, noreply })
}

fn touch<'a>(toks: &Tokens<'a>) -> Parsed<'a> {
    if !matches!(toks.ntokens(), 4 | 5) {
        return reply(ERROR);
    }
    let noreply = toks.noreply();
    let key = toks.get(1);
    if !key_ok(key) {
        return Parsed::Done(Request::Reply {
            text: BAD_FORMAT,
            noreply,
        });
    }
    match strtol32(toks.get(2)) {
        Some(exptime) => Parsed::Done(Request::Touch {
            key,
            exptime,
            noreply,
        }),
        None => Parsed::Done(Request::Reply {
            text: "CLIENT_ERROR invalid exptime argument",
            noreply,
        }),
    }
}

fn flush_all<'a>(toks: &Tokens<'a>) -> Parsed<'a> {
    let n = toks.ntokens();
    if !(2..=4).contains(&n) {
        return reply(ERROR);
    }
    let noreply = toks.noreply();
    let mut delay = 0;
    if n != if noreply { 3 } else { 2 } {
        match strtol32(toks.get(1)) {
            Some(d) => delay = d,
            None => {
                return Parsed::Done(Request::Reply {
                    text: "CLIENT_ERROR invalid exptime argument",
                    noreply,
                });
            }
        }
    }
    Parsed::Done(Request::FlushAll { delay, noreply })
}

fn verbosity<'a>(toks: &Tokens<'a>) -> Parsed<'a> {
    if !matches!(toks.ntokens(), 3 | 4) {
        return reply(ERROR);
    }
    let noreply = toks.noreply();
    match strtoul32(toks.get(1)) {
        Some(level) => Parsed::Done(Request::Verbosity { level, noreply }),
        None => Parsed::Done(Request::Reply {
            text: BAD_FORMAT,
            noreply,
        }),
    }
}

/// A meta error: sent even in quiet mode.
fn meta_error(text: &'static str) -> Parsed<'static> {
    Parsed::Done(Request::MetaError { text, swallow: 0 })
}

/// The key a meta command names: decoded from base64 when `b` was given (preparse did that).
fn meta_key<'a>(raw: &'a [u8], flags: &mut MetaFlags) -> Result<Key<'a>, &'static str> {
    match flags.decoded_key.take() {
        Some(decoded) => Ok(Cow::Owned(decoded)),
        None if key_ok(raw) => Ok(Cow::Borrowed(raw)),
        None => Err(BAD_FORMAT),
    }
}

fn meta_get<'a>(toks: &Tokens<'a>) -> Parsed<'a> {
    let n = toks.ntokens();
    if n < 3 {
        return reply(ERROR);
    }
    if toks.get(1).len() > KEY_MAX_LENGTH {
        return meta_error(BAD_FORMAT);
    }
    if n > MAX_OPT_TOKENS {
        return meta_error("CLIENT_ERROR options flags are too long");
    }
    let flag_toks = &toks.toks[2..toks.len];
    let mut flags = match meta::preparse(flag_toks, toks.get(1)) {
        Ok(f) => f,
        Err(e) => return meta_error(e),
    };
    match meta_key(toks.get(1), &mut flags) {
        Ok(key) => Parsed::Done(Request::MetaGet {
            key,
            flags,
            tokens: FlagTokens::new(flag_toks),
        }),
        Err(e) => meta_error(e),
    }
}

#[derive(Clone, Copy)]
enum MetaKind {
    Delete,
    Arith,
}

fn meta_keyed<'a>(toks: &Tokens<'a>, kind: MetaKind) -> Parsed<'a> {
    let n = toks.ntokens();
    if n < 3 {
        return reply(ERROR);
    }
    // memcached sends these two errors through the quiet-aware path, but no `q` has been
    // parsed yet, so they are always sent.
    if toks.get(1).len() > KEY_MAX_LENGTH {
        return meta_error(BAD_FORMAT);
    }
    if n > MAX_OPT_TOKENS {
        return meta_error("CLIENT_ERROR options flags too long");
    }
    let flag_toks = &toks.toks[2..toks.len];
    let Ok(mut flags) = meta::preparse(flag_toks, toks.get(1)) else {
        return meta_error("CLIENT_ERROR invalid or duplicate flag");
    };
    let key = match meta_key(toks.get(1), &mut flags) {
        Ok(k) => k,
        Err(e) => return meta_error(e),
    };
    let tokens = FlagTokens::new(flag_toks);
    Parsed::Done(match kind {
        MetaKind::Delete => Request::MetaDelete { key, flags, tokens },
        MetaKind::Arith => Request::MetaArith { key, flags, tokens },
    })
}

fn meta_set<'a>(toks: &Tokens<'a>, rest: &'a [u8], limits: &ParseLimits) -> Parsed<'a> {
    let n = toks.ntokens();
    if n < 3 {
        return reply(ERROR);
    }
    if toks.get(1).len() > KEY_MAX_LENGTH || n == 3 {
        return meta_error(BAD_FORMAT);
    }
    if n > MAX_OPT_TOKENS {
        return meta_error("CLIENT_ERROR options flags too long");
    }
    let vlen = match strtol32(toks.get(2)) {
        Some(v) if (0..=i32::MAX - 2).contains(&v) => v as usize + 2,
        _ => return meta_error(BAD_FORMAT),
    };
    // From here on an error still has to throw away the data block the client sends.
    let swallowing = |text| {
        Parsed::Done(Request::MetaError {
            text,
            swallow: vlen,
        })
    };
    let flag_toks = &toks.toks[3..toks.len];
    let mut flags = match meta::preparse(flag_toks, toks.get(1)) {
        Ok(f) => f,
        Err(e) => return swallowing(e),
    };
    let key = match meta_key(toks.get(1), &mut flags) {
        Ok(k) => k,
        Err(e) => return swallowing(e),
    };
    // memcached checks the mode before reporting an over-long opaque.
    if !matches!(flags.mode, None | Some(b'E' | b'A' | b'P' | b'R' | b'S')) {
        return swallowing("CLIENT_ERROR invalid mode for ms M token");
    }
    if flag_toks
        .iter()
        .any(|t| t[0] == b'O' && t.len() > meta::MAX_OPAQUE_LENGTH)
    {
        return swallowing("CLIENT_ERROR opaque token too long");
    }
    let total = item_total_size(key.len(), flags.client_flags, vlen, limits.cas_enabled);
    if total > limits.item_size_max {
        return Parsed::Done(Request::MetaTooLarge { key, swallow: vlen });
    }
    if rest.len() < vlen {
        return Parsed::NeedData;
    }
    let block = &rest[..vlen];
    let tokens = FlagTokens::new(flag_toks);
    let request = if block.ends_with(b"\r\n") {
        Request::MetaSet {
            key,
            flags,
            tokens,
            data: &block[..vlen - 2],
        }
    } else {
        // memcached always reports a bad chunk for ms, quiet or not.
        Request::MetaError {
            text: "CLIENT_ERROR bad data chunk",
            swallow: 0,
        }
    };
    Parsed::WithData(request, vlen)
}

fn meta_debug<'a>(toks: &Tokens<'a>) -> Parsed<'a> {
    if toks.ntokens() < 3 || toks.get(1).len() > KEY_MAX_LENGTH {
        return reply(BAD_FORMAT);
    }
    let raw = toks.get(1);
    if toks.ntokens() >= 4 && toks.get(2) == b"b" {
        return match meta::base64_decode(raw) {
            Some(k) => Parsed::Done(Request::MetaDebug { key: Cow::Owned(k) }),
            None => reply(BAD_FORMAT),
        };
    }
    Parsed::Done(Request::MetaDebug {
        key: Cow::Borrowed(raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ParseLimits = ParseLimits {
        item_size_max: 1 << 20,
        cas_enabled: true,
    };

    fn one(input: &[u8]) -> (Request<'_>, usize) {
        parse(input, &LIMITS).expect("no error").expect("complete")
    }

    fn text_of(input: &[u8]) -> &'static str {
        match one(input).0 {
            Request::Reply { text, .. } => text,
            Request::MetaError { text, .. } => text,
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    #[test]
    fn every_strict_prefix_of_a_valid_request_is_incomplete() {
        let valid: &[&[u8]] = &[
            b"set aa 0 0 3\r\n111\r\n",
            b"cas k 1 2 3 99 noreply\r\nabc\r\n",
            b"get a b c\r\n",
            b"gats 100 a b\r\n",
            b"incr n 5\r\n",
            b"delete k 0 noreply\r\n",
            b"touch k 10\r\n",
            b"flush_all 10\r\n",
            b"ms k 2 T10 F3 q\r\nhi\r\n",
            b"mg k v f t s c k q Oabc\r\n",
            b"md k q O1\r\n",
            b"ma k N10 J5 D2 MI\r\n",
            b"mn\r\n",
            b"version\r\n",
            b"stats\r\n",
        ];
        for req in valid {
            let (_, used) = one(req);
            assert_eq!(used, req.len(), "{:?}", String::from_utf8_lossy(req));
            for cut in 0..req.len() {
                assert_eq!(
                    parse(&req[..cut], &LIMITS),
                    Ok(None),
                    "prefix {:?}",
                    String::from_utf8_lossy(&req[..cut])
                );
            }
        }
    }

    #[test]
    fn storage_commands_parse_their_fields() {
        let (req, used) = one(b"set aa 5 100 3\r\n111\r\nget aa\r\n");
        assert_eq!(used, 21);
        assert_eq!(
            req,
            Request::Store {
                mode: StoreMode::Set,
                key: b"aa",
                flags: 5,
                exptime: 100,
                cas: 0,
                data: b"111",
                noreply: false
            }
        );
        let (req, _) = one(b"cas k 0 0 1 42 noreply\r\nx\r\n");
        assert!(matches!(
            req,
            Request::Store {
                mode: StoreMode::Cas,
                cas: 42,
                noreply: true,
                ..
            }
        ));
    }

    #[test]
    fn malformed_lines_get_memcacheds_errors() {
        let table: &[(&[u8], &str)] = &[
            (b"\r\n", "ERROR"),
            (b"x\r\n", "ERROR"),
            (b"bogus cmd\r\n", "ERROR"),
            (b"set k 0 0\r\n", "ERROR"),
            (b"set k abc 0 1\r\n", BAD_FORMAT),
            (b"set k 0 0 -1\r\n", BAD_FORMAT),
            (
                b"incr k x\r\n",
                "CLIENT_ERROR invalid numeric delta argument",
            ),
            (b"touch k x\r\n", "CLIENT_ERROR invalid exptime argument"),
            (b"gat x k\r\n", "CLIENT_ERROR invalid exptime argument"),
            (b"get\r\n", "ERROR"),
            (
                b"delete k 5\r\n",
                "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]",
            ),
            (b"flush_all x\r\n", "CLIENT_ERROR invalid exptime argument"),
            (b"mg k v v\r\n", "CLIENT_ERROR duplicate flag"),
            (b"mg k !\r\n", "CLIENT_ERROR invalid flag"),
            (b"md k Z\r\n", "CLIENT_ERROR invalid or duplicate flag"),
            (b"mz k\r\n", "ERROR"),
            (b"ms k\r\n", BAD_FORMAT),
            (b"ms k x\r\n", BAD_FORMAT),
        ];
        for (input, want) in table {
            assert_eq!(
                text_of(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn long_keys_and_control_characters_are_refused() {
        let key = "k".repeat(250);
        let ok = format!("set {key} 0 0 1\r\nx\r\n");
        assert!(matches!(one(ok.as_bytes()).0, Request::Store { .. }));
        let long = format!("set {key}k 0 0 1\r\nx\r\n");
        assert_eq!(text_of(long.as_bytes()), BAD_FORMAT);
        assert_eq!(text_of(b"set a\tb 0 0 1\r\n"), BAD_FORMAT);
    }

    #[test]
    fn bad_data_chunk_consumes_the_block() {
        let (req, used) = one(b"set k 0 0 3\r\nabcde\r\n");
        assert_eq!(req, Request::BadDataChunk { noreply: false });
        assert_eq!(used, b"set k 0 0 3\r\nabcde".len());
    }

    #[test]
    fn too_large_values_are_swallowed_not_buffered() {
        let (req, used) = one(b"set k 0 0 2000000\r\n");
        assert_eq!(
            req,
            Request::TooLarge {
                key: b"k",
                unlink: true,
                noreply: false,
                swallow: 2_000_002
            }
        );
        assert_eq!(used, 19);
    }

    #[test]
    fn line_limit_closes_unless_multiget() {
        let junk = vec![b'a'; LINE_LIMIT + 1];
        assert_eq!(parse(&junk, &LIMITS), Err(ParseError::LineTooLong));
        let mut multiget = b"get ".to_vec();
        multiget.extend(std::iter::repeat_n(b'k', LINE_LIMIT));
        assert_eq!(parse(&multiget, &LIMITS), Ok(None));
    }

    #[test]
    fn get_keeps_the_whole_key_list_beyond_24_tokens() {
        let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        let line = format!("get {}\r\n", keys.join(" "));
        let (req, _) = one(line.as_bytes());
        let Request::Get { keys: list, .. } = req else {
            panic!("not a get")
        };
        assert_eq!(
            list.split(|&b| b == b' ').filter(|k| !k.is_empty()).count(),
            40
        );
    }

    #[test]
    fn http_is_closed_silently() {
        assert_eq!(one(b"GET / HTTP/1.1\r\n").0, Request::Close);
    }
}
