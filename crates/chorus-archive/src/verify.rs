//! Recomputing a replica's hash chain from its rows (`chorus archive
//! verify`): every link's hash from the one before, every record's and
//! audit entry's content hash from its stored bytes, every purged record
//! covered by a tombstone and every stored record by a link. Reads one
//! RocksDB snapshot, so applies may go on meanwhile; costs one pass over
//! the archive.

use crate::chain::{Head, LinkKind, Problem, Verification, content_hash, link_hash};
use crate::db::{CF_AUDIT, CF_CHAIN, CF_RECORDS};
use crate::state_machine::{ArchiveStateMachine, KEY_CHAIN_HEAD, Result, be_u64, read_err};
use crate::types::{AuditEntry, Record};
use rocksdb::IteratorMode;
use std::collections::HashSet;

impl ArchiveStateMachine {
    /// Recomputes the chain and checks every row against it.
    pub fn verify_chain(&self) -> Result<Verification> {
        let snap = self.db.snapshot();
        let mut v = Verification {
            stored: match snap
                .get_cf(self.cf(crate::db::CF_SM_META), KEY_CHAIN_HEAD)
                .map_err(read_err)?
            {
                Some(b) => crate::codec::decode(&b).map_err(read_err)?,
                None => Head::default(),
            },
            ..Verification::default()
        };
        let mut walk = Walk::default();
        for item in snap.iterator_cf(self.cf(CF_CHAIN), IteratorMode::Start) {
            let (k, val) = item.map_err(read_err)?;
            self.check_link(&snap, be_u64(&k)?, &val, &mut walk, &mut v)?;
        }
        let (head, next_record, tombstoned) = (walk.head, walk.next_record, walk.tombstoned);
        v.computed = head;
        if v.computed != v.stored {
            v.problem(Problem {
                link: None,
                kind: "head".into(),
                at: None,
                id: String::new(),
                problem: format!(
                    "the stored head ({} links, {}) differs from the recomputed one ({} links, {})",
                    v.stored.length, v.stored.hash, v.computed.length, v.computed.hash
                ),
            });
        }
        self.check_unlinked(&snap, next_record, &tombstoned, &mut v)?;
        Ok(v)
    }

    /// Checks link `n` (its stored bytes `val`) against the one before and
    /// the row it commits to.
    fn check_link(
        &self,
        snap: &rocksdb::SnapshotWithThreadMode<'_, rocksdb::DB>,
        n: u64,
        val: &[u8],
        w: &mut Walk,
        v: &mut Verification,
    ) -> Result<()> {
        let problem = |kind: &str, at: Option<u64>, id: &str, what: String| Problem {
            link: Some(n),
            kind: kind.to_owned(),
            at,
            id: id.to_owned(),
            problem: what,
        };
        if n != w.head.length {
            v.problem(problem(
                "link",
                None,
                "",
                format!("link {} is missing", w.head.length),
            ));
            w.head.length = n;
        }
        let link: crate::chain::Link = match crate::codec::decode(val) {
            Ok(l) => l,
            Err(e) => {
                v.problem(problem("link", None, "", format!("unreadable link: {e}")));
                w.head.length += 1;
                return Ok(());
            }
        };
        let expect = link_hash(
            w.head.prev(),
            link.kind,
            link.at,
            &link.id,
            &link.content,
            &link.reason,
        );
        if expect != link.hash {
            let what = "the link's hash does not match its content and the link before";
            v.problem(problem(
                kind_name(link.kind),
                Some(link.at),
                &link.id,
                what.into(),
            ));
        }
        w.head.length += 1;
        w.head.hash = link.hash.clone();
        let found = match link.kind {
            LinkKind::Record if link.at != w.next_record => {
                let what = format!(
                    "record link for position {} where {} was next",
                    link.at, w.next_record
                );
                w.next_record = w.next_record.max(link.at + 1);
                Some(what)
            }
            LinkKind::Record => {
                w.next_record += 1;
                self.check_record(snap, &link, v)?
            }
            LinkKind::Tombstone => {
                w.tombstoned.insert(link.at);
                v.tombstones += 1;
                None
            }
            LinkKind::Audit => self.check_audit(snap, &link, v)?,
        };
        if let Some(what) = found {
            v.problem(problem(kind_name(link.kind), Some(link.at), &link.id, what));
        }
        Ok(())
    }

    /// A record link's row: present with the hashed content, unless a
    /// later tombstone closes it (checked at the end).
    fn check_record(
        &self,
        snap: &rocksdb::SnapshotWithThreadMode<'_, rocksdb::DB>,
        link: &crate::chain::Link,
        v: &mut Verification,
    ) -> Result<Option<String>> {
        let Some(bytes) = snap
            .get_cf(self.cf(CF_RECORDS), link.at.to_be_bytes())
            .map_err(read_err)?
        else {
            // Purged: its tombstone comes later in the chain; `check_unlinked` looks.
            return Ok(None);
        };
        v.records += 1;
        Ok(match crate::codec::decode::<Record>(&bytes) {
            Err(e) => Some(format!("the record cannot be read: {e}")),
            Ok(r) if r.id != link.id => Some(format!(
                "the record at this position is {}, not {}",
                r.id, link.id
            )),
            Ok(r) if content_hash(&r) != link.content => {
                Some("the record's content was changed since it was archived".into())
            }
            Ok(_) => None,
        })
    }

    fn check_audit(
        &self,
        snap: &rocksdb::SnapshotWithThreadMode<'_, rocksdb::DB>,
        link: &crate::chain::Link,
        v: &mut Verification,
    ) -> Result<Option<String>> {
        let Some(bytes) = snap
            .get_cf(self.cf(CF_AUDIT), link.at.to_be_bytes())
            .map_err(read_err)?
        else {
            return Ok(Some("the audit entry is missing".into()));
        };
        v.audit_entries += 1;
        Ok(match crate::codec::decode::<AuditEntry>(&bytes) {
            Err(e) => Some(format!("the audit entry cannot be read: {e}")),
            Ok(a) if content_hash(&a) != link.content => {
                Some("the audit entry was changed since it was recorded".into())
            }
            Ok(_) => None,
        })
    }

    /// Records with no link (inserted behind the chain's back) and linked
    /// records gone without a tombstone.
    fn check_unlinked(
        &self,
        snap: &rocksdb::SnapshotWithThreadMode<'_, rocksdb::DB>,
        linked: u64,
        tombstoned: &HashSet<u64>,
        v: &mut Verification,
    ) -> Result<()> {
        // Walks the linked positions and the stored records side by side.
        let mut expect = 0u64;
        let gone = |from: u64, to: u64, v: &mut Verification| {
            for pos in (from..to.min(linked)).filter(|p| !tombstoned.contains(p)) {
                v.problem(Problem {
                    link: None,
                    kind: "record".into(),
                    at: Some(pos),
                    id: String::new(),
                    problem: "the record is missing and no tombstone says why".into(),
                });
            }
        };
        for item in snap.iterator_cf(self.cf(CF_RECORDS), IteratorMode::Start) {
            let (k, _) = item.map_err(read_err)?;
            let pos = be_u64(&k)?;
            gone(expect, pos, v);
            expect = pos + 1;
            let what = if pos >= linked {
                Some("a record no link covers")
            } else if tombstoned.contains(&pos) {
                Some("a record its tombstone says was purged")
            } else {
                None
            };
            if let Some(what) = what {
                v.problem(Problem {
                    link: None,
                    kind: "record".into(),
                    at: Some(pos),
                    id: String::new(),
                    problem: what.into(),
                });
            }
        }
        gone(expect, linked, v);
        Ok(())
    }
}

/// Where a walk along the chain is: the head so far, the next record
/// position expected (record links come in position order, one per
/// position, so the positions linked are 0..next_record), and the
/// positions tombstones closed.
#[derive(Default)]
struct Walk {
    head: Head,
    next_record: u64,
    tombstoned: HashSet<u64>,
}

fn kind_name(k: LinkKind) -> &'static str {
    match k {
        LinkKind::Record => "record",
        LinkKind::Audit => "audit",
        LinkKind::Tombstone => "tombstone",
    }
}

#[cfg(test)]
mod tests;
