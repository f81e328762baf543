//! Roster management (RFC 6121 section 2): get, set, remove, versioning
//! and pushes to every interested resource.

use super::Session;
use crate::ns;
use crate::router::Routed;
use crate::xml::{self, ElementExt};
use chorus_core::roster::RosterItem;
use minidom::Element;

/// Length of a roster item name or group name, in bytes.
const ROSTER_TEXT_BYTES_MAX: usize = 1024;
/// Groups per roster item.
const ROSTER_GROUPS_MAX: usize = 64;

/// Serializes a roster item.
pub(crate) fn item_element(item: &RosterItem) -> Element {
    let mut e = xml::new("item", ns::ROSTER)
        .with_attr("jid", item.jid.clone())
        .with_attr("subscription", item.subscription.as_str());
    if let Some(n) = &item.name {
        e.put_attr("name", n.clone());
    }
    if item.ask {
        e.put_attr("ask", "subscribe");
    }
    if item.approved {
        e.put_attr("approved", "true");
    }
    for g in &item.groups {
        e.append_child(xml::new("group", ns::ROSTER).with_text(g.clone()));
    }
    e
}

impl Session {
    pub(super) fn on_roster_iq(&mut self, iq: &Element, q: &Element) {
        match iq.attr("type") {
            Some("get") => self.roster_get(iq, q),
            Some("set") => {
                let reply = self.roster_set(iq, q);
                self.send(reply);
            }
            _ => {}
        }
    }

    fn roster_get(&mut self, iq: &Element, q: &Element) {
        let user = self.user().to_owned();
        let roster = match self.ctx.store.roster(&user) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read roster");
                return self.send(xml::error_reply(iq, "wait", "internal-server-error"));
            }
        };
        self.interested = true;
        let (id, res) = (self.id, self.resource.clone().unwrap_or_default());
        self.ctx
            .router
            .update(&user, &res, id, &mut |i| i.interested = true);
        let shared = self.ctx.shared.roster();
        let ver = crate::shared::version(roster.version, &shared, &user);
        if q.attr("ver") == Some(ver.as_str()) {
            // RFC 6121 section 2.6.3: unchanged; pushes will follow.
            return self.send(xml::iq_result(iq));
        }
        let mut query = xml::new("query", ns::ROSTER).with_attr("ver", ver);
        let mut fellows = shared.fellows(&user);
        let domain = self.ctx.domain.clone();
        for item in roster.items.iter() {
            let fellow = item
                .jid
                .strip_suffix(domain.as_str())
                .and_then(|l| l.strip_suffix('@'))
                .and_then(|l| fellows.remove(l));
            if let Some(i) = crate::shared::view(Some(item), fellow.as_ref(), &item.jid) {
                query.append_child(item_element(&i));
            }
        }
        for (contact, f) in fellows {
            let jid = format!("{contact}@{domain}");
            if let Some(i) = crate::shared::view(None, Some(&f), &jid) {
                query.append_child(item_element(&i));
            }
        }
        self.send(xml::iq_result(iq).with_child(query));
    }

    fn roster_set(&mut self, iq: &Element, q: &Element) -> Element {
        if iq.attr("to").is_some_and(|t| t != self.bare()) {
            return xml::error_reply(iq, "auth", "forbidden");
        }
        let items: Vec<&Element> = q.children().filter(|c| c.is("item", ns::ROSTER)).collect();
        let [item] = items.as_slice() else {
            return xml::error_reply(iq, "modify", "bad-request");
        };
        let Some(contact) = item
            .attr("jid")
            .and_then(|j| jid::BareJid::new(j).ok())
            .map(|j| j.to_string())
        else {
            return xml::error_reply(iq, "modify", "bad-request");
        };
        let user = self.user().to_owned();
        if item.attr("subscription") == Some("remove") {
            return match self.roster_remove(&user, &contact) {
                Ok(()) => xml::iq_result(iq),
                Err(e) => e.reply(iq),
            };
        }
        let name = item.attr("name").filter(|n| !n.is_empty()).map(str::to_owned);
        let mut groups: Vec<String> = item
            .children()
            .filter(|c| c.is("group", ns::ROSTER))
            .map(|g| g.text())
            .collect();
        groups.sort();
        groups.dedup();
        if groups
            .iter()
            .any(|g| g.is_empty() || g.len() > ROSTER_TEXT_BYTES_MAX)
            || groups.len() > ROSTER_GROUPS_MAX
            || name.as_ref().is_some_and(|n| n.len() > ROSTER_TEXT_BYTES_MAX)
        {
            return xml::error_reply(iq, "modify", "not-acceptable");
        }
        let existing = match self.ctx.store.roster_item(&user, &contact) {
            Ok(i) => i,
            Err(_) => return xml::error_reply(iq, "wait", "internal-server-error"),
        };
        if existing.as_ref().is_none_or(|e| e.hidden) {
            let count = self.ctx.store.roster(&user).map(|r| r.items.len()).unwrap_or(0);
            if count >= self.ctx.config.limits.roster_items_max {
                return xml::error_reply(iq, "wait", "resource-constraint");
            }
        }
        let mut updated = existing.unwrap_or_else(|| RosterItem {
            jid: contact.clone(),
            ..Default::default()
        });
        updated.name = name;
        updated.groups = groups;
        updated.hidden = false;
        match self.save_item(&user, &updated) {
            Ok(()) => xml::iq_result(iq),
            Err(e) => e.reply(iq),
        }
    }

    fn roster_remove(&mut self, user: &str, contact: &str) -> Result<(), RosterError> {
        let Some(item) = self
            .ctx
            .store
            .roster_item(user, contact)
            .map_err(|_| RosterError::Internal)?
        else {
            return Err(RosterError::NotFound);
        };
        let me = self.bare();
        let contact_user = self.local_user_of(contact);
        if item.subscription.has_to() || item.ask {
            let p = xml::new("presence", ns::CLIENT)
                .with_attr("type", "unsubscribe")
                .with_attr("from", me.clone())
                .with_attr("to", contact);
            if let Some(c) = &contact_user {
                self.inbound_unsubscribe(c, &p);
            }
        }
        if item.subscription.has_from() || item.pending_in {
            let p = xml::new("presence", ns::CLIENT)
                .with_attr("type", "unsubscribed")
                .with_attr("from", me)
                .with_attr("to", contact);
            self.send_unavailable_to(contact);
            if let Some(c) = &contact_user {
                self.inbound_unsubscribed(c, &p);
            }
        }
        let ver = self
            .ctx
            .store
            .remove_roster_item(user, contact)
            .map_err(|_| RosterError::Internal)?;
        let removed = RosterItem {
            jid: contact.to_owned(),
            ..Default::default()
        };
        self.push_roster(user, &removed, ver, true);
        Ok(())
    }

    /// Saves an item and pushes it to the owner's interested resources.
    /// A new item (from a roster set, an outgoing subscription request
    /// or an incoming one) is refused once the roster holds
    /// `limits.roster_items_max` items.
    pub(super) fn save_item(&mut self, user: &str, item: &RosterItem) -> Result<(), RosterError> {
        let store = &self.ctx.store;
        if store.roster_item(user, &item.jid).ok().flatten().is_none() {
            let count = store.roster(user).map(|r| r.items.len()).unwrap_or(0);
            if count >= self.ctx.config.limits.roster_items_max {
                return Err(RosterError::Full);
            }
        }
        let ver = self.ctx.store.put_roster_item(user, item).map_err(|e| {
            tracing::error!(error = %e, "cannot write roster");
            RosterError::Internal
        })?;
        if !item.hidden {
            self.push_roster(user, item, ver, false);
        }
        Ok(())
    }

    /// Deletes an item that only existed for a pending request.
    pub(super) fn delete_hidden(&mut self, user: &str, contact: &str) {
        if let Err(e) = self.ctx.store.remove_roster_item(user, contact) {
            tracing::error!(error = %e, "cannot write roster");
        }
    }

    fn push_roster(&mut self, user: &str, item: &RosterItem, ver: u64, removal: bool) {
        // A fellow of a shared group stays, as the group shows them.
        let shared = self.ctx.shared.roster();
        let fellow = self
            .local_user_of(&item.jid)
            .and_then(|c| shared.fellow(user, &c));
        let personal = (!removal).then_some(item);
        let el = match crate::shared::view(personal, fellow.as_ref(), &item.jid) {
            Some(i) => item_element(&i),
            None => xml::new("item", ns::ROSTER)
                .with_attr("jid", item.jid.clone())
                .with_attr("subscription", "remove"),
        };
        let ver = crate::shared::version(ver, &shared, user);
        let bare = format!("{user}@{}", self.ctx.domain);
        for r in self.ctx.router.resources(user) {
            let interested = r.interested || (r.session_id == self.id && self.interested);
            if !interested {
                continue;
            }
            let push = xml::new("iq", ns::CLIENT)
                .with_attr("type", "set")
                .with_attr("id", format!("push-{}", super::random_id()))
                .with_attr("to", format!("{bare}/{}", r.resource))
                .with_child(
                    xml::new("query", ns::ROSTER)
                        .with_attr("ver", ver.clone())
                        .with_child(el.clone()),
                );
            if r.session_id == self.id {
                self.send(push);
            } else {
                let _ = self.ctx.router.deliver(user, &r.resource, Routed::stanza(push));
            }
        }
    }

    /// The local account name of a bare JID on our domain, if it exists.
    pub(super) fn local_user_of(&self, bare: &str) -> Option<String> {
        match self.target(Some(bare)) {
            super::message::Target::Local { user, .. } if self.account_exists(&user) => Some(user),
            _ => None,
        }
    }
}

/// Why a roster change failed.
pub(super) enum RosterError {
    /// No such item.
    NotFound,
    /// Storage failed.
    Internal,
    /// The roster holds `limits.roster_items_max` items already.
    Full,
}

impl RosterError {
    fn reply(&self, iq: &Element) -> Element {
        match self {
            RosterError::NotFound => xml::error_reply(iq, "cancel", "item-not-found"),
            RosterError::Internal => xml::error_reply(iq, "wait", "internal-server-error"),
            RosterError::Full => xml::error_reply(iq, "wait", "resource-constraint"),
        }
    }
}
