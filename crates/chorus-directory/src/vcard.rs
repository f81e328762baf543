//! A directory person's vCard (vcard-temp, XEP-0054): the fields the
//! directory owns (name, title, office and department, e-mail, phone, the
//! photo when `attr_photo` is set, and a note saying where they come
//! from), listed in a `<read-only xmlns='urn:chorus:directory:0'>` element
//! so clients and the node's own vCard update know which fields a person
//! cannot change. Everything else in the card is the person's own: a
//! synchronization replaces only the owned fields, so a nickname or a
//! birthday the person set survives it.

use base64::Engine;
use chorus_core::directory::{Person, VCARD_READ_ONLY_NS};
use minidom::Element;

const VCARD: &str = "vcard-temp";

fn el(name: &str, text: &str) -> Element {
    Element::builder(name, VCARD).append(text).build()
}

fn wrap(name: &str, children: Vec<Element>) -> Element {
    Element::builder(name, VCARD).append_all(children).build()
}

/// The owned elements of `p`'s card, in order.
pub fn owned(p: &Person) -> Vec<Element> {
    let mut out = vec![el("FN", &p.name)];
    if !p.title.is_empty() {
        out.push(el("TITLE", &p.title));
    }
    if !p.department.is_empty() || !p.office.is_empty() {
        out.push(wrap(
            "ORG",
            vec![el("ORGNAME", &p.office), el("ORGUNIT", &p.department)],
        ));
    }
    if !p.mail.is_empty() {
        let internet = Element::builder("INTERNET", VCARD).build();
        out.push(wrap("EMAIL", vec![internet, el("USERID", &p.mail)]));
    }
    if !p.phone.is_empty() {
        let (work, voice) = (
            Element::builder("WORK", VCARD).build(),
            Element::builder("VOICE", VCARD).build(),
        );
        out.push(wrap("TEL", vec![work, voice, el("NUMBER", &p.phone)]));
    }
    if !p.photo.is_empty() {
        let kind = if p.photo.starts_with(b"\x89PNG") {
            "image/png"
        } else {
            "image/jpeg"
        };
        let data = base64::engine::general_purpose::STANDARD.encode(&p.photo);
        out.push(wrap("PHOTO", vec![el("TYPE", kind), el("BINVAL", &data)]));
    }
    out.push(el(
        "NOTE",
        "Name, title, department, office, e-mail, phone and photo come from the company directory.",
    ));
    out
}

/// The fields the directory owns whether or not the entry fills them (a
/// person must not pass off a title of their own as the directory's).
const ALWAYS_OWNED: [&str; 6] = ["FN", "TITLE", "ORG", "EMAIL", "TEL", "NOTE"];

/// The names of the fields the directory owns for `p`.
fn owned_names(p: &Person) -> Vec<&'static str> {
    let mut names = ALWAYS_OWNED.to_vec();
    if !p.photo.is_empty() {
        names.push("PHOTO");
    }
    names
}

/// The marker listing `names`.
fn marker(names: &[&str]) -> Element {
    let mut m = Element::builder("read-only", VCARD_READ_ONLY_NS).build();
    for n in names {
        m.append_child(Element::builder("field", VCARD_READ_ONLY_NS).append(*n).build());
    }
    m
}

/// The names a card's marker lists (empty without one).
pub fn read_only_fields(card: &Element) -> Vec<String> {
    card.get_child("read-only", VCARD_READ_ONLY_NS)
        .map(|m| m.children().map(|f| f.text()).collect())
        .unwrap_or_default()
}

/// `stored` (the card as it is, if any) with the directory's fields of
/// `p` in place of the owned ones, serialized; the same input gives the
/// same text, so an unchanged person writes nothing.
pub fn merge(stored: Option<&str>, p: &Person) -> String {
    let mut card = stored
        .and_then(|s| s.parse::<Element>().ok())
        .filter(|c| c.is("vCard", VCARD))
        .unwrap_or_else(|| Element::builder("vCard", VCARD).build());
    let fields = owned(p);
    let names = owned_names(p);
    let mut drop: Vec<String> = read_only_fields(&card);
    drop.extend(names.iter().map(|n| n.to_string()));
    let kept: Vec<Element> = card
        .children()
        .filter(|c| !(c.ns() == VCARD && drop.iter().any(|d| d == c.name())) && c.ns() != VCARD_READ_ONLY_NS)
        .cloned()
        .collect();
    card = Element::builder("vCard", VCARD).build();
    let m = marker(&names);
    for c in kept.into_iter().chain(fields).chain([m]) {
        card.append_child(c);
    }
    String::from(&card)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ada() -> Person {
        Person {
            uid: "ada".into(),
            name: "Ada <Lovelace>".into(),
            title: "Chief".into(),
            photo: b"\xff\xd8\xffjpeg".to_vec(),
            ..Person::default()
        }
    }

    #[test]
    fn the_persons_own_fields_survive_and_owned_ones_follow_the_directory() {
        let first = merge(None, &ada());
        let card: Element = first.parse().expect("xml");
        assert_eq!(
            card.get_child("FN", VCARD).map(|e| e.text()).as_deref(),
            Some("Ada <Lovelace>")
        );
        assert_eq!(
            read_only_fields(&card),
            ["FN", "TITLE", "ORG", "EMAIL", "TEL", "NOTE", "PHOTO"],
            "owned even where the entry has nothing"
        );
        assert_eq!(merge(Some(&first), &ada()), first, "unchanged: same text");
        // The person adds a nickname and tries to retitle themselves.
        let edited = first.replace(
            "<TITLE>Chief</TITLE>",
            "<TITLE>Queen</TITLE><NICKNAME>Countess</NICKNAME>",
        );
        let again: Element = merge(
            Some(&edited),
            &Person {
                title: "Director".into(),
                ..ada()
            },
        )
        .parse()
        .expect("xml");
        assert_eq!(
            again.get_child("NICKNAME", VCARD).map(|e| e.text()).as_deref(),
            Some("Countess")
        );
        let titles: Vec<String> = again
            .children()
            .filter(|c| c.name() == "TITLE")
            .map(|c| c.text())
            .collect();
        assert_eq!(titles, ["Director"]);
        // A photo the directory no longer has is removed with its field.
        let no_photo: Element = merge(
            Some(&first),
            &Person {
                photo: vec![],
                ..ada()
            },
        )
        .parse()
        .expect("xml");
        assert!(no_photo.get_child("PHOTO", VCARD).is_none());
        // A field the entry leaves empty is still the directory's.
        let own_org = first.replace("</vCard>", "<ORG><ORGNAME>Fake Corp</ORGNAME></ORG></vCard>");
        let again: Element = merge(Some(&own_org), &ada()).parse().expect("xml");
        assert!(again.get_child("ORG", VCARD).is_none());
    }
}
