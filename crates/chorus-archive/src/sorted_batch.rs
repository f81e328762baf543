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

use crate::state_machine::ArchiveStateMachine;
use rocksdb::WriteBatch;

/// One write: column family, key, and the value (`None` deletes).
type Op = (&'static str, Vec<u8>, Option<Vec<u8>>);

/// Writes waiting to be sorted.
#[derive(Default)]
pub(crate) struct SortedBatch {
    ops: Vec<Op>,
}

impl SortedBatch {
    /// Sets `key` in the column family `cf`.
    pub(crate) fn put(&mut self, cf: &'static str, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops
            .push((cf, key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }

    /// Deletes `key` from the column family `cf`.
    pub(crate) fn delete(&mut self, cf: &'static str, key: impl AsRef<[u8]>) {
        self.ops.push((cf, key.as_ref().to_vec(), None));
    }

    /// The RocksDB batch, writes ordered by column family and key.
    pub(crate) fn into_write_batch(mut self, sm: &ArchiveStateMachine) -> WriteBatch {
        self.ops.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut batch = WriteBatch::default();
        for (cf, key, value) in self.ops {
            match value {
                Some(v) => batch.put_cf(sm.cf(cf), key, v),
                None => batch.delete_cf(sm.cf(cf), key),
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
