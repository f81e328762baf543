//! The officer's search page (words, people, room, dates; highlighted hits,
//! paging on the index, never on the whole result) and the conversation
//! view that rebuilds the thread around a hit: the messages before and
//! after it in the same conversation or room, the room's occupants at the
//! time, corrections and retractions marked. Both read the archive through
//! the audited compliance operations.

use crate::Console;
use crate::auth::Viewer;
use crate::page::{self, Flash};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chorus_archive::search::SearchQuery;
use chorus_core::archive::{EditKind, MamQuery, Record};
use chorus_core::config::ApiRole;
use maud::{Markup, html};
use std::sync::Arc;

/// Results per page.
pub(crate) const PAGE: usize = 50;
/// Messages shown on each side of a hit.
const AROUND: usize = 15;

/// The search form's fields (also what an export started from a search
/// carries).
#[derive(serde::Deserialize, serde::Serialize, Default, Clone)]
#[serde(default)]
pub(crate) struct SearchForm {
    pub(crate) q: String,
    pub(crate) people: String,
    pub(crate) room: String,
    pub(crate) site: String,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) page: usize,
}

impl SearchForm {
    fn asked(&self) -> bool {
        [
            &self.q,
            &self.people,
            &self.room,
            &self.site,
            &self.from,
            &self.to,
        ]
        .iter()
        .any(|s| !s.trim().is_empty())
    }

    /// The archive search this form asks for (page `page`, 1-based).
    pub(crate) fn query(&self, domain: &str, rooms: &str) -> Result<SearchQuery, String> {
        let jid = |s: &str| {
            let s = s.trim();
            if s.contains('@') {
                s.to_owned()
            } else {
                format!("{s}@{domain}")
            }
        };
        let people = self
            .people
            .split([',', ' ', ';'])
            .filter(|s| !s.trim().is_empty())
            .map(jid)
            .collect();
        Ok(SearchQuery {
            participants: people,
            room: Some(self.room.trim()).filter(|r| !r.is_empty()).map(|r| {
                if r.contains('@') {
                    r.to_owned()
                } else {
                    format!("{r}@{rooms}")
                }
            }),
            site: Some(self.site.trim().to_owned()).filter(|s| !s.is_empty()),
            words: Some(self.q.trim().to_owned()).filter(|q| !q.is_empty()),
            start_ms: page::date_ms(&self.from, false)?,
            end_ms: page::date_ms(&self.to, true)?,
            offset: self.page.saturating_sub(1).saturating_mul(PAGE),
            limit: PAGE,
        })
    }

    fn link(&self, page: usize) -> String {
        let mut f = self.clone();
        f.page = page;
        format!(
            "/console/search?{}",
            serde_urlencoded::to_string(&f).unwrap_or_default()
        )
    }
}

/// The words of a query worth highlighting, lower-cased (operators and
/// field names left out; `word*` highlights words starting so).
fn terms(q: &str) -> Vec<String> {
    q.split(|c: char| !(c.is_alphanumeric() || c == '*'))
        .filter(|w| !w.is_empty() && !["AND", "OR", "NOT"].contains(w))
        .map(str::to_lowercase)
        .collect()
}

/// `text` with the words matching `terms` marked.
pub(crate) fn highlight(text: &str, terms: &[String]) -> Markup {
    let hit = |w: &str| {
        let w = w.to_lowercase();
        terms.iter().any(|t| match t.strip_suffix('*') {
            Some(prefix) => w.starts_with(prefix),
            None => &w == t,
        })
    };
    let mut parts: Vec<(bool, &str)> = Vec::new();
    let mut start = 0;
    let mut in_word = None;
    for (i, ch) in text.char_indices() {
        let word = ch.is_alphanumeric();
        if in_word != Some(word) {
            if let Some(w) = in_word {
                parts.push((w && hit(&text[start..i]), &text[start..i]));
            }
            start = i;
            in_word = Some(word);
        }
    }
    if let Some(w) = in_word {
        parts.push((w && hit(&text[start..]), &text[start..]));
    }
    html! { @for (m, s) in parts { @if m { mark { (s) } } @else { (s) } } }
}

fn bare(j: &str) -> &str {
    j.split('/').next().unwrap_or(j)
}

fn edit_tag(r: &Record) -> Markup {
    html! {
        @if let Some(e) = &r.edit {
            @match e.kind {
                EditKind::Correction => span.tag.warn title=(format!("corrects message {}", e.of)) { "correction" },
                EditKind::Retraction => span.tag.bad title=(format!("retracts message {}", e.of)) { "retraction" },
            }
        }
    }
}

/// `GET /console/search`
pub(crate) async fn search(State(c): State<Arc<Console>>, v: Viewer, q: RawQuery) -> Response {
    match search_page(&c, &v, q.0.as_deref()).await {
        Ok(r) | Err(r) => r,
    }
}

/// Every site of the cluster, this one first.
fn sites(c: &Console) -> Vec<String> {
    let cluster = &c.deps.ctx.config.cluster;
    let mut out = vec![cluster.site.clone()];
    for p in &cluster.peers {
        if !out.contains(&p.site) {
            out.push(p.site.clone());
        }
    }
    out
}

fn search_form(f: &SearchForm, sites: &[String]) -> Markup {
    html! {
        form.filters method="get" action="/console/search" role="search" {
            label { "Words" input name="q" value=(f.q) placeholder="contract OR merger, \"exact phrase\"" autofocus; }
            label { "People" input name="people" value=(f.people) placeholder="alice, bob@example.com"; }
            label { "Room" input name="room" value=(f.room) placeholder="deals"; }
            label { "Site" select name="site" {
                option value="" { "any" }
                @for s in sites { option value=(s) selected[*s == f.site] { (s) } }
            } }
            label { "From" input name="from" type="date" value=(f.from); }
            label { "To" input name="to" type="date" value=(f.to); }
            button type="submit" { "Search" }
        }
    }
}

async fn search_page(c: &Console, v: &Viewer, raw: Option<&str>) -> Result<Response, Response> {
    let who = v.require(c, ApiRole::Compliance)?;
    let f: SearchForm = page::query(c, v, raw)?;
    if !f.asked() {
        let body = html! {
            h1 { "Search the archive" }
            (search_form(&f, &sites(c)))
            (page::empty("Search by words, people, room or dates.", "Every search is recorded in the audit trail. Press / to jump to the words box."))
        };
        return Ok(page::layout(c, Some(v), "Search", Flash::None, body));
    }
    let archive = page::archive(c, v)?;
    let query = f
        .query(&c.deps.ctx.domain, &c.deps.ctx.config.muc_domain())
        .map_err(|e| page::error_page(c, Some(v), StatusCode::BAD_REQUEST, &e))?;
    let result = archive
        .search(&who, query.clone())
        .await
        .map_err(|e| page::compliance_error(c, v, e))?;
    let terms = terms(&f.q);
    let page_no = f.page.max(1);
    // Deeper than the index pages: narrow the search or export it.
    let pages = result
        .total
        .min(chorus_archive::search::SEARCH_OFFSET_MAX)
        .div_ceil(PAGE)
        .max(1);
    let body = html! {
        h1 { "Search the archive" }
        (search_form(&f, &sites(c)))
        p.muted { (result.total) " records match. Page " (page_no) " of " (pages) ", oldest first." }
        @if result.records.is_empty() {
            (page::empty("Nothing matches.", "Try fewer words, a wider date range or fewer people."))
        } @else {
            table #results {
                thead { tr { th { "When" } th { "From" } th { "To" } th { "Message" } th { "Site" } th {} } }
                tbody {
                    @for r in &result.records {
                        tr {
                            td { (page::time(r.stamp_ms)) }
                            td { (bare(&r.from)) }
                            td { (r.room.as_deref().unwrap_or(bare(&r.to))) }
                            td.body { (highlight(r.body.as_deref().unwrap_or(""), &terms)) " " (edit_tag(r)) }
                            td { (r.site) }
                            td { a href=(format!("/console/conversation?id={}", page::encode(&r.id))) { "Conversation" } }
                        }
                    }
                }
            }
        }
        div.pager {
            @if page_no > 1 { a href=(f.link(page_no - 1)) rel="prev" { "← Earlier" } }
            @if page_no < pages { a href=(f.link(page_no + 1)) rel="next" { "Later →" } }
        }
        form.row method="post" action="/console/exports" {
            input type="hidden" name="csrf" value=(v.csrf);
            @for (k, val) in [("q", &f.q), ("people", &f.people), ("room", &f.room), ("site", &f.site), ("from", &f.from), ("to", &f.to)] {
                input type="hidden" name=(k) value=(val);
            }
            label { "Export these " (result.total) " records as "
                select name="format" { option value="jsonl" { "JSON lines" } option value="eml" { "EML" } option value="actiance" { "Actiance XML" } }
            }
            button.secondary type="submit" { "Export" }
        }
    };
    Ok(page::layout(c, Some(v), "Search", Flash::None, body))
}

/// `GET /console/conversation?id=`
pub(crate) async fn conversation(State(c): State<Arc<Console>>, v: Viewer, q: RawQuery) -> Response {
    match conversation_page(&c, &v, q.0.as_deref()).await {
        Ok(r) | Err(r) => r,
    }
}

async fn conversation_page(c: &Console, v: &Viewer, raw: Option<&str>) -> Result<Response, Response> {
    let who = v.require(c, ApiRole::Compliance)?;
    let archive = page::archive(c, v)?;
    let id = page::query_value(raw, "id").unwrap_or_default();
    let not_found = || {
        page::error_page(
            c,
            Some(v),
            StatusCode::NOT_FOUND,
            "No record with that id on this site.",
        )
    };
    let (_, hit) = archive
        .sm
        .record_by_id(&id)
        .ok()
        .flatten()
        .ok_or_else(not_found)?;
    let (owner, with) = match &hit.room {
        Some(room) => (room.clone(), None),
        None => (bare(&hit.from).to_owned(), Some(bare(&hit.to).to_owned())),
    };
    let around = |before: bool| MamQuery {
        owner: owner.clone(),
        with: with.clone(),
        before: before.then(|| id.clone()),
        after: (!before).then(|| id.clone()),
        max: AROUND,
        ..MamQuery::default()
    };
    let err = |e| page::compliance_error(c, v, e);
    let (before, _) = archive.conversation(&who, around(true)).await.map_err(err)?;
    let (after, complete) = archive.conversation(&who, around(false)).await.map_err(err)?;
    let title = match &hit.room {
        Some(room) => format!("Room {room}"),
        None => format!("{} and {}", bare(&hit.from), bare(&hit.to)),
    };
    let body = html! {
        h1 { (title) }
        p.muted { "The " (before.len()) " messages before the hit and " (after.len()) " after it. "
            @if !complete { "There are later messages." } }
        @if !hit.occupants.is_empty() {
            div.card { strong { "In the room when the hit was sent: " } (hit.occupants.join(", ")) }
        }
        div.thread {
            @for r in &before { (message(r, false)) }
            (message(&hit, true))
            @for r in &after { (message(r, false)) }
        }
        p { a href="/console/search" { "← Back to search" } }
    };
    Ok(page::layout(c, Some(v), &title, Flash::None, body))
}

fn message(r: &Record, hit: bool) -> Markup {
    html! {
        div.msg.hit[hit] id=(format!("r-{}", r.id)) {
            div.meta { (page::time(r.stamp_ms)) " · " strong { (bare(&r.from)) } " → " (r.room.as_deref().unwrap_or(bare(&r.to))) " · site " (r.site) " " (edit_tag(r)) }
            div { (r.body.as_deref().unwrap_or("(no text)")) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_are_marked_whole_words_and_prefixes_only() {
        let t = terms("Merger AND deal* NOT x");
        let html = highlight("The merger's dealers met; emerge.", &t).into_string();
        assert_eq!(
            html,
            "The <mark>merger</mark>'s <mark>dealers</mark> met; emerge."
        );
    }

    #[test]
    fn markup_in_a_body_is_escaped_when_highlighted() {
        let html = highlight("<script>alert(1)</script> deal", &terms("deal")).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("<mark>deal</mark>"));
    }

    #[test]
    fn people_and_rooms_get_the_domain() {
        let f = SearchForm {
            people: "alice, bob@other.org".into(),
            room: "deals".into(),
            from: "2026-12-01".into(),
            page: 3,
            ..SearchForm::default()
        };
        let q = f.query("example.com", "rooms.example.com").expect("valid");
        assert_eq!(q.participants, ["alice@example.com", "bob@other.org"]);
        assert_eq!(q.room.as_deref(), Some("deals@rooms.example.com"));
        assert_eq!((q.offset, q.limit), (2 * PAGE, PAGE));
        assert!(q.start_ms.is_some() && q.end_ms.is_none());
    }
}
