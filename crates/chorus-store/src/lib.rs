//! Durable per-user storage on RocksDB: the production implementation of
//! [`chorus_core::store::Store`].
//!
//! Column families: `accounts` (user → credentials JSON), `rosters`
//! (user NUL contact → item JSON), `meta` (`rosterver` NUL user → u64),
//! `vcards` (user → XML), `blocks` (user NUL jid → empty) and `offline`
//! (user NUL big-endian sequence → message JSON, so iteration is arrival
//! order). Every write a client or peer is told succeeded is synced before
//! the answer (group commit, [`durable`]), so it survives `kill -9` and
//! power loss; replicated items from peers are written unsynced (peers
//! still hold them, and anti-entropy repairs what a crash lost).
//!
//! Every item is a last-writer-wins register on a hybrid logical clock
//! (`chorus_core::lww`), so replicas converge; `outbox` and `meta` hold
//! node-local bookkeeping that is never replicated.

pub mod durable;
pub mod files;
mod outbox;
mod rocks;

pub use files::FileBlobs;
pub use rocks::{OpenError, RocksStore};

/// Turns off RocksDB's per-thread performance counters on the calling
/// thread. They are on by default (`kEnableCount`): every key compare in a
/// memtable insert then bumps a thread-local counter, and Debian's shared
/// `librocksdb` reaches thread-locals through `__tls_get_addr`. Chorus
/// never reads the counters, and in the archive's apply they cost about a
/// tenth of its CPU (BENCHMARKS.md, "RocksDB's perf counters off"). Call it on every
/// thread that writes to RocksDB (runtime workers, blocking threads, the
/// archive's lanes, a benchmark's applying thread); the setting is the
/// thread's own.
pub fn quiet_perf_counters() {
    rocksdb::perf::set_perf_stats(rocksdb::perf::PerfStatsLevel::Disable);
}
