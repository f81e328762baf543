//! Shared files in the compliance record: a message that links to a file
//! uploaded here (XEP-0363) is archived with one
//! `<file xmlns='urn:xmpp:chorus:file:0' sha256=… size=… name=… url=…/>`
//! per file, so the record names the exact bytes that were shared (its
//! hash is covered by the archive's hash chain) and an export carries
//! them. A client cannot write such an element itself: any it sends is
//! dropped from the archived copy.

use super::Session;
use crate::ns;
use crate::xml::{self, ElementExt};
use chorus_core::files::{Upload, parse_slot_url};
use minidom::Element;

/// The element's namespace (read back by `chorus-archive`'s exports).
pub(super) const NS_SHARED_FILE: &str = "urn:xmpp:chorus:file:0";
/// XEP-0066 out-of-band data, where clients also put the link.
const NS_OOB: &str = "jabber:x:oob";
/// Files recorded for one message at most.
const FILES_PER_MESSAGE_MAX: usize = 16;

impl Session {
    /// `el` as the archive keeps it.
    pub(in crate::session) fn archived_with_files(&self, el: &Element) -> Element {
        // Nowhere in the stanza may a client's own reference survive.
        let mut out = if has_reference(el) {
            without_references(el)
        } else {
            el.clone()
        };
        let mut text = el
            .get_child("body", ns::CLIENT)
            .map(|b| b.text())
            .unwrap_or_default();
        for x in el.children().filter(|c| c.is("x", NS_OOB)) {
            if let Some(u) = x.get_child("url", NS_OOB) {
                text.push(' ');
                text.push_str(&u.text());
            }
        }
        let mut seen = Vec::new();
        let words = text.split_whitespace().filter(|w| w.contains("/upload/"));
        // Lookups are bounded whatever the message holds.
        for word in words.take(FILES_PER_MESSAGE_MAX) {
            let Some((user, token, name)) = parse_slot_url(word) else {
                continue;
            };
            let row = self.ctx.store.upload(&user, &token).ok().flatten();
            let Some(up) = row.and_then(|r| serde_json::from_str::<Upload>(&r).ok()) else {
                continue;
            };
            let Some(sha) = up.sha256.filter(|_| up.filename == name) else {
                continue;
            };
            if seen.contains(&sha) {
                continue;
            }
            out.append_child(
                xml::new("file", NS_SHARED_FILE)
                    .with_attr("sha256", sha.clone())
                    .with_attr("size", up.size.to_string())
                    .with_attr("name", name)
                    .with_attr("url", word),
            );
            seen.push(sha);
        }
        out
    }
}

/// Whether any element of `el`, at any depth, is a file reference (every
/// archived message is checked; only the rare one with a reference is
/// rebuilt).
fn has_reference(el: &Element) -> bool {
    el.children()
        .any(|c| c.ns() == NS_SHARED_FILE || has_reference(c))
}

/// `el` without any `urn:xmpp:chorus:file:0` element, at any depth.
fn without_references(el: &Element) -> Element {
    let mut out = xml::new(el.name(), &el.ns());
    for ((attr_ns, name), v) in el.attrs() {
        out.attrs_mut().insert(attr_ns.clone(), name.clone(), v.clone());
    }
    for node in el.nodes() {
        match node {
            minidom::Node::Element(c) if c.ns() == NS_SHARED_FILE => {}
            minidom::Node::Element(c) => {
                out.append_child(without_references(c));
            }
            minidom::Node::Text(t) => out.append_text(t.clone()),
        }
    }
    out
}
