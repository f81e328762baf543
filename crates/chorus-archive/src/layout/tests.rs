//! The key layout: one pair key per pair, id entries of both layouts, and
//! an archive written in layout 1 read, extended and purged by this one.

use super::*;
use crate::db::{CF_IDS, CF_INDEX};
use crate::state_machine::ArchiveStateMachine;
use crate::testing::{Machine, retention_then_purge};
use crate::types::{Command, DAY_MS};
use chorus_core::archive::MamQuery;

fn chat(from: &str, to: &str) -> Record {
    Record {
        id: "n-1".into(),
        from: from.into(),
        to: to.into(),
        stamp_ms: 7,
        msg_id: Some("c1".into()),
        body: Some("hi".into()),
        ..Record::default()
    }
}

#[test]
fn a_pair_has_one_key_whichever_way_the_message_went() {
    let there = index_keys(&chat("bob@x/a", "alice@x"), 3);
    let back = index_keys(&chat("alice@x/b", "bob@x"), 3);
    let pairs =
        |keys: &[Vec<u8>]| -> Vec<Vec<u8>> { keys.iter().filter(|k| k[0] == b'w').cloned().collect() };
    assert_eq!(pairs(&there), pairs(&back));
    assert_eq!(pairs(&there).len(), 1);
    assert!(pairs(&there)[0].starts_with(&pair_prefix("bob@x", "alice@x")));
    assert!(pairs(&there)[0].starts_with(b"walice@x\0bob@x\0"));
    // t, m, u twice, w once.
    assert_eq!(there.len(), 5);
    // Layout 1's other order is named for deletion, and only it.
    let legacy = legacy_index_keys(&chat("alice@x/b", "bob@x"), 3);
    assert_eq!(legacy.len(), 1);
    assert!(legacy[0].starts_with(b"wbob@x\0alice@x\0"));
    assert!(!there.contains(&legacy[0]));
}

#[test]
fn id_entries_of_both_layouts_are_read_and_others_refused() {
    let v = id_entry(5, 9);
    assert_eq!(
        (id_position(&v).expect("pos"), id_link(&v).expect("link")),
        (5, Some(9))
    );
    let old = 5u64.to_be_bytes();
    assert_eq!(
        (id_position(&old).expect("pos"), id_link(&old).expect("link")),
        (5, None)
    );
    for bad in [&b""[..], &[0; 7][..], &[0; 12][..], &[0; 17][..]] {
        assert!(
            id_position(bad).is_err() && id_link(bad).is_err(),
            "{}",
            bad.len()
        );
    }
}

/// Every time, user, pair and message-id key in the index (layout 1's
/// link keys stay after a purge, as the id entries do).
fn index_entries(sm: &ArchiveStateMachine) -> Vec<Vec<u8>> {
    sm.db
        .iterator_cf(sm.cf(CF_INDEX), rocksdb::IteratorMode::Start)
        .map(|i| i.expect("read").0.to_vec())
        .filter(|k| k[0] == b'w' || k[0] == b'u' || k[0] == b't' || k[0] == b'm')
        .collect()
}

/// Rewrites a record's keys as layout 1 wrote them: an 8-byte id entry,
/// the link under `c<pos>`, each pair in both orders.
fn to_layout_1(sm: &ArchiveStateMachine, r: &Record) {
    let ids = sm.cf(CF_IDS);
    let v = sm
        .db
        .get_cf(ids, r.id.as_bytes())
        .expect("get")
        .expect("id entry");
    let (pos, link) = (
        id_position(&v).expect("pos"),
        id_link(&v).expect("link").expect("layout 2"),
    );
    sm.db
        .put_cf(ids, r.id.as_bytes(), pos.to_be_bytes())
        .expect("put");
    sm.db
        .put_cf(sm.cf(CF_INDEX), link_key(pos), link.to_be_bytes())
        .expect("put");
    for k in legacy_index_keys(r, pos) {
        sm.db.put_cf(sm.cf(CF_INDEX), k, []).expect("put");
    }
}

fn with(sm: &ArchiveStateMachine, owner: &str, with: &str) -> Vec<String> {
    let q = MamQuery {
        owner: owner.into(),
        with: Some(with.into()),
        max: 10,
        ..MamQuery::default()
    };
    sm.mam(&q, &[])
        .expect("mam")
        .records
        .into_iter()
        .map(|r| r.id)
        .collect()
}

#[tokio::test]
async fn an_archive_in_layout_1_is_read_extended_and_purged_completely() {
    const T0: u64 = 1_700_000_000_000;
    let mut m = Machine::new();
    let old = [chat("alice@x/a", "bob@x"), chat("bob@x/b", "alice@x")]
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.id = format!("n-{i}");
            r.stamp_ms = T0 + i as u64;
            r
        })
        .collect::<Vec<_>>();
    m.apply(vec![Command::Append(old.clone())]).await;
    let links: Vec<_> = old
        .iter()
        .enumerate()
        .map(|(p, r)| m.sm.record_link(&r.id, p as u64).expect("link"))
        .collect();
    for r in &old {
        to_layout_1(&m.sm, r);
    }
    // Both sides of the conversation see it; the links are found.
    assert_eq!(with(&m.sm, "alice@x", "bob@x"), ["n-0", "n-1"]);
    assert_eq!(with(&m.sm, "bob@x", "alice@x"), ["n-0", "n-1"]);
    for (p, r) in old.iter().enumerate() {
        assert_eq!(m.sm.record_link(&r.id, p as u64).expect("link"), links[p]);
        assert_eq!(m.sm.position_of(&r.id).expect("pos"), Some(p as u64));
    }
    // A record applied now, in this layout, joins them.
    let mut new = chat("bob@x/b", "alice@x");
    new.id = "n-2".into();
    new.stamp_ms = T0 + 2;
    m.apply(vec![Command::Append(vec![new.clone()])]).await;
    assert_eq!(with(&m.sm, "bob@x", "alice@x"), ["n-0", "n-1", "n-2"]);
    assert!(m.sm.record_link("n-2", 2).expect("link").is_some());
    // Once purged, nothing of the conversation is left in the index, in
    // either layout's keys.
    let r = m.apply(retention_then_purge(1, T0 + 2 * DAY_MS)).await;
    assert_eq!(r[2].purged, 3);
    assert_eq!(index_entries(&m.sm), Vec::<Vec<u8>>::new());
    assert!(with(&m.sm, "bob@x", "alice@x").is_empty());
}
