//! Who hears of a PEP change and when: notifications to the owner's
//! resources and to subscribed contacts on any site, filtered at the
//! receiving session by its XEP-0115 `+notify` interests; the caps query a
//! session sends its client; last-item delivery once a session's interests
//! are known; and the XEP-0398 avatar hash stamped on the user's presence.

use super::super::Session;
use crate::caps::{self, CapsInfo};
use crate::ns;
use crate::pep::{self, AccessModel, NodeConfig, SendLast};
use crate::router::Routed;
use crate::xml::{self, ElementExt};
use minidom::Element;
use std::sync::Arc;

/// A session's PEP state: its client's capabilities.
#[derive(Default)]
pub(crate) struct PepSession {
    /// What the client's current caps `ver` stands for, once known.
    caps: Option<Arc<CapsInfo>>,
    /// The `ver` that `caps` describes.
    caps_ver: Option<String>,
    /// The disco#info query sent to the client, waiting for its answer.
    query: Option<CapsQuery>,
}

struct CapsQuery {
    id: String,
    ver: String,
    /// The client named a `sha-1` hash: the answer is checked and cached.
    verify: bool,
}

impl Session {
    /// Reads the client's `<c/>` from its broadcast presence: a known `ver`
    /// takes effect at once, an unknown one is asked for.
    pub(in crate::session) fn on_caps_presence(&mut self, presence: &Element) {
        let Some((node, ver, hash)) = caps::announced(presence) else {
            return;
        };
        if self.pep.caps_ver.as_deref() == Some(ver.as_str()) {
            return;
        }
        let verify = hash == "sha-1";
        if verify && let Some(info) = self.ctx.caps.get(&ver) {
            metrics::counter!("chorus_caps_cache_hits_total").increment(1);
            return self.caps_learned(ver, info);
        }
        let id = format!("caps-{}", super::super::random_id());
        let q = xml::new("query", ns::DISCO_INFO).with_attr("node", format!("{node}#{ver}"));
        let iq = xml::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", id.clone())
            .with_attr("from", self.ctx.domain.clone())
            .with_attr("to", self.full())
            .with_child(q);
        self.pep.query = Some(CapsQuery { id, ver, verify });
        self.send(iq);
    }

    /// The client's answer to the caps query; false if `iq` is not one.
    pub(in crate::session) fn on_caps_reply(&mut self, iq: &Element) -> bool {
        let matches = self.pep.query.as_ref().map(|q| q.id.as_str()) == iq.attr("id");
        if !matches {
            return false;
        }
        let Some(query) = self.pep.query.take() else {
            return false;
        };
        let Some(q) = iq.get_child("query", ns::DISCO_INFO) else {
            return true;
        };
        let info = Arc::new(CapsInfo::from_query(q));
        if query.verify {
            if caps::ver_of(q).as_deref() == Some(query.ver.as_str()) {
                self.ctx.caps.put(&query.ver, info.clone());
            } else {
                // The client's own interests still count for itself; the
                // answer is just not trusted for anyone else's `ver`.
                metrics::counter!("chorus_caps_mismatch_total").increment(1);
            }
        }
        self.caps_learned(query.ver, info);
        true
    }

    fn caps_learned(&mut self, ver: String, info: Arc<CapsInfo>) {
        self.pep.caps_ver = Some(ver);
        self.pep.caps = Some(info);
        self.send_last_items();
    }

    /// Whether a routed stanza should reach this session's client: a PEP
    /// notification only if the client asked for the node (`+notify`).
    pub(in crate::session) fn pep_event_wanted(&self, el: &Element) -> bool {
        let Some(event) = el.get_child("event", ns::PUBSUB_EVENT) else {
            return true;
        };
        let from_account = el.attr("from").is_some_and(|f| !f.contains('/'));
        if el.name() != "message" || !from_account {
            return true;
        }
        let node = event
            .children()
            .next()
            .and_then(|c| c.attr("node"))
            .unwrap_or_default();
        self.pep.caps.as_ref().is_some_and(|c| c.wants(node))
    }

    /// Sends `event` (an `<items/>`, `<delete/>` or `<purge/>`) from
    /// `owner`'s node to every available resource that may see it: the
    /// owner's own, and (unless the node is whitelisted) those of contacts
    /// subscribed to the owner's presence, wherever they are connected.
    pub(in crate::session) fn pep_notify(&mut self, owner: &str, cfg: &NodeConfig, event: Element) {
        let from = format!("{owner}@{}", self.ctx.domain);
        let mut users = vec![owner.to_owned()];
        if cfg.access_model != AccessModel::Whitelist {
            let roster = self.ctx.store.roster(owner).map(|r| r.items).unwrap_or_default();
            for item in roster.iter().filter(|i| i.subscription.has_from()) {
                if let Some(contact) = self.local_user_of(&item.jid)
                    && self.pep_may_read(owner, &contact, cfg)
                    && !self.blocks(&contact, &from)
                {
                    users.push(contact);
                }
            }
        }
        let wrapped = xml::new("event", ns::PUBSUB_EVENT).with_child(event);
        for user in users {
            for r in self
                .ctx
                .router
                .resources(&user)
                .into_iter()
                .filter(|r| r.available)
            {
                let msg = event_message(
                    &from,
                    &format!("{user}@{}/{}", self.ctx.domain, r.resource),
                    &wrapped,
                );
                let _ = self.ctx.router.deliver(&user, &r.resource, Routed::stanza(msg));
            }
        }
    }

    /// Sends this session the last item of every node it wants, of the
    /// user's own account and of each contact whose presence it receives.
    fn send_last_items(&mut self) {
        let Some(caps) = self.pep.caps.clone() else { return };
        let me = self.user().to_owned();
        let mut owners = vec![me.clone()];
        let roster = self.ctx.store.roster(&me).map(|r| r.items).unwrap_or_default();
        owners.extend(
            roster
                .iter()
                .filter(|i| i.subscription.has_to())
                .filter_map(|i| self.local_user_of(&i.jid)),
        );
        let e2e = self.ctx.config.policy.e2e.allowed();
        for owner in owners {
            let nodes = self.ctx.store.pep_nodes(&owner).unwrap_or_default();
            for (node, json) in nodes {
                let Ok(cfg) = serde_json::from_str::<NodeConfig>(&json) else {
                    continue;
                };
                if !caps.wants(&node)
                    || cfg.send_last_published_item == SendLast::Never
                    || (pep::is_e2e_node(&node) && !e2e)
                    || !self.pep_may_read(&owner, &me, &cfg)
                {
                    continue;
                }
                let items = pep::ordered(self.ctx.store.pep_items(&owner, &node).unwrap_or_default());
                let Some((id, item)) = items.last() else { continue };
                let from = format!("{owner}@{}", self.ctx.domain);
                let list = xml::new("items", ns::PUBSUB_EVENT)
                    .with_attr("node", node.clone())
                    .with_child(super::item_element(ns::PUBSUB_EVENT, id, item, Some(&from)));
                let wrapped = xml::new("event", ns::PUBSUB_EVENT).with_child(list);
                let msg = event_message(&from, &self.full(), &wrapped);
                self.send(msg);
            }
        }
    }

    /// `contact` was just allowed to see this user's presence: each of
    /// their available sessions, on any site, is sent the last item of
    /// every node they may read (their session keeps what its client
    /// asked for with `+notify`).
    pub(in crate::session) fn pep_send_last_to(&mut self, contact: &str) {
        let me = self.user().to_owned();
        let from = format!("{me}@{}", self.ctx.domain);
        let e2e = self.ctx.config.policy.e2e.allowed();
        let targets: Vec<String> = self
            .ctx
            .router
            .resources(contact)
            .into_iter()
            .filter(|r| r.available)
            .map(|r| r.resource)
            .collect();
        if targets.is_empty() {
            return;
        }
        for (node, json) in self.ctx.store.pep_nodes(&me).unwrap_or_default() {
            let Ok(cfg) = serde_json::from_str::<NodeConfig>(&json) else {
                continue;
            };
            if cfg.send_last_published_item == SendLast::Never
                || (pep::is_e2e_node(&node) && !e2e)
                || !self.pep_may_read(&me, contact, &cfg)
            {
                continue;
            }
            let items = pep::ordered(self.ctx.store.pep_items(&me, &node).unwrap_or_default());
            let Some((id, item)) = items.last() else { continue };
            let list = xml::new("items", ns::PUBSUB_EVENT)
                .with_attr("node", node.clone())
                .with_child(super::item_element(ns::PUBSUB_EVENT, id, item, Some(&from)));
            let wrapped = xml::new("event", ns::PUBSUB_EVENT).with_child(list);
            for r in &targets {
                let to = format!("{contact}@{}/{r}", self.ctx.domain);
                let _ =
                    self.ctx
                        .router
                        .deliver(contact, r, Routed::stanza(event_message(&from, &to, &wrapped)));
            }
        }
    }

    /// The user's avatar hash (XEP-0398): `Some("")` when they disabled
    /// their avatar, `None` when they never published one.
    pub(in crate::session) fn avatar_hash(&self, user: &str) -> Option<String> {
        let items = pep::ordered(self.ctx.store.pep_items(user, ns::AVATAR_METADATA).ok()?);
        let (id, item) = items.last()?;
        let meta = crate::parser::parse_frame(item.xml.as_bytes(), item.xml.len() * 2 + 1024, 16).ok()?;
        let infos: Vec<&Element> = meta
            .children()
            .filter(|c| c.is("info", ns::AVATAR_METADATA))
            .collect();
        if infos.is_empty() {
            return Some(String::new());
        }
        Some(
            infos
                .iter()
                .find(|i| i.attr("id") == Some(id.as_str()))
                .or(infos.first())
                .and_then(|i| i.attr("id"))
                .unwrap_or(id)
                .to_owned(),
        )
    }

    /// Stamps the user's PEP avatar hash on an outgoing available presence
    /// (XEP-0398, for XEP-0153 clients), replacing the client's own.
    pub(in crate::session) fn with_avatar_hash(&self, mut presence: Element) -> Element {
        if presence.attr("type").is_some() {
            return presence;
        }
        let Some(hash) = self.avatar_hash(self.user()) else {
            return presence;
        };
        while presence.remove_child("x", ns::VCARD_UPDATE).is_some() {}
        let mut photo = xml::new("photo", ns::VCARD_UPDATE);
        if !hash.is_empty() {
            photo.append_text(hash);
        }
        presence.append_child(xml::new("x", ns::VCARD_UPDATE).with_child(photo));
        presence
    }

    /// After a new avatar, this session's presence goes out again with
    /// the new hash.
    pub(in crate::session) fn rebroadcast_for_avatar(&mut self) {
        if !self.available {
            return;
        }
        let me = self.user().to_owned();
        let stored = self
            .ctx
            .router
            .resources(&me)
            .into_iter()
            .find(|r| r.session_id == self.id)
            .and_then(|r| r.presence_element());
        if let Some(p) = stored {
            let p = self.with_avatar_hash(p);
            self.broadcast_presence(p);
        }
    }
}

/// A headline message carrying a pubsub event.
fn event_message(from: &str, to: &str, event: &Element) -> Element {
    xml::new("message", ns::CLIENT)
        .with_attr("from", from)
        .with_attr("to", to)
        .with_attr("type", "headline")
        .with_attr("id", format!("pep-{}", super::super::random_id()))
        .with_child(event.clone())
}
