//! The server side of the archive's Raft traffic: runs one request from a
//! verified archive member on the local Raft node. Raft messages must speak
//! for their sender (a vote or append names the caller as candidate or
//! leader); a forwarded write may carry only the caller's own spooled
//! records, its own audit entries, and compliance actions wrapped with
//! their audit entry, which this node stamps with the verified caller.

use crate::raft::ArchiveRaft;
use crate::raft::members::{MemberChange, MemberChangeError, change_members_here};
use crate::state_machine::ArchiveStateMachine;
use crate::types::{AuditEntry, Command, TypeConfig};
use openraft::RaftTypeConfig;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;

/// The verified sender of a Raft request.
pub struct Forwarder<'a> {
    /// Its node id (from its certificate).
    pub node_id: &'a str,
    /// Its configured site.
    pub site: &'a str,
    /// Its Raft id.
    pub raft_id: u64,
    /// Its configured cluster address.
    pub addr: &'a str,
    /// An operator removed it (it may still finish its own removal).
    pub removed: bool,
    /// Bound on how far ahead of our clock its timestamps may be (ms).
    pub max_clock_skew_ms: u64,
    /// The configured cluster address of a node id (membership changes
    /// use ours, never one a peer sends).
    pub addr_of: &'a (dyn Fn(&str) -> Option<String> + Sync),
}

/// Why a Raft request was not run.
#[derive(Debug)]
pub struct HandleError {
    /// The caller may not do this (PERMISSION_DENIED), rather than a
    /// malformed request.
    pub refused: bool,
    /// The reason.
    pub reason: String,
}

fn refused(reason: impl Into<String>) -> HandleError {
    HandleError {
        refused: true,
        reason: reason.into(),
    }
}

fn malformed(reason: impl Into<String>) -> HandleError {
    HandleError {
        refused: false,
        reason: reason.into(),
    }
}

fn parse<T: DeserializeOwned>(b: &[u8]) -> Result<T, HandleError> {
    crate::codec::decode(b).map_err(|e| malformed(format!("bad raft request: {e}")))
}

fn speaks_for(from: &Forwarder, named: Option<u64>, what: &str) -> Result<(), HandleError> {
    if named == Some(from.raft_id) {
        Ok(())
    } else {
        Err(refused(format!(
            "{} sent a {what} for another node",
            from.node_id
        )))
    }
}

/// Runs one Raft request of `kind` from `from` on the local node and
/// serializes the result.
pub async fn handle(
    raft: &ArchiveRaft,
    sm: Option<&ArchiveStateMachine>,
    kind: &str,
    body: &[u8],
    from: &Forwarder<'_>,
) -> Result<Vec<u8>, HandleError> {
    let out = match kind {
        "append" => {
            let req: AppendEntriesRequest<TypeConfig> = parse(body)?;
            speaks_for(from, req.vote.leader_id().voted_for(), "log append")?;
            purges_within_skew(&req.entries, from, chorus_core::time::now_millis())?;
            crate::codec::encode(&raft.append_entries(req).await)
        }
        "vote" => {
            let req: VoteRequest<<TypeConfig as RaftTypeConfig>::NodeId> = parse(body)?;
            speaks_for(from, req.vote.leader_id().voted_for(), "vote request")?;
            crate::codec::encode(&raft.vote(req).await)
        }
        "snapshot" => {
            let req: InstallSnapshotRequest<TypeConfig> = parse(body)?;
            speaks_for(from, req.vote.leader_id().voted_for(), "snapshot")?;
            crate::codec::encode(&raft.install_snapshot(req).await)
        }
        _ if from.removed => return Err(refused(format!("{} was removed from the archive", from.node_id))),
        "write" => {
            // A follower forwards a spool batch or an audited action to us.
            let cmd = admit_forwarded(parse(body)?, from, chorus_core::time::now_millis())?;
            let r = raft
                .client_write(cmd)
                .await
                .map(|resp| resp.data)
                .map_err(|e| e.to_string());
            crate::codec::encode(&r)
        }
        "chain" => {
            // A member verifying its archive compares chains with ours.
            let link: u64 = parse(body)?;
            let sm = sm.ok_or_else(|| malformed("this node has no archive replica"))?;
            let point = chain_point(sm, link).map_err(malformed)?;
            crate::codec::encode(&point)
        }
        "elect" => {
            // The leader is shutting down and hands over to us: only the
            // leader may ask (anyone else would only force elections).
            let leader = raft.metrics().borrow().current_leader;
            if leader != Some(from.raft_id) {
                return Err(refused(format!(
                    "{} asked for an election but does not lead",
                    from.node_id
                )));
            }
            let r = match raft.trigger().elect().await {
                Ok(()) => Ok(()),
                Err(openraft::error::Fatal::Stopped) => Err(crate::raft::net::ElectRefusal::Stopping),
                Err(e) => Err(crate::raft::net::ElectRefusal::Failed(e.to_string())),
            };
            crate::codec::encode(&r)
        }
        "members" => {
            let (change, entry) = admit_member_change(parse(body)?, from, chorus_core::time::now_millis())?;
            tracing::info!(by = from.node_id, ?change, "archive membership change forwarded");
            // Recorded here, whatever the forwarding node did or did not audit.
            let audited = raft
                .client_write(Command::Audit(entry))
                .await
                .map_err(|e| match e {
                    openraft::error::RaftError::APIError(
                        openraft::error::ClientWriteError::ForwardToLeader(_),
                    ) => MemberChangeError::NotLeader(e.to_string()),
                    e => MemberChangeError::Failed(e.to_string()),
                });
            let r = match audited {
                Ok(_) => change_members_here(raft, &change).await,
                Err(e) => Err(e),
            };
            crate::codec::encode(&r)
        }
        other => return Err(malformed(format!("unknown raft message kind {other:?}"))),
    }
    .map_err(|e| malformed(e.to_string()))?;
    Ok(out)
}

/// Our chain head and the hash of link `link`, if we have it.
fn chain_point(sm: &ArchiveStateMachine, link: u64) -> Result<crate::chain::ChainPoint, String> {
    Ok(crate::chain::ChainPoint {
        head: sm.chain_head().map_err(|e| e.to_string())?,
        hash_at: sm
            .chain_links(link, 1)
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|(n, _)| *n == link)
            .map(|(_, l)| l.hash),
    })
}

/// Checks a forwarded write against what its sender may propose, at our
/// clock `now_ms`; returns the command to propose.
pub fn admit_forwarded(cmd: Command, from: &Forwarder, now_ms: u64) -> Result<Command, HandleError> {
    let horizon = now_ms.saturating_add(from.max_clock_skew_ms);
    let ahead = |at: u64, what: &str| -> Result<(), HandleError> {
        if at > horizon {
            metrics::counter!("chorus_cluster_clock_skew_refused_total", "source" => "archive").increment(1);
            return Err(refused(format!(
                "{what} from {} is {} ms ahead of this node's clock (cluster.max_clock_skew_ms is {})",
                from.node_id,
                at - now_ms,
                from.max_clock_skew_ms
            )));
        }
        Ok(())
    };
    match cmd {
        Command::Append(records) => {
            for r in &records {
                if !is_own_archive_id(&r.id, from.node_id) || r.site != from.site {
                    return Err(refused(format!(
                        "{} may not append record {}",
                        from.node_id, r.id
                    )));
                }
                ahead(r.stamp_ms, "a record")?;
            }
            Ok(Command::Append(records))
        }
        Command::Audit(mut entry) => {
            ahead(entry.at_ms, "an audit entry")?;
            entry.node = from.node_id.to_owned();
            Ok(Command::Audit(entry))
        }
        Command::Audited { mut entry, action } if action.is_compliance_action() => {
            ahead(entry.at_ms, "an audit entry")?;
            if let Some(at) = action_time(&action) {
                ahead(at, "a compliance action's time")?;
            }
            entry.node = from.node_id.to_owned();
            Ok(Command::Audited { entry, action })
        }
        other => Err(refused(format!(
            "{} may not forward {}",
            from.node_id,
            command_name(&other)
        ))),
    }
}

/// The time a compliance action is judged at, where it carries one: a
/// purge deletes what expired by then, so a time ahead of ours would
/// purge early.
fn action_time(c: &Command) -> Option<u64> {
    match c {
        Command::Purge { now_ms } => Some(*now_ms),
        Command::ReleaseHold { at_ms, .. } => Some(*at_ms),
        Command::PlaceHold(h) => Some(h.created_ms),
        Command::Audited { action, .. } => action_time(action),
        _ => None,
    }
}

/// Refuses a log append (from the leader) carrying a purge judged further
/// ahead of our clock than the skew bound: a leader whose clock runs ahead
/// cannot get an early purge committed by followers whose clocks do not.
/// The leader retries the append, and it succeeds once our clock is there.
pub fn purges_within_skew(
    entries: &[openraft::Entry<TypeConfig>],
    from: &Forwarder,
    now_ms: u64,
) -> Result<(), HandleError> {
    let horizon = now_ms.saturating_add(from.max_clock_skew_ms);
    for e in entries {
        if let openraft::EntryPayload::Normal(cmd) = &e.payload
            && let Some(at) = action_time(cmd).filter(|at| *at > horizon)
        {
            metrics::counter!("chorus_cluster_clock_skew_refused_total", "source" => "archive").increment(1);
            return Err(refused(format!(
                "a compliance action from {} at log index {} is judged {} ms ahead of this node's clock \
                 (cluster.max_clock_skew_ms is {})",
                from.node_id,
                e.log_id.index,
                at - now_ms,
                from.max_clock_skew_ms
            )));
        }
    }
    Ok(())
}

/// Checks a forwarded membership change: it may name only configured
/// nodes, and an added node gets the address this node's configuration
/// gives it (a peer cannot point the group at an address of its choosing).
/// Returns the change to apply and the audit entry recording who asked.
pub fn admit_member_change(
    change: MemberChange,
    from: &Forwarder,
    now_ms: u64,
) -> Result<(MemberChange, AuditEntry), HandleError> {
    let change = match change {
        MemberChange::Add { id, voter, .. } => {
            let addr = (from.addr_of)(&id).ok_or_else(|| {
                refused(format!(
                    "{} asked to add {id}, which is not a configured node",
                    from.node_id
                ))
            })?;
            MemberChange::Add { id, addr, voter }
        }
        MemberChange::Remove { id } => {
            if (from.addr_of)(&id).is_none() {
                return Err(refused(format!(
                    "{} asked to remove {id}, which is not a configured node",
                    from.node_id
                )));
            }
            MemberChange::Remove { id }
        }
    };
    let entry = AuditEntry {
        at_ms: now_ms,
        actor: format!("node {}", from.node_id),
        role: "cluster".into(),
        action: "members.change".into(),
        detail: serde_json::to_string(&change).unwrap_or_default(),
        node: from.node_id.to_owned(),
        addr: from.addr.to_owned(),
    };
    Ok((change, entry))
}

/// Whether `id` is an archive id `<node>-<sequence>` of `node`.
fn is_own_archive_id(id: &str, node: &str) -> bool {
    id.strip_prefix(node)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Append(_) => "records",
        Command::PlaceHold(_) => "an unaudited hold",
        Command::ReleaseHold { .. } => "an unaudited hold release",
        Command::SetRetention(_)
        | Command::ProposeRetention { .. }
        | Command::ApproveRetention { .. }
        | Command::CancelRetention { .. } => "an unaudited retention change",
        Command::Purge { .. } => "an unaudited purge",
        Command::Audit(_) => "an audit entry",
        Command::Audited { .. } => "an audited non-compliance command",
        Command::Removed { .. } => "a membership exclusion",
    }
}

#[cfg(test)]
mod tests;
