//! Applying the peer's change records to the local store: newest version wins, deletes leave
//! tombstones, a flush sets a floor. Because the rule only compares versions, applying the
//! same records in any order, or twice, gives the same store, which is what lets a full copy,
//! a partial resync and the live stream overlap freely.

use crate::cache::Engine;
use crate::cache::store::{Applied, NewItem};

use super::wire::Record;

/// Applies one record; returns what became of it.
pub fn apply_record(engine: &Engine, record: &Record<'_>, now: u32) -> Applied {
    let store = &engine.store;
    match *record {
        Record::Set {
            key,
            value,
            flags,
            exptime,
            version,
        } => {
            engine.clock.observe(version);
            let hash = store.hash(key);
            let new = NewItem {
                key,
                value,
                flags,
                exptime,
                cas: store.next_cas(),
                version,
            };
            store.lock(hash).apply_set(hash, new, now, store.hasher())
        }
        Record::Delete { key, version } => {
            engine.clock.observe(version);
            let hash = store.hash(key);
            store.lock(hash).apply_delete(hash, key, version, now)
        }
        Record::Flush { version } => {
            engine.clock.observe(version);
            store.flush_older_than(version);
            Applied::Applied
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::version::Version;
    use crate::config::{CacheConfig, ReplicationConfig};
    use crate::replication::wire::{Reader, encode_delete, encode_flush, encode_set};

    fn replicated_engine() -> Engine {
        let config = CacheConfig {
            replication: Some(ReplicationConfig::default()),
            ..CacheConfig::default()
        };
        Engine::new("master", config)
    }

    /// A small deterministic generator, so the permutations are reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn random_records(rng: &mut Rng, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let key = format!("k{}", rng.next() % 5);
                // Real versions are unique per write (clock plus node id); so are these.
                let version = Version {
                    time: (rng.next() % 50) * 100 + i as u64 + 1,
                    node: (rng.next() % 2) as u32 + 1,
                };
                let mut out = Vec::new();
                match rng.next() % 10 {
                    0..=5 => encode_set(
                        &mut out,
                        key.as_bytes(),
                        format!("v{i}").as_bytes(),
                        i as u32,
                        0,
                        version,
                    ),
                    6..=8 => encode_delete(&mut out, key.as_bytes(), version),
                    _ => encode_flush(&mut out, version),
                }
                out
            })
            .collect()
    }

    fn apply_all(records: &[Vec<u8>]) -> (u64, u64) {
        let engine = replicated_engine();
        for bytes in records {
            let record = Reader::new(bytes).record().expect("valid record");
            apply_record(&engine, &record, 1000);
        }
        engine.store.digest(1000)
    }

    #[test]
    fn any_order_of_the_same_writes_converges() {
        let mut rng = Rng(0x9e3779b97f4a7c15);
        for _ in 0..200 {
            let mut records = random_records(&mut rng, 12);
            let expected = apply_all(&records);
            for _ in 0..5 {
                // Fisher-Yates shuffle, then apply everything twice to check idempotence too.
                for i in (1..records.len()).rev() {
                    let j = (rng.next() % (i as u64 + 1)) as usize;
                    records.swap(i, j);
                }
                let mut doubled = records.clone();
                doubled.extend(records.iter().cloned());
                assert_eq!(apply_all(&records), expected);
                assert_eq!(apply_all(&doubled), expected);
            }
        }
    }

    #[test]
    fn a_late_older_set_cannot_resurrect_a_deleted_key() {
        let engine = replicated_engine();
        let mut del = Vec::new();
        encode_delete(&mut del, b"k", Version { time: 10, node: 1 });
        let mut set = Vec::new();
        encode_set(&mut set, b"k", b"old", 0, 0, Version { time: 5, node: 2 });
        apply_record(&engine, &Reader::new(&del).record().expect("record"), 1000);
        let outcome = apply_record(&engine, &Reader::new(&set).record().expect("record"), 1000);
        assert_eq!(outcome, Applied::Older);
        assert_eq!(engine.store.digest(1000).0, 0);
    }
}
