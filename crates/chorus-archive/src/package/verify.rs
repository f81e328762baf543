//! Checking an export offline (`chorus archive verify-export FILE`), with
//! nothing but the file: every member's SHA-256 and size against the
//! manifest, no member missing, extra or named twice, the record count,
//! and for every record in `chain.jsonl` its canonical bytes against its
//! content hash, its link hash against SHA-256(previous hash || link
//! text), and `records.jsonl` naming the same records in the same order.
//! Streams the tar: memory holds one line at a time, the file hashes and an
//! 8-byte summary per record (a readable line must say what its chained
//! record says).

use super::tar::TarReader;
use super::{ChainLine, Manifest};
use crate::chain::{LinkKind, content_hash_bytes, link_hash};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// What checking an export found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Whether everything checked out.
    pub ok: bool,
    /// Records checked against the chain.
    pub records: u64,
    /// Files whose hash matched the manifest.
    pub files: u64,
    /// SHA-256 of the manifest: the export's audit entry names it.
    pub manifest_sha256: String,
    /// The chain head at export time, per the manifest.
    pub chain_head: Option<crate::chain::Head>,
    /// Who asked, when, for what (from the manifest).
    pub request: Option<serde_json::Value>,
    /// Everything wrong (at most 1,000 listed).
    pub problems: Vec<String>,
}

impl Report {
    fn problem(&mut self, p: String) {
        if self.problems.len() < 1000 {
            self.problems.push(p);
        }
    }
}

/// A member's size and SHA-256, as read.
struct Seen {
    bytes: u64,
    sha256: String,
}

/// Hashes everything read through it.
struct Tee<R: Read> {
    inner: R,
    h: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.h.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Lines longer than this are refused (a record is at most a few MiB).
const LINE_MAX: usize = 64 * 1024 * 1024;

/// Checks the export at `path`.
pub fn verify_file(path: &Path) -> io::Result<Report> {
    let f = std::fs::File::open(path)?;
    let mut tar = TarReader::new(BufReader::with_capacity(256 * 1024, f));
    let mut report = Report::default();
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut manifest: Option<Vec<u8>> = None;
    let mut record_ids: Vec<u64> = Vec::new();
    let mut chain_ids: Vec<u64> = Vec::new();
    while let Some(m) = tar.next_member()? {
        if seen.contains_key(&m.name) || (m.name == "manifest.json" && manifest.is_some()) {
            report.problem(format!("{} appears twice in the export", m.name));
        }
        let mut tee = Tee {
            inner: tar.member(),
            h: Sha256::new(),
            bytes: 0,
        };
        match m.name.as_str() {
            "manifest.json" => {
                if m.size > 64 * 1024 * 1024 {
                    report.problem("the manifest is over 64 MiB".into());
                    continue;
                }
                let mut b = Vec::new();
                tee.read_to_end(&mut b)?;
                manifest = Some(b);
                continue;
            }
            "chain.jsonl" => check_chain(&mut tee, &mut report, &mut chain_ids)?,
            "records.jsonl" => read_ids(&mut tee, &mut report, &mut record_ids)?,
            _ => {
                io::copy(&mut tee, &mut io::sink())?;
            }
        }
        let sha256 = crate::chain::hex(&tee.h.finalize());
        seen.insert(
            m.name,
            Seen {
                bytes: tee.bytes,
                sha256,
            },
        );
    }
    let Some(manifest) = manifest else {
        report.problem("the export has no manifest.json".into());
        return Ok(report);
    };
    report.manifest_sha256 = content_hash_bytes(&manifest);
    match serde_json::from_slice::<Manifest>(&manifest) {
        Ok(m) => check_manifest(&m, &seen, &mut report),
        Err(e) => report.problem(format!("manifest.json cannot be read: {e}")),
    }
    if record_ids != chain_ids {
        let at = record_ids.iter().zip(&chain_ids).position(|(a, b)| a != b);
        report.problem(match at {
            Some(i) => format!(
                "records.jsonl line {} does not say what the chained record says",
                i + 1
            ),
            None => "records.jsonl and chain.jsonl hold different numbers of records".into(),
        });
    }
    report.ok = report.problems.is_empty();
    Ok(report)
}

fn check_manifest(m: &Manifest, seen: &BTreeMap<String, Seen>, report: &mut Report) {
    report.chain_head = Some(m.chain_head.clone());
    report.request = serde_json::to_value(&m.request).ok();
    if m.records != report.records {
        report.problem(format!(
            "the manifest counts {} records, chain.jsonl holds {}",
            m.records, report.records
        ));
    }
    for f in &m.files {
        match seen.get(&f.name) {
            None => report.problem(format!("{} is listed in the manifest but missing", f.name)),
            Some(s) if s.sha256 != f.sha256 || s.bytes != f.bytes => report.problem(format!(
                "{} was changed: SHA-256 {} ({} bytes), the manifest says {} ({} bytes)",
                f.name, s.sha256, s.bytes, f.sha256, f.bytes
            )),
            Some(_) => report.files += 1,
        }
    }
    for name in seen.keys() {
        if !m.files.iter().any(|f| f.name == *name) {
            report.problem(format!("{name} is in the export but not in its manifest"));
        }
    }
}

/// Reads one line (bounded); `None` at the end.
fn line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Option<()>> {
    buf.clear();
    let n = r.take(LINE_MAX as u64 + 1).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > LINE_MAX {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "a line over 64 MiB"));
    }
    Ok(Some(()))
}

fn check_chain(r: &mut impl Read, report: &mut Report, ids: &mut Vec<u64>) -> io::Result<()> {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    let mut n = 0u64;
    while line(&mut r, &mut buf)?.is_some() {
        n += 1;
        let l: ChainLine = match serde_json::from_slice(&buf) {
            Ok(l) => l,
            Err(e) => {
                report.problem(format!("chain.jsonl line {n} cannot be read: {e}"));
                continue;
            }
        };
        report.records += 1;
        if content_hash_bytes(l.canonical.as_bytes()) != l.content {
            report.problem(format!(
                "record {} (line {n}) was changed: its content hash does not match",
                l.id
            ));
        }
        match serde_json::from_str::<crate::types::Record>(&l.canonical) {
            Ok(rec) if rec.id == l.id => ids.push(summary(
                &rec.id,
                rec.stamp_ms,
                &rec.from,
                &rec.to,
                rec.body.as_deref(),
                &rec.xml,
            )),
            _ => {
                ids.push(0);
                report.problem(format!("line {n}: the canonical record is not record {}", l.id));
            }
        }
        if link_hash(&l.prev, LinkKind::Record, l.position, &l.id, &l.content, "") != l.hash {
            report.problem(format!(
                "record {} (line {n}): its chain link hash does not match",
                l.id
            ));
        }
    }
    Ok(())
}

/// What a readable record line and its canonical record must agree on.
/// Eight bytes of a SHA-256 suffice to tell lines apart and keep a
/// million-record export's check within a few MiB.
fn summary(id: &str, stamp_ms: u64, from: &str, to: &str, body: Option<&str>, xml: &str) -> u64 {
    let v = serde_json::json!([id, stamp_ms, from, to, body, xml]);
    let h = Sha256::digest(v.to_string().as_bytes());
    u64::from_be_bytes(h[..8].try_into().unwrap_or_default())
}

fn read_ids(r: &mut impl Read, report: &mut Report, ids: &mut Vec<u64>) -> io::Result<()> {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    let mut n = 0u64;
    while line(&mut r, &mut buf)?.is_some() {
        n += 1;
        match serde_json::from_slice::<serde_json::Value>(&buf) {
            Ok(v) => ids.push(summary(
                v["id"].as_str().unwrap_or_default(),
                v["stamp_ms"].as_u64().unwrap_or_default(),
                v["from"].as_str().unwrap_or_default(),
                v["to"].as_str().unwrap_or_default(),
                v["body"].as_str(),
                v["stanza"].as_str().unwrap_or_default(),
            )),
            Err(e) => report.problem(format!("records.jsonl line {n} cannot be read: {e}")),
        }
    }
    Ok(())
}
