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
/// Query indexes: `u`ser, `w`ith and `t`ime keys (see `state_machine`).
pub const CF_INDEX: &str = "record_index";
/// The audit trail by big-endian sequence.
pub const CF_AUDIT: &str = "audit";
/// The hash chain: one link per record, audit entry and tombstone, by
/// big-endian link number (see `chain`).
pub const CF_CHAIN: &str = "chain";
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
            CF_INDEX,
            CF_AUDIT,
            CF_CHAIN,
        ],
    )
    .map_err(|e| OpenError {
        path: dir.display().to_string(),
        reason: e.into_string(),
    })?;
    let db = Arc::new(db);
    let sm =
        ArchiveStateMachine::new(db.clone(), &crate::snapshot::snapshot_dir(dir)).map_err(|e| OpenError {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
    let spool_path = spool_dir(dir);
    let spool_db = Arc::new(
        DB::open_cf(&opts, &spool_path, [CF_SPOOL, CF_SPOOL_META]).map_err(|e| OpenError {
            path: spool_path.display().to_string(),
            reason: e.into_string(),
        })?,
    );
    let io = |e: rocksdb::Error| OpenError {
        path: dir.display().to_string(),
        reason: e.into_string(),
    };
    move_old_spool(&db, &spool_db).map_err(io)?;
    let spool = crate::spool::Spool::new(spool_db, node_id, spool_records_max).map_err(|e| OpenError {
        path: spool_path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok((LogStore::new(db), sm, spool))
}

/// The spool's own database, beside the archive's: its writes sit on the
/// message path, and sharing a write-ahead log with the Raft log would make
/// each of them wait for the log's fsync.
pub fn spool_dir(dir: &Path) -> std::path::PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("{name}-spool"))
}

/// Moves records a node spooled before the spool had its own database.
fn move_old_spool(old: &DB, new: &DB) -> Result<(), rocksdb::Error> {
    let (Some(old_cf), Some(old_meta)) = (old.cf_handle(CF_SPOOL), old.cf_handle(CF_SPOOL_META)) else {
        return Ok(());
    };
    let (Some(new_cf), Some(new_meta)) = (new.cf_handle(CF_SPOOL), new.cf_handle(CF_SPOOL_META)) else {
        return Ok(());
    };
    let mut moved = rocksdb::WriteBatch::default();
    let mut forget = rocksdb::WriteBatch::default();
    for item in old.iterator_cf(old_cf, rocksdb::IteratorMode::Start) {
        let (k, v) = item?;
        moved.put_cf(new_cf, &k, &v);
        forget.delete_cf(old_cf, &k);
    }
    for item in old.iterator_cf(old_meta, rocksdb::IteratorMode::Start) {
        let (k, v) = item?;
        if new.get_cf(new_meta, &k)?.is_none() {
            moved.put_cf(new_meta, &k, &v);
        }
        forget.delete_cf(old_meta, &k);
    }
    if forget.is_empty() {
        return Ok(());
    }
    let mut synced = rocksdb::WriteOptions::default();
    synced.set_sync(true);
    new.write_opt(moved, &synced)?;
    old.write_opt(forget, &synced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Record;

    #[test]
    fn records_spooled_in_the_old_layout_move_to_the_spool_database() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("archive");
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            let old = DB::open_cf(&opts, &dir, [CF_SPOOL, CF_SPOOL_META]).expect("old layout");
            let r = Record {
                id: "n-7".into(),
                body: Some("spooled before the upgrade".into()),
                ..Record::default()
            };
            let spool = old.cf_handle(CF_SPOOL).expect("cf");
            old.put_cf(
                spool,
                7u64.to_be_bytes(),
                crate::codec::encode(&r).expect("encode"),
            )
            .expect("put");
            let meta = old.cf_handle(CF_SPOOL_META).expect("cf");
            old.put_cf(meta, crate::spool::KEY_NEXT, 8u64.to_be_bytes())
                .expect("put");
        }
        let (_log, _sm, spool) = open_with_spool(&dir, "n", 100).expect("open");
        let held = spool.oldest(10).expect("read");
        assert_eq!(held.len(), 1);
        assert_eq!((held[0].0, held[0].1.id.as_str()), (7, "n-7"));
        let (id, seq) = spool.append_seq(Record::default()).expect("append");
        assert_eq!((id.as_str(), seq), ("n-8", 8), "the sequence carries on");
        assert!(spool_dir(&dir).join("CURRENT").exists());
        drop((_log, _sm, spool));
        // Nothing is left behind in the archive database, so a second open
        // moves nothing twice.
        let (_log, _sm, spool) = open_with_spool(&dir, "n", 100).expect("reopen");
        let ids: Vec<String> = spool
            .oldest(10)
            .expect("read")
            .into_iter()
            .map(|(_, r)| r.id)
            .collect();
        assert_eq!(ids, ["n-7", "n-8"]);
    }
}
