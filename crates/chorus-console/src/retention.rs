//! Retention policies under dual control: the policy in force and the
//! changes waiting for a second admin (officers and admins may read them);
//! admins propose a policy (a lengthening applies at once, a shortening
//! waits), and a different admin approves or cancels a waiting change.
//! The decisions are the archive's; this page only shows and asks.

use crate::Console;
use crate::auth::Viewer;
use crate::page::{self, Flash};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chorus_archive::compliance::RetentionChange;
use chorus_archive::types::{PendingRetention, Retention};
use chorus_core::config::ApiRole;
use maud::{Markup, html};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The policy form.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct PolicyForm {
    default_days: String,
    users: String,
    rooms: String,
}

/// The approve/cancel form.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct DecideForm {
    action: String,
}

/// `jid = days` lines, as a map (a bare name gets `domain`).
fn parse_lines(s: &str, domain: &str) -> Result<BTreeMap<String, u32>, String> {
    let mut out = BTreeMap::new();
    for line in s.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (who, days) = line
            .split_once('=')
            .ok_or_else(|| format!("{line:?}: write one `name = days` per line"))?;
        let who = who.trim().to_lowercase();
        let who = if who.contains('@') {
            who
        } else {
            format!("{who}@{domain}")
        };
        let days: u32 = days
            .trim()
            .parse()
            .map_err(|_| format!("{line:?}: days must be a whole number"))?;
        out.insert(who, days);
    }
    Ok(out)
}

fn lines(m: &BTreeMap<String, u32>) -> String {
    m.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
}

fn days(d: Option<u32>) -> String {
    d.map_or_else(|| "forever".to_owned(), |d| format!("{d} days"))
}

fn policy_table(r: &Retention) -> Markup {
    html! {
        table.policy {
            tbody {
                tr { th { "Everything" } td { (days(r.default_days)) } }
                @for (u, d) in &r.users { tr { th { (u) } td { (d) " days" } } }
                @for (room, d) in &r.rooms { tr { th { (room) } td { (d) " days" } } }
            }
        }
    }
}

fn pending_card(v: &Viewer, p: &PendingRetention) -> Markup {
    let to = format!("/console/retention/changes/{}", page::encode(&p.id));
    html! {
        div.card.pending data-id=(p.id) {
            p { strong { "Waiting for a second admin: " } (p.shortens) }
            p.muted { "Proposed by " (p.proposed_by) " " (page::time(p.proposed_ms)) }
            (policy_table(&p.policy))
            @if v.has(ApiRole::Admin) {
                form.inline method="post" action=(to) data-confirm="Approve this shortening? Records past the new period can then be purged." {
                    input type="hidden" name="csrf" value=(v.csrf);
                    input type="hidden" name="action" value="approve";
                    button.danger type="submit" { "Approve" }
                }
                " "
                form.inline method="post" action=(to) {
                    input type="hidden" name="csrf" value=(v.csrf);
                    input type="hidden" name="action" value="cancel";
                    button.secondary type="submit" { "Cancel" }
                }
            }
        }
    }
}

/// `GET /console/retention`
pub(crate) async fn page(State(c): State<Arc<Console>>, v: Viewer) -> Response {
    match retention_page(&c, &v).await {
        Ok(r) | Err(r) => r,
    }
}

async fn retention_page(c: &Console, v: &Viewer) -> Result<Response, Response> {
    let role = if v.has(ApiRole::Admin) {
        ApiRole::Admin
    } else {
        ApiRole::Compliance
    };
    let who = v.require(c, role)?;
    let archive = page::archive(c, v)?;
    let doc = archive
        .retention(&who)
        .await
        .map_err(|e| page::compliance_error(c, v, e))?;
    let policy: Retention = serde_json::from_value(doc["retention"].clone()).unwrap_or_default();
    let pending: Vec<PendingRetention> = serde_json::from_value(doc["pending"].clone()).unwrap_or_default();
    let body = html! {
        h1 { "Retention" }
        p.muted { "How long records are kept. A record under a legal hold is kept regardless. A change that shortens any period waits for a second admin; none goes below "
            (doc["min_days"]) " days." }
        h2 { "In force" }
        (policy_table(&policy))
        h2 { "Waiting for approval" }
        @if pending.is_empty() { (page::empty("No changes are waiting.", "Shortenings proposed by one admin appear here for another to approve.")) }
        @for p in &pending { (pending_card(v, p)) }
        @if v.has(ApiRole::Admin) {
            h2 { "Change the policy" }
            form.card method="post" action="/console/retention" {
                input type="hidden" name="csrf" value=(v.csrf);
                label { "Days for everything (empty: forever)" input name="default_days" type="number" min="1" value=(policy.default_days.map(|d| d.to_string()).unwrap_or_default()); }
                label { "Per user, one `name = days` per line" textarea name="users" rows="3" { (lines(&policy.users)) } }
                label { "Per room, one `room@host = days` per line" textarea name="rooms" rows="3" { (lines(&policy.rooms)) } }
                button type="submit" { "Propose" }
            }
        }
    };
    Ok(page::layout(c, Some(v), "Retention", Flash::None, body))
}

/// `POST /console/retention`
pub(crate) async fn propose(State(c): State<Arc<Console>>, v: Viewer, body: axum::body::Bytes) -> Response {
    match propose_policy(&c, &v, &body).await {
        Ok(r) | Err(r) => r,
    }
}

async fn propose_policy(c: &Console, v: &Viewer, body: &[u8]) -> Result<Response, Response> {
    let (who, f): (_, PolicyForm) = v.posted(c, ApiRole::Admin, body)?;
    let bad = |e: String| page::error_page(c, Some(v), StatusCode::BAD_REQUEST, &e);
    let archive = page::archive(c, v)?;
    let default_days = match f.default_days.trim() {
        "" => None,
        d => Some(
            d.parse::<u32>()
                .map_err(|_| bad(format!("{d:?} is not a number of days")))?,
        ),
    };
    let policy = Retention {
        default_days,
        users: parse_lines(&f.users, &c.deps.ctx.domain).map_err(bad)?,
        rooms: parse_lines(&f.rooms, &c.deps.ctx.config.muc_domain()).map_err(bad)?,
    };
    let msg = match archive
        .set_retention(&who, policy)
        .await
        .map_err(|e| page::compliance_error(c, v, e))?
    {
        RetentionChange::Applied(_) => "The policy is in force.".to_owned(),
        RetentionChange::Pending(p) => format!(
            "This shortens a period ({}): it waits for a second admin.",
            p.shortens
        ),
    };
    Ok(page::done(c, v, "/console/retention", msg))
}

/// `POST /console/retention/changes/{id}`
pub(crate) async fn decide(
    State(c): State<Arc<Console>>,
    v: Viewer,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    match decide_change(&c, &v, &id, &body).await {
        Ok(r) | Err(r) => r,
    }
}

async fn decide_change(c: &Console, v: &Viewer, id: &str, body: &[u8]) -> Result<Response, Response> {
    let (who, f): (_, DecideForm) = v.posted(c, ApiRole::Admin, body)?;
    let archive = page::archive(c, v)?;
    let err = |e| page::compliance_error(c, v, e);
    let msg = match f.action.as_str() {
        "approve" => {
            archive.approve_retention(&who, id).await.map_err(err)?;
            "The change is approved and in force."
        }
        "cancel" => {
            archive.cancel_retention(&who, id).await.map_err(err)?;
            "The change is cancelled."
        }
        _ => {
            return Err(page::error_page(
                c,
                Some(v),
                StatusCode::BAD_REQUEST,
                "Unknown action.",
            ));
        }
    };
    Ok(page::done(c, v, "/console/retention", msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_lines_parse_with_the_domain_and_bad_ones_are_named() {
        let m = parse_lines("alice = 30\n\n legal@example.org=3650 \n", "example.com").expect("valid");
        assert_eq!(m.get("alice@example.com"), Some(&30));
        assert_eq!(m.get("legal@example.org"), Some(&3650));
        assert!(
            parse_lines("alice 30", "x")
                .expect_err("no =")
                .contains("alice 30")
        );
        assert!(
            parse_lines("alice = soon", "x")
                .expect_err("not a number")
                .contains("whole number")
        );
    }
}
