//! Applying committed log entries to the archive state machine: every
//! command's effect, written in one RocksDB batch per call. A command that
//! reads state (holds, retention, purges) first writes what the entries
//! before it did, with their applied id, so it sees them and a crash in
//! the middle re-applies from a whole entry.
//!
//! Every inserted record, audit entry and purge extends the hash chain
//! (`chain.rs`) in this order. `Audited` applies its action first and then
//! its audit entry, with the outcome (records purged and the policy used,
//! or why the state machine refused) added to the entry's detail, so the
//! trail says what happened, not only what was asked. Decisions that must
//! not race (a hold id in use, a retention change that shortens a period,
//! its approval by a second admin) are made here, identically everywhere.

use crate::chain::{Head, LinkKind, content_hash};
use crate::db::{CF_AUDIT, CF_CHAIN, CF_IDS, CF_INDEX, CF_RECORDS};
use crate::layout::{id_entry, index_keys, legacy_index_keys};
use crate::sorted_batch::SortedBatch;
use crate::state_machine::{
    ArchiveStateMachine, HOLD_PREFIX, KEY_APPLIED, KEY_CHAIN_HEAD, KEY_LIVE, KEY_MEMBERSHIP, KEY_NEXT,
    KEY_NEXT_AUDIT, KEY_RETENTION, PENDING_PREFIX, REMOVED_PREFIX, Result, be_u64, read_err, write_err,
};
use crate::types::{
    AuditEntry, Command, DAY_MS, Hold, PendingRetention, Record, Response, Retention, TypeConfig,
};
use openraft::{Entry, EntryPayload, StoredMembership};
use rocksdb::{Direction, IteratorMode};
use std::collections::HashSet;

/// The state of one `apply` call.
struct Cursor {
    batch: SortedBatch,
    next: u64,
    next_audit: u64,
    head: Head,
    live: u64,
    pending: HashSet<String>,
    membership_touched: bool,
}

/// Who asked for an action and when (the enclosing audit entry).
struct Actor<'a> {
    name: &'a str,
    at_ms: u64,
}

impl ArchiveStateMachine {
    /// Applies committed entries (the body of `RaftStateMachine::apply`).
    pub(crate) fn apply_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<Vec<Response>> {
        let mut cx = Cursor {
            batch: SortedBatch::default(),
            next: self.next_position()?,
            next_audit: self.get(KEY_NEXT_AUDIT)?.unwrap_or(0),
            head: self.chain_head()?,
            live: self.live_records()?,
            pending: HashSet::new(),
            membership_touched: false,
        };
        let mut responses = Vec::new();
        for e in entries {
            let mut resp = Response::default();
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(cmd) => self.apply_command(&mut cx, cmd, &mut resp)?,
                EntryPayload::Membership(m) => self.put_json(
                    &mut cx.batch,
                    KEY_MEMBERSHIP,
                    &StoredMembership::new(Some(e.log_id), m),
                )?,
            }
            self.put_json(&mut cx.batch, KEY_APPLIED, &e.log_id)?;
            responses.push(resp);
        }
        self.flush(&mut cx)?;
        if cx.membership_touched {
            self.tell_removed();
        }
        Ok(responses)
    }

    /// Writes the batch so far with the counters and the chain head.
    fn flush(&self, cx: &mut Cursor) -> Result<()> {
        self.put_json(&mut cx.batch, KEY_NEXT, &cx.next)?;
        self.put_json(&mut cx.batch, KEY_NEXT_AUDIT, &cx.next_audit)?;
        self.put_json(&mut cx.batch, KEY_CHAIN_HEAD, &cx.head)?;
        self.put_json(&mut cx.batch, KEY_LIVE, &cx.live)?;
        self.write(std::mem::take(&mut cx.batch).into_write_batch(self))
    }

    fn apply_command(&self, cx: &mut Cursor, cmd: Command, resp: &mut Response) -> Result<()> {
        match cmd {
            Command::Append(records) => {
                let known = self.known_ids(&records)?;
                for (r, known) in records.iter().zip(known) {
                    if !known && self.insert(cx, r)? {
                        resp.inserted += 1;
                    }
                }
            }
            Command::Audit(a) => self.append_audit(cx, &a)?,
            Command::Audited { mut entry, action } => {
                if action.is_compliance_action() {
                    let name = entry.actor.clone();
                    let actor = Actor {
                        name: &name,
                        at_ms: entry.at_ms,
                    };
                    let outcome = self.apply_action(cx, *action, &actor, resp)?;
                    entry.detail = with_outcome(&entry.detail, outcome, resp);
                } else {
                    // Proposals are checked, so only a faulty leader gets
                    // here; every node skips the action alike.
                    tracing::error!("an audited command wrapped a non-compliance action; skipped");
                }
                self.append_audit(cx, &entry)?;
            }
            Command::Removed { id, removed } => {
                let key = [REMOVED_PREFIX, &id.to_be_bytes()].concat();
                if removed {
                    cx.batch.put(crate::db::CF_SM_META, key, []);
                } else {
                    cx.batch.delete(crate::db::CF_SM_META, key);
                }
                cx.membership_touched = true;
            }
            action => {
                let actor = Actor { name: "", at_ms: 0 };
                self.apply_action(cx, action, &actor, resp)?;
            }
        }
        Ok(())
    }

    /// Applies a compliance action; returns what to add to its audit entry.
    fn apply_action(
        &self,
        cx: &mut Cursor,
        cmd: Command,
        actor: &Actor,
        resp: &mut Response,
    ) -> Result<Option<serde_json::Value>> {
        // Earlier entries of this call must be visible to what follows.
        self.flush(cx)?;
        match cmd {
            Command::PlaceHold(h) => {
                let key = [HOLD_PREFIX, h.id.as_bytes()].concat();
                if self.get::<Hold>(&key)?.is_some() {
                    resp.refused = Some(format!("hold {} exists", h.id));
                } else {
                    self.put_json(&mut cx.batch, &key, &h)?;
                }
            }
            Command::ReleaseHold { id, by, at_ms } => {
                let key = [HOLD_PREFIX, id.as_bytes()].concat();
                match self.get::<Hold>(&key)? {
                    Some(mut h) => {
                        h.released.get_or_insert((by, at_ms));
                        self.put_json(&mut cx.batch, &key, &h)?;
                    }
                    None => resp.not_found = true,
                }
            }
            Command::SetRetention(r) => {
                let current = self.retention()?;
                if let Some(why) = current.shortened_by(&r) {
                    resp.refused = Some(format!(
                        "{why}: a shorter retention needs a second admin's approval"
                    ));
                    resp.retention = Some(current);
                } else {
                    self.put_json(&mut cx.batch, KEY_RETENTION, &r)?;
                    resp.retention = Some(r);
                }
            }
            Command::ProposeRetention { id, policy } => {
                self.propose_retention(cx, id, policy, actor, resp)?
            }
            Command::ApproveRetention { id } => self.approve_retention(cx, &id, actor, resp)?,
            Command::CancelRetention { id } => {
                let key = [PENDING_PREFIX, id.as_bytes()].concat();
                if self.get::<PendingRetention>(&key)?.is_some() {
                    cx.batch.delete(crate::db::CF_SM_META, key);
                } else {
                    resp.not_found = true;
                }
            }
            Command::Purge { now_ms } => {
                let policy = self.retention()?;
                resp.purged = self.purge(cx, &policy, now_ms)?;
                return Ok(Some(serde_json::json!({
                    "purged": resp.purged, "judged_at_ms": now_ms, "policy": policy,
                })));
            }
            Command::Append(_) | Command::Audit(_) | Command::Audited { .. } | Command::Removed { .. } => {}
        }
        Ok(None)
    }

    fn propose_retention(
        &self,
        cx: &mut Cursor,
        id: String,
        policy: Retention,
        actor: &Actor,
        resp: &mut Response,
    ) -> Result<()> {
        let key = [PENDING_PREFIX, id.as_bytes()].concat();
        let base = self.retention()?;
        if self.get::<PendingRetention>(&key)?.is_some() {
            resp.refused = Some(format!("retention change {id} exists"));
        } else if let Some(shortens) = base.shortened_by(&policy) {
            let p = PendingRetention {
                id,
                policy,
                base: base.clone(),
                shortens,
                proposed_by: actor.name.to_owned(),
                proposed_ms: actor.at_ms,
            };
            self.put_json(&mut cx.batch, &key, &p)?;
            resp.pending = Some(p);
            resp.retention = Some(base);
        } else {
            // Nothing gets shorter: no second admin needed.
            self.put_json(&mut cx.batch, KEY_RETENTION, &policy)?;
            resp.retention = Some(policy);
        }
        Ok(())
    }

    fn approve_retention(&self, cx: &mut Cursor, id: &str, actor: &Actor, resp: &mut Response) -> Result<()> {
        let key = [PENDING_PREFIX, id.as_bytes()].concat();
        let Some(p) = self.get::<PendingRetention>(&key)? else {
            resp.not_found = true;
            return Ok(());
        };
        if actor.name.is_empty() || actor.name == p.proposed_by {
            resp.refused = Some(format!(
                "{} proposed retention change {id}; a second, different admin must approve it",
                p.proposed_by
            ));
        } else if self.retention()? != p.base {
            resp.refused = Some(format!(
                "the retention policy changed since change {id} was proposed; propose it again"
            ));
        } else {
            self.put_json(&mut cx.batch, KEY_RETENTION, &p.policy)?;
            cx.batch.delete(crate::db::CF_SM_META, key);
            resp.retention = Some(p.policy);
        }
        Ok(())
    }

    /// Which of `records` the replica already holds by id (applied before
    /// this call): one batched lookup for the whole entry.
    fn known_ids(&self, records: &[Record]) -> Result<Vec<bool>> {
        self.db
            .batched_multi_get_cf(self.cf(CF_IDS), records.iter().map(|r| r.id.as_bytes()), false)
            .into_iter()
            .map(|v| v.map(|v| v.is_some()).map_err(read_err))
            .collect()
    }

    /// Inserts a record unless it was inserted earlier in the same call
    /// (the caller skips ids applied before), and links it into the chain.
    fn insert(&self, cx: &mut Cursor, r: &Record) -> Result<bool> {
        if cx.pending.contains(&r.id) {
            return Ok(false);
        }
        cx.pending.insert(r.id.clone());
        let pos = cx.next;
        self.put_record(&mut cx.batch, pos, r)?;
        cx.batch
            .put(CF_IDS, r.id.as_bytes(), id_entry(pos, cx.head.length));
        cx.next += 1;
        cx.live += 1;
        self.link(cx, LinkKind::Record, pos, &r.id, content_hash(r), "")?;
        Ok(true)
    }

    fn append_audit(&self, cx: &mut Cursor, a: &AuditEntry) -> Result<()> {
        let seq = cx.next_audit;
        cx.batch.put(
            CF_AUDIT,
            seq.to_be_bytes(),
            crate::codec::encode(a).map_err(write_err)?,
        );
        cx.next_audit += 1;
        self.link(cx, LinkKind::Audit, seq, "", content_hash(a), "")
    }

    fn link(
        &self,
        cx: &mut Cursor,
        kind: LinkKind,
        at: u64,
        id: &str,
        content: String,
        reason: &str,
    ) -> Result<()> {
        let n = cx.head.length;
        let link = cx.head.link(kind, at, id, content, reason);
        cx.batch.put(
            CF_CHAIN,
            n.to_be_bytes(),
            crate::codec::encode(&link).map_err(write_err)?,
        );
        Ok(())
    }

    /// Deletes every record past its retention at `now_ms` that no active
    /// hold covers, leaving a tombstone link for each; walks the time
    /// index only as far as the shortest retention reaches.
    fn purge(&self, cx: &mut Cursor, retention: &Retention, now_ms: u64) -> Result<u64> {
        let Some(shortest) = retention.shortest_days() else {
            return Ok(0);
        };
        let horizon = now_ms.saturating_sub(u64::from(shortest) * DAY_MS);
        let holds: Vec<Hold> = self
            .holds()?
            .into_iter()
            .filter(|h| h.released.is_none())
            .collect();
        let mut n = 0;
        for item in self
            .db
            .iterator_cf(self.cf(CF_INDEX), IteratorMode::From(b"t", Direction::Forward))
        {
            let (k, _) = item.map_err(read_err)?;
            if k.len() != 17 || k[0] != b't' {
                break;
            }
            if be_u64(&k[1..9])? >= horizon {
                break;
            }
            let pos = be_u64(&k[9..17])?;
            let Some(r) = self.record_at(pos)? else { continue };
            if !retention.expired(&r, now_ms) || holds.iter().any(|h| h.covers(&r)) {
                continue;
            }
            cx.batch.delete(CF_RECORDS, pos.to_be_bytes());
            for k in index_keys(&r, pos).into_iter().chain(legacy_index_keys(&r, pos)) {
                cx.batch.delete(CF_INDEX, k);
            }
            let reason = format!("retention: {} days", retention.days_for(&r).unwrap_or_default());
            self.link(cx, LinkKind::Tombstone, pos, &r.id, content_hash(&r), &reason)?;
            cx.live = cx.live.saturating_sub(1);
            n += 1;
        }
        Ok(n)
    }
}

/// An audit entry's detail with the action's outcome added.
fn with_outcome(detail: &str, outcome: Option<serde_json::Value>, resp: &Response) -> String {
    let outcome = match (&resp.refused, resp.not_found, outcome) {
        (Some(why), _, _) => serde_json::json!({ "refused": why }),
        (None, true, _) => serde_json::json!({ "not_found": true }),
        (None, false, Some(o)) => o,
        (None, false, None) => return detail.to_owned(),
    };
    let mut v: serde_json::Value = serde_json::from_str(detail).unwrap_or(serde_json::Value::Null);
    match v.as_object_mut() {
        Some(m) => {
            m.insert("outcome".into(), outcome);
        }
        None => v = serde_json::json!({ "request": v, "outcome": outcome }),
    }
    v.to_string()
}

#[cfg(test)]
mod tests;
