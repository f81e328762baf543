//! The archive's Raft group over the cluster's mTLS gRPC: three nodes (one
//! voter per site) elect a leader, replicate archive batches to every site,
//! and keep committing after the leader is stopped.

mod common;

use chorus_archive::raft::raft_id;
use chorus_archive::state_machine::ArchiveStateMachine;
use chorus_archive::types::{Command, Record};
use common::{NODES, all_members, eventually, leader, ready, shutdown, spawn_shipper, start, start_raft};
use std::sync::Arc;
use std::time::Duration;

fn batch(prefix: &str, n: usize) -> Command {
    Command::Append(
        (0..n)
            .map(|i| Record {
                id: format!("{prefix}-{i}"),
                from: "alice@chorus.test/pc".into(),
                to: "bob@chorus.test".into(),
                site: "a".into(),
                stamp_ms: i as u64,
                xml: format!("<message><body>{prefix} {i}</body></message>"),
                ..Record::default()
            })
            .collect(),
    )
}

/// Record ids in archive order.
fn ids(m: &ArchiveStateMachine) -> Vec<String> {
    m.records().expect("records").into_iter().map(|r| r.id).collect()
}

/// Waits until the machines at `which` hold exactly `n` records.
async fn hold(machines: &[ArchiveStateMachine], which: &[usize], n: usize, what: &str) {
    eventually(what, || {
        which
            .iter()
            .all(|i| machines[*i].records().map(|r| r.len()).unwrap_or(0) == n)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_raft_replicates_and_survives_leader_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, _net) = start(dir.path()).await;
    ready(&nodes).await;
    let (rafts, machines, _spools, _nets) = start_raft(&nodes, dir.path(), &[0, 1, 2]).await;
    let mut rafts = rafts;
    let l = leader(&rafts).await;
    let r = rafts[l]
        .as_ref()
        .expect("leader")
        .client_write(batch("first", 50))
        .await
        .expect("commit");
    assert_eq!(r.data.inserted, 50);
    hold(&machines, &[0, 1, 2], 50, "every site applied the first batch").await;

    // Stop the leader's Raft node and cut it off; the others elect a new one.
    let old = rafts[l].take().expect("leader");
    old.shutdown().await.expect("shutdown");
    let _ = nodes[l].stop.send(true);
    let l2 = leader(&rafts).await;
    assert_ne!(l2, l);
    // A retried batch (same archive ids) is not archived twice.
    let again = rafts[l2]
        .as_ref()
        .expect("leader")
        .client_write(batch("first", 50))
        .await
        .expect("commit");
    assert_eq!(again.data.inserted, 0);
    rafts[l2]
        .as_ref()
        .expect("leader")
        .client_write(batch("second", 20))
        .await
        .expect("commit");
    let survivors: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    hold(&machines, &survivors, 70, "the survivors applied both batches").await;
    let order = |i: usize| ids(&machines[i]);
    assert_eq!(
        order(survivors[0]),
        order(survivors[1]),
        "same order on every site"
    );
    shutdown(rafts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_records_reach_every_site_and_a_cut_site_drains_after_the_heal() {
    use chorus_archive::raft::RaftArchive;
    use chorus_core::archive::{Archive, ArchiveRecord};
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, net) = start(dir.path()).await;
    ready(&nodes).await;
    let (rafts, machines, spools, nets) = start_raft(&nodes, dir.path(), &[0, 1, 2]).await;
    let _l = leader(&rafts).await;
    let archives: Vec<Arc<RaftArchive>> = spools
        .iter()
        .zip(common::NODES)
        .map(|(s, (_, site))| Arc::new(RaftArchive::new(s.clone(), site)))
        .collect();
    for (i, a) in archives.iter().enumerate() {
        spawn_shipper(a, &rafts[i], &nets[i], &nodes[i]);
    }
    let rec = |i: usize| ArchiveRecord {
        from: "carol@chorus.test/phone".into(),
        to: "alice@chorus.test".into(),
        stamp_ms: i as u64,
        xml: format!("<message><body>{i}</body></message>"),
        ..ArchiveRecord::default()
    };
    // Site c accepts messages; whether c1 leads or follows, they commit.
    for i in 0..10 {
        let id = archives[2]
            .append(rec(i))
            .expect("spooled")
            .expect("an archive id");
        assert!(id.starts_with("c1-"), "{id}");
    }
    hold(&machines, &[0, 1, 2], 10, "every site holds c's ten records").await;
    // Cut c off: it keeps accepting (spooling) without a quorum.
    net.isolate(2, true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 10..15 {
        archives[2].append(rec(i)).expect("spooled while cut off");
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        spools[2].len(),
        5,
        "records wait in the spool while c has no quorum"
    );
    assert_eq!(machines[0].records().expect("records").len(), 10);
    net.isolate(2, false);
    eventually("c's spool drains after the heal", || spools[2].is_empty()).await;
    hold(
        &machines,
        &[0, 1, 2],
        15,
        "every site holds all fifteen records once",
    )
    .await;
    let order = |i: usize| ids(&machines[i]);
    assert_eq!(order(0), order(1));
    assert_eq!(order(1), order(2));
    shutdown(rafts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_not_a_voter_joins_as_learner_and_ships_its_spool() {
    use chorus_archive::raft::{RaftArchive, reconcile_members};
    use chorus_core::archive::{Archive, ArchiveRecord};
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, _net) = start(dir.path()).await;
    ready(&nodes).await;
    // Only a1 and b1 vote; c1 must be brought in as a learner.
    let (rafts, machines, spools, nets) = start_raft(&nodes, dir.path(), &[0, 1]).await;
    let wanted = all_members(&nodes);
    for (i, r) in rafts.iter().enumerate() {
        let r = r.clone().expect("raft");
        tokio::spawn(reconcile_members(
            r,
            Some(machines[i].clone()),
            wanted.clone(),
            Duration::from_millis(200),
            nodes[i].stop.subscribe(),
        ));
    }
    let archive = Arc::new(RaftArchive::new(spools[2].clone(), "c"));
    spawn_shipper(&archive, &rafts[2], &nets[2], &nodes[2]);
    for i in 0..5u64 {
        let rec = ArchiveRecord {
            from: "carol@x/p".into(),
            to: "alice@x".into(),
            stamp_ms: i,
            xml: format!("<m>{i}</m>"),
            ..ArchiveRecord::default()
        };
        archive.append(rec).expect("spooled");
    }
    hold(&machines, &[0, 1, 2], 5, "the learner's records reach every site").await;
    let learners: Vec<u64> = rafts[0]
        .as_ref()
        .expect("raft")
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .learner_ids()
        .collect();
    assert_eq!(learners, vec![raft_id(NODES[2].0)]);
    shutdown(rafts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_refuses_without_a_quorum_and_accepts_once_it_is_back() {
    use chorus_archive::raft::RaftArchive;
    use chorus_core::archive::{Archive, ArchiveError, ArchiveRecord};
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, net) = start(dir.path()).await;
    ready(&nodes).await;
    let (rafts, machines, spools, nets) = start_raft(&nodes, dir.path(), &[0, 1, 2]).await;
    let _l = leader(&rafts).await;
    let strict = Arc::new(
        RaftArchive::new(spools[2].clone(), "c")
            .with_state_machine(machines[2].clone())
            .strict(Duration::from_millis(1500)),
    );
    spawn_shipper(&strict, &rafts[2], &nets[2], &nodes[2]);
    let rec = |i: u64| ArchiveRecord {
        from: "carol@chorus.test/phone".into(),
        to: "alice@chorus.test".into(),
        stamp_ms: i,
        xml: format!("<message><body>{i}</body></message>"),
        body: Some(i.to_string()),
        ..ArchiveRecord::default()
    };
    eventually("site c sees the leader", || strict.sees_leader()).await;
    // With a quorum, append returns only once the record is committed.
    let a = strict.clone();
    let id = tokio::task::spawn_blocking(move || a.append(rec(1)))
        .await
        .expect("join")
        .expect("committed")
        .expect("an id");
    assert!(
        machines[2].record_by_id(&id).expect("read").is_some()
            || machines[0].record_by_id(&id).expect("read").is_some(),
        "strict append returned before the commit"
    );
    // Cut c off: once it has noticed, strict appends are refused.
    net.isolate(2, true);
    let a = strict.clone();
    let refused = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match a.append(rec(2)) {
                Err(ArchiveError::NoQuorum(why)) => return why,
                Ok(_) if std::time::Instant::now() < deadline => continue,
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
    })
    .await
    .expect("join");
    assert!(!refused.is_empty());
    // The heal brings delivery back.
    net.isolate(2, false);
    let a = strict.clone();
    let id = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match a.append(rec(3)) {
                Ok(Some(id)) => return id,
                Err(ArchiveError::NoQuorum(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                other => panic!("expected a commit after the heal, got {other:?}"),
            }
        }
    })
    .await
    .expect("join");
    eventually("the record committed after the heal is on every site", || {
        machines
            .iter()
            .all(|m| m.record_by_id(&id).ok().flatten().is_some())
    })
    .await;
    shutdown(rafts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_remove_and_re_add_archive_members_from_any_node() {
    use chorus_archive::raft::{MemberChange, change_members, reconcile_members};
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, _net) = start(dir.path()).await;
    ready(&nodes).await;
    let (rafts, machines, _spools, nets) = start_raft(&nodes, dir.path(), &[0, 1, 2]).await;
    let wanted = all_members(&nodes);
    for (i, r) in rafts.iter().enumerate() {
        tokio::spawn(reconcile_members(
            r.clone().expect("raft"),
            Some(machines[i].clone()),
            wanted.clone(),
            Duration::from_millis(200),
            nodes[i].stop.subscribe(),
        ));
    }
    let l = leader(&rafts).await;
    let follower = (l + 1) % 3;
    let victim = 3 - l - follower;
    let voters = |i: usize| -> Vec<u64> {
        rafts[i]
            .as_ref()
            .expect("raft")
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    };
    // Asked at a follower, the change is forwarded to the leader.
    let raft = rafts[follower].as_ref().expect("raft");
    change_members(
        raft,
        &nets[follower],
        &MemberChange::Remove {
            id: NODES[victim].0.into(),
        },
    )
    .await
    .expect("removed");
    eventually("the leader's membership drops the node", || {
        !voters(l).contains(&raft_id(NODES[victim].0))
    })
    .await;
    // The leader's reconciler (every 200 ms here) must not bring a
    // removed node back: give it several rounds.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all: Vec<u64> = rafts[l]
        .as_ref()
        .expect("raft")
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .nodes()
        .map(|(n, _)| *n)
        .collect();
    assert!(!all.contains(&raft_id(NODES[victim].0)), "{all:?}");
    // Removing the last voters is refused; adding the node back works.
    let addr = nodes[victim].config.cluster.listen.expect("listen").to_string();
    change_members(
        raft,
        &nets[follower],
        &MemberChange::Add {
            id: NODES[victim].0.into(),
            addr,
            voter: true,
        },
    )
    .await
    .expect("added");
    eventually("the node votes again", || {
        voters(l).contains(&raft_id(NODES[victim].0))
    })
    .await;
    shutdown(rafts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_judged_ahead_of_the_followers_clocks_never_commits_and_the_group_goes_on() {
    use chorus_archive::types::{AuditEntry, Retention};
    const DAY_MS: u64 = 86_400_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, _net) = start(dir.path()).await;
    ready(&nodes).await;
    let (rafts, machines, _spools, _nets) = start_raft(&nodes, dir.path(), &[0, 1, 2]).await;
    let l = leader(&rafts).await;
    let now = chorus_core::time::now_millis();
    let by = |actor: &str, action: Command| Command::Audited {
        entry: AuditEntry {
            actor: actor.into(),
            at_ms: now,
            ..AuditEntry::default()
        },
        action: Box::new(action),
    };
    let raft = rafts[l].as_ref().expect("leader");
    let records: Vec<Record> = (0..5)
        .map(|i| Record {
            id: format!("n-{i}"),
            from: "alice@chorus.test/pc".into(),
            to: "bob@chorus.test".into(),
            stamp_ms: now,
            ..Record::default()
        })
        .collect();
    raft.client_write(Command::Append(records))
        .await
        .expect("records");
    let policy = Retention {
        default_days: Some(1),
        ..Retention::default()
    };
    let propose = Command::ProposeRetention {
        id: "c".into(),
        policy,
    };
    raft.client_write(by("admin-1", propose)).await.expect("propose");
    let approve = Command::ApproveRetention { id: "c".into() };
    raft.client_write(by("admin-2", approve)).await.expect("approve");
    hold(&machines, &[0, 1, 2], 5, "every site holds the records").await;
    // The leader's clock says it is two days later: its purge would take
    // everything. The followers refuse the append carrying it.
    let early = by(
        "schedule",
        Command::Purge {
            now_ms: now + 2 * DAY_MS,
        },
    );
    let written = tokio::time::timeout(Duration::from_secs(8), raft.client_write(early)).await;
    assert!(
        !matches!(written, Ok(Ok(_))),
        "an early purge committed: {written:?}"
    );
    hold(&machines, &[0, 1, 2], 5, "no site purged anything").await;
    // And the group is not stuck behind it: a leader commits new records.
    let mut done = false;
    for _ in 0..40 {
        let l = leader(&rafts).await;
        let w = tokio::time::timeout(
            Duration::from_secs(3),
            rafts[l].as_ref().expect("leader").client_write(batch("after", 3)),
        )
        .await;
        if matches!(w, Ok(Ok(_))) {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(done, "the archive never committed again after the refused purge");
    hold(
        &machines,
        &[0, 1, 2],
        8,
        "every site holds the records and the new batch",
    )
    .await;
    shutdown(rafts).await;
}
