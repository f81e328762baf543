//! The archive state machine's compliance behaviour: history pages with
//! every filter and both paging directions (merged with the spool),
//! retention that never purges held records, snapshots that carry the
//! archive exactly, and full-text search through tantivy.

use chorus_archive::search::{SearchIndex, SearchQuery};
use chorus_archive::state_machine::ArchiveStateMachine;
use chorus_archive::types::{AuditEntry, Command, DAY_MS, Hold, Record, Retention, TypeConfig};
use chorus_core::archive::{ArchiveError, MamQuery};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

const T0: u64 = 1_700_000_000_000;

fn rec(id: &str, from: &str, to: &str, stamp_ms: u64, body: &str) -> Record {
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

struct Machine {
    sm: ArchiveStateMachine,
    index: u64,
    _dir: tempfile::TempDir,
}

impl Machine {
    fn new() -> Machine {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_log, sm) = chorus_archive::db::open(dir.path()).expect("open");
        Machine {
            sm,
            index: 0,
            _dir: dir,
        }
    }

    async fn apply(&mut self, cmds: Vec<Command>) -> Vec<chorus_archive::types::Response> {
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
fn conversation() -> Vec<Record> {
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
fn propose_retention(policy: Retention) -> Command {
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
fn approve_retention() -> Command {
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

fn ids(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}

fn q(owner: &str, max: usize) -> MamQuery {
    MamQuery {
        owner: owner.into(),
        max,
        ..MamQuery::default()
    }
}

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

#[tokio::test]
async fn full_text_search_finds_by_words_participants_and_dates() {
    let mut m = Machine::new();
    m.apply(vec![Command::Append(conversation())]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let index = SearchIndex::open(dir.path()).expect("index");
    assert_eq!(index.catch_up(&m.sm).expect("catch up"), 13);
    let sm = m.sm.clone();
    let search = |q: SearchQuery| {
        index
            .search(&sm, &SearchQuery { limit: 50, ..q })
            .expect("search")
    };
    let page = search(SearchQuery {
        words: Some("lunch".into()),
        ..SearchQuery::default()
    });
    assert_eq!(page.total, 3);
    assert_eq!(ids(&page.records), ["c-0", "c-1", "c-2"]);
    let page = search(SearchQuery {
        words: Some("budget".into()),
        participants: vec!["alice@x".into(), "bob@x".into()],
        start_ms: Some(T0 + 60_000),
        end_ms: Some(T0 + 180_000),
        ..SearchQuery::default()
    });
    assert_eq!(ids(&page.records), ["a-1", "a-2", "a-3"]);
    let page = search(SearchQuery {
        participants: vec!["carol@x".into(), "bob@x".into()],
        ..SearchQuery::default()
    });
    assert_eq!(page.total, 0);
    // Paging.
    let page = index
        .search(
            &m.sm,
            &SearchQuery {
                words: Some("budget".into()),
                offset: 8,
                limit: 5,
                ..SearchQuery::default()
            },
        )
        .expect("search");
    assert_eq!((page.total, ids(&page.records)), (10, vec!["a-8", "a-9"]));
    // A purge reaches the index too.
    m.apply(vec![
        propose_retention(Retention {
            default_days: Some(1),
            ..Retention::default()
        }),
        approve_retention(),
        Command::Purge {
            now_ms: T0 + 2 * DAY_MS,
        },
    ])
    .await;
    index.catch_up(&m.sm).expect("catch up");
    assert_eq!(
        search(SearchQuery {
            words: Some("lunch".into()),
            ..SearchQuery::default()
        })
        .total,
        0
    );
    // Bad query syntax is a clear error.
    assert!(
        index
            .search(
                &m.sm,
                &SearchQuery {
                    words: Some("body:(".into()),
                    limit: 5,
                    ..SearchQuery::default()
                }
            )
            .is_err()
    );
}

#[tokio::test]
async fn rooms_are_a_scope_for_search_holds_and_retention() {
    let room = "team@conference.x";
    let room_msg = |id: &str, from: &str, stamp: u64, body: &str| Record {
        room: Some(room.into()),
        ..rec(id, from, room, stamp, body)
    };
    let mut m = Machine::new();
    m.apply(vec![Command::Append(vec![
        room_msg("r-1", "alice@x/pc", T0, "quarterly numbers"),
        room_msg("r-2", "bob@x/phone", T0 + 1, "look fine"),
        rec("d-1", "alice@x/pc", "bob@x", T0 + 2, "quarterly direct"),
    ])])
    .await;
    // The room's own archive (history, MUC MAM) holds only room messages.
    let p = m.sm.mam(&q(room, 10), &[]).expect("page");
    assert_eq!(ids(&p.records), ["r-1", "r-2"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let index = SearchIndex::open(dir.path()).expect("index");
    index.catch_up(&m.sm).expect("catch up");
    let page = index
        .search(
            &m.sm,
            &SearchQuery {
                room: Some(room.into()),
                words: Some("quarterly".into()),
                limit: 10,
                ..SearchQuery::default()
            },
        )
        .expect("search");
    assert_eq!(ids(&page.records), ["r-1"]);
    // Rooms have their own retention, and a hold on the room keeps its records.
    let mut retention = Retention {
        default_days: Some(10),
        ..Retention::default()
    };
    retention.rooms.insert(room.into(), 1);
    let r = m
        .apply(vec![
            propose_retention(retention),
            approve_retention(),
            Command::PlaceHold(Hold {
                id: "room-hold".into(),
                rooms: vec![room.into()],
                end_ms: Some(T0),
                ..Hold::default()
            }),
            Command::Purge {
                now_ms: T0 + 2 * DAY_MS,
            },
        ])
        .await;
    assert_eq!(r[3].purged, 1, "only r-2: r-1 is held, d-1 has ten days");
    let left: Vec<String> =
        m.sm.records()
            .expect("records")
            .into_iter()
            .map(|r| r.id)
            .collect();
    assert_eq!(left, ["r-1", "d-1"]);
}
