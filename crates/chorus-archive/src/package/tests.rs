//! Exports verify offline, and any change to one is found.

use super::tar::{TarReader, TarWriter};
use super::verify::verify_file;
use super::*;
use crate::testing::Machine;
use crate::types::Command;
use std::io::Read;

const T0: u64 = 1_700_000_000_000;

fn rec(i: u64, from: &str, to: &str) -> Record {
    Record {
        id: format!("n1-{i}"),
        from: format!("{from}/pc"),
        to: to.into(),
        site: "a".into(),
        stamp_ms: T0 + i * 60_000,
        xml: format!("<message><body>note {i} &amp; more</body></message>"),
        body: Some(format!("note {i} & more")),
        ..Record::default()
    }
}

async fn machine() -> Machine {
    let mut m = Machine::new();
    let mut records: Vec<Record> = (0..6).map(|i| rec(i, "alice@x", "bob@x")).collect();
    records.push(rec(6, "carol@x", "alice@x"));
    m.apply(vec![Command::Append(records)]).await;
    m
}

fn request(format: Format) -> Request {
    Request {
        asked: serde_json::json!({ "search": { "words": "note" } }),
        by: "officer".into(),
        role: "compliance".into(),
        addr: "127.0.0.1:5000".into(),
        node: "n1".into(),
        domain: "x".into(),
        format,
        created_ms: T0 + DAY,
    }
}

const DAY: u64 = 86_400_000;

fn export(m: &Machine, format: Format) -> Package {
    let positions: Vec<u64> = (0..7).collect();
    m.sm.export_package(&positions, request(format), m.dir.path())
        .expect("export")
}

/// The members of a tar file, in order.
fn members(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut r = TarReader::new(std::fs::File::open(path).expect("open"));
    let mut out = Vec::new();
    while let Some(m) = r.next_member().expect("read") {
        let mut b = Vec::new();
        r.member().read_to_end(&mut b).expect("member");
        out.push((m.name, b));
    }
    out
}

fn write(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut t = TarWriter::new(std::fs::File::create(path).expect("create"), 0);
    for (name, b) in files {
        t.append_bytes(name, b).expect("append");
    }
    t.finish().expect("finish");
}

#[tokio::test]
async fn every_format_verifies_and_carries_its_manifest() {
    let m = machine().await;
    for format in [Format::Jsonl, Format::Eml, Format::Actiance] {
        let p = export(&m, format);
        assert_eq!(p.records, 7);
        let r = verify_file(p.file.path()).expect("verify");
        assert!(r.ok, "{format:?}: {:?}", r.problems);
        assert_eq!(r.records, 7);
        assert_eq!(r.manifest_sha256, p.manifest_sha256);
        assert_eq!(r.chain_head, Some(m.sm.chain_head().expect("head")));
        let names: Vec<String> = members(p.file.path()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.first().map(String::as_str), Some("records.jsonl"));
        assert_eq!(names.last().map(String::as_str), Some("manifest.json"));
        match format {
            Format::Jsonl => assert_eq!(names.len(), 3),
            // Two conversations on one day: two transcripts, unique names.
            Format::Eml => assert_eq!(
                names[2..4],
                ["eml/2023-11-14/000001.eml", "eml/2023-11-14/000002.eml"]
            ),
            Format::Actiance => assert_eq!(names[2], "actiance.xml"),
        }
    }
}

#[tokio::test]
async fn a_changed_byte_anywhere_is_found() {
    let m = machine().await;
    let p = export(&m, Format::Eml);
    let files = members(p.file.path());
    let tampered = m.dir.path().join("tampered.tar");
    // One byte of a transcript.
    let mut edited = files.clone();
    let at = edited[2].1.len() - 5;
    edited[2].1[at] ^= 1;
    write(&tampered, &edited);
    let r = verify_file(&tampered).expect("verify");
    assert!(!r.ok);
    assert!(
        r.problems
            .iter()
            .any(|p| p.starts_with("eml/2023-11-14/000001.eml was changed")),
        "{:?}",
        r.problems
    );
}

#[tokio::test]
async fn a_rewritten_record_is_found_even_with_a_recomputed_manifest() {
    let m = machine().await;
    let p = export(&m, Format::Jsonl);
    let mut files = members(p.file.path());
    // Change what record 3 says in both JSON files, then fix the manifest.
    for (name, b) in files.iter_mut().filter(|(n, _)| n.ends_with(".jsonl")) {
        let text = String::from_utf8(b.clone()).expect("utf-8");
        *b = text.replace("note 3 & more", "note 3 & less").into_bytes();
        assert_ne!(text.as_bytes(), &b[..], "{name} held record 3");
    }
    let mut manifest: Manifest = serde_json::from_slice(&files[2].1).expect("manifest");
    for f in manifest.files.iter_mut() {
        let b = &files.iter().find(|(n, _)| *n == f.name).expect("file").1;
        f.sha256 = crate::chain::content_hash_bytes(b);
        f.bytes = b.len() as u64;
    }
    files[2].1 = serde_json::to_vec(&manifest).expect("json");
    let tampered = m.dir.path().join("rewritten.tar");
    write(&tampered, &files);
    let r = verify_file(&tampered).expect("verify");
    assert!(!r.ok);
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("record n1-3") && p.contains("content hash")),
        "{:?}",
        r.problems
    );
    // And its manifest is no longer the one the audit trail names.
    assert_ne!(r.manifest_sha256, p.manifest_sha256);
}

#[tokio::test]
async fn a_dropped_or_duplicated_file_is_found() {
    let m = machine().await;
    let p = export(&m, Format::Actiance);
    let files = members(p.file.path());
    let tampered = m.dir.path().join("short.tar");
    let without: Vec<_> = files
        .iter()
        .filter(|(n, _)| n != "actiance.xml")
        .cloned()
        .collect();
    write(&tampered, &without);
    let r = verify_file(&tampered).expect("verify");
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("actiance.xml is listed in the manifest but missing")),
        "{:?}",
        r.problems
    );
    let mut twice = files.clone();
    twice.insert(0, files[0].clone());
    write(&tampered, &twice);
    let r = verify_file(&tampered).expect("verify");
    assert!(
        r.problems.iter().any(|p| p.contains("appears twice")),
        "{:?}",
        r.problems
    );
}
