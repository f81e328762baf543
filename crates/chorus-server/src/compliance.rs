//! The compliance operations behind the HTTP API and `chorus archive`:
//! search, conversation view, legal holds, retention, exports, the audit
//! trail, the digest and archive membership. Every search, conversation
//! view, export and hold action is first committed to the audit trail
//! through Raft: without a quorum there is no unaudited access, and the
//! caller is told to retry or ask another site.

use chorus_archive::export;
use chorus_archive::search::{SEARCH_LIMIT_MAX, SearchIndex, SearchPage, SearchQuery};
use chorus_archive::state_machine::ArchiveStateMachine;
use chorus_archive::types::{AuditEntry, Command, Hold, Record, Retention};
use chorus_cluster::archive::{MemberChange, change_members, propose};
use chorus_cluster::raft_net::{ArchiveRaft, NetworkFactory, raft_id};
use chorus_core::archive::{ArchiveError, MamQuery};
use chorus_core::config::ApiRole;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Records an export may carry.
pub const EXPORT_RECORDS_MAX: usize = 1_000_000;

/// Who is calling (from their API token).
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// The token's role.
    pub role: ApiRole,
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
    /// The archive cannot commit (no quorum) or read.
    #[error("{0}")]
    Unavailable(String),
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

/// What to export.
#[derive(Clone, Debug)]
pub enum ExportSource {
    /// The records a search finds.
    Search(SearchQuery),
    /// The records a hold covers.
    Hold(String),
}

/// An export's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// JSON Lines.
    Jsonl,
    /// A tar of RFC 5322 `.eml` files, one per conversation and day.
    Eml,
}

/// The compliance side of one node's archive.
pub struct Compliance {
    /// The Raft node.
    pub raft: ArchiveRaft,
    /// Its network (to forward to the leader).
    pub net: NetworkFactory,
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
}

impl Compliance {
    async fn commit(&self, cmd: Command) -> Result<chorus_archive::types::Response> {
        propose(&self.raft, &self.net, cmd).await.map_err(unavailable)
    }

    /// Commits an audit entry; fails (and so refuses the action) without a quorum.
    async fn audit(&self, who: &Caller, action: &str, detail: serde_json::Value) -> Result<()> {
        self.commit(Command::Audit(self.audit_entry(who, action, detail)))
            .await
            .map(|_| ())
            .map_err(|e| ComplianceError::Unavailable(format!("cannot record the audit trail: {e}")))
    }

    /// Commits a compliance action together with its audit entry (one Raft
    /// command: both apply, or neither).
    async fn audited(
        &self,
        who: &Caller,
        action: &str,
        detail: serde_json::Value,
        cmd: Command,
    ) -> Result<chorus_archive::types::Response> {
        let entry = self.audit_entry(who, action, detail);
        self.commit(Command::Audited {
            entry,
            action: Box::new(cmd),
        })
        .await
    }

    fn audit_entry(&self, who: &Caller, action: &str, detail: serde_json::Value) -> AuditEntry {
        AuditEntry {
            at_ms: chorus_core::time::now_millis(),
            actor: who.name.clone(),
            role: format!("{:?}", who.role).to_lowercase(),
            action: action.to_owned(),
            detail: detail.to_string(),
            node: self.node_id.clone(),
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
    pub async fn search(&self, who: &Caller, q: SearchQuery) -> Result<SearchPage> {
        self.audit(who, "search", serde_json::to_value(&q).unwrap_or_default())
            .await?;
        self.blocking(move |index, sm| {
            // Make what is committed locally searchable before answering.
            index.catch_up(sm).map_err(unavailable)?;
            index.search(sm, &q).map_err(|e| match e {
                chorus_archive::search::SearchError::BadQuery(m) => ComplianceError::BadRequest(m),
                e => unavailable(e),
            })
        })
        .await
    }

    /// The conversation between two users (or in a room), oldest first.
    pub async fn conversation(&self, who: &Caller, q: MamQuery) -> Result<(Vec<Record>, bool)> {
        self.audit(
            who,
            "conversation",
            serde_json::json!({
                "owner": q.owner, "with": q.with, "start_ms": q.start_ms,
                "end_ms": q.end_ms, "after": q.after, "max": q.max,
            }),
        )
        .await?;
        let page = self.sm.mam(&q, &[]).map_err(|e| match e {
            ArchiveError::NotFound(id) => ComplianceError::NotFound(format!("no record {id}")),
            e => unavailable(e),
        })?;
        Ok((page.records, page.complete))
    }

    /// Every hold.
    pub fn holds(&self) -> Result<Vec<Hold>> {
        self.sm.holds().map_err(unavailable)
    }

    /// Places a hold; returns it.
    pub async fn place_hold(&self, who: &Caller, req: HoldRequest) -> Result<Hold> {
        if req.users.is_empty() && req.rooms.is_empty() {
            return Err(ComplianceError::BadRequest("a hold needs users or rooms".into()));
        }
        if req.reason.trim().is_empty() {
            return Err(ComplianceError::BadRequest("a hold needs a reason".into()));
        }
        let id = req
            .id
            .clone()
            .unwrap_or_else(|| format!("hold-{}", chorus_xmpp::session::random_id()));
        if self.holds()?.iter().any(|h| h.id == id) {
            return Err(ComplianceError::BadRequest(format!("hold {id} exists")));
        }
        let hold = Hold {
            id,
            reason: req.reason,
            users: req.users,
            rooms: req.rooms,
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
    pub async fn release_hold(&self, who: &Caller, id: &str) -> Result<()> {
        if !self.holds()?.iter().any(|h| h.id == id) {
            return Err(ComplianceError::NotFound(format!("no hold {id}")));
        }
        let release = Command::ReleaseHold {
            id: id.to_owned(),
            by: who.name.clone(),
            at_ms: chorus_core::time::now_millis(),
        };
        let r = self
            .audited(who, "hold.release", serde_json::json!({ "id": id }), release)
            .await?;
        if r.not_found {
            return Err(ComplianceError::NotFound(format!("no hold {id}")));
        }
        Ok(())
    }

    /// The retention policy.
    pub fn retention(&self) -> Result<Retention> {
        self.sm.retention().map_err(unavailable)
    }

    /// Replaces the retention policy.
    pub async fn set_retention(&self, who: &Caller, r: Retention) -> Result<()> {
        if r.default_days == Some(0) || r.users.values().chain(r.rooms.values()).any(|d| *d == 0) {
            return Err(ComplianceError::BadRequest(
                "retention must be at least one day".into(),
            ));
        }
        let detail = serde_json::to_value(&r).unwrap_or_default();
        self.audited(who, "retention.set", detail, Command::SetRetention(r))
            .await
            .map(|_| ())
    }

    /// Runs retention now, judged at `now_ms`; returns how many records went.
    pub async fn purge(&self, who: &Caller, now_ms: u64) -> Result<u64> {
        let detail = serde_json::json!({ "now_ms": now_ms });
        let purge = Command::Purge { now_ms };
        Ok(self.audited(who, "retention.run", detail, purge).await?.purged)
    }

    /// Every record a source covers, oldest first.
    async fn collect(&self, source: &ExportSource) -> Result<Vec<Record>> {
        let queries: Vec<SearchQuery> = match source {
            ExportSource::Search(q) => vec![q.clone()],
            ExportSource::Hold(id) => {
                let hold = self
                    .holds()?
                    .into_iter()
                    .find(|h| h.id == *id)
                    .ok_or_else(|| ComplianceError::NotFound(format!("no hold {id}")))?;
                let base = SearchQuery {
                    start_ms: hold.start_ms,
                    end_ms: hold.end_ms,
                    ..SearchQuery::default()
                };
                hold.users
                    .iter()
                    .map(|u| SearchQuery {
                        participants: vec![u.clone()],
                        ..base.clone()
                    })
                    .chain(hold.rooms.iter().map(|r| SearchQuery {
                        room: Some(r.clone()),
                        ..base.clone()
                    }))
                    .collect()
            }
        };
        self.blocking(move |index, sm| {
            index.catch_up(sm).map_err(unavailable)?;
            let mut out: BTreeMap<(u64, String), Record> = BTreeMap::new();
            for q in queries {
                let mut offset = q.offset;
                loop {
                    let page = index
                        .search(
                            sm,
                            &SearchQuery {
                                offset,
                                limit: SEARCH_LIMIT_MAX,
                                ..q.clone()
                            },
                        )
                        .map_err(|e| ComplianceError::BadRequest(e.to_string()))?;
                    let n = page.records.len();
                    for r in page.records {
                        out.insert((r.stamp_ms, r.id.clone()), r);
                    }
                    if out.len() > EXPORT_RECORDS_MAX {
                        return Err(ComplianceError::BadRequest(format!(
                            "more than {EXPORT_RECORDS_MAX} records; narrow the export"
                        )));
                    }
                    offset += SEARCH_LIMIT_MAX;
                    if n == 0 || offset >= page.total {
                        break;
                    }
                }
            }
            Ok(out.into_values().collect())
        })
        .await
    }

    /// Exports a search or a hold; returns (content type, file name, bytes).
    pub async fn export(
        &self,
        who: &Caller,
        source: ExportSource,
        format: ExportFormat,
    ) -> Result<(&'static str, String, Vec<u8>)> {
        let what = match &source {
            ExportSource::Search(q) => serde_json::json!({ "search": q }),
            ExportSource::Hold(id) => serde_json::json!({ "hold": id }),
        };
        let records = self.collect(&source).await?;
        self.audit(
            who,
            "export",
            serde_json::json!({ "source": what, "format": format!("{format:?}").to_lowercase(), "records": records.len() }),
        )
        .await?;
        let stamp = chorus_core::time::now_millis();
        Ok(match format {
            ExportFormat::Jsonl => (
                "application/x-ndjson",
                format!("chorus-export-{stamp}.jsonl"),
                export::jsonl(&records).into_bytes(),
            ),
            ExportFormat::Eml => (
                "application/x-tar",
                format!("chorus-export-{stamp}.tar"),
                export::tar(&export::eml_files(&records, &self.domain), stamp / 1000),
            ),
        })
    }

    /// Audit entries from sequence `from` on.
    pub fn audit_trail(&self, from: u64, limit: usize) -> Result<Vec<(u64, AuditEntry)>> {
        self.sm
            .audit(from, limit.min(SEARCH_LIMIT_MAX))
            .map_err(unavailable)
    }

    /// Record count and digest of this node's replica, with its position.
    pub fn digest(&self) -> Result<serde_json::Value> {
        let (records, digest) = self.sm.digest().map_err(unavailable)?;
        let m = self.raft.metrics().borrow().clone();
        Ok(serde_json::json!({
            "node": self.node_id,
            "records": records,
            "digest": digest,
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
            .map_err(ComplianceError::BadRequest)
    }
}
