//! XEP-0115 entity capabilities: the verification string of a disco#info
//! answer, the node-wide cache of what each `ver` stands for, and the
//! `+notify` interests (XEP-0163 filtered notifications) read from it.
//!
//! A client announces `<c hash='sha-1' node=… ver=…/>` in its presence. The
//! session looks `ver` up here; on a miss it asks the client for
//! `disco#info` at `node#ver`, recomputes the hash and caches the answer
//! only when the hash matches, so one client cannot poison what another
//! client's `ver` means.

use crate::ns;
use crate::xml::{self, ElementExt};
use minidom::Element;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Distinct `ver` strings one node caches; past it the cache starts over
/// (a few hundred client builds exist in a real firm).
pub const CAPS_CACHE_ENTRIES_MAX: usize = 4096;
/// Features kept from one disco#info answer.
pub const CAPS_FEATURES_MAX: usize = 512;
/// The `node` Chorus names in its own `<c/>`.
pub const CHORUS_CAPS_NODE: &str = "https://chorus.invalid/caps";

/// What one caps `ver` stands for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapsInfo {
    /// The features the entity announced.
    pub features: Vec<String>,
}

impl CapsInfo {
    /// Reads the features of a disco#info `<query/>`, bounded.
    pub fn from_query(q: &Element) -> CapsInfo {
        let features = q
            .children()
            .filter(|c| c.is("feature", ns::DISCO_INFO))
            .filter_map(|c| c.attr("var"))
            .take(CAPS_FEATURES_MAX)
            .map(str::to_owned)
            .collect();
        CapsInfo { features }
    }

    /// Whether the entity wants notifications for `node` (`node+notify`).
    pub fn wants(&self, node: &str) -> bool {
        self.features
            .iter()
            .any(|f| f.strip_suffix("+notify") == Some(node))
    }
}

/// The node-wide cache of verified `ver` strings.
#[derive(Default)]
pub struct CapsCache {
    map: Mutex<HashMap<String, Arc<CapsInfo>>>,
}

impl CapsCache {
    /// What `ver` stands for, if verified before.
    pub fn get(&self, ver: &str) -> Option<Arc<CapsInfo>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(ver)
            .cloned()
    }

    /// Remembers a verified `ver`.
    pub fn put(&self, ver: &str, info: Arc<CapsInfo>) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= CAPS_CACHE_ENTRIES_MAX && !m.contains_key(ver) {
            m.clear();
        }
        m.insert(ver.to_owned(), info);
        debug_assert!(m.len() <= CAPS_CACHE_ENTRIES_MAX);
    }

    /// Number of cached entries.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The XEP-0115 section 5.1 verification string of a disco#info `<query/>`
/// (SHA-1, base64), or `None` if the answer is one the XEP says to reject
/// (duplicate identities, features or form types).
pub fn ver_of(q: &Element) -> Option<String> {
    use base64::Engine;
    use sha1::Digest;
    let s = ver_input(q)?;
    let digest = sha1::Sha1::digest(s.as_bytes());
    Some(base64::engine::general_purpose::STANDARD.encode(digest))
}

fn ver_input(q: &Element) -> Option<String> {
    let mut identities: Vec<String> = q
        .children()
        .filter(|c| c.is("identity", ns::DISCO_INFO))
        .map(|i| {
            let lang = i.attr_ns(&rxml::Namespace::XML, "lang").unwrap_or_default();
            let get = |a: &str| i.attr(a).unwrap_or_default().to_owned();
            format!("{}/{}/{}/{}", get("category"), get("type"), lang, get("name"))
        })
        .collect();
    let mut features: Vec<String> = q
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .map(|f| f.attr("var").unwrap_or_default().to_owned())
        .collect();
    identities.sort();
    features.sort();
    if has_duplicates(&identities) || has_duplicates(&features) {
        return None;
    }
    let mut s = String::new();
    for i in identities.iter().chain(features.iter()) {
        s.push_str(i);
        s.push('<');
    }
    let mut forms = Vec::new();
    for x in q.children().filter(|c| c.is("x", ns::DATA)) {
        if let Some(f) = form_input(x) {
            forms.push(f);
        }
    }
    forms.sort();
    let types: Vec<&String> = forms.iter().map(|(t, _)| t).collect();
    if types.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    for (_, text) in forms {
        s.push_str(&text);
    }
    Some(s)
}

/// One extended-information form as (FORM_TYPE, its part of the string);
/// a form without a hidden FORM_TYPE is ignored (section 5.4).
fn form_input(x: &Element) -> Option<(String, String)> {
    let values = |f: &Element| -> Vec<String> {
        let mut v: Vec<String> = f
            .children()
            .filter(|c| c.is("value", ns::DATA))
            .map(|c| c.text())
            .collect();
        v.sort();
        v
    };
    let form_type = x
        .children()
        .find(|f| f.is("field", ns::DATA) && f.attr("var") == Some("FORM_TYPE"))?;
    let form_type = values(form_type).into_iter().next()?;
    let mut fields: Vec<(String, Vec<String>)> = x
        .children()
        .filter(|f| f.is("field", ns::DATA))
        .filter_map(|f| f.attr("var").map(|v| (v.to_owned(), values(f))))
        .filter(|(v, _)| v != "FORM_TYPE")
        .collect();
    fields.sort();
    let mut s = format!("{form_type}<");
    for (var, vals) in fields {
        s.push_str(&var);
        s.push('<');
        for v in vals {
            s.push_str(&v);
            s.push('<');
        }
    }
    Some((form_type, s))
}

fn has_duplicates(sorted: &[String]) -> bool {
    sorted.windows(2).any(|w| w[0] == w[1])
}

/// A client's `<c/>` in a presence: (node, ver, hash).
pub fn announced(presence: &Element) -> Option<(String, String, String)> {
    let c = presence.get_child("c", ns::CAPS)?;
    let ver = c.attr("ver")?.to_owned();
    let node = c.attr("node").unwrap_or_default().to_owned();
    let hash = c.attr("hash").unwrap_or_default().to_owned();
    (!ver.is_empty() && ver.len() <= 128 && node.len() <= 1024).then_some((node, ver, hash))
}

/// The `<c/>` element naming `query` (the server's own, in stream features).
pub fn element_for(query: &Element) -> Option<Element> {
    let ver = ver_of(query)?;
    Some(
        xml::new("c", ns::CAPS)
            .with_attr("hash", "sha-1")
            .with_attr("node", CHORUS_CAPS_NODE)
            .with_attr("ver", ver),
    )
}

#[cfg(test)]
mod tests;
