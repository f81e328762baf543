//! The Raft type configuration and the archive's commands and records.

use serde::{Deserialize, Serialize};
use std::io::Cursor;

/// One archived message (or subscription/blocking event).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Stable archive id (XEP-0359 stanza-id): origin node and sequence.
    pub id: String,
    /// Sender, full JID.
    pub from: String,
    /// Recipient, full or bare JID.
    pub to: String,
    /// The sender's site.
    pub site: String,
    /// Server timestamp, milliseconds since the epoch.
    pub stamp_ms: u64,
    /// The full stanza.
    pub xml: String,
}

/// A command proposed to the archive's Raft group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Append a batch of records shipped from one node's spool.
    Append(Vec<Record>),
}

/// What applying a command produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Records newly inserted (duplicates by archive id are skipped).
    pub inserted: u32,
}

openraft::declare_raft_types!(
    /// The archive's Raft types.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);
