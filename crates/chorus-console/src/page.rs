//! The page frame every console page is drawn in (navigation by role, the
//! site banner, flash messages, security headers) and small helpers:
//! times shown in the viewer's zone with UTC on hover, query and form
//! parsing, URL encoding.

use crate::Console;
use crate::auth::Viewer;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chorus_core::config::ApiRole;
use maud::{DOCTYPE, Markup, html};
use std::sync::Arc;

/// The pages' referrer policy: `same-origin`, not `no-referrer`, under
/// which browsers send `Origin: null` with the pages' own forms (and the
/// origin check refuses them).
const REFERRER: &str = "same-origin";

/// The pages' Content-Security-Policy: nothing from anywhere else, no
/// inline script or style, no framing, forms only to us.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A message shown at the top of a page after an action.
pub(crate) enum Flash {
    /// Nothing to say.
    None,
    /// It worked.
    Ok(String),
}

/// What this node knows of its site's reach: unreachable peers, and
/// whether the archive has a leader (a quorum) from here.
pub(crate) struct Reach {
    /// Peers (site and node) this node has no link to.
    pub(crate) unreachable: Vec<(String, String)>,
    /// Whether the archive currently has a leader this node follows.
    pub(crate) archive_leader: Option<bool>,
}

/// Reads the node's reach from its status documents.
pub(crate) fn reach(c: &Console) -> Reach {
    let unreachable = c
        .deps
        .cluster_status
        .as_ref()
        .map(|f| f())
        .and_then(|s| s["peers"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|p| p["link_up"] != true)
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or("?").to_owned();
            (s("site"), s("node_id"))
        })
        .collect();
    let archive_leader = c.deps.archive_status.as_ref().map(|f| !f()["leader"].is_null());
    Reach {
        unreachable,
        archive_leader,
    }
}

fn banner(c: &Console) -> Markup {
    let r = reach(c);
    let mut sites: Vec<&str> = r.unreachable.iter().map(|(s, _)| s.as_str()).collect();
    sites.dedup();
    let peers = c.deps.ctx.config.cluster.peers.len();
    let cut = peers > 0 && r.unreachable.len() >= peers;
    html! {
        @if !sites.is_empty() || r.archive_leader == Some(false) {
            div.banner role="status" {
                @if cut { strong { "This site is cut off. " } }
                @else if !sites.is_empty() { strong { "Some sites are unreachable. " } }
                @if !sites.is_empty() { "No link to site " (sites.join(", ")) ". " }
                @if r.archive_leader == Some(false) {
                    "The archive has no leader reachable from here (no quorum, or an election under way): \
                     searches, holds and exports need their audit entry committed and are refused until it \
                     returns. Messages are kept in this site's spool. "
                }
                @if cut { "What this node shows is what this site holds." }
            }
        }
    }
}

fn nav(c: &Console, v: &Viewer) -> Markup {
    let people = c.deps.ctx.people.get().is_some();
    html! {
        nav aria-label="Console" {
            a.brand href="/console/" { "Chorus" }
            @if v.has(ApiRole::Compliance) {
                a href="/console/search" { "Search" }
                a href="/console/holds" { "Holds" }
                a href="/console/exports" { "Exports" }
                a href="/console/audit" { "Audit trail" }
            }
            a href="/console/retention" { "Retention" }
            @if people { a href="/console/people" { "People" } }
            @if v.has(ApiRole::Admin) {
                a href="/console/health" { "Health" }
                a href="/console/users" { "Users" }
                a href="/console/rooms" { "Rooms" }
                a href="/console/tokens" { "Tokens" }
            }
            span.who { (v.name) }
            form.inline method="post" action="/console/logout" {
                input type="hidden" name="csrf" value=(v.csrf);
                button.link type="submit" { "Sign out" }
            }
        }
    }
}

/// A whole page.
pub(crate) fn layout(c: &Console, v: Option<&Viewer>, title: &str, flash: Flash, body: Markup) -> Response {
    // What the viewer's last action said (kept in the session, never in
    // the URL, so a link cannot put words in the console's mouth).
    let flash = match (flash, v) {
        (Flash::None, Some(v)) => c.sessions.take_flash(&v.key).map_or(Flash::None, Flash::Ok),
        (f, _) => f,
    };
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Chorus console" }
                link rel="stylesheet" href=(crate::assets::path("console.css"));
                script src=(crate::assets::path("console.js")) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                @if let Some(v) = v { header { (nav(c, v)) } }
                (banner(c))
                main #main {
                    @match &flash {
                        Flash::Ok(m) => p.flash.ok role="status" { (m) },
                        Flash::None => {},
                    }
                    (body)
                }
                footer { "Chorus " (env!("CARGO_PKG_VERSION")) " · node " (c.deps.ctx.config.cluster.node_id) " · site " (c.deps.ctx.config.cluster.site) }
            }
        }
    };
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, REFERRER),
    ];
    (headers, doc.into_string()).into_response()
}

/// A page saying what went wrong.
pub(crate) fn error_page(c: &Console, v: Option<&Viewer>, status: StatusCode, msg: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = html! { h1 { (title) } p.flash.error role="alert" { (msg) } };
    let mut r = layout(c, v, title, Flash::None, body);
    *r.status_mut() = status;
    r
}

/// A compliance operation's refusal as a page.
pub(crate) fn compliance_error(
    c: &Console,
    v: &Viewer,
    e: chorus_archive::compliance::ComplianceError,
) -> Response {
    use chorus_archive::compliance::ComplianceError as E;
    let status = match &e {
        E::BadRequest(_) => StatusCode::BAD_REQUEST,
        E::NotFound(_) => StatusCode::NOT_FOUND,
        E::Conflict(_) => StatusCode::CONFLICT,
        E::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        E::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
    };
    error_page(c, Some(v), status, &e.to_string())
}

/// The archive's compliance side, or a page saying archiving is off.
pub(crate) fn archive<'a>(
    c: &'a Console,
    v: &Viewer,
) -> Result<&'a Arc<chorus_archive::compliance::Compliance>, Response> {
    c.deps.compliance.as_ref().ok_or_else(|| {
        error_page(
            c,
            Some(v),
            StatusCode::NOT_FOUND,
            "Archiving is off on this node: there is no record to show.",
        )
    })
}

/// `GET /console`
pub(crate) async fn to_home() -> Redirect {
    Redirect::permanent("/console/")
}

/// `GET /console/`: the first page of the viewer's role.
pub(crate) async fn home(v: Viewer) -> Redirect {
    if v.has(ApiRole::Compliance) {
        Redirect::to("/console/search")
    } else {
        Redirect::to("/console/health")
    }
}

/// A time: UTC in the page, shown in the viewer's zone by the script,
/// with UTC on hover.
pub(crate) fn time(ms: u64) -> Markup {
    let iso = chorus_core::time::xep0082(ms);
    let shown = iso.replace('T', " ").trim_end_matches('Z').to_owned();
    let shown = shown.split('.').next().unwrap_or_default().to_owned();
    html! { time datetime=(iso) title=(format!("{shown} UTC")) { (shown) " UTC" } }
}

/// Percent-encodes a query value.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// One value of a raw query string.
pub(crate) fn query_value(raw: Option<&str>, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or_default()).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// A form body or query string, parsed.
pub(crate) fn form<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_urlencoded::from_bytes(body).map_err(|e| format!("bad form: {e}"))
}

/// A query string parsed into `T`, or a 400 page.
pub(crate) fn query<T: serde::de::DeserializeOwned + Default>(
    c: &Console,
    v: &Viewer,
    raw: Option<&str>,
) -> Result<T, Response> {
    form(raw.unwrap_or_default().as_bytes()).map_err(|e| error_page(c, Some(v), StatusCode::BAD_REQUEST, &e))
}

/// A date (`YYYY-MM-DD`, as date inputs send it) or RFC 3339 time, as
/// milliseconds; `end` dates mean the end of that day.
pub(crate) fn date_ms(s: &str, end: bool) -> Result<Option<u64>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let full = if s.len() == 10 {
        format!("{s}T{}Z", if end { "23:59:59.999" } else { "00:00:00" })
    } else {
        s.to_owned()
    };
    chorus_core::api_query::time(&Some(full), "date").map_err(|e| format!("{s:?}: {e}"))
}

/// After an action: the message for the next page (kept in the session)
/// and a redirect to it.
pub(crate) fn done(c: &Console, v: &Viewer, to: &str, msg: impl Into<String>) -> Response {
    c.sessions.set_flash(&v.key, msg.into());
    Redirect::to(to).into_response()
}

/// An empty state: what there is none of, and what to do.
pub(crate) fn empty(what: &str, hint: &str) -> Markup {
    html! { div.empty { p { strong { (what) } } p.muted { (hint) } } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_cover_whole_days_and_bad_ones_are_named() {
        let start = date_ms("2026-12-01", false).expect("ok").expect("some");
        let end = date_ms("2026-12-01", true).expect("ok").expect("some");
        assert_eq!(end - start, 86_400_000 - 1);
        assert_eq!(date_ms(" ", false), Ok(None));
        assert!(
            date_ms("yesterday", false)
                .expect_err("bad")
                .contains("yesterday")
        );
    }

    #[test]
    fn encoding_keeps_only_safe_bytes() {
        assert_eq!(
            encode("/console/search?q=a b&x"),
            "/console/search%3Fq%3Da%20b%26x"
        );
        assert_eq!(
            query_value(Some("next=%2Fconsole%2Fholds&x=1"), "next").as_deref(),
            Some("/console/holds")
        );
    }
}
