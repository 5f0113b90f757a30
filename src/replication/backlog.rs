//! The change backlog: this node's own writes as a byte stream of records with absolute
//! offsets, bounded in size. A peer that comes back within the backlog resumes from its
//! offset (partial resync); one that fell further behind gets a full copy. It is also the
//! send queue, so a slow peer costs bounded memory instead of silently losing changes.

use std::collections::VecDeque;

pub struct Backlog {
    buf: VecDeque<u8>,
    /// Stream offset of `buf[0]`.
    start: u64,
    cap: usize,
}

impl Backlog {
    pub fn new(cap: usize) -> Self {
        Backlog {
            buf: VecDeque::new(),
            start: 0,
            cap: cap.max(1),
        }
    }

    /// Offset just past the newest byte.
    pub fn end(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    /// Oldest offset still held.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Appends whole records; the oldest bytes fall off past the cap. Readers only ever ask
    /// for offsets at record boundaries, so trimming mid-record loses nothing they can ask for
    /// except what is gone anyway.
    pub fn append(&mut self, records: &[u8]) {
        self.buf.extend(records);
        let excess = self.buf.len().saturating_sub(self.cap);
        if excess > 0 {
            self.buf.drain(..excess);
            self.start += excess as u64;
        }
    }

    /// Copies up to `max` bytes from `offset` into `out`. `None` if `offset` fell out of the
    /// backlog (or is in the future): the reader needs a full copy.
    pub fn read(&self, offset: u64, max: usize, out: &mut Vec<u8>) -> Option<usize> {
        if offset < self.start || offset > self.end() {
            return None;
        }
        let from = (offset - self.start) as usize;
        let n = (self.buf.len() - from).min(max);
        let (a, b) = self.buf.as_slices();
        if from < a.len() {
            let take_a = (a.len() - from).min(n);
            out.extend_from_slice(&a[from..from + take_a]);
            out.extend_from_slice(&b[..n - take_a]);
        } else {
            let from_b = from - a.len();
            out.extend_from_slice(&b[from_b..from_b + n]);
        }
        Some(n)
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_from_any_held_offset() {
        let mut b = Backlog::new(100);
        b.append(b"hello ");
        b.append(b"world");
        let mut out = Vec::new();
        assert_eq!(b.read(6, 100, &mut out), Some(5));
        assert_eq!(out, b"world");
        out.clear();
        assert_eq!(b.read(0, 3, &mut out), Some(3));
        assert_eq!(out, b"hel");
        assert_eq!(b.read(11, 10, &mut Vec::new()), Some(0));
        assert_eq!(b.read(12, 10, &mut Vec::new()), None);
    }

    #[test]
    fn overflow_drops_the_oldest_and_old_offsets_need_a_full_copy() {
        let mut b = Backlog::new(8);
        b.append(b"0123456789");
        assert_eq!((b.start(), b.end()), (2, 10));
        assert_eq!(b.read(1, 10, &mut Vec::new()), None);
        let mut out = Vec::new();
        assert_eq!(b.read(2, 100, &mut out), Some(8));
        assert_eq!(out, b"23456789");
    }

    #[test]
    fn reads_across_the_ring_seam() {
        let mut b = Backlog::new(6);
        for chunk in [&b"abc"[..], b"def", b"ghi", b"jk"] {
            b.append(chunk);
        }
        let mut out = Vec::new();
        assert_eq!(b.read(b.start(), 100, &mut out), Some(6));
        assert_eq!(out, b"fghijk");
    }
}
