//! Tests of the RocksDB store: durability, quotas, and convergence of two
//! replicas through the anti-entropy primitives.

use super::*;
use chorus_core::replication::{ChangeOrigin, DIGEST_BUCKETS, ReplItem};
use chorus_core::roster::Subscription;

fn creds() -> Credentials {
    Credentials::from_password_with("pw", 16).expect("valid")
}

fn open(dir: &Path, tag: u32) -> RocksStore {
    RocksStore::open(dir, tag).expect("open")
}

#[test]
fn accounts_roundtrip_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open(dir.path(), 1);
        s.create_account("alice", &creds()).expect("create");
        assert!(matches!(
            s.create_account("alice", &creds()),
            Err(StoreError::AccountExists(_))
        ));
        let item = RosterItem {
            jid: "bob@x".into(),
            subscription: Subscription::Both,
            ..Default::default()
        };
        s.put_roster_item("alice", &item).expect("roster");
        s.push_offline(
            "alice",
            &OfflineMessage {
                stamp_ms: 1,
                xml: "<m1/>".into(),
            },
            10,
        )
        .expect("offline");
        s.push_offline(
            "alice",
            &OfflineMessage {
                stamp_ms: 2,
                xml: "<m2/>".into(),
            },
            10,
        )
        .expect("offline");
        s.set_blocked("alice", &["eve@x".into()], true).expect("block");
    }
    let s = open(dir.path(), 1);
    assert_eq!(s.list_accounts().expect("list"), vec!["alice".to_string()]);
    let r = s.roster("alice").expect("roster");
    assert!(r.version > 0);
    assert_eq!(r.items[0].subscription, Subscription::Both);
    assert_eq!(s.blocklist("alice").expect("blocks"), vec!["eve@x".to_string()]);
    let off = s.take_offline("alice").expect("take");
    assert_eq!(
        off.iter().map(|m| m.xml.as_str()).collect::<Vec<_>>(),
        vec!["<m1/>", "<m2/>"]
    );
    assert!(s.take_offline("alice").expect("take again").is_empty());
}

#[test]
fn roster_version_increases_with_every_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path(), 1);
    let item = RosterItem {
        jid: "b@x".into(),
        ..Default::default()
    };
    let v1 = s.put_roster_item("a", &item).expect("put");
    let v2 = s.remove_roster_item("a", "b@x").expect("remove");
    assert!(v2 > v1);
    assert_eq!(s.roster("a").expect("roster").version, v2);
    assert!(s.roster("a").expect("roster").items.is_empty());
}

#[test]
fn second_open_reports_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _s = open(dir.path(), 1);
    assert!(matches!(
        RocksStore::open(dir.path(), 1),
        Err(OpenError::Locked(_))
    ));
}

#[test]
fn offline_quota_and_ordering_past_255() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path(), 1);
    for i in 0..300u64 {
        s.push_offline(
            "u",
            &OfflineMessage {
                stamp_ms: i,
                xml: format!("<m{i}/>"),
            },
            300,
        )
        .expect("push");
    }
    assert!(matches!(
        s.push_offline(
            "u",
            &OfflineMessage {
                stamp_ms: 0,
                xml: String::new()
            },
            300
        ),
        Err(StoreError::QuotaExceeded(_))
    ));
    let got: Vec<u64> = s
        .take_offline("u")
        .expect("take")
        .iter()
        .map(|m| m.stamp_ms)
        .collect();
    assert_eq!(got, (0..300).collect::<Vec<_>>());
}

#[test]
fn remove_account_removes_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path(), 1);
    s.create_account("a", &creds()).expect("create");
    s.create_account("ab", &creds()).expect("create");
    s.set_blocked("a", &["x@y".into()], true).expect("block");
    s.set_blocked("ab", &["z@y".into()], true).expect("block");
    assert!(s.account_exists("a").expect("exists"));
    assert!(!s.account_exists("nobody").expect("exists"));
    assert!(s.remove_account("a").expect("remove"));
    assert!(
        !s.account_exists("a").expect("exists"),
        "a removed account (a tombstone) exists"
    );
    assert!(s.blocklist("a").expect("list").is_empty());
    assert_eq!(s.blocklist("ab").expect("list"), vec!["z@y".to_string()]);
    assert!(!s.remove_account("a").expect("remove again"));
    assert_eq!(s.list_accounts().expect("list"), vec!["ab".to_string()]);
}

/// One anti-entropy round in both directions, as the cluster runs it.
fn sync(a: &RocksStore, b: &RocksStore) {
    for t in Table::ALL {
        let (da, db) = (a.digests(t).expect("digest"), b.digests(t).expect("digest"));
        let diff: Vec<u32> = (0..DIGEST_BUCKETS)
            .filter(|i| da[*i as usize] != db[*i as usize])
            .collect();
        let from_a = a.items_in_buckets(t, &diff).expect("items");
        let from_b = b.items_in_buckets(t, &diff).expect("items");
        b.apply_remote(&from_a).expect("apply");
        a.apply_remote(&from_b).expect("apply");
        assert_eq!(
            a.digests(t).expect("digest"),
            b.digests(t).expect("digest"),
            "{t:?} converged"
        );
    }
}

#[test]
fn replicas_written_apart_converge_after_anti_entropy() {
    let (d1, d2) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (a, b) = (open(d1.path(), 1), open(d2.path(), 2));
    a.create_account("alice", &creds()).expect("create");
    b.create_account("bob", &creds()).expect("create");
    // The same roster item edited on both sides: the later write wins.
    let mut item = RosterItem {
        jid: "bob@x".into(),
        name: Some("from a".into()),
        ..Default::default()
    };
    a.put_roster_item("alice", &item).expect("put");
    item.name = Some("from b".into());
    b.put_roster_item("alice", &item).expect("put");
    a.push_offline(
        "bob",
        &OfflineMessage {
            stamp_ms: 1,
            xml: "<a/>".into(),
        },
        10,
    )
    .expect("push");
    b.push_offline(
        "bob",
        &OfflineMessage {
            stamp_ms: 2,
            xml: "<b/>".into(),
        },
        10,
    )
    .expect("push");
    sync(&a, &b);
    for s in [&a, &b] {
        assert_eq!(
            s.list_accounts().expect("list"),
            vec!["alice".to_string(), "bob".to_string()]
        );
        let name = s.roster_item("alice", "bob@x").expect("read").expect("item").name;
        assert_eq!(name.as_deref(), Some("from b"));
        assert_eq!(
            s.offline_count("bob").expect("count"),
            2,
            "offline pushes on both sides are kept"
        );
    }
    // Taking the queue on one side deletes it everywhere after the next sync.
    assert_eq!(a.take_offline("bob").expect("take").len(), 2);
    sync(&a, &b);
    assert_eq!(b.offline_count("bob").expect("count"), 0);
}

#[test]
fn tombstone_wins_over_older_write_and_listener_sees_changes() {
    let (d1, d2) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (a, b) = (open(d1.path(), 1), open(d2.path(), 2));
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    b.set_listener(std::sync::Arc::new(move |items, origin| {
        s2.lock().expect("lock").push((items.len(), origin));
    }));
    a.set_blocked("u", &["x@y".into()], true).expect("block");
    sync(&a, &b);
    assert_eq!(b.blocklist("u").expect("list"), vec!["x@y".to_string()]);
    a.set_blocked("u", &["x@y".into()], false).expect("unblock");
    sync(&a, &b);
    assert!(b.blocklist("u").expect("list").is_empty());
    // Re-applying an old write changes nothing.
    let old = a
        .items_in_buckets(Table::Blocks, &(0..DIGEST_BUCKETS).collect::<Vec<_>>())
        .expect("items");
    assert!(b.apply_remote(&old).expect("apply").is_empty());
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|(_, o)| *o == ChangeOrigin::Remote));
}

/// A replica at node 1 that blocked one contact, and that block as
/// replicated items.
fn one_blocked_item() -> (tempfile::TempDir, Vec<ReplItem>) {
    let d = tempfile::tempdir().expect("tempdir");
    let a = open(d.path(), 1);
    a.set_blocked("u", &["x@y".into()], true).expect("block");
    let all: Vec<u32> = (0..DIGEST_BUCKETS).collect();
    let items = a.items_in_buckets(Table::Blocks, &all).expect("items");
    assert_eq!(items.len(), 1);
    (d, items)
}

#[test]
fn a_write_after_a_restart_beats_a_version_from_a_clock_ahead_peer() {
    // Found by chorus-sim (bug `blind-local-write`): the clock forgets what
    // it observed from peers when the node restarts.
    let d2 = tempfile::tempdir().expect("tempdir");
    let (_d1, mut items) = one_blocked_item();
    let all: Vec<u32> = (0..DIGEST_BUCKETS).collect();
    // The peer's clock runs 50 s ahead (within cluster.max_clock_skew_ms).
    let ahead = chorus_core::hlc::Hlc::from_parts(items[0].lww.version.hlc.millis() + 50_000, 0);
    items[0].lww.version.hlc = ahead;
    {
        let b = open(d2.path(), 2);
        assert_eq!(b.apply_remote(&items).expect("apply").len(), 1);
    }
    let b = open(d2.path(), 2);
    b.set_blocked("u", &["x@y".into()], false).expect("unblock");
    let held = b.items_in_buckets(Table::Blocks, &all).expect("items");
    assert!(
        held[0].lww.version.hlc > ahead,
        "{:?} <= {ahead:?}",
        held[0].lww.version
    );
    assert!(b.blocklist("u").expect("list").is_empty());
}

#[test]
fn items_versioned_beyond_the_skew_bound_are_refused_and_do_not_poison_the_clock() {
    let d2 = tempfile::tempdir().expect("tempdir");
    let (_d1, honest) = one_blocked_item();
    let all: Vec<u32> = (0..DIGEST_BUCKETS).collect();
    let b = open(d2.path(), 2);
    for poison in [
        chorus_core::hlc::Hlc::from_parts(honest[0].lww.version.hlc.millis() + 61_000, 0),
        chorus_core::hlc::Hlc(u64::MAX),
    ] {
        let mut items = honest.clone();
        items[0].lww.version.hlc = poison;
        assert!(
            b.apply_remote(&items).expect("apply").is_empty(),
            "{poison:?} taken"
        );
    }
    assert!(b.blocklist("u").expect("list").is_empty());
    // b's own writes still carry today's time, and the honest item is taken.
    b.set_blocked("v", &["x@y".into()], true).expect("block");
    let mine = b.items_in_buckets(Table::Blocks, &all).expect("items");
    let now = chorus_core::time::now_millis();
    assert!(
        mine.iter().all(|i| i.lww.version.hlc.millis() <= now + 1_000),
        "{mine:?}"
    );
    assert_eq!(b.apply_remote(&honest).expect("apply").len(), 1);
}

/// The read cache (`cache.rs`) never answers from before a write: a block
/// or an account removal takes effect for the next lookup, whether it was
/// made here or replicated from a peer.
#[test]
fn cached_block_lists_and_accounts_follow_local_and_replicated_writes() {
    let d2 = tempfile::tempdir().expect("tempdir");
    let b = open(d2.path(), 2);
    // Cached empty, then blocked by a peer.
    assert!(b.blocklist("u").expect("list").is_empty());
    let (d1, items) = one_blocked_item();
    assert_eq!(b.apply_remote(&items).expect("apply").len(), 1);
    assert_eq!(b.blocklist("u").expect("list"), vec!["x@y".to_string()]);
    // Cached with the block, then unblocked here.
    b.set_blocked("u", &["x@y".into()], false).expect("unblock");
    assert!(b.blocklist("u").expect("list").is_empty());
    b.set_blocked("u", &["z@y".into()], true).expect("block");
    assert_eq!(b.blocklist("u").expect("list"), vec!["z@y".to_string()]);
    b.clear_blocklist("u").expect("clear");
    assert!(b.blocklist("u").expect("list").is_empty());

    // An account cached as present, removed here.
    b.create_account("carol", &creds()).expect("create");
    assert!(b.account_exists("carol").expect("exists"));
    assert!(b.remove_account("carol").expect("remove"));
    assert!(!b.account_exists("carol").expect("exists"));
    // An account cached as present, removed on a peer and replicated.
    let a = open(&d1.path().join("peer"), 1);
    a.create_account("dave", &creds()).expect("create");
    sync(&a, &b);
    assert!(b.account_exists("dave").expect("exists"));
    assert!(a.remove_account("dave").expect("remove"));
    sync(&a, &b);
    assert!(
        !b.account_exists("dave").expect("exists"),
        "a removed account still answered as present"
    );
}
