//! The session's side of PEP (XEP-0163): the pubsub IQs a user sends to
//! their own account (publish with publish-options, retract, create,
//! configure, delete, purge) and the item retrievals anyone with access
//! sends to an account. Notifications, caps and last-item delivery are in
//! [`notify`]; the node model is [`crate::pep`].

mod notify;

pub(super) use notify::PepSession;

use super::Session;
use crate::ns;
use crate::pep::{self, AccessModel, NodeConfig, StoredItem};
use crate::xml::{self, ElementExt};
use minidom::Element;

/// The text of the error that refuses end-to-end encryption.
pub(super) const E2E_DENIED: &str = "End-to-end encryption is disabled by this organization's compliance \
     policy (policy.e2e = \"deny\"): messages must stay readable for the archive";

/// Longest node name or item id accepted.
const PEP_NAME_BYTES_MAX: usize = 1024;

impl Session {
    /// A pubsub IQ to `owner`'s PEP service (the user's own when `owner`
    /// is the user).
    pub(super) fn on_pubsub(&mut self, iq: &Element, payload: &Element, owner: &str, get: bool) {
        let own = owner == self.user();
        let Some(op) = payload.children().next().cloned() else {
            return self.send(xml::error_reply(iq, "modify", "bad-request"));
        };
        let node = op.attr("node").unwrap_or_default().to_owned();
        if node.is_empty() && op.name() != "default" {
            return self.pubsub_error(iq, "modify", "bad-request", Some("nodeid-required"));
        }
        if node.len() > PEP_NAME_BYTES_MAX {
            return self.send(xml::error_reply(iq, "modify", "not-acceptable"));
        }
        let owner_ns = payload.ns() == ns::PUBSUB_OWNER;
        if own && !owner_ns && node == ns::BOOKMARKS_LEGACY {
            return self.legacy_pep_bookmarks(iq, &op, get);
        }
        match (owner_ns, op.name(), get) {
            (false, "items", true) => self.pep_items_get(iq, &op, owner, &node),
            (_, _, _) if !own => self.send(xml::error_reply(iq, "auth", "forbidden")),
            (false, "publish", false) => {
                let options = payload
                    .get_child("publish-options", ns::PUBSUB)
                    .and_then(|o| o.get_child("x", ns::DATA))
                    .cloned();
                self.pep_publish(iq, &op, &node, options.as_ref())
            }
            (false, "retract", false) => self.pep_retract(iq, &op, &node),
            (false, "create", false) => {
                let form = payload
                    .get_child("configure", ns::PUBSUB)
                    .and_then(|o| o.get_child("x", ns::DATA))
                    .cloned();
                self.pep_create(iq, &node, form.as_ref())
            }
            (true, "configure", true) => self.pep_configure_get(iq, &node),
            (true, "configure", false) => self.pep_configure_set(iq, &op, &node),
            (true, "default", true) => {
                let form = pep::config_form(
                    &NodeConfig::default_for("", self.ctx.config.limits.pep_items_per_node_max),
                    "form",
                );
                let d = xml::new("default", ns::PUBSUB_OWNER).with_child(form);
                self.send(xml::iq_result(iq).with_child(xml::new("pubsub", ns::PUBSUB_OWNER).with_child(d)))
            }
            (true, "delete", false) => self.pep_delete(iq, &node),
            (true, "purge", false) => self.pep_purge(iq, &node),
            _ => self.send(xml::error_reply(iq, "cancel", "feature-not-implemented")),
        }
    }

    /// An error with a XEP-0060 application condition.
    fn pubsub_error(&mut self, iq: &Element, typ: &str, condition: &str, app: Option<&str>) {
        let mut e = xml::error_reply(iq, typ, condition);
        if let (Some(app), Some(err)) = (app, e.get_child_mut("error", ns::CLIENT)) {
            err.append_child(xml::new(app, ns::PUBSUB_ERRORS));
        }
        self.send(e);
    }

    /// The policy refusal of an end-to-end encryption node.
    fn e2e_refusal(&mut self, iq: &Element) {
        self.send(e2e_denied(iq, "not-allowed"));
    }

    /// A node's stored configuration, if the node exists.
    pub(super) fn pep_node(&self, owner: &str, node: &str) -> Result<Option<NodeConfig>, ()> {
        let nodes = self.ctx.store.pep_nodes(owner).map_err(|e| {
            tracing::error!(error = %e, "cannot read PEP nodes");
        })?;
        Ok(nodes
            .into_iter()
            .find(|(n, _)| n == node)
            .and_then(|(_, c)| serde_json::from_str(&c).ok()))
    }

    /// Whether `reader` may read `owner`'s node under `cfg`.
    pub(super) fn pep_may_read(&self, owner: &str, reader: &str, cfg: &NodeConfig) -> bool {
        if owner == reader {
            return true;
        }
        if self.blocks(owner, &format!("{reader}@{}", self.ctx.domain)) {
            return false;
        }
        match cfg.access_model {
            AccessModel::Open => true,
            AccessModel::Whitelist => false,
            AccessModel::Presence => {
                let jid = format!("{reader}@{}", self.ctx.domain);
                matches!(self.ctx.store.roster_item(owner, &jid), Ok(Some(i)) if i.subscription.has_from())
            }
        }
    }

    fn pep_items_get(&mut self, iq: &Element, op: &Element, owner: &str, node: &str) {
        if pep::is_e2e_node(node) && !self.ctx.config.policy.e2e.allowed() {
            return self.e2e_refusal(iq);
        }
        let Ok(cfg) = self.pep_node(owner, node) else {
            return self.send(xml::error_reply(iq, "wait", "internal-server-error"));
        };
        let Some(cfg) = cfg else {
            return self.send(xml::error_reply(iq, "cancel", "item-not-found"));
        };
        if !self.pep_may_read(owner, self.user(), &cfg) {
            return match cfg.access_model {
                AccessModel::Presence => self.pubsub_error(
                    iq,
                    "auth",
                    "not-authorized",
                    Some("presence-subscription-required"),
                ),
                _ => self.pubsub_error(iq, "cancel", "not-allowed", Some("closed-node")),
            };
        }
        let wanted: Vec<&str> = op
            .children()
            .filter(|c| c.is("item", ns::PUBSUB))
            .filter_map(|c| c.attr("id"))
            .collect();
        let max = op.attr("max_items").and_then(|m| m.parse::<usize>().ok());
        let mut items = pep::ordered(self.ctx.store.pep_items(owner, node).unwrap_or_default());
        // Replicas may briefly hold more than max_items after concurrent
        // publishes on two sites: show the newest.
        let keep = items.len().saturating_sub(cfg.max_items);
        items.drain(..keep);
        if !wanted.is_empty() {
            items.retain(|(id, _)| wanted.contains(&id.as_str()));
        }
        if let Some(m) = max {
            let skip = items.len().saturating_sub(m);
            items.drain(..skip);
        }
        let mut list = xml::new("items", ns::PUBSUB).with_attr("node", node);
        for (id, item) in items {
            list.append_child(item_element(ns::PUBSUB, &id, &item, None));
        }
        let reply = xml::new("pubsub", ns::PUBSUB).with_child(list);
        self.send(xml::iq_result(iq).with_child(reply));
    }

    fn pep_publish(&mut self, iq: &Element, op: &Element, node: &str, options: Option<&Element>) {
        if pep::is_e2e_node(node) && !self.ctx.config.policy.e2e.allowed() {
            return self.e2e_refusal(iq);
        }
        let items: Vec<&Element> = op.children().filter(|c| c.is("item", ns::PUBSUB)).collect();
        let [item] = items.as_slice() else {
            return self.pubsub_error(iq, "modify", "bad-request", Some("invalid-payload"));
        };
        let payloads: Vec<&Element> = item.children().collect();
        let [payload] = payloads.as_slice() else {
            return self.pubsub_error(iq, "modify", "bad-request", Some("invalid-payload"));
        };
        let id = item
            .attr("id")
            .filter(|i| !i.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(super::random_id);
        let payload = (*payload).clone();
        match self.pep_store_item(node, &id, &payload, options) {
            Ok(()) => {
                let publish = xml::new("publish", ns::PUBSUB)
                    .with_attr("node", node)
                    .with_child(xml::new("item", ns::PUBSUB).with_attr("id", id.clone()));
                self.send(xml::iq_result(iq).with_child(xml::new("pubsub", ns::PUBSUB).with_child(publish)));
                if node == ns::AVATAR_METADATA {
                    self.rebroadcast_for_avatar();
                }
            }
            Err(PublishError::Precondition) => {
                self.pubsub_error(iq, "cancel", "conflict", Some("precondition-not-met"))
            }
            Err(PublishError::NotAcceptable) => self.send(xml::error_reply(iq, "modify", "not-acceptable")),
            Err(PublishError::Quota) => self.send(xml::error_reply(iq, "wait", "resource-constraint")),
            Err(PublishError::Store) => self.send(xml::error_reply(iq, "wait", "internal-server-error")),
        }
    }

    /// Stores one item of the user's own node (creating the node, checking
    /// publish-options and quotas) and notifies those who may see it.
    pub(super) fn pep_store_item(
        &mut self,
        node: &str,
        id: &str,
        payload: &Element,
        options: Option<&Element>,
    ) -> Result<(), PublishError> {
        let limits = &self.ctx.config.limits;
        let (items_max, item_bytes_max) = (limits.pep_items_per_node_max, limits.pep_item_bytes_max);
        let text = payload.to_xml();
        if text.len() > item_bytes_max || id.len() > PEP_NAME_BYTES_MAX {
            return Err(PublishError::NotAcceptable);
        }
        let user = self.user().to_owned();
        let existing = self.pep_node(&user, node).map_err(|()| PublishError::Store)?;
        let cfg = match (existing, options) {
            (Some(cfg), Some(x)) if !pep::satisfies(&cfg, x, items_max) => {
                return Err(PublishError::Precondition);
            }
            (Some(cfg), _) => cfg,
            (None, options) => {
                let mut cfg = NodeConfig::default_for(node, self.ctx.config.limits.pep_items_per_node_max);
                if let Some(x) = options {
                    pep::apply_form(&mut cfg, x, items_max).map_err(|_| PublishError::Precondition)?;
                }
                self.pep_create_node(&user, node, &cfg)?;
                cfg
            }
        };
        let stored = pep::ordered(
            self.ctx
                .store
                .pep_items(&user, node)
                .map_err(|_| PublishError::Store)?,
        );
        if self.pep_bytes_used(&user)? + text.len() > self.ctx.config.limits.pep_bytes_per_user_max {
            return Err(PublishError::Quota);
        }
        let item = StoredItem {
            stamp_ms: chorus_core::time::now_millis().max(stored.last().map_or(0, |(_, i)| i.stamp_ms + 1)),
            xml: text,
        };
        if cfg.persist_items {
            let mut changes = vec![(
                id.to_owned(),
                Some(serde_json::to_string(&item).map_err(|_| PublishError::Store)?),
            )];
            let others: Vec<&String> = stored.iter().map(|(i, _)| i).filter(|i| *i != id).collect();
            let excess = (others.len() + 1).saturating_sub(cfg.max_items);
            changes.extend(others.into_iter().take(excess).map(|i| (i.clone(), None)));
            self.ctx
                .store
                .set_pep_items(&user, node, &changes)
                .map_err(|_| PublishError::Store)?;
        }
        let event = xml::new("items", ns::PUBSUB_EVENT)
            .with_attr("node", node)
            .with_child(item_element(ns::PUBSUB_EVENT, id, &item, Some(&self.bare())));
        self.pep_notify(&user, &cfg, event);
        Ok(())
    }

    fn pep_create_node(&mut self, user: &str, node: &str, cfg: &NodeConfig) -> Result<(), PublishError> {
        let nodes = self.ctx.store.pep_nodes(user).map_err(|_| PublishError::Store)?;
        if nodes.len() >= self.ctx.config.limits.pep_nodes_max {
            return Err(PublishError::Quota);
        }
        let json = serde_json::to_string(cfg).map_err(|_| PublishError::Store)?;
        self.ctx
            .store
            .set_pep_node(user, node, Some(&json))
            .map_err(|_| PublishError::Store)
    }

    /// Bytes of every stored PEP item of `user` (bounded by the quota).
    fn pep_bytes_used(&self, user: &str) -> Result<usize, PublishError> {
        let mut total = 0;
        for (node, _) in self.ctx.store.pep_nodes(user).map_err(|_| PublishError::Store)? {
            for (_, json) in self
                .ctx
                .store
                .pep_items(user, &node)
                .map_err(|_| PublishError::Store)?
            {
                total += json.len();
            }
        }
        Ok(total)
    }

    fn pep_retract(&mut self, iq: &Element, op: &Element, node: &str) {
        let user = self.user().to_owned();
        let ids: Vec<String> = op
            .children()
            .filter(|c| c.is("item", ns::PUBSUB))
            .filter_map(|c| c.attr("id").map(str::to_owned))
            .collect();
        if ids.is_empty() {
            return self.pubsub_error(iq, "modify", "bad-request", Some("item-required"));
        }
        let Ok(Some(cfg)) = self.pep_node(&user, node) else {
            return self.send(xml::error_reply(iq, "cancel", "item-not-found"));
        };
        let changes: Vec<(String, Option<String>)> = ids.iter().map(|i| (i.clone(), None)).collect();
        if self.ctx.store.set_pep_items(&user, node, &changes).is_err() {
            return self.send(xml::error_reply(iq, "wait", "internal-server-error"));
        }
        self.send(xml::iq_result(iq));
        let notify = op.attr("notify").is_some_and(|n| n == "1" || n == "true");
        if notify || cfg.notify_retract {
            let mut event = xml::new("items", ns::PUBSUB_EVENT).with_attr("node", node);
            for id in ids {
                event.append_child(xml::new("retract", ns::PUBSUB_EVENT).with_attr("id", id));
            }
            self.pep_notify(&user, &cfg, event);
        }
    }

    fn pep_create(&mut self, iq: &Element, node: &str, form: Option<&Element>) {
        if pep::is_e2e_node(node) && !self.ctx.config.policy.e2e.allowed() {
            return self.e2e_refusal(iq);
        }
        let user = self.user().to_owned();
        match self.pep_node(&user, node) {
            Err(()) => return self.send(xml::error_reply(iq, "wait", "internal-server-error")),
            Ok(Some(_)) => return self.send(xml::error_reply(iq, "cancel", "conflict")),
            Ok(None) => {}
        }
        let mut cfg = NodeConfig::default_for(node, self.ctx.config.limits.pep_items_per_node_max);
        if let Some(x) = form
            && pep::apply_form(&mut cfg, x, self.ctx.config.limits.pep_items_per_node_max).is_err()
        {
            return self.send(xml::error_reply(iq, "modify", "not-acceptable"));
        }
        match self.pep_create_node(&user, node, &cfg) {
            Ok(()) => self.send(xml::iq_result(iq)),
            Err(PublishError::Quota) => self.send(xml::error_reply(iq, "wait", "resource-constraint")),
            Err(_) => self.send(xml::error_reply(iq, "wait", "internal-server-error")),
        }
    }

    fn pep_configure_get(&mut self, iq: &Element, node: &str) {
        let user = self.user().to_owned();
        let Ok(Some(cfg)) = self.pep_node(&user, node) else {
            return self.send(xml::error_reply(iq, "cancel", "item-not-found"));
        };
        let configure = xml::new("configure", ns::PUBSUB_OWNER)
            .with_attr("node", node)
            .with_child(pep::config_form(&cfg, "form"));
        self.send(xml::iq_result(iq).with_child(xml::new("pubsub", ns::PUBSUB_OWNER).with_child(configure)));
    }

    fn pep_configure_set(&mut self, iq: &Element, op: &Element, node: &str) {
        let user = self.user().to_owned();
        let Ok(Some(mut cfg)) = self.pep_node(&user, node) else {
            return self.send(xml::error_reply(iq, "cancel", "item-not-found"));
        };
        let Some(x) = op.get_child("x", ns::DATA) else {
            return self.send(xml::error_reply(iq, "modify", "bad-request"));
        };
        if x.attr("type") == Some("cancel") {
            return self.send(xml::iq_result(iq));
        }
        if pep::apply_form(&mut cfg, x, self.ctx.config.limits.pep_items_per_node_max).is_err() {
            return self.send(xml::error_reply(iq, "modify", "not-acceptable"));
        }
        let Ok(json) = serde_json::to_string(&cfg) else {
            return self.send(xml::error_reply(iq, "wait", "internal-server-error"));
        };
        match self.ctx.store.set_pep_node(&user, node, Some(&json)) {
            Ok(()) => self.send(xml::iq_result(iq)),
            Err(_) => self.send(xml::error_reply(iq, "wait", "internal-server-error")),
        }
    }

    fn pep_delete(&mut self, iq: &Element, node: &str) {
        let user = self.user().to_owned();
        let Ok(Some(cfg)) = self.pep_node(&user, node) else {
            return self.send(xml::error_reply(iq, "cancel", "item-not-found"));
        };
        if self.ctx.store.set_pep_node(&user, node, None).is_err() {
            return self.send(xml::error_reply(iq, "wait", "internal-server-error"));
        }
        self.send(xml::iq_result(iq));
        self.pep_notify(
            &user,
            &cfg,
            xml::new("delete", ns::PUBSUB_EVENT).with_attr("node", node),
        );
    }

    fn pep_purge(&mut self, iq: &Element, node: &str) {
        let user = self.user().to_owned();
        let Ok(Some(cfg)) = self.pep_node(&user, node) else {
            return self.send(xml::error_reply(iq, "cancel", "item-not-found"));
        };
        let items = self.ctx.store.pep_items(&user, node).unwrap_or_default();
        let changes: Vec<(String, Option<String>)> = items.into_iter().map(|(id, _)| (id, None)).collect();
        if self.ctx.store.set_pep_items(&user, node, &changes).is_err() {
            return self.send(xml::error_reply(iq, "wait", "internal-server-error"));
        }
        self.send(xml::iq_result(iq));
        self.pep_notify(
            &user,
            &cfg,
            xml::new("purge", ns::PUBSUB_EVENT).with_attr("node", node),
        );
    }
}

/// The error that refuses end-to-end encryption: a condition every client
/// library knows (`not-allowed` for a key publication, `not-acceptable`
/// for a message; some, slixmpp and so Poezio among them, fail on
/// `policy-violation` in an IQ), the reason as text, and
/// `<e2e-denied xmlns='urn:xmpp:chorus:policy:0'/>` for tools.
pub(in crate::session) fn e2e_denied(stanza: &Element, condition: &str) -> Element {
    let mut e = xml::error_reply(stanza, "cancel", condition);
    if let Some(err) = e.get_child_mut("error", ns::CLIENT) {
        err.append_child(xml::new("text", ns::STANZAS).with_text(E2E_DENIED));
        err.append_child(xml::new("e2e-denied", ns::CHORUS_POLICY));
    }
    e
}

/// Why an item was not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PublishError {
    /// The node exists with other options than the publish-options.
    Precondition,
    /// The item is too large or malformed.
    NotAcceptable,
    /// A per-user bound (nodes, bytes) is reached.
    Quota,
    /// The store failed.
    Store,
}

/// An `<item/>` carrying a stored payload.
pub(super) fn item_element(namespace: &str, id: &str, item: &StoredItem, publisher: Option<&str>) -> Element {
    let mut el = xml::new("item", namespace).with_attr("id", id);
    if let Some(p) = publisher {
        el.put_attr("publisher", p);
    }
    match crate::parser::parse_frame(item.xml.as_bytes(), item.xml.len() * 2 + 1024, 64) {
        Ok(payload) => el.append_child(payload),
        Err(e) => {
            tracing::error!(item = %id, error = %e, "stored PEP payload does not parse");
            return el;
        }
    };
    el
}
