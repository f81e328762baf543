//! Durable per-user storage on RocksDB: the production implementation of
//! [`chorus_core::store::Store`].
//!
//! Column families: `accounts` (user → credentials JSON), `rosters`
//! (user NUL contact → item JSON), `meta` (`rosterver` NUL user → u64),
//! `vcards` (user → XML), `blocks` (user NUL jid → empty) and `offline`
//! (user NUL big-endian sequence → message JSON, so iteration is arrival
//! order). Every write goes through the write-ahead log, so an acknowledged
//! change survives `kill -9` of the process.

mod rocks;

pub use rocks::{OpenError, RocksStore};
