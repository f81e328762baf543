//! The on-disk layout of the archive's id map and query index: which keys
//! an applied record writes, and how both layouts a replica may hold are
//! read.
//!
//! Each record writes, besides itself (`records`, by position) and its
//! chain link (`chain`):
//!
//! * `record_ids`: `<archive id>` → position and chain link number (16
//!   bytes). Layout 1 stored the position alone (8 bytes) and the link
//!   number under a separate index key `c<pos>`; both are still read, and
//!   a snapshot install writes layout 1's form.
//! * `record_index`:
//!   * `t<stamp><pos>` for every record (retention scans);
//!   * for a message, `u<owner>\0<stamp><pos>` for every participant;
//!   * `w<a>\0<b>\0<stamp><pos>` once for every pair of participants,
//!     with `a` < `b`, whichever of the two is asking. Layout 1 wrote the
//!     pair twice, once in each order; the order this layout does not
//!     read is deleted with its record at a purge;
//!   * `m<sender>\0<message id>\0<pos>` for a message with a client id
//!     (corrections and retractions find what they edit).
//!
//! A one-to-one message so writes eight keys, where layout 1 wrote ten:
//! the apply's memtable inserts are the archive's largest CPU cost.

use crate::state_machine::{Result, read_err};
use crate::types::{Record, RecordKind};

/// The pair index prefix `w<a>\0<b>\0` of two participants, the smaller
/// first: one key per pair serves both of their archives.
pub(crate) fn pair_prefix(x: &str, y: &str) -> Vec<u8> {
    let (a, b) = if x <= y { (x, y) } else { (y, x) };
    [b"w", a.as_bytes(), b"\0", b.as_bytes(), b"\0"].concat()
}

/// The index keys of a record at a position.
pub(crate) fn index_keys(r: &Record, pos: u64) -> Vec<Vec<u8>> {
    let tail = [r.stamp_ms.to_be_bytes(), pos.to_be_bytes()].concat();
    let mut keys = vec![[b"t".as_slice(), &tail].concat()];
    if r.kind != RecordKind::Message {
        return keys;
    }
    if let Some(id) = &r.msg_id {
        let sender = chorus_core::archive::bare(&r.from);
        keys.push(
            [
                b"m",
                sender.as_bytes(),
                b"\0",
                id.as_bytes(),
                b"\0",
                &pos.to_be_bytes(),
            ]
            .concat(),
        );
    }
    let parts = r.participants();
    for (i, owner) in parts.iter().enumerate() {
        keys.push([b"u", owner.as_bytes(), b"\0", &tail].concat());
        for with in &parts[i + 1..] {
            keys.push([pair_prefix(owner, with).as_slice(), &tail].concat());
        }
    }
    keys
}

/// The pair keys layout 1 wrote that this layout neither writes nor
/// reads (each pair in its other order): deleted with their record.
pub(crate) fn legacy_index_keys(r: &Record, pos: u64) -> Vec<Vec<u8>> {
    if r.kind != RecordKind::Message {
        return Vec::new();
    }
    let tail = [r.stamp_ms.to_be_bytes(), pos.to_be_bytes()].concat();
    let parts = r.participants();
    let mut keys = Vec::new();
    for owner in &parts {
        for with in parts.iter().filter(|w| *w < owner) {
            keys.push([b"w", owner.as_bytes(), b"\0", with.as_bytes(), b"\0", &tail].concat());
        }
    }
    keys
}

/// Layout 1's index key `c<pos>`, whose value is the record's chain link
/// number (a snapshot install still writes it).
pub(crate) fn link_key(pos: u64) -> Vec<u8> {
    [b"c".as_slice(), &pos.to_be_bytes()].concat()
}

/// An id entry: the record's position, then its chain link number.
pub(crate) fn id_entry(pos: u64, link: u64) -> [u8; 16] {
    let mut v = [0; 16];
    v[..8].copy_from_slice(&pos.to_be_bytes());
    v[8..].copy_from_slice(&link.to_be_bytes());
    v
}

fn malformed() -> openraft::StorageError<u64> {
    read_err(std::io::Error::other("malformed archive id entry"))
}

/// The position in an id entry of either layout.
pub(crate) fn id_position(v: &[u8]) -> Result<u64> {
    match v.len() {
        8 | 16 => Ok(u64::from_be_bytes(v[..8].try_into().map_err(|_| malformed())?)),
        _ => Err(malformed()),
    }
}

/// The chain link number in an id entry, if it has one (layout 2).
pub(crate) fn id_link(v: &[u8]) -> Result<Option<u64>> {
    match v.len() {
        8 => Ok(None),
        16 => Ok(Some(u64::from_be_bytes(
            v[8..].try_into().map_err(|_| malformed())?,
        ))),
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests;
