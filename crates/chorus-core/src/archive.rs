//! The archive seam. The XMPP layer hands every archive-worthy message to an
//! [`Archive`] before it acknowledges or delivers it. The Raft-replicated
//! compliance archive (`chorus-archive`) will implement this trait; until a
//! node is configured with it, [`NoArchive`] makes the absence explicit and
//! the node does not advertise message archive management.

use std::sync::Mutex;

/// A message as the archive receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveRecord {
    /// Bare JID of the sender.
    pub from: String,
    /// Bare JID of the recipient.
    pub to: String,
    /// Server timestamp in milliseconds since the epoch.
    pub stamp_ms: u64,
    /// The full stanza as serialized XML.
    pub xml: String,
}

/// Why a record was not archived.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ArchiveError {
    /// The record could not be written durably; the message must not be acked.
    #[error("archive unavailable: {0}")]
    Unavailable(String),
}

/// Accepts records durably (spool write) and returns their archive id.
pub trait Archive: Send + Sync + 'static {
    /// Whether this archive keeps records at all (controls disco features).
    fn enabled(&self) -> bool;
    /// Durably accepts a record; returns its archive id, if it keeps one.
    fn append(&self, record: ArchiveRecord) -> Result<Option<String>, ArchiveError>;
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
}
