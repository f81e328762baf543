//! The archive's hash chain. Every record and audit entry, in the order the
//! state machine applies them (Raft order), gets a link: its kind, its
//! position (record) or sequence number (audit entry), its archive id, the
//! SHA-256 of its canonical encoding (its JSON, fields in declaration
//! order) and `hash = SHA-256(previous hash || link text)`. The head (the
//! last link's hash and the number of links) so commits to the whole
//! history. A purge deletes the record but appends a tombstone link (id,
//! the record's content hash, the reason), so the chain still verifies
//! after retention ran, and shows what went and why.
//!
//! [`verify`] recomputes everything from the stored rows: a changed byte in
//! a record or audit entry, a changed, missing or reordered link, a record
//! deleted without a tombstone or one present without a link are each
//! named.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a link commits to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// A record, at its archive position.
    Record,
    /// An audit entry, at its sequence number.
    Audit,
    /// A record that retention purged (or a snapshot dropped), at its
    /// former position.
    Tombstone,
}

impl LinkKind {
    fn as_str(self) -> &'static str {
        match self {
            LinkKind::Record => "record",
            LinkKind::Audit => "audit",
            LinkKind::Tombstone => "tombstone",
        }
    }
}

/// One link of the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// What it commits to.
    pub kind: LinkKind,
    /// The record's position or the audit entry's sequence number.
    pub at: u64,
    /// The record's archive id (empty for an audit entry).
    #[serde(default)]
    pub id: String,
    /// SHA-256 (hex) of the canonical encoding of the record or entry; a
    /// tombstone repeats the purged record's.
    pub content: String,
    /// Why a tombstone's record went (empty otherwise).
    #[serde(default)]
    pub reason: String,
    /// SHA-256 (hex) of the previous link's hash and this link's text.
    pub hash: String,
}

/// The chain's head: how many links, and the last one's hash.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Links so far (the next link's sequence number).
    pub length: u64,
    /// The last link's hash (hex); 64 zeros for the empty chain.
    pub hash: String,
}

/// What a node answers when a peer compares chains: its head and the hash
/// of the link the peer asked about (if it has that link).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainPoint {
    /// The node's head.
    pub head: Head,
    /// The hash of the link asked about, if the node has it.
    pub hash_at: Option<String>,
}

/// The hash the first link chains from.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl Head {
    /// The previous hash a new link chains from.
    pub fn prev(&self) -> &str {
        if self.hash.is_empty() { GENESIS } else { &self.hash }
    }

    /// Appends a link for `content_hash` and returns it (the head moves).
    pub fn link(&mut self, kind: LinkKind, at: u64, id: &str, content: String, reason: &str) -> Link {
        let hash = link_hash(self.prev(), kind, at, id, &content, reason);
        self.length += 1;
        self.hash = hash.clone();
        Link {
            kind,
            at,
            id: id.to_owned(),
            content,
            reason: reason.to_owned(),
            hash,
        }
    }
}

/// The text of a link that its hash covers: kind, position, id, content
/// hash and reason, tab-separated (none of them can hold a tab: ids are
/// `<node>-<n>`, reasons are ours).
pub fn link_text(kind: LinkKind, at: u64, id: &str, content: &str, reason: &str) -> String {
    format!("{}\t{at}\t{id}\t{content}\t{reason}", kind.as_str())
}

/// `SHA-256(prev || link text)` in hex; `prev` is the previous hash's 32
/// bytes (hex-decoded).
pub fn link_hash(prev: &str, kind: LinkKind, at: u64, id: &str, content: &str, reason: &str) -> String {
    let mut h = Sha256::new();
    h.update(unhex(prev));
    h.update(link_text(kind, at, id, content, reason).as_bytes());
    hex(&h.finalize())
}

/// SHA-256 (hex) of a value's canonical encoding: its JSON.
pub fn content_hash<T: Serialize>(v: &T) -> String {
    hex(&Sha256::digest(canonical(v)))
}

/// SHA-256 (hex) of bytes.
pub fn content_hash_bytes(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// A value's canonical encoding: JSON, fields in declaration order.
pub fn canonical<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// One thing `verify` found wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The link's sequence number, if the problem is at a link.
    pub link: Option<u64>,
    /// What the link or row is (`record`, `audit`, `tombstone`, `head`).
    pub kind: String,
    /// The record's position or the audit entry's sequence number.
    pub at: Option<u64>,
    /// The record's archive id, when known.
    pub id: String,
    /// What is wrong.
    pub problem: String,
}

/// The result of recomputing a node's chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// The head recomputed from the links.
    pub computed: Head,
    /// The head the node keeps.
    pub stored: Head,
    /// Records whose content was checked.
    pub records: u64,
    /// Audit entries whose content was checked.
    pub audit_entries: u64,
    /// Tombstones seen.
    pub tombstones: u64,
    /// Everything wrong, in chain order (at most [`PROBLEMS_MAX`]).
    pub problems: Vec<Problem>,
    /// More problems than listed.
    pub truncated: bool,
}

/// Problems listed at most (a wholly rewritten archive would otherwise
/// produce one per record).
pub const PROBLEMS_MAX: usize = 1000;

impl Verification {
    /// Whether nothing was wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && !self.truncated && self.computed == self.stored
    }

    /// Notes a problem.
    pub fn problem(&mut self, p: Problem) {
        if self.problems.len() < PROBLEMS_MAX {
            self.problems.push(p);
        } else {
            self.truncated = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_link_commits_to_the_one_before() {
        let mut a = Head::default();
        let l1 = a.link(LinkKind::Record, 0, "n-1", content_hash(&"x"), "");
        let l2 = a.link(LinkKind::Audit, 0, "", content_hash(&"y"), "");
        assert_eq!(a.length, 2);
        assert_eq!(l2.hash, a.hash);
        assert_eq!(
            l1.hash,
            link_hash(GENESIS, LinkKind::Record, 0, "n-1", &l1.content, "")
        );
        assert_eq!(
            l2.hash,
            link_hash(&l1.hash, LinkKind::Audit, 0, "", &l2.content, "")
        );
        // Another first link gives another head, though the second is equal.
        let mut b = Head::default();
        b.link(LinkKind::Record, 0, "n-1", content_hash(&"z"), "");
        b.link(LinkKind::Audit, 0, "", content_hash(&"y"), "");
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn hex_round_trips() {
        let h = content_hash(&"abc");
        assert_eq!(hex(&unhex(&h)), h);
        assert_eq!(unhex(GENESIS), vec![0u8; 32]);
    }
}
