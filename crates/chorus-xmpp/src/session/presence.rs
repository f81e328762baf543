//! Presence (RFC 6121 sections 3 and 4): broadcast, probes, directed
//! presence and the subscription state machine of appendix A.

use super::Session;
use crate::ns;
use crate::router::Routed;
use crate::xml::{self, ElementExt};
use chorus_core::roster::{RosterItem, Subscription};
use minidom::Element;

impl Session {
    pub(super) fn on_presence(&mut self, el: Element) {
        match el.attr("to").map(|t| self.target(Some(t))) {
            Some(super::message::Target::Muc { room, nick }) => return self.muc_presence(el, room, nick),
            Some(super::message::Target::Component(domain)) => return self.route_to_component(&domain, el),
            _ => {}
        }
        let typ = el.attr("type").map(str::to_owned);
        match (typ.as_deref(), el.attr("to").is_some()) {
            (None | Some("unavailable"), false) => self.on_broadcast(el, typ.is_none()),
            (None | Some("unavailable"), true) => self.on_directed(el),
            (Some("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed"), true) => {
                self.on_subscription(el)
            }
            (Some("probe"), true) => self.on_probe(&el),
            (Some("error"), true) => self.forward_presence_error(el),
            _ => {}
        }
    }

    fn on_broadcast(&mut self, el: Element, available: bool) {
        let el = self.with_avatar_hash(el);
        let initial = available && !self.available;
        let priority = el
            .get_child("priority", ns::CLIENT)
            .and_then(|p| p.text().trim().parse::<i32>().ok())
            .map(|p| p.clamp(-128, 127) as i8)
            .unwrap_or(0);
        let (user, res, id) = (
            self.user().to_owned(),
            self.resource.clone().unwrap_or_default(),
            self.id,
        );
        self.available = available;
        self.priority = priority;
        let stored: std::sync::Arc<str> = el.to_xml().into();
        let stored_caps = el.clone();
        self.ctx.router.update(&user, &res, id, &mut |i| {
            i.available = available;
            i.priority = priority;
            i.presence = available.then(|| stored.clone());
        });
        self.broadcast_presence(el);
        if !available {
            self.directed.clear();
            self.muc_leave_all();
            return;
        }
        if initial {
            self.probe_contacts();
            self.redeliver_pending_subscriptions();
            if priority >= 0 {
                self.deliver_offline();
            }
        }
        self.on_caps_presence(&stored_caps);
    }

    /// Sends this session's presence to subscribers, own resources and
    /// (for unavailable) directed-presence recipients.
    pub(super) fn broadcast_presence(&mut self, mut el: Element) {
        el.put_attr("from", self.full());
        let user = self.user().to_owned();
        let me = self.full();
        let roster = self.ctx.store.roster(&user).map(|r| r.items).unwrap_or_default();
        let shared = self.ctx.shared.roster();
        let fellows = shared.fellow_users(&user);
        let mut covered = Vec::new();
        for item in roster.iter().filter(|i| i.subscription.has_from()) {
            if self.blocks(&user, &item.jid) {
                continue;
            }
            if let Some(contact) = self.local_user_of(&item.jid) {
                covered.push(contact.clone());
                if self.blocks(&contact, &me) {
                    continue;
                }
                let mut p = el.clone();
                p.put_attr("to", item.jid.clone());
                self.deliver_to_available(&contact, &p);
            }
            self.directed.remove(&item.jid);
        }
        // Fellows of a shared group get it as if subscribed: those online
        // (known from memory), minus blocks either way (our own list read
        // once, each online fellow's list once).
        covered.sort_unstable();
        let own_blocks = self.ctx.store.blocklist(&user).unwrap_or_default();
        let domain = self.ctx.domain.clone();
        for contact in fellows {
            if covered.binary_search_by(|c| c.as_str().cmp(contact)).is_ok() {
                continue;
            }
            let jid = format!("{contact}@{domain}");
            self.directed.remove(&jid);
            let online = self.ctx.router.resources(contact).iter().any(|r| r.available);
            if !online || own_blocks.iter().any(|b| *b == jid || *b == domain) || self.blocks(contact, &me) {
                continue;
            }
            let mut p = el.clone();
            p.put_attr("to", jid);
            self.deliver_to_available(contact, &p);
        }
        let bare = self.bare();
        for r in self.ctx.router.resources(&user) {
            if r.session_id != self.id && r.available {
                let mut p = el.clone();
                p.put_attr("to", bare.clone());
                let _ = self.ctx.router.deliver(&user, &r.resource, Routed::stanza(p));
            }
        }
        if el.attr("type") == Some("unavailable") {
            self.record_last_activity(&el);
            for target in std::mem::take(&mut self.directed) {
                let mut p = el.clone();
                p.put_attr("to", target.clone());
                self.route_presence(&target, &p);
            }
        }
    }

    /// Delivers a presence stanza to every available resource of a user.
    fn deliver_to_available(&self, user: &str, p: &Element) {
        for r in self.ctx.router.resources(user) {
            if r.available {
                let _ = self
                    .ctx
                    .router
                    .deliver(user, &r.resource, Routed::stanza(p.clone()));
            }
        }
    }

    /// Delivers a presence to a JID: a full JID's resource, or all available
    /// resources of a bare JID.
    fn route_presence(&self, to: &str, p: &Element) {
        if let super::message::Target::Local { user, resource } = self.target(Some(to)) {
            if self.blocks(&user, &self.full()) {
                return;
            }
            match resource {
                Some(r) => {
                    let _ = self.ctx.router.deliver(&user, &r, Routed::stanza(p.clone()));
                }
                None => self.deliver_to_available(&user, p),
            }
        }
    }

    fn on_directed(&mut self, el: Element) {
        let to = el.attr("to").unwrap_or_default().to_owned();
        if self.blocks(self.user(), &to) {
            return;
        }
        let unavailable = el.attr("type") == Some("unavailable");
        let bare_to = jid::Jid::new(&to)
            .map(|j| j.to_bare().to_string())
            .unwrap_or_default();
        let subscribed = self
            .ctx
            .store
            .roster_item(self.user(), &bare_to)
            .ok()
            .flatten()
            .is_some_and(|i| i.subscription.has_from());
        if !subscribed && self.available {
            if unavailable {
                self.directed.remove(&to);
            } else if self.directed.len() >= self.ctx.config.limits.directed_presence_max
                && !self.directed.contains(&to)
            {
                // Untracked, it would never be told we left: refuse it.
                return self.send(xml::error_reply(&el, "wait", "resource-constraint"));
            } else {
                self.directed.insert(to.clone());
            }
        }
        self.route_presence(&to, &el);
    }

    fn forward_presence_error(&mut self, el: Element) {
        let to = el.attr("to").unwrap_or_default().to_owned();
        self.route_presence(&to, &el);
    }

    fn on_probe(&mut self, el: &Element) {
        let to = el.attr("to").unwrap_or_default().to_owned();
        let Some(contact) = self.local_user_of(&to) else {
            return;
        };
        let item = self.ctx.store.roster_item(self.user(), &to).ok().flatten();
        let fellow = self.ctx.shared.roster().are_fellows(self.user(), &contact);
        if fellow || item.is_some_and(|i| i.subscription.has_to()) {
            self.send_presences_of(&contact, &to);
        }
    }

    /// Sends this session the current presence of every resource of `user`
    /// (whose bare JID is `bare`), or unavailable if none is available.
    fn send_presences_of(&mut self, user: &str, bare: &str) {
        if self.blocks(user, &self.full()) || self.blocks(self.user(), bare) {
            return;
        }
        let me = self.full();
        let mut any = false;
        for r in self.ctx.router.resources(user) {
            if let (true, Some(mut p)) = (r.available, r.presence_element()) {
                p.put_attr("from", format!("{bare}/{}", r.resource));
                p.put_attr("to", me.clone());
                self.send(p);
                any = true;
            }
        }
        if !any {
            let p = xml::new("presence", ns::CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", bare)
                .with_attr("to", me);
            self.send(p);
        }
    }

    fn probe_contacts(&mut self) {
        let user = self.user().to_owned();
        let roster = self.ctx.store.roster(&user).map(|r| r.items).unwrap_or_default();
        let shared = self.ctx.shared.roster();
        let fellows = shared.fellow_users(&user);
        let domain = self.ctx.domain.clone();
        // Fellows of a shared group first (known accounts: no lookup each).
        let mut contacts: Vec<(String, Option<String>)> = fellows
            .iter()
            .map(|f| (format!("{f}@{domain}"), Some(f.to_string())))
            .collect();
        for item in roster.iter().filter(|i| i.subscription.has_to()) {
            let local = item
                .jid
                .strip_suffix(domain.as_str())
                .and_then(|l| l.strip_suffix('@'));
            if local.is_none_or(|l| fellows.binary_search(&l).is_err()) {
                contacts.push((item.jid.clone(), None));
            }
        }
        let me = self.full();
        for (jid, known) in &contacts {
            let Some(contact) = known.clone().or_else(|| self.local_user_of(jid)) else {
                continue;
            };
            let any_available = self.ctx.router.resources(&contact).iter().any(|r| r.available);
            if any_available && !self.blocks(&contact, &me) && !self.blocks(&user, jid) {
                self.send_presences_of(&contact, jid);
            }
        }
        let bare = self.bare();
        for r in self.ctx.router.resources(&user) {
            if let (true, Some(mut p)) = (r.session_id != self.id && r.available, r.presence_element()) {
                p.put_attr("from", format!("{bare}/{}", r.resource));
                p.put_attr("to", bare.clone());
                self.send(p);
            }
        }
    }

    /// Whether a routed presence is to be shown: a subscription request
    /// reaches a session by up to three paths (the request routed from the
    /// requester's node, the replicated roster item that records it, and
    /// redelivery at login), and a client must show one prompt for one
    /// request. An unsubscribe withdraws the request, so the next one is
    /// shown again.
    pub(super) fn first_prompt(&mut self, p: &Element) -> bool {
        let Some(from) = p.attr("from").and_then(|f| jid::Jid::new(f).ok()) else {
            return true;
        };
        let from = from.to_bare().to_string();
        match p.attr("type") {
            Some("subscribe") => {
                if self.prompted.len() >= self.ctx.config.limits.roster_items_max {
                    self.prompted.clear();
                }
                self.prompted.insert(from)
            }
            Some("unsubscribe") => {
                self.prompted.remove(&from);
                true
            }
            _ => true,
        }
    }

    fn redeliver_pending_subscriptions(&mut self) {
        let roster = self
            .ctx
            .store
            .roster(self.user())
            .map(|r| r.items)
            .unwrap_or_default();
        for item in roster.iter().filter(|i| i.pending_in) {
            if !self.prompted.insert(item.jid.clone()) {
                continue;
            }
            let p = xml::new("presence", ns::CLIENT)
                .with_attr("type", "subscribe")
                .with_attr("from", item.jid.clone())
                .with_attr("to", self.bare());
            self.send(p);
        }
    }

    /// Sends unavailable presence from each of this user's available
    /// resources to a contact (after their subscription ended).
    pub(super) fn send_unavailable_to(&mut self, contact_bare: &str) {
        let Some(contact) = self.local_user_of(contact_bare) else {
            return;
        };
        let bare = self.bare();
        for r in self.ctx.router.resources(self.user()) {
            if r.available {
                let p = xml::new("presence", ns::CLIENT)
                    .with_attr("type", "unavailable")
                    .with_attr("from", format!("{bare}/{}", r.resource))
                    .with_attr("to", contact_bare);
                self.deliver_to_available(&contact, &p);
            }
        }
    }

    fn on_subscription(&mut self, el: Element) {
        let typ = el.attr("type").unwrap_or_default().to_owned();
        let to = el.attr("to").unwrap_or_default();
        let Ok(bare_to) = jid::Jid::new(to).map(|j| j.to_bare().to_string()) else {
            return;
        };
        let contact = match self.target(Some(&bare_to)) {
            super::message::Target::Local { user, .. } => user,
            super::message::Target::Remote => {
                return self.send(xml::error_reply(&el, "cancel", "remote-server-not-found"));
            }
            super::message::Target::Server
            | super::message::Target::Muc { .. }
            | super::message::Target::Component(_) => return,
        };
        if self.blocks(self.user(), &bare_to) {
            return self.blocked_by_sender_error(&el);
        }
        if matches!(typ.as_str(), "subscribed" | "unsubscribed") {
            // Answered: a new request from this contact is a new prompt.
            self.prompted.remove(&bare_to);
        }
        let me = self.bare();
        let stanza = xml::new("presence", ns::CLIENT)
            .with_attr("type", typ.clone())
            .with_attr("from", me.clone())
            .with_attr("to", bare_to.clone());
        self.archive_event(&bare_to, &stanza);
        let user = self.user().to_owned();
        let mut item = self
            .ctx
            .store
            .roster_item(&user, &bare_to)
            .ok()
            .flatten()
            .unwrap_or_else(|| RosterItem {
                jid: bare_to.clone(),
                ..Default::default()
            });
        let exists = self.account_exists(&contact);
        match typ.as_str() {
            "subscribe" => {
                if !item.subscription.has_to() {
                    item.ask = true;
                    item.hidden = false;
                    if self.save_item(&user, &item).is_err() {
                        return self.send(xml::error_reply(&el, "wait", "resource-constraint"));
                    }
                }
                if exists {
                    self.inbound_subscribe(&contact, &stanza);
                } else {
                    // Nobody can approve: deny on the absent account's behalf.
                    let p = xml::new("presence", ns::CLIENT)
                        .with_attr("type", "unsubscribed")
                        .with_attr("from", bare_to.clone())
                        .with_attr("to", me.clone());
                    self.inbound_unsubscribed(&user, &p);
                }
            }
            "subscribed" => {
                if item.pending_in {
                    item.pending_in = false;
                    item.hidden = false;
                    item.subscription = Subscription::from_parts(item.subscription.has_to(), true);
                    let _ = self.save_item(&user, &item);
                    if exists {
                        self.inbound_subscribed(&contact, &stanza);
                        let full = self.full();
                        let bare_to2 = bare_to.clone();
                        for r in self.ctx.router.resources(&user) {
                            if let (true, Some(mut p)) = (r.available, r.presence_element()) {
                                p.put_attr("from", format!("{me}/{}", r.resource));
                                p.put_attr("to", bare_to2.clone());
                                self.deliver_to_available(&contact, &p);
                            }
                        }
                        let _ = full;
                        // XEP-0163: a new subscriber gets the last items.
                        self.pep_send_last_to(&contact);
                    }
                } else if !item.subscription.has_from() && !item.approved {
                    item.approved = true;
                    item.hidden = false;
                    let _ = self.save_item(&user, &item);
                }
            }
            "unsubscribe" => {
                if item.subscription.has_to() || item.ask {
                    item.ask = false;
                    item.subscription = Subscription::from_parts(false, item.subscription.has_from());
                    let _ = self.save_item(&user, &item);
                }
                if exists {
                    self.inbound_unsubscribe(&contact, &stanza);
                }
            }
            "unsubscribed" => {
                if item.subscription.has_from() || item.pending_in || item.approved {
                    item.pending_in = false;
                    item.approved = false;
                    item.subscription = Subscription::from_parts(item.subscription.has_to(), false);
                    if item.hidden {
                        self.delete_hidden(&user, &bare_to);
                    } else {
                        let _ = self.save_item(&user, &item);
                    }
                    self.send_unavailable_to(&bare_to);
                }
                if exists {
                    self.inbound_unsubscribed(&contact, &stanza);
                }
            }
            _ => {}
        }
    }

    fn contact_item(&self, contact: &str, from_bare: &str) -> RosterItem {
        self.ctx
            .store
            .roster_item(contact, from_bare)
            .ok()
            .flatten()
            .unwrap_or_else(|| RosterItem {
                jid: from_bare.to_owned(),
                hidden: true,
                ..Default::default()
            })
    }

    /// A subscribe request arrives at local user `contact`.
    fn inbound_subscribe(&mut self, contact: &str, stanza: &Element) {
        let from = stanza.attr("from").unwrap_or_default().to_owned();
        if self.blocks(contact, &from) {
            return;
        }
        let mut citem = self.contact_item(contact, &from);
        if citem.subscription.has_from() || citem.approved {
            if !citem.subscription.has_from() {
                citem.approved = false;
                citem.subscription = Subscription::from_parts(citem.subscription.has_to(), true);
                let _ = self.save_item(contact, &citem);
            }
            let contact_bare = format!("{contact}@{}", self.ctx.domain);
            let reply = xml::new("presence", ns::CLIENT)
                .with_attr("type", "subscribed")
                .with_attr("from", contact_bare.clone())
                .with_attr("to", from);
            let user = self.user().to_owned();
            self.inbound_subscribed(&user, &reply);
            self.send_presences_of(contact, &contact_bare);
            return;
        }
        if !citem.pending_in {
            citem.pending_in = true;
            if self.save_item(contact, &citem).is_err() {
                // The contact's roster is full: the request cannot be kept.
                return self.send(xml::error_reply(stanza, "wait", "resource-constraint"));
            }
        }
        self.deliver_to_available(contact, stanza);
    }

    /// A subscription approval arrives at local user `contact`.
    fn inbound_subscribed(&mut self, contact: &str, stanza: &Element) {
        let from = stanza.attr("from").unwrap_or_default().to_owned();
        let mut citem = self.contact_item(contact, &from);
        if !citem.ask {
            return;
        }
        citem.ask = false;
        citem.hidden = false;
        citem.subscription = Subscription::from_parts(true, citem.subscription.has_from());
        let _ = self.save_item(contact, &citem);
        self.deliver_to_available(contact, stanza);
    }

    /// An unsubscribe arrives at local user `contact`.
    pub(super) fn inbound_unsubscribe(&mut self, contact: &str, stanza: &Element) {
        let from = stanza.attr("from").unwrap_or_default().to_owned();
        let mut citem = self.contact_item(contact, &from);
        if !(citem.subscription.has_from() || citem.pending_in) {
            return;
        }
        citem.pending_in = false;
        citem.subscription = Subscription::from_parts(citem.subscription.has_to(), false);
        if citem.hidden {
            self.delete_hidden(contact, &from);
        } else {
            let _ = self.save_item(contact, &citem);
        }
        self.deliver_to_available(contact, stanza);
        // The unsubscriber no longer sees the contact's presence.
        let me = self.full();
        let contact_bare = format!("{contact}@{}", self.ctx.domain);
        for r in self.ctx.router.resources(contact) {
            if r.available {
                let p = xml::new("presence", ns::CLIENT)
                    .with_attr("type", "unavailable")
                    .with_attr("from", format!("{contact_bare}/{}", r.resource))
                    .with_attr("to", me.clone());
                if from == self.bare() {
                    self.send(p);
                }
            }
        }
    }

    /// An unsubscribed (cancel or deny) arrives at local user `contact`.
    pub(super) fn inbound_unsubscribed(&mut self, contact: &str, stanza: &Element) {
        let from = stanza.attr("from").unwrap_or_default().to_owned();
        let mut citem = self.contact_item(contact, &from);
        if !(citem.subscription.has_to() || citem.ask) {
            return;
        }
        citem.ask = false;
        citem.subscription = Subscription::from_parts(false, citem.subscription.has_from());
        let _ = self.save_item(contact, &citem);
        if contact == self.user() {
            self.send(stanza.clone());
            let others: Vec<_> = self
                .ctx
                .router
                .resources(contact)
                .into_iter()
                .filter(|r| r.session_id != self.id)
                .collect();
            for r in others {
                let _ = self
                    .ctx
                    .router
                    .deliver(contact, &r.resource, Routed::stanza(stanza.clone()));
            }
        } else {
            self.deliver_to_available(contact, stanza);
        }
    }
}
