//! [`RocksStore`]: the RocksDB-backed [`Store`].

use chorus_core::credentials::Credentials;
use chorus_core::roster::RosterItem;
use chorus_core::store::{OfflineMessage, Roster, Store, StoreError};
use rocksdb::{ColumnFamily, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::Mutex;

const CF_ACCOUNTS: &str = "accounts";
const CF_ROSTERS: &str = "rosters";
const CF_META: &str = "meta";
const CF_VCARDS: &str = "vcards";
const CF_BLOCKS: &str = "blocks";
const CF_OFFLINE: &str = "offline";
const ALL_CFS: [&str; 6] = [CF_ACCOUNTS, CF_ROSTERS, CF_META, CF_VCARDS, CF_BLOCKS, CF_OFFLINE];

/// A key and its value, as read from an iterator.
type KeyValue = (Box<[u8]>, Box<[u8]>);

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

/// The RocksDB store. Cheap to share behind an `Arc`.
pub struct RocksStore {
    db: DB,
    /// Serializes read-modify-write sequences (roster versions, quotas).
    rmw: Mutex<()>,
}

fn key2(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

fn prefix(user: &str) -> Vec<u8> {
    let mut k = user.as_bytes().to_vec();
    k.push(0);
    k
}

fn io(e: rocksdb::Error) -> StoreError {
    StoreError::Io(e.into_string())
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("plain data serializes")
}

fn decode<T: DeserializeOwned>(what: &str, b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

impl RocksStore {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<RocksStore, OpenError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        opts.set_max_total_wal_size(256 * 1024 * 1024);
        let db = DB::open_cf(&opts, dir, ALL_CFS).map_err(|e| {
            let reason = e.into_string();
            let path = dir.display().to_string();
            if reason.contains("lock") {
                OpenError::Locked(path)
            } else {
                OpenError::Other { path, reason }
            }
        })?;
        Ok(RocksStore {
            db,
            rmw: Mutex::new(()),
        })
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db.cf_handle(name).expect("column family created at open")
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let wo = WriteOptions::default();
        self.db.write_opt(batch, &wo).map_err(io)
    }

    /// Flushes memtables and syncs the WAL; called on graceful shutdown.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true).map_err(io)?;
        for cf in ALL_CFS {
            self.db.flush_cf(self.cf(cf)).map_err(io)?;
        }
        Ok(())
    }

    fn scan_prefix(&self, cf: &str, p: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(cf), IteratorMode::From(p, Direction::Forward))
        {
            let (k, v) = item.map_err(io)?;
            if !k.starts_with(p) {
                break;
            }
            out.push((k, v));
        }
        Ok(out)
    }

    fn delete_prefix(&self, batch: &mut WriteBatch, cf: &str, p: &[u8]) -> Result<(), StoreError> {
        for (k, _) in self.scan_prefix(cf, p)? {
            batch.delete_cf(self.cf(cf), k);
        }
        Ok(())
    }

    fn roster_version(&self, user: &str) -> Result<u64, StoreError> {
        match self
            .db
            .get_cf(self.cf(CF_META), key2("rosterver", user))
            .map_err(io)?
        {
            Some(b) => {
                let arr: [u8; 8] = b
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt(format!("roster version of {user}")))?;
                Ok(u64::from_be_bytes(arr))
            }
            None => Ok(0),
        }
    }

    fn bump_roster(&self, batch: &mut WriteBatch, user: &str) -> Result<u64, StoreError> {
        let v = self.roster_version(user)? + 1;
        batch.put_cf(self.cf(CF_META), key2("rosterver", user), v.to_be_bytes());
        Ok(v)
    }

    fn next_offline_seq(&self, user: &str) -> Result<u64, StoreError> {
        match self
            .db
            .get_cf(self.cf(CF_META), key2("offlineseq", user))
            .map_err(io)?
        {
            Some(b) => {
                Ok(u64::from_be_bytes(b.as_slice().try_into().map_err(|_| {
                    StoreError::Corrupt(format!("offline sequence of {user}"))
                })?))
            }
            None => Ok(0),
        }
    }
}

impl Store for RocksStore {
    fn create_account(&self, user: &str, creds: &Credentials) -> Result<(), StoreError> {
        let _g = self.rmw.lock().unwrap_or_else(|e| e.into_inner());
        if self.db.get_cf(self.cf(CF_ACCOUNTS), user).map_err(io)?.is_some() {
            return Err(StoreError::AccountExists(user.to_owned()));
        }
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_ACCOUNTS), user, encode(creds));
        self.write(b)
    }

    fn set_credentials(&self, user: &str, creds: &Credentials) -> Result<(), StoreError> {
        let _g = self.rmw.lock().unwrap_or_else(|e| e.into_inner());
        if self.db.get_cf(self.cf(CF_ACCOUNTS), user).map_err(io)?.is_none() {
            return Err(StoreError::NoSuchAccount(user.to_owned()));
        }
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_ACCOUNTS), user, encode(creds));
        self.write(b)
    }

    fn credentials(&self, user: &str) -> Result<Option<Credentials>, StoreError> {
        match self.db.get_cf(self.cf(CF_ACCOUNTS), user).map_err(io)? {
            Some(b) => Ok(Some(decode("credentials", &b)?)),
            None => Ok(None),
        }
    }

    fn remove_account(&self, user: &str) -> Result<bool, StoreError> {
        let _g = self.rmw.lock().unwrap_or_else(|e| e.into_inner());
        if self.db.get_cf(self.cf(CF_ACCOUNTS), user).map_err(io)?.is_none() {
            return Ok(false);
        }
        let mut b = WriteBatch::default();
        b.delete_cf(self.cf(CF_ACCOUNTS), user);
        b.delete_cf(self.cf(CF_VCARDS), user);
        b.delete_cf(self.cf(CF_META), key2("rosterver", user));
        b.delete_cf(self.cf(CF_META), key2("offlineseq", user));
        let p = prefix(user);
        for cf in [CF_ROSTERS, CF_BLOCKS, CF_OFFLINE] {
            self.delete_prefix(&mut b, cf, &p)?;
        }
        self.write(b)?;
        Ok(true)
    }

    fn list_accounts(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_ACCOUNTS), IteratorMode::Start) {
            let (k, _) = item.map_err(io)?;
            out.push(String::from_utf8_lossy(&k).into_owned());
        }
        Ok(out)
    }

    fn roster(&self, user: &str) -> Result<Roster, StoreError> {
        let _g = self.rmw.lock().unwrap_or_else(|e| e.into_inner());
        let items = self
            .scan_prefix(CF_ROSTERS, &prefix(user))?
            .iter()
            .map(|(_, v)| decode("roster item", v))
            .collect::<Result<Vec<RosterItem>, _>>()?;
        Ok(Roster {
            version: self.roster_version(user)?,
            items,
        })
    }

    fn roster_item(&self, user: &str, contact: &str) -> Result<Option<RosterItem>, StoreError> {
        match self
            .db
            .get_cf(self.cf(CF_ROSTERS), key2(user, contact))
            .map_err(io)?
        {
            Some(b) => Ok(Some(decode("roster item", &b)?)),
            None => Ok(None),
        }
    }

    fn put_roster_item(&self, user: &str, item: &RosterItem) -> Result<u64, StoreError> {
        let _g = self.rmw.lock().unwrap_or_else(|e| e.into_inner());
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_ROSTERS), key2(user, &item.jid), encode(item));
        let v = self.bump_roster(&mut b, user)?;
        self.write(b)?;
        Ok(v)
    }

    fn remove_roster_item(&self, user: &str, contact: &str) -> Result<u64, StoreError> {
        let _g = self.rmw.lock().unwrap_or_else(|e| e.into_inner());
        let mut b = WriteBatch::default();
        b.delete_cf(self.cf(CF_ROSTERS), key2(user, contact));
        let v = self.bump_roster(&mut b, user)?;
        self.write(b)?;
        Ok(v)
    }

    fn vcard(&self, user: &str) -> Result<Option<String>, StoreError> {
        match self.db.get_cf(self.cf(CF_VCARDS), user).map_err(io)? {
            Some(b) => String::from_utf8(b)
                .map(Some)
                .map_err(|_| StoreError::Corrupt(format!("vCard of {user}"))),
            None => Ok(None),
        }
    }

    fn set_vcard(&self, user: &str, xml: &str) -> Result<(), StoreError> {
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_VCARDS), user, xml);
        self.write(b)
    }

    fn blocklist(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let p = prefix(user);
        Ok(self
            .scan_prefix(CF_BLOCKS, &p)?
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[p.len()..]).into_owned())
            .collect())
    }

    fn set_blocked(&self, user: &str, jids: &[String], blocked: bool) -> Result<(), StoreError> {
        let mut b = WriteBatch::default();
        for j in jids {
            if blocked {
                b.put_cf(self.cf(CF_BLOCKS), key2(user, j), b"");
            } else {
                b.delete_cf(self.cf(CF_BLOCKS), key2(user, j));
            }
        }
        self.write(b)
    }

    fn clear_blocklist(&self, user: &str) -> Result<(), StoreError> {
        let mut b = WriteBatch::default();
        self.delete_prefix(&mut b, CF_BLOCKS, &prefix(user))?;
        self.write(b)
    }

    fn push_offline(&self, user: &str, msg: &OfflineMessage, max: usize) -> Result<(), StoreError> {
        let _g = self.rmw.lock().unwrap_or_else(|e| e.into_inner());
        if self.scan_prefix(CF_OFFLINE, &prefix(user))?.len() >= max {
            return Err(StoreError::QuotaExceeded(format!(
                "{user} has {max} offline messages"
            )));
        }
        let seq = self.next_offline_seq(user)?;
        let mut key = prefix(user);
        key.extend_from_slice(&seq.to_be_bytes());
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_OFFLINE), key, encode(msg));
        b.put_cf(
            self.cf(CF_META),
            key2("offlineseq", user),
            (seq + 1).to_be_bytes(),
        );
        self.write(b)
    }

    fn take_offline(&self, user: &str) -> Result<Vec<OfflineMessage>, StoreError> {
        let _g = self.rmw.lock().unwrap_or_else(|e| e.into_inner());
        let entries = self.scan_prefix(CF_OFFLINE, &prefix(user))?;
        let mut b = WriteBatch::default();
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in &entries {
            b.delete_cf(self.cf(CF_OFFLINE), k);
            match decode::<OfflineMessage>("offline message", v) {
                Ok(m) => out.push(m),
                Err(e) => tracing::error!(user, error = %e, "dropping undecodable offline message"),
            }
        }
        self.write(b)?;
        Ok(out)
    }

    fn offline_count(&self, user: &str) -> Result<usize, StoreError> {
        Ok(self.scan_prefix(CF_OFFLINE, &prefix(user))?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_core::roster::Subscription;

    fn creds() -> Credentials {
        Credentials::from_password_with("pw", 16).expect("valid")
    }

    #[test]
    fn accounts_roundtrip_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = RocksStore::open(dir.path()).expect("open");
            s.create_account("alice", &creds()).expect("create");
            assert!(matches!(
                s.create_account("alice", &creds()),
                Err(StoreError::AccountExists(_))
            ));
            s.put_roster_item(
                "alice",
                &RosterItem {
                    jid: "bob@x".into(),
                    subscription: Subscription::Both,
                    ..Default::default()
                },
            )
            .expect("roster");
            s.push_offline(
                "alice",
                &OfflineMessage {
                    stamp_ms: 1,
                    xml: "<m1/>".into(),
                },
                10,
            )
            .expect("offline");
            s.push_offline(
                "alice",
                &OfflineMessage {
                    stamp_ms: 2,
                    xml: "<m2/>".into(),
                },
                10,
            )
            .expect("offline");
            s.set_blocked("alice", &["eve@x".into()], true).expect("block");
        }
        let s = RocksStore::open(dir.path()).expect("reopen");
        assert_eq!(s.list_accounts().expect("list"), vec!["alice".to_string()]);
        let r = s.roster("alice").expect("roster");
        assert_eq!(r.version, 1);
        assert_eq!(r.items[0].subscription, Subscription::Both);
        assert_eq!(s.blocklist("alice").expect("blocks"), vec!["eve@x".to_string()]);
        let off = s.take_offline("alice").expect("take");
        assert_eq!(
            off.iter().map(|m| m.xml.as_str()).collect::<Vec<_>>(),
            vec!["<m1/>", "<m2/>"]
        );
        assert!(s.take_offline("alice").expect("take again").is_empty());
    }

    #[test]
    fn second_open_reports_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _s = RocksStore::open(dir.path()).expect("open");
        assert!(matches!(RocksStore::open(dir.path()), Err(OpenError::Locked(_))));
    }

    #[test]
    fn offline_quota_and_ordering_past_255() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = RocksStore::open(dir.path()).expect("open");
        for i in 0..300u64 {
            s.push_offline(
                "u",
                &OfflineMessage {
                    stamp_ms: i,
                    xml: format!("<m{i}/>"),
                },
                300,
            )
            .expect("push");
        }
        assert!(matches!(
            s.push_offline(
                "u",
                &OfflineMessage {
                    stamp_ms: 0,
                    xml: String::new()
                },
                300
            ),
            Err(StoreError::QuotaExceeded(_))
        ));
        let got: Vec<u64> = s
            .take_offline("u")
            .expect("take")
            .iter()
            .map(|m| m.stamp_ms)
            .collect();
        assert_eq!(got, (0..300).collect::<Vec<_>>());
    }

    #[test]
    fn remove_account_removes_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = RocksStore::open(dir.path()).expect("open");
        s.create_account("a", &creds()).expect("create");
        s.create_account("ab", &creds()).expect("create");
        s.set_blocked("a", &["x@y".into()], true).expect("block");
        s.set_blocked("ab", &["z@y".into()], true).expect("block");
        assert!(s.remove_account("a").expect("remove"));
        assert!(s.blocklist("a").expect("list").is_empty());
        assert_eq!(s.blocklist("ab").expect("list"), vec!["z@y".to_string()]);
        assert!(!s.remove_account("a").expect("remove again"));
    }
}
