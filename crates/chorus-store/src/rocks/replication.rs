//! The replication side of [`RocksStore`]: merging peers' items (last
//! writer wins, within the clock-skew bound), and the digests and bucket
//! reads anti-entropy compares.

use super::{RocksStore, corrupt, io};
use chorus_core::lww::Lww;
use chorus_core::replication::{ChangeOrigin, DIGEST_BUCKETS, ReplItem, Table, bucket_of, item_digest};
use chorus_core::store::StoreError;
use rocksdb::{IteratorMode, WriteBatch};

impl RocksStore {
    /// Sets how far ahead of this node's clock a replicated item's version
    /// may be (`cluster.max_clock_skew_ms`).
    pub fn set_max_clock_skew_ms(&self, ms: u64) {
        self.max_clock_skew_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Merges items from a peer (last writer wins); returns those that
    /// changed something here.
    pub fn apply_remote(&self, items: &[ReplItem]) -> Result<Vec<ReplItem>, StoreError> {
        let _g = self.rmw.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = WriteBatch::default();
        let mut changed = Vec::new();
        let skew = self.max_clock_skew_ms.load(std::sync::atomic::Ordering::Relaxed);
        let mut refused = 0u64;
        for item in items {
            if !self.clock.admits(item.lww.version.hlc, skew) {
                refused += 1;
                continue;
            }
            self.clock.observe(item.lww.version.hlc);
            let current = self.register(item.table, &item.key)?;
            let (_, took) = Lww::apply(current, item.lww.clone());
            if took {
                batch.put_cf(self.tcf(item.table), &item.key, item.lww.encode());
                changed.push(item.clone());
            }
        }
        if !changed.is_empty() {
            // Peers still hold these; anti-entropy repairs a crash's loss.
            let written = self.db.write_opt(batch, &crate::durable::unsynced());
            self.cache
                .invalidate(changed.iter().map(|i| (i.table, i.key.as_slice())));
            written.map_err(io)?;
            self.notify(&changed, ChangeOrigin::Remote);
        }
        if refused > 0 {
            // Anti-entropy offers them again; once our clock has caught up
            // (a peer merely ahead) they are taken.
            metrics::counter!("chorus_cluster_clock_skew_refused_total", "source" => "replication")
                .increment(refused);
            tracing::warn!(
                refused,
                max_clock_skew_ms = skew,
                "refused replicated items versioned further ahead of this node's clock than allowed"
            );
        }
        Ok(changed)
    }

    /// One digest per anti-entropy bucket of a table.
    pub fn digests(&self, t: Table) -> Result<Vec<u64>, StoreError> {
        let mut d = vec![0u64; DIGEST_BUCKETS as usize];
        for item in self.db.iterator_cf(self.tcf(t), IteratorMode::Start) {
            let (k, v) = item.map_err(io)?;
            let lww = Lww::decode(&v).ok_or_else(|| corrupt(t.name()))?;
            d[bucket_of(&k) as usize] ^= item_digest(&k, &lww);
        }
        Ok(d)
    }

    /// Every item (tombstones included) in the given buckets of a table.
    pub fn items_in_buckets(&self, t: Table, buckets: &[u32]) -> Result<Vec<ReplItem>, StoreError> {
        let wanted: std::collections::HashSet<u32> = buckets.iter().copied().collect();
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.tcf(t), IteratorMode::Start) {
            let (k, v) = item.map_err(io)?;
            if wanted.contains(&bucket_of(&k)) {
                let lww = Lww::decode(&v).ok_or_else(|| corrupt(t.name()))?;
                out.push(ReplItem {
                    table: t,
                    key: k.to_vec(),
                    lww,
                });
            }
        }
        Ok(out)
    }
}
