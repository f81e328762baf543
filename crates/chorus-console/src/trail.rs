//! The audit trail from the console's side: the queue that commits the
//! entries of views and sign-ins that show no archive content (health,
//! users, rooms, tokens), and the audit trail page.
//!
//! Reads of archive content are audited by the compliance operations
//! themselves before anything is shown (no quorum, no content). A health
//! or users page must still open on a site cut off from the quorum (that
//! is when an admin needs it), so its entry waits in a bounded queue that a
//! task commits in order, retrying until the archive takes it; when the
//! queue is full the page is refused rather than shown unaudited.

use crate::Console;
use crate::auth::Viewer;
use crate::page::{self, Flash};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chorus_archive::compliance::Caller;
use chorus_core::config::ApiRole;
use maud::html;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Entries waiting for the archive at most.
const QUEUE_MAX: usize = 1024;
/// Pause between attempts while the archive does not take an entry.
const RETRY: Duration = Duration::from_secs(2);

type Entry = (Caller, String, serde_json::Value);

/// Audit entries waiting to be committed.
#[derive(Default)]
pub(crate) struct Trail {
    queue: Mutex<VecDeque<Entry>>,
    wake: Arc<tokio::sync::Notify>,
}

impl Trail {
    /// Queues an entry; false when the queue is full.
    pub(crate) fn note(&self, who: Caller, action: &str, detail: serde_json::Value) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= QUEUE_MAX {
            metrics::counter!("chorus_console_audit_refused_total").increment(1);
            return false;
        }
        q.push_back((who, action.to_owned(), detail));
        metrics::gauge!("chorus_console_audit_queue").set(q.len() as f64);
        drop(q);
        self.wake.notify_one();
        true
    }

    fn front(&self) -> Option<Entry> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .front()
            .cloned()
    }

    fn pop(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.pop_front();
        metrics::gauge!("chorus_console_audit_queue").set(q.len() as f64);
    }
}

/// Starts the task that commits queued entries; it ends with the console.
pub(crate) fn spawn(console: Weak<Console>) {
    tokio::spawn(async move {
        loop {
            let Some(c) = console.upgrade() else { return };
            let Some((who, action, detail)) = c.trail.front() else {
                let wake = c.trail.wake.clone();
                drop(c);
                // Woken by a new entry; the timeout lets the task notice
                // the console is gone.
                let _ = tokio::time::timeout(Duration::from_secs(30), wake.notified()).await;
                continue;
            };
            let Some(compliance) = c.deps.compliance.clone() else {
                tracing::info!(actor = %who.name, addr = %who.addr, %action, %detail, "console (archiving off)");
                c.trail.pop();
                continue;
            };
            drop(c);
            match compliance.record(&who, &action, detail).await {
                Ok(()) => {
                    if let Some(c) = console.upgrade() {
                        c.trail.pop();
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "console audit entry waits for the archive");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    });
}

/// Queues the entry of a view that shows no archive content, or returns
/// the page refusing it.
pub(crate) fn view(
    c: &Console,
    v: &Viewer,
    role: ApiRole,
    action: &str,
    detail: serde_json::Value,
) -> Result<(), Response> {
    if c.trail.note(v.caller(role), action, detail) {
        return Ok(());
    }
    Err(page::error_page(
        c,
        Some(v),
        StatusCode::SERVICE_UNAVAILABLE,
        "The audit trail has not been reachable for a while and this node's queue of entries is full; \
         nothing is shown unaudited. Try again once the archive has a quorum.",
    ))
}

/// The audit page's filters.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct AuditFilter {
    actor: String,
    action: String,
    from: u64,
}

/// Entries read per page (before filtering).
const BATCH: usize = 1000;

/// `GET /console/audit`
pub(crate) async fn page(State(c): State<Arc<Console>>, v: Viewer, q: RawQuery) -> Response {
    match audit_page(&c, &v, q.0.as_deref()).await {
        Ok(r) | Err(r) => r,
    }
}

async fn audit_page(c: &Console, v: &Viewer, raw: Option<&str>) -> Result<Response, Response> {
    let who = v.require(c, ApiRole::Compliance)?;
    let f: AuditFilter = page::query(c, v, raw)?;
    let archive = page::archive(c, v)?;
    let entries = archive
        .audit_trail(&who, f.from, BATCH)
        .await
        .map_err(|e| page::compliance_error(c, v, e))?;
    let next = entries.last().map(|(seq, _)| seq + 1);
    let (actor, action) = (f.actor.to_lowercase(), f.action.to_lowercase());
    let shown: Vec<_> = entries
        .iter()
        .filter(|(_, e)| actor.is_empty() || e.actor.to_lowercase().contains(&actor))
        .filter(|(_, e)| action.is_empty() || e.action.to_lowercase().contains(&action))
        .collect();
    let body = html! {
        h1 { "Audit trail" }
        p.muted { "Every search, view, hold, export and sign-in, committed to the archive with who, when, from where and on which node. Your own reading of this page is in it too." }
        form.filters method="get" action="/console/audit" {
            label { "Who" input name="actor" value=(f.actor) placeholder="name or token"; }
            label { "Action" input name="action" value=(f.action) placeholder="search, hold, export…"; }
            label { "From entry" input name="from" type="number" min="0" value=(f.from); }
            button type="submit" { "Filter" }
        }
        @if shown.is_empty() {
            (page::empty("No entries match.", "Clear the filters or start from entry 0."))
        } @else {
            table {
                thead { tr { th { "#" } th { "When" } th { "Who" } th { "Role" } th { "Action" } th { "Node" } th { "From" } th { "Detail" } } }
                tbody {
                    @for (seq, e) in &shown {
                        tr {
                            td { (seq) } td { (page::time(e.at_ms)) } td { (e.actor) } td { (e.role) }
                            td { span.tag { (e.action) } } td { (e.node) } td { (e.addr) }
                            td.body { code { (e.detail) } }
                        }
                    }
                }
            }
        }
        @if let Some(n) = next {
            div.pager {
                span.muted { "Entries " (f.from) "–" (n - 1) " read; " (shown.len()) " shown." }
                @if entries.len() == BATCH {
                    a href=(format!("/console/audit?actor={}&action={}&from={n}", page::encode(&f.actor), page::encode(&f.action))) { "Later entries →" }
                }
            }
        }
    };
    Ok(page::layout(c, Some(v), "Audit trail", Flash::None, body))
}
