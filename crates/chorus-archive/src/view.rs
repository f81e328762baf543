//! A consistent read of the archive state machine: every read of one
//! history query goes through one RocksDB snapshot, so a batch applied
//! while the query runs is either wholly visible or not at all. (Reading
//! the live database, a range bound looked up while its record was still
//! spooled could meet that record's committed copy in the scan, and let it
//! and its same-millisecond neighbours through: the flaky
//! `test_after_id_and_before_id_together_select_a_range`.)

use crate::db::{CF_IDS, CF_INDEX, CF_RECORDS};
use crate::state_machine::{ArchiveStateMachine, Result, read_err};
use crate::types::Record;
use rocksdb::{DB, DBIteratorWithThreadMode, IteratorMode, SnapshotWithThreadMode};

/// One point-in-time view of the replica.
pub(crate) struct View<'a> {
    sm: &'a ArchiveStateMachine,
    snap: SnapshotWithThreadMode<'a, DB>,
}

impl<'a> View<'a> {
    /// The replica as it is now.
    pub(crate) fn new(sm: &'a ArchiveStateMachine) -> View<'a> {
        View {
            sm,
            snap: sm.db.snapshot(),
        }
    }

    /// The position an archive id was given, if it was ever applied.
    pub(crate) fn position_of(&self, id: &str) -> Result<Option<u64>> {
        match self
            .snap
            .get_cf(self.sm.cf(CF_IDS), id.as_bytes())
            .map_err(read_err)?
        {
            Some(v) => Ok(Some(crate::layout::id_position(&v)?)),
            None => Ok(None),
        }
    }

    /// The record at a position, unless purged.
    pub(crate) fn record_at(&self, pos: u64) -> Result<Option<Record>> {
        match self
            .snap
            .get_cf(self.sm.cf(CF_RECORDS), pos.to_be_bytes())
            .map_err(read_err)?
        {
            Some(v) => crate::codec::decode(&v).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    /// The record with an archive id, unless unknown or purged.
    pub(crate) fn record_by_id(&self, id: &str) -> Result<Option<(u64, Record)>> {
        match self.position_of(id)? {
            Some(p) => Ok(self.record_at(p)?.map(|r| (p, r))),
            None => Ok(None),
        }
    }

    /// The query index from `mode` on.
    pub(crate) fn index(&self, mode: IteratorMode<'_>) -> DBIteratorWithThreadMode<'_, DB> {
        self.snap.iterator_cf(self.sm.cf(CF_INDEX), mode)
    }
}
