//! XEP-0313 message archive management for the session's own user: the
//! query form (with, start, end, ids, before-id, after-id and the XEP-0431
//! full-text field), XEP-0059 paging both ways, `complete`, and archiving
//! preferences. Answers come from the node's archive replica merged with
//! its spool, so a user always sees what they just sent. The compliance
//! archive keeps everything regardless; preferences decide which
//! conversations the user's own archive shows.

use super::Session;
use crate::ns;
use crate::xml::{self, ElementExt};
use chorus_core::archive::{ArchiveError, MamQuery};
use minidom::Element;

/// Page size when the client names none (capped by `archive.mam_page_max`).
const DEFAULT_PAGE: usize = 50;
/// The setting holding a user's preferences (as their `<prefs/>` XML).
const PREFS_SETTING: &str = "mam-prefs";

/// Why a query was refused: (error type, condition).
pub(super) type Refusal = (&'static str, &'static str);

impl Session {
    pub(super) fn on_mam_iq(&mut self, iq: &Element, payload: &Element, get: bool) {
        match (payload.name(), get) {
            ("query", true) => self.send(xml::iq_result(iq).with_child(query_form())),
            ("metadata", true) => self.mam_metadata(iq),
            ("query", false) => self.mam_query(iq, payload),
            ("prefs", true) => {
                let prefs = self.mam_prefs();
                self.send(xml::iq_result(iq).with_child(prefs));
            }
            ("prefs", false) => self.mam_set_prefs(iq, payload),
            _ => self.send(xml::error_reply(iq, "cancel", "feature-not-implemented")),
        }
    }

    fn mam_query(&mut self, iq: &Element, q: &Element) {
        let me = self.bare();
        self.mam_answer(iq, q, &me, true);
    }

    /// Answers a query on a room's archive (the caller checked access).
    pub(super) fn mam_query_for(&mut self, iq: &Element, q: &Element, room_jid: &str) {
        self.mam_answer(iq, q, room_jid, false);
    }

    /// Answers a query on `owner`'s archive; results come from `owner`.
    fn mam_answer(&mut self, iq: &Element, q: &Element, owner: &str, prefs: bool) {
        let mut query = match self.parse_mam_query(q) {
            Ok(query) => query,
            Err((typ, cond)) => return self.send(xml::error_reply(iq, typ, cond)),
        };
        query.owner = owner.to_owned();
        if prefs {
            self.apply_prefs(&mut query);
        }
        let page = match self.ctx.archive.query(&query) {
            Ok(p) => p,
            Err(ArchiveError::NotFound(_)) => {
                return self.send(xml::error_reply(iq, "cancel", "item-not-found"));
            }
            Err(e) => {
                tracing::warn!(error = %e, "archive query failed");
                return self.send(xml::error_reply(iq, "wait", "internal-server-error"));
            }
        };
        let queryid = q.attr("queryid");
        let (me, full) = (owner.to_owned(), self.full());
        let mut records = page.records;
        if q.has_child("flip-page", ns::MAM) {
            records.reverse();
        }
        let limits = &self.ctx.config.limits;
        let (bytes_max, depth_max) = (limits.stanza_bytes_max * 2, limits.xml_depth_max * 2);
        for r in &records {
            let Ok(original) = crate::parser::parse_frame(r.xml.as_bytes(), bytes_max, depth_max) else {
                tracing::warn!(id = %r.id, "archived stanza does not parse; skipped");
                continue;
            };
            let mut result = xml::new("result", ns::MAM).with_attr("id", r.id.clone());
            if let Some(qid) = queryid {
                result = result.with_attr("queryid", qid);
            }
            let forwarded = xml::new("forwarded", ns::FORWARD)
                .with_child(
                    xml::new("delay", ns::DELAY).with_attr("stamp", chorus_core::time::xep0082(r.stamp_ms)),
                )
                .with_child(original);
            let msg = xml::new("message", ns::CLIENT)
                .with_attr("to", full.clone())
                .with_attr("from", me.clone())
                .with_attr("id", super::random_id())
                .with_child(result.with_child(forwarded));
            self.send(msg);
        }
        let mut set = xml::new("set", ns::RSM);
        if let (Some(first), Some(last)) = (records.first(), records.last()) {
            set.append_child(xml::new("first", ns::RSM).with_text(first.id.clone()));
            set.append_child(xml::new("last", ns::RSM).with_text(last.id.clone()));
        }
        let mut fin = xml::new("fin", ns::MAM).with_child(set);
        if page.complete {
            fin = fin.with_attr("complete", "true");
        }
        self.send(xml::iq_result(iq).with_child(fin));
    }

    /// XEP-0313 archive metadata: the first and last message of the user's
    /// archive.
    fn mam_metadata(&mut self, iq: &Element) {
        let me = self.bare();
        self.mam_metadata_of(iq, &me);
    }

    /// XEP-0313 metadata of `owner`'s archive (the user's, or a room's).
    pub(super) fn mam_metadata_of(&mut self, iq: &Element, owner: &str) {
        let base = MamQuery {
            owner: owner.to_owned(),
            max: 1,
            ..MamQuery::default()
        };
        let first = self.ctx.archive.query(&base);
        let last = self.ctx.archive.query(&MamQuery {
            last_page: true,
            ..base
        });
        let (Ok(first), Ok(last)) = (first, last) else {
            return self.send(xml::error_reply(iq, "wait", "internal-server-error"));
        };
        let mut md = xml::new("metadata", ns::MAM);
        for (name, page) in [("start", first), ("end", last)] {
            if let Some(r) = page.records.first() {
                md.append_child(
                    xml::new(name, ns::MAM)
                        .with_attr("id", r.id.clone())
                        .with_attr("timestamp", chorus_core::time::xep0082(r.stamp_ms)),
                );
            }
        }
        self.send(xml::iq_result(iq).with_child(md));
    }

    /// Reads the data form and the RSM set of a query.
    fn parse_mam_query(&self, q: &Element) -> Result<MamQuery, Refusal> {
        let bad = ("modify", "bad-request");
        let mut query = MamQuery {
            owner: self.bare(),
            max: DEFAULT_PAGE.min(self.ctx.config.archive.mam_page_max),
            ..MamQuery::default()
        };
        if let Some(form) = q.get_child("x", ns::DATA) {
            for field in form.children().filter(|c| c.is("field", ns::DATA)) {
                let values: Vec<String> = field
                    .children()
                    .filter(|c| c.is("value", ns::DATA))
                    .map(|v| v.text())
                    .collect();
                let one = values.first().cloned().unwrap_or_default();
                let time = || chorus_core::time::parse_xep0082(&one).ok_or(bad);
                match field.attr("var").unwrap_or_default() {
                    "FORM_TYPE" if one == ns::MAM => {}
                    "FORM_TYPE" => return Err(bad),
                    "with" => query.with = Some(self.check_jid(&one).ok_or(bad)?),
                    "start" => query.start_ms = Some(time()?),
                    "end" => query.end_ms = Some(time()?),
                    "ids" => query.ids = values,
                    "after-id" => query.after_id = Some(one),
                    "before-id" => query.before_id = Some(one),
                    "{urn:xmpp:fulltext:0}fulltext" | "fulltext" if !one.trim().is_empty() => {
                        query.text = Some(one)
                    }
                    "{urn:xmpp:fulltext:0}fulltext" | "fulltext" => {}
                    _ => return Err(("cancel", "feature-not-implemented")),
                }
            }
        }
        if let Some(set) = q.get_child("set", ns::RSM) {
            if let Some(m) = set.get_child("max", ns::RSM) {
                let m: usize = m.text().trim().parse().map_err(|_| bad)?;
                query.max = m.min(self.ctx.config.archive.mam_page_max);
            }
            if let Some(a) = set.get_child("after", ns::RSM) {
                query.after = Some(a.text());
            }
            if let Some(b) = set.get_child("before", ns::RSM) {
                let b = b.text();
                if b.is_empty() {
                    query.last_page = true;
                } else {
                    query.before = Some(b);
                }
            }
            if set.get_child("index", ns::RSM).is_some() {
                return Err(("cancel", "feature-not-implemented"));
            }
        }
        if query.after.is_some() && query.before.is_some() {
            return Err(bad);
        }
        Ok(query)
    }

    /// A JID as given, if it parses (full JIDs match one resource).
    fn check_jid(&self, s: &str) -> Option<String> {
        let j: jid::Jid = s.parse().ok()?;
        Some(j.to_string())
    }

    /// The user's preferences element (stored, or the default `always`).
    fn mam_prefs(&self) -> Element {
        let stored = self.ctx.store.setting(self.user(), PREFS_SETTING).ok().flatten();
        stored
            .and_then(|x| crate::parser::parse_frame(x.as_bytes(), 64 * 1024, 8).ok())
            .unwrap_or_else(|| {
                xml::new("prefs", ns::MAM)
                    .with_attr("default", "always")
                    .with_child(xml::new("always", ns::MAM))
                    .with_child(xml::new("never", ns::MAM))
            })
    }

    fn mam_set_prefs(&mut self, iq: &Element, p: &Element) {
        let default = p.attr("default").unwrap_or("always");
        if !matches!(default, "always" | "never" | "roster") {
            return self.send(xml::error_reply(iq, "modify", "bad-request"));
        }
        let mut clean = xml::new("prefs", ns::MAM).with_attr("default", default);
        for list in ["always", "never"] {
            let mut out = xml::new(list, ns::MAM);
            if let Some(l) = p.get_child(list, ns::MAM) {
                for j in l.children().filter(|c| c.is("jid", ns::MAM)) {
                    let Ok(jid) = j.text().parse::<jid::BareJid>() else {
                        return self.send(xml::error_reply(iq, "modify", "jid-malformed"));
                    };
                    out.append_child(xml::new("jid", ns::MAM).with_text(jid.to_string()));
                }
            }
            clean.append_child(out);
        }
        if clean.to_xml().len() > self.ctx.config.limits.vcard_bytes_max {
            return self.send(xml::error_reply(iq, "modify", "not-acceptable"));
        }
        if let Err(e) = self
            .ctx
            .store
            .set_setting(self.user(), PREFS_SETTING, &clean.to_xml())
        {
            tracing::error!(error = %e, "cannot store archiving preferences");
            return self.send(xml::error_reply(iq, "wait", "internal-server-error"));
        }
        self.send(xml::iq_result(iq).with_child(clean));
    }

    /// Narrows a query to what the user's preferences show.
    fn apply_prefs(&self, q: &mut MamQuery) {
        let prefs = self.mam_prefs();
        let list = |name: &str| -> Vec<String> {
            prefs
                .get_child(name, ns::MAM)
                .map(|l| l.children().map(|j| j.text()).collect())
                .unwrap_or_default()
        };
        q.hide = list("never");
        match prefs.attr("default") {
            Some("never") => q.only = Some(list("always")),
            Some("roster") => {
                let mut only = list("always");
                if let Ok(roster) = self.ctx.store.roster(self.user()) {
                    only.extend(roster.items.iter().map(|i| i.jid.clone()));
                }
                q.only = Some(only);
            }
            _ => {}
        }
    }
}

/// The query form: XEP-0313's fields plus XEP-0431 full text.
fn query_form() -> Element {
    let field = |var: &str, typ: &str| {
        xml::new("field", ns::DATA)
            .with_attr("var", var)
            .with_attr("type", typ)
    };
    let form = xml::new("x", ns::DATA)
        .with_attr("type", "form")
        .with_child(field("FORM_TYPE", "hidden").with_child(xml::new("value", ns::DATA).with_text(ns::MAM)))
        .with_child(field("with", "jid-single"))
        .with_child(field("start", "text-single"))
        .with_child(field("end", "text-single"))
        .with_child(field("before-id", "text-single"))
        .with_child(field("after-id", "text-single"))
        .with_child(
            field("ids", "list-multi").with_child(
                xml::new("validate", ns::XDATA_VALIDATE)
                    .with_attr("datatype", "xs:string")
                    .with_child(xml::new("open", ns::XDATA_VALIDATE)),
            ),
        )
        .with_child(field("{urn:xmpp:fulltext:0}fulltext", "text-single").with_attr("label", "Search for"));
    xml::new("query", ns::MAM).with_child(form)
}
