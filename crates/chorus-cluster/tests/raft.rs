//! The archive's Raft group over the cluster's mTLS gRPC: three nodes (one
//! voter per site) elect a leader, replicate archive batches to every site,
//! and keep committing after the leader is stopped.

mod common;

use chorus_archive::spool::Spool;
use chorus_archive::state_machine::ArchiveStateMachine;
use chorus_archive::types::{Command, Record};
use chorus_cluster::raft_net::{ArchiveRaft, NetworkFactory, raft_id};
use common::{NODES, eventually, ready, start};
use openraft::BasicNode;
use std::collections::BTreeMap;
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

/// Every node with its cluster address, as Raft members.
fn all_members(nodes: &[common::Node]) -> BTreeMap<u64, BasicNode> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                raft_id(NODES[i].0),
                BasicNode::new(n.config.cluster.listen.expect("listen").to_string()),
            )
        })
        .collect()
}

/// Runs a node's spool shipper until the node stops.
fn spawn_shipper(
    archive: &Arc<chorus_cluster::archive::RaftArchive>,
    raft: &Option<ArchiveRaft>,
    net: &NetworkFactory,
    node: &common::Node,
) {
    let (a, r, n, stop) = (
        archive.clone(),
        raft.clone().expect("raft"),
        net.clone(),
        node.stop.subscribe(),
    );
    tokio::spawn(async move { a.ship(r, n, stop).await });
}

async fn shutdown(rafts: Vec<Option<ArchiveRaft>>) {
    for r in rafts.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(5), r.shutdown()).await;
    }
}

async fn leader(rafts: &[Option<ArchiveRaft>]) -> usize {
    for _ in 0..200 {
        for (i, r) in rafts.iter().enumerate() {
            if let Some(r) = r
                && r.metrics().borrow().current_leader == Some(r.metrics().borrow().id)
            {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader elected");
}

/// Starts one Raft node per cluster node (all voters) and initializes the
/// group.
async fn start_raft(
    nodes: &[common::Node],
    dir: &std::path::Path,
    voters: &[usize],
) -> (
    Vec<Option<ArchiveRaft>>,
    Vec<ArchiveStateMachine>,
    Vec<Spool>,
    Vec<NetworkFactory>,
) {
    let config = Arc::new(
        openraft::Config {
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            ..Default::default()
        }
        .validate()
        .expect("raft config"),
    );
    let mut rafts: Vec<Option<ArchiveRaft>> = Vec::new();
    let mut machines: Vec<ArchiveStateMachine> = Vec::new();
    let (mut spools, mut nets) = (Vec::new(), Vec::new());
    for (i, n) in nodes.iter().enumerate() {
        let (log, sm, spool) =
            chorus_archive::db::open_with_spool(&dir.join(format!("archive-{i}")), NODES[i].0, 100_000)
                .expect("archive db");
        spools.push(spool);
        let tls = chorus_cluster::tls::ClusterTls::load(&n.config.cluster).expect("tls");
        let net = NetworkFactory::new(&n.config.cluster.peers, tls);
        nets.push(net.clone());
        let raft = ArchiveRaft::new(raft_id(NODES[i].0), config.clone(), net, log, sm.clone())
            .await
            .expect("raft");
        assert!(n.cluster.raft.set(raft.clone()).is_ok());
        rafts.push(Some(raft));
        machines.push(sm);
    }
    let voter_ids: Vec<u64> = voters.iter().map(|v| raft_id(NODES[*v].0)).collect();
    let members: BTreeMap<u64, BasicNode> = all_members(nodes)
        .into_iter()
        .filter(|(id, _)| voter_ids.contains(id))
        .collect();
    rafts[0]
        .as_ref()
        .expect("raft")
        .initialize(members)
        .await
        .expect("initialize");

    (rafts, machines, spools, nets)
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
    use chorus_cluster::archive::RaftArchive;
    use chorus_core::archive::{Archive, ArchiveRecord};
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, net) = start(dir.path()).await;
    ready(&nodes).await;
    let (rafts, machines, spools, nets) = start_raft(&nodes, dir.path(), &[0, 1, 2]).await;
    let _l = leader(&rafts).await;
    let archives: Vec<Arc<RaftArchive>> = spools
        .iter()
        .map(|s| Arc::new(RaftArchive::new(s.clone(), "site")))
        .collect();
    for (i, a) in archives.iter().enumerate() {
        spawn_shipper(a, &rafts[i], &nets[i], &nodes[i]);
    }
    let rec = |i: usize| ArchiveRecord {
        from: "carol@chorus.test/phone".into(),
        to: "alice@chorus.test".into(),
        stamp_ms: i as u64,
        xml: format!("<message><body>{i}</body></message>"),
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
    use chorus_cluster::archive::{RaftArchive, reconcile_members};
    use chorus_core::archive::{Archive, ArchiveRecord};
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, _net) = start(dir.path()).await;
    ready(&nodes).await;
    // Only a1 and b1 vote; c1 must be brought in as a learner.
    let (rafts, machines, spools, nets) = start_raft(&nodes, dir.path(), &[0, 1]).await;
    let wanted = all_members(&nodes);
    for (i, r) in rafts.iter().enumerate() {
        let r = r.clone().expect("raft");
        tokio::spawn(reconcile_members(r, wanted.clone(), nodes[i].stop.subscribe()));
    }
    let archive = Arc::new(RaftArchive::new(spools[2].clone(), "c"));
    spawn_shipper(&archive, &rafts[2], &nets[2], &nodes[2]);
    for i in 0..5u64 {
        let rec = ArchiveRecord {
            from: "carol@x/p".into(),
            to: "alice@x".into(),
            stamp_ms: i,
            xml: format!("<m>{i}</m>"),
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
