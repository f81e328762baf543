//! A state machine in a temporary directory, fed committed entries the way
//! openraft feeds them, for the crate's unit tests.

use crate::state_machine::ArchiveStateMachine;
use crate::types::{AuditEntry, Command, Response, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use std::path::Path;

pub(crate) struct Machine {
    pub sm: ArchiveStateMachine,
    pub index: u64,
    pub dir: tempfile::TempDir,
}

pub(crate) fn open(dir: &Path) -> ArchiveStateMachine {
    crate::db::open(&dir.join("archive")).expect("open").1
}

impl Machine {
    pub fn new() -> Machine {
        let dir = tempfile::tempdir().expect("tempdir");
        Machine {
            sm: open(dir.path()),
            index: 0,
            dir,
        }
    }

    /// Applies the commands as the next log entries.
    pub async fn apply(&mut self, cmds: Vec<Command>) -> Vec<Response> {
        let entries: Vec<Entry<TypeConfig>> = cmds
            .into_iter()
            .map(|c| {
                self.index += 1;
                Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 0), self.index),
                    payload: EntryPayload::Normal(c),
                }
            })
            .collect();
        self.sm.apply(entries).await.expect("apply")
    }
}

/// `action` as the API proposes it: wrapped in an audit entry by `actor`.
pub(crate) fn audited(actor: &str, action: Command) -> Command {
    Command::Audited {
        entry: AuditEntry {
            actor: actor.into(),
            action: "x".into(),
            detail: "{}".into(),
            ..AuditEntry::default()
        },
        action: Box::new(action),
    }
}

/// A default retention of `days` proposed by one admin and approved by a
/// second, then a purge judged at `now_ms` (its response comes third).
pub(crate) fn retention_then_purge(days: u32, now_ms: u64) -> Vec<Command> {
    let policy = crate::types::Retention {
        default_days: Some(days),
        ..crate::types::Retention::default()
    };
    vec![
        audited(
            "alice",
            Command::ProposeRetention {
                id: "p".into(),
                policy,
            },
        ),
        audited("bob", Command::ApproveRetention { id: "p".into() }),
        audited("schedule", Command::Purge { now_ms }),
    ]
}
