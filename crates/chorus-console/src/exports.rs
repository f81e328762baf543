//! Exports from the console: started from a search or a hold, built in
//! the background by the audited export operation (the page shows it
//! running and refreshes itself), checked with the same verifier as
//! `chorus archive verify-export`, then offered for download with its
//! manifest shown. An officer sees and downloads only the exports they
//! started; a node keeps a few finished ones for an hour.

use crate::Console;
use crate::auth::Viewer;
use crate::page::{self, Flash};
use crate::search::SearchForm;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chorus_archive::compliance::ExportSource;
use chorus_archive::package::{Format, Package};
use chorus_archive::search::SEARCH_LIMIT_MAX;
use chorus_core::config::ApiRole;
use maud::{Markup, html};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Exports a node keeps (running or finished) at most.
const JOBS_MAX: usize = 8;
/// Exports one officer may hold of those.
const JOBS_PER_OWNER_MAX: usize = 3;
/// How long a finished export stays downloadable.
const KEEP: Duration = Duration::from_secs(3600);
/// The largest manifest shown.
const MANIFEST_BYTES_MAX: u64 = 1024 * 1024;

/// Where an export is.
enum Progress {
    Running,
    Done {
        name: String,
        pkg: Arc<Package>,
        manifest: String,
        verified: Result<(), Vec<String>>,
    },
    Failed(String),
}

/// One export.
struct Job {
    id: String,
    owner: String,
    asked: String,
    format: Format,
    started_ms: u64,
    started: Instant,
    progress: Progress,
}

/// This node's console exports.
#[derive(Default)]
pub(crate) struct Jobs(Mutex<Vec<Job>>);

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Job>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a job if there is room (expired and the oldest finished ones go).
    fn add(&self, job: Job) -> bool {
        let mut jobs = self.lock();
        jobs.retain(|j| matches!(j.progress, Progress::Running) || j.started.elapsed() < KEEP);
        // An officer's own oldest finished export makes room for the next.
        if jobs.iter().filter(|j| j.owner == job.owner).count() >= JOBS_PER_OWNER_MAX {
            let mine = |j: &Job| j.owner == job.owner && !matches!(j.progress, Progress::Running);
            match jobs.iter().position(mine) {
                Some(i) => drop(jobs.remove(i)),
                None => return false,
            }
        }
        while jobs.len() >= JOBS_MAX {
            match jobs.iter().position(|j| !matches!(j.progress, Progress::Running)) {
                Some(i) => drop(jobs.remove(i)),
                None => return false,
            }
        }
        jobs.push(job);
        true
    }

    fn finish(&self, id: &str, progress: Progress) {
        if let Some(j) = self.lock().iter_mut().find(|j| j.id == id) {
            j.progress = progress;
        }
    }
}

/// The form starting an export: a hold, or a search's fields.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct StartForm {
    hold: String,
    format: String,
    #[serde(flatten)]
    search: SearchForm,
}

/// `POST /console/exports`
pub(crate) async fn start(State(c): State<Arc<Console>>, v: Viewer, body: axum::body::Bytes) -> Response {
    match start_export(&c, &v, &body) {
        Ok(r) | Err(r) => r,
    }
}

fn start_export(c: &Arc<Console>, v: &Viewer, body: &[u8]) -> Result<Response, Response> {
    let (who, f): (_, StartForm) = v.posted(c, ApiRole::Compliance, body)?;
    let bad = |e: String| page::error_page(c, Some(v), StatusCode::BAD_REQUEST, &e);
    let archive = page::archive(c, v)?.clone();
    let format = match f.format.as_str() {
        "" | "jsonl" => Format::Jsonl,
        "eml" => Format::Eml,
        "actiance" => Format::Actiance,
        other => return Err(bad(format!("unknown format {other:?}"))),
    };
    let (source, asked) = if f.hold.trim().is_empty() {
        let mut q = f
            .search
            .query(&c.deps.ctx.domain, &c.deps.ctx.config.muc_domain())
            .map_err(bad)?;
        (q.offset, q.limit) = (0, SEARCH_LIMIT_MAX);
        let asked = serde_json::to_string(&q).unwrap_or_default();
        (ExportSource::Search(q), format!("search {asked}"))
    } else {
        (
            ExportSource::Hold(f.hold.trim().to_owned()),
            format!("hold {}", f.hold.trim()),
        )
    };
    let id = format!("{:016x}", rand::random::<u64>());
    let job = Job {
        id: id.clone(),
        owner: v.name.clone(),
        asked,
        format,
        started_ms: chorus_core::time::now_millis(),
        started: Instant::now(),
        progress: Progress::Running,
    };
    if !c.exports.add(job) {
        let why = "This node is building as many exports as it keeps; wait for one to finish.";
        return Err(page::error_page(c, Some(v), StatusCode::TOO_MANY_REQUESTS, why));
    }
    let weak = Arc::downgrade(c);
    tokio::spawn(async move {
        let progress = match archive.export(&who, source, format).await {
            Ok((name, pkg, permit)) => finished(name, pkg, permit).await,
            Err(e) => Progress::Failed(e.to_string()),
        };
        if let Some(c) = weak.upgrade() {
            c.exports.finish(&id, progress);
        }
    });
    Ok(Redirect::to("/console/exports").into_response())
}

/// Reads the manifest and verifies the package (the heavy-operation permit
/// is held until then; the file stays until the job expires).
async fn finished(name: String, pkg: Package, permit: chorus_archive::compliance::HeavyPermit) -> Progress {
    let path = pkg.file.path().to_owned();
    let checked = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let report = chorus_archive::package::verify::verify_file(&path);
        let manifest = read_manifest(&path);
        (report, manifest)
    })
    .await;
    match checked {
        Ok((Ok(report), manifest)) => Progress::Done {
            name,
            pkg: Arc::new(pkg),
            manifest: manifest.unwrap_or_else(|e| format!("(cannot read the manifest: {e})")),
            verified: if report.ok { Ok(()) } else { Err(report.problems) },
        },
        Ok((Err(e), _)) => Progress::Failed(format!("the export could not be verified: {e}")),
        Err(e) => Progress::Failed(e.to_string()),
    }
}

fn read_manifest(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut tar = chorus_archive::package::tar::TarReader::new(std::fs::File::open(path)?);
    while let Some(m) = tar.next_member()? {
        if m.name == "manifest.json" {
            let mut s = String::new();
            tar.member().take(MANIFEST_BYTES_MAX).read_to_string(&mut s)?;
            return Ok(s);
        }
    }
    Err(std::io::Error::other("no manifest.json"))
}

/// `GET /console/exports`
pub(crate) async fn list(State(c): State<Arc<Console>>, v: Viewer) -> Response {
    if let Err(r) = v.require(&c, ApiRole::Compliance) {
        return r;
    }
    if let Err(r) = crate::trail::view(
        &c,
        &v,
        ApiRole::Compliance,
        "console.exports",
        serde_json::json!({}),
    ) {
        return r;
    }
    let jobs = c.exports.lock();
    let mine: Vec<&Job> = jobs.iter().rev().filter(|j| j.owner == v.name).collect();
    let running = mine.iter().any(|j| matches!(j.progress, Progress::Running));
    let body = html! {
        h1 { "Exports" }
        p.muted { "Start an export from a search or a hold. Each package is checked with the same verifier as "
            code { "chorus archive verify-export" } " before it is offered." }
        @if running { div data-refresh="2" {} }
        @if mine.is_empty() {
            (page::empty("No exports yet.", "Run a search and press Export, or export a hold from the holds page."))
        }
        @for j in &mine { (job_card(j)) }
    };
    drop(jobs);
    page::layout(&c, Some(&v), "Exports", Flash::None, body)
}

fn job_card(j: &Job) -> Markup {
    html! {
        div.card.export id=(format!("export-{}", j.id)) {
            div { strong { (format!("{:?}", j.format).to_lowercase()) " export of " (j.asked) } }
            div.muted { "started " (page::time(j.started_ms)) }
            @match &j.progress {
                Progress::Running => {
                    p { span.tag.warn { "building" } " for " (j.started.elapsed().as_secs()) " s" }
                    progress aria-label="Building the export" {}
                },
                Progress::Failed(why) => p { span.tag.bad { "failed" } " " (why) },
                Progress::Done { name, pkg, manifest, verified } => {
                    p {
                        span.tag.good { "ready" } " " (pkg.records) " records, " (pkg.bytes) " bytes. "
                        @match verified {
                            Ok(()) => span.tag.good { "verified" },
                            Err(problems) => span.tag.bad title=(problems.join("; ")) { "verification failed" },
                        }
                    }
                    p { a.download href=(format!("/console/exports/{}/download", j.id)) download=(name) { "Download " (name) } }
                    p.muted { "Manifest SHA-256 " code { (pkg.manifest_sha256) } }
                    details { summary { "Manifest" } pre { (manifest) } }
                },
            }
        }
    }
}

/// `GET /console/exports/{id}/download`
pub(crate) async fn download(State(c): State<Arc<Console>>, v: Viewer, Path(id): Path<String>) -> Response {
    if let Err(r) = v.require(&c, ApiRole::Compliance) {
        return r;
    }
    let found = c
        .exports
        .lock()
        .iter()
        .find(|j| j.id == id && j.owner == v.name)
        .and_then(|j| match &j.progress {
            Progress::Done { name, pkg, .. } => Some((name.clone(), pkg.clone())),
            _ => None,
        });
    let Some((name, pkg)) = found else {
        return page::error_page(
            &c,
            Some(&v),
            StatusCode::NOT_FOUND,
            "No finished export of yours by that id.",
        );
    };
    // The download shows the records: its entry is committed first.
    let detail = serde_json::json!({
        "name": name, "manifest_sha256": pkg.manifest_sha256, "bytes": pkg.bytes,
    });
    let archive = match page::archive(&c, &v) {
        Ok(a) => a.clone(),
        Err(r) => return r,
    };
    if let Err(e) = archive
        .record(&v.caller(ApiRole::Compliance), "export.download", detail)
        .await
    {
        return page::compliance_error(&c, &v, e);
    }
    let file = match pkg.file.reopen() {
        Ok(f) => tokio::fs::File::from_std(f),
        Err(e) => return page::error_page(&c, Some(&v), StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    // The package (and its temporary file) lives as long as the stream.
    let stream = futures_util::stream::unfold((file, pkg.clone()), |(mut f, pkg)| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), (f, pkg)))
            }
            Err(e) => Some((Err(e), (f, pkg))),
        }
    });
    let headers = [
        (header::CONTENT_TYPE, "application/x-tar".to_owned()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ),
        (header::CONTENT_LENGTH, pkg.bytes.to_string()),
        (header::CACHE_CONTROL, "no-store".to_owned()),
        (
            header::HeaderName::from_static("x-chorus-manifest-sha256"),
            pkg.manifest_sha256.clone(),
        ),
    ];
    (headers, axum::body::Body::from_stream(stream)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(owner: &str, id: &str, progress: Progress) -> Job {
        Job {
            id: id.into(),
            owner: owner.into(),
            asked: String::new(),
            format: Format::Jsonl,
            started_ms: 0,
            started: Instant::now(),
            progress,
        }
    }

    #[test]
    fn one_officer_holds_a_few_exports_and_the_node_a_bounded_number() {
        let jobs = Jobs::default();
        for i in 0..JOBS_PER_OWNER_MAX {
            assert!(jobs.add(job("carol", &format!("c{i}"), Progress::Running)));
        }
        assert!(
            !jobs.add(job("carol", "c-more", Progress::Running)),
            "all of hers are running"
        );
        jobs.finish("c0", Progress::Failed("x".into()));
        assert!(
            jobs.add(job("carol", "c-next", Progress::Running)),
            "her finished one makes room"
        );
        assert!(jobs.lock().iter().all(|j| j.id != "c0"));
        for i in 0..(JOBS_MAX - JOBS_PER_OWNER_MAX) {
            assert!(jobs.add(job(&format!("officer{i}"), &format!("o{i}"), Progress::Running)));
        }
        assert!(
            !jobs.add(job("dave", "d0", Progress::Running)),
            "the node is full of running exports"
        );
        assert_eq!(jobs.lock().len(), JOBS_MAX);
    }
}
