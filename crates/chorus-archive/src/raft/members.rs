//! Changes to the archive group: an operator adds a configured node (as a
//! voter or a learner) or removes one, on the leader (forwarded there when
//! asked elsewhere), retried while the group elects; and the leader's
//! reconciliation that makes every configured node at least a learner,
//! while a node an operator removed stops campaigning.

use crate::raft::{ArchiveNet, ArchiveRaft, leads, raft_id, tick_or_stop};
use crate::state_machine::ArchiveStateMachine;
use crate::types::Command;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// An operator's change to the archive group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MemberChange {
    /// Add a configured node (as a voter, or as a learner).
    Add {
        /// Its node id.
        id: String,
        /// Its cluster address.
        addr: String,
        /// Voter (true) or learner.
        voter: bool,
    },
    /// Remove a node (voter or learner).
    Remove {
        /// Its node id.
        id: String,
    },
}

/// How long `change_members` keeps trying while the group has no leader
/// or leadership moves under the request.
pub const MEMBER_CHANGE_WAIT: Duration = Duration::from_secs(15);

/// Why a membership change did not happen; travels between nodes, so a
/// retry is decided on the variant, never on the text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MemberChangeError {
    /// It reached a node that no longer leads (openraft's ForwardToLeader).
    #[error("not the leader: {0}")]
    NotLeader(String),
    /// No leader is known (no quorum, or an election under way).
    #[error("the archive has no leader (no quorum)")]
    NoLeader,
    /// The change itself is refused or failed.
    #[error("{0}")]
    Failed(String),
}

impl MemberChangeError {
    /// Whether waiting for a (new) leader and trying again may help.
    pub fn retry(&self) -> bool {
        matches!(
            self,
            MemberChangeError::NotLeader(_) | MemberChangeError::NoLeader
        )
    }
}

/// Applies a membership change on the leader, forwarding it there when
/// this node follows. While the group elects a leader (removing a running
/// voter can cause one election), the change is retried for up to
/// [`MEMBER_CHANGE_WAIT`]; every step of a change is idempotent, so a retry
/// after a half-done attempt completes it.
pub async fn change_members(
    raft: &ArchiveRaft,
    net: &ArchiveNet,
    change: &MemberChange,
) -> Result<String, MemberChangeError> {
    let deadline = Instant::now() + MEMBER_CHANGE_WAIT;
    let mut metrics = raft.metrics();
    loop {
        let (me, leader) = {
            let m = metrics.borrow_and_update();
            (m.id, m.current_leader)
        };
        let result = match leader {
            Some(l) if l == me => change_members_here(raft, change).await,
            Some(l) => net.forward_members(l, change).await,
            None => Err(MemberChangeError::NoLeader),
        };
        match result {
            Err(e) if e.retry() && Instant::now() < deadline => {
                // Wake on the next metrics change (a new leader), or poll.
                let _ = tokio::time::timeout(Duration::from_millis(250), metrics.changed()).await;
            }
            other => return other,
        }
    }
}

/// Applies a membership change on this node, which must lead.
pub async fn change_members_here(
    raft: &ArchiveRaft,
    change: &MemberChange,
) -> Result<String, MemberChangeError> {
    let err = |e: &RaftError<u64, ClientWriteError<u64, BasicNode>>| match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            MemberChangeError::NotLeader(e.to_string())
        }
        _ => MemberChangeError::Failed(e.to_string()),
    };
    let voters: BTreeSet<u64> = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    match change {
        MemberChange::Add { id, addr, voter } => {
            let nid = raft_id(id);
            raft.client_write(Command::Removed {
                id: nid,
                removed: false,
            })
            .await
            .map_err(|e| err(&e))?;
            raft.add_learner(nid, BasicNode::new(addr.clone()), true)
                .await
                .map_err(|e| err(&e))?;
            if *voter && !voters.contains(&nid) {
                raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([nid])), false)
                    .await
                    .map_err(|e| err(&e))?;
            }
            Ok(format!(
                "{id} is now a {}",
                if *voter { "voter" } else { "learner" }
            ))
        }
        MemberChange::Remove { id } => {
            let nid = raft_id(id);
            if voters.contains(&nid) && voters.len() == 1 {
                return Err(MemberChangeError::Failed(format!(
                    "{id} is the last voter; add another first"
                )));
            }
            raft.client_write(Command::Removed {
                id: nid,
                removed: true,
            })
            .await
            .map_err(|e| err(&e))?;
            if voters.contains(&nid) {
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([nid])), false)
                    .await
                    .map_err(|e| err(&e))?;
            }
            let still = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .nodes()
                .any(|(n, _)| *n == nid);
            if still {
                raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([nid])), false)
                    .await
                    .map_err(|e| err(&e))?;
            }
            Ok(format!("{id} removed from the archive group"))
        }
    }
}

/// How often the leader checks that every configured node is a member.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(5);

/// While this node leads the archive's Raft group, adds every configured
/// node that is not yet a member as a learner, so nodes beyond the voters
/// (a site's second node, say) replicate the archive and can ship their
/// spools. On every node, it also turns this node's elections off while an
/// operator has it removed (and on again once re-added). Runs until `stop`.
pub async fn reconcile_members(
    raft: ArchiveRaft,
    sm: Option<ArchiveStateMachine>,
    wanted: BTreeMap<u64, BasicNode>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    let mut standing_down = false;
    while tick_or_stop(&mut tick, &mut stop).await {
        let removed = sm
            .as_ref()
            .and_then(|sm| sm.removed_members().ok())
            .unwrap_or_default();
        // A node an operator removed keeps running until it is shut down;
        // its campaigns (its log may lack the membership that drops it)
        // would only unseat the leader, so it stops campaigning.
        let me = raft.metrics().borrow().id;
        if removed.contains(&me) != standing_down {
            standing_down = !standing_down;
            tracing::info!(
                standing_down,
                "this node's archive membership changed; elections {}",
                if standing_down { "off" } else { "on" }
            );
            raft.runtime_config().elect(!standing_down);
        }
        if !leads(&raft) {
            continue;
        }
        let m = raft.metrics().borrow().clone();
        let members: std::collections::BTreeSet<u64> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        for (id, node) in &wanted {
            if !members.contains(id) && !removed.contains(id) {
                tracing::info!(node = id, addr = %node.addr, "adding a node to the archive as a learner");
                if let Err(e) = raft.add_learner(*id, node.clone(), false).await {
                    tracing::warn!(node = id, error = %e, "cannot add a learner yet");
                }
            }
        }
    }
}
