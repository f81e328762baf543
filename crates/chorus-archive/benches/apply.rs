//! The apply of committed batches on one replica, alone (prints numbers;
//! not a test): `CHORUS_APPLY_RECORDS` records (default 500,000) between
//! `CHORUS_APPLY_USERS` users (default 1,000, random pairs, as in the
//! cluster's archive benchmark) in Raft entries of `CHORUS_APPLY_BATCH`
//! records (default 2,048, a full spool batch), then the same again in
//! entries of 64. Prints records/s and the process's CPU time per record
//! (RocksDB's flushes and compactions included): the part of the archive's
//! cost that every site pays for every record. Run with
//! `cargo bench -p chorus-archive --bench apply`.

mod common;

use chorus_archive::types::{Command, Record, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use std::time::Instant;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User and system CPU seconds of this process so far.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the
    // 14th field of the line, stime the 15th, in clock ticks (100/s).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// A chat record between two of `users` users (xorshift on `i`).
fn record(i: u64, users: u64) -> Record {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let mut r = common::rec(i);
    r.from = format!("user{}@corp.example/laptop", x % users);
    r.to = format!("user{}@corp.example", (x >> 20) % users);
    r
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // As on the node's apply lane (`background.rs`): this thread applies.
    chorus_store::quiet_perf_counters();
    let n = env("CHORUS_APPLY_RECORDS", 500_000);
    let users = env("CHORUS_APPLY_USERS", 1_000);
    let base_rss = common::reset_peak();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut sm) = chorus_archive::db::open(&dir.path().join("a")).expect("open");
    let (mut first, mut index) = (0, 0);
    for batch in [env("CHORUS_APPLY_BATCH", 2048), 64] {
        let (t, cpu) = (Instant::now(), cpu_secs());
        for start in (first..first + n).step_by(batch as usize) {
            index += 1;
            let e: Entry<TypeConfig> = Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
                payload: EntryPayload::Normal(Command::Append(
                    (start..(start + batch).min(first + n))
                        .map(|i| record(i, users))
                        .collect(),
                )),
            };
            sm.apply([e]).await.expect("apply");
        }
        first += n;
        let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - cpu);
        println!(
            "apply, {batch:>5} records per entry: {n} records in {secs:.1} s, {:.0} records/s, \
             CPU {:.1} µs per record, peak RSS +{} MiB",
            n as f64 / secs,
            cpu * 1e6 / n as f64,
            common::status_kib("VmHWM:").saturating_sub(base_rss) / 1024
        );
    }
}
