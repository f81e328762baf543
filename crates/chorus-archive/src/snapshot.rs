//! Archive snapshots as files, built, sent and installed as streams.
//!
//! Building reads one RocksDB snapshot (a consistent view while the state
//! machine keeps applying) row by row into a file in the snapshot
//! directory (`<data_dir>/archive-snapshots`, 0700), fsyncs it and renames
//! it into place; openraft then sends it to followers in chunks
//! (`snapshot_max_chunk_size`). A follower receives the chunks into an
//! unlinked temporary file, copies it under its own name, checks the whole
//! file (magic, every frame, the SHA-256 at the end) before touching the
//! archive, and installs it in bounded batches. An install is crash-safe:
//! a synced marker names the file before the first row is replaced, and a
//! node that finds the marker at start installs that file again. Memory
//! stays bounded by one batch ([`INSTALL_BATCH_BYTES`]), one chunk and
//! RocksDB's own buffers, whatever the archive's size.

mod stream;
#[cfg(test)]
mod tests;

use crate::db::{CF_AUDIT, CF_CHAIN, CF_IDS, CF_INDEX, CF_RECORDS, CF_SM_META};
use crate::state_machine::{
    ArchiveStateMachine, HOLD_PREFIX, KEY_APPLIED, KEY_CHAIN_HEAD, KEY_GENERATION, KEY_LIVE, KEY_MEMBERSHIP,
    KEY_NEXT, KEY_NEXT_AUDIT, KEY_RETENTION, PENDING_PREFIX, REMOVED_PREFIX, Result, be_u64, read_err,
    write_err,
};
use chorus_store::durable::{synced, unsynced};
use openraft::{BasicNode, SnapshotMeta, StorageError, StorageIOError};
use rocksdb::{DB, Direction, IteratorMode, SnapshotWithThreadMode, WriteBatch};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
pub(crate) use stream::{Frame, FrameReader, FrameWriter, Header};

/// The current snapshot: its metadata and file.
pub(crate) const KEY_SNAPSHOT_FILE: &[u8] = b"snapshot_file";
/// An install under way: the snapshot it installs.
pub(crate) const KEY_INSTALLING: &[u8] = b"installing_snapshot";
/// Where earlier versions kept the whole snapshot in one value.
pub(crate) const KEY_LEGACY_SNAPSHOT: &[u8] = b"snapshot";

/// Rows written per install batch, at most.
const INSTALL_BATCH_ROWS: usize = 4096;
/// Bytes per install batch, at most (about).
pub const INSTALL_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Buffer of the snapshot file's reader and writer.
const FILE_BUFFER: usize = 1024 * 1024;

/// A snapshot's metadata and the file that holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotRef {
    pub meta: SnapshotMeta<u64, BasicNode>,
    pub file: String,
}

/// The directory of snapshot files.
#[derive(Debug)]
pub struct SnapshotDir {
    dir: PathBuf,
    counter: AtomicU64,
}

/// Where the snapshots of the archive database at `db_dir` live.
pub fn snapshot_dir(db_dir: &Path) -> PathBuf {
    let name = db_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    db_dir.with_file_name(format!("{name}-snapshots"))
}

fn snap_err(meta: Option<&SnapshotMeta<u64, BasicNode>>, e: io::Error) -> StorageError<u64> {
    StorageIOError::write_snapshot(meta.map(|m| m.signature()), &e).into()
}

impl SnapshotDir {
    /// Opens (creating, owner-only) the directory; leftovers of builds and
    /// receipts a crash interrupted are removed.
    pub fn open(dir: &Path) -> io::Result<SnapshotDir> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "tmp") {
                std::fs::remove_file(&p)?;
            }
        }
        Ok(SnapshotDir {
            dir: dir.to_owned(),
            counter: AtomicU64::new(0),
        })
    }

    /// The file name of a snapshot id (a hash: ids come from peers).
    fn file_for(id: &str) -> String {
        let h = Sha256::digest(id.as_bytes());
        let hex = crate::chain::hex(&h[..16]);
        format!("{hex}.snap")
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn temp(&self, what: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{what}-{}-{n}.tmp", chorus_core::time::now_millis()))
    }

    /// Renames a finished, synced temporary file to `file` durably.
    fn publish(&self, tmp: &Path, file: &str) -> io::Result<()> {
        std::fs::rename(tmp, self.path(file))?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// An unlinked read-write file for a snapshot being received: the space
    /// is freed when the handle goes, whatever happens to the receipt.
    pub(crate) fn receiving(&self) -> io::Result<std::fs::File> {
        let p = self.temp("recv");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&p)?;
        std::fs::remove_file(&p)?;
        Ok(f)
    }

    /// Copies a received snapshot under its own name; returns the name.
    pub(crate) fn keep_received(&self, mut from: std::fs::File, id: &str) -> io::Result<String> {
        use std::io::Seek;
        from.seek(io::SeekFrom::Start(0))?;
        let tmp = self.temp("received");
        let mut out = BufWriter::with_capacity(FILE_BUFFER, std::fs::File::create(&tmp)?);
        io::copy(&mut BufReader::with_capacity(FILE_BUFFER, from), &mut out)?;
        let f = out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        let file = Self::file_for(id);
        self.publish(&tmp, &file)?;
        Ok(file)
    }

    /// Removes every snapshot file but `keep` (an open handle, e.g. one
    /// being sent to a follower, still reads the removed file to its end).
    fn keep_only(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name();
            if p.extension().is_some_and(|x| x == "snap")
                && name != keep
                && let Err(err) = std::fs::remove_file(&p)
            {
                tracing::warn!(path = %p.display(), error = %err, "cannot remove an old snapshot");
            }
        }
    }
}

fn snap_get<T: serde::de::DeserializeOwned>(
    sm: &ArchiveStateMachine,
    snap: &SnapshotWithThreadMode<'_, DB>,
    key: &[u8],
) -> Result<Option<T>> {
    match snap.get_cf(sm.cf(CF_SM_META), key).map_err(read_err)? {
        Some(b) => crate::codec::decode(&b).map(Some).map_err(read_err),
        None => Ok(None),
    }
}

/// The end of a key range covering every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The state machine's metadata rows kept under key prefixes.
const META_PREFIXES: [&[u8]; 3] = [HOLD_PREFIX, REMOVED_PREFIX, PENDING_PREFIX];

/// Above every key of the row column families (ids are UTF-8, positions
/// and sequences eight bytes, index keys start with a letter).
const ROWS_END: [u8; 32] = [0xff; 32];

impl ArchiveStateMachine {
    /// Writes the state as of now into a new snapshot file, makes the state
    /// machine's own rows durable (the log before the snapshot may be
    /// purged once openraft has it), and records it as current.
    pub(crate) fn write_snapshot(&self) -> Result<SnapshotRef> {
        let snap = self.db.snapshot();
        let header = Header {
            last_applied: snap_get(self, &snap, KEY_APPLIED)?,
            membership: snap_get(self, &snap, KEY_MEMBERSHIP)?.unwrap_or_default(),
            next: snap_get(self, &snap, KEY_NEXT)?.unwrap_or(0),
            next_audit: snap_get(self, &snap, KEY_NEXT_AUDIT)?.unwrap_or(0),
            retention: snap_get(self, &snap, KEY_RETENTION)?.unwrap_or_default(),
            chain: snap_get(self, &snap, KEY_CHAIN_HEAD)?.unwrap_or_default(),
            live: snap_get(self, &snap, KEY_LIVE)?.unwrap_or(0),
        };
        let tmp = self.snapshots.temp("build");
        let out = BufWriter::with_capacity(
            FILE_BUFFER,
            std::fs::File::create(&tmp).map_err(|e| snap_err(None, e))?,
        );
        let mut w = FrameWriter::new(out).map_err(|e| snap_err(None, e))?;
        w.frame(&Frame::Header(header.clone()))
            .map_err(|e| snap_err(None, e))?;
        self.write_rows(&snap, &mut w)?;
        let (out, sum, bytes) = w.finish().map_err(|e| snap_err(None, e))?;
        let f = out.into_inner().map_err(|e| snap_err(None, e.into_error()))?;
        f.sync_all().map_err(|e| snap_err(None, e))?;
        let tag = crate::chain::hex(&sum[..6]);
        let snapshot_id = match header.last_applied {
            Some(l) => format!("{}-{}-{tag}", l.leader_id, l.index),
            None => format!("none-{tag}"),
        };
        let meta = SnapshotMeta {
            last_log_id: header.last_applied,
            last_membership: header.membership,
            snapshot_id,
        };
        let file = SnapshotDir::file_for(&meta.snapshot_id);
        self.snapshots
            .publish(&tmp, &file)
            .map_err(|e| snap_err(Some(&meta), e))?;
        self.flush_rows()?;
        let r = SnapshotRef { meta, file };
        self.record_current(&r, WriteBatch::default())?;
        tracing::info!(
            snapshot = %r.meta.snapshot_id,
            bytes,
            "archive snapshot built"
        );
        Ok(r)
    }

    fn write_rows<W: Write>(
        &self,
        snap: &SnapshotWithThreadMode<'_, DB>,
        w: &mut FrameWriter<W>,
    ) -> Result<()> {
        let e = |e: io::Error| snap_err(None, e);
        for item in snap.iterator_cf(self.cf(CF_RECORDS), IteratorMode::Start) {
            let (k, v) = item.map_err(read_err)?;
            let r = crate::codec::decode(&v).map_err(read_err)?;
            w.frame(&Frame::Record(be_u64(&k)?, r)).map_err(e)?;
        }
        for item in snap.iterator_cf(self.cf(CF_IDS), IteratorMode::Start) {
            let (k, v) = item.map_err(read_err)?;
            w.frame(&Frame::Id(
                String::from_utf8_lossy(&k).into_owned(),
                crate::layout::id_position(&v)?,
            ))
            .map_err(e)?;
        }
        for item in snap.iterator_cf(self.cf(CF_AUDIT), IteratorMode::Start) {
            let (k, v) = item.map_err(read_err)?;
            let a = crate::codec::decode(&v).map_err(read_err)?;
            w.frame(&Frame::Audit(be_u64(&k)?, a)).map_err(e)?;
        }
        for item in snap.iterator_cf(self.cf(CF_CHAIN), IteratorMode::Start) {
            let (k, v) = item.map_err(read_err)?;
            let l = crate::codec::decode(&v).map_err(read_err)?;
            w.frame(&Frame::Chain(be_u64(&k)?, l)).map_err(e)?;
        }
        for prefix in META_PREFIXES {
            let mode = IteratorMode::From(prefix, Direction::Forward);
            for item in snap.iterator_cf(self.cf(CF_SM_META), mode) {
                let (k, v) = item.map_err(read_err)?;
                if !k.starts_with(prefix) {
                    break;
                }
                let f = if prefix == HOLD_PREFIX {
                    Frame::Hold(crate::codec::decode(&v).map_err(read_err)?)
                } else if prefix == PENDING_PREFIX {
                    Frame::Pending(crate::codec::decode(&v).map_err(read_err)?)
                } else {
                    Frame::Removed(be_u64(&k[prefix.len()..])?)
                };
                w.frame(&f).map_err(e)?;
            }
        }
        Ok(())
    }

    /// Writes `batch` and records `r` as the current snapshot with it,
    /// unless a newer one is current already; removes older snapshot files.
    fn record_current(&self, r: &SnapshotRef, mut batch: WriteBatch) -> Result<()> {
        let _one_at_a_time = self.snapshot_lock.lock().unwrap_or_else(|e| e.into_inner());
        let newer_is_current = self
            .get::<SnapshotRef>(KEY_SNAPSHOT_FILE)?
            .is_some_and(|cur| cur.meta.last_log_id > r.meta.last_log_id);
        if !newer_is_current {
            self.put_json(&mut batch, KEY_SNAPSHOT_FILE, r)?;
            batch.delete_cf(self.cf(CF_SM_META), KEY_LEGACY_SNAPSHOT);
        }
        self.db.write_opt(batch, &synced()).map_err(write_err)?;
        if !newer_is_current {
            self.snapshots.keep_only(&r.file);
        }
        Ok(())
    }

    /// The current snapshot and its path, if there is one whose file exists.
    pub(crate) fn current_snapshot(&self) -> Result<Option<(SnapshotRef, PathBuf)>> {
        let Some(r) = self.get::<SnapshotRef>(KEY_SNAPSHOT_FILE)? else {
            return Ok(None);
        };
        let p = self.snapshots.path(&r.file);
        if !p.exists() {
            tracing::error!(file = %p.display(), "the current archive snapshot's file is missing; a new one will be built");
            return Ok(None);
        }
        Ok(Some((r, p)))
    }

    /// Flushes the memtables of the state machine's column families, so
    /// rows written without an fsync of their own are on disk.
    fn flush_rows(&self) -> Result<()> {
        let opts = rocksdb::FlushOptions::default();
        for cf in [CF_RECORDS, CF_IDS, CF_INDEX, CF_AUDIT, CF_CHAIN, CF_SM_META] {
            self.db.flush_cf_opt(self.cf(cf), &opts).map_err(write_err)?;
        }
        Ok(())
    }

    /// Checks a whole snapshot file against `meta`; returns its header.
    fn verify_file(&self, path: &Path, meta: &SnapshotMeta<u64, BasicNode>) -> Result<Header> {
        let bad = |e: io::Error| -> StorageError<u64> {
            StorageIOError::read_snapshot(Some(meta.signature()), &e).into()
        };
        let f = std::fs::File::open(path).map_err(bad)?;
        let mut r = FrameReader::new(BufReader::with_capacity(FILE_BUFFER, f)).map_err(bad)?;
        let Some(Frame::Header(h)) = r.next_frame().map_err(bad)? else {
            return Err(bad(io::Error::other(
                "the snapshot does not start with its header",
            )));
        };
        if h.last_applied != meta.last_log_id {
            return Err(bad(io::Error::other(format!(
                "the snapshot holds the state at {:?}, not at {:?}",
                h.last_applied, meta.last_log_id
            ))));
        }
        while let Some(f) = r.next_frame().map_err(bad)? {
            if matches!(f, Frame::Header(_)) {
                return Err(bad(io::Error::other("the snapshot has a second header")));
            }
        }
        Ok(h)
    }

    /// Replaces the whole state machine with the snapshot in `file`.
    pub(crate) fn install_file(&self, meta: &SnapshotMeta<u64, BasicNode>, file: &str) -> Result<()> {
        let path = self.snapshots.path(file);
        let header = self.verify_file(&path, meta)?;
        let r = SnapshotRef {
            meta: meta.clone(),
            file: file.to_owned(),
        };
        let mut batch = WriteBatch::default();
        self.put_json(&mut batch, KEY_INSTALLING, &r)?;
        for cf in [CF_RECORDS, CF_IDS, CF_INDEX, CF_AUDIT, CF_CHAIN] {
            batch.delete_range_cf(self.cf(cf), [].as_slice(), ROWS_END.as_slice());
        }
        for prefix in META_PREFIXES {
            batch.delete_range_cf(self.cf(CF_SM_META), prefix, prefix_end(prefix).as_slice());
        }
        self.db.write_opt(batch, &synced()).map_err(write_err)?;
        self.load_rows(&path, meta)?;
        self.flush_rows()?;
        let mut batch = WriteBatch::default();
        self.put_json(&mut batch, KEY_RETENTION, &header.retention)?;
        self.put_json(&mut batch, KEY_NEXT, &header.next)?;
        self.put_json(&mut batch, KEY_NEXT_AUDIT, &header.next_audit)?;
        self.put_json(&mut batch, KEY_CHAIN_HEAD, &header.chain)?;
        self.put_json(&mut batch, KEY_LIVE, &header.live)?;
        self.put_json(&mut batch, KEY_GENERATION, &(self.generation()? + 1))?;
        match &meta.last_log_id {
            Some(l) => self.put_json(&mut batch, KEY_APPLIED, l)?,
            None => batch.delete_cf(self.cf(CF_SM_META), KEY_APPLIED),
        }
        self.put_json(&mut batch, KEY_MEMBERSHIP, &meta.last_membership)?;
        batch.delete_cf(self.cf(CF_SM_META), KEY_INSTALLING);
        self.record_current(&r, batch)?;
        self.tell_removed();
        tracing::info!(snapshot = %meta.snapshot_id, records = header.next, "archive snapshot installed");
        Ok(())
    }

    /// Writes a verified snapshot's rows in bounded batches.
    fn load_rows(&self, path: &Path, meta: &SnapshotMeta<u64, BasicNode>) -> Result<()> {
        let bad = |e: io::Error| -> StorageError<u64> {
            StorageIOError::read_snapshot(Some(meta.signature()), &e).into()
        };
        let f = std::fs::File::open(path).map_err(bad)?;
        let mut r = FrameReader::new(BufReader::with_capacity(FILE_BUFFER, f)).map_err(bad)?;
        let mut batch = WriteBatch::default();
        let mut rows = 0;
        while let Some(frame) = r.next_frame().map_err(bad)? {
            match frame {
                Frame::Header(_) => {}
                Frame::Record(pos, rec) => self.put_record(&mut batch, pos, &rec)?,
                Frame::Id(id, pos) => batch.put_cf(self.cf(CF_IDS), id.as_bytes(), pos.to_be_bytes()),
                Frame::Audit(seq, a) => batch.put_cf(
                    self.cf(CF_AUDIT),
                    seq.to_be_bytes(),
                    crate::codec::encode(&a).map_err(write_err)?,
                ),
                Frame::Hold(h) => self.put_json(&mut batch, &[HOLD_PREFIX, h.id.as_bytes()].concat(), &h)?,
                Frame::Removed(id) => batch.put_cf(
                    self.cf(CF_SM_META),
                    [REMOVED_PREFIX, &id.to_be_bytes()].concat(),
                    [],
                ),
                Frame::Chain(n, l) => {
                    if l.kind == crate::chain::LinkKind::Record {
                        batch.put_cf(self.cf(CF_INDEX), crate::layout::link_key(l.at), n.to_be_bytes());
                    }
                    batch.put_cf(
                        self.cf(CF_CHAIN),
                        n.to_be_bytes(),
                        crate::codec::encode(&l).map_err(write_err)?,
                    )
                }
                Frame::Pending(p) => {
                    self.put_json(&mut batch, &[PENDING_PREFIX, p.id.as_bytes()].concat(), &p)?
                }
            }
            rows += 1;
            if rows >= INSTALL_BATCH_ROWS || batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
                self.db
                    .write_opt(std::mem::take(&mut batch), &unsynced())
                    .map_err(write_err)?;
                rows = 0;
            }
        }
        self.db.write_opt(batch, &unsynced()).map_err(write_err)
    }

    /// Finishes an install a crash interrupted (called at open, before
    /// openraft reads the state).
    pub(crate) fn resume_interrupted_install(&self) -> Result<()> {
        let Some(r) = self.get::<SnapshotRef>(KEY_INSTALLING)? else {
            return Ok(());
        };
        tracing::warn!(snapshot = %r.meta.snapshot_id, "an archive snapshot install was interrupted; installing it again");
        self.install_file(&r.meta, &r.file)
    }
}
