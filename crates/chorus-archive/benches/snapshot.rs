//! Snapshot catch-up on a large archive: fills a replica with
//! `CHORUS_SNAPSHOT_RECORDS` records (default 3,000,000), builds its
//! snapshot file, then streams it into an empty replica through the same
//! path a follower uses (chunks into the receiving file, then install),
//! and prints time, file size and the process's peak resident memory above
//! its baseline for each phase. Run with
//! `cargo bench -p chorus-archive --bench snapshot`.

mod common;

use chorus_archive::types::{Command, TypeConfig};
use common::{rec, reset_peak, status_kib};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// openraft's default `snapshot_max_chunk_size`.
const CHUNK: usize = 3 * 1024 * 1024;
const BATCH: u64 = 2000;
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::var("CHORUS_SNAPSHOT_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut a) = chorus_archive::db::open(&dir.path().join("a")).expect("open a");
    let t = Instant::now();
    let mut index = 0;
    for start in (0..n).step_by(BATCH as usize) {
        index += 1;
        let batch = (start..(start + BATCH).min(n)).map(rec).collect();
        let e: Entry<TypeConfig> = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(Command::Append(batch)),
        };
        a.apply([e]).await.expect("apply");
    }
    println!(
        "filled {n} records in {:.1} s (RSS {} MiB)",
        t.elapsed().as_secs_f64(),
        status_kib("VmRSS:") / 1024
    );

    let base = reset_peak();
    let t = Instant::now();
    let mut snap = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let size = snap.snapshot.seek(std::io::SeekFrom::End(0)).await.expect("seek");
    println!(
        "build: {:.1} s, {:.0} MiB file, RSS before {} MiB, peak {} MiB (+{} MiB)",
        t.elapsed().as_secs_f64(),
        size as f64 / 1048576.0,
        base / 1024,
        status_kib("VmHWM:") / 1024,
        (status_kib("VmHWM:").saturating_sub(base)) / 1024
    );

    let (_log, mut b) = chorus_archive::db::open(&dir.path().join("b")).expect("open b");
    let base = reset_peak();
    let t = Instant::now();
    snap.snapshot
        .seek(std::io::SeekFrom::Start(0))
        .await
        .expect("rewind");
    let mut recv = b.begin_receiving_snapshot().await.expect("begin");
    let mut buf = vec![0u8; CHUNK];
    loop {
        let k = snap.snapshot.read(&mut buf).await.expect("read chunk");
        if k == 0 {
            break;
        }
        recv.write_all(&buf[..k]).await.expect("write chunk");
    }
    recv.flush().await.expect("flush");
    b.install_snapshot(&snap.meta, recv).await.expect("install");
    println!(
        "send + install: {:.1} s, RSS before {} MiB, peak {} MiB (+{} MiB)",
        t.elapsed().as_secs_f64(),
        base / 1024,
        status_kib("VmHWM:") / 1024,
        (status_kib("VmHWM:").saturating_sub(base)) / 1024
    );
    let (ca, da) = a.digest().expect("digest a");
    let (cb, db) = b.digest().expect("digest b");
    assert_eq!((ca, &da), (cb, &db), "the installed replica differs");
    println!("replicas identical: {cb} records, digest {}", &db[..16]);
}
