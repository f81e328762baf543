//! The compliance operations behind the HTTP API and `chorus archive`:
//! search, conversation view, legal holds, retention (`retention.rs`),
//! exports (`exports.rs`), the audit trail, the chain and its verification,
//! the digest and archive membership. Every action an officer or admin
//! takes is committed to the audit trail through Raft with who, when, from
//! which address and what was asked: a change travels with its entry in
//! one command; a read is answered only once its entry (with the result
//! count) is committed. Without a quorum there is no unaudited access, and
//! the caller is told to retry or ask another site. Only the counts and
//! hashes (digest, chain head) are read without an entry: they show no
//! content.

mod exports;
mod retention;
mod verify;

pub use exports::ExportSource;
pub use retention::RetentionChange;

use crate::raft::{ArchiveNet, ArchiveRaft, MemberChange, change_members, propose, raft_id};
use crate::search::{SEARCH_LIMIT_MAX, SearchIndex, SearchPage, SearchQuery};
use crate::state_machine::ArchiveStateMachine;
use crate::types::{AuditEntry, Command, Hold, Record};
use chorus_core::archive::{ArchiveError, MamQuery};
use chorus_core::config::ApiRole;
use chorus_core::jids;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Who is calling (from their API token).
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// The token's role.
    pub role: ApiRole,
    /// The address the request came from.
    pub addr: String,
}

/// Why an operation failed; maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ComplianceError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// Nothing by that name.
    #[error("{0}")]
    NotFound(String),
    /// The archive refused the action as it stands (a hold id in use, a
    /// retention change needing a second admin, ...).
    #[error("{0}")]
    Conflict(String),
    /// The archive cannot commit (no quorum) or read.
    #[error("{0}")]
    Unavailable(String),
    /// As many heavy operations (exports, verifications) as this node
    /// runs at once are running; try again when one has finished.
    #[error("{0}")]
    Busy(String),
}

/// Exports and full verifications one node runs at once: each reads the
/// whole archive or up to [`exports::EXPORT_RECORDS_MAX`] records and
/// writes as much to disk, so a few callers (or one in a loop) must not
/// be able to start hundreds.
pub const HEAVY_OPERATIONS_MAX: usize = 2;

/// A place among the heavy operations, shared by the blocking jobs doing
/// the work (so a caller that goes away does not free it while they run)
/// and the download that follows.
pub type HeavyPermit = Arc<tokio::sync::OwnedSemaphorePermit>;

/// Admits at most [`HEAVY_OPERATIONS_MAX`] heavy operations at once; the
/// next caller is told `Busy` at once (never a queue of waiting callers).
#[derive(Clone, Debug)]
pub struct HeavyGate(Arc<tokio::sync::Semaphore>);

impl Default for HeavyGate {
    fn default() -> Self {
        HeavyGate(Arc::new(tokio::sync::Semaphore::new(HEAVY_OPERATIONS_MAX)))
    }
}

impl HeavyGate {
    /// A permit for one heavy operation (`what`, for the error), held
    /// until it is dropped.
    pub fn enter(&self, what: &str) -> Result<HeavyPermit> {
        self.0.clone().try_acquire_owned().map(Arc::new).map_err(|_| {
            metrics::counter!("chorus_archive_heavy_refused_total").increment(1);
            ComplianceError::Busy(format!(
                "{HEAVY_OPERATIONS_MAX} exports or verifications are running on this node; \
                 try the {what} again when one has finished"
            ))
        })
    }
}

type Result<T> = std::result::Result<T, ComplianceError>;

fn unavailable(e: impl std::fmt::Display) -> ComplianceError {
    ComplianceError::Unavailable(e.to_string())
}

/// A new hold, as an officer describes it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    /// Optional id (generated when absent).
    #[serde(default)]
    pub id: Option<String>,
    /// Why.
    pub reason: String,
    /// Users covered.
    #[serde(default)]
    pub users: Vec<String>,
    /// Rooms covered.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// From (ms since the epoch).
    #[serde(default)]
    pub start_ms: Option<u64>,
    /// Until (ms since the epoch).
    #[serde(default)]
    pub end_ms: Option<u64>,
}

/// The compliance side of one node's archive.
pub struct Compliance {
    /// The Raft node.
    pub raft: ArchiveRaft,
    /// Its network (to forward to the leader).
    pub net: ArchiveNet,
    /// The local replica.
    pub sm: ArchiveStateMachine,
    /// The local search index.
    pub index: Arc<SearchIndex>,
    /// This node's id.
    pub node_id: String,
    /// The XMPP domain.
    pub domain: String,
    /// Every configured node's cluster address by node id.
    pub peers: BTreeMap<String, String>,
    /// `archive.retention_min_days`.
    pub retention_min_days: u32,
    /// Where exports are built (`<data_dir>/archive-exports`).
    pub export_dir: std::path::PathBuf,
    /// Where shared files' bytes are kept (`<data_dir>/files`), for exports.
    pub files_dir: std::path::PathBuf,
    /// Admits heavy operations (exports, verifications).
    pub heavy: HeavyGate,
}

impl Compliance {
    async fn commit(&self, cmd: Command) -> Result<crate::types::Response> {
        propose(&self.raft, &self.net, cmd).await.map_err(unavailable)
    }

    /// Commits the audit entry of a read (with how many results it gives)
    /// before the caller sees them; fails without a quorum.
    async fn audit(&self, who: &Caller, action: &str, detail: serde_json::Value) -> Result<()> {
        self.commit(Command::Audit(self.audit_entry(who, action, detail)))
            .await
            .map(|_| ())
            .map_err(|e| ComplianceError::Unavailable(format!("cannot record the audit trail: {e}")))
    }

    /// Commits a compliance action together with its audit entry (one Raft
    /// command: both apply, or neither); the state machine's refusal is a
    /// conflict, a missing hold or change not found.
    async fn audited(
        &self,
        who: &Caller,
        action: &str,
        detail: serde_json::Value,
        cmd: Command,
    ) -> Result<crate::types::Response> {
        let entry = self.audit_entry(who, action, detail);
        let r = self
            .commit(Command::Audited {
                entry,
                action: Box::new(cmd),
            })
            .await?;
        match &r.refused {
            Some(why) => Err(ComplianceError::Conflict(why.clone())),
            None => Ok(r),
        }
    }

    fn audit_entry(&self, who: &Caller, action: &str, detail: serde_json::Value) -> AuditEntry {
        AuditEntry {
            at_ms: chorus_core::time::now_millis(),
            actor: who.name.clone(),
            role: format!("{:?}", who.role).to_lowercase(),
            action: action.to_owned(),
            detail: detail.to_string(),
            node: self.node_id.clone(),
            addr: who.addr.clone(),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SearchIndex, &ArchiveStateMachine) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (index, sm) = (self.index.clone(), self.sm.clone());
        tokio::task::spawn_blocking(move || f(&index, &sm))
            .await
            .map_err(unavailable)?
    }

    /// A page of search results.
    pub async fn search(&self, who: &Caller, mut q: SearchQuery) -> Result<SearchPage> {
        q.participants = jids::bare_all(&q.participants).map_err(ComplianceError::BadRequest)?;
        q.room = q.room.as_deref().map(normalized_bare).transpose()?;
        let query = q.clone();
        let page = self
            .blocking(move |index, sm| {
                // Make what is committed locally searchable before answering.
                index.catch_up(sm).map_err(unavailable)?;
                index.search(sm, &query).map_err(search_error)
            })
            .await?;
        let mut detail = serde_json::to_value(&q).unwrap_or_default();
        detail["results"] = page.records.len().into();
        detail["total"] = page.total.into();
        self.audit(who, "search", detail).await?;
        Ok(page)
    }

    /// The conversation between two users (or in a room), oldest first.
    pub async fn conversation(&self, who: &Caller, mut q: MamQuery) -> Result<(Vec<Record>, bool)> {
        q.owner = normalized_bare(&q.owner)?;
        if let Some(w) = &q.with {
            jids::bare(w).map_err(ComplianceError::BadRequest)?;
            q.with = Some(jids::normalized_or_raw(w.trim()));
        }
        let page = self.sm.mam(&q, &[]).map_err(|e| match e {
            ArchiveError::NotFound(id) => ComplianceError::NotFound(format!("no record {id}")),
            e => unavailable(e),
        })?;
        self.audit(
            who,
            "conversation",
            serde_json::json!({
                "owner": q.owner, "with": q.with, "start_ms": q.start_ms,
                "end_ms": q.end_ms, "after": q.after, "max": q.max,
                "results": page.records.len(),
            }),
        )
        .await?;
        Ok((page.records, page.complete))
    }

    /// Commits an audit entry for something done outside the archive (a
    /// console page view, an account changed by an admin); fails without
    /// a quorum.
    pub async fn record(&self, who: &Caller, action: &str, detail: serde_json::Value) -> Result<()> {
        self.audit(who, action, detail).await
    }

    /// Every hold (the list is audited).
    pub async fn holds(&self, who: &Caller) -> Result<Vec<Hold>> {
        let holds = self.sm.holds().map_err(unavailable)?;
        self.audit(who, "hold.list", serde_json::json!({ "results": holds.len() }))
            .await?;
        Ok(holds)
    }

    /// Places a hold; returns it. Users and rooms are validated and
    /// normalized; an id in use is refused by the state machine (not by a
    /// check here, which two officers could race).
    pub async fn place_hold(&self, who: &Caller, req: HoldRequest) -> Result<Hold> {
        if req.users.is_empty() && req.rooms.is_empty() {
            return Err(ComplianceError::BadRequest("a hold needs users or rooms".into()));
        }
        if req.reason.trim().is_empty() {
            return Err(ComplianceError::BadRequest("a hold needs a reason".into()));
        }
        if let (Some(s), Some(e)) = (req.start_ms, req.end_ms)
            && s > e
        {
            return Err(ComplianceError::BadRequest(
                "a hold's start is after its end".into(),
            ));
        }
        let id = match req.id.as_deref().map(str::trim) {
            Some(id) if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) => {
                return Err(ComplianceError::BadRequest(
                    "a hold id is 1 to 200 printable characters".into(),
                ));
            }
            Some(id) => id.to_owned(),
            None => format!("hold-{}", random_id()),
        };
        let hold = Hold {
            id,
            reason: req.reason,
            users: jids::bare_all(&req.users).map_err(ComplianceError::BadRequest)?,
            rooms: jids::bare_all(&req.rooms).map_err(ComplianceError::BadRequest)?,
            start_ms: req.start_ms,
            end_ms: req.end_ms,
            created_by: who.name.clone(),
            created_ms: chorus_core::time::now_millis(),
            released: None,
        };
        let detail = serde_json::to_value(&hold).unwrap_or_default();
        self.audited(who, "hold.create", detail, Command::PlaceHold(hold.clone()))
            .await?;
        Ok(hold)
    }

    /// Releases a hold.
    /// Releases a hold; the reason, when given, is in its audit entry.
    pub async fn release_hold(&self, who: &Caller, id: &str, reason: Option<&str>) -> Result<()> {
        let release = Command::ReleaseHold {
            id: id.to_owned(),
            by: who.name.clone(),
            at_ms: chorus_core::time::now_millis(),
        };
        let detail = match reason {
            Some(r) => serde_json::json!({ "id": id, "reason": r }),
            None => serde_json::json!({ "id": id }),
        };
        let r = self.audited(who, "hold.release", detail, release).await?;
        if r.not_found {
            return Err(ComplianceError::NotFound(format!("no hold {id}")));
        }
        Ok(())
    }

    /// Audit entries from sequence `from` on (the read is audited).
    pub async fn audit_trail(&self, who: &Caller, from: u64, limit: usize) -> Result<Vec<(u64, AuditEntry)>> {
        let entries = self
            .sm
            .audit(from, limit.clamp(1, SEARCH_LIMIT_MAX))
            .map_err(unavailable)?;
        self.audit(
            who,
            "audit.read",
            serde_json::json!({ "from": from, "limit": limit, "results": entries.len() }),
        )
        .await?;
        Ok(entries)
    }

    /// Record count and digest of this node's replica, with its position
    /// and chain head (counts and hashes only: not audited).
    pub fn digest(&self) -> Result<serde_json::Value> {
        let (records, digest) = self.sm.digest().map_err(unavailable)?;
        let head = self.sm.chain_head().map_err(unavailable)?;
        let m = self.raft.metrics().borrow().clone();
        Ok(serde_json::json!({
            "node": self.node_id,
            "records": records,
            "digest": digest,
            "chain": head,
            "last_applied": m.last_applied.map(|l| l.index),
        }))
    }

    /// The archive group: voters and learners by node id.
    pub fn members(&self) -> serde_json::Value {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let name = |id: u64| {
            self.peers
                .keys()
                .find(|n| raft_id(n) == id)
                .cloned()
                .unwrap_or_else(|| id.to_string())
        };
        let voters: Vec<String> = membership.voter_ids().map(name).collect();
        let learners: Vec<String> = membership.learner_ids().map(name).collect();
        serde_json::json!({
            "voters": voters,
            "learners": learners,
            "leader": m.current_leader.map(name),
        })
    }

    /// The archive group, read by an admin (audited).
    pub async fn members_audited(&self, who: &Caller) -> Result<serde_json::Value> {
        let m = self.members();
        self.audit(who, "members.view", serde_json::json!({})).await?;
        Ok(m)
    }

    /// Adds a configured node (voter or learner) or removes one.
    pub async fn change_member(&self, who: &Caller, id: &str, add: Option<bool>) -> Result<String> {
        let change = match add {
            Some(voter) => {
                let addr = self
                    .peers
                    .get(id)
                    .cloned()
                    .ok_or_else(|| ComplianceError::NotFound(format!("{id} is not a configured node")))?;
                MemberChange::Add {
                    id: id.to_owned(),
                    addr,
                    voter,
                }
            }
            None => MemberChange::Remove { id: id.to_owned() },
        };
        self.audit(
            who,
            "members.change",
            serde_json::to_value(&change).unwrap_or_default(),
        )
        .await?;
        change_members(&self.raft, &self.net, &change)
            .await
            .map_err(|e| match e {
                e if e.retry() => ComplianceError::Unavailable(e.to_string()),
                e => ComplianceError::BadRequest(e.to_string()),
            })
    }
}

/// A normalized bare JID, or a bad request saying why not.
fn normalized_bare(s: &str) -> Result<String> {
    jids::bare(s).map_err(ComplianceError::BadRequest)
}

fn search_error(e: crate::search::SearchError) -> ComplianceError {
    match e {
        crate::search::SearchError::BadQuery(m) => ComplianceError::BadRequest(m),
        e => unavailable(e),
    }
}

/// A random id for a hold or a pending change (96 bits, URL-safe).
fn random_id() -> String {
    use base64::Engine;
    let bytes: [u8; 12] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heavy_gate_admits_its_maximum_and_refuses_the_next_at_once() {
        let gate = HeavyGate::default();
        let held: Vec<_> = (0..HEAVY_OPERATIONS_MAX)
            .map(|_| gate.enter("export").expect("room"))
            .collect();
        let refused = gate.enter("export").expect_err("full");
        assert!(matches!(refused, ComplianceError::Busy(_)), "{refused:?}");
        assert!(refused.to_string().contains("try the export again"), "{refused}");
        drop(held);
        // A finished operation (its download too) frees its place.
        assert!(gate.enter("verification").is_ok());
    }
}
