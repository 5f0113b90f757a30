//! The Maglev lookup table (Eisenbud et al., NSDI 2016) behind the `mh` scheduler: every
//! member fills table slots in the order of its own permutation of the (prime-sized) table,
//! taking turns in proportion to its weight. Each member ends up with a share of slots close
//! to its weight's share, and when one of N members leaves only about 1/N of the slots move.

use super::hash;
use super::select::gcd;

/// One slot per entry; an entry is a server index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maglev {
    table: Vec<u16>,
}

impl Maglev {
    /// 65537 is prime and keeps the table at 128 KiB while giving fine weight resolution
    /// (LVS uses 251 by default, which cannot express weights finer than about 1/250).
    pub const DEFAULT_SIZE: usize = 65537;

    /// Builds a table of `size` slots (a prime) over the members with a positive weight;
    /// `members[i]` is server `i`'s stable name and weight. `None` if none has weight.
    pub fn build(members: &[(&str, u32)], size: usize) -> Option<Maglev> {
        debug_assert!(size > 1 && size <= usize::from(u16::MAX) + 2);
        struct Member {
            index: u16,
            offset: usize,
            skip: usize,
            next: usize,
            turns: u32,
        }
        let divisor = members.iter().fold(0, |g, (_, w)| gcd(g, *w));
        let mut live: Vec<Member> = members
            .iter()
            .enumerate()
            .filter(|(_, (_, w))| *w > 0)
            .map(|(i, (name, w))| Member {
                index: i as u16,
                offset: (hash::bytes(0, name.as_bytes()) % size as u64) as usize,
                skip: (hash::bytes(1, name.as_bytes()) % (size as u64 - 1)) as usize + 1,
                next: 0,
                turns: w / divisor,
            })
            .collect();
        if live.is_empty() {
            return None;
        }
        const EMPTY: u16 = u16::MAX;
        let mut table = vec![EMPTY; size];
        let mut filled = 0;
        loop {
            for m in live.iter_mut() {
                for _ in 0..m.turns {
                    // A permutation of a prime-sized table visits every slot, so this ends.
                    let mut slot = (m.offset + m.next * m.skip) % size;
                    while table[slot] != EMPTY {
                        m.next += 1;
                        slot = (m.offset + m.next * m.skip) % size;
                    }
                    table[slot] = m.index;
                    m.next += 1;
                    filled += 1;
                    if filled == size {
                        return Some(Maglev { table });
                    }
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The server index in `slot`.
    pub fn server(&self, slot: usize) -> usize {
        usize::from(self.table[slot])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    fn shares(t: &Maglev, n: usize) -> Vec<f64> {
        let mut counts = vec![0usize; n];
        for s in 0..t.len() {
            counts[t.server(s)] += 1;
        }
        counts.iter().map(|&c| c as f64 / t.len() as f64).collect()
    }

    #[test]
    fn the_table_is_spread_evenly_and_by_weight() {
        let n = names(5);
        let even: Vec<(&str, u32)> = n.iter().map(|s| (s.as_str(), 1)).collect();
        let t = Maglev::build(&even, Maglev::DEFAULT_SIZE).expect("table");
        for share in shares(&t, 5) {
            assert!((share - 0.2).abs() < 0.01, "{share}");
        }
        let weighted = [(n[0].as_str(), 1), (n[1].as_str(), 3), (n[2].as_str(), 0)];
        let t = Maglev::build(&weighted, Maglev::DEFAULT_SIZE).expect("table");
        let s = shares(&t, 3);
        assert!(
            (s[0] - 0.25).abs() < 0.01 && (s[1] - 0.75).abs() < 0.01,
            "{s:?}"
        );
        assert_eq!(s[2], 0.0, "weight 0 owns no slot");
        assert!(Maglev::build(&[("a", 0)], 251).is_none());
    }

    #[test]
    fn one_of_n_leaving_moves_about_one_nth_of_the_slots() {
        for n in [3, 5, 10, 30] {
            let all = names(n);
            let before: Vec<(&str, u32)> = all.iter().map(|s| (s.as_str(), 1)).collect();
            let mut after = before.clone();
            after[n / 2].1 = 0; // it leaves; the others keep their indexes
            let a = Maglev::build(&before, Maglev::DEFAULT_SIZE).expect("before");
            let b = Maglev::build(&after, Maglev::DEFAULT_SIZE).expect("after");
            let moved = (0..a.len()).filter(|&s| a.server(s) != b.server(s)).count();
            let leaver = (0..a.len()).filter(|&s| a.server(s) == n / 2).count();
            let fraction = moved as f64 / a.len() as f64;
            // Its own slots must move; Maglev's bound on the rest is small (a few percent).
            assert!(moved >= leaver);
            assert!(
                fraction < 1.0 / n as f64 + 0.05,
                "{n} servers: {fraction:.3} of slots moved, the leaver held {:.3}",
                leaver as f64 / a.len() as f64
            );
        }
    }

    #[test]
    fn the_table_depends_on_names_not_on_order_of_arrival() {
        let n = names(4);
        let a: Vec<(&str, u32)> = n.iter().map(|s| (s.as_str(), 1)).collect();
        let t1 = Maglev::build(&a, 251).expect("t1");
        let t2 = Maglev::build(&a, 251).expect("t2");
        assert_eq!(t1, t2);
    }
}
