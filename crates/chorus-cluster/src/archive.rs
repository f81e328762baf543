//! The Raft-replicated archive as the XMPP layer sees it: `append` writes
//! the record to this node's durable spool and returns its archive id; a
//! shipper proposes spooled batches to the Raft group (forwarding to the
//! leader when this node is a follower) and drops them once committed.

use crate::raft_net::{ArchiveRaft, NetworkFactory};
use chorus_archive::spool::Spool;
use chorus_archive::types::{Command, Record};
use chorus_core::archive::{Archive, ArchiveError, ArchiveRecord};
use openraft::error::{ClientWriteError, RaftError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Records per Raft proposal.
pub const SHIP_BATCH_MAX: usize = 512;
/// Pause after a failed proposal, in milliseconds.
const SHIP_RETRY_MS: u64 = 200;

/// The archive of a clustered node.
pub struct RaftArchive {
    spool: Spool,
    site: String,
    wake: Arc<Notify>,
}

impl RaftArchive {
    /// An archive spooling into `spool` for this node's site.
    pub fn new(spool: Spool, site: &str) -> RaftArchive {
        RaftArchive {
            spool,
            site: site.to_owned(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Records waiting in the spool.
    pub fn spooled(&self) -> u64 {
        self.spool.len()
    }

    /// Runs the shipper until `stop`.
    pub async fn ship(&self, raft: ArchiveRaft, net: NetworkFactory, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(SHIP_RETRY_MS)) => {}
                _ = stop.changed() => return,
            }
            loop {
                let batch = match self.spool.oldest(SHIP_BATCH_MAX) {
                    Ok(b) if b.is_empty() => break,
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the archive spool");
                        break;
                    }
                };
                let (seqs, records): (Vec<u64>, Vec<Record>) = batch.into_iter().unzip();
                match propose(&raft, &net, Command::Append(records)).await {
                    Ok(()) => {
                        if let Err(e) = self.spool.remove(&seqs) {
                            tracing::error!(error = %e, "cannot trim the archive spool");
                            break;
                        }
                        metrics::counter!("chorus_archive_shipped_total").increment(seqs.len() as u64);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, spooled = self.spool.len(), "archive batch not committed yet");
                        break;
                    }
                }
            }
            metrics::gauge!("chorus_archive_spool_depth").set(self.spool.len() as f64);
        }
    }
}

/// Commits a batch through the leader.
async fn propose(raft: &ArchiveRaft, net: &NetworkFactory, cmd: Command) -> Result<(), String> {
    match raft.client_write(cmd.clone()).await {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => match f.leader_id {
            Some(leader) => net.forward_write(leader, &cmd).await.map(|_| ()),
            None => Err("no archive leader".into()),
        },
        Err(e) => Err(e.to_string()),
    }
}

impl Archive for RaftArchive {
    fn enabled(&self) -> bool {
        true
    }

    fn append(&self, r: ArchiveRecord) -> Result<Option<String>, ArchiveError> {
        let record = Record {
            id: String::new(),
            from: r.from,
            to: r.to,
            site: self.site.clone(),
            stamp_ms: r.stamp_ms,
            xml: r.xml,
        };
        let id = self
            .spool
            .append(record)
            .map_err(|e| ArchiveError::Unavailable(e.to_string()))?;
        self.wake.notify_one();
        Ok(Some(id))
    }
}

/// How often the leader checks that every configured node is a member.
const RECONCILE_INTERVAL_SECS: u64 = 5;

/// While this node leads the archive's Raft group, adds every configured
/// node that is not yet a member as a learner, so nodes beyond the voters
/// (a site's second node, say) replicate the archive and can ship their
/// spools. Runs until `stop`.
pub async fn reconcile_members(
    raft: ArchiveRaft,
    wanted: std::collections::BTreeMap<u64, openraft::BasicNode>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(RECONCILE_INTERVAL_SECS));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let m = raft.metrics().borrow().clone();
        if m.current_leader != Some(m.id) {
            continue;
        }
        let members: std::collections::BTreeSet<u64> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        for (id, node) in &wanted {
            if !members.contains(id) {
                tracing::info!(node = id, addr = %node.addr, "adding a node to the archive as a learner");
                if let Err(e) = raft.add_learner(*id, node.clone(), false).await {
                    tracing::warn!(node = id, error = %e, "cannot add a learner yet");
                }
            }
        }
    }
}
