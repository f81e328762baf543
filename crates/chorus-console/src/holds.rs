//! Matters and legal holds: the list (active first, what each covers, who
//! placed and released it), placing one with a reason and custodians, and
//! releasing one with a reason, all through the audited operations.

use crate::Console;
use crate::auth::Viewer;
use crate::page::{self, Flash};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chorus_archive::compliance::HoldRequest;
use chorus_archive::types::Hold;
use chorus_core::config::ApiRole;
use maud::{Markup, html};
use std::sync::Arc;

/// The form placing a hold.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct PlaceForm {
    id: String,
    reason: String,
    users: String,
    rooms: String,
    from: String,
    to: String,
}

/// The form releasing a hold.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ReleaseForm {
    reason: String,
}

fn list_of(s: &str, domain: &str) -> Vec<String> {
    s.split([',', ' ', ';', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains('@') {
                s.to_owned()
            } else {
                format!("{s}@{domain}")
            }
        })
        .collect()
}

/// `GET /console/holds`
pub(crate) async fn list(State(c): State<Arc<Console>>, v: Viewer) -> Response {
    match holds_page(&c, &v, Flash::None).await {
        Ok(r) | Err(r) => r,
    }
}

async fn holds_page(c: &Console, v: &Viewer, flash: Flash) -> Result<Response, Response> {
    let who = v.require(c, ApiRole::Compliance)?;
    let archive = page::archive(c, v)?;
    let mut holds = archive
        .holds(&who)
        .await
        .map_err(|e| page::compliance_error(c, v, e))?;
    holds.sort_by_key(|h| (h.released.is_some(), std::cmp::Reverse(h.created_ms)));
    let body = html! {
        h1 { "Legal holds" }
        p.muted { "Records a hold covers are kept whatever the retention policy says, until it is released." }
        @if holds.is_empty() {
            (page::empty("No holds yet.", "Place one below for a matter: its custodians' messages are kept from then on."))
        } @else {
            table #holds {
                thead { tr { th { "Matter" } th { "Reason" } th { "Covers" } th { "Placed" } th { "State" } th {} } }
                tbody { @for h in &holds { (hold_row(v, h)) } }
            }
        }
        h2 { "Place a hold" }
        form.card.filters method="post" action="/console/holds" {
            input type="hidden" name="csrf" value=(v.csrf);
            label { "Matter id (optional)" input name="id" placeholder="case-2026-114"; }
            label { "Reason (required)" input name="reason" required; }
            label { "Custodians" input name="users" placeholder="alice, bob@example.com"; }
            label { "Rooms" input name="rooms" placeholder="deals@rooms.example.com"; }
            label { "From" input name="from" type="date"; }
            label { "To" input name="to" type="date"; }
            button type="submit" { "Place hold" }
        }
    };
    Ok(page::layout(c, Some(v), "Legal holds", flash, body))
}

fn hold_row(v: &Viewer, h: &Hold) -> Markup {
    let range = match (h.start_ms, h.end_ms) {
        (None, None) => html! { "all time" },
        (s, e) => html! {
            @if let Some(s) = s { "from " (page::time(s)) " " }
            @if let Some(e) = e { "until " (page::time(e)) }
        },
    };
    html! {
        tr {
            td { strong { (h.id) } }
            td { (h.reason) }
            td {
                @for u in &h.users { a href=(format!("/console/search?people={}", page::encode(u))) { (u) } " " }
                @for r in &h.rooms { a href=(format!("/console/search?room={}", page::encode(r))) { (r) } " " }
                br; span.muted { (range) }
            }
            td { (h.created_by) br; (page::time(h.created_ms)) }
            td {
                @match &h.released {
                    Some((by, at)) => { span.tag { "released" } br; span.muted { (by) " " (page::time(*at)) } },
                    None => span.tag.good { "active" },
                }
            }
            td {
                @if h.released.is_none() {
                    form method="post" action="/console/exports" {
                        input type="hidden" name="csrf" value=(v.csrf);
                        input type="hidden" name="hold" value=(h.id);
                        button.secondary type="submit" { "Export" }
                    }
                    form method="post" action=(format!("/console/holds/{}/release", page::encode(&h.id)))
                        data-confirm=(format!("Release hold {}? Its records become subject to retention again.", h.id)) {
                        input type="hidden" name="csrf" value=(v.csrf);
                        input name="reason" placeholder="why (required)" required aria-label="Reason for release";
                        button.danger type="submit" { "Release" }
                    }
                }
            }
        }
    }
}

/// `POST /console/holds`
pub(crate) async fn place(State(c): State<Arc<Console>>, v: Viewer, body: axum::body::Bytes) -> Response {
    match place_hold(&c, &v, &body).await {
        Ok(r) | Err(r) => r,
    }
}

async fn place_hold(c: &Console, v: &Viewer, body: &[u8]) -> Result<Response, Response> {
    let (who, f): (_, PlaceForm) = v.posted(c, ApiRole::Compliance, body)?;
    let archive = page::archive(c, v)?;
    let bad = |e: String| page::error_page(c, Some(v), StatusCode::BAD_REQUEST, &e);
    let rooms = c.deps.ctx.config.muc_domain();
    let req = HoldRequest {
        id: Some(f.id.trim().to_owned()).filter(|s| !s.is_empty()),
        reason: f.reason.trim().to_owned(),
        users: list_of(&f.users, &c.deps.ctx.domain),
        rooms: list_of(&f.rooms, &rooms),
        start_ms: page::date_ms(&f.from, false).map_err(bad)?,
        end_ms: page::date_ms(&f.to, true).map_err(bad)?,
    };
    archive
        .place_hold(&who, req)
        .await
        .map_err(|e| page::compliance_error(c, v, e))?;
    Ok(page::done(
        c,
        v,
        "/console/holds",
        "The hold is placed: what it covers can no longer be purged.",
    ))
}

/// `POST /console/holds/{id}/release`
pub(crate) async fn release(
    State(c): State<Arc<Console>>,
    v: Viewer,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    match release_hold(&c, &v, &id, &body).await {
        Ok(r) | Err(r) => r,
    }
}

async fn release_hold(c: &Console, v: &Viewer, id: &str, body: &[u8]) -> Result<Response, Response> {
    let (who, f): (_, ReleaseForm) = v.posted(c, ApiRole::Compliance, body)?;
    if f.reason.trim().is_empty() {
        return Err(page::error_page(
            c,
            Some(v),
            StatusCode::BAD_REQUEST,
            "Say why the hold is released.",
        ));
    }
    let archive = page::archive(c, v)?;
    archive
        .release_hold(&who, id, Some(f.reason.trim()))
        .await
        .map_err(|e| page::compliance_error(c, v, e))?;
    Ok(page::done(c, v, "/console/holds", "The hold is released."))
}
