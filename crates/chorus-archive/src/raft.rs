//! The archive's Raft node (openraft 0.9) and everything that drives it:
//! the network over a byte [`net::Transport`] the cluster provides
//! (`net`), the spool shipper and proposals (`shipper`), membership changes
//! and their reconciliation (`members`), the server side of requests from
//! other members with what each may ask (`serve`), and the leadership
//! handover before a leader stops (`handover`). The cluster crate only
//! carries bytes between verified nodes; every decision about what a Raft
//! message means is made here.

pub mod handover;
pub mod members;
pub mod net;
pub mod serve;
pub mod shipper;

use crate::types::TypeConfig;
use tokio::sync::watch;

pub use members::{MemberChange, MemberChangeError, change_members, change_members_here, reconcile_members};
pub use net::{ArchiveNet, Transport, TransportError};
pub use shipper::{ProposeError, RaftArchive, propose};

/// The archive's Raft node.
pub type ArchiveRaft = openraft::Raft<TypeConfig>;

/// The Raft node id of a cluster node: its stable tag.
pub fn raft_id(node_id: &str) -> u64 {
    chorus_core::hlc::node_tag(node_id) as u64
}

/// Whether the Raft membership (voters or learners) lists `raft_id`.
pub fn in_raft_membership(raft: &ArchiveRaft, raft_id: u64) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    m.membership_config
        .membership()
        .nodes()
        .any(|(id, _)| *id == raft_id)
}

/// Whether this node currently leads the archive's Raft group.
pub fn leads(raft: &ArchiveRaft) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    m.current_leader == Some(m.id)
}

/// Waits for the next tick of a periodic task; false once `stop` flips
/// (the task should then return).
pub async fn tick_or_stop(tick: &mut tokio::time::Interval, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tick.tick() => true,
        _ = stop.changed() => false,
    }
}
