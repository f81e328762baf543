//! What the archive's integration tests share: a state machine fed the
//! way openraft feeds it, a conversation to archive, and a second admin to
//! approve retention.
#![allow(dead_code)]

use chorus_archive::state_machine::ArchiveStateMachine;
use chorus_archive::types::{AuditEntry, Command, Record, Retention, TypeConfig};
use chorus_core::archive::MamQuery;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

pub const T0: u64 = 1_700_000_000_000;

pub fn rec(id: &str, from: &str, to: &str, stamp_ms: u64, body: &str) -> Record {
    Record {
        id: id.into(),
        from: from.into(),
        to: to.into(),
        site: "a".into(),
        stamp_ms,
        xml: format!("<message><body>{body}</body></message>"),
        body: Some(body.into()),
        ..Record::default()
    }
}

pub struct Machine {
    pub sm: ArchiveStateMachine,
    pub index: u64,
    _dir: tempfile::TempDir,
}

impl Machine {
    pub fn new() -> Machine {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_log, sm) = chorus_archive::db::open(dir.path()).expect("open");
        Machine {
            sm,
            index: 0,
            _dir: dir,
        }
    }

    pub async fn apply(&mut self, cmds: Vec<Command>) -> Vec<chorus_archive::types::Response> {
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

/// Alice and Bob exchange 10 messages a minute apart; Alice writes Carol 3.
pub fn conversation() -> Vec<Record> {
    let mut v = Vec::new();
    for i in 0..10u64 {
        let (f, t) = if i % 2 == 0 {
            ("alice@x/pc", "bob@x")
        } else {
            ("bob@x/phone", "alice@x/pc")
        };
        v.push(rec(
            &format!("a-{i}"),
            f,
            t,
            T0 + i * 60_000,
            &format!("message {i} about budget"),
        ));
    }
    for i in 0..3u64 {
        v.push(rec(
            &format!("c-{i}"),
            "alice@x/pc",
            "carol@x",
            T0 + 30_000 + i * 60_000,
            "lunch?",
        ));
    }
    v
}

/// An admin proposes a policy (every first policy shortens "forever")...
pub fn propose_retention(policy: Retention) -> Command {
    Command::Audited {
        entry: AuditEntry {
            actor: "admin-1".into(),
            action: "retention.propose".into(),
            ..AuditEntry::default()
        },
        action: Box::new(Command::ProposeRetention {
            id: "change-1".into(),
            policy,
        }),
    }
}

/// ... and a second admin approves it.
pub fn approve_retention() -> Command {
    Command::Audited {
        entry: AuditEntry {
            actor: "admin-2".into(),
            action: "retention.approve".into(),
            ..AuditEntry::default()
        },
        action: Box::new(Command::ApproveRetention {
            id: "change-1".into(),
        }),
    }
}

pub fn ids(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}

pub fn q(owner: &str, max: usize) -> MamQuery {
    MamQuery {
        owner: owner.into(),
        max,
        ..MamQuery::default()
    }
}
