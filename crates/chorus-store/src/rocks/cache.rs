//! A read cache for the two lookups every delivered message makes: the
//! recipient's block list (XEP-0191, a RocksDB prefix scan) and whether an
//! account exists (a point read). At 5,000 messages a second they were
//! about 5 % of a node's CPU (BENCHMARKS.md, "RocksDB's perf counters off,
//! and a read cache").
//!
//! Correctness comes first: a block must take effect for the very next
//! message, whether made here or replicated from a peer (once it arrives).
//! Both write paths of the replicated tables (`write_local` and
//! `apply_remote`) call [`ReadCache::invalidate`] after their write, and a
//! reader fills the cache only if no invalidation ran since it began
//! reading ([`ReadCache::generation`]). Without that check a reader that
//! read the old list just before a write could store it just after the
//! write's invalidation, and the stale list would stay.
//!
//! Only present accounts are cached, so lookups of names that do not
//! exist (which anyone can make up) cannot fill it. It holds at most
//! [`ENTRIES_MAX`] users; when full, it starts over empty.

use chorus_core::replication::Table;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Users whose lookups the cache keeps, per kind.
pub(crate) const ENTRIES_MAX: usize = 65_536;

#[derive(Default)]
struct Inner {
    generation: u64,
    blocks: HashMap<String, Arc<[String]>>,
    accounts: HashSet<String>,
}

/// Cached block lists and present accounts (see the module doc).
#[derive(Default)]
pub(crate) struct ReadCache {
    inner: Mutex<Inner>,
}

impl ReadCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taken before reading the database; hand it back to `put_*`.
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The cached block list of `user`.
    pub(crate) fn blocklist(&self, user: &str) -> Option<Arc<[String]>> {
        self.lock().blocks.get(user).cloned()
    }

    /// Keeps a block list read since `generation`, unless a write came
    /// in between.
    pub(crate) fn put_blocklist(&self, generation: u64, user: &str, list: Arc<[String]>) {
        let mut g = self.lock();
        if g.generation != generation {
            return;
        }
        if g.blocks.len() >= ENTRIES_MAX {
            g.blocks.clear();
        }
        g.blocks.insert(user.to_owned(), list);
    }

    /// Whether `user` is known to exist (`false`: not cached).
    pub(crate) fn account_present(&self, user: &str) -> bool {
        self.lock().accounts.contains(user)
    }

    /// Keeps that `user` exists, read since `generation`.
    pub(crate) fn put_account(&self, generation: u64, user: &str) {
        let mut g = self.lock();
        if g.generation != generation {
            return;
        }
        if g.accounts.len() >= ENTRIES_MAX {
            g.accounts.clear();
        }
        g.accounts.insert(user.to_owned());
    }

    /// Forgets what the written rows (table, key) change; call after the
    /// write, whether or not it succeeded.
    pub(crate) fn invalidate<'a>(&self, rows: impl IntoIterator<Item = (Table, &'a [u8])>) {
        let mut rows = rows
            .into_iter()
            .filter(|(t, _)| matches!(t, Table::Blocks | Table::Accounts))
            .peekable();
        if rows.peek().is_none() {
            return;
        }
        let mut g = self.lock();
        g.generation += 1;
        for (table, key) in rows {
            // Block rows are `user NUL jid`; account rows are `user`.
            let user = key.split(|b| *b == 0).next().unwrap_or_default();
            let user = String::from_utf8_lossy(user);
            if table == Table::Blocks {
                g.blocks.remove(user.as_ref());
            } else {
                g.accounts.remove(user.as_ref());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let c = ReadCache::default();
        let before = c.generation();
        // A write lands (and invalidates) while the reader holds the old list.
        c.invalidate([(Table::Blocks, b"alice\0eve@x".as_slice())]);
        c.put_blocklist(before, "alice", Arc::from([]));
        assert!(c.blocklist("alice").is_none(), "the stale list was kept");
        c.put_account(before, "alice");
        assert!(!c.account_present("alice"));
        // A read begun after the write is kept.
        let now = c.generation();
        c.put_blocklist(now, "alice", Arc::from(["eve@x".to_owned()]));
        assert_eq!(
            c.blocklist("alice").as_deref(),
            Some(["eve@x".to_owned()].as_slice())
        );
    }

    #[test]
    fn writes_to_other_tables_or_users_leave_entries_alone() {
        let c = ReadCache::default();
        let g = c.generation();
        c.put_blocklist(g, "alice", Arc::from([]));
        c.put_account(g, "alice");
        c.invalidate([(Table::Rosters, b"alice\0bob@x".as_slice())]);
        c.invalidate([(Table::Blocks, b"bob\0eve@x".as_slice())]);
        assert!(c.blocklist("alice").is_some());
        assert!(c.account_present("alice"));
        c.invalidate([(Table::Accounts, b"alice".as_slice())]);
        assert!(!c.account_present("alice"));
        assert!(c.blocklist("alice").is_some(), "only the account row changed");
    }

    #[test]
    fn the_cache_stays_bounded() {
        let c = ReadCache::default();
        let g = c.generation();
        for i in 0..ENTRIES_MAX + 10 {
            c.put_account(g, &format!("user{i}"));
            c.put_blocklist(g, &format!("user{i}"), Arc::from([]));
        }
        let inner = c.lock();
        assert!(inner.accounts.len() <= ENTRIES_MAX);
        assert!(inner.blocks.len() <= ENTRIES_MAX);
    }
}
