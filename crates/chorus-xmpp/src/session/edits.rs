//! Corrections (XEP-0308) and retractions (XEP-0424) as the archive sees
//! them: clients get them as usual, the archive keeps the original and
//! records the edit as its own record linked to it by the sender's message
//! id. A retraction carries no body, but it is archived all the same: it
//! is not a chat state.

use crate::ns;
use chorus_core::archive::{Edit, EditKind};
use minidom::Element;

/// Message ids longer than this are not indexed (they are the client's
/// choice; the stanza itself is archived whole either way).
const ID_MAX: usize = 256;

fn bounded(id: &str) -> Option<String> {
    (id.len() <= ID_MAX).then(|| id.to_owned())
}

/// What `el` corrects or retracts, if anything.
pub(crate) fn edit_of(el: &Element) -> Option<Edit> {
    let target = |child: Option<&Element>| child.and_then(|c| c.attr("id")).and_then(bounded);
    if let Some(of) = target(el.get_child("replace", ns::MESSAGE_CORRECT)) {
        return Some(Edit {
            kind: EditKind::Correction,
            of,
        });
    }
    if let Some(of) = target(el.get_child("retract", ns::MESSAGE_RETRACT)) {
        return Some(Edit {
            kind: EditKind::Retraction,
            of,
        });
    }
    // Older clients: <apply-to id='…' xmlns='urn:xmpp:fasten:0'><retract/></apply-to>.
    el.get_child("apply-to", ns::FASTEN)
        .filter(|a| a.has_child("retract", ns::MESSAGE_RETRACT_0))
        .and_then(|a| a.attr("id"))
        .and_then(bounded)
        .map(|of| Edit {
            kind: EditKind::Retraction,
            of,
        })
}

/// The id the sender gave the message: its XEP-0359 origin-id, else its
/// `id` attribute.
pub(crate) fn msg_id_of(el: &Element) -> Option<String> {
    el.get_child("origin-id", ns::SID)
        .and_then(|o| o.attr("id"))
        .or_else(|| el.attr("id"))
        .and_then(bounded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Element {
        s.parse().expect("xml")
    }

    #[test]
    fn corrections_and_retractions_name_what_they_edit() {
        let c = parse(
            "<message xmlns='jabber:client' id='m2'><body>fixed</body>\
             <replace xmlns='urn:xmpp:message-correct:0' id='m1'/></message>",
        );
        assert_eq!(
            edit_of(&c),
            Some(Edit {
                kind: EditKind::Correction,
                of: "m1".into()
            })
        );
        assert_eq!(msg_id_of(&c).as_deref(), Some("m2"));
        let r = parse(
            "<message xmlns='jabber:client' id='m3'><retract xmlns='urn:xmpp:message-retract:1' id='o1'/>\
             <origin-id xmlns='urn:xmpp:sid:0' id='o3'/></message>",
        );
        assert_eq!(
            edit_of(&r).map(|e| (e.kind, e.of)),
            Some((EditKind::Retraction, "o1".into()))
        );
        assert_eq!(msg_id_of(&r).as_deref(), Some("o3"), "origin-id wins");
        let old = parse(
            "<message xmlns='jabber:client'><apply-to xmlns='urn:xmpp:fasten:0' id='x'>\
             <retract xmlns='urn:xmpp:message-retract:0'/></apply-to></message>",
        );
        assert_eq!(edit_of(&old).map(|e| e.of), Some("x".into()));
        assert_eq!(
            edit_of(&parse("<message xmlns='jabber:client'><body>hi</body></message>")),
            None
        );
    }
}
