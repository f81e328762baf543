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
        let parts = r.covered_users();
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
            .covered_users()
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

    /// Why `new` would keep some record for less time than this policy
    /// does, or `None` when it keeps every record at least as long. That
    /// holds when the default does not shrink (no default is forever),
    /// every rule stays with at least as many days, and every new rule is
    /// at least the old default (a rule on one participant decides a
    /// record, whatever the default says). Anything else needs a second
    /// admin's approval.
    pub fn shortened_by(&self, new: &Retention) -> Option<String> {
        let at_least = |new: Option<u32>, old: Option<u32>| match (new, old) {
            (_, None) => new.is_none(),
            (None, Some(_)) => true,
            (Some(n), Some(o)) => n >= o,
        };
        if new.default_days.is_none() && new.users.is_empty() && new.rooms.is_empty() {
            return None; // everything kept forever
        }
        if !at_least(new.default_days, self.default_days) {
            return Some(format!(
                "the default retention goes from {} to {}",
                days_text(self.default_days),
                days_text(new.default_days)
            ));
        }
        for (what, old, new) in [
            ("user", &self.users, &new.users),
            ("room", &self.rooms, &new.rooms),
        ] {
            for (jid, days) in old {
                match new.get(jid) {
                    None => return Some(format!("the rule for {what} {jid} ({days} days) goes")),
                    Some(n) if n < days => {
                        return Some(format!("{what} {jid} goes from {days} to {n} days"));
                    }
                    Some(_) => {}
                }
            }
            for (jid, days) in new {
                if !old.contains_key(jid) && !at_least(Some(*days), self.default_days) {
                    return Some(format!(
                        "a new rule keeps {what} {jid} {days} days, less than the default ({})",
                        days_text(self.default_days)
                    ));
                }
            }
        }
        None
    }
}

fn days_text(d: Option<u32>) -> String {
    d.map_or_else(|| "forever".to_owned(), |d| format!("{d} days"))
}

/// A retention change that shortens a period, waiting for a second admin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRetention {
    /// Its id.
    pub id: String,
    /// The policy it would put in force.
    pub policy: Retention,
    /// The policy in force when it was proposed (approval is refused if
    /// the policy changed since).
    pub base: Retention,
    /// Why it counts as a shortening.
    pub shortens: String,
    /// The admin who proposed it.
    pub proposed_by: String,
    /// When (ms).
    pub proposed_ms: u64,
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
    /// The address the request came from (empty for the system's own
    /// actions and entries older than this field).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addr: String,
}

/// A command proposed to the archive's Raft group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Append a batch of records shipped from one node's spool.
    Append(Vec<Record>),
    /// Place a legal hold (refused if a hold with the same id exists).
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
    /// Replace the retention policy, if the new one keeps every record at
    /// least as long (anything shorter needs [`Command::ProposeRetention`]
    /// and a second admin's [`Command::ApproveRetention`]).
    SetRetention(Retention),
    /// Propose a retention policy that shortens a period; the enclosing
    /// audit entry's actor is the proposer.
    ProposeRetention {
        /// The change's id.
        id: String,
        /// The policy.
        policy: Retention,
    },
    /// Approve a proposed change; refused unless the enclosing audit
    /// entry's actor differs from the proposer and the policy is still
    /// the one it was proposed against.
    ApproveRetention {
        /// The change's id.
        id: String,
    },
    /// Withdraw a proposed change.
    CancelRetention {
        /// The change's id.
        id: String,
    },
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
                | Command::ProposeRetention { .. }
                | Command::ApproveRetention { .. }
                | Command::CancelRetention { .. }
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
    /// The command named a hold or change that does not exist.
    #[serde(default)]
    pub not_found: bool,
    /// The state machine refused the action (a hold id in use, a
    /// shortening without a second admin, ...), and why; its audit entry
    /// still records the attempt.
    #[serde(default)]
    pub refused: Option<String>,
    /// A retention action: the policy in force after it (a follower's own
    /// replica may not have applied it yet when the answer arrives).
    #[serde(default)]
    pub retention: Option<Retention>,
    /// A proposed retention change now waiting for a second admin.
    #[serde(default)]
    pub pending: Option<PendingRetention>,
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
