//! The archive seam. The XMPP layer hands every archive-worthy message to an
//! [`Archive`] before it acknowledges or delivers it, and asks it for a
//! user's history (XEP-0313). The Raft-replicated compliance archive
//! (`chorus-archive`, wired in `chorus-cluster`) implements this trait;
//! [`NoArchive`] makes the absence explicit (the node then does not
//! advertise message archive management) and [`MemArchive`] serves unit
//! tests.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// What an archive record is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// A one-to-one or room message.
    #[default]
    Message,
    /// A subscription request, approval, refusal or cancellation.
    Subscription,
    /// A block or unblock.
    Blocking,
}

/// What a correction (XEP-0308) or a retraction (XEP-0424) does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EditKind {
    /// Replaces the text of an earlier message.
    Correction,
    /// Asks clients to hide an earlier message.
    Retraction,
}

/// A message that corrects or retracts an earlier one. The archive keeps
/// both: the original record stays as it was, and this one links to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    /// Correction or retraction.
    pub kind: EditKind,
    /// The earlier message's id as the client gave it (its `id` or
    /// XEP-0359 origin-id; for a room retraction, the room's stanza-id).
    pub of: String,
}

/// A message as the archive receives it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveRecord {
    /// Sender, full JID.
    pub from: String,
    /// Recipient, full or bare JID.
    pub to: String,
    /// Server timestamp in milliseconds since the epoch.
    pub stamp_ms: u64,
    /// The full stanza as serialized XML.
    pub xml: String,
    /// What the record is.
    pub kind: RecordKind,
    /// The message body, for search and export.
    pub body: Option<String>,
    /// The conversation thread, if the client set one.
    pub thread: Option<String>,
    /// The room's bare JID for room messages.
    pub room: Option<String>,
    /// For a room message: the bare JIDs of the occupants it was delivered
    /// to (holds and retention on a user cover what they received in rooms).
    pub occupants: Vec<String>,
    /// The message's id as its sender gave it (origin-id, else `id`).
    pub msg_id: Option<String>,
    /// What it corrects or retracts.
    pub edit: Option<Edit>,
}

/// One record as the archive stores it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Stable archive id (XEP-0359 stanza-id): origin node and sequence.
    pub id: String,
    /// Sender, full JID.
    pub from: String,
    /// Recipient, full or bare JID.
    pub to: String,
    /// The sender's site.
    pub site: String,
    /// Server timestamp, milliseconds since the epoch.
    pub stamp_ms: u64,
    /// The full stanza.
    pub xml: String,
    /// What the record is.
    #[serde(default)]
    pub kind: RecordKind,
    /// The message body, for search and export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The conversation thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// The room's bare JID for room messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// For a room message: the bare JIDs of the occupants it was delivered
    /// to when it was sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub occupants: Vec<String>,
    /// The message's id as its sender gave it (origin-id, else `id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    /// What it corrects or retracts (the earlier record is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<Edit>,
}

impl Record {
    /// The record of an accepted message, before the archive numbers it;
    /// JIDs normalized (RFC 7622), so a hold on an account covers what was
    /// addressed to it in any case.
    pub fn accepted(r: ArchiveRecord, site: &str) -> Record {
        use crate::jids::normalized_or_raw;
        Record {
            id: String::new(),
            from: normalized_or_raw(&r.from),
            to: normalized_or_raw(&r.to),
            site: site.to_owned(),
            stamp_ms: r.stamp_ms,
            xml: r.xml,
            kind: r.kind,
            body: r.body,
            thread: r.thread,
            room: r.room.map(|room| normalized_or_raw(&room)),
            occupants: r.occupants.iter().map(|o| normalized_or_raw(o)).collect(),
            msg_id: r.msg_id,
            edit: r.edit,
        }
    }

    /// Bare JIDs of everyone the record involves (sender, recipient, room),
    /// without repeats.
    pub fn participants(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(3);
        for j in [
            Some(self.from.as_str()),
            Some(self.to.as_str()),
            self.room.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            let b = bare(j).to_owned();
            if !b.is_empty() && !out.contains(&b) {
                out.push(b);
            }
        }
        out
    }

    /// Everyone whose records this is for holds and retention: the
    /// participants and, for a room message, the occupants it reached.
    pub fn covered_users(&self) -> Vec<String> {
        let mut out = self.participants();
        for o in &self.occupants {
            if !out.contains(o) {
                out.push(o.clone());
            }
        }
        out
    }

    /// Whether `text` matches the body: every word of it, case-insensitively.
    pub fn body_matches(&self, text: &str) -> bool {
        let body = self.body.as_deref().unwrap_or("").to_lowercase();
        text.split_whitespace().all(|w| body.contains(&w.to_lowercase()))
    }
}

/// The bare part of a JID string (everything before the first `/`).
pub fn bare(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

/// A user's (or a room's) archive query, XEP-0313 with XEP-0059 paging.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MamQuery {
    /// Whose archive: a user's or a room's bare JID.
    pub owner: String,
    /// Only messages exchanged with this JID (bare, or full to match exactly).
    pub with: Option<String>,
    /// Only messages at or after this time (ms).
    pub start_ms: Option<u64>,
    /// Only messages at or before this time (ms).
    pub end_ms: Option<u64>,
    /// Only these archive ids (XEP-0313 `ids` field).
    pub ids: Vec<String>,
    /// Full-text: every word must occur in the body.
    pub text: Option<String>,
    /// Only messages after this archive id (XEP-0313 `after-id` filter).
    pub after_id: Option<String>,
    /// Only messages before this archive id (XEP-0313 `before-id` filter).
    pub before_id: Option<String>,
    /// Page forward from after this archive id.
    pub after: Option<String>,
    /// Page backward from before this archive id.
    pub before: Option<String>,
    /// Page backward from the newest message (empty RSM `<before/>`).
    pub last_page: bool,
    /// Page size.
    pub max: usize,
    /// Archiving preferences: conversations with these bare JIDs are hidden.
    pub hide: Vec<String>,
    /// Archiving preferences: when set, only conversations with these bare
    /// JIDs are shown.
    pub only: Option<Vec<String>>,
}

/// One page of a query's results, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MamPage {
    /// The records of the page, oldest first.
    pub records: Vec<Record>,
    /// Whether the page reaches the end of the results in its direction.
    pub complete: bool,
}

/// Why a record was not archived or a query not answered.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ArchiveError {
    /// The record could not be written durably; the message must not be acked.
    #[error("archive unavailable: {0}")]
    Unavailable(String),
    /// Strict mode: the archive has no quorum, so the message is refused.
    #[error("archive has no quorum: {0}")]
    NoQuorum(String),
    /// A paging id or queried id the archive does not hold.
    #[error("no such archive item: {0}")]
    NotFound(String),
}

/// Resolves once a record accepted by [`Archive::append_deferred`] is
/// durable, or with why it could not be made so.
pub type Durable =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ArchiveError>> + Send + Sync>>;

/// A record accepted by [`Archive::append_deferred`].
pub struct Accepted {
    /// Its archive id, if the archive keeps ids.
    pub id: Option<String>,
    /// The wait for its durability; `None` when it is durable already.
    /// Until it resolves with `Ok`, nothing may depend on the record (a
    /// message carrying its id must not be delivered or acknowledged).
    pub durable: Option<Durable>,
}

/// Accepts records durably (spool write) and answers history queries.
pub trait Archive: Send + Sync + 'static {
    /// Whether this archive keeps records at all (controls disco features).
    fn enabled(&self) -> bool;
    /// Durably accepts a record; returns its archive id, if it keeps one.
    fn append(&self, record: ArchiveRecord) -> Result<Option<String>, ArchiveError>;
    /// Accepts a record and returns its id at once, with a wait for its
    /// durability that blocks no thread (an async caller awaits it). By
    /// default the record is appended durably before this returns.
    fn append_deferred(&self, record: ArchiveRecord) -> Result<Accepted, ArchiveError> {
        self.append(record).map(|id| Accepted { id, durable: None })
    }
    /// Answers a history query from what this node holds.
    fn query(&self, _query: &MamQuery) -> Result<MamPage, ArchiveError> {
        Err(ArchiveError::Unavailable("this node keeps no archive".into()))
    }
    /// Whether records of this kind are archived (configurable exclusions).
    fn keeps(&self, _kind: RecordKind, _has_body: bool) -> bool {
        self.enabled()
    }
}

/// The node keeps no archive.
pub struct NoArchive;

impl Archive for NoArchive {
    fn enabled(&self) -> bool {
        false
    }
    fn append(&self, _record: ArchiveRecord) -> Result<Option<String>, ArchiveError> {
        Ok(None)
    }
}

/// Keeps records in memory, numbering them; for unit tests.
#[derive(Default)]
pub struct MemArchive {
    records: Mutex<Vec<ArchiveRecord>>,
}

impl MemArchive {
    /// A copy of every record appended so far.
    pub fn records(&self) -> Vec<ArchiveRecord> {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Archive for MemArchive {
    fn enabled(&self) -> bool {
        true
    }
    fn append(&self, record: ArchiveRecord) -> Result<Option<String>, ArchiveError> {
        let mut r = self.records.lock().unwrap_or_else(|e| e.into_inner());
        r.push(record);
        Ok(Some(format!("mem-{}", r.len())))
    }
    fn query(&self, q: &MamQuery) -> Result<MamPage, ArchiveError> {
        let all: Vec<Record> = self
            .records()
            .into_iter()
            .enumerate()
            .map(|(i, r)| Record {
                id: format!("mem-{}", i + 1),
                ..Record::accepted(r, "mem")
            })
            .collect();
        Ok(page(all.into_iter().filter(|r| matches(q, r)).collect(), q))
    }
}

/// Whether a record answers a query's filters (not its paging).
pub fn matches(q: &MamQuery, r: &Record) -> bool {
    if r.kind != RecordKind::Message {
        return false;
    }
    let parts = r.participants();
    if !parts.contains(&q.owner) {
        return false;
    }
    if let Some(w) = &q.with {
        let ok = if w.contains('/') {
            r.from == *w || r.to == *w
        } else {
            parts.iter().any(|p| p == w && *p != q.owner) || (bare(&r.from) == w && bare(&r.to) == w)
        };
        if !ok {
            return false;
        }
    }
    let others: Vec<&String> = parts.iter().filter(|p| **p != q.owner).collect();
    if others.iter().any(|o| q.hide.contains(o)) {
        return false;
    }
    if let Some(only) = &q.only
        && !others.iter().all(|o| only.contains(o))
    {
        return false;
    }
    q.start_ms.is_none_or(|s| r.stamp_ms >= s)
        && q.end_ms.is_none_or(|e| r.stamp_ms <= e)
        && (q.ids.is_empty() || q.ids.contains(&r.id))
        && q.text.as_deref().is_none_or(|t| r.body_matches(t))
}

/// Applies the id-range filters and RSM paging to matching records in
/// archive order (oldest first).
pub fn page(mut all: Vec<Record>, q: &MamQuery) -> MamPage {
    if let Some(a) = &q.after_id
        && let Some(i) = all.iter().position(|r| r.id == *a)
    {
        all.drain(..=i);
    }
    if let Some(b) = &q.before_id
        && let Some(i) = all.iter().position(|r| r.id == *b)
    {
        all.truncate(i);
    }
    let max = q.max;
    if q.before.is_some() || q.last_page {
        let end = match &q.before {
            Some(b) => all.iter().position(|r| r.id == *b).unwrap_or(all.len()),
            None => all.len(),
        };
        let start = end.saturating_sub(max);
        MamPage {
            records: all[start..end].to_vec(),
            complete: start == 0,
        }
    } else {
        let start = match &q.after {
            Some(a) => all.iter().position(|r| r.id == *a).map_or(all.len(), |i| i + 1),
            None => 0,
        };
        let end = (start + max).min(all.len());
        MamPage {
            records: all[start..end].to_vec(),
            complete: end == all.len(),
        }
    }
}
