//! The archive's Raft group over the cluster's mTLS gRPC: three nodes (one
//! voter per site) elect a leader, replicate archive batches to every site,
//! and keep committing after the leader is stopped.

mod common;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_raft_replicates_and_survives_leader_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, _net) = start(dir.path()).await;
    ready(&nodes).await;
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
    for (i, n) in nodes.iter().enumerate() {
        let (log, sm) =
            chorus_archive::db::open(&dir.path().join(format!("archive-{i}"))).expect("archive db");
        let tls = chorus_cluster::tls::ClusterTls::load(&n.config.cluster).expect("tls");
        let net = NetworkFactory::new(&n.config.cluster.peers, tls);
        let raft = ArchiveRaft::new(raft_id(NODES[i].0), config.clone(), net, log, sm.clone())
            .await
            .expect("raft");
        assert!(n.cluster.raft.set(raft.clone()).is_ok());
        rafts.push(Some(raft));
        machines.push(sm);
    }
    let members: BTreeMap<u64, BasicNode> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                raft_id(NODES[i].0),
                BasicNode::new(n.config.cluster.listen.expect("listen").to_string()),
            )
        })
        .collect();
    rafts[0]
        .as_ref()
        .expect("raft")
        .initialize(members)
        .await
        .expect("initialize");

    let l = leader(&rafts).await;
    let r = rafts[l]
        .as_ref()
        .expect("leader")
        .client_write(batch("first", 50))
        .await
        .expect("commit");
    assert_eq!(r.data.inserted, 50);
    eventually("every site applied the first batch", || {
        machines
            .iter()
            .all(|m| m.records().map(|r| r.len()).unwrap_or(0) == 50)
    })
    .await;

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
    eventually("the survivors applied both batches", || {
        survivors
            .iter()
            .all(|i| machines[*i].records().map(|r| r.len()).unwrap_or(0) == 70)
    })
    .await;
    let order = |i: usize| {
        machines[i]
            .records()
            .expect("records")
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        order(survivors[0]),
        order(survivors[1]),
        "same order on every site"
    );
    for r in rafts.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(5), r.shutdown()).await;
    }
}
