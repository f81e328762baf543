//! The compliance archive's storage under Raft (openraft 0.9): the Raft log
//! and vote ([`log_store::LogStore`]) and the archive state machine
//! ([`state_machine::ArchiveStateMachine`]), both in one RocksDB database.
//! Applying a batch inserts records idempotently by archive id and assigns
//! each a position in one cluster-wide order; snapshots let a new or lagging
//! node catch up.
//!
//! This crate is the storage half of the archive: the spool, the shipper,
//! the Raft network over the cluster's gRPC and the search indexes come
//! with the rest of the archive issue.

// openraft's storage traits fix the error type (`StorageError`, over 200
// bytes); our helpers return the same type rather than box and unbox it.
#![allow(clippy::result_large_err)]

pub mod apply;
pub mod chain;
pub mod codec;
pub mod db;
pub mod export;
pub mod log_store;
pub mod package;
pub mod query;
pub mod search;
pub mod snapshot;
pub mod spool;
pub mod state_machine;
#[cfg(test)]
mod testing;
pub mod types;
mod verify;
mod view;
