//! Runs the compliance archive of a node: the archive database with its
//! spool, the openraft node (one voter per site by default; a single node
//! is a one-voter group), bootstrap of the group, membership
//! reconciliation, the spool shipper, the search indexer, on the leader the
//! scheduled retention runs, the status report and, at shutdown, the
//! leadership handover. The server only wires it: it hands in the network
//! (the cluster's transport, or none for a single node).

use crate::compliance::Compliance;
use crate::raft::{ArchiveNet, ArchiveRaft, RaftArchive, leads, raft_id, tick_or_stop};
use crate::search::SearchIndex;
use crate::state_machine::ArchiveStateMachine;
use crate::types::Command;
use anyhow::Context as _;
use chorus_core::archive::{Archive, NoArchive};
use chorus_core::config::{ArchiveMode, Config};
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Log entries between snapshots.
const RAFT_SNAPSHOT_EVERY: u64 = 100_000;

/// A status report (`/archive/status`), cheap to call.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// The running archive.
pub struct ArchiveRuntime {
    /// The seam handed to the XMPP layer.
    pub archive: Arc<dyn Archive>,
    /// The Raft node, when archiving is on.
    pub raft: Option<ArchiveRaft>,
    /// `/archive/status`.
    pub status: Option<StatusFn>,
    /// The compliance operations behind the API.
    pub compliance: Option<Arc<Compliance>>,
    /// The local replica (for gauges).
    pub sm: Option<ArchiveStateMachine>,
    net: Option<ArchiveNet>,
    stop: watch::Sender<bool>,
}

/// How often the search index picks up newly committed records. Each pass
/// commits a tantivy segment, whose fixed cost (fresh segment writers,
/// one more small segment to merge) made up most of the indexing when
/// it ran twice a second. A search catches up before it answers, so it
/// still sees everything committed; it indexes at most this long's
/// records first.
const INDEX_INTERVAL: Duration = Duration::from_secs(5);

/// Opens the archive and starts its Raft node and shipper; `net` reaches
/// the other configured nodes.
pub async fn start(config: &Config, net: ArchiveNet) -> anyhow::Result<ArchiveRuntime> {
    let (stop, stop_rx) = watch::channel(false);
    if !config.archive.enabled {
        return Ok(ArchiveRuntime {
            archive: Arc::new(NoArchive),
            raft: None,
            status: None,
            compliance: None,
            sm: None,
            net: None,
            stop,
        });
    }
    let me = config.cluster.node_id.clone();
    let dir = config.server.data_dir.join("archive");
    let (log, sm, spool) = crate::db::open_with_spool(&dir, &me, config.archive.spool_records_max)?;
    sm.set_background_nice(config.archive.background_nice);
    // Sites may be continents apart, but heartbeats are pipelined: what a
    // follower's timeout must cover is a gap between heartbeats, not the
    // round trip.
    let (heartbeat, election_min, election_max) = config.archive.raft_timing_ms();
    let raft_config = openraft::Config {
        cluster_name: "chorus-archive".into(),
        heartbeat_interval: heartbeat,
        election_timeout_min: election_min,
        election_timeout_max: election_max,
        // A snapshot streams the whole archive to a file: take one every
        // RAFT_SNAPSHOT_EVERY entries; followers catch up from the log
        // meanwhile.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(RAFT_SNAPSHOT_EVERY),
        // Entries carry whole spool batches: keep one AppendEntries well
        // under the gRPC message limit when a follower catches up.
        max_payload_entries: crate::raft::shipper::RAFT_ENTRIES_PER_MESSAGE,
        ..Default::default()
    }
    .validate()
    .context("archive raft configuration")?;
    let raft = ArchiveRaft::new(raft_id(&me), Arc::new(raft_config), net.clone(), log, sm.clone())
        .await
        .context("start the archive's raft node")?;
    bootstrap(config, &raft).await?;
    tokio::spawn(crate::raft::reconcile_members(
        raft.clone(),
        Some(sm.clone()),
        all_nodes(config),
        crate::raft::members::RECONCILE_INTERVAL,
        stop.subscribe(),
    ));
    let mut archive = RaftArchive::new(spool, &config.cluster.site).with_state_machine(sm.clone());
    if config.archive.mode == ArchiveMode::Strict {
        archive = archive.strict(Duration::from_millis(config.archive.strict_timeout_ms));
    }
    let archive = Arc::new(archive);
    let (a, r, n) = (archive.clone(), raft.clone(), net.clone());
    tokio::spawn(async move { a.ship(r, n, stop_rx).await });
    // Opened on its lane, so tantivy's own indexing and merging threads
    // inherit the lane's lower priority.
    let index_lane = crate::background::Lane::start("index", config.archive.background_nice)
        .context("cannot start the search indexer's thread")?;
    let index_dir = config.server.data_dir.join("archive-index");
    let index = Arc::new(
        index_lane
            .run(move || SearchIndex::open(&index_dir))
            .await?
            .context("open the archive's search index")?,
    );
    tokio::spawn(run_indexer(
        index.clone(),
        sm.clone(),
        index_lane,
        stop.subscribe(),
    ));
    tokio::spawn(run_retention(
        raft.clone(),
        me.clone(),
        Duration::from_secs(config.archive.retention_interval_secs),
        stop.subscribe(),
    ));
    let export_dir = export_dir(config)?;
    let compliance = Arc::new(Compliance {
        raft: raft.clone(),
        net: net.clone(),
        sm: sm.clone(),
        index,
        node_id: me.clone(),
        domain: config.server.domain.clone(),
        peers: all_nodes_by_name(config),
        retention_min_days: config.archive.retention_min_days,
        files_dir: config.server.data_dir.join("files"),
        export_dir,
        heavy: crate::compliance::HeavyGate::default(),
    });
    let status = status_fn(raft.clone(), sm.clone(), archive.clone());
    Ok(ArchiveRuntime {
        archive,
        raft: Some(raft),
        status: Some(status),
        compliance: Some(compliance),
        sm: Some(sm),
        net: Some(net),
        stop,
    })
}

/// Keeps the search index up with the committed archive.
async fn run_indexer(
    index: Arc<SearchIndex>,
    sm: ArchiveStateMachine,
    lane: crate::background::Lane,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(INDEX_INTERVAL);
    while tick_or_stop(&mut tick, &mut stop).await {
        let (i, s) = (index.clone(), sm.clone());
        match lane.run(move || i.catch_up(&s)).await {
            Ok(Ok(n)) if n > 0 => tracing::debug!(records = n, "search index caught up"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "search indexing failed"),
            Err(e) => tracing::error!(error = %e, "search indexer panicked"),
        }
    }
}

/// While this node leads, proposes a purge every `every`: every site then
/// purges the same expired, unheld records.
async fn run_retention(
    raft: ArchiveRaft,
    raft_node_name: String,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    while tick_or_stop(&mut tick, &mut stop).await {
        if !leads(&raft) {
            continue;
        }
        let now_ms = chorus_core::time::now_millis();
        // Scheduled purges are audited like manual ones.
        let entry = crate::types::AuditEntry {
            at_ms: now_ms,
            actor: "retention-schedule".into(),
            role: "system".into(),
            action: "retention.run".into(),
            detail: serde_json::json!({ "scheduled": true }).to_string(),
            node: raft_node_name.clone(),
            addr: String::new(),
        };
        let purge = Command::Audited {
            entry,
            action: Box::new(Command::Purge { now_ms }),
        };
        match raft.client_write(purge).await {
            Ok(r) if r.data.purged > 0 => tracing::info!(purged = r.data.purged, "retention purged records"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention run not committed"),
        }
    }
}

/// `<data_dir>/archive-exports` (0700), where exports are built; files a
/// crash left behind are removed (they are temporary by design).
fn export_dir(config: &Config) -> anyhow::Result<std::path::PathBuf> {
    let dir = config.server.data_dir.join("archive-exports");
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("create {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("make {} private (0700)", dir.display()))?;
    }
    for e in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(".export-") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(dir)
}

/// Every configured node's cluster address by node id.
fn all_nodes_by_name(config: &Config) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = config
        .cluster
        .peers
        .iter()
        .map(|p| (p.id.clone(), p.addr.clone()))
        .collect();
    out.insert(
        config.cluster.node_id.clone(),
        config.cluster.listen.map(|a| a.to_string()).unwrap_or_default(),
    );
    out
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
        // Cheap reads only (this endpoint needs no token): the full digest
        // is /api/v1/archive/digest; the chain head commits to the same
        // history, so equal heads on two sites mean equal archives.
        let chain = sm.chain_head().unwrap_or_default();
        serde_json::json!({
            "raft_id": m.id,
            "state": format!("{:?}", m.state),
            "term": m.current_term,
            "leader": m.current_leader,
            "last_log_index": m.last_log_index,
            "last_applied": m.last_applied.map(|l| l.index),
            "records": sm.live_records().unwrap_or(0),
            "digest": chain.hash,
            "chain": chain,
            "spooled": archive.spooled(),
        })
    })
}

impl ArchiveRuntime {
    /// Stops the shipper, hands leadership over if this node leads, and
    /// stops the Raft node (the spool keeps what is left).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Some(r) = self.raft {
            if let Some(net) = &self.net {
                crate::raft::handover::hand_over(&r, net).await;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), r.shutdown()).await;
        }
    }
}
