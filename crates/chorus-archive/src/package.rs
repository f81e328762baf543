//! Verifiable exports. An export is a tar that carries its own proof:
//!
//! * `records.jsonl`: the records, one JSON object per line, oldest first;
//! * `chain.jsonl`: for each record, in the same order, its archive
//!   position, its chain link number, the previous link's hash, its
//!   content hash, the link's hash, and the record's canonical encoding
//!   (the exact bytes the content hash covers);
//! * the rendering asked for: `eml/<day>/<n>.eml` (one RFC 5322 transcript
//!   per conversation and UTC day) or `actiance.xml` (the XML archiving
//!   vendors import); none for JSON Lines;
//! * `manifest.json`, last: what was asked, by whom, from where, when, the
//!   record count, every other file's size and SHA-256, the chain links
//!   the export covers and the chain head at export time.
//!
//! `verify.rs` checks a downloaded export offline (`chorus archive
//! verify-export FILE`): the files against the manifest, each record's
//! canonical bytes against its content hash, each link's hash from the
//! previous hash and its fields. The manifest's own SHA-256 is written in
//! the export's audit entry, which is part of the chain, so the archive
//! later vouches for exactly this export.
//!
//! Built on disk in bounded memory: records are read one at a time by
//! position and streamed into temporary files, then into the tar; only the
//! positions (and, for the renderings, their grouping) are held.

mod actiance;
pub mod tar;
pub mod verify;

use crate::chain::{GENESIS, Head, Link, canonical};
use crate::state_machine::ArchiveStateMachine;
use crate::types::Record;
use chorus_core::time::xep0082;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{self, BufWriter, Seek, Write};
use std::path::Path;

/// The rendering an export carries besides the JSON files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON Lines only.
    Jsonl,
    /// RFC 5322 transcripts.
    Eml,
    /// Actiance-style XML.
    Actiance,
}

/// Who asked for an export, and what.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    /// The search or hold, as the API received it.
    pub asked: serde_json::Value,
    /// The caller's name and role.
    pub by: String,
    /// Its role.
    pub role: String,
    /// The address the request came from.
    pub addr: String,
    /// The node that built the export.
    pub node: String,
    /// The XMPP domain (for e-mail addresses).
    pub domain: String,
    /// The rendering.
    pub format: Format,
    /// When (ms).
    pub created_ms: u64,
}

/// One file of an export, as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Its name in the tar.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256 (hex).
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// The manifest's format version.
    pub version: u32,
    /// What asked for it.
    pub request: Request,
    /// `created_ms` as RFC 3339.
    pub created: String,
    /// Records in the export.
    pub records: u64,
    /// The chain head when the export was built.
    pub chain_head: Head,
    /// The lowest and highest chain link numbers of the exported records.
    pub links: Option<(u64, u64)>,
    /// Every other file of the export.
    pub files: Vec<FileEntry>,
    /// For transcripts: each file's conversation (participants) and day.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub conversations: BTreeMap<String, (Vec<String>, String)>,
    /// Shared files the records name whose bytes this node did not hold
    /// (not yet copied here): their hashes are still in the records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_missing: Vec<String>,
}

/// A finished export: a temporary file (removed when dropped).
pub struct Package {
    /// The tar.
    pub file: tempfile::NamedTempFile,
    /// Its size.
    pub bytes: u64,
    /// Records in it.
    pub records: u64,
    /// SHA-256 of its manifest (hex), recorded in the audit trail.
    pub manifest_sha256: String,
}

/// `chain.jsonl`: one record's place in the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLine {
    /// Archive id.
    pub id: String,
    /// Archive position.
    pub position: u64,
    /// Chain link number.
    pub link: u64,
    /// The previous link's hash.
    pub prev: String,
    /// SHA-256 of `canonical`.
    pub content: String,
    /// The link's hash: SHA-256(prev || link text).
    pub hash: String,
    /// The record's canonical encoding.
    pub canonical: String,
}

/// Records by (UTC day, conversation): its participants and the records'
/// positions, oldest first.
pub(crate) type Groups = BTreeMap<(String, String), (Vec<String>, Vec<u64>)>;

/// The JSON files of an export while it is built.
struct JsonFiles {
    records: Hashing<BufWriter<tempfile::NamedTempFile>>,
    chain: Hashing<BufWriter<tempfile::NamedTempFile>>,
    groups: Groups,
    count: u64,
    links: Option<(u64, u64)>,
    /// SHA-256 of every shared file the records name.
    shared: std::collections::BTreeSet<String>,
}

/// A writer that hashes and counts what passes through.
struct Hashing<W: Write> {
    out: W,
    h: sha2::Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.out.write(buf)?;
        self.h.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn temp(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new().prefix(".export-").tempfile_in(dir)
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl ArchiveStateMachine {
    /// The chain link of the record `id` at `pos` and the hash before it.
    fn link_of(&self, id: &str, pos: u64) -> io::Result<Option<(u64, Link, String)>> {
        let Some(n) = self.record_link(id, pos).map_err(io_err)? else {
            return Ok(None);
        };
        let mut links = self.chain_links(n.saturating_sub(1), 2).map_err(io_err)?;
        let prev = match (n, links.first()) {
            (0, _) => GENESIS.to_owned(),
            (_, Some((m, l))) if *m == n - 1 => l.hash.clone(),
            _ => return Ok(None),
        };
        Ok(links.drain(..).find(|(m, _)| *m == n).map(|(_, l)| (n, l, prev)))
    }

    /// Builds the export of the records at `positions` (in the order to
    /// export) into a temporary file in `dir`.
    pub fn export_package(&self, positions: &[u64], req: Request, dir: &Path) -> io::Result<Package> {
        self.export_package_with_files(positions, req, dir, None)
    }

    /// Like [`Self::export_package`], and with `files_dir` the bytes of
    /// every shared file the records name go in as `files/<sha256>`
    /// (listed and checked like every other file of the export).
    pub fn export_package_with_files(
        &self,
        positions: &[u64],
        req: Request,
        dir: &Path,
        files_dir: Option<&Path>,
    ) -> io::Result<Package> {
        let head = self.chain_head().map_err(io_err)?;
        let json = self.write_json_files(positions, req.format != Format::Jsonl, dir)?;
        let mut files = Vec::new();
        let out = temp(dir)?;
        let mut tar = tar::TarWriter::new(BufWriter::new(out.reopen()?), req.created_ms / 1000);
        for (name, f) in [("records.jsonl", json.records), ("chain.jsonl", json.chain)] {
            let (bytes, sha256) = (f.bytes, crate::chain::hex(&sha2::Digest::finalize(f.h)));
            let mut file = f.out.into_inner().map_err(|e| e.into_error())?;
            file.as_file_mut().seek(io::SeekFrom::Start(0))?;
            let got = tar.append(name, bytes, file.as_file_mut())?;
            debug_assert_eq!(got, sha256);
            files.push(FileEntry {
                name: name.into(),
                bytes,
                sha256,
            });
        }
        let missing = match files_dir {
            Some(d) => add_shared_files(&mut tar, d, &json.shared, &mut files)?,
            None => Vec::new(),
        };
        let mut conversations = BTreeMap::new();
        match req.format {
            Format::Jsonl => {}
            Format::Eml => self.add_eml(&mut tar, &json.groups, &req, &mut files, &mut conversations)?,
            Format::Actiance => self.add_actiance(&mut tar, &json.groups, dir, &mut files)?,
        }
        let manifest = Manifest {
            version: 1,
            created: xep0082(req.created_ms),
            request: req,
            records: json.count,
            chain_head: head,
            links: json.links,
            files,
            conversations,
            files_missing: missing,
        };
        let bytes = serde_json::to_vec_pretty(&manifest)?;
        let manifest_sha256 = tar.append_bytes("manifest.json", &bytes)?;
        let mut w = tar.finish()?;
        w.flush()?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(Package {
            file: out,
            bytes: f.metadata()?.len(),
            records: json.count,
            manifest_sha256,
        })
    }

    /// Streams `records.jsonl` and `chain.jsonl` into temporary files, in
    /// batches; with `group`, also sorts the positions by conversation and
    /// day for a rendering.
    fn write_json_files(&self, positions: &[u64], group: bool, dir: &Path) -> io::Result<JsonFiles> {
        let hashing = |f| Hashing {
            out: BufWriter::new(f),
            h: Default::default(),
            bytes: 0,
        };
        let mut out = JsonFiles {
            records: hashing(temp(dir)?),
            chain: hashing(temp(dir)?),
            groups: BTreeMap::new(),
            count: 0,
            links: None,
            shared: std::collections::BTreeSet::new(),
        };
        for &pos in positions {
            let Some(r) = self.record_at(pos).map_err(io_err)? else {
                continue;
            };
            let Some((n, link, prev)) = self.link_of(&r.id, pos)? else {
                return Err(io_err(format!("record {} has no chain link", r.id)));
            };
            let edited = self.edited_record(&r).map_err(io_err)?;
            writeln!(out.records, "{}", crate::export::jsonl_value(&r, edited))?;
            out.shared.extend(crate::export::shared_files(&r.xml));
            let line = ChainLine {
                id: r.id.clone(),
                position: pos,
                link: n,
                prev,
                content: link.content,
                hash: link.hash,
                canonical: String::from_utf8(canonical(&r)).map_err(io_err)?,
            };
            writeln!(out.chain, "{}", serde_json::to_string(&line)?)?;
            out.links = Some(out.links.map_or((n, n), |(lo, hi)| (lo.min(n), hi.max(n))));
            out.count += 1;
            if group {
                let (key, parties) = crate::export::conversation(&r);
                let day = xep0082(r.stamp_ms)[..10].to_owned();
                out.groups
                    .entry((day, key))
                    .or_insert_with(|| (parties, Vec::new()))
                    .1
                    .push(pos);
            }
        }
        Ok(out)
    }

    /// Reads the records at `positions`.
    fn records_at(&self, positions: &[u64]) -> io::Result<Vec<Record>> {
        let mut out = Vec::with_capacity(positions.len());
        for &p in positions {
            if let Some(r) = self.record_at(p).map_err(io_err)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn add_eml<W: Write>(
        &self,
        tar: &mut tar::TarWriter<W>,
        groups: &Groups,
        req: &Request,
        files: &mut Vec<FileEntry>,
        conversations: &mut BTreeMap<String, (Vec<String>, String)>,
    ) -> io::Result<()> {
        for (i, ((day, _), (parties, positions))) in groups.iter().enumerate() {
            let recs = self.records_at(positions)?;
            let refs: Vec<&Record> = recs.iter().collect();
            let bytes = crate::export::eml(parties, day, &refs, &req.domain);
            // Short, unique names: the conversation is in the manifest.
            let name = format!("eml/{day}/{:06}.eml", i + 1);
            let sha256 = tar.append_bytes(&name, &bytes)?;
            files.push(FileEntry {
                name: name.clone(),
                bytes: bytes.len() as u64,
                sha256,
            });
            conversations.insert(name, (parties.clone(), day.clone()));
        }
        Ok(())
    }

    fn add_actiance<W: Write>(
        &self,
        tar: &mut tar::TarWriter<W>,
        groups: &Groups,
        dir: &Path,
        files: &mut Vec<FileEntry>,
    ) -> io::Result<()> {
        let mut f = Hashing {
            out: BufWriter::new(temp(dir)?),
            h: Default::default(),
            bytes: 0,
        };
        actiance::write(&mut f, groups, |p| self.records_at(p))?;
        let bytes = f.bytes;
        let mut file = f.out.into_inner().map_err(|e| e.into_error())?;
        file.as_file_mut().seek(io::SeekFrom::Start(0))?;
        let sha256 = tar.append("actiance.xml", bytes, file.as_file_mut())?;
        files.push(FileEntry {
            name: "actiance.xml".into(),
            bytes,
            sha256,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// Appends `files/<sha256>` for each shared file held in `files_dir`;
/// returns the hashes it could not find.
fn add_shared_files<W: Write>(
    tar: &mut tar::TarWriter<W>,
    files_dir: &Path,
    shared: &std::collections::BTreeSet<String>,
    files: &mut Vec<FileEntry>,
) -> io::Result<Vec<String>> {
    let mut missing = Vec::new();
    for sha in shared {
        let path = files_dir.join(&sha[..2]).join(sha);
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(sha.clone());
                continue;
            }
            Err(e) => return Err(e),
        };
        let bytes = f.metadata()?.len();
        let name = format!("files/{sha}");
        let got = tar.append(&name, bytes, &mut f)?;
        if got != *sha {
            // The bytes on disk are not the file the record names.
            return Err(io_err(format!(
                "shared file {sha} is corrupt on this node (hashes to {got})"
            )));
        }
        files.push(FileEntry {
            name,
            bytes,
            sha256: got,
        });
    }
    Ok(missing)
}
