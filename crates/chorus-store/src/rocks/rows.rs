//! Reading and writing rows of the replicated tables: prefix scans, live
//! values past their tombstones, and local writes that take fresh versions
//! and tell the replication listener.

use super::{CF_META, KeyValue, LiveItem, RocksStore, corrupt, io};
use chorus_core::hlc::Version;
use chorus_core::lww::Lww;
use chorus_core::replication::{ChangeOrigin, ReplItem, Table};
use chorus_core::store::StoreError;
use rocksdb::{ColumnFamily, Direction, IteratorMode, WriteBatch};

impl RocksStore {
    pub(crate) fn scan_prefix(&self, cf: &ColumnFamily, p: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(p, Direction::Forward)) {
            let (k, v) = item.map_err(io)?;
            if !k.starts_with(p) {
                break;
            }
            out.push((k, v));
        }
        Ok(out)
    }

    pub(crate) fn register(&self, t: Table, key: &[u8]) -> Result<Option<Lww>, StoreError> {
        match self.db.get_cf(self.tcf(t), key).map_err(io)? {
            Some(b) => Lww::decode(&b).map(Some).ok_or_else(|| corrupt(t.name())),
            None => Ok(None),
        }
    }

    pub(super) fn live(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.register(t, key)?.and_then(|r| r.value))
    }

    /// A live item as UTF-8 text.
    pub(super) fn live_string(&self, t: Table, key: &[u8], what: &str) -> Result<Option<String>, StoreError> {
        match self.live(t, key)? {
            Some(b) => String::from_utf8(b)
                .map(Some)
                .map_err(|_| StoreError::Corrupt(format!("{what} {}", String::from_utf8_lossy(key)))),
            None => Ok(None),
        }
    }

    /// Live items under a prefix as (key after the prefix, value) text.
    pub(super) fn scan_strings(&self, t: Table, p: &[u8]) -> Result<Vec<(String, String)>, StoreError> {
        self.scan_live(t, p)?
            .into_iter()
            .map(|(k, v)| {
                let key = String::from_utf8_lossy(&k[p.len()..]).into_owned();
                String::from_utf8(v)
                    .map(|v| (key, v))
                    .map_err(|_| corrupt(t.name()))
            })
            .collect()
    }

    /// Live items under a prefix (tombstones skipped).
    pub(super) fn scan_live(&self, t: Table, p: &[u8]) -> Result<Vec<LiveItem>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in self.scan_prefix(self.tcf(t), p)? {
            if let Some(value) = Lww::decode(&v).ok_or_else(|| corrupt(t.name()))?.value {
                out.push((k, value));
            }
        }
        Ok(out)
    }

    /// Writes local changes with fresh versions and tells the listener.
    ///
    /// Each new version is above the one it replaces: the clock first
    /// observes the stored versions. (The clock forgets what it learned
    /// from peers when the node restarts; without this, a write after a
    /// restart could carry an older version than the one it overwrites,
    /// and anti-entropy would quietly revert it. `chorus-sim` found this.)
    pub(super) fn write_local(
        &self,
        changes: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<Version, StoreError> {
        for (table, key, _) in &changes {
            if let Some(held) = self.register(*table, key)? {
                self.clock.observe(held.version.hlc);
            }
        }
        let mut batch = WriteBatch::default();
        let mut items = Vec::with_capacity(changes.len());
        let mut last = self.clock.tick();
        for (i, (table, key, value)) in changes.into_iter().enumerate() {
            if i > 0 {
                last = self.clock.tick();
            }
            let lww = Lww { version: last, value };
            batch.put_cf(self.tcf(table), &key, lww.encode());
            items.push(ReplItem { table, key, lww });
        }
        batch.put_cf(self.cf(CF_META), b"clock", last.to_bytes());
        let written = self.write_durable(batch);
        // After the write, and even if it failed (it may have landed).
        self.cache
            .invalidate(items.iter().map(|i| (i.table, i.key.as_slice())));
        written?;
        self.notify(&items, ChangeOrigin::Local);
        Ok(last)
    }

    pub(crate) fn notify(&self, items: &[ReplItem], origin: ChangeOrigin) {
        if items.is_empty() {
            return;
        }
        let l = self.listener.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(l) = l {
            l(items, origin);
        }
    }
}
