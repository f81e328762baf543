//! The archive state machine's compliance behaviour: history pages with
//! every filter and both paging directions (merged with the spool),
//! retention that never purges held records, and snapshots that carry the
//! archive exactly. Search: search.rs.

mod common;

use chorus_archive::types::{AuditEntry, Command, DAY_MS, Hold, Retention};
use chorus_core::archive::{ArchiveError, MamQuery};
use common::*;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
#[tokio::test]
async fn mam_pages_forward_and_backward_with_filters() {
    let mut m = Machine::new();
    m.apply(vec![Command::Append(conversation())]).await;
    // Bob's archive has only his ten messages, in time order.
    let p = m.sm.mam(&q("bob@x", 4), &[]).expect("page");
    assert_eq!(ids(&p.records), ["a-0", "a-1", "a-2", "a-3"]);
    assert!(!p.complete);
    let p =
        m.sm.mam(
            &MamQuery {
                after: Some("a-7".into()),
                ..q("bob@x", 4)
            },
            &[],
        )
        .expect("page");
    assert_eq!(ids(&p.records), ["a-8", "a-9"]);
    assert!(p.complete);
    // The last page, then paging back.
    let p =
        m.sm.mam(
            &MamQuery {
                last_page: true,
                ..q("bob@x", 3)
            },
            &[],
        )
        .expect("page");
    assert_eq!(ids(&p.records), ["a-7", "a-8", "a-9"]);
    assert!(!p.complete);
    let p =
        m.sm.mam(
            &MamQuery {
                before: Some("a-2".into()),
                ..q("bob@x", 3)
            },
            &[],
        )
        .expect("page");
    assert_eq!(ids(&p.records), ["a-0", "a-1"]);
    assert!(p.complete);
    // Alice's archive interleaves Carol's by time; `with` narrows it.
    let p = m.sm.mam(&q("alice@x", 3), &[]).expect("page");
    assert_eq!(ids(&p.records), ["a-0", "c-0", "a-1"]);
    let p =
        m.sm.mam(
            &MamQuery {
                with: Some("carol@x".into()),
                ..q("alice@x", 10)
            },
            &[],
        )
        .expect("page");
    assert_eq!(ids(&p.records), ["c-0", "c-1", "c-2"]);
    // A full JID `with` matches that resource only.
    let p =
        m.sm.mam(
            &MamQuery {
                with: Some("bob@x/phone".into()),
                ..q("alice@x", 10)
            },
            &[],
        )
        .expect("page");
    assert_eq!(ids(&p.records), ["a-1", "a-3", "a-5", "a-7", "a-9"]);
    // Time range, ids and full text.
    let p =
        m.sm.mam(
            &MamQuery {
                start_ms: Some(T0 + 120_000),
                end_ms: Some(T0 + 240_000),
                ..q("bob@x", 10)
            },
            &[],
        )
        .expect("page");
    assert_eq!(ids(&p.records), ["a-2", "a-3", "a-4"]);
    let p =
        m.sm.mam(
            &MamQuery {
                ids: vec!["a-4".into()],
                ..q("bob@x", 10)
            },
            &[],
        )
        .expect("page");
    assert_eq!(ids(&p.records), ["a-4"]);
    // Alice's message to Carol is as unknown to Bob as a made-up id, as an
    // `ids` entry and as a paging cursor.
    for bad in [
        MamQuery {
            ids: vec!["a-4".into(), "c-1".into()],
            ..q("bob@x", 10)
        },
        MamQuery {
            after: Some("c-1".into()),
            ..q("bob@x", 10)
        },
    ] {
        assert_eq!(m.sm.mam(&bad, &[]), Err(ArchiveError::NotFound("c-1".into())));
    }
    // after-id/before-id select a range and combine with paging.
    let p =
        m.sm.mam(
            &MamQuery {
                after_id: Some("a-2".into()),
                before_id: Some("a-7".into()),
                last_page: true,
                ..q("bob@x", 2)
            },
            &[],
        )
        .expect("page");
    assert_eq!(ids(&p.records), ["a-5", "a-6"]);
    assert!(!p.complete);
    let p =
        m.sm.mam(
            &MamQuery {
                text: Some("MESSAGE 3".into()),
                ..q("alice@x", 10)
            },
            &[],
        )
        .expect("page");
    assert_eq!(ids(&p.records), ["a-3"]);
    // An unknown paging id is an error, not an empty page.
    assert_eq!(
        m.sm.mam(
            &MamQuery {
                after: Some("nope".into()),
                ..q("bob@x", 3)
            },
            &[]
        ),
        Err(ArchiveError::NotFound("nope".into()))
    );
}

#[tokio::test]
async fn spooled_records_join_the_newest_page() {
    let mut m = Machine::new();
    m.apply(vec![Command::Append(conversation())]).await;
    let spooled = vec![
        rec("s-1", "bob@x/phone", "alice@x", T0 + 3_600_000, "just sent"),
        // Already committed: must not appear twice.
        rec(
            "a-9",
            "bob@x/phone",
            "alice@x/pc",
            T0 + 9 * 60_000,
            "message 9 about budget",
        ),
    ];
    let p =
        m.sm.mam(
            &MamQuery {
                last_page: true,
                ..q("bob@x", 2)
            },
            &spooled,
        )
        .expect("page");
    assert_eq!(ids(&p.records), ["a-9", "s-1"]);
    let p =
        m.sm.mam(
            &MamQuery {
                after: Some("a-9".into()),
                ..q("bob@x", 5)
            },
            &spooled,
        )
        .expect("page");
    assert_eq!(ids(&p.records), ["s-1"]);
    assert!(p.complete);
    let p =
        m.sm.mam(
            &MamQuery {
                before: Some("s-1".into()),
                ..q("bob@x", 1)
            },
            &spooled,
        )
        .expect("page");
    assert_eq!(ids(&p.records), ["a-9"]);
}

#[tokio::test]
async fn retention_purges_exactly_the_unheld_expired_records() {
    let mut m = Machine::new();
    m.apply(vec![Command::Append(conversation())]).await;
    let mut retention = Retention {
        default_days: Some(30),
        ..Retention::default()
    };
    // Carol's records are kept for a year.
    retention.users.insert("carol@x".into(), 365);
    let hold = Hold {
        id: "case-1".into(),
        reason: "litigation".into(),
        users: vec!["bob@x".into()],
        start_ms: Some(T0 + 4 * 60_000),
        end_ms: Some(T0 + 6 * 60_000),
        created_by: "officer".into(),
        created_ms: T0,
        ..Hold::default()
    };
    let r = m
        .apply(vec![
            propose_retention(retention),
            approve_retention(),
            Command::PlaceHold(hold),
            // Judged 31 days later: everything of Alice and Bob's except
            // the held a-4..a-6 goes; Carol's stay.
            Command::Purge {
                now_ms: T0 + 31 * DAY_MS,
            },
        ])
        .await;
    assert_eq!(r[3].purged, 7);
    let left: Vec<String> =
        m.sm.records()
            .expect("records")
            .into_iter()
            .map(|r| r.id)
            .collect();
    assert_eq!(left, ["a-4", "a-5", "a-6", "c-0", "c-1", "c-2"]);
    // MAM no longer sees purged records, and a re-shipped duplicate of a
    // purged record is not resurrected.
    let p = m.sm.mam(&q("bob@x", 20), &[]).expect("page");
    assert_eq!(ids(&p.records), ["a-4", "a-5", "a-6"]);
    let r = m.apply(vec![Command::Append(conversation())]).await;
    assert_eq!(r[0].inserted, 0);
    // Releasing the hold lets the next purge take the rest.
    let r = m
        .apply(vec![
            Command::ReleaseHold {
                id: "case-1".into(),
                by: "officer".into(),
                at_ms: T0 + 32 * DAY_MS,
            },
            Command::ReleaseHold {
                id: "no-such".into(),
                by: "officer".into(),
                at_ms: T0,
            },
            Command::Purge {
                now_ms: T0 + 32 * DAY_MS,
            },
        ])
        .await;
    assert!(r[1].not_found);
    assert_eq!(r[2].purged, 3);
    let holds = m.sm.holds().expect("holds");
    assert_eq!(holds[0].released.as_ref().map(|r| r.0.as_str()), Some("officer"));
}

#[tokio::test]
async fn snapshots_carry_positions_holds_and_audit_exactly() {
    let mut a = Machine::new();
    a.apply(vec![
        Command::Append(conversation()),
        propose_retention(Retention {
            default_days: Some(1),
            ..Retention::default()
        }),
        approve_retention(),
        Command::PlaceHold(Hold {
            id: "h".into(),
            users: vec!["carol@x".into()],
            ..Hold::default()
        }),
        Command::Purge {
            now_ms: T0 + 2 * DAY_MS,
        },
        Command::Audit(AuditEntry {
            actor: "officer".into(),
            action: "search".into(),
            ..AuditEntry::default()
        }),
        Command::Append(vec![rec(
            "z-1",
            "bob@x/phone",
            "alice@x",
            T0 + 2 * DAY_MS,
            "after the purge",
        )]),
    ])
    .await;
    let snap = a.sm.build_snapshot().await.expect("snapshot");
    let mut b = Machine::new();
    b.sm.install_snapshot(&snap.meta, snap.snapshot)
        .await
        .expect("install");
    assert_eq!(a.sm.digest().expect("digest"), b.sm.digest().expect("digest"));
    let trail = b.sm.audit(0, 10).expect("audit");
    let actors: Vec<&str> = trail.iter().map(|(_, e)| e.actor.as_str()).collect();
    assert_eq!(actors, ["admin-1", "admin-2", "officer"]);
    assert_eq!(a.sm.chain_head().expect("head"), b.sm.chain_head().expect("head"));
    assert_eq!(b.sm.holds().expect("holds").len(), 1);
    // Indexes were rebuilt: MAM works on the installed copy.
    let p = b.sm.mam(&q("carol@x", 10), &[]).expect("page");
    assert_eq!(ids(&p.records), ["c-0", "c-1", "c-2"]);
    // And both apply the next batch identically.
    let next = vec![Command::Append(vec![rec(
        "z-2",
        "alice@x/pc",
        "bob@x",
        T0 + 3 * DAY_MS,
        "x",
    )])];
    a.index = 100;
    b.index = 100;
    a.apply(next.clone()).await;
    b.apply(next).await;
    assert_eq!(a.sm.digest().expect("digest"), b.sm.digest().expect("digest"));
}
