//! The schedulers: which real server gets the next connection, with LVS's names and
//! semantics. Pure: no sockets, no clock, no locks. Each proxy worker owns its own
//! `Scheduler` (round-robin cursor, hash tables, random generator), so a pick takes no lock;
//! the loads it compares are the servers' shared counters, read through `Load`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::hash;
use super::maglev::Maglev;

/// A scheduler, by its `ipvsadm -s` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// Round robin over available servers.
    Rr,
    /// Weighted round robin (LVS's interleaved sequence: AABABCABC for weights 4, 3, 2).
    Wrr,
    /// Smooth weighted round robin (nginx's: weights 5, 1, 1 give AABACAA, never a run of
    /// one server's turns when others are due). Not an LVS scheduler.
    Swrr,
    /// Least connections.
    Lc,
    /// Weighted least connections (LVS's default).
    #[default]
    Wlc,
    /// Shortest expected delay: (active + 1) / weight.
    Sed,
    /// Never queue: an idle server if there is one, else `sed`.
    Nq,
    /// Source hashing: a client address always maps to the same server.
    Sh,
    /// Maglev hashing: like `sh`, with an even spread and minimal disruption.
    Mh,
    /// Weighted random twos: two weighted random picks, the less loaded wins.
    Twos,
    /// Weighted failover: the available server with the highest weight takes everything.
    Fo,
    /// Weighted overflow: the highest weight server until its active connections reach its
    /// weight, then the next.
    Ovf,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 12] = [
        SchedulerKind::Rr,
        SchedulerKind::Wrr,
        SchedulerKind::Swrr,
        SchedulerKind::Lc,
        SchedulerKind::Wlc,
        SchedulerKind::Sed,
        SchedulerKind::Nq,
        SchedulerKind::Sh,
        SchedulerKind::Mh,
        SchedulerKind::Twos,
        SchedulerKind::Fo,
        SchedulerKind::Ovf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Rr => "rr",
            SchedulerKind::Wrr => "wrr",
            SchedulerKind::Swrr => "swrr",
            SchedulerKind::Lc => "lc",
            SchedulerKind::Wlc => "wlc",
            SchedulerKind::Sed => "sed",
            SchedulerKind::Nq => "nq",
            SchedulerKind::Sh => "sh",
            SchedulerKind::Mh => "mh",
            SchedulerKind::Twos => "twos",
            SchedulerKind::Fo => "fo",
            SchedulerKind::Ovf => "ovf",
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SchedulerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = SchedulerKind::ALL.iter().map(|k| k.name()).collect();
                format!("'{s}' is not a scheduler ({})", names.join(", "))
            })
    }
}

/// What a scheduler reads about one server when it picks.
pub trait Load {
    /// The current weight; 0 = quiescent (keeps its connections, gets no new ones).
    fn weight(&self) -> u32;
    /// The weight as the ratio schedulers (swrr, the least-connection family, twos) compare
    /// it: `weight × SHARE_SCALE`, less while a server is in slow start. The scale lets a
    /// weight-1 server ramp up in steps finer than 0 or 1 (HAProxy scales weights by 16 for
    /// the same reason).
    fn share(&self) -> u32 {
        self.weight().saturating_mul(SHARE_SCALE)
    }
    fn active(&self) -> u32;
    fn inactive(&self) -> u32;
    /// May take a new connection now: healthy, ready, not over its connection limit.
    fn usable(&self) -> bool;
}

/// One unit of weight in `Load::share`.
pub const SHARE_SCALE: u32 = 16;

fn available<S: Load>(s: &S) -> bool {
    s.usable() && s.weight() > 0
}

/// LVS's cost of a server's connections: an active one weighs as much as 256 inactive ones.
fn overhead<S: Load>(s: &S) -> u64 {
    u64::from(s.active()) * 256 + u64::from(s.inactive())
}

/// The client a connection comes from; hashing schedulers map it to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub ip: IpAddr,
    pub port: u16,
    /// What an L7 request hashes on instead of the address (its URI, a URL parameter or a
    /// header, already hashed); `None` hashes the address.
    pub key: Option<u64>,
}

impl Client {
    pub fn new(ip: IpAddr, port: u16) -> Client {
        Client {
            ip,
            port,
            key: None,
        }
    }
}

/// `sh`/`mh` options, as ipvsadm's `sh-port` and `sh-fallback` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HashOptions {
    /// Hash the client port too (spreads one client's connections).
    pub port: bool,
    /// When the mapped server is unavailable, use the next one in the table instead of
    /// refusing the connection.
    pub fallback: bool,
    /// `mh` with bounded loads (HAProxy's `hash-balance-factor`): a server whose active
    /// connections would pass this percent of the weighted average is skipped for the next
    /// one in the table. 0 = off.
    pub balance_factor: u32,
}

/// Buckets in the `sh` table (LVS's default).
const SH_BUCKETS: usize = 256;

/// One worker's scheduling state for one pool.
#[derive(Debug, Clone)]
pub struct Scheduler {
    kind: SchedulerKind,
    hash: HashOptions,
    /// `rr`/`wrr`: the server the last pick stopped at; the least-connection family starts
    /// the next scan after it, so ties rotate.
    cursor: Option<usize>,
    /// `wrr`: the current weight threshold of the round.
    current_weight: u32,
    /// `swrr`: each server's running score.
    smooth: Vec<i64>,
    /// `sh`: buckets to server indexes (`None` until a member exists).
    sh_table: Vec<u16>,
    /// `mh`: the Maglev lookup table.
    maglev: Option<Maglev>,
    /// `twos`: xorshift state.
    rng: u64,
}

impl Scheduler {
    /// `seed` varies the random generator between workers.
    pub fn new(kind: SchedulerKind, hash: HashOptions, seed: u64) -> Scheduler {
        Scheduler {
            kind,
            hash,
            cursor: None,
            current_weight: 0,
            smooth: Vec::new(),
            sh_table: Vec::new(),
            maglev: None,
            rng: seed | 1,
        }
    }

    pub fn kind(&self) -> SchedulerKind {
        self.kind
    }

    /// Rebuilds the hash tables after membership or weights changed. `members[i]` is server
    /// `i`'s stable name and weight; weight 0 leaves it out (down, in maintenance, draining).
    pub fn rebuild(&mut self, members: &[(&str, u32)]) {
        match self.kind {
            SchedulerKind::Sh => self.sh_table = sh_table(members),
            SchedulerKind::Mh => self.maglev = Maglev::build(members, Maglev::DEFAULT_SIZE),
            SchedulerKind::Swrr => self.smooth.clear(),
            _ => {}
        }
    }

    /// The server for a new connection from `client`, skipping the servers in `tried`
    /// (earlier attempts of this connection). `None` when no server may take it.
    pub fn pick<S: Load>(
        &mut self,
        servers: &[S],
        client: &Client,
        tried: &[usize],
    ) -> Option<usize> {
        let ok = |i: usize| !tried.contains(&i) && available(&servers[i]);
        match self.kind {
            SchedulerKind::Rr => self.round_robin(servers.len(), ok),
            SchedulerKind::Wrr => self.weighted_round_robin(servers, ok),
            SchedulerKind::Swrr => self.smooth_round_robin(servers, ok),
            SchedulerKind::Lc => self.least(servers, ok, |s| (overhead(s), 1)),
            SchedulerKind::Wlc => self.least(servers, ok, |s| (overhead(s), u64::from(s.share()))),
            SchedulerKind::Sed => self.least(servers, ok, |s| {
                (u64::from(s.active()) + 1, u64::from(s.share()))
            }),
            SchedulerKind::Nq => (0..servers.len())
                .find(|&i| ok(i) && servers[i].active() == 0)
                .or_else(|| {
                    self.least(servers, ok, |s| {
                        (u64::from(s.active()) + 1, u64::from(s.share()))
                    })
                }),
            SchedulerKind::Sh => {
                let key = self.client_hash(client);
                let table = &self.sh_table;
                hashed(table.len(), key, self.hash.fallback, |b| {
                    let i = usize::from(table[b]);
                    (i < servers.len() && ok(i)).then_some(i)
                })
            }
            SchedulerKind::Mh => {
                let key = self.client_hash(client);
                let maglev = self.maglev.as_ref()?;
                let mapped = |b: usize| {
                    let i = maglev.server(b);
                    (i < servers.len() && ok(i)).then_some(i)
                };
                if self.hash.balance_factor > 0 {
                    let room = bounded_load(servers, &ok, self.hash.balance_factor);
                    let bounded =
                        hashed(maglev.len(), key, true, |b| mapped(b).filter(|&i| room(i)));
                    if bounded.is_some() {
                        return bounded;
                    }
                }
                hashed(maglev.len(), key, self.hash.fallback, mapped)
            }
            SchedulerKind::Twos => self.twos(servers, ok),
            SchedulerKind::Fo => best_by_weight(servers, (0..servers.len()).filter(|&i| ok(i))),
            SchedulerKind::Ovf => best_by_weight(
                servers,
                (0..servers.len()).filter(|&i| ok(i) && servers[i].active() < servers[i].weight()),
            ),
        }
    }

    fn round_robin(&mut self, n: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let start = self.cursor.map_or(0, |c| c + 1);
        let pick = (0..n).map(|k| (start + k) % n).find(|&i| ok(i))?;
        self.cursor = Some(pick);
        Some(pick)
    }

    /// LVS's `wrr`: rounds with a falling weight threshold; in each round the servers whose
    /// weight reaches the threshold are taken in order. Weights are read at each pick, so a
    /// runtime weight change applies at once.
    fn weighted_round_robin<S: Load>(
        &mut self,
        servers: &[S],
        ok: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = servers.len();
        let weights = (0..n).filter(|&i| ok(i)).map(|i| servers[i].weight());
        let (max, step) = weights.fold((0u32, 0u32), |(m, g), w| (m.max(w), gcd(g, w)));
        if max == 0 {
            return None;
        }
        self.current_weight = self.current_weight.min(max);
        let mut i = self.cursor.unwrap_or(n - 1);
        // Each round the highest-weight server qualifies, so this ends within two rounds.
        for _ in 0..=2 * n {
            i = (i + 1) % n;
            if i == 0 {
                self.current_weight = match self.current_weight.checked_sub(step) {
                    Some(w) if w > 0 => w,
                    _ => max,
                };
            }
            if ok(i) && servers[i].weight() >= self.current_weight {
                self.cursor = Some(i);
                return Some(i);
            }
        }
        None
    }

    /// nginx's smooth weighted round robin: every available server's score grows by its
    /// weight, the highest score is picked and loses the total. Over a cycle each server is
    /// picked `weight` times, spread out; weights are read at each pick.
    fn smooth_round_robin<S: Load>(
        &mut self,
        servers: &[S],
        ok: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        self.smooth.resize(servers.len(), 0);
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for i in (0..servers.len()).filter(|&i| ok(i)) {
            let w = i64::from(servers[i].share());
            self.smooth[i] += w;
            total += w;
            if best.is_none_or(|b| self.smooth[i] > self.smooth[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        self.smooth[b] -= total;
        Some(b)
    }

    /// LVS's `twos`: two weighted random draws; the one with less overhead per weight wins.
    fn twos<S: Load>(&mut self, servers: &[S], ok: impl Fn(usize) -> bool) -> Option<usize> {
        let total: u64 = (0..servers.len())
            .filter(|&i| ok(i))
            .map(|i| u64::from(servers[i].share()))
            .sum();
        if total == 0 {
            return None;
        }
        let mut draw = || {
            let mut point = self.next_random() % total;
            (0..servers.len()).filter(|&i| ok(i)).find(|&i| {
                let w = u64::from(servers[i].share());
                if point < w {
                    true
                } else {
                    point -= w;
                    false
                }
            })
        };
        let (a, b) = (draw()?, draw()?);
        let cost = |i: usize| (overhead(&servers[i]), u64::from(servers[i].share()));
        Some(if less(cost(b), cost(a)) { b } else { a })
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: plenty for spreading load, and no shared state between workers.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn client_hash(&self, client: &Client) -> u64 {
        client
            .key
            .unwrap_or_else(|| hash::client(client.ip, self.hash.port.then_some(client.port)))
    }
}

/// `a.0 / a.1 < b.0 / b.1` without division (a zero weight never wins).
fn less(a: (u64, u64), b: (u64, u64)) -> bool {
    match (a.1, b.1) {
        (0, _) => false,
        (_, 0) => true,
        _ => u128::from(a.0) * u128::from(b.1) < u128::from(b.0) * u128::from(a.1),
    }
}

impl Scheduler {
    /// The usable server with the lowest `cost` ratio. LVS takes the first on ties; here the
    /// scan starts after the last pick, so ties rotate (as HAProxy's leastconn does). Short
    /// connections are gone before the next pick, leaving every server tied at zero, and
    /// "first on ties" would send them all to one server.
    fn least<S: Load>(
        &mut self,
        servers: &[S],
        ok: impl Fn(usize) -> bool,
        cost: impl Fn(&S) -> (u64, u64),
    ) -> Option<usize> {
        let n = servers.len();
        let start = self.cursor.map_or(0, |c| c + 1);
        let mut best: Option<(usize, (u64, u64))> = None;
        for i in (0..n).map(|k| (start + k) % n).filter(|&i| ok(i)) {
            let c = cost(&servers[i]);
            if best.is_none_or(|(_, b)| less(c, b)) {
                best = Some((i, c));
            }
        }
        let (pick, _) = best?;
        self.cursor = Some(pick);
        Some(pick)
    }
}

/// The highest weight among `candidates`; the first one on ties.
fn best_by_weight<S: Load>(
    servers: &[S],
    candidates: impl Iterator<Item = usize>,
) -> Option<usize> {
    let mut best: Option<usize> = None;
    for i in candidates {
        if best.is_none_or(|b| servers[i].weight() > servers[b].weight()) {
            best = Some(i);
        }
    }
    best
}

/// Consistent hashing with bounded loads (Mirrokni et al., as HAProxy's
/// `hash-balance-factor`): whether server `i` has room for one more connection, when no
/// server may carry more than `factor` percent of its weighted share of all active
/// connections, this one included.
fn bounded_load<'a, S: Load>(
    servers: &'a [S],
    ok: &impl Fn(usize) -> bool,
    factor: u32,
) -> impl Fn(usize) -> bool + 'a {
    let (load, weight) = (0..servers.len())
        .filter(|&i| ok(i))
        .fold((0u64, 0u64), |(l, w), i| {
            (
                l + u64::from(servers[i].active()),
                w + u64::from(servers[i].weight()),
            )
        });
    move |i: usize| {
        let share = u128::from(servers[i].weight());
        // cap = ceil((load + 1) × factor/100 × weight_i / total weight)
        let cap = (u128::from(load + 1) * u128::from(factor) * share)
            .div_ceil(100 * u128::from(weight.max(1)));
        u128::from(servers[i].active()) < cap
    }
}

/// Looks `key` up in a table of `len` buckets; with `fallback`, walks on from an unavailable
/// bucket (LVS's sh-fallback probes other buckets the same way).
fn hashed(
    len: usize,
    key: u64,
    fallback: bool,
    at: impl Fn(usize) -> Option<usize>,
) -> Option<usize> {
    if len == 0 {
        return None;
    }
    let first = (key % len as u64) as usize;
    if !fallback {
        return at(first);
    }
    (0..len).find_map(|k| at((first + k) % len))
}

/// LVS's `sh` table: buckets handed out in passes, each member taking as many consecutive
/// buckets per pass as its weight.
fn sh_table(members: &[(&str, u32)]) -> Vec<u16> {
    let live: Vec<(usize, u32)> = members
        .iter()
        .enumerate()
        .filter(|(_, (_, w))| *w > 0)
        .map(|(i, (_, w))| (i, *w))
        .collect();
    if live.is_empty() {
        return Vec::new();
    }
    let mut table = Vec::with_capacity(SH_BUCKETS);
    'fill: loop {
        for &(i, w) in &live {
            for _ in 0..w {
                if table.len() == SH_BUCKETS {
                    break 'fill;
                }
                table.push(i as u16);
            }
        }
    }
    table
}

/// Greatest common divisor; `gcd(x, 0) == x`, so folding from 0 skips zero weights.
pub(crate) fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy)]
    struct S {
        weight: u32,
        active: u32,
        inactive: u32,
        usable: bool,
    }

    impl Load for S {
        fn weight(&self) -> u32 {
            self.weight
        }
        fn active(&self) -> u32 {
            self.active
        }
        fn inactive(&self) -> u32 {
            self.inactive
        }
        fn usable(&self) -> bool {
            self.usable
        }
    }

    fn servers(weights: &[u32]) -> Vec<S> {
        weights
            .iter()
            .map(|&weight| S {
                weight,
                active: 0,
                inactive: 0,
                usable: true,
            })
            .collect()
    }

    fn client(n: u32) -> Client {
        Client::new(IpAddr::from(n.to_be_bytes()), 40000)
    }

    fn sequence(kind: SchedulerKind, s: &[S], picks: usize) -> String {
        let mut sched = Scheduler::new(kind, HashOptions::default(), 7);
        (0..picks)
            .map(|_| match sched.pick(s, &client(1), &[]) {
                Some(i) => char::from(b'A' + i as u8),
                None => '-',
            })
            .collect()
    }

    #[test]
    fn round_robin_skips_unavailable_and_quiescent_servers() {
        let mut s = servers(&[1, 1, 1, 0]);
        assert_eq!(sequence(SchedulerKind::Rr, &s, 7), "ABCABCA");
        s[1].usable = false;
        assert_eq!(sequence(SchedulerKind::Rr, &s, 4), "ACAC");
        s[0].usable = false;
        s[2].usable = false;
        assert_eq!(sequence(SchedulerKind::Rr, &s, 2), "--");
    }

    #[test]
    fn smooth_weighted_round_robin_spreads_turns_as_nginx() {
        let s = servers(&[5, 1, 1]);
        assert_eq!(sequence(SchedulerKind::Swrr, &s, 14), "AABACAAAABACAA");
        let s = servers(&[2, 0, 1]);
        assert_eq!(
            sequence(SchedulerKind::Swrr, &s, 6),
            "ACAACA",
            "weight 0 never picked"
        );
    }

    #[test]
    fn weighted_round_robin_interleaves_as_lvs() {
        let s = servers(&[4, 3, 2]);
        assert_eq!(sequence(SchedulerKind::Wrr, &s, 18), "AABABCABCAABABCABC");
        // Common divisors are stepped over: 4/2 behaves as 2/1.
        assert_eq!(sequence(SchedulerKind::Wrr, &servers(&[4, 2]), 6), "AABAAB");
    }

    #[test]
    fn weighted_round_robin_follows_a_weight_change_at_once() {
        let mut s = servers(&[5, 1]);
        let mut sched = Scheduler::new(SchedulerKind::Wrr, HashOptions::default(), 1);
        let c = client(1);
        for _ in 0..3 {
            assert_eq!(sched.pick(&s, &c, &[]), Some(0));
        }
        s[0].weight = 1;
        let next: Vec<_> = (0..4).map(|_| sched.pick(&s, &c, &[])).collect();
        assert_eq!(
            next.iter().filter(|p| **p == Some(1)).count(),
            2,
            "{next:?}"
        );
    }

    #[test]
    fn least_connection_family_compares_as_lvs() {
        let mut s = servers(&[1, 3, 1]);
        s[0].active = 2;
        s[1].active = 3;
        s[2].active = 2;
        s[2].inactive = 5;
        // lc: overhead 512, 768, 517 -> A.
        assert_eq!(sequence(SchedulerKind::Lc, &s, 1), "A");
        // wlc: 512/1, 768/3 = 256, 517/1 -> B.
        assert_eq!(sequence(SchedulerKind::Wlc, &s, 1), "B");
        // sed: (2+1)/1, (3+1)/3, (2+1)/1 -> B.
        assert_eq!(sequence(SchedulerKind::Sed, &s, 1), "B");
        // nq: nobody idle -> sed; then an idle server wins whatever its weight.
        assert_eq!(sequence(SchedulerKind::Nq, &s, 1), "B");
        s[2].active = 0;
        assert_eq!(sequence(SchedulerKind::Nq, &s, 1), "C");
    }

    #[test]
    fn least_connection_ties_rotate_instead_of_piling_on_the_first() {
        // Idle servers, as under short connections that close before the next pick.
        let s = servers(&[1, 1, 1]);
        for kind in [SchedulerKind::Lc, SchedulerKind::Wlc] {
            assert_eq!(sequence(kind, &s, 6), "ABCABC", "{kind}");
        }
        // A real difference in load still decides.
        let mut s = servers(&[1, 1, 1]);
        s[1].active = 1;
        assert_eq!(sequence(SchedulerKind::Lc, &s, 4), "ACAC");
    }

    #[test]
    fn failover_and_overflow_prefer_the_heaviest_server() {
        let mut s = servers(&[2, 5, 3]);
        assert_eq!(sequence(SchedulerKind::Fo, &s, 3), "BBB");
        assert_eq!(sequence(SchedulerKind::Ovf, &s, 1), "B");
        s[1].active = 5;
        assert_eq!(sequence(SchedulerKind::Fo, &s, 1), "B");
        assert_eq!(sequence(SchedulerKind::Ovf, &s, 1), "C");
        s[2].active = 3;
        s[0].active = 2;
        assert_eq!(sequence(SchedulerKind::Ovf, &s, 1), "-");
        s[1].usable = false;
        assert_eq!(sequence(SchedulerKind::Fo, &s, 1), "C");
    }

    #[test]
    fn weights_are_respected_over_many_picks_and_zero_is_never_picked() {
        for kind in [
            SchedulerKind::Wrr,
            SchedulerKind::Twos,
            SchedulerKind::Wlc,
            SchedulerKind::Sed,
        ] {
            let s = servers(&[1, 2, 0, 5]);
            let mut live = s.clone();
            let mut sched = Scheduler::new(kind, HashOptions::default(), 99);
            let mut counts = [0u32; 4];
            for n in 0..8000u32 {
                let i = sched.pick(&live, &client(n), &[]).expect("a server");
                counts[i] += 1;
                // Connections that stay open, so the least-connection schedulers see load.
                live[i].active += 1;
            }
            assert_eq!(counts[2], 0, "{kind}: weight 0 was picked");
            let share = |i: usize| f64::from(counts[i]) / 8000.0;
            for (i, expected) in [(0, 1.0 / 8.0), (1, 2.0 / 8.0), (3, 5.0 / 8.0)] {
                assert!(
                    (share(i) - expected).abs() < 0.03,
                    "{kind}: server {i} got {:.3}, expected {expected:.3} ({counts:?})",
                    share(i)
                );
            }
        }
    }

    #[test]
    fn retries_never_return_a_tried_server() {
        let s = servers(&[1, 1, 1]);
        for kind in SchedulerKind::ALL {
            let mut sched = Scheduler::new(
                kind,
                HashOptions {
                    port: false,
                    fallback: true,
                    balance_factor: 0,
                },
                3,
            );
            let members = [("a", 1), ("b", 1), ("c", 1)];
            sched.rebuild(&members);
            let c = client(5);
            let first = sched.pick(&s, &c, &[]).expect("first");
            let second = sched.pick(&s, &c, &[first]).expect("second");
            assert_ne!(first, second, "{kind}");
            let third = sched.pick(&s, &c, &[first, second]).expect("third");
            assert!(third != first && third != second, "{kind}");
            assert_eq!(sched.pick(&s, &c, &[0, 1, 2]), None, "{kind}");
        }
    }

    #[test]
    fn source_hashing_is_sticky_and_falls_back_only_when_asked() {
        let mut s = servers(&[1, 1, 1]);
        let members = [("a", 1), ("b", 1), ("c", 1)];
        for kind in [SchedulerKind::Sh, SchedulerKind::Mh] {
            let mut strict = Scheduler::new(kind, HashOptions::default(), 1);
            strict.rebuild(&members);
            let mut lenient = Scheduler::new(
                kind,
                HashOptions {
                    port: false,
                    fallback: true,
                    balance_factor: 0,
                },
                1,
            );
            lenient.rebuild(&members);
            let c = client(77);
            let home = strict.pick(&s, &c, &[]).expect("mapped");
            for _ in 0..10 {
                assert_eq!(strict.pick(&s, &c, &[]), Some(home), "{kind}");
            }
            s[home].usable = false;
            assert_eq!(strict.pick(&s, &c, &[]), None, "{kind}: no fallback");
            let other = lenient.pick(&s, &c, &[]).expect("fallback");
            assert_ne!(other, home, "{kind}");
            s[home].usable = true;
        }
    }

    #[test]
    fn bounded_loads_move_keys_off_a_server_past_its_share_and_only_then() {
        let members = [("a", 1), ("b", 1), ("c", 1), ("d", 1)];
        let bounded = HashOptions {
            balance_factor: 125,
            ..HashOptions::default()
        };
        let mut sched = Scheduler::new(SchedulerKind::Mh, bounded, 1);
        sched.rebuild(&members);
        let mut s = servers(&[1, 1, 1, 1]);
        let c = client(42);
        let home = sched.pick(&s, &c, &[]).expect("mapped");
        // 8 active over 4 servers: a cap of ceil(9 × 1.25 / 4) = 3 each.
        for server in s.iter_mut() {
            server.active = 2;
        }
        assert_eq!(
            sched.pick(&s, &c, &[]),
            Some(home),
            "under the cap: the hash decides"
        );
        s[home].active = 3;
        for (i, server) in s.iter_mut().enumerate() {
            if i != home {
                server.active = 1;
            }
        }
        // 6 active: a cap of ceil(7 × 1.25 / 4) = 3, which home has reached.
        let moved = sched.pick(&s, &c, &[]).expect("another");
        assert_ne!(moved, home);
        assert_eq!(
            sched.pick(&s, &c, &[]),
            Some(moved),
            "the same key moves the same way"
        );
        let mut plain = Scheduler::new(SchedulerKind::Mh, HashOptions::default(), 1);
        plain.rebuild(&members);
        assert_eq!(
            plain.pick(&s, &c, &[]),
            Some(home),
            "without a factor load is ignored"
        );
    }

    #[test]
    fn hashing_the_port_spreads_one_client() {
        let s = servers(&[1, 1, 1, 1]);
        let members = [("a", 1), ("b", 1), ("c", 1), ("d", 1)];
        let mut sched = Scheduler::new(
            SchedulerKind::Mh,
            HashOptions {
                port: true,
                fallback: false,
                balance_factor: 0,
            },
            1,
        );
        sched.rebuild(&members);
        let mut seen = [false; 4];
        for port in 1000..1100 {
            let c = Client::new(IpAddr::from([10, 0, 0, 1]), port);
            seen[sched.pick(&s, &c, &[]).expect("mapped")] = true;
        }
        assert!(seen.iter().all(|s| *s), "{seen:?}");
    }

    #[test]
    fn source_hash_buckets_follow_weights() {
        let table = sh_table(&[("a", 3), ("b", 0), ("c", 1)]);
        assert_eq!(table.len(), SH_BUCKETS);
        assert_eq!(&table[..8], &[0, 0, 0, 2, 0, 0, 0, 2]);
        assert_eq!(table.iter().filter(|&&i| i == 0).count(), 192);
        assert!(sh_table(&[("a", 0)]).is_empty());
    }

    #[test]
    fn names_round_trip() {
        for kind in SchedulerKind::ALL {
            assert_eq!(kind.name().parse::<SchedulerKind>(), Ok(kind));
        }
        assert!("wlcx".parse::<SchedulerKind>().is_err());
    }
}
