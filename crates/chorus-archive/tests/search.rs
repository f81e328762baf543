//! Full-text search through tantivy over the committed archive: words,
//! participants, dates, paging, rooms, and purged text leaving the index.

mod common;

use chorus_archive::search::{SearchIndex, SearchQuery};
use chorus_archive::types::{Command, DAY_MS, Hold, Record, Retention};
use common::*;

/// A one-day default (two admins), then a purge two days after T0.
fn one_day_then_purge_two_days_on() -> Vec<Command> {
    vec![
        propose_retention(Retention {
            default_days: Some(1),
            ..Retention::default()
        }),
        approve_retention(),
        Command::Purge {
            now_ms: T0 + 2 * DAY_MS,
        },
    ]
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
    m.apply(one_day_then_purge_two_days_on()).await;
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
async fn purged_text_leaves_the_index_even_across_a_crash() {
    let mut m = Machine::new();
    m.apply(vec![Command::Append(conversation())]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let index = SearchIndex::open(dir.path()).expect("index");
    assert_eq!(index.catch_up(&m.sm).expect("catch up"), 13);
    // The node dies with the index closed; the purge commits meanwhile
    // (nothing in memory tells the index about it).
    drop(index);
    m.apply(one_day_then_purge_two_days_on()).await;
    let live = m.sm.records().expect("records").len() as u64;
    assert!(live < 13, "the purge took something");
    let index = SearchIndex::open(dir.path()).expect("reopen");
    index.catch_up(&m.sm).expect("catch up");
    // Only what is still held is indexed, and no deleted text is left in
    // the index's files (its segments were merged).
    assert_eq!(index.documents(), (live, 0));
    let page = index
        .search(
            &m.sm,
            &SearchQuery {
                words: Some("lunch".into()),
                limit: 10,
                ..SearchQuery::default()
            },
        )
        .expect("search");
    assert_eq!(page.total, 0);
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

#[tokio::test]
async fn an_index_of_an_older_schema_is_rebuilt_and_finds_by_site() {
    let mut m = Machine::new();
    let mut records = conversation();
    for r in records.iter_mut().filter(|r| r.id.starts_with("c-")) {
        r.site = "tokyo".into();
    }
    m.apply(vec![Command::Append(records)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // What an older version left: an index without the site field.
    {
        let mut sb = tantivy::schema::Schema::builder();
        sb.add_text_field("id", tantivy::schema::STRING | tantivy::schema::STORED);
        let old = tantivy::Index::create_in_dir(dir.path(), sb.build()).expect("old index");
        drop(old);
    }
    let index = SearchIndex::open(dir.path()).expect("rebuilt, not refused");
    assert_eq!(index.catch_up(&m.sm).expect("catch up"), 13);
    let at = |site: &str| {
        index
            .search(
                &m.sm,
                &SearchQuery {
                    site: Some(site.into()),
                    limit: 50,
                    ..SearchQuery::default()
                },
            )
            .expect("search")
    };
    assert_eq!(ids(&at("tokyo").records), ["c-0", "c-1", "c-2"]);
    assert_eq!(at("a").total, 10);
    assert_eq!(at("nowhere").total, 0);
}
