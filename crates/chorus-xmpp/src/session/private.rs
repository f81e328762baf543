//! XEP-0049 private XML storage, and the XEP-0402 `#compat` and
//! `#compat-pep` bridges: the XEP-0048 `<storage xmlns='storage:bookmarks'/>`
//! a client keeps in private storage or in the PEP node `storage:bookmarks`
//! is the user's PEP bookmarks (`urn:xmpp:bookmarks:1`) seen the old way,
//! so a bookmark added in one client shows up in the others whichever way
//! they store them. Stored per user in the replicated settings table.

use super::Session;
use crate::ns;
use crate::pep;
use crate::xml::{self, ElementExt};
use minidom::Element;

/// The settings entry listing the namespaces a user keeps.
const INDEX_SETTING: &str = "private-index";

/// Namespaces that cannot be stored (XEP-0049 section 3).
const RESERVED: &[&str] = &[ns::CLIENT, "jabber:server", ns::PRIVATE];

impl Session {
    /// `<query xmlns='jabber:iq:private'/>` to the user's own account.
    pub(super) fn on_private(&mut self, iq: &Element, q: &Element, get: bool) {
        let children: Vec<&Element> = q.children().collect();
        let [el] = children.as_slice() else {
            return self.send(xml::error_reply(iq, "modify", "bad-request"));
        };
        let el = (*el).clone();
        if RESERVED.contains(&el.ns().as_str()) {
            return self.send(xml::error_reply(iq, "modify", "not-acceptable"));
        }
        if get {
            return match self.private_read(&el) {
                Ok(stored) => {
                    let reply = xml::new("query", ns::PRIVATE).with_child(stored);
                    self.send(xml::iq_result(iq).with_child(reply))
                }
                Err(()) => self.send(xml::error_reply(iq, "wait", "internal-server-error")),
            };
        }
        match self.private_write(el) {
            Ok(()) => self.send(xml::iq_result(iq)),
            Err((typ, condition)) => self.send(xml::error_reply(iq, typ, condition)),
        }
    }

    /// What the user keeps under `el`'s name and namespace (an empty
    /// element if nothing); XEP-0048 bookmarks are the PEP bookmarks.
    fn private_read(&self, el: &Element) -> Result<Element, ()> {
        let key = format!("private:{} {}", el.ns(), el.name());
        let user = self.user().to_owned();
        let stored = match self.ctx.store.setting(&user, &key).map_err(|_| ())? {
            Some(x) => crate::parser::parse_frame(x.as_bytes(), x.len() * 2 + 1024, 64).ok(),
            None => None,
        }
        .unwrap_or_else(|| xml::new(el.name(), &el.ns()));
        if el.is("storage", ns::BOOKMARKS_LEGACY) {
            return Ok(self.legacy_bookmarks(&user, stored));
        }
        Ok(stored)
    }

    /// Keeps `el` (XEP-0048 bookmarks become the PEP bookmarks); the error
    /// is a stanza error's type and condition.
    fn private_write(&mut self, el: Element) -> Result<(), (&'static str, &'static str)> {
        let key = format!("private:{} {}", el.ns(), el.name());
        let user = self.user().to_owned();
        let to_store = if el.is("storage", ns::BOOKMARKS_LEGACY) {
            self.bookmarks_from_legacy(&el).map_err(|c| ("wait", c))?
        } else {
            el
        };
        let text = to_store.to_xml();
        if text.len() > self.ctx.config.limits.private_storage_bytes_max {
            return Err(("modify", "not-acceptable"));
        }
        if !self.private_index_admits(&user, &key) {
            return Err(("wait", "resource-constraint"));
        }
        self.ctx
            .store
            .set_setting(&user, &key, &text)
            .map_err(|_| ("wait", "internal-server-error"))
    }

    /// XEP-0048 bookmarks kept in PEP (`storage:bookmarks`, the XEP-0402
    /// `#compat-pep` bridge, as XEP-0411 describes): the same PEP bookmarks,
    /// read and written the old way.
    pub(super) fn legacy_pep_bookmarks(&mut self, iq: &Element, op: &Element, get: bool) {
        let empty = xml::new("storage", ns::BOOKMARKS_LEGACY);
        match (op.name(), get) {
            ("items", true) => match self.private_read(&empty) {
                Ok(storage) => {
                    let item = xml::new("item", ns::PUBSUB)
                        .with_attr("id", "current")
                        .with_child(storage);
                    let items = xml::new("items", ns::PUBSUB)
                        .with_attr("node", ns::BOOKMARKS_LEGACY)
                        .with_child(item);
                    let reply = xml::new("pubsub", ns::PUBSUB).with_child(items);
                    self.send(xml::iq_result(iq).with_child(reply))
                }
                Err(()) => self.send(xml::error_reply(iq, "wait", "internal-server-error")),
            },
            ("publish", false) => {
                let storage = op
                    .get_child("item", ns::PUBSUB)
                    .and_then(|i| i.get_child("storage", ns::BOOKMARKS_LEGACY))
                    .cloned();
                let Some(storage) = storage else {
                    return self.send(xml::error_reply(iq, "modify", "bad-request"));
                };
                match self.private_write(storage) {
                    Ok(()) => self.send(xml::iq_result(iq)),
                    Err((typ, condition)) => self.send(xml::error_reply(iq, typ, condition)),
                }
            }
            _ => self.send(xml::error_reply(iq, "cancel", "feature-not-implemented")),
        }
    }

    /// Whether `key` is already kept or one more namespace fits (recording
    /// it in the index).
    fn private_index_admits(&self, user: &str, key: &str) -> bool {
        let mut index: Vec<String> = self
            .ctx
            .store
            .setting(user, INDEX_SETTING)
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        if index.iter().any(|k| k == key) {
            return true;
        }
        if index.len() >= self.ctx.config.limits.private_storage_namespaces_max {
            return false;
        }
        index.push(key.to_owned());
        let json = serde_json::to_string(&index).unwrap_or_default();
        self.ctx.store.set_setting(user, INDEX_SETTING, &json).is_ok()
    }

    /// The XEP-0048 view of the user's PEP bookmarks: one `<conference/>`
    /// per XEP-0402 item, after the `<url/>` entries kept in `stored`.
    fn legacy_bookmarks(&self, user: &str, stored: Element) -> Element {
        let mut out = xml::new("storage", ns::BOOKMARKS_LEGACY);
        for url in stored.children().filter(|c| c.is("url", ns::BOOKMARKS_LEGACY)) {
            out.append_child(url.clone());
        }
        let items = pep::ordered(self.ctx.store.pep_items(user, ns::BOOKMARKS2).unwrap_or_default());
        for (jid, item) in items {
            let Ok(c) = crate::parser::parse_frame(item.xml.as_bytes(), item.xml.len() * 2 + 1024, 16) else {
                continue;
            };
            let conf = conference(&c, ns::BOOKMARKS2, ns::BOOKMARKS_LEGACY).with_attr("jid", jid);
            out.append_child(conf);
        }
        out
    }

    /// Makes the user's PEP bookmarks what a XEP-0048 `<storage/>` lists
    /// (publishing, and retracting what it no longer lists); returns what
    /// is left to keep in private storage (the `<url/>` entries).
    fn bookmarks_from_legacy(&mut self, storage: &Element) -> Result<Element, &'static str> {
        let user = self.user().to_owned();
        let exists = self
            .pep_node(&user, ns::BOOKMARKS2)
            .map_err(|()| "internal-server-error")?;
        let options = bookmark_options();
        let mut listed = Vec::new();
        for c in storage
            .children()
            .filter(|c| c.is("conference", ns::BOOKMARKS_LEGACY))
        {
            let Some(jid) = c.attr("jid").and_then(|j| jid::BareJid::new(j).ok()) else {
                continue;
            };
            let jid = jid.to_string();
            let conf = conference(c, ns::BOOKMARKS_LEGACY, ns::BOOKMARKS2);
            let opts = (listed.is_empty() && exists.is_none()).then_some(&options);
            self.pep_store_item(ns::BOOKMARKS2, &jid, &conf, opts)
                .map_err(|e| match e {
                    super::pep::PublishError::Quota => "resource-constraint",
                    _ => "internal-server-error",
                })?;
            listed.push(jid);
        }
        let stale: Vec<(String, Option<String>)> = self
            .ctx
            .store
            .pep_items(&user, ns::BOOKMARKS2)
            .unwrap_or_default()
            .into_iter()
            .filter(|(id, _)| !listed.contains(id))
            .map(|(id, _)| (id, None))
            .collect();
        if !stale.is_empty() {
            self.ctx
                .store
                .set_pep_items(&user, ns::BOOKMARKS2, &stale)
                .map_err(|_| "internal-server-error")?;
            if let Ok(Some(cfg)) = self.pep_node(&user, ns::BOOKMARKS2) {
                let mut event = xml::new("items", ns::PUBSUB_EVENT).with_attr("node", ns::BOOKMARKS2);
                for (id, _) in stale {
                    event.append_child(xml::new("retract", ns::PUBSUB_EVENT).with_attr("id", id));
                }
                self.pep_notify(&user, &cfg, event);
            }
        }
        let mut urls = xml::new("storage", ns::BOOKMARKS_LEGACY);
        for u in storage.children().filter(|c| c.is("url", ns::BOOKMARKS_LEGACY)) {
            urls.append_child(u.clone());
        }
        Ok(urls)
    }
}

/// The publish-options XEP-0402 asks for.
fn bookmark_options() -> Element {
    let field = |var: &str, val: &str| {
        xml::new("field", ns::DATA)
            .with_attr("var", var)
            .with_child(xml::new("value", ns::DATA).with_text(val))
    };
    xml::new("x", ns::DATA)
        .with_attr("type", "submit")
        .with_child(field("FORM_TYPE", ns::PUBSUB_PUBLISH_OPTIONS))
        .with_child(field("pubsub#persist_items", "true"))
        .with_child(field("pubsub#max_items", "max"))
        .with_child(field("pubsub#send_last_published_item", "never"))
        .with_child(field("pubsub#access_model", "whitelist"))
}

/// A bookmark's `<conference/>` (name, autojoin, nick, password) moved
/// from one bookmarks namespace to the other; the caller adds a `jid`.
fn conference(c: &Element, from: &str, to: &str) -> Element {
    let mut conf = xml::new("conference", to);
    if let Some(name) = c.attr("name") {
        conf.put_attr("name", name);
    }
    let autojoin = c.attr("autojoin").is_some_and(|a| a == "true" || a == "1");
    conf.put_attr("autojoin", if autojoin { "true" } else { "false" });
    for child in ["nick", "password"] {
        if let Some(v) = c.get_child(child, from) {
            conf.append_child(xml::new(child, to).with_text(v.text()));
        }
    }
    conf
}
