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
use chorus_archive::state_machine::ArchiveStateMachine;
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
        .on_thread_start(chorus_store::quiet_perf_counters)
        .build()
        .expect("runtime");
    rt.block_on(run());
}

/// One generated chat record (`i` orders the stamps).
fn record(rng: &mut Rng, i: u64, users: u64) -> ArchiveRecord {
    let (from, to) = (rng.below(users), rng.below(users));
    let body: Vec<String> = (0..8).map(|_| word(rng.below(4096))).collect();
    let body = body.join(" ");
    ArchiveRecord {
        from: format!("user{from}@{DOMAIN}/r"),
        to: format!("user{to}@{DOMAIN}"),
        stamp_ms: 1_700_000_000_000 + i,
        xml: format!("<message xmlns='jabber:client' type='chat'><body>{body}</body></message>"),
        body: Some(body),
        ..ArchiveRecord::default()
    }
}

/// Appends like a session does: the record is staged at once, and the
/// caller awaits its group commit (`append_deferred`) on the runtime
/// instead of blocking a thread; returns the id once the record is on
/// disk. A full spool is backpressure: wait for the shipper.
async fn append(a: &RaftArchive, rec: &ArchiveRecord) -> String {
    loop {
        match a.append_deferred(rec.clone()) {
            Ok(accepted) => {
                if let Some(durable) = accepted.durable {
                    durable.await.expect("spool write");
                }
                return accepted.id.expect("id");
            }
            Err(chorus_core::archive::ArchiveError::Unavailable(_)) => {
                tokio::time::sleep(Duration::from_millis(2)).await
            }
            Err(e) => panic!("append failed: {e}"),
        }
    }
}

type Samples = Arc<std::sync::Mutex<Vec<(String, Instant)>>>;

/// Moves sampled ids that every site has applied out of `pending`, with
/// their lag in milliseconds.
fn collect_applied(
    machines: &[ArchiveStateMachine],
    samples: &Samples,
    pending: &mut Vec<(String, Instant)>,
    lags: &mut Vec<f64>,
) {
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
}

/// Starts `writers` writers per node, each a task on the runtime like a
/// session; writer `first` (its node is `first % 3`) takes the records
/// `first, first + stride, ...` where `stride` is all writers together.
fn spawn_writers<F, Fut>(
    archives: &[Arc<RaftArchive>],
    writers: u64,
    work: F,
) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn(Arc<RaftArchive>, u64, u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let stride = 3 * writers;
    let mut producers = Vec::new();
    for (n, a) in archives.iter().enumerate() {
        for w in 0..writers {
            let first = n as u64 + 3 * w;
            producers.push(tokio::spawn(work(a.clone(), first, stride)));
        }
    }
    producers
}

/// Phase 1: `writers` concurrent writers per node (sessions, as on a real
/// node, whose spool writes share group commits) accept a third of the
/// records each as fast as they can.
async fn fill(
    archives: &[Arc<RaftArchive>],
    machines: &[ArchiveStateMachine],
    records: u64,
    users: u64,
    writers: u64,
) {
    let t0 = Instant::now();
    let samples: Samples = Arc::default();
    let s2 = samples.clone();
    let producers = spawn_writers(archives, writers, move |a, first, stride| {
        let s2 = s2.clone();
        async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (first + 1));
            for i in (first..records).step_by(stride as usize) {
                let id = append(&a, &record(&mut rng, i, users)).await;
                if i % LAG_SAMPLE_EVERY < 3 {
                    s2.lock().expect("lock").push((id, Instant::now()));
                }
            }
        }
    });
    let (mut lags, mut pending) = (Vec::new(), Vec::new());
    let mut all_spooled_at = None;
    loop {
        collect_applied(machines, &samples, &mut pending, &mut lags);
        if all_spooled_at.is_none() && producers.iter().all(|p| p.is_finished()) {
            all_spooled_at = Some(t0.elapsed());
        }
        let applied = machines.iter().map(|m| m.applied_records().unwrap_or(0));
        if applied.min().unwrap_or(0) >= records && pending.is_empty() && all_spooled_at.is_some() {
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
    println!("  archive lag (saturated)     p50 {lag50:.1} ms  p99 {lag99:.1} ms  max {lagmax:.1} ms");
}

/// Phase 1b: a steady `rate` records/s (open loop: each writer keeps its
/// schedule whatever the archive does, its appends awaited in tasks of
/// their own as a session's messages are) for `secs`, spread over the
/// three nodes; every 100th record is timed from its spool write to
/// applied on all three sites.
async fn paced_lag(
    archives: &[Arc<RaftArchive>],
    machines: &[ArchiveStateMachine],
    rate: u64,
    secs: u64,
    users: u64,
    writers: u64,
) {
    let samples: Samples = Arc::default();
    let total = rate * secs;
    let interval = Duration::from_secs_f64(3.0 * writers as f64 / rate as f64);
    let t0 = tokio::time::Instant::now();
    let s2 = samples.clone();
    let producers = spawn_writers(archives, writers, move |a, first, stride| {
        let s2 = s2.clone();
        async move {
            let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B ^ (first + 1));
            let mut due = t0 + interval.mul_f64(first as f64 / stride as f64);
            let mut inflight = tokio::task::JoinSet::new();
            for i in (first..total).step_by(stride as usize) {
                tokio::time::sleep_until(due).await;
                due += interval;
                let (a, s2, rec) = (a.clone(), s2.clone(), record(&mut rng, 10_000_000_000 + i, users));
                inflight.spawn(async move {
                    let id = append(&a, &rec).await;
                    if i % 100 == 0 {
                        s2.lock().expect("lock").push((id, Instant::now()));
                    }
                });
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        }
    });
    let (mut lags, mut pending) = (Vec::new(), Vec::new());
    loop {
        collect_applied(machines, &samples, &mut pending, &mut lags);
        if pending.is_empty() && producers.iter().all(|p| p.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let sent_secs = t0.elapsed().as_secs_f64();
    let n = lags.len();
    let (lag50, lag99, lagmax) = percentiles(lags);
    println!(
        "  paced {rate}/s for {secs} s      achieved {:.0} records/s; lag ({n} samples) \
         p50 {lag50:.1} ms  p99 {lag99:.1} ms  max {lagmax:.1} ms",
        total as f64 / sent_secs
    );
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
    let writers = env("ARCHIVE_BENCH_WRITERS", 32);
    println!(
        "archive benchmark: {records} records, {users} users, 3 nodes (one Raft voter per site), \
         {writers} writers per node"
    );
    fill(&archives, &machines, records, users, writers).await;
    let rate = env("ARCHIVE_BENCH_LAG_RATE", 10_000);
    let secs = env("ARCHIVE_BENCH_LAG_SECS", 20);
    if rate > 0 && secs > 0 {
        paced_lag(&archives, &machines, rate, secs, users, writers).await;
    }
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
