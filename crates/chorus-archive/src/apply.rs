//! Applying committed log entries to the archive state machine: every
//! command's effect, written in one RocksDB batch per call (commands that
//! read state flush the batch first, so they see earlier entries).
//! `Audited` applies its audit entry and its action together, so a
//! compliance action never lands without the entry that records it.

use crate::db::CF_AUDIT;
use crate::state_machine::{
    ArchiveStateMachine, HOLD_PREFIX, KEY_APPLIED, KEY_MEMBERSHIP, KEY_NEXT, KEY_NEXT_AUDIT, KEY_RETENTION,
    REMOVED_PREFIX, Result, write_err,
};
use crate::types::{Command, Hold, Response, TypeConfig};
use openraft::{Entry, EntryPayload, StoredMembership};
use rocksdb::WriteBatch;
use std::collections::{HashMap, HashSet};

/// The state of one `apply` call.
struct Cursor {
    batch: WriteBatch,
    next: u64,
    next_audit: u64,
    pending: HashSet<String>,
    holds: HashMap<String, Hold>,
    purged_ids: Vec<String>,
    membership_touched: bool,
}

impl ArchiveStateMachine {
    /// Applies committed entries (the body of `RaftStateMachine::apply`).
    pub(crate) fn apply_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<Vec<Response>> {
        let mut cx = Cursor {
            batch: WriteBatch::default(),
            next: self.next_position()?,
            next_audit: self.get(KEY_NEXT_AUDIT)?.unwrap_or(0),
            pending: HashSet::new(),
            holds: HashMap::new(),
            purged_ids: Vec::new(),
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
        self.put_json(&mut cx.batch, KEY_NEXT, &cx.next)?;
        self.put_json(&mut cx.batch, KEY_NEXT_AUDIT, &cx.next_audit)?;
        self.write(cx.batch)?;
        if !cx.purged_ids.is_empty() {
            self.purged
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(cx.purged_ids);
        }
        if cx.membership_touched {
            self.tell_removed();
        }
        Ok(responses)
    }

    fn apply_command(&self, cx: &mut Cursor, cmd: Command, resp: &mut Response) -> Result<()> {
        match cmd {
            Command::Append(records) => {
                for r in &records {
                    if self.insert(&mut cx.batch, &mut cx.pending, &mut cx.next, r)? {
                        resp.inserted += 1;
                    }
                }
            }
            Command::PlaceHold(h) => {
                self.put_json(&mut cx.batch, &[HOLD_PREFIX, h.id.as_bytes()].concat(), &h)?;
                cx.holds.insert(h.id.clone(), h);
            }
            Command::ReleaseHold { id, by, at_ms } => self.release_hold(cx, id, by, at_ms, resp)?,
            Command::SetRetention(r) => self.put_json(&mut cx.batch, KEY_RETENTION, &r)?,
            Command::Purge { now_ms } => {
                // Earlier entries of this call must be visible to the scan.
                self.put_json(&mut cx.batch, KEY_NEXT, &cx.next)?;
                self.write(std::mem::take(&mut cx.batch))?;
                cx.holds.clear();
                resp.purged = self.purge(&mut cx.batch, now_ms, &mut cx.purged_ids)?;
            }
            Command::Audit(a) => {
                cx.batch.put_cf(
                    self.cf(CF_AUDIT),
                    cx.next_audit.to_be_bytes(),
                    crate::codec::encode(&a).map_err(write_err)?,
                );
                cx.next_audit += 1;
            }
            Command::Audited { entry, action } => {
                self.apply_command(cx, Command::Audit(entry), resp)?;
                if action.is_compliance_action() {
                    self.apply_command(cx, *action, resp)?;
                } else {
                    // Proposals are checked, so only a faulty leader gets
                    // here; every node skips the action alike.
                    tracing::error!("an audited command wrapped a non-compliance action; skipped");
                }
            }
            Command::Removed { id, removed } => {
                let key = [REMOVED_PREFIX, &id.to_be_bytes()].concat();
                if removed {
                    cx.batch.put_cf(self.cf(crate::db::CF_SM_META), key, []);
                } else {
                    cx.batch.delete_cf(self.cf(crate::db::CF_SM_META), key);
                }
                cx.membership_touched = true;
            }
        }
        Ok(())
    }

    fn release_hold(
        &self,
        cx: &mut Cursor,
        id: String,
        by: String,
        at_ms: u64,
        resp: &mut Response,
    ) -> Result<()> {
        let known = match cx.holds.get(&id) {
            Some(h) => Some(h.clone()),
            None => self.get::<Hold>(&[HOLD_PREFIX, id.as_bytes()].concat())?,
        };
        match known {
            Some(mut h) => {
                h.released.get_or_insert((by, at_ms));
                self.put_json(&mut cx.batch, &[HOLD_PREFIX, id.as_bytes()].concat(), &h)?;
                cx.holds.insert(id, h);
            }
            None => resp.not_found = true,
        }
        Ok(())
    }
}
