//! The archive state machine: applying a committed `Append` inserts each
//! record whose archive id is new at the next position of the archive
//! order, so every node holds the same records in the same order, once.

use crate::db::{CF_IDS, CF_RECORDS, CF_SM_META};
use crate::types::{Command, Record, Response, TypeConfig};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use rocksdb::{DB, IteratorMode, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::Arc;

const KEY_APPLIED: &[u8] = b"last_applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_NEXT: &[u8] = b"next_position";
const KEY_SNAPSHOT: &[u8] = b"snapshot";

type Result<T> = std::result::Result<T, StorageError<u64>>;

fn read_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::read_state_machine(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::write_state_machine(&e).into()
}

/// Everything a snapshot carries.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    records: Vec<Record>,
}

/// The stored current snapshot: its metadata and bytes.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

/// The archive state machine; cheap to clone (it is its own snapshot builder).
#[derive(Clone)]
pub struct ArchiveStateMachine {
    db: Arc<DB>,
}

impl ArchiveStateMachine {
    pub(crate) fn new(db: Arc<DB>) -> Result<ArchiveStateMachine> {
        Ok(ArchiveStateMachine { db })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family created at open")
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        match self.db.get_cf(self.cf(CF_SM_META), key).map_err(read_err)? {
            Some(b) => serde_json::from_slice(&b).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    fn next_position(&self) -> Result<u64> {
        Ok(self.get(KEY_NEXT)?.unwrap_or(0))
    }

    /// Record count and a SHA-256 digest over every record in archive order
    /// (position, id and content): equal digests on two sites prove they
    /// hold identical archives.
    pub fn digest(&self) -> Result<(u64, String)> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut n = 0u64;
        for item in self.db.iterator_cf(self.cf(CF_RECORDS), IteratorMode::Start) {
            let (k, v) = item.map_err(read_err)?;
            h.update((k.len() as u64).to_be_bytes());
            h.update(&k);
            h.update((v.len() as u64).to_be_bytes());
            h.update(&v);
            n += 1;
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok((n, hex))
    }

    /// Every record in archive order (for digests, tests and snapshots).
    pub fn records(&self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_RECORDS), IteratorMode::Start) {
            let (_, v) = item.map_err(read_err)?;
            out.push(serde_json::from_slice(&v).map_err(read_err)?);
        }
        Ok(out)
    }

    fn put_json<T: Serialize>(&self, batch: &mut WriteBatch, key: &[u8], v: &T) -> Result<()> {
        batch.put_cf(
            self.cf(CF_SM_META),
            key,
            serde_json::to_vec(v).map_err(write_err)?,
        );
        Ok(())
    }

    /// Inserts a record unless its id is already stored or was inserted
    /// earlier in the same batch (`pending`).
    fn insert(
        &self,
        batch: &mut WriteBatch,
        pending: &mut std::collections::HashSet<String>,
        next: &mut u64,
        r: &Record,
    ) -> Result<bool> {
        if pending.contains(&r.id)
            || self
                .db
                .get_cf(self.cf(CF_IDS), r.id.as_bytes())
                .map_err(read_err)?
                .is_some()
        {
            return Ok(false);
        }
        pending.insert(r.id.clone());
        batch.put_cf(
            self.cf(CF_RECORDS),
            next.to_be_bytes(),
            serde_json::to_vec(r).map_err(write_err)?,
        );
        batch.put_cf(self.cf(CF_IDS), r.id.as_bytes(), next.to_be_bytes());
        *next += 1;
        Ok(true)
    }

    /// Writes without forcing an fsync: the Raft log is synced, and after a
    /// crash openraft re-applies committed entries past the last applied
    /// id we persisted, which the idempotent apply absorbs.
    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.db
            .write_opt(batch, &WriteOptions::default())
            .map_err(write_err)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for ArchiveStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let last_applied: Option<LogId<u64>> = self.get(KEY_APPLIED)?;
        let membership: StoredMembership<u64, BasicNode> = self.get(KEY_MEMBERSHIP)?.unwrap_or_default();
        let body = SnapshotBody {
            last_applied,
            membership: membership.clone(),
            records: self.records()?,
        };
        let data = serde_json::to_vec(&body).map_err(read_err)?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, data.len()),
            None => format!("none-{}", data.len()),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let mut batch = WriteBatch::default();
        self.put_json(&mut batch, KEY_SNAPSHOT, &stored)?;
        self.write(batch)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
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
        let mut batch = WriteBatch::default();
        let mut next = self.next_position()?;
        let mut pending = std::collections::HashSet::new();
        let mut responses = Vec::new();
        let mut last = None;
        let mut membership = None;
        for e in entries {
            last = Some(e.log_id);
            let mut resp = Response::default();
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(Command::Append(records)) => {
                    for r in &records {
                        if self.insert(&mut batch, &mut pending, &mut next, r)? {
                            resp.inserted += 1;
                        }
                    }
                }
                EntryPayload::Membership(m) => membership = Some(StoredMembership::new(Some(e.log_id), m)),
            }
            responses.push(resp);
        }
        if let Some(l) = last {
            self.put_json(&mut batch, KEY_APPLIED, &l)?;
        }
        if let Some(m) = membership {
            self.put_json(&mut batch, KEY_MEMBERSHIP, &m)?;
        }
        self.put_json(&mut batch, KEY_NEXT, &next)?;
        self.write(batch)?;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let data = snapshot.into_inner();
        let body: SnapshotBody = serde_json::from_slice(&data)
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(Some(meta.signature()), &e)))?;
        let mut batch = WriteBatch::default();
        for cf in [CF_RECORDS, CF_IDS] {
            for item in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
                let (k, _) = item.map_err(read_err)?;
                batch.delete_cf(self.cf(cf), k);
            }
        }
        let mut next: u64 = 0;
        for r in &body.records {
            batch.put_cf(
                self.cf(CF_RECORDS),
                next.to_be_bytes(),
                serde_json::to_vec(r).map_err(write_err)?,
            );
            batch.put_cf(self.cf(CF_IDS), r.id.as_bytes(), next.to_be_bytes());
            next += 1;
        }
        self.put_json(&mut batch, KEY_NEXT, &next)?;
        match &meta.last_log_id {
            Some(l) => self.put_json(&mut batch, KEY_APPLIED, l)?,
            None => batch.delete_cf(self.cf(CF_SM_META), KEY_APPLIED),
        }
        self.put_json(&mut batch, KEY_MEMBERSHIP, &meta.last_membership)?;
        self.put_json(
            &mut batch,
            KEY_SNAPSHOT,
            &StoredSnapshot {
                meta: meta.clone(),
                data,
            },
        )?;
        self.write(batch)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        Ok(self.get::<StoredSnapshot>(KEY_SNAPSHOT)?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
