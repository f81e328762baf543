//! Opening the archive's RocksDB database with its column families.

use crate::log_store::LogStore;
use crate::state_machine::ArchiveStateMachine;
use rocksdb::{DB, Options};
use std::path::Path;
use std::sync::Arc;

/// Raft log entries by big-endian index.
pub const CF_LOG: &str = "raft_log";
/// Vote, committed log id, last purged log id.
pub const CF_LOG_META: &str = "raft_meta";
/// Archive records by big-endian position in the archive order.
pub const CF_RECORDS: &str = "records";
/// Archive id → position, for idempotent inserts.
pub const CF_IDS: &str = "record_ids";
/// Last applied log id, membership, the current snapshot.
pub const CF_SM_META: &str = "sm_meta";
/// This node's spool: records awaiting commit, by local sequence.
pub const CF_SPOOL: &str = "spool";
/// The spool's next sequence number.
pub const CF_SPOOL_META: &str = "spool_meta";

/// Why the archive database could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the archive database at {path}: {reason}")]
pub struct OpenError {
    /// The directory.
    pub path: String,
    /// RocksDB's explanation.
    pub reason: String,
}

/// Opens (creating) the archive database and returns its two Raft stores.
pub fn open(dir: &Path) -> Result<(LogStore, ArchiveStateMachine), OpenError> {
    let (log, sm, _) = open_with_spool(dir, "node", 1)?;
    Ok((log, sm))
}

/// Opens the archive database with this node's spool as well.
pub fn open_with_spool(
    dir: &Path,
    node_id: &str,
    spool_records_max: u64,
) -> Result<(LogStore, ArchiveStateMachine, crate::spool::Spool), OpenError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let db = DB::open_cf(
        &opts,
        dir,
        [
            CF_LOG,
            CF_LOG_META,
            CF_RECORDS,
            CF_IDS,
            CF_SM_META,
            CF_SPOOL,
            CF_SPOOL_META,
        ],
    )
    .map_err(|e| OpenError {
        path: dir.display().to_string(),
        reason: e.into_string(),
    })?;
    let db = Arc::new(db);
    let sm = ArchiveStateMachine::new(db.clone()).map_err(|e| OpenError {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let spool = crate::spool::Spool::new(db.clone(), node_id, spool_records_max).map_err(|e| OpenError {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok((LogStore::new(db), sm, spool))
}
