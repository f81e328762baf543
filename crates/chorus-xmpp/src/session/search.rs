//! XEP-0055 (jabber:iq:search), the people finder, answered by the
//! server's domain from the enterprise directory's local index: a data
//! form (name, department, title, office, skill, manager; the old `first`,
//! `last`, `nick` and `email` fields also search by name), and results as a
//! data form with each person's presence. Disabled people are not found.

use super::Session;
use crate::ns;
use crate::xml::{self, ElementExt as _};
use chorus_core::directory::{PeopleQuery, Person};
use minidom::Element;

/// Results one search returns at most.
const RESULTS_MAX: usize = 50;

/// The form's searchable fields: (var, label).
const FIELDS: [(&str, &str); 6] = [
    ("name", "Name"),
    ("department", "Department"),
    ("title", "Title"),
    ("office", "Office"),
    ("skill", "Skill"),
    ("manager", "Manager"),
];

/// The columns of a result: (var, label).
const COLUMNS: [(&str, &str); 8] = [
    ("jid", "JID"),
    ("name", "Name"),
    ("title", "Title"),
    ("department", "Department"),
    ("office", "Office"),
    ("skills", "Skills"),
    ("manager", "Manager"),
    ("presence", "Presence"),
];

fn field(var: &str, typ: &str, label: Option<&str>, value: Option<&str>) -> Element {
    let mut f = xml::new("field", ns::DATA)
        .with_attr("var", var)
        .with_attr("type", typ);
    if let Some(l) = label {
        f = f.with_attr("label", l);
    }
    if let Some(v) = value {
        f = f.with_child(xml::new("value", ns::DATA).with_text(v));
    }
    f
}

fn search_form() -> Element {
    let mut x = xml::new("x", ns::DATA)
        .with_attr("type", "form")
        .with_child(xml::new("title", ns::DATA).with_text("People finder"))
        .with_child(
            xml::new("instructions", ns::DATA).with_text("Fill in any fields; every one given must match."),
        )
        .with_child(field("FORM_TYPE", "hidden", None, Some(ns::SEARCH)));
    for (var, label) in FIELDS {
        x.append_child(field(var, "text-single", Some(label), None));
    }
    xml::new("query", ns::SEARCH)
        .with_child(xml::new("instructions", ns::SEARCH).with_text("Use the enclosed form to search people."))
        .with_child(x)
}

/// The query a submitted form (or the old fixed fields) asks for.
fn query_of(q: &Element) -> PeopleQuery {
    let mut out = PeopleQuery::default();
    let mut set = |var: &str, v: String| {
        let v = Some(v).filter(|v| !v.trim().is_empty());
        match var {
            "name" | "first" | "last" | "nick" | "email" => out.name = out.name.take().or(v),
            "department" => out.department = v,
            "title" => out.title = v,
            "office" => out.office = v,
            "skill" => out.skill = v,
            "manager" => out.manager = v,
            _ => {}
        }
    };
    if let Some(x) = q.get_child("x", ns::DATA) {
        for f in x.children().filter(|c| c.is("field", ns::DATA)) {
            let value = f
                .get_child("value", ns::DATA)
                .map(|v| v.text())
                .unwrap_or_default();
            set(f.attr("var").unwrap_or_default(), value);
        }
    } else {
        for c in q.children() {
            set(c.name(), c.text());
        }
    }
    out
}

impl Session {
    fn result_item(&self, p: &Person) -> Element {
        let online = self.ctx.router.resources(&p.uid).iter().any(|r| r.available);
        let jid = format!("{}@{}", p.uid, self.ctx.domain);
        let skills = p.skills.join(", ");
        let values = [
            jid.as_str(),
            &p.name,
            &p.title,
            &p.department,
            &p.office,
            &skills,
            &p.manager,
            if online { "available" } else { "offline" },
        ];
        let mut item = xml::new("item", ns::DATA);
        for ((var, _), v) in COLUMNS.iter().zip(values) {
            let f = xml::new("field", ns::DATA)
                .with_attr("var", *var)
                .with_child(xml::new("value", ns::DATA).with_text(v));
            item.append_child(f);
        }
        item
    }

    /// `jabber:iq:search` to the server's domain.
    pub(super) fn on_search(&mut self, iq: &Element, q: &Element, get: bool) {
        let Some(people) = self.ctx.people.get().cloned() else {
            return self.send(xml::error_reply(iq, "cancel", "service-unavailable"));
        };
        if get {
            let reply = xml::iq_result(iq).with_child(search_form());
            return self.send(reply);
        }
        let query = query_of(q);
        if query.is_empty() {
            return self.send(xml::error_reply(iq, "modify", "not-acceptable"));
        }
        let found = people.search(&query, RESULTS_MAX);
        let mut reported = xml::new("reported", ns::DATA);
        for (var, label) in COLUMNS {
            reported.append_child(field(var, "text-single", Some(label), None));
        }
        let mut x = xml::new("x", ns::DATA)
            .with_attr("type", "result")
            .with_child(field("FORM_TYPE", "hidden", None, Some(ns::SEARCH)))
            .with_child(reported);
        for p in &found {
            x.append_child(self.result_item(p));
        }
        metrics::counter!("chorus_people_searches_total").increment(1);
        self.send(xml::iq_result(iq).with_child(xml::new("query", ns::SEARCH).with_child(x)));
    }
}
