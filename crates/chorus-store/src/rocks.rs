//! [`RocksStore`]: the RocksDB-backed [`Store`], every item a versioned
//! last-writer-wins register so that nodes can replicate and converge.

use chorus_core::credentials::Credentials;
use chorus_core::hlc::{Clock, Version};
use chorus_core::lww::Lww;
use chorus_core::replication::{ChangeListener, Table};
use chorus_core::roster::RosterItem;
use chorus_core::store::{NewAccount, OfflineMessage, Roster, Store, StoreError};
use rocksdb::{ColumnFamily, DB, Options, WriteBatch};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

/// Column family for node-local bookkeeping (never replicated).
pub(crate) const CF_META: &str = "meta";
/// Column family for the durable per-peer stanza outbox.
pub(crate) const CF_OUTBOX: &str = "outbox";

/// A key and its value, as read from an iterator.
pub(crate) type KeyValue = (Box<[u8]>, Box<[u8]>);

/// A key and its live value.
type LiveItem = (Box<[u8]>, Vec<u8>);

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process (usually a running node) holds the database lock.
    #[error("the database at {0} is in use by another process (is the node running?)")]
    Locked(String),
    /// Any other RocksDB failure (permissions, corruption, full disk).
    #[error("cannot open the database at {path}: {reason}")]
    Other {
        /// The database directory.
        path: String,
        /// RocksDB's explanation.
        reason: String,
    },
}

/// The default of `cluster.max_clock_skew_ms`.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: u64 = chorus_core::config::DEFAULT_MAX_CLOCK_SKEW_MS;

/// The RocksDB store. Cheap to share behind an `Arc`.
pub struct RocksStore {
    pub(crate) db: DB,
    clock: Clock,
    /// Serializes read-modify-write sequences (quotas, merges).
    pub(crate) rmw: Mutex<()>,
    /// Serializes outbox sequence allocation: the next sequence per peer
    /// (loaded from disk on first use; staged writes may not be on disk yet).
    pub(crate) outbox_lock: Mutex<std::collections::HashMap<String, u64>>,
    /// Group commit of the writes that are acknowledged.
    pub(crate) durable: crate::durable::DurableWriter,
    /// Replicated items versioned further ahead of our clock are refused.
    pub(crate) max_clock_skew_ms: std::sync::atomic::AtomicU64,
    listener: RwLock<Option<ChangeListener>>,
    /// Block lists and present accounts, as every message looks them up.
    pub(crate) cache: cache::ReadCache,
}

fn key2(a: &str, b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b);
    k
}

fn prefix(user: &str) -> Vec<u8> {
    key2(user, b"")
}

pub(crate) fn io(e: rocksdb::Error) -> StoreError {
    StoreError::Io(e.into_string())
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("plain data serializes")
}

fn decode<T: DeserializeOwned>(what: &str, b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: bad register encoding"))
}

impl RocksStore {
    /// Opens (creating if needed) the database in `dir` for the node whose
    /// versions carry `node_tag` (see [`chorus_core::hlc::node_tag`]).
    pub fn open(dir: &Path, node_tag: u32) -> Result<RocksStore, OpenError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        opts.set_max_total_wal_size(256 * 1024 * 1024);
        let mut cfs: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
        cfs.extend([CF_META, CF_OUTBOX]);
        let db = DB::open_cf(&opts, dir, cfs).map_err(|e| {
            let reason = e.into_string();
            let path = dir.display().to_string();
            if reason.contains("lock") {
                OpenError::Locked(path)
            } else {
                OpenError::Other { path, reason }
            }
        })?;
        let store = RocksStore {
            db,
            clock: Clock::new(node_tag),
            rmw: Mutex::new(()),
            outbox_lock: Mutex::new(std::collections::HashMap::new()),
            durable: crate::durable::DurableWriter::default(),
            max_clock_skew_ms: std::sync::atomic::AtomicU64::new(DEFAULT_MAX_CLOCK_SKEW_MS),
            listener: RwLock::new(None),
            cache: cache::ReadCache::default(),
        };
        store.restore_clock();
        Ok(store)
    }

    /// Never issue a version below one already stored (clock went back).
    fn restore_clock(&self) {
        if let Ok(Some(b)) = self.db.get_cf(self.cf(CF_META), b"clock")
            && let Some(v) = Version::from_bytes(&b)
        {
            self.clock.observe(v.hlc);
        }
    }

    /// Writes `batch` and returns once it is on disk (group commit).
    pub(crate) fn write_durable(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.durable.write(&self.db, batch).map_err(StoreError::Io)
    }

    /// Registers the function told about every durable change.
    pub fn set_listener(&self, l: ChangeListener) {
        *self.listener.write().unwrap_or_else(|e| e.into_inner()) = Some(l);
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        self.db.cf_handle(name).expect("column family created at open")
    }

    pub(crate) fn tcf(&self, t: Table) -> &ColumnFamily {
        self.cf(t.name())
    }

    /// Flushes memtables and syncs the WAL; called on graceful shutdown.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true).map_err(io)?;
        for t in Table::ALL {
            self.db.flush_cf(self.tcf(t)).map_err(io)?;
        }
        self.db.flush_cf(self.cf(CF_META)).map_err(io)?;
        self.db.flush_cf(self.cf(CF_OUTBOX)).map_err(io)
    }

    /// Increments and returns this node's incarnation number.
    pub fn next_incarnation(&self) -> Result<u64, StoreError> {
        let cur = match self.db.get_cf(self.cf(CF_META), b"incarnation").map_err(io)? {
            Some(b) => u64::from_be_bytes(b.as_slice().try_into().map_err(|_| corrupt("incarnation"))?),
            None => 0,
        };
        let next = cur + 1;
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_META), b"incarnation", next.to_be_bytes());
        // Peers tell incarnations apart: one must never be reused.
        self.write_durable(b)?;
        Ok(next)
    }

    fn roster_version_of(&self, user: &str) -> Result<u64, StoreError> {
        let mut v = 0;
        for (_, b) in self.scan_prefix(self.tcf(Table::Rosters), &prefix(user))? {
            v = v.max(Lww::decode(&b).ok_or_else(|| corrupt("rosters"))?.version.hlc.0);
        }
        Ok(v)
    }
}

impl Store for RocksStore {
    fn create_account(&self, user: &str, creds: &Credentials) -> Result<(), StoreError> {
        let _g = self.rmw.lock().unwrap_or_else(|e| e.into_inner());
        if self.live(Table::Accounts, user.as_bytes())?.is_some() {
            return Err(StoreError::AccountExists(user.to_owned()));
        }
        self.write_local(vec![(
            Table::Accounts,
            user.as_bytes().to_vec(),
            Some(encode(creds)),
        )])?;
        Ok(())
    }

    fn create_accounts(&self, accounts: &[NewAccount]) -> Result<Vec<String>, StoreError> {
        let _g = self.rmw.lock().unwrap_or_else(|e| e.into_inner());
        let mut existing = Vec::new();
        let mut writes = Vec::with_capacity(accounts.len());
        let mut seen = std::collections::HashSet::new();
        for a in accounts {
            if !seen.insert(a.user.as_str()) || self.live(Table::Accounts, a.user.as_bytes())?.is_some() {
                existing.push(a.user.clone());
                continue;
            }
            writes.push((
                Table::Accounts,
                a.user.as_bytes().to_vec(),
                Some(encode(&a.creds)),
            ));
            if let Some(v) = &a.vcard {
                writes.push((
                    Table::Vcards,
                    a.user.as_bytes().to_vec(),
                    Some(v.as_bytes().to_vec()),
                ));
            }
            for (name, value) in &a.settings {
                writes.push((
                    Table::Settings,
                    key2(&a.user, name.as_bytes()),
                    Some(value.as_bytes().to_vec()),
                ));
            }
        }
        // One synced write for the lot (the caller bounds how many).
        if !writes.is_empty() {
            self.write_local(writes)?;
        }
        Ok(existing)
    }

    fn set_credentials(&self, user: &str, creds: &Credentials) -> Result<(), StoreError> {
        let _g = self.rmw.lock().unwrap_or_else(|e| e.into_inner());
        if self.live(Table::Accounts, user.as_bytes())?.is_none() {
            return Err(StoreError::NoSuchAccount(user.to_owned()));
        }
        let mut rows = vec![(Table::Accounts, user.as_bytes().to_vec(), Some(encode(creds)))];
        // A password set any way spends a one-time link still out.
        let link = key2(user, chorus_core::setup_link::SETUP_LINK_SETTING.as_bytes());
        if self.live(Table::Settings, &link)?.is_some_and(|v| !v.is_empty()) {
            rows.push((Table::Settings, link, Some(Vec::new())));
        }
        self.write_local(rows)?;
        Ok(())
    }

    fn credentials(&self, user: &str) -> Result<Option<Credentials>, StoreError> {
        match self.live(Table::Accounts, user.as_bytes())? {
            Some(b) => Ok(Some(decode("credentials", &b)?)),
            None => Ok(None),
        }
    }

    fn account_exists(&self, user: &str) -> Result<bool, StoreError> {
        if self.cache.account_present(user) {
            return Ok(true);
        }
        let since = self.cache.generation();
        let exists = self.live(Table::Accounts, user.as_bytes())?.is_some();
        if exists {
            self.cache.put_account(since, user);
        }
        Ok(exists)
    }

    fn remove_account(&self, user: &str) -> Result<bool, StoreError> {
        let _g = self.rmw.lock().unwrap_or_else(|e| e.into_inner());
        if self.live(Table::Accounts, user.as_bytes())?.is_none() {
            return Ok(false);
        }
        let mut changes = vec![(Table::Accounts, user.as_bytes().to_vec(), None)];
        if self.live(Table::Vcards, user.as_bytes())?.is_some() {
            changes.push((Table::Vcards, user.as_bytes().to_vec(), None));
        }
        let p = prefix(user);
        for t in [
            Table::Rosters,
            Table::Blocks,
            Table::Offline,
            Table::Settings,
            Table::PepNodes,
            Table::PepItems,
            Table::Uploads,
        ] {
            for (k, _) in self.scan_live(t, &p)? {
                changes.push((t, k.to_vec(), None));
            }
        }
        self.write_local(changes)?;
        Ok(true)
    }

    fn list_accounts(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .scan_live(Table::Accounts, b"")?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
            .collect())
    }

    fn roster(&self, user: &str) -> Result<Roster, StoreError> {
        let items = self
            .scan_live(Table::Rosters, &prefix(user))?
            .iter()
            .map(|(_, v)| decode("roster item", v))
            .collect::<Result<Vec<RosterItem>, _>>()?;
        Ok(Roster {
            version: self.roster_version_of(user)?,
            items,
        })
    }

    fn roster_item(&self, user: &str, contact: &str) -> Result<Option<RosterItem>, StoreError> {
        match self.live(Table::Rosters, &key2(user, contact.as_bytes()))? {
            Some(b) => Ok(Some(decode("roster item", &b)?)),
            None => Ok(None),
        }
    }

    fn put_roster_item(&self, user: &str, item: &RosterItem) -> Result<u64, StoreError> {
        let v = self.write_local(vec![(
            Table::Rosters,
            key2(user, item.jid.as_bytes()),
            Some(encode(item)),
        )])?;
        Ok(v.hlc.0)
    }

    fn remove_roster_item(&self, user: &str, contact: &str) -> Result<u64, StoreError> {
        let v = self.write_local(vec![(Table::Rosters, key2(user, contact.as_bytes()), None)])?;
        Ok(v.hlc.0)
    }

    fn vcard(&self, user: &str) -> Result<Option<String>, StoreError> {
        match self.live(Table::Vcards, user.as_bytes())? {
            Some(b) => String::from_utf8(b)
                .map(Some)
                .map_err(|_| StoreError::Corrupt(format!("vCard of {user}"))),
            None => Ok(None),
        }
    }

    fn set_vcard(&self, user: &str, xml: &str) -> Result<(), StoreError> {
        self.write_local(vec![(
            Table::Vcards,
            user.as_bytes().to_vec(),
            Some(xml.as_bytes().to_vec()),
        )])?;
        Ok(())
    }

    fn setting(&self, user: &str, name: &str) -> Result<Option<String>, StoreError> {
        self.live_string(Table::Settings, &key2(user, name.as_bytes()), "setting")
    }

    fn set_setting(&self, user: &str, name: &str, value: &str) -> Result<(), StoreError> {
        self.write_local(vec![(
            Table::Settings,
            key2(user, name.as_bytes()),
            Some(value.as_bytes().to_vec()),
        )])?;
        Ok(())
    }

    fn settings(&self, user: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.scan_strings(Table::Settings, &prefix(user))
    }

    fn room(&self, room: &str) -> Result<Option<String>, StoreError> {
        self.live_string(Table::Rooms, room.as_bytes(), "room")
    }

    fn rooms(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.scan_strings(Table::Rooms, b"")
    }

    fn set_room(&self, room: &str, config: Option<&str>) -> Result<(), StoreError> {
        self.write_local(vec![(
            Table::Rooms,
            room.as_bytes().to_vec(),
            config.map(|c| c.as_bytes().to_vec()),
        )])?;
        Ok(())
    }

    fn room_affiliations(&self, room: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.scan_strings(Table::RoomAffiliations, &prefix(room))
    }

    fn set_room_affiliation(
        &self,
        room: &str,
        jid: &str,
        affiliation: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write_local(vec![(
            Table::RoomAffiliations,
            key2(room, jid.as_bytes()),
            affiliation.map(|a| a.as_bytes().to_vec()),
        )])?;
        Ok(())
    }

    fn occupants(&self, room: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.scan_strings(Table::Occupants, &prefix(room))
    }

    fn set_occupant(&self, room: &str, nick: &str, occupant: Option<&str>) -> Result<(), StoreError> {
        self.write_local(vec![(
            Table::Occupants,
            key2(room, nick.as_bytes()),
            occupant.map(|o| o.as_bytes().to_vec()),
        )])?;
        Ok(())
    }

    fn pep_nodes(&self, user: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.scan_strings(Table::PepNodes, &prefix(user))
    }

    fn set_pep_node(&self, user: &str, node: &str, config: Option<&str>) -> Result<(), StoreError> {
        let mut changes = vec![(
            Table::PepNodes,
            key2(user, node.as_bytes()),
            config.map(|c| c.as_bytes().to_vec()),
        )];
        if config.is_none() {
            // Deleting a node deletes its items, in the same durable write.
            let items = key2(user, &key2(node, b""));
            for (k, _) in self.scan_live(Table::PepItems, &items)? {
                changes.push((Table::PepItems, k.to_vec(), None));
            }
        }
        self.write_local(changes)?;
        Ok(())
    }

    fn pep_items(&self, user: &str, node: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.scan_strings(Table::PepItems, &key2(user, &key2(node, b"")))
    }

    fn set_pep_items(
        &self,
        user: &str,
        node: &str,
        items: &[(String, Option<String>)],
    ) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let node_prefix = key2(node, b"");
        self.write_local(
            items
                .iter()
                .map(|(id, item)| {
                    let mut key = key2(user, &node_prefix);
                    key.extend_from_slice(id.as_bytes());
                    (Table::PepItems, key, item.as_ref().map(|i| i.as_bytes().to_vec()))
                })
                .collect(),
        )?;
        Ok(())
    }

    fn upload(&self, user: &str, token: &str) -> Result<Option<String>, StoreError> {
        self.live_string(Table::Uploads, &key2(user, token.as_bytes()), "upload")
    }

    fn uploads(&self, user: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.scan_strings(Table::Uploads, &prefix(user))
    }

    fn set_upload(&self, user: &str, token: &str, upload: Option<&str>) -> Result<(), StoreError> {
        self.write_local(vec![(
            Table::Uploads,
            key2(user, token.as_bytes()),
            upload.map(|u| u.as_bytes().to_vec()),
        )])?;
        Ok(())
    }

    fn blocklist(&self, user: &str) -> Result<Vec<String>, StoreError> {
        if let Some(list) = self.cache.blocklist(user) {
            return Ok(list.to_vec());
        }
        let since = self.cache.generation();
        let p = prefix(user);
        let list: Vec<String> = self
            .scan_live(Table::Blocks, &p)?
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[p.len()..]).into_owned())
            .collect();
        self.cache.put_blocklist(since, user, Arc::from(list.as_slice()));
        Ok(list)
    }

    fn set_blocked(&self, user: &str, jids: &[String], blocked: bool) -> Result<(), StoreError> {
        if jids.is_empty() {
            return Ok(());
        }
        let value = blocked.then(Vec::new);
        self.write_local(
            jids.iter()
                .map(|j| (Table::Blocks, key2(user, j.as_bytes()), value.clone()))
                .collect(),
        )?;
        Ok(())
    }

    fn clear_blocklist(&self, user: &str) -> Result<(), StoreError> {
        let changes: Vec<_> = self
            .scan_live(Table::Blocks, &prefix(user))?
            .into_iter()
            .map(|(k, _)| (Table::Blocks, k.to_vec(), None))
            .collect();
        if !changes.is_empty() {
            self.write_local(changes)?;
        }
        Ok(())
    }

    fn push_offline(&self, user: &str, msg: &OfflineMessage, max: usize) -> Result<(), StoreError> {
        let _g = self.rmw.lock().unwrap_or_else(|e| e.into_inner());
        if self.scan_live(Table::Offline, &prefix(user))?.len() >= max {
            return Err(StoreError::QuotaExceeded(format!(
                "{user} has {max} offline messages"
            )));
        }
        // The key embeds a fresh version, so concurrent pushes on different
        // nodes never collide and iteration order is arrival order.
        let id = self.clock.tick();
        self.write_local(vec![(
            Table::Offline,
            key2(user, &id.to_bytes()),
            Some(encode(msg)),
        )])?;
        Ok(())
    }

    fn take_offline(&self, user: &str) -> Result<Vec<OfflineMessage>, StoreError> {
        let _g = self.rmw.lock().unwrap_or_else(|e| e.into_inner());
        let entries = self.scan_live(Table::Offline, &prefix(user))?;
        let mut out = Vec::with_capacity(entries.len());
        let mut changes = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            changes.push((Table::Offline, k.to_vec(), None));
            match decode::<OfflineMessage>("offline message", &v) {
                Ok(m) => out.push(m),
                Err(e) => tracing::error!(user, error = %e, "dropping undecodable offline message"),
            }
        }
        if !changes.is_empty() {
            self.write_local(changes)?;
        }
        Ok(out)
    }

    fn offline_count(&self, user: &str) -> Result<usize, StoreError> {
        Ok(self.scan_live(Table::Offline, &prefix(user))?.len())
    }
}

mod cache;
mod replication;
mod rows;
#[cfg(test)]
mod tests;
