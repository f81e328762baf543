//! The node's archive spool: every archive-worthy message is written here,
//! with its archive id, before the sender is acknowledged. The shipper
//! proposes spooled records to the Raft group in batches and removes them
//! once committed. A node cut off from the majority keeps spooling and
//! drains after the heal.

use crate::db::{CF_SPOOL, CF_SPOOL_META};
use crate::types::Record;
use rocksdb::{DB, IteratorMode, WriteBatch};
use std::sync::{Arc, Mutex};

pub(crate) const KEY_NEXT: &[u8] = b"next_seq";

/// Why the spool refused a record.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The disk refused the write.
    #[error("archive spool write failed: {0}")]
    Io(String),
    /// The spool holds its maximum; the cluster has not committed for long.
    #[error("archive spool is full ({0} records)")]
    Full(u64),
}

/// The spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    db: Arc<DB>,
    node_id: String,
    /// The next sequence to assign.
    next: Arc<Mutex<u64>>,
    /// Every sequence below this that was assigned is on disk (or failed
    /// to get there and never will).
    flushed_next: Arc<std::sync::atomic::AtomicU64>,
    /// Group commit of appends.
    durable: Arc<chorus_store::durable::DurableWriter>,
    depth: Arc<std::sync::atomic::AtomicU64>,
    /// No record below this sequence remains: reads start here instead of
    /// walking the tombstones of everything already shipped.
    low: Arc<std::sync::atomic::AtomicU64>,
    /// Serializes removals, so a record removed twice at once (the shipper
    /// and a strict-mode withdrawal) is counted once. Appenders never take
    /// it: a batch's lookups and deletes must not hold up the sessions
    /// spooling new records (they never touch a sequence being removed).
    removing: Arc<Mutex<()>>,
    records_max: u64,
}

impl Spool {
    pub(crate) fn new(db: Arc<DB>, node_id: &str, records_max: u64) -> Result<Spool, SpoolError> {
        let cf = db
            .cf_handle(CF_SPOOL_META)
            .expect("column family created at open");
        let next = match db
            .get_cf(cf, KEY_NEXT)
            .map_err(|e| SpoolError::Io(e.into_string()))?
        {
            Some(b) => u64::from_be_bytes(
                b.as_slice()
                    .try_into()
                    .map_err(|_| SpoolError::Io("bad sequence".into()))?,
            ),
            None => 1,
        };
        let cf = db.cf_handle(CF_SPOOL).expect("column family created at open");
        let depth = db.iterator_cf(cf, IteratorMode::Start).count() as u64;
        Ok(Spool {
            db,
            node_id: node_id.to_owned(),
            next: Arc::new(Mutex::new(next)),
            flushed_next: Arc::new(std::sync::atomic::AtomicU64::new(next)),
            durable: Arc::default(),
            depth: Arc::new(std::sync::atomic::AtomicU64::new(depth)),
            low: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            removing: Arc::default(),
            records_max,
        })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family created at open")
    }

    /// Assigns the record its archive id (`<node>-<sequence>`) and writes it
    /// durably; returns the id.
    pub fn append(&self, record: Record) -> Result<String, SpoolError> {
        self.append_seq(record).map(|(id, _)| id)
    }

    /// Whether the record with this sequence number still waits.
    pub fn contains(&self, seq: u64) -> Result<bool, SpoolError> {
        self.db
            .get_pinned_cf(self.cf(CF_SPOOL), seq.to_be_bytes())
            .map(|v| v.is_some())
            .map_err(|e| SpoolError::Io(e.into_string()))
    }

    /// Like [`Spool::append`], also returning the spool sequence number.
    ///
    /// Returns once the record is on disk. Sequence numbers are assigned
    /// and staged for the group commit under one lock, and the next one is
    /// written with each record, so none is reused after a crash.
    pub fn append_seq(&self, record: Record) -> Result<(String, u64), SpoolError> {
        let staged = self.stage(record)?;
        let written = self.durable.wait(&self.db, staged.ticket);
        self.settle(staged.seq, written)?;
        Ok((staged.id, staged.seq))
    }

    /// Assigns the record its id and stages it for the next group commit,
    /// without waiting: the record is on disk (and counts as spooled) once
    /// [`Spool::durable`] resolves. An async caller waits there without
    /// holding a thread.
    pub fn stage(&self, mut record: Record) -> Result<Staged, SpoolError> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let depth = self.len();
        if depth >= self.records_max {
            return Err(SpoolError::Full(depth));
        }
        let seq = *next;
        record.id = format!("{}-{seq}", self.node_id);
        let bytes = crate::codec::encode(&record).map_err(|e| SpoolError::Io(e.to_string()))?;
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_SPOOL), seq.to_be_bytes(), bytes);
        b.put_cf(self.cf(CF_SPOOL_META), KEY_NEXT, (seq + 1).to_be_bytes());
        *next = seq + 1;
        Ok(Staged {
            id: record.id,
            seq,
            ticket: self.durable.stage(b),
        })
    }

    /// Resolves once the staged record is on disk (or its write failed).
    pub fn durable(
        &self,
        staged: &Staged,
    ) -> impl std::future::Future<Output = Result<(), SpoolError>> + Send + 'static {
        let this = self.clone();
        let seq = staged.seq;
        let flushed = self.durable.flushed(self.db.clone(), staged.ticket);
        async move {
            let written = flushed.await;
            this.settle(seq, written)
        }
    }

    /// Books the outcome of a staged record's flush.
    fn settle(&self, seq: u64, written: Result<(), String>) -> Result<(), SpoolError> {
        // Flushes finish in order: everything below is settled either way.
        self.flushed_next
            .fetch_max(seq + 1, std::sync::atomic::Ordering::AcqRel);
        written.map_err(SpoolError::Io)?;
        self.depth.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Up to `limit` of the oldest spooled records with their sequence numbers.
    pub fn oldest(&self, limit: usize) -> Result<Vec<(u64, Record)>, SpoolError> {
        let mut out = Vec::new();
        // Read before the scan: whatever reaches the disk meanwhile is at
        // or above it (records still being flushed are too).
        let next_before = self.flushed_next.load(std::sync::atomic::Ordering::Acquire);
        let low = self.low.load(std::sync::atomic::Ordering::Relaxed);
        let from = low.to_be_bytes();
        for item in self.db.iterator_cf(
            self.cf(CF_SPOOL),
            IteratorMode::From(&from, rocksdb::Direction::Forward),
        ) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(|e| SpoolError::Io(e.into_string()))?;
            let seq = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| SpoolError::Io("bad key".into()))?,
            );
            let r: Record = crate::codec::decode(&v).map_err(|e| SpoolError::Io(e.to_string()))?;
            out.push((seq, r));
        }
        match out.first() {
            Some((first, _)) => self.low.fetch_max(*first, std::sync::atomic::Ordering::Relaxed),
            // Nothing waits: everything below the next sequence is gone.
            None => self
                .low
                .fetch_max(next_before, std::sync::atomic::Ordering::Relaxed),
        };
        Ok(out)
    }

    /// Drops committed (or withdrawn) records (point deletes: see the
    /// stanza outbox). Records already gone are skipped; the lookups are
    /// one batched read.
    pub fn remove(&self, seqs: &[u64]) -> Result<(), SpoolError> {
        let _g = self.removing.lock().unwrap_or_else(|e| e.into_inner());
        let cf = self.cf(CF_SPOOL);
        let keys: Vec<[u8; 8]> = seqs.iter().map(|s| s.to_be_bytes()).collect();
        let sorted = keys.windows(2).all(|w| w[0] < w[1]);
        let mut b = WriteBatch::default();
        let mut n = 0u64;
        for (k, found) in keys.iter().zip(self.db.batched_multi_get_cf(cf, &keys, sorted)) {
            if found.map_err(|e| SpoolError::Io(e.into_string()))?.is_some() {
                b.delete_cf(cf, k);
                n += 1;
            }
        }
        // A lost delete only ships the record again, which the archive skips.
        self.db
            .write_opt(b, &chorus_store::durable::unsynced())
            .map_err(|e| SpoolError::Io(e.into_string()))?;
        let _ = self.depth.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |d| Some(d.saturating_sub(n)),
        );
        Ok(())
    }

    /// Records waiting to be committed.
    pub fn len(&self) -> u64 {
        self.depth.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A record staged for the spool's next group commit.
#[derive(Debug)]
pub struct Staged {
    /// Its archive id.
    pub id: String,
    /// Its spool sequence number.
    pub seq: u64,
    ticket: chorus_core::group_commit::Ticket,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(dir: &std::path::Path) -> Spool {
        let (_log, _sm, spool) = crate::db::open_with_spool(&dir.join("archive"), "n", 100).expect("open");
        spool
    }

    fn rec(body: &str) -> Record {
        Record {
            body: Some(body.into()),
            ..Record::default()
        }
    }

    #[test]
    fn removing_counts_each_record_once_and_skips_what_is_gone() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let s = spool(tmp.path());
        let seqs: Vec<u64> = (0..5)
            .map(|i| s.append_seq(rec(&format!("m{i}"))).expect("append").1)
            .collect();
        assert_eq!(s.len(), 5);
        s.remove(&seqs[..2]).expect("remove");
        // Again, overlapping, unsorted, with a sequence never assigned.
        s.remove(&[seqs[3], seqs[1], seqs[0], 999]).expect("remove");
        assert_eq!(s.len(), 2, "each record counted once");
        let left: Vec<u64> = s.oldest(10).expect("read").into_iter().map(|(q, _)| q).collect();
        assert_eq!(left, [seqs[2], seqs[4]]);
    }

    #[test]
    fn spooling_does_not_wait_for_a_removal() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let s = spool(tmp.path());
        // A removal under way (its lookups and deletes) holds this lock.
        let _removing = s.removing.lock().expect("lock");
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = s.clone();
        std::thread::spawn(move || {
            let _ = tx.send(s2.append_seq(rec("during a removal")).map(|(_, q)| q).ok());
        });
        // Generous: an append takes one fsync; before the fix it waited for
        // the removal and never came back while the lock was held.
        let got = rx.recv_timeout(std::time::Duration::from_secs(30));
        assert!(matches!(got, Ok(Some(_))), "append blocked by a removal: {got:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn staged_records_count_once_durable_and_survive_a_reopen() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let s = spool(tmp.path());
        let staged: Vec<Staged> = (0..64)
            .map(|i| s.stage(rec(&format!("m{i}"))).expect("stage"))
            .collect();
        assert_eq!(s.len(), 0, "counted before it is on disk");
        let waits: Vec<_> = staged.iter().map(|st| s.durable(st)).collect();
        for w in waits {
            w.await.expect("durable");
        }
        assert_eq!(s.len(), 64);
        drop(s);
        let s = spool(tmp.path());
        let got: Vec<(u64, String)> = s
            .oldest(100)
            .expect("read")
            .into_iter()
            .map(|(q, r)| (q, r.id))
            .collect();
        let ids: Vec<(u64, String)> = staged.iter().map(|st| (st.seq, st.id.clone())).collect();
        assert_eq!(got, ids, "every staged record, in order, after a reopen");
        let next = s.stage(rec("after")).expect("stage");
        let last = staged.last().expect("staged").seq;
        assert!(next.seq > last, "no sequence reused after a reopen");
    }
}
