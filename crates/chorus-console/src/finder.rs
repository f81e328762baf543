//! The people finder in the console: the enterprise directory's people by
//! name, department, title, office, skill and manager, with presence (the
//! same index and rules as XEP-0055). Officers reach a person's records
//! from here, admins their account. The search is in the audit trail.

use crate::Console;
use crate::auth::Viewer;
use crate::page::{self, Flash};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use chorus_core::config::ApiRole;
use chorus_core::directory::PeopleQuery;
use maud::html;
use std::sync::Arc;

/// Results shown at most.
const SHOWN_MAX: usize = 100;

/// The finder's fields.
#[derive(serde::Deserialize, serde::Serialize, Default)]
#[serde(default)]
struct FinderForm {
    name: String,
    department: String,
    title: String,
    office: String,
    skill: String,
    manager: String,
}

impl FinderForm {
    fn query(&self) -> PeopleQuery {
        let f = |s: &String| Some(s.clone()).filter(|s| !s.trim().is_empty());
        PeopleQuery {
            name: f(&self.name),
            department: f(&self.department),
            title: f(&self.title),
            office: f(&self.office),
            skill: f(&self.skill),
            manager: f(&self.manager),
        }
    }
}

/// `GET /console/people`
pub(crate) async fn page(State(c): State<Arc<Console>>, v: Viewer, q: RawQuery) -> Response {
    let role = if v.has(ApiRole::Admin) {
        ApiRole::Admin
    } else {
        ApiRole::Compliance
    };
    if let Err(r) = v.require(&c, role) {
        return r;
    }
    let f: FinderForm = match page::query(&c, &v, q.0.as_deref()) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let query = f.query();
    let detail = serde_json::to_value(&f).unwrap_or_default();
    if !query.is_empty()
        && let Err(r) = crate::trail::view(&c, &v, role, "people.search", detail)
    {
        return r;
    }
    let people = c.deps.ctx.people.get();
    let found = match (people, query.is_empty()) {
        (Some(p), false) => p.search(&query, SHOWN_MAX),
        _ => Vec::new(),
    };
    let body = html! {
        h1 { "People" }
        @if people.is_none() {
            (page::empty("No company directory is configured.", "Set [directory] (docs/DIRECTORY.md) to find people here."))
        } @else {
            form.filters method="get" action="/console/people" role="search" {
                @for (var, label, value) in [("name", "Name", &f.name), ("department", "Department", &f.department), ("title", "Title", &f.title), ("office", "Office", &f.office), ("skill", "Skill", &f.skill), ("manager", "Manager", &f.manager)] {
                    label { (label) input name=(var) value=(value); }
                }
                button type="submit" { "Find" }
            }
            @if query.is_empty() {
                (page::empty("Find people by any field.", "Every field given must match; skill matches any of a person's skills."))
            } @else if found.is_empty() {
                (page::empty("Nobody matches.", "Try fewer fields."))
            } @else {
                table #people {
                    thead { tr { th { "Name" } th { "Title" } th { "Department" } th { "Office" } th { "Skills" } th { "Manager" } th { "Presence" } th {} } }
                    tbody {
                        @for p in &found {
                            @let online = c.deps.ctx.router.resources(&p.uid).iter().any(|r| r.available);
                            @let jid = format!("{}@{}", p.uid, c.deps.ctx.domain);
                            tr data-uid=(p.uid) {
                                td { strong { (p.name) } br; span.muted { (jid) } }
                                td { (p.title) } td { (p.department) } td { (p.office) }
                                td { (p.skills.join(", ")) } td { (p.manager) }
                                td { @if online { span.tag.good { "available" } } @else { span.tag { "offline" } } }
                                td {
                                    @if v.has(ApiRole::Compliance) { a href=(format!("/console/search?people={}", page::encode(&jid))) { "Records" } " " }
                                    @if v.has(ApiRole::Admin) { a href=(format!("/console/users?q={}", page::encode(&p.uid))) { "Account" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page::layout(&c, Some(&v), "People", Flash::None, body)
}
