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
/// bytes (hex-decoded). The text's fields are fed to the hash as they are
/// (the same bytes as [`link_text`], without building it: this runs once
/// per applied record).
pub fn link_hash(prev: &str, kind: LinkKind, at: u64, id: &str, content: &str, reason: &str) -> String {
    let mut h = Sha256::new();
    h.update(unhex(prev));
    let mut digits = [0u8; 20];
    for part in [
        kind.as_str().as_bytes(),
        b"\t",
        decimal(at, &mut digits),
        b"\t",
        id.as_bytes(),
        b"\t",
        content.as_bytes(),
        b"\t",
        reason.as_bytes(),
    ] {
        h.update(part);
    }
    hex(&h.finalize())
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// SHA-256 (hex) of a value's canonical encoding: its JSON.
pub fn content_hash<T: Serialize>(v: &T) -> String {
    let mut h = HashWriter(Sha256::new());
    // Writing into a hasher cannot fail; a value that cannot be encoded
    // hashes as the empty encoding, as `canonical` gives.
    if serde_json::to_writer(&mut h, v).is_err() {
        h.0 = Sha256::new();
    }
    hex(&h.0.finalize())
}

/// Feeds what is written to a SHA-256.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// SHA-256 (hex) of bytes.
pub fn content_hash_bytes(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// A value's canonical encoding: JSON, fields in declaration order.
pub fn canonical<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 * b.len());
    for x in b {
        s.push(char::from(HEX_DIGITS[usize::from(x >> 4)]));
        s.push(char::from(HEX_DIGITS[usize::from(x & 15)]));
    }
    s
}

/// The bytes of a hex string; a pair that is not hex is left out.
fn unhex(s: &str) -> Vec<u8> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    s.as_bytes()
        .chunks_exact(2)
        .filter_map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?))
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
    fn link_and_content_hashes_match_their_definition() {
        // Known answers (computed independently with Python's hashlib):
        // the bytes hashed must never change, or every stored chain fails
        // to verify.
        let content = "ab".repeat(32);
        let h = link_hash(
            GENESIS,
            LinkKind::Tombstone,
            u64::MAX,
            "london-42",
            &content,
            "retention",
        );
        assert_eq!(
            h,
            "26569d45ea74e611bc288e96fbec48360df15378f14e76ae76159cd5fabc82bb"
        );
        #[derive(Serialize)]
        struct V {
            a: &'static str,
            n: u32,
        }
        let v = V { a: "x<y>\"", n: 1230 };
        assert_eq!(
            content_hash(&v),
            "08b791b3ce886f1eee1af8ef37a49d3df8c77a53a79a093971495db9ad1a8bdf"
        );
        assert_eq!(content_hash(&v), content_hash_bytes(&canonical(&v)));
        // And the text form the verifier shows agrees with what is hashed.
        for (kind, at, reason) in [(LinkKind::Record, 0, ""), (LinkKind::Audit, 1_000_000, "x y")] {
            let mut d = Sha256::new();
            d.update(unhex(&h));
            d.update(link_text(kind, at, "n-1", &content, reason));
            assert_eq!(
                link_hash(&h, kind, at, "n-1", &content, reason),
                hex(&d.finalize())
            );
        }
    }

    #[test]
    fn hex_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let reference: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&all), reference);
        assert_eq!(unhex(&reference), all);
        assert_eq!(unhex(&reference.to_uppercase()), all);
        assert_eq!(unhex("0g12"), vec![0x12], "a pair that is not hex is left out");
        let h = content_hash(&"abc");
        assert_eq!(hex(&unhex(&h)), h);
        assert_eq!(unhex(GENESIS), vec![0u8; 32]);
    }
}
