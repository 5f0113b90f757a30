//! The item store: per shard, a hash index and an LRU list over a slab of items, under a hard
//! memory limit. Pure data structure: no I/O, no clocks (callers pass `now` in unix seconds),
//! no locks (the `Store` wrapper puts each shard behind its own mutex so cores work in
//! parallel on different keys).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use hashbrown::{HashMap, HashTable};

use super::version::Version;

/// FNV-1a over an item's contents. Unlike the index hasher it is the same in every process,
/// so digests from two nodes can be compared.
fn content_hash(item: &Item) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(&(item.key().len() as u32).to_le_bytes());
    feed(item.key());
    feed(&(item.value().len() as u32).to_le_bytes());
    feed(item.value());
    feed(&item.flags.to_le_bytes());
    feed(&item.exptime.to_le_bytes());
    h
}

/// Sentinel for "no neighbour" in the LRU links.
const NIL: u32 = u32::MAX;

/// One cached item. Key and value share one allocation to halve allocator overhead.
#[derive(Debug)]
pub struct Item {
    data: Box<[u8]>,
    key_len: u8,
    pub flags: u32,
    /// Absolute unix time the item dies at; 0 = never.
    pub exptime: u32,
    pub cas: u64,
    /// Last store or access time; delayed `flush_all` and the meta `l` flag read it.
    pub time: u32,
    /// Whether the item was read since it was stored (`h` flag, `*_unfetched` stats).
    pub fetched: bool,
    /// Marked stale by a meta invalidation; a client may win the right to recache it.
    pub stale: bool,
    /// A recache "win" token was already handed out for this item.
    pub token_sent: bool,
    /// The key was set in base64 form (meta `b`), so replies echo it encoded.
    pub key_binary: bool,
    /// Which write produced this state; replication keeps the newest.
    pub version: Version,
    prev: u32,
    next: u32,
}

impl Item {
    pub fn key(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }

    pub fn value(&self) -> &[u8] {
        &self.data[self.key_len as usize..]
    }

    /// Bytes charged against the memory limit.
    fn charge(&self) -> usize {
        self.data.len() + ITEM_OVERHEAD
    }
}

/// What an item costs beyond its key and value: the slab entry, the allocator's header for the
/// key+value block, and the index slot. Counting it keeps real memory under the limit.
pub const ITEM_OVERHEAD: usize = std::mem::size_of::<Option<Item>>() + 16 + 8;

/// A new item's contents.
pub struct NewItem<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub flags: u32,
    pub exptime: u32,
    pub cas: u64,
    pub version: Version,
}

/// Counters kept per shard, summed for `stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShardStats {
    pub curr_items: u64,
    pub total_items: u64,
    pub bytes: u64,
    pub evictions: u64,
    pub evicted_unfetched: u64,
    /// Expired or flushed items whose memory was taken back (on access, eviction or sweep).
    pub reclaimed: u64,
    pub expired_unfetched: u64,
}

impl std::ops::AddAssign for ShardStats {
    fn add_assign(&mut self, o: Self) {
        self.curr_items += o.curr_items;
        self.total_items += o.total_items;
        self.bytes += o.bytes;
        self.evictions += o.evictions;
        self.evicted_unfetched += o.evicted_unfetched;
        self.reclaimed += o.reclaimed;
        self.expired_unfetched += o.expired_unfetched;
    }
}

/// When a delayed `flush_all` takes effect: items last touched at or before `oldest_live`
/// are dead once the clock reaches it (memcached's `settings.oldest_live`).
#[derive(Debug, Clone, Copy, Default)]
pub struct FlushMark {
    pub oldest_live: u32,
}

impl FlushMark {
    fn kills(&self, item: &Item, now: u32) -> bool {
        self.oldest_live != 0 && self.oldest_live <= now && item.time <= self.oldest_live
    }
}

/// What became of a write received from the replication peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It was newer than what this node had, and is now stored.
    Applied,
    /// This node already had a newer (or the same) version; the write lost.
    Older,
    /// No room for it even after evicting everything.
    NoMemory,
}

/// A deleted key's version, remembered so an older write arriving late cannot bring it back.
#[derive(Debug, Clone, Copy)]
struct Tombstone {
    version: Version,
    buried: u32,
}

/// Tombstone rules, on when the node replicates.
#[derive(Debug, Clone, Copy)]
pub struct TombstonePolicy {
    /// Seconds a tombstone is kept: a peer that stays away longer may bring deleted keys back.
    pub ttl: u32,
    /// Most tombstones per shard; beyond it the oldest known go first.
    pub cap: usize,
}

/// Why an item could not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Larger than this shard's whole memory budget.
    OutOfMemory,
}

/// One shard: index + slab + LRU list + memory budget.
pub struct Shard {
    index: HashTable<u32>,
    slots: Vec<Option<Item>>,
    free: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used: evicted first.
    tail: u32,
    limit: usize,
    stats: ShardStats,
    sweep_cursor: usize,
    tombstones: HashMap<Box<[u8]>, Tombstone>,
    tombstone_policy: Option<TombstonePolicy>,
    /// Writes older than the last replicated `flush_all` are dead on arrival.
    flush_floor: Version,
}

impl Shard {
    pub fn new(limit: usize, tombstone_policy: Option<TombstonePolicy>) -> Self {
        Shard {
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            limit,
            stats: ShardStats::default(),
            sweep_cursor: 0,
            tombstones: HashMap::new(),
            tombstone_policy,
            flush_floor: Version::ZERO,
        }
    }

    pub fn stats(&self) -> ShardStats {
        self.stats
    }

    fn slot(&self, idx: u32) -> &Item {
        self.slots[idx as usize]
            .as_ref()
            .expect("index points at a live slot")
    }

    fn slot_mut(&mut self, idx: u32) -> &mut Item {
        self.slots[idx as usize]
            .as_mut()
            .expect("index points at a live slot")
    }

    /// Looks a key up, reclaiming it if it expired or was flushed.
    pub fn find(&mut self, hash: u64, key: &[u8], now: u32, flush: FlushMark) -> Option<u32> {
        let slots = &self.slots;
        let idx = *self.index.find(hash, |&i| {
            slots[i as usize].as_ref().is_some_and(|it| it.key() == key)
        })?;
        let item = self.slot(idx);
        let dead = (item.exptime != 0 && item.exptime <= now) || flush.kills(item, now);
        if dead {
            self.reclaim(hash, idx);
            return None;
        }
        Some(idx)
    }

    pub fn item(&self, idx: u32) -> &Item {
        self.slot(idx)
    }

    pub fn item_mut(&mut self, idx: u32) -> &mut Item {
        self.slot_mut(idx)
    }

    /// Marks an item most recently used.
    pub fn bump(&mut self, idx: u32, now: u32) {
        self.unlink_lru(idx);
        self.push_head(idx);
        self.slot_mut(idx).time = now;
    }

    /// Stores an item, replacing any item with the same key, evicting least recently used
    /// items until it fits. Returns the new item's slot.
    pub fn insert(
        &mut self,
        hash: u64,
        new: NewItem<'_>,
        now: u32,
        hasher: &impl BuildHasher,
    ) -> Result<u32, StoreError> {
        let charge = new.key.len() + new.value.len() + ITEM_OVERHEAD;
        if charge > self.limit {
            return Err(StoreError::OutOfMemory);
        }
        if let Some(old) = self.lookup(hash, new.key) {
            self.remove(hash, old);
        }
        if !self.tombstones.is_empty() {
            self.tombstones.remove(new.key);
        }
        while self.stats.bytes as usize + charge > self.limit && self.tail != NIL {
            self.evict_tail(now, hasher);
        }
        let mut data = Vec::with_capacity(new.key.len() + new.value.len());
        data.extend_from_slice(new.key);
        data.extend_from_slice(new.value);
        let item = Item {
            data: data.into_boxed_slice(),
            key_len: new.key.len() as u8,
            flags: new.flags,
            exptime: new.exptime,
            cas: new.cas,
            time: now,
            fetched: false,
            stale: false,
            token_sent: false,
            key_binary: false,
            version: new.version,
            prev: NIL,
            next: NIL,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(item);
                i
            }
            None => {
                self.slots.push(Some(item));
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.index.insert_unique(hash, idx, |&i| {
            hasher.hash_one(
                slots[i as usize]
                    .as_ref()
                    .map(Item::key)
                    .unwrap_or_default(),
            )
        });
        self.push_head(idx);
        self.stats.bytes += charge as u64;
        self.stats.curr_items += 1;
        self.stats.total_items += 1;
        Ok(idx)
    }

    /// Replaces an item's value in place (incr/decr that fit), keeping its slot and links.
    pub fn overwrite_value(&mut self, idx: u32, value: &[u8]) {
        let item = self.slot_mut(idx);
        let start = item.key_len as usize;
        debug_assert_eq!(item.data.len() - start, value.len());
        item.data[start..].copy_from_slice(value);
    }

    fn lookup(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| {
                slots[i as usize].as_ref().is_some_and(|it| it.key() == key)
            })
            .copied()
    }

    /// Removes an item (delete, replace).
    pub fn remove(&mut self, hash: u64, idx: u32) {
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == idx) {
            entry.remove();
        }
        self.unlink_lru(idx);
        if let Some(item) = self.slots[idx as usize].take() {
            self.stats.bytes -= item.charge() as u64;
            self.stats.curr_items -= 1;
        }
        self.free.push(idx);
    }

    fn reclaim(&mut self, hash: u64, idx: u32) {
        if !self.slot(idx).fetched {
            self.stats.expired_unfetched += 1;
        }
        self.stats.reclaimed += 1;
        self.remove(hash, idx);
    }

    fn evict_tail(&mut self, now: u32, hasher: &impl BuildHasher) {
        let idx = self.tail;
        let item = self.slot(idx);
        let hash = hasher.hash_one(item.key());
        let expired = item.exptime != 0 && item.exptime <= now;
        let fetched = item.fetched;
        if expired {
            self.reclaim(hash, idx);
            return;
        }
        self.stats.evictions += 1;
        if !fetched {
            self.stats.evicted_unfetched += 1;
        }
        self.remove(hash, idx);
    }

    /// Reclaims expired items, looking at up to `budget` slots from where the last sweep
    /// stopped. Returns how many were reclaimed.
    pub fn sweep(
        &mut self,
        now: u32,
        flush: FlushMark,
        budget: usize,
        hasher: &impl BuildHasher,
    ) -> usize {
        if let Some(policy) = self.tombstone_policy {
            let cutoff = now.saturating_sub(policy.ttl);
            self.tombstones.retain(|_, t| t.buried > cutoff);
        }
        let mut reclaimed = 0;
        for _ in 0..budget.min(self.slots.len()) {
            if self.sweep_cursor >= self.slots.len() {
                self.sweep_cursor = 0;
            }
            let idx = self.sweep_cursor as u32;
            self.sweep_cursor += 1;
            let Some(item) = self.slots[idx as usize].as_ref() else {
                continue;
            };
            if (item.exptime != 0 && item.exptime <= now) || flush.kills(item, now) {
                let hash = hasher.hash_one(item.key());
                self.reclaim(hash, idx);
                reclaimed += 1;
            }
        }
        reclaimed
    }

    /// Drops every item (immediate `flush_all`).
    pub fn clear(&mut self) {
        self.tombstones.clear();
        self.index.clear();
        self.slots.clear();
        self.free.clear();
        self.head = NIL;
        self.tail = NIL;
        self.stats.bytes = 0;
        self.stats.curr_items = 0;
        self.sweep_cursor = 0;
    }

    /// Last access time of the least recently used item, if any (`stats items` age).
    pub fn oldest_time(&self) -> Option<u32> {
        (self.tail != NIL).then(|| self.slot(self.tail).time)
    }

    /// Remembers that `key` was deleted at `version` (when tombstones are on).
    pub fn bury(&mut self, key: &[u8], version: Version, now: u32) {
        let Some(policy) = self.tombstone_policy else {
            return;
        };
        if self.tombstones.len() >= policy.cap && !self.tombstones.contains_key(key) {
            let oldest = self
                .tombstones
                .iter()
                .min_by_key(|(_, t)| t.buried)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.tombstones.remove(&k);
            }
        }
        let tomb = Tombstone {
            version,
            buried: now,
        };
        match self.tombstones.get_mut(key) {
            Some(t) if t.version >= version => {}
            Some(t) => *t = tomb,
            None => {
                self.tombstones.insert(key.into(), tomb);
            }
        }
    }

    /// The version a key must beat to be stored here: its item's, its tombstone's, or the
    /// last flush's.
    fn newest_known(&self, hash: u64, key: &[u8]) -> (Option<u32>, Version) {
        let idx = self.lookup(hash, key);
        let mut newest = self.flush_floor;
        if let Some(i) = idx {
            newest = newest.max(self.slot(i).version);
        }
        if let Some(t) = self.tombstones.get(key) {
            newest = newest.max(t.version);
        }
        (idx, newest)
    }

    /// Stores a write received from the peer if it is newer than anything known for its key.
    pub fn apply_set(
        &mut self,
        hash: u64,
        new: NewItem<'_>,
        now: u32,
        hasher: &impl BuildHasher,
    ) -> Applied {
        let (_, newest) = self.newest_known(hash, new.key);
        if new.version <= newest {
            return Applied::Older;
        }
        match self.insert(hash, new, now, hasher) {
            Ok(_) => Applied::Applied,
            Err(StoreError::OutOfMemory) => Applied::NoMemory,
        }
    }

    /// Deletes a key for the peer if the delete is newer than what this node has.
    pub fn apply_delete(&mut self, hash: u64, key: &[u8], version: Version, now: u32) -> Applied {
        let (idx, newest) = self.newest_known(hash, key);
        if version <= newest {
            return Applied::Older;
        }
        if let Some(i) = idx {
            self.remove(hash, i);
        }
        self.bury(key, version, now);
        Applied::Applied
    }

    /// A replicated `flush_all`: every item and tombstone older than `version` goes, and
    /// older writes arriving later are refused.
    pub fn flush_older_than(&mut self, version: Version, hasher: &impl BuildHasher) {
        self.flush_floor = self.flush_floor.max(version);
        self.tombstones.retain(|_, t| t.version >= version);
        for i in 0..self.slots.len() {
            let Some(item) = self.slots[i].as_ref() else {
                continue;
            };
            if item.version < version {
                let hash = hasher.hash_one(item.key());
                self.remove(hash, i as u32);
            }
        }
    }

    /// Visits live items from slot `cursor` on, at most `max` of them; returns where to
    /// continue, or `None` when the shard is done. The full copy walks the store this way, a
    /// batch per lock, so serving goes on between batches.
    pub fn visit_items(
        &self,
        cursor: usize,
        max: usize,
        now: u32,
        mut f: impl FnMut(&Item),
    ) -> Option<usize> {
        let mut seen = 0;
        let mut i = cursor;
        while i < self.slots.len() {
            if let Some(item) = self.slots[i].as_ref() {
                if item.exptime == 0 || item.exptime > now {
                    f(item);
                    seen += 1;
                }
            }
            i += 1;
            if seen >= max {
                return (i < self.slots.len()).then_some(i);
            }
        }
        None
    }

    /// Every tombstone, for the full copy.
    pub fn visit_tombstones(&self, mut f: impl FnMut(&[u8], Version)) {
        for (k, t) in &self.tombstones {
            f(k, t.version);
        }
    }

    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    pub fn flush_floor(&self) -> Version {
        self.flush_floor
    }

    /// An order-independent digest of the live contents (key, value, flags, expiry), so two
    /// nodes can check they hold the same data without shipping it.
    pub fn digest(&self, now: u32) -> (u64, u64) {
        let mut count = 0u64;
        let mut sum = 0u64;
        for item in self.slots.iter().flatten() {
            if item.exptime != 0 && item.exptime <= now {
                continue;
            }
            count += 1;
            sum = sum.wrapping_add(content_hash(item));
        }
        (count, sum)
    }

    fn push_head(&mut self, idx: u32) {
        let old_head = self.head;
        {
            let item = self.slot_mut(idx);
            item.prev = NIL;
            item.next = old_head;
        }
        if old_head != NIL {
            self.slot_mut(old_head).prev = idx;
        } else {
            self.tail = idx;
        }
        self.head = idx;
    }

    fn unlink_lru(&mut self, idx: u32) {
        let (prev, next) = {
            let item = self.slot(idx);
            (item.prev, item.next)
        };
        if prev != NIL {
            self.slot_mut(prev).next = next;
        } else if self.head == idx {
            self.head = next;
        }
        if next != NIL {
            self.slot_mut(next).prev = prev;
        } else if self.tail == idx {
            self.tail = prev;
        }
        let item = self.slot_mut(idx);
        item.prev = NIL;
        item.next = NIL;
    }
}

/// The whole store: shards behind mutexes, a global CAS counter and the flush mark.
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    hasher: hashbrown::DefaultHashBuilder,
    next_cas: AtomicU64,
    cas_enabled: bool,
    oldest_live: AtomicU32,
    limit: usize,
}

/// Most shards the store splits into; enough that two cores rarely meet on one lock.
const MAX_SHARDS: usize = 16;

impl Store {
    /// `limit` is the memory budget in bytes; `item_size_max` bounds the largest item, and
    /// every shard is kept big enough for several of those.
    pub fn new(
        limit: usize,
        item_size_max: usize,
        cas_enabled: bool,
        tombstones: Option<TombstonePolicy>,
    ) -> Self {
        let mut shards = MAX_SHARDS;
        while shards > 1 && limit / shards < item_size_max.saturating_mul(4) {
            shards /= 2;
        }
        let per_shard = limit / shards;
        let policy = tombstones.map(|p| TombstonePolicy {
            cap: (p.cap / shards).max(1),
            ..p
        });
        Store {
            shards: (0..shards)
                .map(|_| Mutex::new(Shard::new(per_shard, policy)))
                .collect(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            next_cas: AtomicU64::new(1),
            cas_enabled,
            oldest_live: AtomicU32::new(0),
            limit,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn hasher(&self) -> &hashbrown::DefaultHashBuilder {
        &self.hasher
    }

    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard a hash lives in, locked. A poisoned lock only means another connection
    /// panicked mid-operation; the shard's structure is still consistent between operations.
    pub fn lock(&self, hash: u64) -> MutexGuard<'_, Shard> {
        let n = self.shards.len();
        let i = ((hash >> 48) as usize) % n;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh CAS unique value (0 when CAS is disabled with `-C`).
    pub fn next_cas(&self) -> u64 {
        if self.cas_enabled {
            self.next_cas.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        }
    }

    pub fn cas_enabled(&self) -> bool {
        self.cas_enabled
    }

    pub fn flush_mark(&self) -> FlushMark {
        FlushMark {
            oldest_live: self.oldest_live.load(Ordering::Relaxed),
        }
    }

    /// `flush_all`: with `at` in the past or now, drop everything now; otherwise every item
    /// not touched after `at - 1` dies when the clock reaches it.
    pub fn flush(&self, at: Option<u32>, now: u32) {
        match at {
            Some(t) if t > now => self.oldest_live.store(t - 1, Ordering::Relaxed),
            _ => {
                self.oldest_live
                    .store(now.saturating_sub(1), Ordering::Relaxed);
                for shard in self.shards.iter() {
                    shard.lock().unwrap_or_else(|e| e.into_inner()).clear();
                }
            }
        }
    }

    /// Reclaims expired items, `budget` slots per shard.
    pub fn sweep(&self, now: u32, budget: usize) -> usize {
        let flush = self.flush_mark();
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .sweep(now, flush, budget, &self.hasher)
            })
            .sum()
    }

    pub fn stats(&self) -> ShardStats {
        let mut total = ShardStats::default();
        for shard in self.shards.iter() {
            total += shard.lock().unwrap_or_else(|e| e.into_inner()).stats();
        }
        total
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// A replicated `flush_all` at `version`, applied shard by shard.
    pub fn flush_older_than(&self, version: Version) {
        for shard in self.shards.iter() {
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .flush_older_than(version, &self.hasher);
        }
    }

    /// Live item count and content digest over all shards.
    pub fn digest(&self, now: u32) -> (u64, u64) {
        let mut count = 0u64;
        let mut sum = 0u64;
        for shard in self.shards.iter() {
            let (c, s) = shard.lock().unwrap_or_else(|e| e.into_inner()).digest(now);
            count += c;
            sum = sum.wrapping_add(s);
        }
        (count, sum)
    }

    /// Locks shard `i` (for walks over the whole store, such as the full copy).
    pub fn lock_shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Visits every shard in turn (locked one at a time).
    pub fn for_each_shard(&self, mut f: impl FnMut(&Shard)) {
        for shard in self.shards.iter() {
            f(&shard.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &Store, key: &[u8], value: &[u8], exptime: u32, now: u32) -> u32 {
        let h = store.hash(key);
        let cas = store.next_cas();
        store
            .lock(h)
            .insert(
                h,
                NewItem {
                    key,
                    value,
                    flags: 0,
                    exptime,
                    cas,
                    version: Version::ZERO,
                },
                now,
                store.hasher(),
            )
            .expect("fits")
    }

    fn get(store: &Store, key: &[u8], now: u32) -> Option<Vec<u8>> {
        let h = store.hash(key);
        let mut shard = store.lock(h);
        let idx = shard.find(h, key, now, store.flush_mark())?;
        Some(shard.item(idx).value().to_vec())
    }

    #[test]
    fn stores_replaces_and_removes() {
        let store = Store::new(1 << 20, 1024, true, None);
        put(&store, b"a", b"1", 0, 100);
        put(&store, b"a", b"22", 0, 100);
        assert_eq!(get(&store, b"a", 100), Some(b"22".to_vec()));
        assert_eq!(store.stats().curr_items, 1);
        let h = store.hash(b"a");
        let mut shard = store.lock(h);
        let idx = shard
            .find(h, b"a", 100, FlushMark::default())
            .expect("present");
        shard.remove(h, idx);
        drop(shard);
        assert_eq!(get(&store, b"a", 100), None);
        assert_eq!(store.stats().bytes, 0);
    }

    #[test]
    fn expiry_is_at_or_after_exptime() {
        let store = Store::new(1 << 20, 1024, true, None);
        put(&store, b"k", b"v", 110, 100);
        assert!(get(&store, b"k", 109).is_some());
        assert!(get(&store, b"k", 110).is_none());
        assert_eq!(store.stats().reclaimed, 1);
    }

    #[test]
    fn memory_limit_evicts_least_recently_used() {
        let item = 100 + 4 + ITEM_OVERHEAD;
        let store = Store::new(item * 10, item * 10, true, None);
        assert_eq!(store.shard_count(), 1);
        for i in 0..10u32 {
            put(&store, format!("k{i:03}").as_bytes(), &[b'x'; 100], 0, 100);
        }
        // Touch k000 so k001 is now the least recently used.
        let h = store.hash(b"k000");
        {
            let mut shard = store.lock(h);
            let idx = shard
                .find(h, b"k000", 100, FlushMark::default())
                .expect("present");
            shard.bump(idx, 100);
        }
        put(&store, b"k010", &[b'x'; 100], 0, 100);
        assert!(get(&store, b"k000", 100).is_some());
        assert!(get(&store, b"k001", 100).is_none());
        let stats = store.stats();
        assert_eq!(stats.evictions, 1);
        assert!(stats.bytes as usize <= item * 10);
    }

    #[test]
    fn delayed_flush_kills_items_touched_before_the_mark() {
        let store = Store::new(1 << 20, 1024, true, None);
        put(&store, b"old", b"v", 0, 100);
        store.flush(Some(105), 100);
        assert!(get(&store, b"old", 103).is_some());
        assert!(get(&store, b"old", 104).is_none());
        put(&store, b"new", b"v", 0, 106);
        assert!(get(&store, b"new", 106).is_some());
        store.flush(None, 107);
        assert!(get(&store, b"new", 107).is_none());
    }

    #[test]
    fn sweep_reclaims_expired_items_without_access() {
        let store = Store::new(1 << 20, 1024, true, None);
        for i in 0..100u32 {
            put(
                &store,
                format!("k{i}").as_bytes(),
                b"v",
                if i % 2 == 0 { 150 } else { 0 },
                100,
            );
        }
        let reclaimed = store.sweep(200, 1000);
        assert_eq!(reclaimed, 50);
        assert_eq!(store.stats().curr_items, 50);
    }

    #[test]
    fn shards_stay_large_enough_for_the_biggest_item() {
        let store = Store::new(64 << 20, 1 << 20, true, None);
        assert_eq!(store.shard_count(), 16);
        let small = Store::new(2 << 20, 1 << 20, true, None);
        assert_eq!(small.shard_count(), 1);
    }
}
