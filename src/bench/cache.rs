//! `opsconsole bench cache`: a closed-loop load generator for memcached text-protocol servers, in
//! the spirit of redis-benchmark.
//!
//! Every connection writes a batch of `--pipeline` requests with one write, reads all their
//! replies, and repeats until the measuring window closes. A request's latency runs from its
//! batch's write to the moment its own reply has been parsed. `--load` instead stores every key
//! of the key space exactly once, to fill a server before its memory is measured.
//!
//! The pure parts (argument parsing, request encoding, incremental reply parsing, the PRNG) sit
//! at the top and know nothing of sockets; the async shell below drives them.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Options of `opsconsole bench cache`.
#[derive(Debug, clap::Args)]
pub struct CacheBenchArgs {
    /// Server to measure.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:11211")]
    pub addr: String,

    /// Concurrent client connections.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 50,
        value_parser = clap::value_parser!(u32).range(1..=10_000)
    )]
    pub conns: u32,

    /// Requests written together on a connection; all their replies are read before the next
    /// batch (1 = one request in flight per connection).
    #[arg(
        long,
        value_name = "P",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=10_000)
    )]
    pub pipeline: u32,

    /// Weights of sets and gets, e.g. 1:9, or 0:1 for gets only.
    #[arg(long, value_name = "SET:GET", default_value = "1:9", value_parser = parse_ratio)]
    pub ratio: Ratio,

    /// Size of every stored value in bytes.
    #[arg(
        long,
        value_name = "B",
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(0..=MAX_VALUE_BYTES as i64)
    )]
    pub value_size: u32,

    /// Key space: keys key:000000000 up to K-1, picked uniformly at random.
    #[arg(
        long,
        value_name = "K",
        default_value_t = 100_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub keys: u64,

    /// Seconds to measure (fractions allowed).
    #[arg(long, value_name = "S", default_value = "10", value_parser = parse_seconds)]
    pub duration: Duration,

    /// Seconds of load before measuring starts, so connections and caches are warm (not used
    /// by --load).
    #[arg(long, value_name = "S", default_value = "1", value_parser = parse_seconds)]
    pub warmup: Duration,

    /// Worker threads of the client runtime.
    #[arg(
        long,
        value_name = "T",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=256)
    )]
    pub threads: u32,

    /// Instead of the timed mix, set every key 0..K exactly once (pipelined, --pipeline deep or
    /// 16 when that is 1) and report items/s.
    #[arg(long)]
    pub load: bool,

    /// Print one JSON object line instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Largest value a reply may announce, and the largest `--value-size`: far above memcached's
/// item limit, low enough that a corrupt length cannot make the client allocate without bound.
const MAX_VALUE_BYTES: usize = 256 << 20;
/// A reply line longer than this without a line end means the stream is not memcached protocol.
const MAX_LINE: usize = 8 << 10;
/// What follows a value's data in a single-key `get` reply.
const VALUE_TRAILER: &[u8] = b"\r\nEND\r\n";
/// Pipeline depth of `--load` when `--pipeline` was left at 1.
const LOAD_PIPELINE: u32 = 16;
/// `--load` gives up after this long, whatever the key count.
const LOAD_TIME_LIMIT: Duration = Duration::from_secs(600);
/// How long a batch may wait for its replies; a slower server is reported, not waited for.
const STALL_LIMIT: Duration = Duration::from_secs(10);
/// How long replies still in flight when the window closes are waited for.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Distinct error descriptions kept; more are counted under one "other errors" line.
const MAX_ERROR_KINDS: usize = 16;
const READ_CHUNK: usize = 16 << 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Pure parts

/// Relative weights of sets and gets in the request mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ratio {
    pub sets: u32,
    pub gets: u32,
}

impl Ratio {
    /// Draws the next operation: true for a set.
    pub fn picks_set(self, rng: &mut XorShift64) -> bool {
        let total = u64::from(self.sets) + u64::from(self.gets);
        rng.below(total) < u64::from(self.sets)
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.sets, self.gets)
    }
}

/// Parses `SET:GET` weights such as `1:9`; at least one side must be above zero.
pub fn parse_ratio(s: &str) -> Result<Ratio, String> {
    let not_a_ratio = || format!("ratio '{s}' is not SET:GET weights such as 1:9");
    let (sets, gets) = s.split_once(':').ok_or_else(not_a_ratio)?;
    let sets = sets.trim().parse::<u32>().map_err(|_| not_a_ratio())?;
    let gets = gets.trim().parse::<u32>().map_err(|_| not_a_ratio())?;
    if sets == 0 && gets == 0 {
        return Err(format!("ratio '{s}' asks for no requests at all"));
    }
    Ok(Ratio { sets, gets })
}

/// Parses a non-negative number of seconds, fractions allowed, up to a day.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && (0.0..=86_400.0).contains(v))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("'{s}' is not a number of seconds between 0 and 86400"))
}

/// xorshift64: statistically plenty for picking keys, and cheap enough that the client does not
/// become the thing being measured.
#[derive(Debug, Clone)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// Spreads `seed` with a splitmix64 step so that neighbouring seeds give unrelated streams.
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        // xorshift stays at zero forever once there.
        Self((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n` > 0); multiply-shift avoids the bias and cost of `%`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// The two requests the generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Set,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
        }
    }
}

/// Appends `get key:NNNNNNNNN\r\n`.
pub fn encode_get(buf: &mut Vec<u8>, key: u64) {
    buf.extend_from_slice(b"get ");
    push_key(buf, key);
    buf.extend_from_slice(b"\r\n");
}

/// Appends `set key:NNNNNNNNN 0 0 <len>\r\n<value>\r\n`.
pub fn encode_set(buf: &mut Vec<u8>, key: u64, value: &[u8]) {
    buf.extend_from_slice(b"set ");
    push_key(buf, key);
    // Writing into a Vec cannot fail.
    let _ = write!(buf, " 0 0 {}\r\n", value.len());
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

fn push_key(buf: &mut Vec<u8>, key: u64) {
    let _ = write!(buf, "key:{key:09}");
}

/// One complete reply to a `set` or a single-key `get`.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    Stored,
    /// `VALUE ...` with its data and the closing `END`.
    Hit,
    /// `END` alone.
    Miss,
    /// Any other line: `ERROR`, `CLIENT_ERROR ...`, `SERVER_ERROR ...`, `NOT_STORED`, ...
    Other(&'a [u8]),
}

/// The byte stream cannot be memcached replies; the connection's framing is lost.
#[derive(Debug, PartialEq, Eq)]
pub struct MalformedReply(pub String);

impl fmt::Display for MalformedReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed reply: {}", self.0)
    }
}

/// Parses the reply at the start of `buf`. `Ok(None)` means more bytes are needed: every strict
/// prefix of a valid reply is incomplete rather than wrong. On success, also returns how many
/// bytes the reply used.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, MalformedReply> {
    let Some(line_len) = first_line_len(buf)? else {
        return Ok(None);
    };
    let line = &buf[..line_len];
    let after_line = line_len + 2;
    match line {
        b"STORED" => Ok(Some((Reply::Stored, after_line))),
        b"END" => Ok(Some((Reply::Miss, after_line))),
        _ if line.starts_with(b"VALUE ") => parse_value(buf, line, after_line),
        _ => Ok(Some((Reply::Other(line), after_line))),
    }
}

/// Length of the first line of `buf` without its `\r\n`, or `None` if it has not all arrived.
fn first_line_len(buf: &[u8]) -> Result<Option<usize>, MalformedReply> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && buf[i - 1] == b'\r' => Ok(Some(i - 1)),
        Some(i) => Err(MalformedReply(format!(
            "line '{}' ends in \\n without \\r",
            printable(&buf[..i])
        ))),
        None if buf.len() > MAX_LINE => Err(MalformedReply(format!(
            "no line end in {} bytes starting '{}'",
            buf.len(),
            printable(buf)
        ))),
        None => Ok(None),
    }
}

/// Parses `VALUE <key> <flags> <bytes> [<cas>]\r\n<data>\r\nEND\r\n`, given its first line.
fn parse_value<'a>(
    buf: &'a [u8],
    line: &[u8],
    data_start: usize,
) -> Result<Option<(Reply<'a>, usize)>, MalformedReply> {
    let data_end = data_start + announced_length(line)?;
    if buf.len() <= data_end {
        return Ok(None);
    }
    let end = data_end + VALUE_TRAILER.len();
    let trailer = &buf[data_end..buf.len().min(end)];
    if !VALUE_TRAILER.starts_with(trailer) {
        return Err(MalformedReply(format!(
            "value announced by '{}' is followed by '{}' instead of \\r\\nEND\\r\\n",
            printable(line),
            printable(trailer)
        )));
    }
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((Reply::Hit, end)))
}

/// The `<bytes>` field of a `VALUE` line.
fn announced_length(line: &[u8]) -> Result<usize, MalformedReply> {
    line.split(|&b| b == b' ')
        .nth(3)
        .and_then(|field| std::str::from_utf8(field).ok())
        .and_then(|field| field.parse::<usize>().ok())
        .filter(|&len| len <= MAX_VALUE_BYTES)
        .ok_or_else(|| MalformedReply(format!("bad VALUE line '{}'", printable(line))))
}

/// Bytes shown in a message: escaped, and cut so one bad reply cannot flood the report.
fn printable(bytes: &[u8]) -> String {
    const SHOWN: usize = 60;
    let shown = bytes[..bytes.len().min(SHOWN)].escape_ascii().to_string();
    if bytes.len() > SHOWN {
        format!("{shown}...")
    } else {
        shown
    }
}

// ---------------------------------------------------------------------------------------------
// Tallies

/// What one connection (or, merged, the whole run) saw.
#[derive(Debug)]
struct Tally {
    gets: u64,
    hits: u64,
    misses: u64,
    sets: u64,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    /// Latency of successful requests, in nanoseconds.
    latency_ns: Histogram<u64>,
    finished_at: Option<Instant>,
}

impl Tally {
    fn new() -> Self {
        Self {
            gets: 0,
            hits: 0,
            misses: 0,
            sets: 0,
            errors: 0,
            error_kinds: BTreeMap::new(),
            // Auto-resizing, so memory follows the slowest latency actually seen.
            latency_ns: Histogram::new(3).expect("3 significant figures is a valid precision"),
            finished_at: None,
        }
    }

    fn ops(&self) -> u64 {
        self.gets + self.sets
    }

    /// Counts one reply to `op` that took `latency` from its batch's write.
    fn count_reply(&mut self, op: Op, reply: &Reply<'_>, latency: Duration) {
        match (op, reply) {
            (Op::Set, Reply::Stored) => self.sets += 1,
            (Op::Get, Reply::Hit) => {
                self.gets += 1;
                self.hits += 1;
            }
            (Op::Get, Reply::Miss) => {
                self.gets += 1;
                self.misses += 1;
            }
            (op, reply) => {
                self.count_errors(format!("{} answered '{}'", op.name(), describe(reply)), 1);
                return;
            }
        }
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        // `record` grows the auto-resizing histogram; `saturating_record` would clamp to its
        // current (initially tiny) range instead.
        if self.latency_ns.record(nanos.max(1)).is_err() {
            self.latency_ns.saturating_record(nanos.max(1));
        }
    }

    fn count_errors(&mut self, kind: String, count: u64) {
        if count == 0 {
            return;
        }
        self.errors += count;
        let kind =
            if self.error_kinds.len() < MAX_ERROR_KINDS || self.error_kinds.contains_key(&kind) {
                kind
            } else {
                "other errors".to_string()
            };
        *self.error_kinds.entry(kind).or_default() += count;
    }

    fn merge(&mut self, other: Tally) {
        self.gets += other.gets;
        self.hits += other.hits;
        self.misses += other.misses;
        self.sets += other.sets;
        for (kind, count) in other.error_kinds {
            self.count_errors(kind, count);
        }
        if self.latency_ns.add(&other.latency_ns).is_err() {
            self.count_errors("latency histogram could not be merged".to_string(), 1);
        }
        self.finished_at = self.finished_at.max(other.finished_at);
    }
}

fn describe(reply: &Reply<'_>) -> String {
    match reply {
        Reply::Stored => "STORED".to_string(),
        Reply::Hit => "VALUE".to_string(),
        Reply::Miss => "END".to_string(),
        Reply::Other(line) => printable(line),
    }
}

// ---------------------------------------------------------------------------------------------
// Async shell

/// Everything a connection task needs, shared read-only.
struct Plan {
    addr: String,
    conns: usize,
    pipeline: usize,
    ratio: Ratio,
    keys: u64,
    value: Vec<u8>,
    load: bool,
    window: Window,
}

/// The run's clock: requests sent before `measure_from` warm up and are not counted; no batch
/// starts after `stop_issuing`; replies still missing at `hard_stop` are errors.
#[derive(Debug, Clone, Copy)]
struct Window {
    measure_from: Instant,
    stop_issuing: Instant,
    hard_stop: Instant,
}

impl Window {
    fn new(args: &CacheBenchArgs, start: Instant) -> Self {
        let (measure_from, stop_issuing) = if args.load {
            (start, start + LOAD_TIME_LIMIT)
        } else {
            let measure_from = start + args.warmup;
            (measure_from, measure_from + args.duration)
        };
        Self {
            measure_from,
            stop_issuing,
            hard_stop: stop_issuing + DRAIN_GRACE,
        }
    }
}

/// Runs the benchmark described by `args` and prints its report.
pub fn run(args: &CacheBenchArgs) -> Result<(), String> {
    if !args.load && args.duration.is_zero() {
        return Err("--duration must be above 0 seconds".to_string());
    }
    let runtime = client_runtime(args.threads)?;
    let report = runtime.block_on(async {
        let streams = connect_all(&args.addr, args.conns).await?;
        let plan = Arc::new(plan_for(args, Instant::now()));
        let tally = drive_all(Arc::clone(&plan), streams).await;
        Ok::<_, String>(Report::new(args, &plan, tally))
    })?;
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    // A run where nothing worked measured nothing; scripts must not mistake it for a result.
    if report.tally.ops() == 0 {
        return Err(format!(
            "no request to '{}' got a successful reply ({} errors)",
            args.addr, report.tally.errors
        ));
    }
    Ok(())
}

/// One thread runs everything on the calling thread; more use tokio's work-stealing pool.
fn client_runtime(threads: u32) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads as usize);
        builder
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the client runtime: {e}"))
}

fn plan_for(args: &CacheBenchArgs, start: Instant) -> Plan {
    let pipeline = if args.load && args.pipeline == 1 {
        LOAD_PIPELINE
    } else {
        args.pipeline
    };
    Plan {
        addr: args.addr.clone(),
        conns: args.conns as usize,
        pipeline: pipeline as usize,
        ratio: args.ratio,
        keys: args.keys,
        value: value_bytes(args.value_size as usize),
        load: args.load,
        window: Window::new(args, start),
    }
}

/// A printable, recognisable value, so a captured stream is easy to read.
fn value_bytes(len: usize) -> Vec<u8> {
    (b'a'..=b'z').cycle().take(len).collect()
}

/// Opens every connection before the clock starts, so connect time is not measured.
async fn connect_all(addr: &str, conns: u32) -> Result<Vec<TcpStream>, String> {
    let mut streams = Vec::with_capacity(conns as usize);
    for n in 1..=conns {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connection {n} to '{addr}' timed out"))?
            .map_err(|e| format!("cannot connect to '{addr}' (connection {n}): {e}"))?;
        // Small requests must leave at once, not wait for Nagle.
        stream
            .set_nodelay(true)
            .map_err(|e| format!("cannot set TCP_NODELAY on '{addr}': {e}"))?;
        streams.push(stream);
    }
    Ok(streams)
}

/// Runs one task per connection and merges what they saw.
async fn drive_all(plan: Arc<Plan>, streams: Vec<TcpStream>) -> Tally {
    let next_load_key = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = streams
        .into_iter()
        .zip(0u64..)
        .map(|(stream, n)| {
            let conn = Conn::new(stream, plan.pipeline, plan.value.len());
            if plan.load {
                tokio::spawn(drive_load(
                    conn,
                    Arc::clone(&plan),
                    Arc::clone(&next_load_key),
                ))
            } else {
                tokio::spawn(drive_mix(conn, Arc::clone(&plan), n))
            }
        })
        .collect();
    let mut total = Tally::new();
    for task in tasks {
        match task.await {
            Ok(tally) => total.merge(tally),
            Err(e) => total.count_errors(format!("connection task failed: {e}"), 1),
        }
    }
    total
}

/// The timed mix: random keys, sets and gets by `--ratio`, until the window closes.
async fn drive_mix(mut conn: Conn, plan: Arc<Plan>, conn_number: u64) -> Tally {
    let mut rng = XorShift64::new(conn_number);
    let mut tally = Tally::new();
    while Instant::now() < plan.window.stop_issuing {
        conn.start_batch();
        for _ in 0..plan.pipeline {
            let key = rng.below(plan.keys);
            if plan.ratio.picks_set(&mut rng) {
                conn.push_set(key, &plan.value);
            } else {
                conn.push_get(key);
            }
        }
        if let Err(failure) = conn.round_trip(&plan.window, &mut tally).await {
            tally.count_errors(failure.reason, failure.unanswered as u64);
            break;
        }
    }
    tally.finished_at = Some(Instant::now());
    tally
}

/// `--load`: connections take the next `pipeline` keys from a shared counter until every key
/// has been set once.
async fn drive_load(mut conn: Conn, plan: Arc<Plan>, next_key: Arc<AtomicU64>) -> Tally {
    let mut tally = Tally::new();
    while Instant::now() < plan.window.stop_issuing {
        let first = next_key.fetch_add(plan.pipeline as u64, Ordering::Relaxed);
        if first >= plan.keys {
            break;
        }
        conn.start_batch();
        for key in first..plan.keys.min(first + plan.pipeline as u64) {
            conn.push_set(key, &plan.value);
        }
        if let Err(failure) = conn.round_trip(&plan.window, &mut tally).await {
            tally.count_errors(failure.reason, failure.unanswered as u64);
            break;
        }
    }
    tally.finished_at = Some(Instant::now());
    tally
}

/// Why a connection stopped, and how many requests of its last batch never got a reply.
struct ConnFailure {
    reason: String,
    unanswered: usize,
}

/// One client connection: the socket, the batch being built and the unparsed reply bytes.
struct Conn {
    stream: TcpStream,
    batch: Vec<u8>,
    ops: Vec<Op>,
    received: Vec<u8>,
    /// Bytes of `received` already parsed.
    consumed: usize,
}

impl Conn {
    fn new(stream: TcpStream, pipeline: usize, value_size: usize) -> Self {
        Self {
            stream,
            batch: Vec::with_capacity(pipeline * (value_size + 64)),
            ops: Vec::with_capacity(pipeline),
            received: Vec::with_capacity(READ_CHUNK),
            consumed: 0,
        }
    }

    fn start_batch(&mut self) {
        self.batch.clear();
        self.ops.clear();
    }

    fn push_get(&mut self, key: u64) {
        encode_get(&mut self.batch, key);
        self.ops.push(Op::Get);
    }

    fn push_set(&mut self, key: u64, value: &[u8]) {
        encode_set(&mut self.batch, key, value);
        self.ops.push(Op::Set);
    }

    /// Sends the batch and reads its replies, counting them into `tally` if the batch was sent
    /// inside the measuring window. Gives up at the stall limit or the window's hard stop.
    async fn round_trip(&mut self, window: &Window, tally: &mut Tally) -> Result<(), ConnFailure> {
        let limit = window.hard_stop.min(Instant::now() + STALL_LIMIT);
        let mut answered = 0;
        let exchange = self.exchange(window.measure_from, tally, &mut answered);
        let reason = match tokio::time::timeout_at(limit, exchange).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(reason)) => reason,
            Err(_) => "no reply before the deadline".to_string(),
        };
        Err(ConnFailure {
            reason,
            unanswered: self.ops.len() - answered,
        })
    }

    async fn exchange(
        &mut self,
        measure_from: Instant,
        tally: &mut Tally,
        answered: &mut usize,
    ) -> Result<(), String> {
        let sent_at = Instant::now();
        self.stream
            .write_all(&self.batch)
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        for i in 0..self.ops.len() {
            let op = self.ops[i];
            self.next_reply(|reply| {
                if sent_at >= measure_from {
                    tally.count_reply(op, reply, sent_at.elapsed());
                }
            })
            .await?;
            *answered += 1;
        }
        Ok(())
    }

    /// Reads until one whole reply is buffered and hands it to `on_reply`; a callback because
    /// the reply borrows the receive buffer.
    async fn next_reply(&mut self, on_reply: impl FnOnce(&Reply<'_>)) -> Result<(), String> {
        loop {
            match parse_reply(&self.received[self.consumed..]) {
                Ok(Some((reply, used))) => {
                    on_reply(&reply);
                    self.consumed += used;
                    return Ok(());
                }
                Ok(None) => self.receive_more().await?,
                Err(malformed) => return Err(malformed.to_string()),
            }
        }
    }

    async fn receive_more(&mut self) -> Result<(), String> {
        // Keep only the unparsed tail, usually a fraction of one reply.
        self.received.drain(..self.consumed);
        self.consumed = 0;
        self.received.reserve(READ_CHUNK);
        match self.stream.read_buf(&mut self.received).await {
            Ok(0) => Err("connection closed by the server".to_string()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("read failed: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Report

/// The numbers printed at the end of a run.
struct Report {
    load: bool,
    addr: String,
    conns: usize,
    pipeline: usize,
    ratio: Ratio,
    value_size: usize,
    keys: u64,
    threads: u32,
    warmup: Duration,
    /// From the start of measuring until the last connection finished.
    measured: Duration,
    tally: Tally,
}

/// Latency percentiles in microseconds.
struct Percentiles {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Report {
    fn new(args: &CacheBenchArgs, plan: &Plan, tally: Tally) -> Self {
        let measured = tally
            .finished_at
            .map(|end| end.saturating_duration_since(plan.window.measure_from))
            .unwrap_or_default();
        Self {
            load: plan.load,
            addr: plan.addr.clone(),
            conns: plan.conns,
            pipeline: plan.pipeline,
            ratio: plan.ratio,
            value_size: plan.value.len(),
            keys: plan.keys,
            threads: args.threads,
            warmup: args.warmup,
            measured,
            tally,
        }
    }

    fn ops_per_sec(&self) -> f64 {
        let secs = self.measured.as_secs_f64();
        if secs > 0.0 {
            self.tally.ops() as f64 / secs
        } else {
            0.0
        }
    }

    fn percentiles(&self) -> Percentiles {
        let hist = &self.tally.latency_ns;
        let micros = |ns: u64| ns as f64 / 1000.0;
        if hist.is_empty() {
            return Percentiles {
                p50: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            };
        }
        Percentiles {
            p50: micros(hist.value_at_quantile(0.50)),
            p99: micros(hist.value_at_quantile(0.99)),
            p999: micros(hist.value_at_quantile(0.999)),
            max: micros(hist.max()),
        }
    }

    /// The human-readable report, aligned like redis-benchmark's summary.
    fn table(&self) -> String {
        let mut out = String::new();
        let t = &self.tally;
        let threads = plural(u64::from(self.threads), "client thread");
        if self.load {
            out += &format!("cache load  {}\n", self.addr);
            out += &format!(
                "  {} keys, {}-byte values, {} conns, pipeline {}, {threads}\n",
                self.keys, self.value_size, self.conns, self.pipeline
            );
            out += &format!("  took {:.2} s\n\n", self.measured.as_secs_f64());
            out += &row("items", t.sets);
            out += &row_f("items/s", self.ops_per_sec());
            if t.sets < self.keys {
                out += &row("not stored", self.keys - t.sets);
            }
        } else {
            out += &format!("cache bench  {}\n", self.addr);
            out += &format!(
                "  {} conns, pipeline {}, set:get {}, {}-byte values, {} keys, {threads}\n",
                self.conns, self.pipeline, self.ratio, self.value_size, self.keys
            );
            out += &format!(
                "  measured {:.2} s after {:.1} s warmup\n\n",
                self.measured.as_secs_f64(),
                self.warmup.as_secs_f64()
            );
            out += &row("ops", t.ops());
            out += &row_f("ops/s", self.ops_per_sec());
            out += &row("gets", t.gets);
            out += &row("hits", t.hits);
            out += &row("misses", t.misses);
            out += &row("sets", t.sets);
        }
        out += &row("errors", t.errors);
        let p = self.percentiles();
        out += &format!(
            "\n  {:<12}{:>10}{:>10}{:>10}{:>10}\n",
            "latency µs", "p50", "p99", "p99.9", "max"
        );
        out += &format!(
            "  {:<12}{:>10.1}{:>10.1}{:>10.1}{:>10.1}\n",
            "", p.p50, p.p99, p.p999, p.max
        );
        if !t.error_kinds.is_empty() {
            out += "\n  errors by kind\n";
            for (kind, count) in &t.error_kinds {
                out += &format!("  {count:>10}  {kind}\n");
            }
        }
        out
    }

    /// One JSON object on one line, for scripts.
    fn json(&self) -> String {
        let t = &self.tally;
        let p = self.percentiles();
        let error_kinds: Vec<String> = t
            .error_kinds
            .iter()
            .map(|(kind, count)| format!("{}:{count}", json_string(kind)))
            .collect();
        format!(
            concat!(
                "{{\"mode\":\"{}\",\"addr\":{},\"conns\":{},\"pipeline\":{},\"ratio\":\"{}\",",
                "\"value_size\":{},\"keys\":{},\"threads\":{},\"seconds\":{:.3},",
                "\"ops\":{},\"ops_per_sec\":{:.1},\"gets\":{},\"hits\":{},\"misses\":{},",
                "\"sets\":{},\"errors\":{},\"p50_us\":{:.1},\"p99_us\":{:.1},",
                "\"p999_us\":{:.1},\"max_us\":{:.1},\"error_kinds\":{{{}}}}}"
            ),
            if self.load { "load" } else { "mix" },
            json_string(&self.addr),
            self.conns,
            self.pipeline,
            self.ratio,
            self.value_size,
            self.keys,
            self.threads,
            self.measured.as_secs_f64(),
            t.ops(),
            self.ops_per_sec(),
            t.gets,
            t.hits,
            t.misses,
            t.sets,
            t.errors,
            p.p50,
            p.p99,
            p.p999,
            p.max,
            error_kinds.join(","),
        )
    }
}

fn row(label: &str, value: u64) -> String {
    format!("  {label:<12}{value:>14}\n")
}

fn row_f(label: &str, value: f64) -> String {
    format!("  {label:<12}{value:>14.1}\n")
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A JSON string literal: quotes, backslashes and control characters escaped.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out += &format!("\\u{:04x}", u32::from(c)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_parse_as_set_get_weights() {
        assert_eq!(parse_ratio("1:9"), Ok(Ratio { sets: 1, gets: 9 }));
        assert_eq!(parse_ratio(" 3 : 1 "), Ok(Ratio { sets: 3, gets: 1 }));
        assert_eq!(parse_ratio("0:1"), Ok(Ratio { sets: 0, gets: 1 }));
        assert_eq!(parse_ratio("1:0"), Ok(Ratio { sets: 1, gets: 0 }));
        for bad in ["", "1", "1:", ":9", "a:b", "1:2:3", "-1:9", "1.5:2"] {
            let err = parse_ratio(bad).expect_err(bad);
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
        assert!(parse_ratio("0:0").is_err());
        assert_eq!(Ratio { sets: 1, gets: 9 }.to_string(), "1:9");
    }

    #[test]
    fn ratio_draws_follow_the_weights() {
        let mut rng = XorShift64::new(7);
        let draws = 100_000;
        let one_in_ten = Ratio { sets: 1, gets: 9 };
        let sets = (0..draws)
            .filter(|_| one_in_ten.picks_set(&mut rng))
            .count();
        assert!((9_000..11_000).contains(&sets), "{sets} sets");
        let gets_only = Ratio { sets: 0, gets: 1 };
        assert!((0..1000).all(|_| !gets_only.picks_set(&mut rng)));
        let sets_only = Ratio { sets: 1, gets: 0 };
        assert!((0..1000).all(|_| sets_only.picks_set(&mut rng)));
    }

    #[test]
    fn seconds_allow_fractions_but_not_nonsense() {
        assert_eq!(parse_seconds("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        for bad in ["-1", "NaN", "inf", "ten", "", "100000"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_drawn_uniformly_from_the_key_space() {
        let mut rng = XorShift64::new(1);
        let mut seen = [0u32; 10];
        for _ in 0..100_000 {
            seen[rng.below(10) as usize] += 1;
        }
        assert!(
            seen.iter().all(|&n| (9_000..11_000).contains(&n)),
            "{seen:?}"
        );
        assert_eq!(rng.below(1), 0);
    }

    #[test]
    fn seeds_give_distinct_repeatable_streams() {
        let first = |seed| XorShift64::new(seed).next_u64();
        assert_eq!(first(3), first(3));
        assert_ne!(first(0), first(1));
        assert_ne!(XorShift64::new(0).0, 0);
    }

    #[test]
    fn requests_encode_as_memcached_text() {
        let mut buf = Vec::new();
        encode_get(&mut buf, 123);
        encode_set(&mut buf, 7, b"abc");
        encode_set(&mut buf, 1_234_567_890, b"");
        assert_eq!(
            buf,
            b"get key:000000123\r\nset key:000000007 0 0 3\r\nabc\r\nset key:1234567890 0 0 0\r\n\r\n"
        );
    }

    /// Complete replies, the reply each should parse to, and its length.
    fn valid_replies() -> Vec<(&'static [u8], Reply<'static>)> {
        vec![
            (b"STORED\r\n", Reply::Stored),
            (b"END\r\n", Reply::Miss),
            (b"VALUE key:000000001 0 5\r\nhello\r\nEND\r\n", Reply::Hit),
            // Data may contain the very bytes that end lines and replies.
            (b"VALUE k 0 7\r\n\r\nEND\r\n\r\nEND\r\n", Reply::Hit),
            (b"VALUE k 42 0 99\r\n\r\nEND\r\n", Reply::Hit),
            (b"ERROR\r\n", Reply::Other(b"ERROR")),
            (
                b"SERVER_ERROR out of memory storing object\r\n",
                Reply::Other(b"SERVER_ERROR out of memory storing object"),
            ),
            (b"NOT_STORED\r\n", Reply::Other(b"NOT_STORED")),
        ]
    }

    #[test]
    fn complete_replies_parse_with_their_length() {
        for (bytes, expected) in valid_replies() {
            assert_eq!(
                parse_reply(bytes),
                Ok(Some((expected, bytes.len()))),
                "{}",
                bytes.escape_ascii()
            );
        }
    }

    #[test]
    fn every_strict_prefix_of_a_reply_is_incomplete() {
        for (bytes, _) in valid_replies() {
            for cut in 0..bytes.len() {
                assert_eq!(
                    parse_reply(&bytes[..cut]),
                    Ok(None),
                    "prefix {cut} of {}",
                    bytes.escape_ascii()
                );
            }
        }
    }

    #[test]
    fn pipelined_replies_parse_one_at_a_time() {
        let stream = b"STORED\r\nVALUE k 0 2\r\nhi\r\nEND\r\nEND\r\n";
        let mut at = 0;
        let mut replies = Vec::new();
        while let Some((reply, used)) = parse_reply(&stream[at..]).expect("valid") {
            replies.push(reply);
            at += used;
        }
        assert_eq!(replies, [Reply::Stored, Reply::Hit, Reply::Miss]);
        assert_eq!(at, stream.len());
    }

    #[test]
    fn broken_framing_is_malformed() {
        let cases: [&[u8]; 6] = [
            b"VALUE k 0\r\n",
            b"VALUE k 0 lots\r\n",
            b"VALUE k 0 2\r\nhiXX",
            b"VALUE k 0 2\r\nhi\r\nEN!",
            b"STORED\n",
            b"\n",
        ];
        for bytes in cases {
            assert!(parse_reply(bytes).is_err(), "{}", bytes.escape_ascii());
        }
        let endless = vec![b'x'; MAX_LINE + 1];
        assert!(parse_reply(&endless).is_err());
        let huge = format!("VALUE k 0 {}\r\n", MAX_VALUE_BYTES + 1);
        assert!(parse_reply(huge.as_bytes()).is_err());
    }

    #[test]
    fn unexpected_replies_are_counted_as_errors() {
        let mut tally = Tally::new();
        let latency = Duration::from_micros(50);
        tally.count_reply(Op::Set, &Reply::Stored, latency);
        tally.count_reply(Op::Get, &Reply::Hit, latency);
        tally.count_reply(Op::Get, &Reply::Miss, latency);
        tally.count_reply(
            Op::Set,
            &Reply::Other(b"SERVER_ERROR out of memory"),
            latency,
        );
        tally.count_reply(Op::Get, &Reply::Stored, latency);
        assert_eq!(
            (tally.sets, tally.gets, tally.hits, tally.misses),
            (1, 2, 1, 1)
        );
        assert_eq!(tally.errors, 2);
        assert_eq!(tally.latency_ns.len(), 3);
        let p50 = tally.latency_ns.value_at_quantile(0.5);
        assert!((49_900..50_100).contains(&p50), "{p50} ns");
        assert_eq!(
            tally.error_kinds["set answered 'SERVER_ERROR out of memory'"],
            1
        );
        assert_eq!(tally.error_kinds["get answered 'STORED'"], 1);
    }

    #[test]
    fn error_kinds_are_bounded() {
        let mut tally = Tally::new();
        for n in 0..100 {
            tally.count_errors(format!("kind {n}"), 2);
        }
        assert_eq!(tally.errors, 200);
        assert_eq!(tally.error_kinds.len(), MAX_ERROR_KINDS + 1);
        assert_eq!(
            tally.error_kinds["other errors"],
            2 * (100 - MAX_ERROR_KINDS as u64)
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
    }
}
