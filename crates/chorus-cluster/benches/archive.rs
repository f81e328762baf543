//! Archive benchmark (prints numbers; not a test): three in-process nodes
//! on loopback with real mTLS gRPC, one Raft voter each, every node's
//! spool shipping in batches. Measures records committed per second on
//! every site, the archive lag (spool write to applied on all three
//! sites), then, on the resulting archive, search indexing speed and the
//! latency of MAM pages, MAM full-text and compliance searches.
//!
//! `cargo bench -p chorus-cluster --bench archive` (records: env
//! `ARCHIVE_BENCH_RECORDS`, default 1,000,000; users: `ARCHIVE_BENCH_USERS`,
//! default 1,000).

#[path = "../tests/common/mod.rs"]
mod common;

use chorus_archive::raft::RaftArchive;
use chorus_archive::search::{SearchIndex, SearchQuery};
use chorus_core::archive::{Archive, ArchiveRecord, MamQuery};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DOMAIN: &str = common::DOMAIN;
/// Every this many records, one is timed from spool write to applied everywhere.
const LAG_SAMPLE_EVERY: u64 = 5_000;
/// Queries per latency measurement.
const QUERIES: usize = 1_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn word(i: u64) -> String {
    const SYL: [&str; 16] = [
        "ka", "lo", "mi", "ne", "po", "ru", "sa", "te", "vi", "zo", "ba", "de", "fu", "gi", "ho", "ju",
    ];
    format!(
        "{}{}{}",
        SYL[(i % 16) as usize],
        SYL[((i / 16) % 16) as usize],
        SYL[((i / 256) % 16) as usize]
    )
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99), at(1.0))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let records = env("ARCHIVE_BENCH_RECORDS", 1_000_000);
    let users = env("ARCHIVE_BENCH_USERS", 1_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, _net) = common::start(dir.path()).await;
    common::ready(&nodes).await;
    let (rafts, machines, spools, nets) = common::start_raft(&nodes, dir.path(), &[0, 1, 2]).await;
    common::leader(&rafts).await;
    let archives: Vec<Arc<RaftArchive>> = spools
        .iter()
        .zip(&machines)
        .zip(common::NODES)
        .map(|((s, m), (_, site))| Arc::new(RaftArchive::new(s.clone(), site).with_state_machine(m.clone())))
        .collect();
    for (i, a) in archives.iter().enumerate() {
        common::spawn_shipper(a, &rafts[i], &nets[i], &nodes[i]);
    }
    println!("archive benchmark: {records} records, {users} users, 3 nodes (one Raft voter per site)");

    // Phase 1: every node accepts a third of the records as fast as it can.
    let t0 = Instant::now();
    let mut producers = Vec::new();
    let samples = Arc::new(std::sync::Mutex::new(Vec::<(String, Instant)>::new()));
    for (n, a) in archives.iter().enumerate() {
        let (a, samples) = (a.clone(), samples.clone());
        producers.push(tokio::task::spawn_blocking(move || {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1));
            for i in (n as u64..records).step_by(3) {
                let (from, to) = (rng.below(users), rng.below(users));
                let body: Vec<String> = (0..8).map(|_| word(rng.below(4096))).collect();
                let body = body.join(" ");
                let rec = ArchiveRecord {
                    from: format!("user{from}@{DOMAIN}/r"),
                    to: format!("user{to}@{DOMAIN}"),
                    stamp_ms: 1_700_000_000_000 + i,
                    xml: format!("<message xmlns='jabber:client' type='chat'><body>{body}</body></message>"),
                    body: Some(body),
                    ..ArchiveRecord::default()
                };
                // A full spool is backpressure: wait for the shipper.
                let id = loop {
                    match a.append(rec.clone()) {
                        Ok(id) => break id.expect("id"),
                        Err(chorus_core::archive::ArchiveError::Unavailable(_)) => {
                            std::thread::sleep(Duration::from_millis(2))
                        }
                        Err(e) => panic!("append failed: {e}"),
                    }
                };
                if i % LAG_SAMPLE_EVERY < 3 {
                    samples.lock().expect("lock").push((id, Instant::now()));
                }
            }
        }));
    }
    // Lag: poll sampled ids until every site applied them.
    let mut lags = Vec::new();
    let mut pending: Vec<(String, Instant)> = Vec::new();
    let mut all_spooled_at = None;
    loop {
        pending.extend(samples.lock().expect("lock").drain(..));
        pending.retain(|(id, at)| {
            let done = machines
                .iter()
                .all(|m| m.position_of(id).ok().flatten().is_some());
            if done {
                lags.push(at.elapsed().as_secs_f64() * 1000.0);
            }
            !done
        });
        if all_spooled_at.is_none() && producers.iter().all(|p| p.is_finished()) {
            all_spooled_at = Some(t0.elapsed());
        }
        let applied: Vec<u64> = machines
            .iter()
            .map(|m| m.applied_records().unwrap_or(0))
            .collect();
        if applied.iter().all(|a| *a >= records) && pending.is_empty() && all_spooled_at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let commit_secs = t0.elapsed().as_secs_f64();
    let spool_secs = all_spooled_at.map_or(commit_secs, |d| d.as_secs_f64());
    let (lag50, lag99, lagmax) = percentiles(lags);
    println!(
        "  spool writes (3 nodes)      {:>10.0} records/s",
        records as f64 / spool_secs
    );
    println!(
        "  committed on every site     {:>10.0} records/s ({commit_secs:.1} s)",
        records as f64 / commit_secs
    );
    println!("  archive lag                 p50 {lag50:.1} ms  p99 {lag99:.1} ms  max {lagmax:.1} ms");
    let digests: Vec<String> = machines.iter().map(|m| m.digest().expect("digest").1).collect();
    assert!(
        digests.iter().all(|d| *d == digests[0]),
        "sites disagree: {digests:?}"
    );
    println!("  digests                     identical on all three sites");

    // Phase 2: the search index of one site.
    let index_dir = dir.path().join("index");
    let index = SearchIndex::open(&index_dir).expect("index");
    let t = Instant::now();
    let indexed = index.catch_up(&machines[0]).expect("index");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "  search indexing             {:>10.0} records/s ({indexed} in {secs:.1} s)",
        indexed as f64 / secs
    );

    // Phase 3: query latency on the archive.
    let sm = machines[0].clone();
    let mut rng = Rng(42);
    let mut time = |f: &mut dyn FnMut(&mut Rng)| -> (f64, f64, f64) {
        let mut v = Vec::with_capacity(QUERIES);
        for _ in 0..QUERIES {
            let t = Instant::now();
            f(&mut rng);
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        percentiles(v)
    };
    let user = |rng: &mut Rng| format!("user{}@{DOMAIN}", rng.below(users));
    let mut report = |name: &str, f: &mut dyn FnMut(&mut Rng)| {
        let (p50, p99, max) = time(f);
        println!("  {name:<27} p50 {p50:.2} ms  p99 {p99:.2} ms  max {max:.2} ms");
    };
    report("MAM last page (50)", &mut |rng| {
        let q = MamQuery {
            owner: user(rng),
            last_page: true,
            max: 50,
            ..MamQuery::default()
        };
        assert!(!sm.mam(&q, &[]).expect("mam").records.is_empty());
    });
    report("MAM page with contact", &mut |rng| {
        let q = MamQuery {
            owner: user(rng),
            with: Some(user(rng)),
            max: 50,
            ..MamQuery::default()
        };
        sm.mam(&q, &[]).expect("mam");
    });
    report("MAM full-text (user)", &mut |rng| {
        let q = MamQuery {
            owner: user(rng),
            text: Some(word(rng.below(4096))),
            last_page: true,
            max: 50,
            ..MamQuery::default()
        };
        sm.mam(&q, &[]).expect("mam");
    });
    report("search: one word", &mut |rng| {
        let q = SearchQuery {
            words: Some(word(rng.below(4096))),
            limit: 50,
            ..SearchQuery::default()
        };
        index.search(&sm, &q).expect("search");
    });
    report("search: word + participant", &mut |rng| {
        let q = SearchQuery {
            words: Some(word(rng.below(4096))),
            participants: vec![user(rng)],
            limit: 50,
            ..SearchQuery::default()
        };
        index.search(&sm, &q).expect("search");
    });
    report("search: two words + dates", &mut |rng| {
        let start = 1_700_000_000_000 + rng.below(records);
        let q = SearchQuery {
            words: Some(format!("{} {}", word(rng.below(4096)), word(rng.below(4096)))),
            start_ms: Some(start),
            end_ms: Some(start + records / 10),
            limit: 50,
            ..SearchQuery::default()
        };
        index.search(&sm, &q).expect("search");
    });
    common::shutdown(rafts).await;
}
