//! The chain under tampering: every kind of change to the stored rows is
//! found and named, and a clean archive (purges included) verifies.

use crate::chain::LinkKind;
use crate::db::{CF_AUDIT, CF_CHAIN, CF_RECORDS};
use crate::testing::Machine;
use crate::types::{AuditEntry, Command, DAY_MS, Record, Retention};

const T0: u64 = 1_700_000_000_000;

fn rec(i: u64, stamp_ms: u64) -> Record {
    Record {
        id: format!("n1-{i}"),
        from: "alice@x/pc".into(),
        to: "bob@x".into(),
        site: "a".into(),
        stamp_ms,
        xml: format!("<message><body>secret plan {i}</body></message>"),
        body: Some(format!("secret plan {i}")),
        ..Record::default()
    }
}

fn audit(actor: &str) -> Command {
    Command::Audit(AuditEntry {
        actor: actor.into(),
        action: "search".into(),
        ..AuditEntry::default()
    })
}

fn dual(policy: Retention) -> Vec<Command> {
    let by = |actor: &str, action: Command| Command::Audited {
        entry: AuditEntry {
            actor: actor.into(),
            ..AuditEntry::default()
        },
        action: Box::new(action),
    };
    vec![
        by(
            "admin-1",
            Command::ProposeRetention {
                id: "c".into(),
                policy,
            },
        ),
        by("admin-2", Command::ApproveRetention { id: "c".into() }),
    ]
}

/// Ten records (the first five old), audit entries, and a purge of the
/// old ones under a 30-day default.
fn history() -> Vec<Command> {
    let mut cmds = vec![
        Command::Append((0..5).map(|i| rec(i, T0)).collect()),
        audit("officer"),
        Command::Append((5..10).map(|i| rec(i, T0 + 40 * DAY_MS)).collect()),
    ];
    cmds.extend(dual(Retention {
        default_days: Some(30),
        ..Retention::default()
    }));
    cmds.push(Command::Purge {
        now_ms: T0 + 41 * DAY_MS,
    });
    cmds.push(audit("auditor"));
    cmds
}

async fn archived() -> Machine {
    let mut m = Machine::new();
    let r = m.apply(history()).await;
    assert_eq!(r[5].purged, 5);
    m
}

fn problems(m: &Machine) -> Vec<(String, Option<u64>, String, String)> {
    let v = m.sm.verify_chain().expect("verify");
    assert!(!v.ok());
    v.problems
        .into_iter()
        .map(|p| (p.kind, p.at, p.id, p.problem))
        .collect()
}

#[tokio::test]
async fn a_clean_archive_verifies_after_a_purge_and_equal_logs_give_equal_heads() {
    let a = archived().await;
    let v = a.sm.verify_chain().expect("verify");
    assert!(v.ok(), "{:?}", v.problems);
    assert_eq!((v.records, v.tombstones, v.audit_entries), (5, 5, 4));
    assert_eq!(
        a.sm.live_records().expect("live"),
        5,
        "the cheap count follows purges"
    );
    // 10 record links, 5 tombstones, 4 audit entries.
    assert_eq!(v.computed.length, 19);
    let tomb: Vec<_> =
        a.sm.chain_links(0, 100)
            .expect("links")
            .into_iter()
            .filter(|(_, l)| l.kind == LinkKind::Tombstone)
            .map(|(_, l)| (l.id, l.reason))
            .collect();
    assert_eq!(tomb[0], ("n1-0".to_owned(), "retention: 30 days".to_owned()));
    let b = archived().await;
    assert_eq!(a.sm.chain_head().expect("head"), b.sm.chain_head().expect("head"));
    // One byte of difference anywhere in the history gives another head.
    let mut c = Machine::new();
    let mut other = history();
    other[1] = audit("officeR");
    c.apply(other).await;
    assert_ne!(a.sm.chain_head().expect("head"), c.sm.chain_head().expect("head"));
}

/// Flips one byte of the stored value at `key` in `cf`, inside `needle`.
fn flip(m: &Machine, cf: &str, key: &[u8], needle: &[u8]) {
    let cf = m.sm.cf(cf);
    let mut v = m.sm.db.get_cf(cf, key).expect("get").expect("row");
    let at = v
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in the row");
    v[at] ^= 0x01;
    m.sm.db.put_cf(cf, key, v).expect("put");
}

#[tokio::test]
async fn one_changed_byte_in_a_record_is_named() {
    let m = archived().await;
    flip(&m, CF_RECORDS, &7u64.to_be_bytes(), b"plan 7");
    assert_eq!(
        problems(&m),
        [(
            "record".into(),
            Some(7),
            "n1-7".into(),
            "the record's content was changed since it was archived".into()
        )]
    );
}

#[tokio::test]
async fn a_changed_audit_entry_is_named() {
    let m = archived().await;
    flip(&m, CF_AUDIT, &0u64.to_be_bytes(), b"officer");
    let p = problems(&m);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!((p[0].0.as_str(), p[0].1), ("audit", Some(0)));
}

#[tokio::test]
async fn records_deleted_or_slipped_in_behind_the_chain_are_named() {
    let m = archived().await;
    m.sm.db
        .delete_cf(m.sm.cf(CF_RECORDS), 8u64.to_be_bytes())
        .expect("delete");
    let forged = crate::codec::encode(&rec(99, T0)).expect("encode");
    m.sm.db
        .put_cf(m.sm.cf(CF_RECORDS), 99u64.to_be_bytes(), forged)
        .expect("put");
    // A purged record put back from a backup.
    let back = crate::codec::encode(&rec(2, T0)).expect("encode");
    m.sm.db
        .put_cf(m.sm.cf(CF_RECORDS), 2u64.to_be_bytes(), back)
        .expect("put");
    let p: Vec<(Option<u64>, String)> = problems(&m).into_iter().map(|p| (p.1, p.3)).collect();
    assert_eq!(
        p,
        [
            (Some(2), "a record its tombstone says was purged".to_owned()),
            (
                Some(8),
                "the record is missing and no tombstone says why".to_owned()
            ),
            (Some(99), "a record no link covers".to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_rewritten_link_breaks_the_chain_and_the_head() {
    let m = archived().await;
    // Rewrite link 3's content hash to match a doctored record 3, and the
    // record with it: the link's own hash no longer matches.
    let mut doctored = rec(3, T0);
    doctored.body = Some("nothing to see".into());
    let key = 3u64.to_be_bytes();
    let mut link: crate::chain::Link = crate::codec::decode(
        &m.sm
            .db
            .get_cf(m.sm.cf(CF_CHAIN), key)
            .expect("get")
            .expect("link"),
    )
    .expect("decode");
    link.content = crate::chain::content_hash(&doctored);
    m.sm.db
        .put_cf(
            m.sm.cf(CF_CHAIN),
            key,
            crate::codec::encode(&link).expect("encode"),
        )
        .expect("put");
    let p = problems(&m);
    assert!(
        p.iter()
            .any(|p| p.0 == "record" && p.1 == Some(3) && p.3.contains("link's hash")),
        "{p:?}"
    );
}
