//! Retention under dual control. A policy that keeps every record at
//! least as long as today's is one admin's action; one that shortens any
//! period is only proposed, and takes effect when a second, different
//! admin approves it (both recorded in the audit trail, the decision made
//! by the state machine). No period may go below the configuration's
//! `archive.retention_min_days`. Purges are judged at the proposer's
//! clock, which followers bound by their own (no caller-chosen time).

use super::{Caller, Compliance, ComplianceError, Result, normalized_bare, unavailable};
use crate::types::{Command, PendingRetention, Retention};
use std::collections::BTreeMap;

/// Proposed shortenings that may wait for approval at once.
pub const PENDING_RETENTION_MAX: usize = 16;

/// What setting a policy did.
#[derive(Debug)]
pub enum RetentionChange {
    /// In force now.
    Applied(Retention),
    /// Shortens a period: waits for a second admin.
    Pending(PendingRetention),
}

impl Compliance {
    /// The policy in force, the changes waiting for approval and the floor
    /// (the read is audited).
    pub async fn retention(&self, who: &Caller) -> Result<serde_json::Value> {
        let policy = self.sm.retention().map_err(unavailable)?;
        let pending = self.sm.pending_retention().map_err(unavailable)?;
        self.audit(
            who,
            "retention.view",
            serde_json::json!({ "results": pending.len() + 1 }),
        )
        .await?;
        Ok(serde_json::json!({
            "retention": policy,
            "pending": pending,
            "min_days": self.retention_min_days,
        }))
    }

    /// Sets a policy, or proposes it when it shortens a period (refused
    /// while [`PENDING_RETENTION_MAX`] proposals wait: admission control
    /// on the proposing node, not a state-machine rule, so replaying an
    /// old log applies exactly what it applied before).
    pub async fn set_retention(&self, who: &Caller, r: Retention) -> Result<RetentionChange> {
        let r = self.validated(r)?;
        let current = self.sm.retention().map_err(unavailable)?;
        let detail = serde_json::to_value(&r).unwrap_or_default();
        if current.shortened_by(&r).is_none() {
            let resp = self
                .audited(who, "retention.set", detail, Command::SetRetention(r.clone()))
                .await?;
            return Ok(RetentionChange::Applied(resp.retention.unwrap_or(r)));
        }
        let waiting = self.sm.pending_retention().map_err(unavailable)?.len();
        if waiting >= PENDING_RETENTION_MAX {
            return Err(ComplianceError::Conflict(format!(
                "{waiting} retention changes await a second admin; approve or cancel one first"
            )));
        }
        let id = format!("change-{}", super::random_id());
        let propose = Command::ProposeRetention {
            id: id.clone(),
            policy: r.clone(),
        };
        // The state machine's answer says what happened: this node's own
        // replica may not have applied the command yet.
        let resp = self
            .audited(
                who,
                "retention.propose",
                serde_json::json!({ "id": id, "policy": detail }),
                propose,
            )
            .await?;
        Ok(match resp.pending {
            Some(p) => RetentionChange::Pending(p),
            // The policy changed meanwhile so that this one shortens nothing.
            None => RetentionChange::Applied(resp.retention.unwrap_or(r)),
        })
    }

    /// A second admin approves a proposed shortening.
    pub async fn approve_retention(&self, who: &Caller, id: &str) -> Result<Retention> {
        let cmd = Command::ApproveRetention { id: id.to_owned() };
        let r = self
            .audited(who, "retention.approve", serde_json::json!({ "id": id }), cmd)
            .await?;
        if r.not_found {
            return Err(ComplianceError::NotFound(format!("no retention change {id}")));
        }
        r.retention
            .ok_or_else(|| ComplianceError::Unavailable("the archive did not say the policy in force".into()))
    }

    /// Withdraws a proposed change (any admin).
    pub async fn cancel_retention(&self, who: &Caller, id: &str) -> Result<()> {
        let cmd = Command::CancelRetention { id: id.to_owned() };
        let r = self
            .audited(who, "retention.cancel", serde_json::json!({ "id": id }), cmd)
            .await?;
        if r.not_found {
            return Err(ComplianceError::NotFound(format!("no retention change {id}")));
        }
        Ok(())
    }

    /// Runs retention now, at this node's clock; returns how many records
    /// went.
    pub async fn purge(&self, who: &Caller) -> Result<u64> {
        let purge = Command::Purge {
            now_ms: chorus_core::time::now_millis(),
        };
        Ok(self
            .audited(who, "retention.run", serde_json::json!({}), purge)
            .await?
            .purged)
    }

    /// The policy with JIDs normalized, or why it is not acceptable.
    fn validated(&self, r: Retention) -> Result<Retention> {
        let min = self.retention_min_days;
        let check = |what: &str, d: u32| {
            if d < min {
                Err(ComplianceError::BadRequest(format!(
                    "{what}: {d} days is below archive.retention_min_days ({min})"
                )))
            } else {
                Ok(())
            }
        };
        if let Some(d) = r.default_days {
            check("default_days", d)?;
        }
        let normalize = |rules: BTreeMap<String, u32>, what: &str| -> Result<BTreeMap<String, u32>> {
            let mut out = BTreeMap::new();
            for (jid, days) in rules {
                check(&format!("{what} {jid}"), days)?;
                let jid = normalized_bare(&jid)?;
                // Two spellings of one account: the longer period wins.
                let e = out.entry(jid).or_insert(days);
                *e = (*e).max(days);
            }
            Ok(out)
        };
        Ok(Retention {
            default_days: r.default_days,
            users: normalize(r.users, "user")?,
            rooms: normalize(r.rooms, "room")?,
        })
    }
}
