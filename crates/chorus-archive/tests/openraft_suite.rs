//! The archive's Raft storage against openraft's own storage test suite,
//! as openraft's RocksDB examples run it, plus archive-specific checks.

use chorus_archive::log_store::LogStore;
use chorus_archive::state_machine::ArchiveStateMachine;
use chorus_archive::types::{Command, Record, TypeConfig};
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, ArchiveStateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, ArchiveStateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm) = chorus_archive::db::open(dir.path()).expect("open archive db");
        Ok((dir, log, sm))
    }
}

#[test]
fn passes_openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("openraft storage suite failed: {e}");
    }
}

fn record(id: &str) -> Record {
    Record {
        id: id.into(),
        from: "alice@x/pc".into(),
        to: "bob@x".into(),
        site: "a".into(),
        stamp_ms: 1,
        xml: format!("<message><body>{id}</body></message>"),
        ..Record::default()
    }
}

#[tokio::test]
async fn apply_is_idempotent_by_archive_id_and_keeps_order() {
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut sm) = chorus_archive::db::open(dir.path()).expect("open");
    let entry = |index, records: Vec<Record>| Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload: EntryPayload::Normal(Command::Append(records)),
    };
    let r = sm
        .apply(vec![
            entry(1, vec![record("a-1"), record("a-2")]),
            entry(2, vec![record("a-2"), record("b-1")]),
        ])
        .await
        .expect("apply");
    assert_eq!(r.iter().map(|r| r.inserted).collect::<Vec<_>>(), vec![2, 1]);
    let ids: Vec<String> = sm.records().expect("records").into_iter().map(|r| r.id).collect();
    assert_eq!(ids, vec!["a-1", "a-2", "b-1"]);
}
