//! Snapshot files: a full round trip through openraft's receive path,
//! tampered and truncated files refused before anything changes, an
//! interrupted install finished at the next open, and removed members
//! carried along.

use super::*;
use crate::testing::{Machine, open};
use crate::types::{AuditEntry, Command, Hold, Record, Retention};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use tokio::io::AsyncWriteExt;

fn rec(i: u64) -> Record {
    Record {
        id: format!("a-{i}"),
        from: "alice@x/pc".into(),
        to: "bob@x".into(),
        site: "a".into(),
        stamp_ms: 1_800_000_000_000 + i,
        xml: format!("<message><body>m{i}</body></message>"),
        body: Some(format!("m{i}")),
        ..Record::default()
    }
}

/// A machine with records, a hold, a policy, audit entries and a removed member.
async fn populated(records: u64) -> Machine {
    let mut a = Machine::new();
    a.apply(vec![
        Command::Append((0..records).map(rec).collect()),
        Command::PlaceHold(Hold {
            id: "h1".into(),
            users: vec!["alice@x".into()],
            ..Hold::default()
        }),
        Command::SetRetention(Retention {
            default_days: Some(3650),
            ..Retention::default()
        }),
        // Refused (it shortens "forever"), so it is only proposed.
        Command::Audited {
            entry: AuditEntry {
                actor: "admin".into(),
                ..AuditEntry::default()
            },
            action: Box::new(Command::ProposeRetention {
                id: "c1".into(),
                policy: Retention {
                    default_days: Some(3650),
                    ..Retention::default()
                },
            }),
        },
        Command::Audit(AuditEntry {
            actor: "officer".into(),
            action: "search".into(),
            ..AuditEntry::default()
        }),
        Command::Removed { id: 7, removed: true },
    ])
    .await;
    a
}

/// Sends `a`'s current snapshot to `b` the way openraft does: in chunks
/// into the file `begin_receiving_snapshot` gave, then `install_snapshot`.
async fn send(a: &mut Machine, b: &mut Machine, tamper: impl Fn(&mut Vec<u8>)) -> Result<()> {
    let snap = a.sm.build_snapshot().await.expect("build");
    let path = a.sm.current_snapshot().expect("current").expect("one").1;
    let mut bytes = std::fs::read(path).expect("read");
    tamper(&mut bytes);
    let mut recv = b.sm.begin_receiving_snapshot().await.expect("begin");
    for chunk in bytes.chunks(1000) {
        recv.write_all(chunk).await.expect("chunk");
    }
    recv.flush().await.expect("flush");
    b.sm.install_snapshot(&snap.meta, recv).await
}

fn state(sm: &ArchiveStateMachine) -> impl PartialEq + std::fmt::Debug {
    (
        sm.digest().expect("digest"),
        sm.holds().expect("holds"),
        sm.removed_members().expect("removed"),
        sm.retention().expect("retention"),
        sm.audit(0, 100).expect("audit"),
        sm.next_position().expect("next"),
        sm.records().expect("records"),
        sm.pending_retention().expect("pending"),
        sm.chain_head().expect("chain head"),
        sm.live_records().expect("live"),
        sm.chain_links(0, 10_000).expect("chain"),
    )
}

#[tokio::test]
async fn a_snapshot_streams_into_an_identical_replica() {
    let mut a = populated(500).await;
    let mut b = Machine::new();
    b.apply(vec![Command::Append(vec![rec(9999)])]).await;
    send(&mut a, &mut b, |_| {}).await.expect("install");
    assert_eq!(state(&a.sm), state(&b.sm));
    assert_eq!(b.sm.pending_retention().expect("pending").len(), 1);
    assert!(
        b.sm.verify_chain().expect("verify").ok(),
        "the chain verifies on the replica"
    );
    assert_eq!(
        b.sm.removed_members().expect("removed"),
        vec![7],
        "removed members travel"
    );
    assert!(
        b.sm.position_of("a-9999").expect("pos").is_none(),
        "old rows are gone"
    );
    // Indexes were rebuilt: a history query finds the records.
    let q = chorus_core::archive::MamQuery {
        owner: "bob@x".into(),
        max: 5,
        ..Default::default()
    };
    assert_eq!(b.sm.mam(&q, &[]).expect("mam").records.len(), 5);
    let with = chorus_core::archive::MamQuery {
        owner: "bob@x".into(),
        with: Some("alice@x".into()),
        max: 5,
        ..Default::default()
    };
    assert_eq!(b.sm.mam(&with, &[]).expect("mam").records.len(), 5);
    // Every record's chain link, which exports need, is found on the
    // replica (link keys written at install) as on the source (id entries).
    for p in [0u64, 250, 499] {
        let id = format!("a-{p}");
        let link = a.sm.record_link(&id, p).expect("link");
        assert!(link.is_some(), "{id} has a link on the source");
        assert_eq!(b.sm.record_link(&id, p).expect("link"), link, "{id}");
    }
    // The installed snapshot is b's current one, and serves b's followers.
    let (r, _) = b.sm.current_snapshot().expect("current").expect("one");
    assert_eq!(r.meta.last_log_id.map(|l| l.index), Some(6));
}

#[tokio::test]
async fn a_changed_or_truncated_snapshot_is_refused_and_changes_nothing() {
    let mut a = populated(50).await;
    let mut b = Machine::new();
    b.apply(vec![Command::Append(vec![rec(9999)])]).await;
    let before = format!("{:?}", state(&b.sm));
    let middle = |b: &mut Vec<u8>| {
        let i = b.len() / 2;
        b[i] ^= 0x20;
    };
    let e = send(&mut a, &mut b, middle)
        .await
        .expect_err("a flipped byte is refused");
    assert!(e.to_string().contains("snapshot"), "{e}");
    let e = send(&mut a, &mut b, |b| b.truncate(b.len() - 10))
        .await
        .expect_err("a truncated file is refused");
    assert!(e.to_string().contains("snapshot"), "{e}");
    assert_eq!(format!("{:?}", state(&b.sm)), before, "nothing was touched");
}

#[tokio::test]
async fn an_interrupted_install_is_finished_at_the_next_open() {
    let mut a = populated(300).await;
    let mut b = Machine::new();
    send(&mut a, &mut b, |_| {}).await.expect("install");
    let want = format!("{:?}", state(&b.sm));
    // A crash after the marker and part of the rows: the marker names the
    // snapshot, half the records are gone, the applied state is stale.
    let (r, _) = b.sm.current_snapshot().expect("current").expect("one");
    let mut batch = WriteBatch::default();
    b.sm.put_json(&mut batch, KEY_INSTALLING, &r).expect("marker");
    batch.delete_range_cf(b.sm.cf(CF_RECORDS), 0u64.to_be_bytes(), 150u64.to_be_bytes());
    batch.delete_cf(b.sm.cf(CF_SM_META), KEY_APPLIED);
    b.sm.db.write_opt(batch, &synced()).expect("write");
    assert_ne!(format!("{:?}", state(&b.sm)), want);
    let dir = b.dir;
    drop(b.sm);
    let sm = open(dir.path());
    assert_eq!(format!("{:?}", state(&sm)), want, "the install was redone");
    assert!(sm.get::<SnapshotRef>(KEY_INSTALLING).expect("get").is_none());
}

#[tokio::test]
async fn only_the_current_snapshot_file_is_kept() {
    let mut a = populated(10).await;
    a.sm.build_snapshot().await.expect("build");
    a.apply(vec![Command::Append(vec![rec(10)])]).await;
    a.sm.build_snapshot().await.expect("build");
    let dir = snapshot_dir(&a.dir.path().join("archive"));
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
