//! Differential test: one seeded random stream of memcached text and meta commands goes to the
//! real memcached and to opsconsole, and every reply must match byte for byte, except for values
//! that legitimately differ between two servers (CAS numbers, remaining TTLs read off two
//! different clocks, version strings, statistics).
//!
//! Environment:
//! - `DIFF_COMMANDS` (default 20000): commands per run.
//! - `DIFF_SEED`: replays a run; every run prints its seed first.
//! - `DIFF_SELFTEST=1`: compares memcached with a second memcached instead of opsconsole, which
//!   proves that the generator and the normalizer produce no false mismatches.
//! - `DIFF_SWEEP_EVERY` (default 40): batches between two read-backs of the whole key space;
//!   1 pins a divergence down to the batch that caused it (the stream stays the same).
//! - `DIFF_TRANSCRIPT=path`: writes every batch and both replies to that file.
//! - `DIFF_MAX_MISMATCHES` (default 20): how many mismatches are collected before stopping, so
//!   one run can show several independent problems.
//!
//! The generator deliberately avoids memcached 1.6.18 behaviours that are bugs or accidents of
//! its implementation rather than protocol, so the test never asks for them to be copied:
//! - a get/gets/gat/gats with a key over 250 bytes that is not alone in its batch (memcached
//!   then drops the unsent replies of the earlier commands);
//! - command lines over 2048 bytes without a newline (silently closed), `stats` values (only the
//!   shape is compared), and shutdown, lru_crawler, watch, slabs, lru, cache_memlimit, stats
//!   detail/cachedump, the binary protocol;
//! - a delayed `flush_all` (after an immediate one it brings flushed items back);
//! - incr/decr/ma on a stored number of 2^63 or more (see `Gen::bounds`);
//! - `ma` with `T` when an increment may lengthen the number (the TTL lands on the old item);
//! - flags, exptimes and lengths between 2^32 and 2^64 (memcached truncates them silently);
//! - an incr/decr/ma right after a fetch of the same key in one batch: memcached updates in
//!   place (padding with spaces) only when no unsent reply still references the item, so the
//!   generator puts an `mn` (which flushes replies) in between.
//!
//! The reference memcached runs with `-o no_lru_maintainer,no_lru_crawler` (see
//! `MEMCACHED_ARGS`); otherwise background threads make in-place updates random too.

mod support;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DEFAULT_COMMANDS: u64 = 20_000;
const DEFAULT_MAX_MISMATCHES: u64 = 20;
/// Commands per pipelined batch (plus the `mn` barrier, and any `mn` inserted by the generator).
const MAX_BATCH: usize = 20;
/// Size of the key space: small, so hits, CAS conflicts and incr on existing keys are frequent.
const KEY_POOL: usize = 50;
/// Bigger than memcached's default item size limit (-I 1m) by a margin, so per-item overhead
/// accounting never decides the outcome.
const TOO_LARGE: usize = 1_100_000;
/// memcached is the reference: if it does not answer in time the generator is at fault.
const REFERENCE_TIMEOUT: Duration = Duration::from_secs(10);
const CANDIDATE_TIMEOUT: Duration = Duration::from_secs(3);
/// Every this many batches the whole key space is read back, so divergent state is found even
/// when the random stream does not happen to read it.
const DEFAULT_SWEEP_EVERY: u64 = 40;
/// memcached refuses to run as root without `-u` (for other users the switch is ignored).
/// The LRU maintainer and crawler are off because both hold item references from background
/// threads (the segmented LRU bumps a re-fetched item asynchronously, up to a second later), and
/// while anything holds a reference, incr/decr copies the item instead of updating it in place
/// with space padding. Without them the reference behaves the same on every run.
const MEMCACHED_ARGS: &[&str] = &["-u", "root", "-o", "no_lru_maintainer,no_lru_crawler"];
/// Commands kept for the "previous commands" part of a mismatch report.
const HISTORY: usize = 10;

// ---------------------------------------------------------------------------------------------
// Configuration and randomness
// ---------------------------------------------------------------------------------------------

struct Config {
    commands: u64,
    seed: u64,
    selftest: bool,
    max_mismatches: usize,
    sweep_every: u64,
}

fn env_u64(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    let raw = raw.trim();
    let parsed = match raw.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => raw.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={raw:?} is not a number")))
}

impl Config {
    fn from_env() -> Config {
        let seed = env_u64("DIFF_SEED").unwrap_or_else(|| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
            now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
        });
        Config {
            commands: env_u64("DIFF_COMMANDS").unwrap_or(DEFAULT_COMMANDS),
            seed,
            selftest: std::env::var("DIFF_SELFTEST").is_ok_and(|v| v == "1"),
            max_mismatches: env_u64("DIFF_MAX_MISMATCHES")
                .unwrap_or(DEFAULT_MAX_MISMATCHES)
                .max(1) as usize,
            sweep_every: env_u64("DIFF_SWEEP_EVERY")
                .unwrap_or(DEFAULT_SWEEP_EVERY)
                .max(1),
        }
    }
}

/// splitmix64: tiny, seedable and plenty for driving a fuzzer; written here so a seed replays
/// the same stream no matter which crate versions are around.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    fn pct(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    fn bytes_from(&mut self, alphabet: &[u8], len: usize) -> Vec<u8> {
        (0..len).map(|_| *self.pick(alphabet)).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// Which CAS number a command carries. Each server gets the number *it* last reported for the
/// key, so the same logical command goes to both even though their CAS counters differ.
#[derive(Clone, Copy, Debug)]
enum CasPick {
    /// The CAS this server last reported for the key (may be stale: that tests EXISTS).
    Seen,
    /// Larger than any CAS either server will hand out: always a conflict.
    Huge,
    /// Zero has its own meaning in several commands ("no CAS given").
    Zero,
}

enum Piece {
    Raw(Vec<u8>),
    Cas(Vec<u8>, CasPick),
}

/// One logical command: its bytes (with CAS placeholders) plus what the batch builder needs
/// to know about it.
#[derive(Default)]
struct Cmd {
    pieces: Vec<Piece>,
    /// How many `MN` replies these bytes produce (the `mn` command, or an `mn` line that follows
    /// a bad data chunk and is therefore parsed as a command).
    mn: usize,
    /// Keys this command may fetch: memcached keeps a reference to a fetched item until the
    /// reply is written, which turns the next in-place incr/decr into a copy (no space padding).
    reads: Vec<Vec<u8>>,
    /// Key an incr/decr/ma may update in place.
    arith: Option<Vec<u8>>,
    /// Must be the only command in its batch (a get with an over-long key: memcached 1.6.18
    /// then discards every unsent reply of the batch, a bug not worth copying).
    alone: bool,
    /// Opaque token → key, to attribute CAS numbers in meta replies.
    opaques: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Cmd {
    fn put(&mut self, bytes: impl AsRef<[u8]>) -> &mut Cmd {
        let bytes = bytes.as_ref();
        if let Some(Piece::Raw(last)) = self.pieces.last_mut() {
            last.extend_from_slice(bytes);
        } else {
            self.pieces.push(Piece::Raw(bytes.to_vec()));
        }
        self
    }

    fn cas(&mut self, key: &[u8], pick: CasPick) -> &mut Cmd {
        self.pieces.push(Piece::Cas(key.to_vec(), pick));
        self
    }

    fn render(&self, seen: &HashMap<Vec<u8>, u64>, out: &mut Vec<u8>) {
        for piece in &self.pieces {
            match piece {
                Piece::Raw(bytes) => out.extend_from_slice(bytes),
                Piece::Cas(key, pick) => {
                    let n = match pick {
                        // Never reported: a number no server has issued yet.
                        CasPick::Seen => seen.get(key).copied().unwrap_or(u64::MAX - 1),
                        CasPick::Huge => u64::MAX,
                        CasPick::Zero => 0,
                    };
                    out.extend_from_slice(n.to_string().as_bytes());
                }
            }
        }
    }
}

/// Values a number-taking field should reject.
const BAD_U32: &[&str] = &["abc", "-1", "1x", "1.5", "99999999999999999999"];
const BAD_I32: &[&str] = &["abc", "1x", "2.5", "99999999999999999999"];
const BAD_U64: &[&str] = &["abc", "-1", "1.5", "18446744073709551616", "12ab"];
/// Letters that are not meta flags in memcached 1.6.18 (and not ones later versions added).
const INVALID_FLAGS: &[u8] = b"adegijmnoprwyzGHKQUVWXY!#%&*09";
const MS_MODES: &[u8] = b"EAPRS";
const MA_MODES: &[u8] = b"ID+-";
/// Data that, if a server parses it as a command line, is an unknown command (no lowercase
/// letters, no '/', so it cannot be a real command or an HTTP request line).
const SAFE_ALPHABET: &[u8] = b"ABCDEFGIJKLNOQRSUVWXYZ0123456789 _";
const TEXT_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789 -_.:/";
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const UNKNOWN_COMMANDS: &[&str] = &[
    "foo",
    "bar",
    "hello",
    "setx",
    "gett",
    "gots",
    "deletee",
    "increment",
    "decrement",
    "flush",
    "versions",
    "m",
    "x",
    "mx",
    "mz",
    "mh",
    "GET",
    "SET",
    "Set",
    "inc",
    "toucher",
    "ca",
    "appendx",
    "prepends",
    "replaced",
    "adds",
    "g",
    "MN",
];

struct Gen {
    rng: Rng,
    keys: Vec<Vec<u8>>,
    /// 251 bytes: one more than memcached allows.
    long_key: Vec<u8>,
    /// An absolute unix time about 14 hours ahead (exptimes above 30 days are absolute).
    abs_future: String,
    opaque_seq: u64,
    pending: Option<Cmd>,
    /// Per key, an upper bound of the number it may hold. memcached 1.6.18 decides whether a
    /// stored number of 2^63 or more is "non-numeric" by scanning memory past the end of the
    /// value for a '-' (`strchr` on data that is not NUL-terminated), so incr/decr on such
    /// values answers at random; the generator never sends incr/decr/ma to a key that may hold
    /// one. (Wrapping at 2^64 is still covered: small values plus huge deltas.)
    bounds: HashMap<Vec<u8>, u64>,
    /// Keys whose last store was a number: incr/decr prefer them, so they mostly hit numbers.
    numeric: HashSet<Vec<u8>>,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        let mut rng = Rng(seed);
        let mut keys: Vec<Vec<u8>> = Vec::new();
        // The longest legal key, and two UTF-8 keys (bytes >= 0x80 are legal in keys).
        keys.push(rng.bytes_from(ALNUM, 250));
        keys.push("clé-é".as_bytes().to_vec());
        keys.push("日本語キー".as_bytes().to_vec());
        let printable: Vec<u8> = (0x21u8..=0x7e).collect();
        while keys.len() < KEY_POOL {
            let len = if rng.pct(85) {
                rng.range(1, 12)
            } else {
                rng.range(13, 40)
            };
            let key = rng.bytes_from(&printable, len);
            // A last token starting with "HTTP/" makes memcached drop the connection.
            if !keys.contains(&key) && !key.starts_with(b"HTTP/") {
                keys.push(key);
            }
        }
        let long_key = rng.bytes_from(ALNUM, 251);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        Gen {
            rng,
            keys,
            long_key,
            abs_future: (now + 50_000).to_string(),
            opaque_seq: 0,
            pending: None,
            bounds: HashMap::new(),
            numeric: HashSet::new(),
        }
    }

    // --- what numbers keys may hold ---

    /// A plain `set` that certainly stores `value`.
    fn note_set(&mut self, key: &[u8], value: &[u8]) {
        self.bounds.insert(key.to_vec(), numeric_bound(value));
        if is_number(value) {
            self.numeric.insert(key.to_vec());
        } else {
            self.numeric.remove(key);
        }
    }

    /// A store that may or may not happen.
    fn note_maybe_store(&mut self, key: &[u8], value: &[u8]) {
        let b = self.bounds.entry(key.to_vec()).or_insert(0);
        *b = (*b).max(numeric_bound(value));
        if is_number(value) {
            self.numeric.insert(key.to_vec());
        }
    }

    /// Appending or prepending digits can make any number.
    fn note_concat(&mut self, key: &[u8], value: &[u8]) {
        if value.iter().any(u8::is_ascii_digit) {
            self.bounds.insert(key.to_vec(), u64::MAX);
        }
    }

    fn note_incr(&mut self, key: &[u8], delta: u64) {
        let b = self.bounds.entry(key.to_vec()).or_insert(0);
        *b = (*b).saturating_add(delta);
    }

    /// A pool key that cannot hold a number of 2^63 or more, if one is found quickly.
    fn arith_key(&mut self) -> Option<Vec<u8>> {
        let prefer_numbers = self.rng.pct(70) && !self.numeric.is_empty();
        for attempt in 0..16 {
            let key = self.key();
            if prefer_numbers && attempt < 12 && !self.numeric.contains(&key) {
                continue;
            }
            if self.bounds.get(&key).is_none_or(|&b| b < 1 << 63) {
                return Some(key);
            }
        }
        None
    }

    // --- small pieces ---

    fn key(&mut self) -> Vec<u8> {
        let i = self.rng.below(self.keys.len());
        self.keys[i].clone()
    }

    /// A key for a meta command: (logical key, token as sent, whether the `b` flag is needed).
    fn meta_key(&mut self) -> (Vec<u8>, Vec<u8>, bool) {
        let key = self.key();
        self.meta_key_for(key)
    }

    fn meta_key_for(&mut self, key: Vec<u8>) -> (Vec<u8>, Vec<u8>, bool) {
        if self.rng.pct(6) {
            let token = base64(&key);
            (key, token, true)
        } else {
            (key.clone(), key, false)
        }
    }

    fn eol(&mut self) -> &'static [u8] {
        if self.rng.pct(4) { b"\n" } else { b"\r\n" }
    }

    /// Token separator: usually one space; memcached accepts runs of spaces.
    fn sp(&mut self) -> &'static [u8] {
        if self.rng.pct(3) { b"  " } else { b" " }
    }

    fn ttl(&mut self) -> String {
        match self.rng.below(100) {
            0..=59 => "0".into(),
            60..=79 => self
                .rng
                .pick(&["1000", "2500", "10000", "100000", "2592000"])
                .to_string(),
            // Negative, or an absolute time before the server started: expired at once.
            80..=89 => self.rng.pick(&["-1", "-1000", "1000000000"]).to_string(),
            _ => self.abs_future.clone(),
        }
    }

    fn flags(&mut self) -> String {
        match self.rng.below(100) {
            0..=69 => "0".into(),
            70..=84 => self.rng.below(1000).to_string(),
            85..=94 => (self.rng.next_u64() as u32).to_string(),
            _ => "4294967295".into(),
        }
    }

    fn delta(&mut self) -> String {
        match self.rng.below(100) {
            0..=39 => "1".into(),
            40..=59 => self.rng.range(2, 100).to_string(),
            60..=74 => self.rng.range(100, 100_000_000).to_string(),
            75..=84 => self.rng.next_u64().to_string(),
            85..=94 => self
                .rng
                .pick(&["18446744073709551615", "18446744073709551614"])
                .to_string(),
            _ => "0".into(),
        }
    }

    fn numeric_value(&mut self) -> Vec<u8> {
        let n = match self.rng.below(100) {
            0..=29 => self.rng.below(100).to_string(),
            30..=49 => self.rng.range(100, 99_999).to_string(),
            50..=64 => (self.rng.next_u64() as u32).to_string(),
            65..=74 => self.rng.next_u64().to_string(),
            75..=84 => self
                .rng
                .pick(&[
                    "18446744073709551615",
                    "18446744073709551614",
                    "18446744073709551600",
                ])
                .to_string(),
            85..=92 => format!(
                "{:0>width$}",
                self.rng.below(1000),
                width = self.rng.range(3, 25)
            ),
            _ => "0".into(),
        };
        let mut v = n.into_bytes();
        if self.rng.pct(10) {
            // What memcached itself leaves behind after an in-place decrement.
            let pad = self.rng.range(1, 5);
            v.extend(std::iter::repeat_n(b' ', pad));
        }
        v
    }

    fn value(&mut self) -> Vec<u8> {
        match self.rng.below(100) {
            0..=39 => self.numeric_value(),
            40..=66 => {
                // Starts with a letter: text like "12 abc" is a number to memcached's strtoull.
                let len = self.rng.range(0, 60);
                let mut v = vec![*self.rng.pick(LOWER)];
                v.extend(self.rng.bytes_from(TEXT_ALPHABET, len));
                v
            }
            67..=76 => {
                let len = self.rng.range(0, 80);
                let mut v = vec![*self.rng.pick(LOWER)];
                v.extend((0..len).map(|_| self.rng.next_u64() as u8));
                v
            }
            77..=83 => Vec::new(),
            84..=93 => self
                .rng
                .pick(&[
                    "-5",
                    "12abc",
                    "abc",
                    "1.5",
                    "0x10",
                    "18446744073709551616",
                    "-",
                ])
                .as_bytes()
                .to_vec(),
            94..=98 => {
                let len = self.rng.range(100, 2000);
                self.rng.bytes_from(TEXT_ALPHABET, len)
            }
            _ => {
                let len = self.rng.range(2000, 8000);
                self.rng.bytes_from(TEXT_ALPHABET, len)
            }
        }
    }

    fn safe_data(&mut self, len: usize) -> Vec<u8> {
        let mut v = self.rng.bytes_from(SAFE_ALPHABET, len);
        if let Some(first) = v.first_mut() {
            *first = b'Z';
        }
        v
    }

    /// `O` plus up to 31 characters; `long` makes it exceed memcached's 32-byte limit.
    fn opaque(&mut self, long: bool) -> Vec<u8> {
        let len = if long {
            self.rng.range(32, 40)
        } else {
            self.rng.range(0, 12)
        };
        let mut o = vec![b'O'];
        o.extend(self.rng.bytes_from(ALNUM, len));
        o
    }

    fn unique_opaque(&mut self) -> Vec<u8> {
        self.opaque_seq += 1;
        format!("Ou{}", self.opaque_seq).into_bytes()
    }

    fn mn_cmd() -> Cmd {
        let mut c = Cmd {
            mn: 1,
            ..Cmd::default()
        };
        c.put("mn\r\n");
        c
    }

    // --- batches ---

    /// A batch of 1..=MAX_BATCH commands (a lone command when it must be alone).
    fn next_batch(&mut self) -> Vec<Cmd> {
        if let Some(cmd) = self.pending.take() {
            return vec![cmd];
        }
        let target = self.rng.range(1, MAX_BATCH);
        let mut batch: Vec<Cmd> = Vec::new();
        let mut fetched: HashSet<Vec<u8>> = HashSet::new();
        while batch.len() < target {
            let cmd = self.command();
            if cmd.alone {
                if batch.is_empty() {
                    batch.push(cmd);
                } else {
                    self.pending = Some(cmd);
                }
                break;
            }
            if cmd.arith.as_ref().is_some_and(|k| fetched.contains(k)) {
                // `mn` makes memcached write (and so release) everything before it; without it
                // the incr would copy the item instead of updating it in place.
                batch.push(Self::mn_cmd());
                fetched.clear();
            }
            if cmd.mn > 0 {
                fetched.clear();
            }
            fetched.extend(cmd.reads.iter().cloned());
            batch.push(cmd);
        }
        batch
    }

    fn command(&mut self) -> Cmd {
        if self.rng.one_in(2000) {
            return self.too_large();
        }
        if self.rng.one_in(1500) {
            return self.flush_all();
        }
        if self.rng.one_in(2500) {
            let mut c = Cmd::default();
            c.put("stats\r\n");
            return c;
        }
        match self.rng.below(1000) {
            0..=99 => self.storage("set"),
            100..=139 => self.storage("add"),
            140..=179 => self.storage("replace"),
            180..=214 => self.storage("append"),
            215..=249 => self.storage("prepend"),
            250..=309 => self.storage("cas"),
            310..=389 => self.retrieval("get"),
            390..=439 => self.retrieval("gets"),
            440..=459 => self.retrieval("gat"),
            460..=479 => self.retrieval("gats"),
            480..=504 => self.touch(),
            505..=544 => self.delete(),
            545..=594 => self.arith("incr"),
            595..=644 => self.arith("decr"),
            645..=744 => self.mg(),
            745..=829 => self.ms(),
            830..=859 => self.md(),
            860..=919 => self.ma(),
            920..=934 => Self::mn_cmd(),
            935..=947 => self.me(),
            948..=954 => self.version(),
            955..=964 => self.verbosity(),
            _ => self.garbage(),
        }
    }

    // --- classic text protocol ---

    fn storage(&mut self, verb: &str) -> Cmd {
        let mut c = Cmd::default();
        let key = self.key();
        let value = self.value();
        let noreply = self.rng.pct(12);
        let sp = self.sp();
        let mut flags = self.flags();
        let mut ttl = self.ttl();
        let mut len = value.len().to_string();
        let mut key_tok = key.clone();
        let mut extra_tokens = 0usize;
        let mut missing_token = false;
        let mut bad_cas: Option<&str> = None;
        // Which errors leave the data line to be parsed as a command (memcached only swallows
        // the data after "object too large").
        let mut data_is_command = false;
        let mut bad_chunk = false;
        if self.rng.pct(10) {
            match self.rng.below(8) {
                0 => flags = self.rng.pick(BAD_U32).to_string(),
                1 => ttl = self.rng.pick(BAD_I32).to_string(),
                2 => {
                    len = self
                        .rng
                        .pick(&["abc", "-1", "-100", "1.5", "1x"])
                        .to_string()
                }
                3 => bad_cas = Some(*self.rng.pick(BAD_U64)),
                4 => extra_tokens = 2,
                5 => missing_token = true,
                6 => key_tok = self.long_key.clone(),
                _ => bad_chunk = true,
            }
            if bad_cas.is_some() && verb != "cas" {
                bad_cas = None;
                bad_chunk = true;
            }
            data_is_command = !bad_chunk;
        }
        c.put(verb)
            .put(sp)
            .put(&key_tok)
            .put(" ")
            .put(&flags)
            .put(sp)
            .put(&ttl);
        if !missing_token {
            c.put(" ").put(&len);
        }
        if verb == "cas" {
            c.put(" ");
            match bad_cas {
                Some(bad) => {
                    c.put(bad);
                }
                None => {
                    let pick = self.cas_pick();
                    c.cas(&key, pick);
                }
            }
        }
        for _ in 0..extra_tokens {
            c.put(" extra");
        }
        if noreply {
            c.put(" noreply");
        }
        let eol = self.eol();
        c.put(eol);
        match verb {
            "append" | "prepend" => self.note_concat(&key, &value),
            "set" if !bad_chunk && !data_is_command => self.note_set(&key, &value),
            _ => self.note_maybe_store(&key, &value),
        }
        if bad_chunk {
            self.bad_chunk_body(&mut c);
        } else if data_is_command {
            // The data line becomes a command line of its own: make it harmless.
            let safe = self.safe_data(value.len().min(60));
            c.put(safe).put("\r\n");
        } else {
            c.put(&value).put("\r\n");
        }
        c
    }

    fn cas_pick(&mut self) -> CasPick {
        match self.rng.below(100) {
            0..=79 => CasPick::Seen,
            80..=93 => CasPick::Huge,
            _ => CasPick::Zero,
        }
    }

    /// The data block of a storage command whose last two bytes are not "\r\n", followed by a
    /// line memcached then parses as a command.
    fn bad_chunk_body(&mut self, c: &mut Cmd) {
        // memcached reads exactly the declared length plus two bytes before checking for
        // "\r\n", so the body is that long and only its end is wrong.
        let declared = declared_len(c).unwrap_or(0);
        let mut body: Vec<u8> = (0..declared + 2)
            .map(|_| *self.rng.pick(b"abcdef0123456789\r\n "))
            .collect();
        if body.ends_with(b"\r\n") || body.len() < 2 {
            let n = body.len();
            body[n - 1] = b'x';
        }
        c.put(&body);
        match self.rng.below(4) {
            0 => {}
            1 => {
                let len = self.rng.range(1, 20);
                let safe = self.safe_data(len);
                c.put(safe);
            }
            2 => {
                c.mn += 1;
                c.put("mn");
            }
            _ => {
                let key = self.key();
                c.put("get ").put(&key);
                c.reads.push(key);
            }
        }
        c.put("\r\n");
    }

    fn too_large(&mut self) -> Cmd {
        let mut c = Cmd::default();
        let key = self.key();
        if self.rng.pct(30) {
            let mode = if self.rng.pct(50) { " MS" } else { "" };
            c.put("ms ")
                .put(&key)
                .put(format!(" {TOO_LARGE}{mode} T0\r\n"));
        } else {
            let verb = *self
                .rng
                .pick(&["set", "set", "set", "add", "replace", "append", "prepend"]);
            c.put(verb)
                .put(" ")
                .put(&key)
                .put(format!(" 0 0 {TOO_LARGE}"));
            if self.rng.pct(20) {
                c.put(" noreply");
            }
            c.put("\r\n");
        }
        c.put(vec![b'x'; TOO_LARGE]).put("\r\n");
        c
    }

    fn retrieval(&mut self, verb: &str) -> Cmd {
        let mut c = Cmd::default();
        let touch = verb.starts_with("gat");
        if self.rng.pct(3) {
            c.put(" ");
        }
        c.put(verb);
        if touch {
            match self.rng.below(100) {
                0..=3 => {
                    // Only the exptime: memcached answers END.
                    let ttl = self.ttl();
                    c.put(" ").put(ttl).put("\r\n");
                    return c;
                }
                4..=7 => {
                    let bad = *self.rng.pick(BAD_I32);
                    c.put(" ").put(bad);
                }
                _ => {
                    let ttl = self.ttl();
                    c.put(" ").put(ttl);
                }
            }
        }
        if self.rng.pct(3) {
            // No key at all.
            c.put("\r\n");
            return c;
        }
        let count = match self.rng.below(100) {
            0..=49 => 1,
            50..=84 => self.rng.range(2, 5),
            85..=94 => self.rng.range(6, 24),
            _ => self.rng.range(25, 40),
        };
        let mut line_len = 0usize;
        let long_at = if self.rng.pct(2) {
            Some(self.rng.below(count))
        } else {
            None
        };
        for i in 0..count {
            let key = if long_at == Some(i) {
                self.long_key.clone()
            } else {
                self.key()
            };
            // Stay far below memcached's 2048-byte limit for a line still being received.
            if line_len + key.len() > 1500 && i > 0 {
                break;
            }
            line_len += key.len() + 1;
            let sp = self.sp();
            c.put(sp).put(&key);
            if long_at == Some(i) {
                c.alone = true;
            } else {
                c.reads.push(key);
            }
        }
        let eol = self.eol();
        c.put(eol);
        c
    }

    fn touch(&mut self) -> Cmd {
        let mut c = Cmd::default();
        let key = if self.rng.pct(3) {
            self.long_key.clone()
        } else {
            self.key()
        };
        c.put("touch ").put(&key);
        match self.rng.below(100) {
            0..=4 => {}
            5..=9 => {
                let bad = *self.rng.pick(BAD_I32);
                c.put(" ").put(bad);
            }
            _ => {
                let ttl = self.ttl();
                c.put(" ").put(ttl);
            }
        }
        if self.rng.pct(12) {
            c.put(" noreply");
        }
        c.put("\r\n");
        c
    }

    fn delete(&mut self) -> Cmd {
        let mut c = Cmd::default();
        let key = if self.rng.pct(3) {
            self.long_key.clone()
        } else {
            self.key()
        };
        if self.rng.pct(3) {
            c.put("delete\r\n");
            return c;
        }
        c.put("delete ").put(&key);
        match self.rng.below(100) {
            0..=69 => {}
            70..=79 => {
                c.put(" 0");
            }
            80..=89 => {
                c.put(" noreply");
            }
            90..=94 => {
                c.put(" 0 noreply");
            }
            95..=97 => {
                // Any hold time but 0 is refused.
                c.put(" 5");
            }
            _ => {
                c.put(" 0 noreply extra");
            }
        }
        c.put("\r\n");
        c
    }

    fn arith(&mut self, verb: &str) -> Cmd {
        let mut c = Cmd::default();
        let key = if self.rng.pct(3) {
            self.long_key.clone()
        } else {
            match self.arith_key() {
                Some(k) => k,
                None => return self.storage("set"),
            }
        };
        c.put(verb).put(" ").put(&key);
        match self.rng.below(100) {
            0..=3 => {}
            4..=9 => {
                let bad = *self.rng.pick(BAD_U64);
                c.put(" ").put(bad);
            }
            _ => {
                let d = self.delta();
                if verb == "incr" {
                    self.note_incr(&key, d.parse().expect("delta"));
                }
                c.put(" ").put(d);
            }
        }
        if self.rng.pct(12) {
            c.put(" noreply");
        }
        c.put("\r\n");
        c.arith = Some(key);
        c
    }

    fn flush_all(&mut self) -> Cmd {
        let mut c = Cmd::default();
        // Immediate flushes only: a delayed flush_all after an immediate one brings flushed
        // items back in memcached 1.6.18.
        let line = *self.rng.pick(&[
            "flush_all",
            "flush_all",
            "flush_all 0",
            "flush_all noreply",
            "flush_all 0 noreply",
            "flush_all abc",
            "flush_all 1 2 3",
        ]);
        if !line.contains("abc") && !line.contains('3') {
            self.bounds.clear();
        }
        c.put(line).put("\r\n");
        c
    }

    fn version(&mut self) -> Cmd {
        let mut c = Cmd::default();
        c.put(if self.rng.pct(80) {
            "version\r\n"
        } else {
            "version x\r\n"
        });
        c
    }

    fn verbosity(&mut self) -> Cmd {
        let mut c = Cmd::default();
        let line = *self.rng.pick(&[
            "verbosity 0",
            "verbosity 1",
            "verbosity 0 noreply",
            "verbosity",
            "verbosity abc",
            "verbosity 1 2 3",
        ]);
        c.put(line).put("\r\n");
        c
    }

    fn garbage(&mut self) -> Cmd {
        let mut c = Cmd::default();
        match self.rng.below(100) {
            0..=14 => {
                c.put("\r\n");
            }
            15..=19 => {
                c.put("\n");
            }
            20..=24 => {
                c.put("    \r\n");
            }
            25..=34 => {
                // Meta commands without a key.
                let verb = *self.rng.pick(&["mg", "ms", "md", "ma", "me"]);
                c.put(verb).put("\r\n");
            }
            35..=44 => {
                // Wrong token counts for commands that check them.
                let key = self.key();
                let form = *self.rng.pick(&[
                    "get",
                    "gets",
                    "gat",
                    "touch {k}",
                    "touch {k} 0 0 0",
                    "incr {k}",
                    "decr {k} 1 2 3",
                    "incr",
                    "cas {k} 0 0 1",
                ]);
                // Pool keys are valid UTF-8, so this is lossless.
                let line = form.replace("{k}", &String::from_utf8_lossy(&key));
                c.put(line).put("\r\n");
                if form.starts_with("cas") {
                    // A data line follows the refused command and is parsed as a command.
                    let safe = self.safe_data(1);
                    c.put(safe).put("\r\n");
                }
            }
            _ => {
                let verb = *self.rng.pick(UNKNOWN_COMMANDS);
                c.put(verb);
                for _ in 0..self.rng.below(3) {
                    let key = self.key();
                    c.put(" ").put(key);
                }
                c.put("\r\n");
            }
        }
        c
    }

    // --- meta protocol ---

    /// Shared error injections for meta flags: returns true if one was applied.
    fn meta_flag_error(&mut self, flags: &mut Vec<Vec<u8>>) -> bool {
        if !self.rng.pct(8) {
            return false;
        }
        match self.rng.below(4) {
            0 => {
                let dup = if flags.is_empty() {
                    b"v".to_vec()
                } else {
                    self.rng.pick(flags).clone()
                };
                flags.push(dup.clone());
                if flags.len() == 1 {
                    flags.push(dup);
                }
            }
            1 => {
                let f = *self.rng.pick(INVALID_FLAGS);
                flags.push(vec![f]);
            }
            2 => {
                let o = self.opaque(true);
                flags.push(o);
            }
            _ => {
                let f = *self.rng.pick(b"TNCFDJR");
                let bad = *self.rng.pick(&["abc", "", "-", "1x"]);
                let mut tok = vec![f];
                tok.extend_from_slice(bad.as_bytes());
                flags.push(tok);
            }
        }
        self.rng.shuffle(flags);
        true
    }

    /// Key part of a meta command; may be the over-long key or undecodable base64.
    fn meta_key_token(&mut self, flags: &mut Vec<Vec<u8>>) -> (Vec<u8>, Vec<u8>) {
        let key = self.key();
        self.meta_key_token_for(key, flags)
    }

    fn meta_key_token_for(&mut self, key: Vec<u8>, flags: &mut Vec<Vec<u8>>) -> (Vec<u8>, Vec<u8>) {
        let (key, mut token, b) = self.meta_key_for(key);
        if b {
            flags.push(b"b".to_vec());
            if self.rng.pct(10) {
                token = self
                    .rng
                    .pick(&["!!!!", "abc", "a===", "abcde"])
                    .as_bytes()
                    .to_vec();
            }
        } else if self.rng.pct(2) {
            token = self.long_key.clone();
        }
        (key, token)
    }

    /// The rest of a meta command line after its key: each flag after a random separator,
    /// a CAS token for `cas_key` when given, and the line end.
    fn meta_tail(&mut self, c: &mut Cmd, flags: &[Vec<u8>], cas_key: Option<&Vec<u8>>) {
        for f in flags {
            let sp = self.sp();
            c.put(sp).put(f);
        }
        if let Some(key) = cas_key {
            let pick = self.cas_pick();
            c.put(" C").cas(key, pick);
        }
        c.put("\r\n");
    }

    fn mg(&mut self) -> Cmd {
        let mut c = Cmd::default();
        let mut flags: Vec<Vec<u8>> = Vec::new();
        let (key, token) = self.meta_key_token(&mut flags);
        for (flag, pct) in [
            ("v", 50),
            ("k", 20),
            ("f", 30),
            ("t", 20),
            ("s", 20),
            ("c", 25),
            ("q", 15),
            ("h", 8),
            ("l", 5),
            ("u", 8),
        ] {
            if self.rng.pct(pct) {
                flags.push(flag.as_bytes().to_vec());
            }
        }
        if self.rng.pct(8) {
            flags.push(format!("T{}", self.ttl()).into_bytes());
        }
        if self.rng.pct(5) {
            flags.push(format!("N{}", self.rng.pick(&["0", "1000", "10000"])).into_bytes());
        }
        if self.rng.pct(3) {
            flags.push(format!("R{}", self.rng.pick(&["500", "5000", "200000"])).into_bytes());
        }
        self.meta_opaque(&mut c, &mut flags, &key);
        self.rng.shuffle(&mut flags);
        self.meta_flag_error(&mut flags);
        if self.rng.pct(1) {
            // More tokens than memcached accepts for a meta command.
            flags = vec![b"v".to_vec(); self.rng.range(19, 21)];
        }
        c.put("mg ").put(&token);
        self.meta_tail(&mut c, &flags, None);
        c.reads.push(key);
        c
    }

    /// Adds an `O` flag sometimes, and always when `c` is asked for, so the CAS in the reply
    /// can be attributed to its key.
    fn meta_opaque(&mut self, c: &mut Cmd, flags: &mut Vec<Vec<u8>>, key: &[u8]) {
        let wants_cas = flags.iter().any(|f| f == b"c");
        if wants_cas {
            let o = self.unique_opaque();
            c.opaques.push((o.clone(), key.to_vec()));
            flags.push(o);
        } else if self.rng.pct(25) {
            let o = self.opaque(false);
            flags.push(o);
        }
    }

    fn ms(&mut self) -> Cmd {
        let mut c = Cmd::default();
        let mut flags: Vec<Vec<u8>> = Vec::new();
        let (key, token) = self.meta_key_token(&mut flags);
        let value = self.value();
        if self.rng.pct(25) {
            flags.push(format!("T{}", self.ttl()).into_bytes());
        }
        if self.rng.pct(25) {
            flags.push(format!("F{}", self.flags()).into_bytes());
        }
        for (flag, pct) in [("q", 12), ("c", 20), ("k", 10), ("I", 5)] {
            if self.rng.pct(pct) {
                flags.push(flag.as_bytes().to_vec());
            }
        }
        if self.rng.pct(35) {
            let mode = if self.rng.pct(3) {
                *self.rng.pick(b"Xea1")
            } else {
                *self.rng.pick(MS_MODES)
            };
            let mut tok = vec![b'M', mode];
            if self.rng.pct(2) {
                tok.push(b'S');
            }
            flags.push(tok);
        }
        let with_cas = self.rng.pct(15);
        self.meta_opaque(&mut c, &mut flags, &key);
        self.rng.shuffle(&mut flags);
        let mode_error = flags
            .iter()
            .any(|f| f[0] == b'M' && (f.len() != 2 || !MS_MODES.contains(&f[1])));
        let flag_error = self.meta_flag_error(&mut flags) || mode_error;
        let bad_chunk = !flag_error && self.rng.pct(3);
        let mut len_tok = value.len().to_string();
        let mut unswallowed = false;
        if !flag_error && !bad_chunk && self.rng.pct(4) {
            // Errors found before the data length is known: the data line is not swallowed.
            match self.rng.below(3) {
                0 => len_tok = self.rng.pick(&["abc", "-1", "1x"]).to_string(),
                1 => len_tok.clear(),
                _ => flags = vec![b"v".to_vec(); self.rng.range(18, 20)],
            }
            unswallowed = true;
        }
        c.put("ms ").put(&token);
        if !len_tok.is_empty() {
            c.put(" ").put(&len_tok);
        }
        self.meta_tail(&mut c, &flags, (with_cas && !unswallowed).then_some(&key));
        let token_ok = token.len() <= 250;
        let mode = flags.iter().find(|f| f[0] == b'M').map(|f| f[1]);
        let clean_key = token == key || token == base64(&key);
        if flag_error || unswallowed || !token_ok {
            // Refused: nothing stored.
        } else if matches!(mode, Some(b'A' | b'P')) {
            self.note_concat(&key, &value);
        } else if matches!(mode, None | Some(b'S')) && !with_cas && !bad_chunk && clean_key {
            self.note_set(&key, &value);
        } else {
            self.note_maybe_store(&key, &value);
        }
        if bad_chunk && token_ok {
            self.bad_chunk_body(&mut c);
        } else if unswallowed || flag_error || !token_ok {
            // The data may be parsed as a command (memcached swallows it only for some of these
            // errors): make it harmless either way.
            if len_tok.is_empty() {
                let safe = self.safe_data(5);
                c.put(safe).put("\r\n");
            } else {
                let safe = self.safe_data(value.len());
                c.put(safe).put("\r\n");
            }
        } else {
            c.put(&value).put("\r\n");
        }
        c
    }

    fn md(&mut self) -> Cmd {
        let mut c = Cmd::default();
        let mut flags: Vec<Vec<u8>> = Vec::new();
        let (key, token) = self.meta_key_token(&mut flags);
        for (flag, pct) in [("q", 15), ("k", 10), ("I", 10)] {
            if self.rng.pct(pct) {
                flags.push(flag.as_bytes().to_vec());
            }
        }
        if self.rng.pct(8) {
            flags.push(format!("T{}", self.ttl()).into_bytes());
        }
        self.meta_opaque(&mut c, &mut flags, &key);
        self.rng.shuffle(&mut flags);
        self.meta_flag_error(&mut flags);
        let with_cas = self.rng.pct(15);
        c.put("md ").put(&token);
        self.meta_tail(&mut c, &flags, with_cas.then_some(&key));
        c
    }

    fn ma(&mut self) -> Cmd {
        let mut c = Cmd::default();
        let mut flags: Vec<Vec<u8>> = Vec::new();
        let Some(key) = self.arith_key() else {
            return self.storage("set");
        };
        let (key, token) = self.meta_key_token_for(key, &mut flags);
        if self.rng.pct(15) {
            flags.push(format!("N{}", self.rng.pick(&["0", "1000", "10000"])).into_bytes());
            if self.rng.pct(70) {
                let initial = self.numeric_value();
                let initial = String::from_utf8(initial).expect("ascii");
                flags.push(format!("J{}", initial.trim_end()).into_bytes());
            }
        }
        if self.rng.pct(50) {
            flags.push(format!("D{}", self.delta()).into_bytes());
        }
        if self.rng.pct(40) {
            let mode = if self.rng.pct(4) {
                *self.rng.pick(b"xidS")
            } else {
                *self.rng.pick(MA_MODES)
            };
            flags.push(vec![b'M', mode]);
        }
        for (flag, pct) in [("q", 12), ("c", 20), ("t", 12), ("v", 40), ("k", 10)] {
            if self.rng.pct(pct) {
                flags.push(flag.as_bytes().to_vec());
            }
        }
        let decr = flags.iter().any(|f| f == b"MD" || f == b"M-");
        // Only with decrements: when an increment makes the number longer, memcached 1.6.18
        // stores a new item but applies T to the old, unlinked one, so the new TTL is lost.
        if decr && self.rng.pct(16) {
            flags.push(format!("T{}", self.ttl()).into_bytes());
        }
        let delta = flags.iter().find_map(|f| f.strip_prefix(b"D"));
        let delta = delta.map_or(1, |d| {
            std::str::from_utf8(d)
                .expect("ascii")
                .parse()
                .expect("delta")
        });
        if !decr {
            self.note_incr(&key, delta);
        }
        if let Some(j) = flags.iter().find_map(|f| f.strip_prefix(b"J")) {
            let j = j.to_vec();
            self.note_maybe_store(&key, &j);
        }
        self.meta_opaque(&mut c, &mut flags, &key);
        self.rng.shuffle(&mut flags);
        self.meta_flag_error(&mut flags);
        let with_cas = self.rng.pct(8);
        c.put("ma ").put(&token);
        self.meta_tail(&mut c, &flags, with_cas.then_some(&key));
        c.arith = Some(key);
        c
    }

    fn me(&mut self) -> Cmd {
        let mut c = Cmd::default();
        let (_, token, b) = self.meta_key();
        if self.rng.pct(3) {
            c.put("me ").put(&self.long_key).put("\r\n");
        } else if b {
            c.put("me ").put(&token).put(" b\r\n");
        } else {
            c.put("me ").put(&token).put("\r\n");
        }
        c
    }
}

/// The declared data length of a storage command already written into `c` (5th token of
/// the classic form, 3rd of `ms`).
fn declared_len(c: &Cmd) -> Option<usize> {
    let mut line = Vec::new();
    for piece in &c.pieces {
        match piece {
            Piece::Raw(bytes) => line.extend_from_slice(bytes),
            Piece::Cas(..) => line.extend_from_slice(b"0"),
        }
    }
    let line = line.split(|&b| b == b'\n').next()?;
    let tokens: Vec<&[u8]> = line
        .split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .collect();
    let idx = if tokens.first() == Some(&&b"ms"[..]) {
        2
    } else {
        4
    };
    std::str::from_utf8(tokens.get(idx)?)
        .ok()?
        .trim_end_matches('\r')
        .parse()
        .ok()
}

fn is_number(value: &[u8]) -> bool {
    let digits = value.trim_ascii_end();
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// The largest number a value can be read as by incr/decr (0 when it is not a number).
fn numeric_bound(value: &[u8]) -> u64 {
    if !is_number(value) {
        return 0;
    }
    std::str::from_utf8(value.trim_ascii_end())
        .expect("digits")
        .parse::<u64>()
        .unwrap_or(u64::MAX)
}

fn base64(data: &[u8]) -> Vec<u8> {
    const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(TABLE[(n >> 18) as usize & 63]);
        out.push(TABLE[(n >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 {
            TABLE[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if chunk.len() > 2 {
            TABLE[n as usize & 63]
        } else {
            b'='
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Unit {
    Line(Vec<u8>),
    /// A value block, including its trailing "\r\n".
    Data(Vec<u8>),
    /// Bytes at the end that do not form a whole line or block.
    Partial(Vec<u8>),
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

/// Length of the data block announced by a `VALUE`/`VA` line, if it is one.
fn data_len(line: &[u8]) -> Option<usize> {
    let tokens: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let field = match tokens.first() {
        Some(&b"VALUE") if tokens.len() >= 4 => tokens[3],
        Some(&b"VA") if tokens.len() >= 2 => tokens[1],
        _ => return None,
    };
    let n: usize = std::str::from_utf8(field).ok()?.parse().ok()?;
    // A garbage length must not make the reader wait for megabytes that never come.
    (n <= 2 * TOO_LARGE).then_some(n)
}

/// Splits a reply stream into lines and value blocks.
fn split_units(buf: &[u8]) -> Vec<Unit> {
    let mut units = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let Some(eol) = find_crlf(buf, pos) else {
            units.push(Unit::Partial(buf[pos..].to_vec()));
            break;
        };
        let line = &buf[pos..eol];
        units.push(Unit::Line(line.to_vec()));
        pos = eol + 2;
        if let Some(n) = data_len(line) {
            if buf.len() < pos + n + 2 {
                units.push(Unit::Partial(buf[pos..].to_vec()));
                break;
            }
            units.push(Unit::Data(buf[pos..pos + n + 2].to_vec()));
            pos += n + 2;
        }
    }
    units
}

/// Incremental completeness check: counts `MN` lines, stepping over value blocks.
#[derive(Default)]
struct Scanner {
    pos: usize,
    mn: usize,
}

impl Scanner {
    fn advance(&mut self, buf: &[u8]) {
        while let Some(eol) = find_crlf(buf, self.pos) {
            let line = &buf[self.pos..eol];
            let mut next = eol + 2;
            if let Some(n) = data_len(line) {
                if buf.len() < next + n + 2 {
                    return;
                }
                next += n + 2;
            } else if line == b"MN" {
                self.mn += 1;
            }
            self.pos = next;
        }
    }
}

const META_STATUS: &[&[u8]] = &[b"HD", b"VA", b"EN", b"NF", b"NS", b"EX"];

fn tokens(line: &[u8]) -> Vec<&[u8]> {
    line.split(|&b| b == b' ').collect()
}

fn is_digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

/// Rewrites the parts of a reply line that legitimately differ between servers.
fn normalize_line(line: &[u8]) -> Vec<u8> {
    let toks = tokens(line);
    match toks[0] {
        b"VALUE" if toks.len() == 5 && is_digits(toks[4]) => {
            let mut out = toks[..4].join(&b' ');
            out.extend_from_slice(b" <cas>");
            out
        }
        b"VERSION" => b"VERSION <version>".to_vec(),
        b"ME" if toks.len() >= 2 => {
            let mut out = b"ME ".to_vec();
            out.extend_from_slice(toks[1]);
            out.extend_from_slice(b" <details>");
            out
        }
        first if META_STATUS.contains(&first) => {
            let mut out: Vec<u8> = first.to_vec();
            for tok in &toks[1..] {
                out.push(b' ');
                if tok.first() == Some(&b'c') && is_digits(&tok[1..]) && &tok[1..] != b"0" {
                    out.extend_from_slice(b"c<cas>");
                } else {
                    out.extend_from_slice(tok);
                }
            }
            out
        }
        _ => line.to_vec(),
    }
}

fn normalize(units: Vec<Unit>) -> Vec<Unit> {
    let mut out: Vec<Unit> = Vec::new();
    for unit in units {
        match unit {
            Unit::Line(line) if line.starts_with(b"STAT ") => {
                // Statistics differ in number and value: a run of STAT lines is one unit.
                if out.last() != Some(&Unit::Line(b"STAT <stats>".to_vec())) {
                    out.push(Unit::Line(b"STAT <stats>".to_vec()));
                }
            }
            Unit::Line(line) => out.push(Unit::Line(normalize_line(&line))),
            other => out.push(other),
        }
    }
    out
}

/// Remaining TTL (`t`) and seconds since last access (`l`) come from two clocks that tick
/// independently, so they may differ by one. A TTL that already passed (`mg k T-1 t` sets it
/// before printing it) comes out as a negative number wrapped to 32 bits, whose value depends
/// on the server's uptime: any two such numbers are equivalent.
fn near_enough(a: &[u8], b: &[u8]) -> bool {
    if a.first() != b.first() || !matches!(a.first(), Some(b't' | b'l')) {
        return false;
    }
    let parse = |t: &[u8]| std::str::from_utf8(&t[1..]).ok()?.parse::<i64>().ok();
    let wrapped = |x: i64| x > i64::from(i32::MAX) && x <= i64::from(u32::MAX);
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) if a[0] == b't' && wrapped(x) && wrapped(y) => true,
        (Some(x), Some(y)) => x >= 0 && y >= 0 && (x - y).abs() <= 1,
        _ => false,
    }
}

fn units_match(a: &Unit, b: &Unit) -> bool {
    if a == b {
        return true;
    }
    let (Unit::Line(a), Unit::Line(b)) = (a, b) else {
        return false;
    };
    let (ta, tb) = (tokens(a), tokens(b));
    ta.len() == tb.len()
        && META_STATUS.contains(&ta[0])
        && ta.iter().zip(&tb).all(|(x, y)| x == y || near_enough(x, y))
}

/// None when the replies are equivalent; otherwise where they first differ.
fn compare(reference: &[u8], candidate: &[u8]) -> Option<String> {
    let a = normalize(split_units(reference));
    let b = normalize(split_units(candidate));
    for i in 0..a.len().max(b.len()) {
        match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) if units_match(x, y) => continue,
            (x, y) => {
                return Some(format!(
                    "reply unit #{i}: memcached {} / candidate {}",
                    x.map_or("<nothing>".to_string(), show_unit),
                    y.map_or("<nothing>".to_string(), show_unit)
                ));
            }
        }
    }
    None
}

fn show_unit(u: &Unit) -> String {
    match u {
        Unit::Line(l) => format!("line \"{}\"", escape(l)),
        Unit::Data(d) => format!("data \"{}\"", escape(d)),
        Unit::Partial(p) => format!("incomplete \"{}\"", escape(p)),
    }
}

/// Tallies reply kinds: the status word, the whole line for errors, and a few markers
/// (padded numbers, meta flags such as W/Z/X) that show rare paths were reached.
fn count_replies(coverage: &mut HashMap<String, u64>, reply: &[u8]) {
    let mut bump = |k: String| *coverage.entry(k).or_insert(0) += 1;
    let mut previous_line: Vec<u8> = Vec::new();
    for unit in split_units(reply) {
        match unit {
            Unit::Line(line) => {
                let toks = tokens(&line);
                let word = String::from_utf8_lossy(toks[0]).into_owned();
                if word.ends_with("ERROR") {
                    bump(String::from_utf8_lossy(&line).into_owned());
                } else if is_digits(toks[0]) {
                    bump("<incr/decr result>".into());
                } else if META_STATUS.contains(&toks[0]) {
                    bump(word.clone());
                    for t in &toks[1..] {
                        if matches!(*t, b"W" | b"Z" | b"X") {
                            bump(format!("{word} {}", String::from_utf8_lossy(t)));
                        }
                    }
                } else {
                    bump(word);
                }
                previous_line = line;
            }
            Unit::Data(data) => {
                let value = &data[..data.len() - 2];
                if previous_line.starts_with(b"VALUE")
                    && value.ends_with(b" ")
                    && value.first().is_some_and(u8::is_ascii_digit)
                {
                    bump("<space-padded number>".into());
                }
            }
            Unit::Partial(_) => {}
        }
    }
}

/// Learns the CAS numbers a server reported, per key, from a reply it sent.
fn record_cas(seen: &mut HashMap<Vec<u8>, u64>, reply: &[u8], opaques: &HashMap<Vec<u8>, Vec<u8>>) {
    for unit in split_units(reply) {
        let Unit::Line(line) = unit else { continue };
        let toks = tokens(&line);
        let parse = |t: &[u8]| std::str::from_utf8(t).ok()?.parse::<u64>().ok();
        match toks[0] {
            b"VALUE" if toks.len() == 5 => {
                if let Some(cas) = parse(toks[4]) {
                    seen.insert(toks[1].to_vec(), cas);
                }
            }
            b"ME" if toks.len() >= 2 => {
                let cas = toks
                    .iter()
                    .find_map(|t| t.strip_prefix(b"cas="))
                    .and_then(parse);
                if let Some(cas) = cas {
                    seen.insert(toks[1].to_vec(), cas);
                }
            }
            b"HD" | b"VA" => {
                let key = toks.iter().find_map(|t| opaques.get(*t));
                let cas = toks
                    .iter()
                    .find_map(|t| t.strip_prefix(b"c"))
                    .and_then(parse);
                if let (Some(key), Some(cas)) = (key, cas)
                    && cas != 0
                {
                    seen.insert(key.clone(), cas);
                }
            }
            _ => {}
        }
    }
}

/// Printable form of protocol bytes: CR/LF and non-printables escaped, long runs elided.
fn escape(bytes: &[u8]) -> String {
    if bytes.len() > 400 {
        format!(
            "{}<...{} bytes...>{}",
            escape_full(&bytes[..200]),
            bytes.len() - 240,
            escape_full(&bytes[bytes.len() - 40..])
        )
    } else {
        escape_full(bytes)
    }
}

/// Like `escape`, without eliding anything (Python's `unicode_escape` codec reverses it).
fn escape_full(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &c in bytes {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s
}

/// One escaped line per protocol line, for reports.
fn escape_lines(bytes: &[u8]) -> String {
    let mut out = String::new();
    for unit in split_units(bytes) {
        let (Unit::Line(b) | Unit::Data(b) | Unit::Partial(b)) = &unit;
        out.push_str("    ");
        out.push_str(&escape(b));
        if matches!(unit, Unit::Line(_)) {
            out.push_str("\\r\\n");
        }
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

struct Peer {
    name: &'static str,
    addr: SocketAddr,
    stream: TcpStream,
    /// CAS numbers this server last reported, per key.
    seen: HashMap<Vec<u8>, u64>,
}

#[derive(Debug, PartialEq)]
enum ReadEnd {
    Complete,
    Timeout,
    Closed,
    Failed(String),
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

impl Peer {
    fn new(name: &'static str, addr: SocketAddr) -> Peer {
        let stream = connect(addr).unwrap_or_else(|e| panic!("connect to {name} at {addr}: {e}"));
        Peer {
            name,
            addr,
            stream,
            seen: HashMap::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads until `expected_mn` `MN` lines arrived (outside value blocks), or the deadline.
    fn read_reply(&mut self, expected_mn: usize, timeout: Duration) -> (Vec<u8>, ReadEnd) {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut scanner = Scanner::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (out, ReadEnd::Timeout);
            }
            if let Err(e) = self.stream.set_read_timeout(Some(left)) {
                return (out, ReadEnd::Failed(e.to_string()));
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return (out, ReadEnd::Closed),
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    scanner.advance(&out);
                    if scanner.mn >= expected_mn {
                        return (out, ReadEnd::Complete);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return (out, ReadEnd::Timeout);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return (out, ReadEnd::Failed(e.to_string())),
            }
        }
    }

    /// A fresh connection and an empty cache: how both servers are brought back in step after
    /// a mismatch.
    fn reset(&mut self) -> Result<(), String> {
        self.stream = connect(self.addr).map_err(|e| format!("{}: reconnect: {e}", self.name))?;
        self.seen.clear();
        self.send(b"flush_all\r\nmn\r\n")
            .map_err(|e| format!("{}: {e}", self.name))?;
        let (reply, end) = self.read_reply(1, REFERENCE_TIMEOUT);
        if end != ReadEnd::Complete || reply != b"OK\r\nMN\r\n" {
            return Err(format!(
                "{}: flush_all after a mismatch answered \"{}\" ({end:?})",
                self.name,
                escape(&reply)
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

struct Run {
    cfg: Config,
    generator: Gen,
    reference: Peer,
    candidate: Peer,
    history: VecDeque<String>,
    commands_done: u64,
    batches: u64,
    mismatches: Vec<String>,
    /// How often memcached gave each kind of reply: shows what a run actually covered.
    coverage: HashMap<String, u64>,
    /// Every batch and both replies, when `DIFF_TRANSCRIPT` names a file.
    transcript: Option<std::io::BufWriter<std::fs::File>>,
}

struct Exchange {
    sent_ref: Vec<u8>,
    sent_cand: Vec<u8>,
    reply_ref: Vec<u8>,
    reply_cand: Vec<u8>,
    end_cand: ReadEnd,
}

impl Run {
    /// Sends the batch (plus the `mn` barrier) to both servers and collects both replies.
    fn exchange(&mut self, batch: &[Cmd]) -> Exchange {
        let mut sent_ref = Vec::new();
        let mut sent_cand = Vec::new();
        for cmd in batch {
            cmd.render(&self.reference.seen, &mut sent_ref);
            cmd.render(&self.candidate.seen, &mut sent_cand);
        }
        sent_ref.extend_from_slice(b"mn\r\n");
        sent_cand.extend_from_slice(b"mn\r\n");
        let expected_mn = batch.iter().map(|c| c.mn).sum::<usize>() + 1;

        if let Err(e) = self.reference.send(&sent_ref) {
            panic!(
                "writing to memcached failed: {e}\nbatch:\n{}",
                escape_lines(&sent_ref)
            );
        }
        let cand_write = self.candidate.send(&sent_cand);
        let (reply_ref, end_ref) = self.reference.read_reply(expected_mn, REFERENCE_TIMEOUT);
        if end_ref != ReadEnd::Complete {
            panic!(
                "memcached itself did not complete a batch ({end_ref:?}); the generator is at \
                 fault.\nseed {}\nbatch:\n{}reply:\n{}",
                self.cfg.seed,
                escape_lines(&sent_ref),
                escape_lines(&reply_ref)
            );
        }
        let (reply_cand, end_cand) = match cand_write {
            Ok(()) => self.candidate.read_reply(expected_mn, CANDIDATE_TIMEOUT),
            Err(e) => (Vec::new(), ReadEnd::Failed(format!("write: {e}"))),
        };
        Exchange {
            sent_ref,
            sent_cand,
            reply_ref,
            reply_cand,
            end_cand,
        }
    }

    fn run_batch(&mut self, batch: Vec<Cmd>, label: &str, counted: bool) {
        let first_index = self.commands_done;
        self.batches += 1;
        let ex = self.exchange(&batch);
        if let Some(t) = &mut self.transcript {
            // One escaped command per "> " line, so a script can replay (a part of) the stream.
            let mut text = format!(
                "### {label} batch {} commands {first_index}..\n",
                self.batches
            );
            let mut sent = Vec::new();
            for cmd in &batch {
                sent.clear();
                cmd.render(&self.reference.seen, &mut sent);
                text.push_str(&format!("> {}\n", escape_full(&sent)));
            }
            text.push_str(&format!("< memcached\n{}", escape_lines(&ex.reply_ref)));
            text.push_str(&format!(
                "< {}\n{}",
                self.candidate.name,
                escape_lines(&ex.reply_cand)
            ));
            t.write_all(text.as_bytes()).expect("write transcript");
        }
        if counted {
            self.commands_done += batch.len() as u64;
        }
        let difference = match &ex.end_cand {
            ReadEnd::Complete => compare(&ex.reply_ref, &ex.reply_cand),
            other => Some(format!(
                "candidate reply incomplete ({other:?}); {}",
                compare(&ex.reply_ref, &ex.reply_cand).unwrap_or_default()
            )),
        };
        let mut opaques: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for cmd in &batch {
            for (o, k) in &cmd.opaques {
                opaques.insert(o.clone(), k.clone());
            }
        }
        match difference {
            None => {
                record_cas(&mut self.reference.seen, &ex.reply_ref, &opaques);
                count_replies(&mut self.coverage, &ex.reply_ref);
                record_cas(&mut self.candidate.seen, &ex.reply_cand, &opaques);
            }
            Some(diff) => {
                let report = self.report(&ex, label, first_index, batch.len(), &diff);
                // One line as it happens; the full reports come with the final failure.
                eprintln!(
                    "differential: mismatch #{} in batch {}: {diff}",
                    self.mismatches.len() + 1,
                    self.batches
                );
                self.mismatches.push(report);
                if self.mismatches.len() < self.cfg.max_mismatches {
                    if let Some(t) = &mut self.transcript {
                        t.write_all(b"### reset (new connections, flush_all)\n")
                            .expect("write");
                    }
                    let reset = self.reference.reset().and_then(|()| self.candidate.reset());
                    if let Err(e) = reset {
                        self.mismatches.push(format!("could not continue: {e}"));
                        self.cfg.max_mismatches = 0;
                    }
                }
            }
        }
        if counted {
            let mut sent = Vec::new();
            for cmd in &batch {
                sent.clear();
                cmd.render(&self.reference.seen, &mut sent);
                self.history.push_back(escape(&sent));
                if self.history.len() > HISTORY {
                    self.history.pop_front();
                }
            }
        }
    }

    fn report(&self, ex: &Exchange, label: &str, first: u64, len: usize, diff: &str) -> String {
        let mut r = String::new();
        let position = if label == "stream" {
            format!(
                "commands {first}..{} of {}",
                first + len as u64,
                self.cfg.commands
            )
        } else {
            format!("after command {first} of {}", self.cfg.commands)
        };
        r.push_str(&format!(
            "=== MISMATCH #{} ({label}) seed {} batch {} {position} ===\n",
            self.mismatches.len() + 1,
            self.cfg.seed,
            self.batches,
        ));
        r.push_str(&format!(
            "replay: DIFF_SEED={} DIFF_COMMANDS={} cargo test --test differential\n",
            self.cfg.seed, self.cfg.commands
        ));
        r.push_str(&format!("first difference: {diff}\n"));
        r.push_str("previous commands:\n");
        for h in &self.history {
            r.push_str(&format!("    {h}\n"));
        }
        r.push_str("batch sent to memcached (the last `mn` is the barrier):\n");
        r.push_str(&escape_lines(&ex.sent_ref));
        if ex.sent_cand != ex.sent_ref {
            r.push_str(&format!(
                "batch sent to {} (its own CAS numbers):\n",
                self.candidate.name
            ));
            r.push_str(&escape_lines(&ex.sent_cand));
        }
        r.push_str("memcached replied:\n");
        r.push_str(&escape_lines(&ex.reply_ref));
        r.push_str(&format!(
            "{} replied ({:?}):\n",
            self.candidate.name, ex.end_cand
        ));
        r.push_str(&escape_lines(&ex.reply_cand));
        r
    }

    /// Reads back every key of the pool without touching LRU state; the opaque names the key
    /// in the reply.
    fn sweep(&mut self) {
        let keys = self.generator.keys.clone();
        let batch: Vec<Cmd> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let mut c = Cmd::default();
                c.put("mg ").put(k).put(format!(" s v f t u O{i}\r\n"));
                c
            })
            .collect();
        self.run_batch(batch, "sweep", false);
    }

    fn done(&self) -> bool {
        self.commands_done >= self.cfg.commands || self.mismatches.len() >= self.cfg.max_mismatches
    }
}

#[test]
fn replies_match_memcached() {
    let cfg = Config::from_env();
    let Some(reference_server) = support::spawn_memcached(MEMCACHED_ARGS) else {
        return;
    };
    // Keeps the candidate process alive for the whole run.
    let mut _memcached_candidate = None;
    let mut _node = None;
    let (candidate_name, candidate_addr) = if cfg.selftest {
        let m = support::spawn_memcached(MEMCACHED_ARGS).expect("second memcached");
        let addr = m.addr;
        _memcached_candidate = Some(m);
        ("memcached#2", addr)
    } else {
        let node = support::spawn_node(&["--role", "master", "-p", "0"]);
        let addr = node.addr;
        _node = Some(node);
        ("opsconsole", addr)
    };
    eprintln!(
        "differential: seed {} ({:#x}), {} commands, memcached vs {candidate_name}",
        cfg.seed, cfg.seed, cfg.commands
    );
    let started = Instant::now();
    let generator = Gen::new(cfg.seed);
    let mut run = Run {
        reference: Peer::new("memcached", reference_server.addr),
        candidate: Peer::new(candidate_name, candidate_addr),
        cfg,
        generator,
        history: VecDeque::new(),
        commands_done: 0,
        batches: 0,
        mismatches: Vec::new(),
        coverage: HashMap::new(),
        transcript: std::env::var_os("DIFF_TRANSCRIPT").map(|path| {
            let file = std::fs::File::create(&path).expect("create DIFF_TRANSCRIPT file");
            std::io::BufWriter::new(file)
        }),
    };
    // Burn CAS number 1 on a key outside the pool, so no CAS written by hand matches by luck.
    let mut warm = Cmd::default();
    warm.put("set __warmup__ 0 0 1\r\nx\r\n");
    run.run_batch(vec![warm], "warm-up", false);

    let mut since_sweep = 0;
    while !run.done() {
        let batch = run.generator.next_batch();
        run.run_batch(batch, "stream", true);
        since_sweep += 1;
        if since_sweep == run.cfg.sweep_every && !run.done() {
            since_sweep = 0;
            run.sweep();
        }
    }
    if run.mismatches.len() < run.cfg.max_mismatches {
        run.sweep();
    }
    let mut kinds: Vec<(&String, &u64)> = run.coverage.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k}={n}")).collect();
    eprintln!("differential: memcached replies seen: {}", kinds.join(", "));
    eprintln!(
        "differential: {} commands in {} batches, {:.1}s, {} mismatch(es), seed {}",
        run.commands_done,
        run.batches,
        started.elapsed().as_secs_f64(),
        run.mismatches.len(),
        run.cfg.seed
    );
    if !run.mismatches.is_empty() {
        panic!(
            "{} mismatch(es) between memcached and {} (seed {}):\n\n{}",
            run.mismatches.len(),
            run.candidate.name,
            run.cfg.seed,
            run.mismatches.join("\n")
        );
    }
}
