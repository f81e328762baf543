//! The durable per-peer stanza outbox and the inbound de-duplication marks.
//!
//! A stanza routed to a session on another node is written here first, under
//! `peer NUL big-endian sequence`, and deleted when the peer acknowledges it,
//! so a peer that is down or cut off receives it after the heal. The peer
//! remembers the highest sequence it handled from each origin and drops
//! repeats, which makes delivery exactly-once per stanza.

use crate::rocks::{CF_META, CF_OUTBOX, RocksStore, io};
use chorus_core::store::StoreError;
use rocksdb::WriteBatch;

fn seq_key(kind: &str, node: &str) -> Vec<u8> {
    format!("{kind}\0{node}").into_bytes()
}

fn entry_key(peer: &str, seq: u64) -> Vec<u8> {
    let mut k = peer.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn read_u64(b: Option<Vec<u8>>) -> Result<u64, StoreError> {
    match b {
        Some(b) => Ok(u64::from_be_bytes(
            b.as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt("sequence number".into()))?,
        )),
        None => Ok(0),
    }
}

impl RocksStore {
    /// Appends a record for `peer`; returns its sequence number (from 1).
    ///
    /// Returns once the record is on disk. Sequence numbers are assigned
    /// and staged for the group commit under one lock, so they reach the
    /// disk (and the link, which reads the disk) in order.
    pub fn outbox_push(&self, peer: &str, record: &[u8]) -> Result<u64, StoreError> {
        let (seq, ticket) = {
            let mut next = self.outbox_lock.lock().unwrap_or_else(|e| e.into_inner());
            let meta = self.cf(CF_META);
            let last = match next.get(peer) {
                Some(s) => *s,
                None => read_u64(self.db.get_cf(meta, seq_key("outseq", peer)).map_err(io)?)?,
            };
            let seq = last + 1;
            next.insert(peer.to_owned(), seq);
            let mut b = WriteBatch::default();
            b.put_cf(self.cf(CF_OUTBOX), entry_key(peer, seq), record);
            b.put_cf(meta, seq_key("outseq", peer), seq.to_be_bytes());
            (seq, self.durable.stage(b))
        };
        self.durable.wait(&self.db, ticket).map_err(StoreError::Io)?;
        Ok(seq)
    }

    /// Up to `limit` records for `peer` with sequence numbers above `after`.
    pub fn outbox_pending(
        &self,
        peer: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut p = peer.as_bytes().to_vec();
        p.push(0);
        let mut out = Vec::new();
        let start = entry_key(peer, after.saturating_add(1));
        let it = self.db.iterator_cf(
            self.cf(CF_OUTBOX),
            rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        for item in it {
            let (k, v) = item.map_err(io)?;
            if !k.starts_with(&p) || out.len() >= limit {
                break;
            }
            let seq = u64::from_be_bytes(
                k[p.len()..]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("outbox key".into()))?,
            );
            out.push((seq, v.to_vec()));
        }
        Ok(out)
    }

    /// Deletes every record for `peer` up to and including `upto`.
    ///
    /// Point deletes from the previous acknowledgement on, not a range
    /// delete: RocksDB iterators pay for every range tombstone in the
    /// memtable, which made each outbox read slower as traffic went by.
    pub fn outbox_ack(&self, peer: &str, upto: u64) -> Result<(), StoreError> {
        let _g = self.outbox_lock.lock().unwrap_or_else(|e| e.into_inner());
        let meta = self.cf(CF_META);
        let acked = read_u64(self.db.get_cf(meta, seq_key("outack", peer)).map_err(io)?)?;
        let sent = read_u64(self.db.get_cf(meta, seq_key("outseq", peer)).map_err(io)?)?;
        let upto = upto.min(sent);
        if upto <= acked {
            return Ok(());
        }
        let mut b = WriteBatch::default();
        for seq in acked + 1..=upto {
            b.delete_cf(self.cf(CF_OUTBOX), entry_key(peer, seq));
        }
        b.put_cf(meta, seq_key("outack", peer), upto.to_be_bytes());
        // A lost ack only resends what the peer drops as a repeat.
        self.db.write_opt(b, &crate::durable::unsynced()).map_err(io)
    }

    /// Records waiting for `peer`.
    pub fn outbox_len(&self, peer: &str) -> Result<u64, StoreError> {
        let (queued, acked) = self.outbox_marks(peer)?;
        Ok(queued.saturating_sub(acked))
    }

    /// The sequence of the last record queued for `peer` and of the last
    /// one it acknowledged: everything queued up to now is delivered once
    /// the second reaches today's first.
    pub fn outbox_marks(&self, peer: &str) -> Result<(u64, u64), StoreError> {
        let meta = self.cf(CF_META);
        let acked = read_u64(self.db.get_cf(meta, seq_key("outack", peer)).map_err(io)?)?;
        let queued = read_u64(self.db.get_cf(meta, seq_key("outseq", peer)).map_err(io)?)?;
        Ok((queued, acked))
    }

    /// The highest sequence handled from `origin`.
    pub fn inbox_mark(&self, origin: &str) -> Result<u64, StoreError> {
        read_u64(
            self.db
                .get_cf(self.cf(CF_META), seq_key("inseq", origin))
                .map_err(io)?,
        )
    }

    /// Remembers that everything up to `seq` from `origin` was handled.
    ///
    /// Synced before the caller acks the origin (which then deletes them).
    pub fn set_inbox_mark(&self, origin: &str, seq: u64) -> Result<(), StoreError> {
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_META), seq_key("inseq", origin), seq.to_be_bytes());
        self.write_durable(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_survives_reopen_and_acks_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = RocksStore::open(dir.path(), 1).expect("open");
            assert_eq!(s.outbox_push("b", b"one").expect("push"), 1);
            assert_eq!(s.outbox_push("b", b"two").expect("push"), 2);
            assert_eq!(s.outbox_push("c", b"x").expect("push"), 1);
            s.set_inbox_mark("c", 41).expect("mark");
        }
        let s = RocksStore::open(dir.path(), 1).expect("reopen");
        let p = s.outbox_pending("b", 0, 10).expect("pending");
        assert_eq!(p, vec![(1, b"one".to_vec()), (2, b"two".to_vec())]);
        assert_eq!(s.outbox_pending("b", 1, 10).expect("pending").len(), 1);
        s.outbox_ack("b", 1).expect("ack");
        assert_eq!(s.outbox_len("b").expect("len"), 1);
        assert_eq!(
            s.outbox_push("b", b"three").expect("push"),
            3,
            "sequence survives acks and restarts"
        );
        assert_eq!(s.outbox_len("c").expect("len"), 1);
        assert_eq!(s.inbox_mark("c").expect("mark"), 41);
        assert_eq!(s.inbox_mark("zzz").expect("mark"), 0);
    }
}
