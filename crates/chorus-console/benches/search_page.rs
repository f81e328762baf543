//! Console search page benchmark (prints numbers; not a test). One node's
//! real archive runtime (a single Raft voter, synced log and state
//! machine) is filled with records through Raft in batches, its search
//! index brought up to date, then the console is asked for search pages
//! as a signed-in officer, the way a browser asks: each page commits its
//! audit entry through Raft, searches the index, reads the page's records
//! from the state machine and renders the HTML. Prints p50, p99 and max
//! per kind of search, against the target of p99 under 200 ms at 1M
//! records. The requests go to the console's router in process (no TLS or
//! socket in the timing).
//!
//! `cargo bench -p chorus-console --bench search_page` (records: env
//! `CONSOLE_BENCH_RECORDS`, default 1,000,000; pages per kind:
//! `CONSOLE_BENCH_PAGES`, default 300).

use axum::body::Body;
use axum::http::{Request, header};
use chorus_archive::raft::{ArchiveNet, propose};
use chorus_archive::types::{Command, Record};
use std::sync::Arc;
use std::time::Instant;
use tower::ServiceExt as _;

const DOMAIN: &str = "corp.example";
const USERS: u64 = 1_000;
const BATCH: u64 = 5_000;
const TARGET_P99_MS: f64 = 200.0;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One of 4,096 pronounceable words.
fn word(i: u64) -> String {
    const SYL: [&str; 16] = [
        "ka", "lo", "mi", "ne", "po", "ru", "sa", "te", "vi", "zo", "ba", "de", "fu", "gi", "ho", "ju",
    ];
    (0..3).map(|k| SYL[((i >> (4 * k)) % 16) as usize]).collect()
}

fn record(i: u64, rng: &mut Rng) -> Record {
    let (from, to) = (rng.below(USERS), rng.below(USERS));
    let body: Vec<String> = (0..8).map(|_| word(rng.below(4096))).collect();
    let body = body.join(" ");
    Record {
        id: format!("bench-{i}"),
        from: format!("user{from}@{DOMAIN}/laptop"),
        to: format!("user{to}@{DOMAIN}"),
        site: ["london", "newyork", "tokyo"][(i % 3) as usize].into(),
        stamp_ms: 1_800_000_000_000 + i * 10,
        xml: format!("<message xmlns='jabber:client' type='chat'><body>{body}</body></message>"),
        body: Some(body),
        ..Record::default()
    }
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99), at(1.0))
}

fn cookies(r: &axum::response::Response) -> Vec<String> {
    r.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter(|kv| !kv.ends_with('='))
        .map(str::to_owned)
        .collect()
}

async fn send(app: &axum::Router, req: Request<Body>) -> axum::response::Response {
    app.clone().oneshot(req).await.expect("infallible")
}

/// Signs carol in; returns the session cookie.
async fn sign_in(app: &axum::Router) -> String {
    let page = send(
        app,
        Request::get("/console/login")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    let nonce_cookie = cookies(&page).pop().expect("login cookie");
    let nonce = nonce_cookie.split_once('=').expect("cookie").1.to_owned();
    let form = format!("nonce={nonce}&user=carol&password=carol-secret&token=&next=%2Fconsole%2Fsearch");
    let req = Request::post("/console/login")
        .header(header::COOKIE, nonce_cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .expect("request");
    let r = send(app, req).await;
    assert!(r.status().is_redirection(), "sign-in refused: {}", r.status());
    cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("__Host-chorus-console="))
        .expect("session cookie")
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
    let records = env("CONSOLE_BENCH_RECORDS", 1_000_000);
    let pages = env("CONSOLE_BENCH_PAGES", 300) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = chorus_core::config::Config::default();
    config.server.domain = DOMAIN.into();
    config.server.data_dir = dir.path().to_owned();
    config.console.compliance = vec!["carol".into()];
    let runtime = chorus_archive::runtime::start(&config, ArchiveNet::alone())
        .await
        .expect("archive");
    let compliance = runtime.compliance.clone().expect("archiving is on");
    println!("console search page benchmark: {records} records, {USERS} users, one node");
    fill(&compliance, records).await;
    let app = console(&config, &runtime, compliance);
    let cookie = sign_in(&app).await;
    let met = measure(&app, &cookie, records, pages).await;
    println!(
        "  target p99 < {TARGET_P99_MS} ms at {records} records: {}",
        if met { "met" } else { "NOT met" }
    );
    runtime.shutdown().await;
}

/// Appends `records` records through Raft and brings the index up to date.
async fn fill(compliance: &chorus_archive::compliance::Compliance, records: u64) {
    let t = Instant::now();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for start in (0..records).step_by(BATCH as usize) {
        let batch = (start..(start + BATCH).min(records))
            .map(|i| record(i, &mut rng))
            .collect();
        propose(&compliance.raft, &compliance.net, Command::Append(batch))
            .await
            .expect("append");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "  fill through Raft            {:>9.0} records/s ({secs:.1} s)",
        records as f64 / secs
    );
    // The node indexes in the background while it fills; this is what was
    // left to index when the fill ended.
    let t = Instant::now();
    let (index, sm) = (compliance.index.clone(), compliance.sm.clone());
    let left = tokio::task::spawn_blocking(move || index.catch_up(&sm).expect("index"))
        .await
        .expect("join");
    let (secs, (docs, _)) = (t.elapsed().as_secs_f64(), compliance.index.documents());
    println!("  index up to date             {docs} records ({left} left after the fill, {secs:.1} s)");
}

/// The console's routes over the node's archive, with the officer carol.
fn console(
    config: &chorus_core::config::Config,
    runtime: &chorus_archive::runtime::ArchiveRuntime,
    compliance: Arc<chorus_archive::compliance::Compliance>,
) -> axum::Router {
    let store = Arc::new(chorus_core::mem_store::MemStore::new());
    let creds =
        chorus_core::credentials::Credentials::from_password_with("carol-secret", 4096).expect("creds");
    chorus_core::store::Store::create_account(&*store, "carol", &creds).expect("account");
    let ctx = chorus_xmpp::context::Context::new(
        config.clone(),
        store,
        Arc::new(chorus_xmpp::router::LocalRouter::new()),
        runtime.archive.clone(),
    );
    chorus_console::routes(chorus_console::Deps {
        ctx: Arc::new(ctx),
        compliance: Some(compliance),
        tokens: Vec::new(),
        cluster_status: None,
        archive_status: runtime.status.clone(),
        metrics: Arc::new(String::new),
        directory_status: None,
        recent_errors: None,
    })
}

/// Makes one search page's query string.
type QueryFn<'a> = dyn Fn(&mut Rng) -> String + 'a;

/// Times `pages` search pages of each kind; true when every p99 is under
/// the target.
async fn measure(app: &axum::Router, cookie: &str, records: u64, pages: usize) -> bool {
    let mut rng = Rng(42);
    let mut met = true;
    let kinds: [(&str, &QueryFn<'_>); 4] = [
        ("one word, page 1", &|r| format!("q={}", word(r.below(4096)))),
        ("one word, page 20", &|r| {
            format!("q={}&page=20", word(r.below(4096)))
        }),
        ("word + person", &|r| {
            format!("q={}&people=user{}", word(r.below(4096)), r.below(USERS))
        }),
        ("two words + site + dates", &|r| {
            let day = r.below(records.div_ceil(8_640_000).max(1));
            let date = chorus_core::time::xep0082(1_800_000_000_000 + day * 86_400_000);
            let (w1, w2) = (word(r.below(4096)), word(r.below(4096)));
            format!(
                "q={w1}+OR+{w2}&site=tokyo&from={}&to={}",
                &date[..10],
                &date[..10]
            )
        }),
    ];
    for (name, query) in kinds {
        let mut v = Vec::with_capacity(pages);
        for _ in 0..pages {
            let uri = format!("/console/search?{}", query(&mut rng));
            let req = Request::get(&uri)
                .header(header::COOKIE, cookie)
                .body(Body::empty())
                .expect("request");
            let t = Instant::now();
            let r = send(app, req).await;
            let status = r.status();
            let html = axum::body::to_bytes(r.into_body(), 16 << 20).await.expect("body");
            v.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(
                status.is_success(),
                "{uri}: {status}: {}",
                String::from_utf8_lossy(&html)
            );
        }
        let (p50, p99, max) = percentiles(v);
        met &= p99 < TARGET_P99_MS;
        println!("  page: {name:<26} p50 {p50:>6.1} ms  p99 {p99:>6.1} ms  max {max:>6.1} ms");
    }
    met
}
