//! A state machine in a temporary directory, fed committed entries the way
//! openraft feeds them, for the crate's unit tests.

use crate::state_machine::ArchiveStateMachine;
use crate::types::{Command, Response, TypeConfig};
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
