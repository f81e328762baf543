//! A write batch that reaches RocksDB sorted by column family and key.
//!
//! Applying a batch of committed records writes eight to ten keys per
//! record (the record, its id, index entries per participant and
//! conversation, its chain link) spread over the key space. RocksDB's
//! memtable is a skip list that remembers where its last insert went: a
//! key just after it is found in a few steps, any other from the top. In
//! record order almost every insert searched from the top, and those
//! searches were a third of all CPU while three replicas applied (the
//! archive benchmark's profile, BENCHMARKS.md "Archive throughput"). So the
//! state machine collects its writes here and hands them over in order.
//! The sort is stable, so of two writes to one key the later still wins,
//! as in a plain batch; the batch stays atomic either way.
//!
//! Keys and values are copied into one growing buffer rather than two
//! allocations per write: a batch of full spool batches holds tens of
//! thousands of writes.

use crate::state_machine::ArchiveStateMachine;
use rocksdb::WriteBatch;
use std::ops::Range;

/// One write: column family, where its key is in the buffer, and where its
/// value is (`None` deletes).
struct Op {
    cf: &'static str,
    key: Range<usize>,
    value: Option<Range<usize>>,
}

/// Writes waiting to be sorted.
#[derive(Default)]
pub(crate) struct SortedBatch {
    bytes: Vec<u8>,
    ops: Vec<Op>,
}

impl SortedBatch {
    /// Copies `b` into the buffer and says where it is.
    fn keep(&mut self, b: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(b);
        start..self.bytes.len()
    }

    /// Sets `key` in the column family `cf`.
    pub(crate) fn put(&mut self, cf: &'static str, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let key = self.keep(key.as_ref());
        let value = Some(self.keep(value.as_ref()));
        self.ops.push(Op { cf, key, value });
    }

    /// Deletes `key` from the column family `cf`.
    pub(crate) fn delete(&mut self, cf: &'static str, key: impl AsRef<[u8]>) {
        let key = self.keep(key.as_ref());
        self.ops.push(Op { cf, key, value: None });
    }

    /// The RocksDB batch, writes ordered by column family and key.
    pub(crate) fn into_write_batch(mut self, sm: &ArchiveStateMachine) -> WriteBatch {
        let bytes = &self.bytes;
        self.ops
            .sort_by(|a, b| (a.cf, &bytes[a.key.clone()]).cmp(&(b.cf, &bytes[b.key.clone()])));
        let mut batch = WriteBatch::default();
        let mut handle: Option<(&str, &rocksdb::ColumnFamily)> = None;
        for op in &self.ops {
            let cf = match handle {
                Some((name, cf)) if name == op.cf => cf,
                _ => {
                    let cf = sm.cf(op.cf);
                    handle = Some((op.cf, cf));
                    cf
                }
            };
            let key = &bytes[op.key.clone()];
            match &op.value {
                Some(v) => batch.put_cf(cf, key, &bytes[v.clone()]),
                None => batch.delete_cf(cf, key),
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{CF_INDEX, CF_SM_META};

    #[test]
    fn the_later_of_two_writes_to_a_key_wins_after_sorting() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (_log, sm, _spool) =
            crate::db::open_with_spool(&tmp.path().join("archive"), "n", 10).expect("open");
        let mut b = SortedBatch::default();
        b.put(CF_INDEX, b"z", b"");
        b.put(CF_SM_META, b"k", b"first");
        b.put(CF_INDEX, b"a", b"");
        b.delete(CF_SM_META, b"k");
        b.put(CF_SM_META, b"j", b"1");
        b.put(CF_SM_META, b"j", b"2");
        sm.write(b.into_write_batch(&sm)).expect("write");
        let get = |cf, k: &[u8]| sm.db.get_cf(sm.cf(cf), k).expect("get");
        assert_eq!(get(CF_SM_META, b"k"), None, "the delete came after the put");
        assert_eq!(get(CF_SM_META, b"j").as_deref(), Some(&b"2"[..]));
        assert!(get(CF_INDEX, b"a").is_some() && get(CF_INDEX, b"z").is_some());
    }
}
