//! The Raft type configuration and the archive's commands: record batches
//! and the compliance actions (holds, retention, purges, audit entries)
//! that every site must apply identically.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use chorus_core::archive::{Record, RecordKind};

/// A legal hold: records it covers are never purged while it is active.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Unique id, chosen by whoever places the hold.
    pub id: String,
    /// Why (case reference).
    pub reason: String,
    /// Users (bare JIDs) whose records it covers.
    #[serde(default)]
    pub users: Vec<String>,
    /// Rooms (bare JIDs) whose records it covers.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// Covers records from this time on (ms), if set.
    #[serde(default)]
    pub start_ms: Option<u64>,
    /// Covers records up to this time (ms), if set.
    #[serde(default)]
    pub end_ms: Option<u64>,
    /// Who placed it.
    pub created_by: String,
    /// When it was placed (ms).
    pub created_ms: u64,
    /// Who released it and when, once released.
    #[serde(default)]
    pub released: Option<(String, u64)>,
}

impl Hold {
    /// Whether this hold is active and covers the record.
    pub fn covers(&self, r: &Record) -> bool {
        if self.released.is_some() {
            return false;
        }
        if self.start_ms.is_some_and(|s| r.stamp_ms < s) || self.end_ms.is_some_and(|e| r.stamp_ms > e) {
            return false;
        }
        let parts = r.participants();
        self.users.iter().any(|u| parts.contains(u))
            || r.room.as_ref().is_some_and(|room| self.rooms.contains(room))
    }
}

/// How long records are kept, in days; `None` keeps them forever.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// The default for every record.
    #[serde(default)]
    pub default_days: Option<u32>,
    /// Per user (bare JID): applies to every record the user takes part in.
    #[serde(default)]
    pub users: BTreeMap<String, u32>,
    /// Per room (bare JID).
    #[serde(default)]
    pub rooms: BTreeMap<String, u32>,
}

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;

impl Retention {
    /// How many days a record is kept: the longest of the policies that
    /// name its participants or room, else the default; `None` is forever.
    pub fn days_for(&self, r: &Record) -> Option<u32> {
        let mut specific: Vec<u32> = r
            .participants()
            .iter()
            .filter_map(|p| self.users.get(p).copied())
            .collect();
        if let Some(d) = r.room.as_ref().and_then(|room| self.rooms.get(room)) {
            specific.push(*d);
        }
        match specific.into_iter().max() {
            Some(d) => Some(d),
            None => self.default_days,
        }
    }

    /// Whether the record is past its retention at `now_ms`.
    pub fn expired(&self, r: &Record, now_ms: u64) -> bool {
        self.days_for(r)
            .is_some_and(|d| r.stamp_ms.saturating_add(u64::from(d) * DAY_MS) < now_ms)
    }

    /// The shortest retention any policy gives (records younger than this
    /// are never purged), or `None` if nothing ever expires.
    pub fn shortest_days(&self) -> Option<u32> {
        self.default_days
            .into_iter()
            .chain(self.users.values().copied())
            .chain(self.rooms.values().copied())
            .min()
    }
}

/// One entry of the audit trail.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (ms).
    pub at_ms: u64,
    /// Who (API token name or CLI user).
    pub actor: String,
    /// Their role.
    pub role: String,
    /// What: `search`, `conversation`, `export`, `hold.create`, ...
    pub action: String,
    /// The parameters, as JSON text.
    pub detail: String,
    /// The node that served the action.
    pub node: String,
}

/// A command proposed to the archive's Raft group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Append a batch of records shipped from one node's spool.
    Append(Vec<Record>),
    /// Place a legal hold (replaces a hold with the same id).
    PlaceHold(Hold),
    /// Release a hold.
    ReleaseHold {
        /// The hold.
        id: String,
        /// Who released it.
        by: String,
        /// When (ms).
        at_ms: u64,
    },
    /// Replace the retention policy.
    SetRetention(Retention),
    /// Purge every record past its retention at `now_ms` that no active
    /// hold covers; every site computes the same set.
    Purge {
        /// The time the purge is judged at (chosen by the proposer).
        now_ms: u64,
    },
    /// Append to the audit trail.
    Audit(AuditEntry),
    /// A compliance action (hold, release, retention, purge) together with
    /// the audit entry that records it: both apply, or neither.
    Audited {
        /// Who asked, from where, for what.
        entry: AuditEntry,
        /// The action.
        action: Box<Command>,
    },
    /// An operator removed a node from the archive group (`removed`) or
    /// added it back; the leader does not re-add removed nodes on its own.
    Removed {
        /// The node's Raft id.
        id: u64,
        /// Removed (true) or welcome again (false).
        removed: bool,
    },
}

impl Command {
    /// Whether this is an action an officer or admin takes (and so must be
    /// wrapped in [`Command::Audited`] when it travels).
    pub fn is_compliance_action(&self) -> bool {
        matches!(
            self,
            Command::PlaceHold(_)
                | Command::ReleaseHold { .. }
                | Command::SetRetention(_)
                | Command::Purge { .. }
        )
    }
}

/// What applying a command produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Records newly inserted (duplicates by archive id are skipped).
    pub inserted: u32,
    /// Records purged.
    pub purged: u64,
    /// The command named a hold that does not exist.
    #[serde(default)]
    pub not_found: bool,
}

openraft::declare_raft_types!(
    /// The archive's Raft types.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);
