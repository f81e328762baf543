//! What replicates between nodes: items of the durable tables, each a
//! last-writer-wins register under a byte key.

use crate::lww::Lww;
use serde::{Deserialize, Serialize};

/// The replicated tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Table {
    /// user → credentials.
    Accounts,
    /// user NUL contact → roster item.
    Rosters,
    /// user → vCard XML.
    Vcards,
    /// user NUL jid → empty.
    Blocks,
    /// user NUL version → offline message.
    Offline,
    /// user NUL name → a per-user setting (e.g. archiving preferences).
    Settings,
    /// room → room configuration (JSON).
    Rooms,
    /// room NUL bare JID → affiliation.
    RoomAffiliations,
    /// room NUL nick → occupant (JSON; soft state checked against sessions).
    Occupants,
    /// user NUL node → a PEP node's configuration (JSON, XEP-0163).
    PepNodes,
    /// user NUL node NUL item id → one published PEP item (JSON).
    PepItems,
    /// user NUL token → an upload slot and its file (JSON, XEP-0363).
    Uploads,
}

impl Table {
    /// Every table, in a fixed order.
    pub const ALL: [Table; 12] = [
        Table::Accounts,
        Table::Rosters,
        Table::Vcards,
        Table::Blocks,
        Table::Offline,
        Table::Settings,
        Table::Rooms,
        Table::RoomAffiliations,
        Table::Occupants,
        Table::PepNodes,
        Table::PepItems,
        Table::Uploads,
    ];

    /// The table's name (also its RocksDB column family).
    pub fn name(self) -> &'static str {
        match self {
            Table::Accounts => "accounts",
            Table::Rosters => "rosters",
            Table::Vcards => "vcards",
            Table::Blocks => "blocks",
            Table::Offline => "offline",
            Table::Settings => "settings",
            Table::Rooms => "rooms",
            Table::RoomAffiliations => "room_affiliations",
            Table::Occupants => "occupants",
            Table::PepNodes => "pep_nodes",
            Table::PepItems => "pep_items",
            Table::Uploads => "uploads",
        }
    }

    /// The table with this wire number.
    pub fn from_index(i: u32) -> Option<Table> {
        Table::ALL.get(i as usize).copied()
    }

    /// This table's wire number.
    pub fn index(self) -> u32 {
        Table::ALL.iter().position(|t| *t == self).unwrap_or(0) as u32
    }
}

/// One replicated write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplItem {
    /// Which table.
    pub table: Table,
    /// The item's key.
    pub key: Vec<u8>,
    /// The register.
    pub lww: Lww,
}

/// Where a change came from, for listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeOrigin {
    /// Written by this node.
    Local,
    /// Merged from a peer.
    Remote,
}

/// Called after items are durably written.
pub type ChangeListener = std::sync::Arc<dyn Fn(&[ReplItem], ChangeOrigin) + Send + Sync>;

/// Number of anti-entropy buckets per table.
pub const DIGEST_BUCKETS: u32 = 256;

/// 64-bit FNV-1a, used for bucket assignment and digests.
pub fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The anti-entropy bucket of a key.
pub fn bucket_of(key: &[u8]) -> u32 {
    (fnv64(&[key]) % DIGEST_BUCKETS as u64) as u32
}

/// One item's contribution to its bucket digest (XORed together).
pub fn item_digest(key: &[u8], lww: &Lww) -> u64 {
    fnv64(&[key, &lww.version.to_bytes()])
}

/// Exactly-once intake of the numbered stanzas a peer routed here (the
/// receiving half of the durable per-peer outbox). `mark` is the highest
/// sequence number already handled, as persisted by the caller; stanzas at
/// or below it are resends after a lost acknowledgement and are skipped.
/// The others are handed to `deliver` in order. Returns the new mark (to
/// persist, then acknowledge to the sender) and the number of duplicates
/// skipped.
pub fn intake<T>(
    mark: u64,
    batch: impl IntoIterator<Item = (u64, T)>,
    mut deliver: impl FnMut(T),
) -> (u64, u64) {
    let mut mark = mark;
    let mut duplicates = 0;
    for (seq, stanza) in batch {
        if seq <= mark {
            duplicates += 1;
            continue;
        }
        deliver(stanza);
        mark = seq;
    }
    (mark, duplicates)
}

#[cfg(test)]
mod intake_tests {
    use super::intake;

    #[test]
    fn resends_at_or_below_the_mark_are_skipped() {
        let mut got = Vec::new();
        let (mark, dups) = intake(2, [(1, "a"), (2, "b"), (3, "c"), (4, "d")], |s| got.push(s));
        assert_eq!((mark, dups), (4, 2));
        assert_eq!(got, ["c", "d"]);
        let (mark, dups) = intake(mark, [(4, "d"), (5, "e")], |s| got.push(s));
        assert_eq!((mark, dups), (5, 1));
        assert_eq!(got, ["c", "d", "e"]);
    }
}
