//! The snapshot file format: a magic line, then frames, then a SHA-256 of
//! everything before it. A frame is a big-endian `u32` length and that many
//! bytes of one [`Frame`] in the archive's encoding. Frames are written and
//! read one at a time, so neither side holds more than one record (plus a
//! buffer) in memory, whatever the archive's size. A frame longer than
//! [`FRAME_MAX`], a missing or wrong checksum, or bytes after it are errors:
//! a damaged or hostile file is refused before anything is installed.

use crate::types::{AuditEntry, Hold, Record, Retention};
use openraft::{BasicNode, LogId, StoredMembership};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};

/// The first bytes of every snapshot file (the format's version).
pub(crate) const MAGIC: &[u8] = b"CHORUS-ARCHIVE-SNAPSHOT 1\n";

/// The length word that announces the checksum instead of a frame.
const END: u32 = u32::MAX;

/// The longest frame accepted (a record is bounded by the stanza limit,
/// far below this).
pub(crate) const FRAME_MAX: u32 = 16 * 1024 * 1024;

/// What a snapshot says besides its rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Header {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, BasicNode>,
    /// The next archive position.
    pub next: u64,
    /// The next audit sequence number.
    pub next_audit: u64,
    pub retention: Retention,
    /// The hash chain's head.
    #[serde(default)]
    pub chain: crate::chain::Head,
    /// Records held (not purged).
    #[serde(default)]
    pub live: u64,
}

/// One unit of a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Frame {
    /// Always first, exactly once.
    Header(Header),
    /// A record at its archive position.
    Record(u64, Record),
    /// An archive id ever applied (purged ones too) and its position.
    Id(String, u64),
    Hold(Hold),
    /// An audit entry with its sequence number.
    Audit(u64, AuditEntry),
    /// The Raft id of a member an operator removed.
    Removed(u64),
    /// A link of the hash chain with its number.
    Chain(u64, crate::chain::Link),
    /// A retention change waiting for a second admin.
    Pending(crate::types::PendingRetention),
}

/// Writes frames, hashing as it goes.
pub(crate) struct FrameWriter<W: Write> {
    out: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> FrameWriter<W> {
    pub(crate) fn new(mut out: W) -> io::Result<FrameWriter<W>> {
        out.write_all(MAGIC)?;
        let mut hash = Sha256::new();
        hash.update(MAGIC);
        Ok(FrameWriter {
            out,
            hash,
            bytes: MAGIC.len() as u64,
        })
    }

    pub(crate) fn frame(&mut self, f: &Frame) -> io::Result<()> {
        let payload = crate::codec::encode(f).map_err(io::Error::other)?;
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|l| *l <= FRAME_MAX)
            .ok_or_else(|| io::Error::other(format!("a snapshot frame of {} bytes", payload.len())))?;
        let word = len.to_be_bytes();
        self.out.write_all(&word)?;
        self.out.write_all(&payload)?;
        self.hash.update(word);
        self.hash.update(&payload);
        self.bytes += 4 + payload.len() as u64;
        Ok(())
    }

    /// Writes the checksum; returns the writer, the checksum and the size.
    pub(crate) fn finish(mut self) -> io::Result<(W, [u8; 32], u64)> {
        let sum: [u8; 32] = self.hash.finalize().into();
        self.out.write_all(&END.to_be_bytes())?;
        self.out.write_all(&sum)?;
        self.out.flush()?;
        Ok((self.out, sum, self.bytes + 36))
    }
}

/// Reads frames, checking the checksum at the end.
pub(crate) struct FrameReader<R: Read> {
    input: R,
    hash: Sha256,
    done: bool,
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

impl<R: Read> FrameReader<R> {
    pub(crate) fn new(mut input: R) -> io::Result<FrameReader<R>> {
        let mut magic = vec![0u8; MAGIC.len()];
        input
            .read_exact(&mut magic)
            .map_err(|_| bad("not an archive snapshot (too short)"))?;
        if magic != MAGIC {
            return Err(bad("not an archive snapshot (wrong magic)"));
        }
        let mut hash = Sha256::new();
        hash.update(MAGIC);
        Ok(FrameReader {
            input,
            hash,
            done: false,
        })
    }

    /// The next frame, or `None` after a correct checksum.
    pub(crate) fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        if self.done {
            return Ok(None);
        }
        let mut word = [0u8; 4];
        self.input
            .read_exact(&mut word)
            .map_err(|_| bad("the snapshot is truncated (no checksum)"))?;
        let len = u32::from_be_bytes(word);
        if len == END {
            let mut sum = [0u8; 32];
            self.input
                .read_exact(&mut sum)
                .map_err(|_| bad("the snapshot is truncated (short checksum)"))?;
            let want: [u8; 32] = self.hash.clone().finalize().into();
            if sum != want {
                return Err(bad("the snapshot's checksum does not match its contents"));
            }
            let mut extra = [0u8; 1];
            if self.input.read(&mut extra)? != 0 {
                return Err(bad("bytes after the snapshot's checksum"));
            }
            self.done = true;
            return Ok(None);
        }
        if len > FRAME_MAX {
            return Err(bad(format!("a snapshot frame claims {len} bytes")));
        }
        let mut payload = vec![0u8; len as usize];
        self.input
            .read_exact(&mut payload)
            .map_err(|_| bad("the snapshot is truncated (short frame)"))?;
        self.hash.update(word);
        self.hash.update(&payload);
        crate::codec::decode(&payload)
            .map(Some)
            .map_err(|e| bad(format!("a snapshot frame does not decode: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = FrameWriter::new(Vec::new()).expect("writer");
        w.frame(&Frame::Removed(7)).expect("frame");
        w.frame(&Frame::Id("a-1".into(), 0)).expect("frame");
        w.finish().expect("finish").0
    }

    fn read_all(b: &[u8]) -> io::Result<Vec<Frame>> {
        let mut r = FrameReader::new(b)?;
        let mut out = Vec::new();
        while let Some(f) = r.next_frame()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn frames_round_trip() {
        assert_eq!(
            read_all(&sample()).expect("reads"),
            vec![Frame::Removed(7), Frame::Id("a-1".into(), 0)]
        );
    }

    #[test]
    fn every_changed_byte_and_every_truncation_is_refused() {
        let good = sample();
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x01;
            assert!(read_all(&b).is_err(), "a flipped bit at byte {i} went unnoticed");
        }
        for n in 0..good.len() {
            assert!(
                read_all(&good[..n]).is_err(),
                "truncation to {n} bytes went unnoticed"
            );
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(read_all(&longer).is_err(), "trailing bytes went unnoticed");
    }

    #[test]
    fn an_oversized_frame_is_refused_without_allocating_it() {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&(FRAME_MAX + 1).to_be_bytes());
        let e = read_all(&b).expect_err("refused");
        assert!(e.to_string().contains("claims"), "{e}");
    }
}
