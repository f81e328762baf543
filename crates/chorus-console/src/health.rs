//! The admin's health page: this node, every peer with its link state,
//! outbox and replication lag, the archive's Raft role, leader and apply
//! lag, the spool, a fatal error if any, the last warnings and errors, and small charts of the last hour
//! (messages/s, sessions, message handling p99 latency, spool, apply lag)
//! drawn from the node's own metrics, sampled every 10 seconds.

use crate::Console;
use crate::auth::Viewer;
use crate::page::{self, Flash};
use axum::extract::State;
use axum::response::Response;
use chorus_core::config::ApiRole;
use maud::{Markup, html};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Seconds between samples.
const EVERY: Duration = Duration::from_secs(10);
/// Samples kept: one hour.
const SAMPLES: usize = 360;

/// One sample of the node's metrics.
#[derive(Clone, Copy, Default)]
struct Sample {
    messages_per_s: f64,
    sessions: f64,
    latency_p99_ms: f64,
    spool: f64,
    apply_lag: f64,
}

/// The last hour of samples.
#[derive(Default)]
pub(crate) struct History(Mutex<VecDeque<Sample>>);

/// The sum of a metric's series in Prometheus text, over the series whose
/// labels contain `label` (all when empty).
fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.contains(label)).then(|| value.parse::<f64>().ok())?
        })
        .sum::<f64>()
        // (A float sum of nothing is -0.0, shown as "-0.0".)
        + 0.0
}

/// Starts the sampler; it ends with the console.
pub(crate) fn spawn_sampler(console: Weak<Console>) {
    tokio::spawn(async move {
        let mut last_messages: Option<f64> = None;
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tick.tick().await;
            let Some(c) = console.upgrade() else { return };
            let text = (c.deps.metrics)();
            let messages = metric(&text, "chorus_stanzas_in_total", "kind=\"message\"");
            let rate = last_messages.map_or(0.0, |m| (messages - m).max(0.0) / EVERY.as_secs_f64());
            last_messages = Some(messages);
            let s = Sample {
                messages_per_s: rate,
                sessions: metric(&text, "chorus_sessions", ""),
                latency_p99_ms: 1000.0
                    * metric(&text, "chorus_message_handling_seconds", "quantile=\"0.99\""),
                spool: metric(&text, "chorus_archive_spool_depth", ""),
                apply_lag: metric(&text, "chorus_raft_apply_lag", ""),
            };
            let mut h = c.history.0.lock().unwrap_or_else(|e| e.into_inner());
            if h.len() >= SAMPLES {
                h.pop_front();
            }
            h.push_back(s);
        }
    });
}

/// A small line chart of `values` (oldest first).
fn chart(title: &str, values: &[f64], unit: &str) -> Markup {
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    let scale = if max > 0.0 { 56.0 / max } else { 0.0 };
    // The newest point at the right edge: the width is the whole hour.
    let first = SAMPLES.saturating_sub(values.len());
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{},{:.1}", first + i, 60.0 - v * scale))
        .collect();
    let last = values.last().copied().unwrap_or(0.0);
    html! {
        div.card {
            div { strong { (title) } " " span.muted { "now " (format!("{last:.1}")) (unit) ", peak " (format!("{max:.1}")) (unit) } }
            @if values.len() < 2 {
                p.muted { "Collecting: a point every 10 seconds." }
            } @else {
                svg.chart viewBox=(format!("0 0 {} 62", SAMPLES - 1)) preserveAspectRatio="none" role="img" aria-label=(format!("{title} over the last hour")) {
                    line.axis x1="0" y1="60.5" x2=(SAMPLES - 1) y2="60.5" {}
                    polyline points=(points.join(" ")) {}
                }
            }
        }
    }
}

fn peers_table(status: &serde_json::Value) -> Markup {
    let empty = Vec::new();
    let peers = status["peers"].as_array().unwrap_or(&empty);
    html! {
        table #peers {
            thead { tr { th { "Site" } th { "Node" } th { "Link" } th { "Last heard" } th { "Sessions" } th { "Outbox" } th { "Replication lag" } } }
            tbody {
                @for p in peers {
                    tr.peer data-site=(p["site"].as_str().unwrap_or("")) {
                        td { (p["site"].as_str().unwrap_or("?")) }
                        td { (p["node_id"].as_str().unwrap_or("?")) }
                        td { @if p["link_up"] == true { span.tag.good { "up" } } @else { span.tag.bad { "unreachable" } } }
                        td { @match p["last_heard_ms_ago"].as_i64() { Some(ms) => { (ms) " ms ago" }, None => "never" } }
                        td { (p["sessions"]) } td { (p["outbox_stanzas"]) } td { (p["replication_lag_items"]) " items" }
                    }
                }
            }
        }
    }
}

/// The node id behind a Raft id (the leader field), among the configured
/// nodes.
fn node_of(c: &Console, raft: &serde_json::Value) -> String {
    let cluster = &c.deps.ctx.config.cluster;
    let ids = std::iter::once(&cluster.node_id).chain(cluster.peers.iter().map(|p| &p.id));
    ids.into_iter()
        .find(|id| raft.as_u64() == Some(chorus_archive::raft::raft_id(id)))
        .cloned()
        .unwrap_or_else(|| raft.to_string())
}

fn archive_card(c: &Console, a: &serde_json::Value) -> Markup {
    let lag = a["last_log_index"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(a["last_applied"].as_u64().unwrap_or(0));
    html! {
        div.card #archive {
            h2 { "Compliance archive" }
            div.grid {
                div { div.muted { "Raft role" } div.stat { (a["state"].as_str().unwrap_or("?")) } }
                div { div.muted { "Leader" } div.stat #leader { @if a["leader"].is_null() { span.tag.bad { "none" } } @else { (node_of(c, &a["leader"])) } } }
                div { div.muted { "Records" } div.stat { (a["records"]) } }
                div { div.muted { "Apply lag" } div.stat { (lag) } }
                div { div.muted { "Spooled here" } div.stat { (a["spooled"]) } }
                div { div.muted { "Term" } div.stat { (a["term"]) } }
            }
            p.muted { "Chain head " code { (a["digest"].as_str().unwrap_or("")) } }
        }
    }
}

/// The node's last warnings and errors, newest first.
fn last_errors(c: &Console) -> Markup {
    let lines = c.deps.recent_errors.as_ref().map(|f| f()).unwrap_or_default();
    let empty = Vec::new();
    let lines = lines.as_array().unwrap_or(&empty);
    html! {
        @if lines.is_empty() {
            (page::empty("No warnings or errors since the node started.", "The node's log has the rest."))
        } @else {
            table #errors {
                thead { tr { th { "When" } th { "Level" } th { "Where" } th { "What" } } }
                tbody {
                    @for l in lines.iter().take(20) {
                        tr {
                            td { (page::time(l["at_ms"].as_u64().unwrap_or(0))) }
                            td { @if l["level"] == "ERROR" { span.tag.bad { "error" } } @else { span.tag.warn { "warning" } } }
                            td { code { (l["target"].as_str().unwrap_or("")) } }
                            td.body { (l["text"].as_str().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/health`
pub(crate) async fn page(State(c): State<Arc<Console>>, v: Viewer) -> Response {
    if let Err(r) = v.require(&c, ApiRole::Admin) {
        return r;
    }
    if let Err(r) = crate::trail::view(&c, &v, ApiRole::Admin, "console.health", serde_json::json!({})) {
        return r;
    }
    let ctx = &c.deps.ctx;
    let cluster = c.deps.cluster_status.as_ref().map(|f| f());
    let archive = c.deps.archive_status.as_ref().map(|f| f());
    let samples: Vec<Sample> = c
        .history
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    let series = |f: fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<_>>();
    let reach = page::reach(&c);
    let body = html! {
        h1 { "Cluster health" }
        @if let Some(f) = chorus_core::fatal::current() {
            p.flash.error role="alert" { "Fatal " (f.component) " error: " (f.reason) }
        }
        div.grid {
            div.card { div.muted { "This node" } div.stat { (ctx.config.cluster.node_id) } div { "site " (ctx.config.cluster.site) } }
            div.card { div.muted { "Sessions here" } div.stat { (ctx.router.session_count()) } }
            div.card { div.muted { "Up since" } div { (page::time(ctx.started_ms)) } }
            div.card { div.muted { "Sites unreachable" } div.stat #unreachable { (reach.unreachable.len()) } }
        }
        h2 { "Sites and nodes" }
        @match &cluster {
            Some(s) => (peers_table(s)),
            None => (page::empty("This node is not clustered.", "Peers are listed in [cluster] peers.")),
        }
        @match &archive {
            Some(a) => (archive_card(&c, a)),
            None => (page::empty("Archiving is off on this node.", "[archive] enabled = true turns it on.")),
        }
        @if let Some(d) = c.deps.directory_status.as_ref().map(|f| f()) {
            div.card #directory {
                h2 { "Directory" }
                p { (d["people"]) " people. Last synchronized: "
                    @match d["last_ok_ms"].as_u64() { Some(ms) => (page::time(ms)), None => span.tag.bad { "never" } } }
                @if let Some(e) = d["last_error"].as_str() {
                    p { span.tag.bad { "unreachable" } " " (e) " — the last synchronization keeps serving searches, and people who logged in recently keep logging in (directory.login_grace_hours)." }
                }
            }
        }
        h2 { "Last warnings and errors" }
        (last_errors(&c))
        h2 { "The last hour" }
        div.grid {
            (chart("Messages/s", &series(|s| s.messages_per_s), ""))
            (chart("Sessions", &series(|s| s.sessions), ""))
            (chart("Message handling p99", &series(|s| s.latency_p99_ms), " ms"))
            (chart("Archive spool", &series(|s| s.spool), ""))
            (chart("Archive apply lag", &series(|s| s.apply_lag), ""))
        }
    };
    page::layout(&c, Some(&v), "Health", Flash::None, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_matching_series() {
        let text = "# TYPE chorus_stanzas_in_total counter\n\
                    chorus_stanzas_in_total{kind=\"message\"} 12\n\
                    chorus_stanzas_in_total{kind=\"iq\"} 40\n\
                    chorus_stanzas_in_total_other 7\n\
                    chorus_sessions 3\n";
        assert_eq!(metric(text, "chorus_stanzas_in_total", "kind=\"message\""), 12.0);
        assert_eq!(metric(text, "chorus_stanzas_in_total", ""), 52.0);
        assert_eq!(metric(text, "chorus_sessions", ""), 3.0);
        assert_eq!(metric(text, "chorus_missing", "").to_string(), "0", "not -0");
    }

    #[test]
    fn a_chart_scales_to_its_peak() {
        let svg = chart("m", &[0.0, 5.0, 10.0], "").into_string();
        assert!(svg.contains("357,60.0 358,32.0 359,4.0"), "{svg}");
    }
}
