//! The compliance archive, whole: its storage under Raft (openraft 0.9),
//! the Raft log and vote ([`log_store::LogStore`]) and the archive state
//! machine ([`state_machine::ArchiveStateMachine`]) in one RocksDB
//! database, with the hash chain, search index, exports and snapshots; the
//! Raft node with its spool shipper, membership changes, request handling
//! and handover ([`raft`]) over a byte transport the cluster provides; the
//! runtime that starts and stops it ([`runtime`]); and the compliance
//! operations behind the API ([`compliance`]). Applying a batch inserts
//! records idempotently by archive id and assigns each a position in one
//! cluster-wide order; snapshots let a new or lagging node catch up.

// openraft's storage traits fix the error type (`StorageError`, over 200
// bytes); our helpers return the same type rather than box and unbox it.
#![allow(clippy::result_large_err)]

pub mod apply;
pub mod background;
pub mod chain;
pub mod codec;
pub mod compliance;
pub mod db;
pub mod export;
mod layout;
pub mod log_store;
pub mod package;
pub mod query;
pub mod raft;
pub mod runtime;
pub mod search;
pub mod snapshot;
mod sorted_batch;
pub mod spool;
pub mod state_machine;
#[cfg(test)]
mod testing;
pub mod types;
mod verify;
mod view;
