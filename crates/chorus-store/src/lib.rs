//! Durable per-user storage on RocksDB: the production implementation of
//! [`chorus_core::store::Store`].
//!
//! Column families: `accounts` (user → credentials JSON), `rosters`
//! (user NUL contact → item JSON), `meta` (`rosterver` NUL user → u64),
//! `vcards` (user → XML), `blocks` (user NUL jid → empty) and `offline`
//! (user NUL big-endian sequence → message JSON, so iteration is arrival
//! order). Every write goes through the write-ahead log, so an acknowledged
//! change survives `kill -9` of the process.
//!
//! Every item is a last-writer-wins register on a hybrid logical clock
//! (`chorus_core::lww`), so replicas converge; `outbox` and `meta` hold
//! node-local bookkeeping that is never replicated.

mod outbox;
mod rocks;

pub use rocks::{OpenError, RocksStore};
