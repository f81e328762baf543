//! Helpers over `minidom::Element`: building, reading and serializing
//! stanzas, and the stream headers, which are not elements of their own.

use crate::ns;
use minidom::Element;
use rxml::{Namespace, NcName};

/// Builds an empty element.
pub fn new(name: &str, namespace: &str) -> Element {
    Element::bare(name, namespace)
}

/// Convenience methods Chorus uses on every element.
pub trait ElementExt: Sized {
    /// Sets an attribute (no namespace) and returns the element.
    fn with_attr(self, name: &str, value: impl Into<String>) -> Self;
    /// Sets or replaces an attribute (no namespace).
    fn put_attr(&mut self, name: &str, value: impl Into<String>);
    /// Removes an attribute (no namespace).
    fn drop_attr(&mut self, name: &str);
    /// Appends a child and returns the element.
    fn with_child(self, child: Element) -> Self;
    /// Appends text and returns the element.
    fn with_text(self, text: impl Into<String>) -> Self;
    /// Serializes the element with its namespace declarations.
    fn to_xml(&self) -> String;
}

impl ElementExt for Element {
    fn with_attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.put_attr(name, value);
        self
    }

    fn put_attr(&mut self, name: &str, value: impl Into<String>) {
        let Ok(n) = NcName::try_from(name) else {
            debug_assert!(false, "attribute name {name} is not an NCName");
            return;
        };
        self.attrs_mut().insert(Namespace::NONE, n, value.into());
    }

    fn drop_attr(&mut self, name: &str) {
        self.attrs_mut().remove(&Namespace::NONE, name);
    }

    fn with_child(mut self, child: Element) -> Self {
        self.append_child(child);
        self
    }

    fn with_text(mut self, text: impl Into<String>) -> Self {
        self.append_text(text.into());
        self
    }

    fn to_xml(&self) -> String {
        let mut out = Vec::with_capacity(256);
        if let Err(e) = self.write_to(&mut out) {
            tracing::error!(error = %e, "cannot serialize element");
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// `el` without the XEP-0359 stanza-ids whose `by` is in one of `domains`
/// (only this service may set those); other entities' ids stay.
pub fn without_stanza_ids_by(el: &Element, domains: &[&str]) -> Element {
    let mut out = el.clone();
    let mut removed = Vec::new();
    while let Some(sid) = out.remove_child("stanza-id", ns::SID) {
        removed.push(sid);
    }
    for sid in removed {
        let by = sid.attr("by").unwrap_or_default();
        let bare = by.split('/').next().unwrap_or(by);
        let domain = bare.rsplit('@').next().unwrap_or_default();
        if !domains.contains(&domain) {
            out.append_child(sid);
        }
    }
    out
}

/// Escapes text for an attribute value or character data.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The server's opening `<stream:stream>` tag (RFC 6120 section 4.7).
pub fn stream_header(domain: &str, id: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='{}' from='{}' version='1.0' xml:lang='en'>",
        ns::CLIENT,
        ns::STREAM,
        escape(id),
        escape(domain)
    )
}

/// The server's RFC 7395 `<open/>` frame.
pub fn ws_open(domain: &str, id: &str) -> String {
    format!(
        "<open xmlns='{}' id='{}' from='{}' version='1.0' xml:lang='en'/>",
        ns::FRAMING,
        escape(id),
        escape(domain)
    )
}

/// A `<stream:error>` with an RFC 6120 condition, for a TCP stream.
pub fn stream_error(condition: &str, text: Option<&str>) -> String {
    let text = text
        .map(|t| format!("<text xmlns='{}'>{}</text>", ns::STREAMS, escape(t)))
        .unwrap_or_default();
    format!(
        "<stream:error><{condition} xmlns='{}'/>{text}</stream:error>",
        ns::STREAMS
    )
}

/// A stream error for a WebSocket, where there is no `stream` prefix.
pub fn ws_stream_error(condition: &str, text: Option<&str>) -> String {
    let text = text
        .map(|t| format!("<text xmlns='{}'>{}</text>", ns::STREAMS, escape(t)))
        .unwrap_or_default();
    format!(
        "<stream:error xmlns:stream='{}'><{condition} xmlns='{}'/>{text}</stream:error>",
        ns::STREAM,
        ns::STREAMS
    )
}

/// A reply to `stanza` of the given kind and type, with the same id and the
/// addresses swapped.
fn reply(stanza: &Element, name: &str, typ: &str) -> Element {
    let mut r = new(name, ns::CLIENT).with_attr("type", typ);
    for (from, to) in [("id", "id"), ("from", "to"), ("to", "from")] {
        if let Some(v) = stanza.attr(from) {
            r.put_attr(to, v);
        }
    }
    r
}

/// Builds the error reply to a stanza (RFC 6120 section 8.3): addresses
/// swapped, `type='error'`, original payload dropped.
pub fn error_reply(stanza: &Element, error_type: &str, condition: &str) -> Element {
    let err = new("error", ns::CLIENT)
        .with_attr("type", error_type)
        .with_child(new(condition, ns::STANZAS));
    reply(stanza, stanza.name(), "error").with_child(err)
}

/// An empty `<iq type='result'/>` answering `iq`.
pub fn iq_result(iq: &Element) -> Element {
    reply(iq, "iq", "result")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_stanza_ids_are_dropped() {
        let m = new("message", ns::CLIENT)
            .with_child(
                new("stanza-id", ns::SID)
                    .with_attr("id", "1")
                    .with_attr("by", "a@chorus.test"),
            )
            .with_child(
                new("stanza-id", ns::SID)
                    .with_attr("id", "2")
                    .with_attr("by", "room@conference.chorus.test/x"),
            )
            .with_child(
                new("stanza-id", ns::SID)
                    .with_attr("id", "3")
                    .with_attr("by", "bots.chorus.test"),
            );
        let out = without_stanza_ids_by(&m, &["chorus.test", "conference.chorus.test"]);
        let ids: Vec<&str> = out.children().filter_map(|c| c.attr("id")).collect();
        assert_eq!(ids, ["3"]);
    }

    #[test]
    fn serializes_with_namespace_and_escapes() {
        let m = new("message", ns::CLIENT)
            .with_attr("to", "a@b")
            .with_child(new("body", ns::CLIENT).with_text("1 < 2 & 'x'"));
        let s = m.to_xml();
        assert!(s.starts_with("<message"), "{s}");
        assert!(
            s.contains("xmlns=\"jabber:client\"") || s.contains("xmlns='jabber:client'"),
            "{s}"
        );
        assert!(s.contains("1 &lt; 2 &amp;"), "{s}");
    }

    #[test]
    fn error_reply_swaps_addresses() {
        let iq = new("iq", ns::CLIENT)
            .with_attr("id", "7")
            .with_attr("from", "a@b/c")
            .with_attr("to", "b");
        let e = error_reply(&iq, "cancel", "service-unavailable");
        assert_eq!(e.attr("to"), Some("a@b/c"));
        assert_eq!(e.attr("from"), Some("b"));
        assert_eq!(e.attr("type"), Some("error"));
        let cond = e
            .get_child("error", ns::CLIENT)
            .and_then(|e| e.children().next().cloned());
        assert_eq!(
            cond.map(|c| c.name().to_owned()),
            Some("service-unavailable".to_owned())
        );
    }
}
