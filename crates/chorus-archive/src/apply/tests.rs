//! Decisions the state machine makes: dual control of retention, unique
//! hold ids, outcomes in the audit trail, and (a property test) that no
//! sequence of holds, policies and purges deletes a held or unexpired
//! record.

use crate::testing::{Machine, audited as by, retention_then_purge};
use crate::types::{Command, DAY_MS, Hold, Record, Retention};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;

fn days(d: u32) -> Retention {
    Retention {
        default_days: Some(d),
        ..Retention::default()
    }
}

fn outcome(m: &Machine, seq: u64) -> serde_json::Value {
    let (_, e) = m.sm.audit(seq, 1).expect("audit").remove(0);
    serde_json::from_str::<serde_json::Value>(&e.detail).expect("json")["outcome"].clone()
}

#[tokio::test]
async fn shortening_retention_needs_a_second_different_admin() {
    let mut m = Machine::new();
    let propose = |id: &str, d| Command::ProposeRetention {
        id: id.into(),
        policy: days(d),
    };
    let approve = |id: &str| Command::ApproveRetention { id: id.into() };
    let r = m
        .apply(vec![
            // Forever to 365 days shortens: one admin cannot just set it.
            by("alice", Command::SetRetention(days(365))),
            by("alice", propose("c1", 365)),
            by("alice", approve("c1")),
        ])
        .await;
    assert!(
        r[0].refused
            .as_deref()
            .is_some_and(|w| w.contains("second admin")),
        "{r:?}"
    );
    assert!(
        r[2].refused
            .as_deref()
            .is_some_and(|w| w.contains("different admin")),
        "{r:?}"
    );
    // The answer itself says what happened (a follower's replica may lag).
    assert_eq!(
        r[1].pending.as_ref().map(|p| p.proposed_by.as_str()),
        Some("alice")
    );
    assert_eq!(m.sm.retention().expect("policy"), Retention::default());
    assert_eq!(
        outcome(&m, 2)["refused"].as_str().map(|s| s.contains("alice")),
        Some(true)
    );
    let r = m.apply(vec![by("bob", approve("c1"))]).await;
    assert_eq!(r[0].refused, None);
    assert_eq!(r[0].retention, Some(days(365)));
    assert_eq!(m.sm.retention().expect("policy"), days(365));
    assert!(m.sm.pending_retention().expect("pending").is_empty());
    // Lengthening is one admin's action.
    let r = m.apply(vec![by("alice", Command::SetRetention(days(400)))]).await;
    assert_eq!(r[0].refused, None);
    assert_eq!(m.sm.retention().expect("policy"), days(400));
    // An approval against a policy that changed since is refused.
    let r = m
        .apply(vec![
            by("alice", propose("c2", 100)),
            by("alice", Command::SetRetention(days(500))),
            by("bob", approve("c2")),
            by("bob", approve("nope")),
        ])
        .await;
    assert!(
        r[2].refused
            .as_deref()
            .is_some_and(|w| w.contains("changed since")),
        "{r:?}"
    );
    assert!(r[3].not_found);
    assert_eq!(m.sm.retention().expect("policy"), days(500));
    let r = m
        .apply(vec![by("carol", Command::CancelRetention { id: "c2".into() })])
        .await;
    assert!(!r[0].not_found);
    assert!(m.sm.pending_retention().expect("pending").is_empty());
}

#[test]
fn what_counts_as_shortening() {
    let mut long = days(30);
    long.users.insert("a@x".into(), 90);
    let mut same_rules_longer = days(31);
    same_rules_longer.users.insert("a@x".into(), 91);
    assert_eq!(long.shortened_by(&same_rules_longer), None);
    assert!(long.shortened_by(&days(31)).is_some(), "a@x's rule goes");
    let mut new_short_rule = long.clone();
    new_short_rule.users.insert("b@x".into(), 10);
    assert!(
        long.shortened_by(&new_short_rule).is_some(),
        "b@x kept 10 < 30 days"
    );
    let mut new_long_rule = long.clone();
    new_long_rule.rooms.insert("r@muc.x".into(), 30);
    assert_eq!(long.shortened_by(&new_long_rule), None);
    assert_eq!(
        long.shortened_by(&Retention::default()),
        None,
        "forever is never shorter"
    );
    assert!(Retention::default().shortened_by(&days(3650)).is_some());
}

#[tokio::test]
async fn a_hold_id_in_use_is_refused_by_the_state_machine() {
    let mut m = Machine::new();
    let hold = |reason: &str| Hold {
        id: "case-1".into(),
        reason: reason.into(),
        users: vec!["a@x".into()],
        ..Hold::default()
    };
    let r = m
        .apply(vec![
            by("o1", Command::PlaceHold(hold("first"))),
            // Two officers raced on the same id: the second loses, in Raft order.
            by("o2", Command::PlaceHold(hold("second"))),
        ])
        .await;
    assert_eq!(r[0].refused, None);
    assert_eq!(r[1].refused.as_deref(), Some("hold case-1 exists"));
    assert_eq!(m.sm.holds().expect("holds")[0].reason, "first");
    assert_eq!(outcome(&m, 1)["refused"], "hold case-1 exists");
}

#[tokio::test]
async fn a_purge_records_its_count_and_policy_in_the_audit_trail() {
    let mut m = Machine::new();
    let mut cmds = vec![Command::Append(vec![record(0, "a@x", None, T0)])];
    cmds.extend(retention_then_purge(30, T0 + 31 * DAY_MS));
    m.apply(cmds).await;
    let o = outcome(&m, 2);
    assert_eq!(o["purged"], 1);
    assert_eq!(o["policy"]["default_days"], 30);
    assert_eq!(o["judged_at_ms"], T0 + 31 * DAY_MS);
}

fn record(i: usize, from: &str, room: Option<&str>, stamp_ms: u64) -> Record {
    Record {
        id: format!("n-{i}"),
        from: format!("{from}/r"),
        to: room.unwrap_or("z@x").into(),
        stamp_ms,
        room: room.map(str::to_owned),
        // Room messages reach every user as an occupant.
        occupants: if room.is_some() {
            USERS.iter().map(|u| (*u).to_owned()).collect()
        } else {
            vec![]
        },
        body: Some("b".into()),
        ..Record::default()
    }
}

const USERS: [&str; 3] = ["a@x", "b@x", "c@x"];
const ROOM: &str = "room@muc.x";

fn arb_hold() -> impl Strategy<Value = Hold> {
    (
        0usize..4,
        proptest::option::of(0u64..60),
        proptest::option::of(0u64..60),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(who, start, end, room, released)| Hold {
            id: String::new(),
            reason: "r".into(),
            users: USERS.get(who).map(|u| vec![(*u).to_owned()]).unwrap_or_default(),
            rooms: if room { vec![ROOM.into()] } else { vec![] },
            start_ms: start.map(|d| T0 + d * DAY_MS),
            end_ms: end.map(|d| T0 + d * DAY_MS),
            released: released.then(|| ("x".into(), T0)),
            ..Hold::default()
        })
}

fn arb_policy() -> impl Strategy<Value = Retention> {
    (
        proptest::option::of(1u32..60),
        proptest::collection::btree_map(0usize..3, 1u32..90, 0..3),
        proptest::option::of(1u32..90),
    )
        .prop_map(|(default_days, users, room)| Retention {
            default_days,
            users: users.into_iter().map(|(u, d)| (USERS[u].to_owned(), d)).collect(),
            rooms: room.map(|d| [(ROOM.to_owned(), d)].into()).unwrap_or_default(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever the holds, policies and purge times: a record an active
    /// hold covers, or whose retention has not passed, is never deleted,
    /// and the chain verifies.
    #[test]
    fn no_purge_deletes_a_held_or_unexpired_record(
        msgs in proptest::collection::vec((0usize..3, any::<bool>(), 0u64..60), 1..25),
        holds in proptest::collection::vec(arb_hold(), 0..4),
        policies in proptest::collection::vec(arb_policy(), 1..3),
        purges in proptest::collection::vec(0u64..200, 1..4),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(async {
            let mut m = Machine::new();
            let records: Vec<Record> = msgs
                .iter()
                .enumerate()
                .map(|(i, (u, room, d))| record(i, USERS[*u], room.then_some(ROOM), T0 + d * DAY_MS))
                .collect();
            m.apply(vec![Command::Append(records.clone())]).await;
            let mut cmds = Vec::new();
            for (i, h) in holds.iter().enumerate() {
                cmds.push(by("officer", Command::PlaceHold(Hold { id: format!("h{i}"), ..h.clone() })));
            }
            for (i, p) in policies.iter().enumerate() {
                let id = format!("c{i}");
                cmds.push(by("alice", Command::ProposeRetention { id: id.clone(), policy: p.clone() }));
                cmds.push(by("bob", Command::ApproveRetention { id }));
            }
            for d in &purges {
                cmds.push(by("schedule", Command::Purge { now_ms: T0 + d * DAY_MS }));
            }
            m.apply(cmds).await;
            let policy = m.sm.retention().expect("policy");
            let latest = T0 + purges.iter().max().copied().unwrap_or(0) * DAY_MS;
            let active: Vec<Hold> = m.sm.holds().expect("holds").into_iter().filter(|h| h.released.is_none()).collect();
            for r in &records {
                let kept = m.sm.record_by_id(&r.id).expect("read").is_some();
                if active.iter().any(|h| h.covers(r)) {
                    prop_assert!(kept, "held record {} was purged", r.id);
                }
                // Under the policy in force last, a record not yet expired
                // at the latest purge must be there (earlier policies were
                // never shorter than allowed: each change was approved).
                if !policy.expired(r, latest) && policies.len() == 1 {
                    prop_assert!(kept, "unexpired record {} was purged", r.id);
                }
            }
            let v = m.sm.verify_chain().expect("verify");
            prop_assert!(v.ok(), "{:?}", v.problems);
            Ok(())
        })?;
    }
}
