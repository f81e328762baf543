//! A large verifiable export: fills a replica with `CHORUS_EXPORT_RECORDS`
//! records (default 1,000,000), exports them all as JSON Lines and as
//! Actiance XML (each a tar with the chain and the manifest), checks one
//! offline as `chorus archive verify-export` does, and prints time, file
//! size and peak resident memory above the baseline for each. Run with
//! `cargo bench -p chorus-archive --bench export`.

mod common;

use chorus_archive::package::{Format, Request};
use chorus_archive::types::{Command, TypeConfig};
use common::{rec, reset_peak, status_kib};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use std::time::Instant;

const BATCH: u64 = 2000;

fn report(what: &str, t: Instant, base: u64, bytes: u64) {
    println!(
        "{what}: {:.1} s, {:.0} MiB, RSS before {} MiB, peak {} MiB (+{} MiB)",
        t.elapsed().as_secs_f64(),
        bytes as f64 / 1048576.0,
        base / 1024,
        status_kib("VmHWM:") / 1024,
        status_kib("VmHWM:").saturating_sub(base) / 1024
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::var("CHORUS_EXPORT_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut sm) = chorus_archive::db::open(&dir.path().join("a")).expect("open");
    let t = Instant::now();
    for (i, start) in (0..n).step_by(BATCH as usize).enumerate() {
        let e: Entry<TypeConfig> = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), i as u64 + 1),
            payload: EntryPayload::Normal(Command::Append(
                (start..(start + BATCH).min(n)).map(rec).collect(),
            )),
        };
        sm.apply([e]).await.expect("apply");
    }
    println!("filled {n} records in {:.1} s", t.elapsed().as_secs_f64());
    let positions: Vec<u64> = (0..n).collect();
    for format in [Format::Jsonl, Format::Actiance] {
        let req = Request {
            asked: serde_json::json!({ "bench": true }),
            by: "bench".into(),
            role: "compliance".into(),
            addr: String::new(),
            node: "bench".into(),
            domain: "corp.example".into(),
            format,
            created_ms: 1_800_000_000_000,
        };
        let base = reset_peak();
        let t = Instant::now();
        let pkg = sm.export_package(&positions, req, dir.path()).expect("export");
        report(
            &format!("export {format:?} ({} records)", pkg.records),
            t,
            base,
            pkg.bytes,
        );
        let base = reset_peak();
        let t = Instant::now();
        let r = chorus_archive::package::verify::verify_file(pkg.file.path()).expect("verify");
        assert!(r.ok && r.records == n, "{:?}", r.problems);
        report("verify-export", t, base, pkg.bytes);
    }
}
