//! The Raft log and vote in RocksDB. Keys are big-endian indexes, so
//! iteration order is log order. Appends are written with a synced WAL
//! before openraft is told they are durable.

use crate::db::{CF_LOG, CF_LOG_META};
use crate::types::TypeConfig;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use rocksdb::{DB, Direction, IteratorMode, WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

type Result<T> = std::result::Result<T, StorageError<u64>>;

/// The Raft log store; cheap to clone (it is also the log reader).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::write_logs(&e).into()
}

/// The disk-failure failpoint (debug builds): synced log writes fail once
/// its trigger file exists, as the store's do.
fn failed_disk() -> bool {
    use chorus_core::failpoint::{Failpoint, triggered};
    triggered(Failpoint::FailSyncedWritesWhenTriggered)
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>) -> LogStore {
        LogStore { db }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family created at open")
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        match self.db.get_cf(self.cf(CF_LOG_META), key).map_err(read_err)? {
            Some(b) => crate::codec::decode(&b).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    fn write_synced(&self, batch: WriteBatch) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(write_err)
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], v: &T) -> Result<()> {
        let bytes = crate::codec::encode(v).map_err(write_err)?;
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db
            .put_cf_opt(self.cf(CF_LOG_META), key, bytes, &wo)
            .map_err(write_err)
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId<u64>>> {
        let mut it = self.db.iterator_cf(self.cf(CF_LOG), IteratorMode::End);
        match it.next() {
            Some(item) => {
                let (_, v) = item.map_err(read_err)?;
                let e: Entry<TypeConfig> = crate::codec::decode(&v).map_err(read_err)?;
                Ok(Some(e.log_id))
            }
            None => Ok(None),
        }
    }
}

fn start_index(b: Bound<&u64>) -> u64 {
    match b {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i + 1,
        Bound::Unbounded => 0,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let start = start_index(range.start_bound());
        let mut out = Vec::new();
        let from = start.to_be_bytes();
        for item in self
            .db
            .iterator_cf(self.cf(CF_LOG), IteratorMode::From(&from, Direction::Forward))
        {
            let (k, v) = item.map_err(read_err)?;
            let idx = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| read_err(std::fmt::Error))?);
            if !range.contains(&idx) {
                break;
            }
            out.push(crate::codec::decode(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged: Option<LogId<u64>> = self.get_meta(KEY_PURGED)?;
        let last = self.last_entry_log_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<()> {
        self.put_meta(KEY_VOTE, vote)
            .map_err(|_| StorageIOError::write_vote(&std::fmt::Error).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<()> {
        self.put_meta(KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>> {
        Ok(self.get_meta::<Option<LogId<u64>>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for e in entries {
            let bytes = crate::codec::encode(&e).map_err(write_err)?;
            batch.put_cf(self.cf(CF_LOG), e.log_id.index.to_be_bytes(), bytes);
        }
        // The synced write runs on a blocking thread, so an fsync never
        // stalls a runtime worker (and with it every link and session on it);
        // awaiting it keeps log writes in order.
        let db = self.db.clone();
        let r = tokio::task::spawn_blocking(move || {
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            if failed_disk() {
                return Err("fsync failed: Input/output error (failpoint)".to_owned());
            }
            db.write_opt(batch, &wo).map_err(|e| e.into_string())
        })
        .await
        .map_err(write_err)?;
        let io = r
            .as_ref()
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.clone()));
        callback.log_io_completed(io);
        r.map_err(|e| write_err(std::io::Error::other(e)))
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(CF_LOG),
            log_id.index.to_be_bytes(),
            u64::MAX.to_be_bytes(),
        );
        batch.delete_cf(self.cf(CF_LOG), u64::MAX.to_be_bytes());
        // Synced: entries a crash brought back past a newer append would
        // make this log disagree with the leader's.
        self.write_synced(batch)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<()> {
        self.put_meta(KEY_PURGED, &log_id)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(CF_LOG),
            0u64.to_be_bytes(),
            (log_id.index + 1).to_be_bytes(),
        );
        self.write_synced(batch)
    }
}
