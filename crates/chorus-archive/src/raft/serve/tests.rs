//! What a forwarded archive write may carry.

use super::*;
use crate::types::{Hold, Record};

const NOW: u64 = 1_800_000_000_000;

fn configured(id: &str) -> Option<String> {
    match id {
        "lon-1" => Some("127.0.0.1:7001".into()),
        "tokyo-1" => Some("127.0.0.1:7002".into()),
        _ => None,
    }
}

/// Runs `f` with lon-1 as the verified sender.
fn from_lon_1<T>(f: impl FnOnce(&Forwarder) -> T) -> T {
    f(&Forwarder {
        node_id: "lon-1",
        site: "london",
        raft_id: crate::raft::raft_id("lon-1"),
        addr: "127.0.0.1:7001",
        removed: false,
        max_clock_skew_ms: 60_000,
        addr_of: &configured,
    })
}

fn check(cmd: Command) -> Result<Command, HandleError> {
    from_lon_1(|from| admit_forwarded(cmd, from, NOW))
}

fn check_members(change: MemberChange) -> Result<(MemberChange, AuditEntry), HandleError> {
    from_lon_1(|from| admit_member_change(change, from, NOW))
}

#[test]
fn a_forwarded_membership_change_uses_our_addresses_and_is_audited() {
    let add = MemberChange::Add {
        id: "tokyo-1".into(),
        addr: "203.0.113.9:7070".into(),
        voter: true,
    };
    let (change, entry) = check_members(add).expect("a configured node may be added");
    let MemberChange::Add { addr, .. } = change else {
        panic!("still an add")
    };
    assert_eq!(addr, "127.0.0.1:7002", "the address comes from our configuration");
    assert_eq!(entry.node, "lon-1", "the audit entry names the forwarding node");
    assert_eq!(entry.action, "members.change");
    assert!(entry.detail.contains("tokyo-1"), "{}", entry.detail);
    for change in [
        MemberChange::Add {
            id: "evil-1".into(),
            addr: "203.0.113.9:7070".into(),
            voter: true,
        },
        MemberChange::Remove { id: "evil-1".into() },
    ] {
        let e = check_members(change).expect_err("unconfigured nodes are refused");
        assert!(
            e.refused && e.reason.contains("not a configured node"),
            "{}",
            e.reason
        );
    }
}

fn record(id: &str, site: &str, stamp_ms: u64) -> Record {
    Record {
        id: id.into(),
        site: site.into(),
        stamp_ms,
        ..Default::default()
    }
}

fn entry(at_ms: u64, node: &str) -> AuditEntry {
    AuditEntry {
        at_ms,
        node: node.into(),
        ..Default::default()
    }
}

#[test]
fn a_node_appends_only_its_own_records() {
    assert!(check(Command::Append(vec![record("lon-1-7", "london", NOW)])).is_ok());
    for r in [
        record("tokyo-1-7", "london", NOW),
        record("lon-1-1-7", "london", NOW),
        record("lon-1-", "london", NOW),
        record("lon-1-7", "tokyo", NOW),
    ] {
        let e = check(Command::Append(vec![record("lon-1-1", "london", NOW), r.clone()]))
            .expect_err("must be refused");
        assert!(e.refused, "{r:?}");
    }
}

#[test]
fn timestamps_beyond_the_skew_bound_are_refused() {
    assert!(check(Command::Append(vec![record("lon-1-7", "london", NOW + 60_000)])).is_ok());
    let e =
        check(Command::Append(vec![record("lon-1-7", "london", NOW + 60_001)])).expect_err("must be refused");
    assert!(e.refused && e.reason.contains("ahead"), "{}", e.reason);
    assert!(check(Command::Audit(entry(NOW + 3_600_000, "lon-1"))).is_err());
}

#[test]
fn audit_entries_name_the_verified_sender() {
    let Command::Audit(e) = check(Command::Audit(entry(NOW, "tokyo-1"))).expect("own audit entry admitted")
    else {
        panic!("not an audit entry")
    };
    assert_eq!(e.node, "lon-1");
}

#[test]
fn compliance_actions_travel_only_with_their_audit_entry() {
    for raw in [
        Command::PlaceHold(Hold::default()),
        Command::ReleaseHold {
            id: "h".into(),
            by: "x".into(),
            at_ms: NOW,
        },
        Command::SetRetention(Default::default()),
        Command::Purge { now_ms: NOW },
        Command::Removed { id: 1, removed: true },
    ] {
        assert!(check(raw).expect_err("must be refused").refused);
    }
    let wrapped = Command::Audited {
        entry: entry(NOW, "x"),
        action: Box::new(Command::PlaceHold(Hold::default())),
    };
    assert!(check(wrapped).is_ok());
    let smuggled = Command::Audited {
        entry: entry(NOW, "x"),
        action: Box::new(Command::Append(vec![record("tokyo-1-1", "tokyo", NOW)])),
    };
    assert!(check(smuggled).expect_err("must be refused").refused);
}

#[test]
fn a_forwarded_purge_judged_in_the_future_is_refused() {
    // An admin's forwarded purge "as of" next year would delete records
    // whose retention has not run out.
    let purge = |now_ms| Command::Audited {
        entry: entry(NOW, "x"),
        action: Box::new(Command::Purge { now_ms }),
    };
    assert!(check(purge(NOW)).is_ok());
    let e = check(purge(NOW + 365 * 86_400_000)).expect_err("must be refused");
    assert!(e.refused && e.reason.contains("ahead"), "{}", e.reason);
}

#[test]
fn a_log_append_with_a_purge_ahead_of_our_clock_is_refused() {
    use openraft::{Entry, EntryPayload, LogId};
    let at = |index, cmd| Entry::<TypeConfig> {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(cmd),
    };
    let purge = |now_ms| Command::Audited {
        entry: entry(NOW, "leader"),
        action: Box::new(Command::Purge { now_ms }),
    };
    let ok = vec![at(1, purge(NOW + 60_000)), at(2, Command::Append(vec![]))];
    assert!(from_lon_1(|f| purges_within_skew(&ok, f, NOW)).is_ok());
    let early = vec![
        at(1, Command::Append(vec![])),
        at(2, purge(NOW + 31 * 86_400_000)),
    ];
    let e = from_lon_1(|f| purges_within_skew(&early, f, NOW)).expect_err("must be refused");
    assert!(e.refused && e.reason.contains("log index 2"), "{}", e.reason);
}
