//! The replication wire format, pure: length-prefixed frames for the link, and the change
//! records they carry (the same records the backlog stores and the full copy sends).
//!
//! Frame: `u32 length (of kind + body), u8 kind, body`. Integers are little-endian.
//! Record: `u8 op`, then per op:
//! - `SET`:    `u8 keylen, key, u32 flags, u32 exptime, u64 vtime, u32 vnode, u32 vlen, value`
//! - `DELETE`: `u8 keylen, key, u64 vtime, u32 vnode`
//! - `FLUSH`:  `u64 vtime, u32 vnode`

use crate::cache::version::Version;

/// Bumped whenever frames or records change incompatibly; peers must match.
pub const PROTOCOL_VERSION: u16 = 3;
/// First bytes of every connection, so a stray client is told apart at once.
pub const MAGIC: &[u8; 8] = b"OPSREPL\n";
/// Largest frame accepted; larger means a broken or hostile peer.
pub const MAX_FRAME: usize = 16 << 20;

const OP_SET: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_FLUSH: u8 = 3;

/// One change to the data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    Set {
        key: &'a [u8],
        value: &'a [u8],
        flags: u32,
        exptime: u32,
        version: Version,
    },
    Delete {
        key: &'a [u8],
        version: Version,
    },
    Flush {
        version: Version,
    },
}

fn put_version(out: &mut Vec<u8>, v: Version) {
    out.extend_from_slice(&v.time.to_le_bytes());
    out.extend_from_slice(&v.node.to_le_bytes());
}

pub fn encode_set(
    out: &mut Vec<u8>,
    key: &[u8],
    value: &[u8],
    flags: u32,
    exptime: u32,
    version: Version,
) {
    out.push(OP_SET);
    out.push(key.len() as u8);
    out.extend_from_slice(key);
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&exptime.to_le_bytes());
    put_version(out, version);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

pub fn encode_delete(out: &mut Vec<u8>, key: &[u8], version: Version) {
    out.push(OP_DELETE);
    out.push(key.len() as u8);
    out.extend_from_slice(key);
    put_version(out, version);
}

pub fn encode_flush(out: &mut Vec<u8>, version: Version) {
    out.push(OP_FLUSH);
    put_version(out, version);
}

/// Malformed bytes from the peer: the link is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A cursor over bytes that fails instead of panicking when they run out.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The last failure was running out of bytes (not malformed input).
    ran_out: bool,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            ran_out: false,
        }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next record, or `Ok(None)` if the bytes end partway through one (the stream
    /// continues in the next frame); the position is then left at the record's start.
    pub fn record_if_complete(&mut self) -> Result<Option<Record<'a>>, WireError> {
        let start = self.pos;
        self.ran_out = false;
        match self.record() {
            Ok(r) => Ok(Some(r)),
            Err(_) if self.ran_out => {
                self.pos = start;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            self.ran_out = true;
            return Err(WireError(format!(
                "truncated: wanted {n} bytes at {}",
                self.pos
            )));
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn version(&mut self) -> Result<Version, WireError> {
        Ok(Version {
            time: self.u64()?,
            node: self.u32()?,
        })
    }

    /// A length-prefixed (u16) byte string.
    pub fn short_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u16()? as usize;
        self.bytes(n)
    }

    /// The next change record.
    pub fn record(&mut self) -> Result<Record<'a>, WireError> {
        match self.u8()? {
            OP_SET => {
                let klen = self.u8()? as usize;
                let key = self.bytes(klen)?;
                let flags = self.u32()?;
                let exptime = self.u32()?;
                let version = self.version()?;
                let vlen = self.u32()? as usize;
                let value = self.bytes(vlen)?;
                Ok(Record::Set {
                    key,
                    value,
                    flags,
                    exptime,
                    version,
                })
            }
            OP_DELETE => {
                let klen = self.u8()? as usize;
                let key = self.bytes(klen)?;
                Ok(Record::Delete {
                    key,
                    version: self.version()?,
                })
            }
            OP_FLUSH => Ok(Record::Flush {
                version: self.version()?,
            }),
            op => Err(WireError(format!("unknown record op {op}"))),
        }
    }
}

pub fn put_short_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(u16::MAX as usize);
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&b[..n]);
}

/// Frame kinds on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Identity and a challenge (both sides send one first).
    Hello = 1,
    /// Proof of the shared secret over both challenges.
    Auth = 2,
    /// "I hold your change stream `id` up to `offset`" — or nothing, asking for a full copy.
    Resume = 3,
    /// A full copy starts: how many items and bytes to expect.
    CopyBegin = 4,
    /// A batch of records of the full copy.
    CopyChunk = 5,
    /// The full copy is complete; the stream continues from the given offset.
    CopyEnd = 6,
    /// Change records from the stream, starting at an offset.
    Stream = 7,
    /// Heartbeat, carrying how far the sender has applied the receiver's stream.
    Ping = 8,
    /// The peer refuses the link and says why.
    Refuse = 9,
    /// Planned role swap (switchover) messages.
    Switch = 10,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Auth,
            3 => Kind::Resume,
            4 => Kind::CopyBegin,
            5 => Kind::CopyChunk,
            6 => Kind::CopyEnd,
            7 => Kind::Stream,
            8 => Kind::Ping,
            9 => Kind::Refuse,
            10 => Kind::Switch,
            _ => return None,
        })
    }
}

/// Starts a frame in `out`; returns where its length goes, for `finish_frame`.
pub fn begin_frame(out: &mut Vec<u8>, kind: Kind) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, kind as u8]);
    at
}

/// Writes the length of the frame begun at `at`.
pub fn finish_frame(out: &mut [u8], at: usize) {
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// A complete frame at the front of a buffer: its kind, its body, and the bytes it used.
pub type Frame<'a> = (Kind, &'a [u8], usize);

/// Splits one frame off the front of `buf`: `Ok(None)` until it is complete.
pub fn parse_frame(buf: &[u8]) -> Result<Option<Frame<'_>>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(WireError(format!("frame length {len} out of range")));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let kind =
        Kind::from_u8(buf[4]).ok_or_else(|| WireError(format!("unknown frame kind {}", buf[4])))?;
    Ok(Some((kind, &buf[5..4 + len], 4 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(t: u64, n: u32) -> Version {
        Version { time: t, node: n }
    }

    fn sample_records() -> Vec<u8> {
        let mut out = Vec::new();
        encode_set(&mut out, b"key", b"value", 7, 1234, v(99, 1));
        encode_set(&mut out, b"", b"", 0, 0, v(1, 2));
        encode_delete(&mut out, b"gone", v(100, 2));
        encode_flush(&mut out, v(101, 1));
        out
    }

    #[test]
    fn records_round_trip() {
        let bytes = sample_records();
        let mut r = Reader::new(&bytes);
        assert_eq!(
            r.record(),
            Ok(Record::Set {
                key: b"key",
                value: b"value",
                flags: 7,
                exptime: 1234,
                version: v(99, 1)
            })
        );
        assert_eq!(
            r.record(),
            Ok(Record::Set {
                key: b"",
                value: b"",
                flags: 0,
                exptime: 0,
                version: v(1, 2)
            })
        );
        assert_eq!(
            r.record(),
            Ok(Record::Delete {
                key: b"gone",
                version: v(100, 2)
            })
        );
        assert_eq!(r.record(), Ok(Record::Flush { version: v(101, 1) }));
        assert!(r.is_empty());
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let bytes = sample_records();
        for cut in 0..bytes.len() {
            let mut r = Reader::new(&bytes[..cut]);
            let mut ok = 0;
            while r.record().is_ok() {
                ok += 1;
                if r.is_empty() {
                    break;
                }
            }
            assert!(ok < 4, "cut {cut} decoded everything");
        }
    }

    #[test]
    fn frames_round_trip_and_every_prefix_is_incomplete() {
        let mut out = Vec::new();
        let at = begin_frame(&mut out, Kind::Stream);
        out.extend_from_slice(&sample_records());
        finish_frame(&mut out, at);
        let (kind, body, used) = parse_frame(&out).expect("valid").expect("complete");
        assert_eq!(kind, Kind::Stream);
        assert_eq!(body, &sample_records()[..]);
        assert_eq!(used, out.len());
        for cut in 0..out.len() {
            assert_eq!(parse_frame(&out[..cut]), Ok(None), "prefix {cut}");
        }
    }

    #[test]
    fn a_record_split_across_frames_waits_for_the_rest() {
        let bytes = sample_records();
        for cut in 0..bytes.len() {
            let mut r = Reader::new(&bytes[..cut]);
            let mut whole = 0;
            while let Ok(Some(_)) = r.record_if_complete() {
                whole += 1;
            }
            assert_eq!(r.record_if_complete(), Ok(None), "cut {cut}");
            // Whatever was decoded ends exactly where the next record starts.
            let mut rest = Reader::new(&bytes[r.position()..]);
            let mut more = 0;
            while let Ok(Some(_)) = rest.record_if_complete() {
                more += 1;
            }
            assert_eq!(whole + more, 4);
        }
    }

    #[test]
    fn garbage_frames_are_rejected() {
        assert!(parse_frame(&[0, 0, 0, 0, 1]).is_err());
        assert!(parse_frame(&[0xff, 0xff, 0xff, 0x7f, 1]).is_err());
        assert!(parse_frame(&[1, 0, 0, 0, 200]).is_err());
        let mut r = Reader::new(&[42]);
        assert!(r.record().is_err());
    }
}
