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

/// Why the archive database could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the archive database at {path}: {reason}")]
pub struct OpenError {
    /// The directory.
    pub path: String,
    /// RocksDB's explanation.
    pub reason: String,
}

/// Opens (creating) the archive database and returns its two stores.
pub fn open(dir: &Path) -> Result<(LogStore, ArchiveStateMachine), OpenError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let db = DB::open_cf(&opts, dir, [CF_LOG, CF_LOG_META, CF_RECORDS, CF_IDS, CF_SM_META]).map_err(|e| {
        OpenError {
            path: dir.display().to_string(),
            reason: e.into_string(),
        }
    })?;
    let db = Arc::new(db);
    let sm = ArchiveStateMachine::new(db.clone()).map_err(|e| OpenError {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok((LogStore::new(db), sm))
}
