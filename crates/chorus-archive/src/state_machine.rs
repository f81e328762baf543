//! The archive state machine. Applying a committed `Append` inserts each
//! record whose archive id is new at the next position of the archive
//! order, so every node holds the same records in the same order, once.
//! Holds, the retention policy, purges and the audit trail are commands
//! too, so every site purges exactly the same records.
//!
//! Besides the records (`records`, by position) and the id map
//! (`record_ids`, kept after a purge so a late duplicate is still
//! recognised), applying maintains the query indexes in `record_index`;
//! `layout` says which keys a record writes.

use crate::db::{CF_AUDIT, CF_IDS, CF_INDEX, CF_RECORDS, CF_SM_META};
use crate::types::{AuditEntry, Hold, PendingRetention, Record, Response, Retention, TypeConfig};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use rocksdb::{DB, Direction, IteratorMode, WriteBatch};
use serde::Serialize;
use std::sync::{Arc, Mutex};

pub(crate) const KEY_APPLIED: &[u8] = b"last_applied";
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"membership";
pub(crate) const KEY_NEXT: &[u8] = b"next_position";
pub(crate) const KEY_NEXT_AUDIT: &[u8] = b"next_audit";
pub(crate) const KEY_RETENTION: &[u8] = b"retention";
pub(crate) const KEY_GENERATION: &[u8] = b"generation";
pub(crate) const HOLD_PREFIX: &[u8] = b"hold/";
pub(crate) const REMOVED_PREFIX: &[u8] = b"removed/";
pub(crate) const PENDING_PREFIX: &[u8] = b"pending-retention/";
pub(crate) const KEY_CHAIN_HEAD: &[u8] = b"chain_head";
pub(crate) const KEY_LIVE: &[u8] = b"live_records";

pub(crate) type Result<T> = std::result::Result<T, StorageError<u64>>;

pub(crate) fn read_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::read_state_machine(&e).into()
}

pub(crate) fn write_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::write_state_machine(&e).into()
}

/// The archive state machine; cheap to clone (it is its own snapshot builder).
#[derive(Clone)]
pub struct ArchiveStateMachine {
    pub(crate) db: Arc<DB>,
    /// Told the removed members whenever they may have changed.
    pub(crate) removed_listener: Arc<std::sync::OnceLock<RemovedListener>>,
    /// Where snapshot files live.
    pub(crate) snapshots: Arc<crate::snapshot::SnapshotDir>,
    /// Serializes recording the current snapshot.
    pub(crate) snapshot_lock: Arc<Mutex<()>>,
    /// The thread that applies committed batches, started at the first.
    apply_lane: Arc<std::sync::OnceLock<crate::background::Lane>>,
    /// How many nice steps below the sessions that thread runs.
    background_nice: Arc<std::sync::atomic::AtomicI32>,
}

/// A function told the Raft ids of every removed member.
pub type RemovedListener = Box<dyn Fn(Vec<u64>) + Send + Sync>;

impl ArchiveStateMachine {
    /// The state machine in `db`, with snapshot files in `snapshot_dir`;
    /// finishes a snapshot install a crash interrupted.
    pub(crate) fn new(db: Arc<DB>, snapshot_dir: &std::path::Path) -> Result<ArchiveStateMachine> {
        let snapshots = crate::snapshot::SnapshotDir::open(snapshot_dir).map_err(write_err)?;
        let sm = ArchiveStateMachine {
            db,
            removed_listener: Arc::new(std::sync::OnceLock::new()),
            snapshots: Arc::new(snapshots),
            snapshot_lock: Arc::new(Mutex::new(())),
            apply_lane: Arc::default(),
            background_nice: Arc::new(crate::background::DEFAULT_NICE.into()),
        };
        sm.resume_interrupted_install()?;
        Ok(sm)
    }

    /// Sets how many nice steps below the sessions the apply thread runs
    /// (`[archive] background_nice`); takes effect if set before the first
    /// apply.
    pub fn set_background_nice(&self, nice: i32) {
        self.background_nice
            .store(nice, std::sync::atomic::Ordering::Relaxed);
    }

    /// The apply lane, started on first use (applies are serialized by
    /// openraft, so two never race to start it).
    fn apply_lane(&self) -> Result<&crate::background::Lane> {
        if self.apply_lane.get().is_none() {
            let nice = self.background_nice.load(std::sync::atomic::Ordering::Relaxed);
            let lane = crate::background::Lane::start("apply", nice).map_err(write_err)?;
            let _ = self.apply_lane.set(lane);
        }
        self.apply_lane
            .get()
            .ok_or_else(|| write_err(std::io::Error::other("the apply lane did not start")))
    }

    pub(crate) fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family created at open")
    }

    pub(crate) fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        match self.db.get_cf(self.cf(CF_SM_META), key).map_err(read_err)? {
            Some(b) => crate::codec::decode(&b).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    pub(crate) fn next_position(&self) -> Result<u64> {
        Ok(self.get(KEY_NEXT)?.unwrap_or(0))
    }

    /// How many records were ever applied (purged ones included): the
    /// next archive position.
    pub fn applied_records(&self) -> Result<u64> {
        self.next_position()
    }

    /// Records held now (applied and not purged): one read, so status
    /// requests never count the archive.
    pub fn live_records(&self) -> Result<u64> {
        Ok(self.get(KEY_LIVE)?.unwrap_or(0))
    }

    /// Changes whenever a snapshot replaced the whole archive (the search
    /// index then rebuilds).
    pub fn generation(&self) -> Result<u64> {
        Ok(self.get(KEY_GENERATION)?.unwrap_or(0))
    }

    /// Record and audit-entry counts and a SHA-256 digest over every record
    /// (position, id and content) and audit entry in order: equal digests
    /// on two sites prove they hold identical archives.
    pub fn digest(&self) -> Result<(u64, String)> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut n = 0u64;
        for cf in [CF_RECORDS, CF_AUDIT] {
            h.update(cf.as_bytes());
            for item in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
                let (k, v) = item.map_err(read_err)?;
                h.update((k.len() as u64).to_be_bytes());
                h.update(&k);
                h.update((v.len() as u64).to_be_bytes());
                h.update(&v);
                if cf == CF_RECORDS {
                    n += 1;
                }
            }
        }
        let hex = crate::chain::hex(&h.finalize());
        Ok((n, hex))
    }

    /// Every record in archive order.
    pub fn records(&self) -> Result<Vec<Record>> {
        Ok(self
            .records_from(0, usize::MAX)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Up to `limit` records from position `from` on, with their positions.
    pub fn records_from(&self, from: u64, limit: usize) -> Result<Vec<(u64, Record)>> {
        self.numbered(CF_RECORDS, from, limit)
    }

    /// The record at a position, unless purged.
    pub fn record_at(&self, pos: u64) -> Result<Option<Record>> {
        match self
            .db
            .get_cf(self.cf(CF_RECORDS), pos.to_be_bytes())
            .map_err(read_err)?
        {
            Some(v) => crate::codec::decode(&v).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    /// The position an archive id was given, if it was ever applied.
    pub fn position_of(&self, id: &str) -> Result<Option<u64>> {
        match self.db.get_cf(self.cf(CF_IDS), id.as_bytes()).map_err(read_err)? {
            Some(v) => Ok(Some(crate::layout::id_position(&v)?)),
            None => Ok(None),
        }
    }

    /// The record with an archive id, unless unknown or purged.
    pub fn record_by_id(&self, id: &str) -> Result<Option<(u64, Record)>> {
        match self.position_of(id)? {
            Some(p) => Ok(self.record_at(p)?.map(|r| (p, r))),
            None => Ok(None),
        }
    }

    /// Every value stored under a metadata key prefix, in key order.
    fn under_prefix<T: serde::de::DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_SM_META),
            IteratorMode::From(prefix, Direction::Forward),
        ) {
            let (k, v) = item.map_err(read_err)?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push(crate::codec::decode(&v).map_err(read_err)?);
        }
        Ok(out)
    }

    /// Up to `limit` rows of a column family keyed by big-endian numbers,
    /// from `from` on, decoded.
    fn numbered<T: serde::de::DeserializeOwned>(
        &self,
        cf: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, T)>> {
        let mut out = Vec::new();
        let start = from.to_be_bytes();
        for item in self
            .db
            .iterator_cf(self.cf(cf), IteratorMode::From(&start, Direction::Forward))
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(read_err)?;
            out.push((be_u64(&k)?, crate::codec::decode(&v).map_err(read_err)?));
        }
        Ok(out)
    }

    /// Every hold, active and released.
    pub fn holds(&self) -> Result<Vec<Hold>> {
        self.under_prefix(HOLD_PREFIX)
    }

    /// Registers the function told the removed members (now, and whenever
    /// an applied command or an installed snapshot may have changed them).
    pub fn on_removed_members(&self, f: RemovedListener) {
        if self.removed_listener.set(f).is_ok() {
            self.tell_removed();
        }
    }

    pub(crate) fn tell_removed(&self) {
        if let Some(f) = self.removed_listener.get() {
            match self.removed_members() {
                Ok(ids) => f(ids),
                Err(e) => tracing::error!(error = %e, "cannot read the removed archive members"),
            }
        }
    }

    /// Nodes an operator removed from the archive group.
    pub fn removed_members(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_SM_META),
            IteratorMode::From(REMOVED_PREFIX, Direction::Forward),
        ) {
            let (k, _) = item.map_err(read_err)?;
            if !k.starts_with(REMOVED_PREFIX) {
                break;
            }
            out.push(be_u64(&k[REMOVED_PREFIX.len()..])?);
        }
        Ok(out)
    }

    /// Retention changes waiting for a second admin.
    pub fn pending_retention(&self) -> Result<Vec<PendingRetention>> {
        self.under_prefix(PENDING_PREFIX)
    }

    /// The hash chain's head (one read: cheap enough for every status
    /// request).
    pub fn chain_head(&self) -> Result<crate::chain::Head> {
        Ok(self.get(KEY_CHAIN_HEAD)?.unwrap_or_default())
    }

    /// The archive id of the record an edit (correction or retraction)
    /// refers to, if it is still held: by the sender's message id, else
    /// by archive id (a room retraction names the room's stanza-id).
    pub fn edited_record(&self, r: &Record) -> Result<Option<String>> {
        let Some(edit) = &r.edit else { return Ok(None) };
        let sender = chorus_core::archive::bare(&r.from);
        let prefix = [b"m", sender.as_bytes(), b"\0", edit.of.as_bytes(), b"\0"].concat();
        let mode = IteratorMode::From(&prefix, Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_INDEX), mode) {
            let (k, _) = item.map_err(read_err)?;
            if !k.starts_with(&prefix) || k.len() != prefix.len() + 8 {
                break;
            }
            if let Some(orig) = self.record_at(be_u64(&k[prefix.len()..])?)? {
                return Ok(Some(orig.id));
            }
        }
        Ok(self.record_by_id(&edit.of)?.map(|(_, orig)| orig.id))
    }

    /// The chain link number of the record `id` at `pos` (kept after a
    /// purge), from its id entry or, in layout 1, its `c<pos>` key.
    pub fn record_link(&self, id: &str, pos: u64) -> Result<Option<u64>> {
        if let Some(v) = self.db.get_cf(self.cf(CF_IDS), id.as_bytes()).map_err(read_err)?
            && crate::layout::id_position(&v)? == pos
            && let Some(n) = crate::layout::id_link(&v)?
        {
            return Ok(Some(n));
        }
        match self
            .db
            .get_cf(self.cf(CF_INDEX), crate::layout::link_key(pos))
            .map_err(read_err)?
        {
            Some(v) => Ok(Some(be_u64(&v)?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` chain links from link number `from` on.
    pub fn chain_links(&self, from: u64, limit: usize) -> Result<Vec<(u64, crate::chain::Link)>> {
        self.numbered(crate::db::CF_CHAIN, from, limit)
    }

    /// The retention policy in force.
    pub fn retention(&self) -> Result<Retention> {
        Ok(self.get(KEY_RETENTION)?.unwrap_or_default())
    }

    /// Audit entries with sequence numbers, oldest first, from `from` on.
    pub fn audit(&self, from: u64, limit: usize) -> Result<Vec<(u64, AuditEntry)>> {
        self.numbered(CF_AUDIT, from, limit)
    }

    pub(crate) fn put_json<T: Serialize>(&self, batch: &mut impl Writes, key: &[u8], v: &T) -> Result<()> {
        batch.put(
            self,
            CF_SM_META,
            key,
            &crate::codec::encode(v).map_err(write_err)?,
        );
        Ok(())
    }

    pub(crate) fn put_record(&self, batch: &mut impl Writes, pos: u64, r: &Record) -> Result<()> {
        batch.put(
            self,
            CF_RECORDS,
            &pos.to_be_bytes(),
            &crate::codec::encode(r).map_err(write_err)?,
        );
        for k in crate::layout::index_keys(r, pos) {
            batch.put(self, CF_INDEX, &k, &[]);
        }
        Ok(())
    }

    /// Writes without forcing an fsync: the Raft log is synced, and after a
    /// crash openraft re-applies committed entries past the last applied
    /// id we persisted, which the idempotent apply absorbs.
    pub(crate) fn write(&self, batch: WriteBatch) -> Result<()> {
        self.db
            .write_opt(batch, &chorus_store::durable::unsynced())
            .map_err(write_err)
    }
}

/// Decodes a big-endian u64 key or value.
pub(crate) fn be_u64(b: &[u8]) -> Result<u64> {
    b.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| read_err(std::io::Error::other("malformed archive key")))
}

impl RaftSnapshotBuilder<TypeConfig> for ArchiveStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let r = blocking(|| self.write_snapshot())?;
        let file = tokio::fs::File::open(self.snapshots.path(&r.file))
            .await
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(Some(r.meta.signature()), &e)))?;
        Ok(Snapshot {
            meta: r.meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for ArchiveStateMachine {
    type SnapshotBuilder = ArchiveStateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        Ok((
            self.get(KEY_APPLIED)?,
            self.get(KEY_MEMBERSHIP)?.unwrap_or_default(),
        ))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // A batch means thousands of index reads and writes: they run on
        // the apply lane, below the sessions' priority (`background`).
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let mut sm = self.clone();
        self.apply_lane()?
            .run(move || sm.apply_entries(entries))
            .await
            .map_err(write_err)?
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>> {
        let f = self
            .snapshots
            .receiving()
            .map_err(|e| StorageError::from(StorageIOError::write_snapshot(None, &e)))?;
        Ok(Box::new(tokio::fs::File::from_std(f)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<()> {
        let received = snapshot.into_std().await;
        blocking(|| {
            let file = self
                .snapshots
                .keep_received(received, &meta.snapshot_id)
                .map_err(|e| {
                    StorageError::from(StorageIOError::write_snapshot(Some(meta.signature()), &e))
                })?;
            self.install_file(meta, &file)
        })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let Some((r, path)) = blocking(|| self.current_snapshot())? else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(Some(r.meta.signature()), &e)))?;
        Ok(Some(Snapshot {
            meta: r.meta,
            snapshot: Box::new(file),
        }))
    }
}

/// Runs blocking storage work without stalling the other tasks of a
/// multi-threaded runtime's worker thread; in place elsewhere (a
/// current-thread runtime cannot hand its tasks to another worker).
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Where the state machine's writes go: a plain RocksDB batch, or a
/// [`SortedBatch`](crate::sorted_batch::SortedBatch) that orders them first.
pub(crate) trait Writes {
    /// Sets `key` in the column family `cf`.
    fn put(&mut self, sm: &ArchiveStateMachine, cf: &'static str, key: &[u8], value: &[u8]);
}

impl Writes for WriteBatch {
    fn put(&mut self, sm: &ArchiveStateMachine, cf: &'static str, key: &[u8], value: &[u8]) {
        self.put_cf(sm.cf(cf), key, value);
    }
}

impl Writes for crate::sorted_batch::SortedBatch {
    fn put(&mut self, _sm: &ArchiveStateMachine, cf: &'static str, key: &[u8], value: &[u8]) {
        crate::sorted_batch::SortedBatch::put(self, cf, key, value);
    }
}
