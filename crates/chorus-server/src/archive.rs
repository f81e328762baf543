//! Starts the compliance archive of a node: the archive database with its
//! spool, the openraft node (one voter per site by default; a single node
//! is a one-voter group), bootstrap of the group, and the spool shipper.

use anyhow::Context as _;
use chorus_admin::StatusFn;
use chorus_archive::state_machine::ArchiveStateMachine;
use chorus_cluster::archive::RaftArchive;
use chorus_cluster::raft_net::{ArchiveRaft, NetworkFactory, raft_id};
use chorus_cluster::tls::ClusterTls;
use chorus_core::archive::{Archive, NoArchive};
use chorus_core::config::Config;
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// Raft heartbeat, in milliseconds (sites may be continents apart).
const RAFT_HEARTBEAT_MS: u64 = 250;
/// Raft election timeout range, in milliseconds.
const RAFT_ELECTION_MS: (u64, u64) = (1000, 2000);

/// The running archive.
pub struct ArchiveRuntime {
    /// The seam handed to the XMPP layer.
    pub archive: Arc<dyn Archive>,
    /// The Raft node, when archiving is on.
    pub raft: Option<ArchiveRaft>,
    /// `/archive/status`.
    pub status: Option<StatusFn>,
    stop: watch::Sender<bool>,
}

/// Opens the archive and starts its Raft node and shipper.
pub async fn start(config: &Config, tls: Option<&ClusterTls>) -> anyhow::Result<ArchiveRuntime> {
    let (stop, stop_rx) = watch::channel(false);
    if !config.archive.enabled {
        return Ok(ArchiveRuntime {
            archive: Arc::new(NoArchive),
            raft: None,
            status: None,
            stop,
        });
    }
    let me = config.cluster.node_id.clone();
    let dir = config.server.data_dir.join("archive");
    let (log, sm, spool) = chorus_archive::db::open_with_spool(&dir, &me, config.archive.spool_records_max)?;
    let raft_config = openraft::Config {
        cluster_name: "chorus-archive".into(),
        heartbeat_interval: RAFT_HEARTBEAT_MS,
        election_timeout_min: RAFT_ELECTION_MS.0,
        election_timeout_max: RAFT_ELECTION_MS.1,
        ..Default::default()
    }
    .validate()
    .context("archive raft configuration")?;
    let net = match tls {
        Some(t) => NetworkFactory::new(&config.cluster.peers, t.clone()),
        None => NetworkFactory::alone(),
    };
    let raft = ArchiveRaft::new(raft_id(&me), Arc::new(raft_config), net.clone(), log, sm.clone())
        .await
        .context("start the archive's raft node")?;
    bootstrap(config, &raft).await?;
    tokio::spawn(chorus_cluster::archive::reconcile_members(
        raft.clone(),
        all_nodes(config),
        stop.subscribe(),
    ));
    let archive = Arc::new(RaftArchive::new(spool, &config.cluster.site));
    let (a, r) = (archive.clone(), raft.clone());
    tokio::spawn(async move { a.ship(r, net, stop_rx).await });
    let status = status_fn(raft.clone(), sm, archive.clone());
    Ok(ArchiveRuntime {
        archive,
        raft: Some(raft),
        status: Some(status),
        stop,
    })
}

/// Every configured node (this one and its peers) with its cluster address.
fn all_nodes(config: &Config) -> BTreeMap<u64, BasicNode> {
    let me = (
        config.cluster.node_id.clone(),
        config.cluster.listen.map(|a| a.to_string()).unwrap_or_default(),
    );
    std::iter::once(me)
        .chain(
            config
                .cluster
                .peers
                .iter()
                .map(|p| (p.id.clone(), p.addr.clone())),
        )
        .map(|(id, addr)| (raft_id(&id), BasicNode::new(addr)))
        .collect()
}

/// The voter with the smallest id creates the group once; the others join
/// through it. Nodes that are not voters join as learners (see
/// `reconcile_members`).
async fn bootstrap(config: &Config, raft: &ArchiveRaft) -> anyhow::Result<()> {
    let voters = config.archive_voters();
    let me = &config.cluster.node_id;
    if voters.iter().min() != Some(me) || raft.is_initialized().await.context("read raft state")? {
        return Ok(());
    }
    let all = all_nodes(config);
    let members: BTreeMap<u64, BasicNode> = voters
        .iter()
        .filter_map(|v| all.get(&raft_id(v)).map(|n| (raft_id(v), n.clone())))
        .collect();
    tracing::info!(voters = ?voters, "initializing the archive's raft group");
    raft.initialize(members)
        .await
        .context("initialize the archive's raft group")?;
    Ok(())
}

fn status_fn(raft: ArchiveRaft, sm: ArchiveStateMachine, archive: Arc<RaftArchive>) -> StatusFn {
    Arc::new(move || {
        let m = raft.metrics().borrow().clone();
        let (records, digest) = sm.digest().unwrap_or((0, String::new()));
        serde_json::json!({
            "raft_id": m.id,
            "state": format!("{:?}", m.state),
            "term": m.current_term,
            "leader": m.current_leader,
            "last_log_index": m.last_log_index,
            "last_applied": m.last_applied.map(|l| l.index),
            "records": records,
            "digest": digest,
            "spooled": archive.spooled(),
        })
    })
}

impl ArchiveRuntime {
    /// Stops the shipper and the Raft node (the spool keeps what is left).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Some(r) = self.raft {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), r.shutdown()).await;
        }
    }
}
