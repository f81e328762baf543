//! Message routing (RFC 6121 section 8), offline storage with XEP-0203
//! delays, XEP-0280 carbons and XEP-0191 block checks.

use super::Session;
use super::deferred::Then;
use crate::ns;
use crate::router::{DeliverError, Routed};
use crate::xml::{self, ElementExt};
use chorus_core::archive::{Accepted, ArchiveError, ArchiveRecord, Durable, RecordKind};
use chorus_core::config::ArchiveExclusion;
use chorus_core::store::{OfflineMessage, StoreError};
use minidom::Element;

/// Where a stanza addressed to `to` goes.
pub(super) enum Target {
    /// The server itself.
    Server,
    /// A local account, optionally a specific resource.
    Local { user: String, resource: Option<String> },
    /// Another domain; there is no federation unless configured.
    Remote,
    /// An external component (XEP-0114), by its domain.
    Component(String),
    /// The multi-user chat service, a room, or an occupant.
    Muc {
        /// The room's localpart, if any.
        room: Option<String>,
        /// The occupant's nick, if any.
        nick: Option<String>,
    },
}

fn is_error(el: &Element) -> bool {
    el.attr("type") == Some("error")
}

impl Session {
    pub(super) fn target(&self, to: Option<&str>) -> Target {
        let Some(to) = to else { return Target::Server };
        let Ok(j) = jid::Jid::new(to) else {
            return Target::Remote;
        };
        if j.domain().as_str() != self.ctx.domain {
            if self.ctx.config.muc.enabled && j.domain().as_str() == self.ctx.config.muc_domain() {
                return Target::Muc {
                    room: j.node().map(|n| n.to_string()),
                    nick: j.resource().map(|r| r.to_string()),
                };
            }
            if self.ctx.config.components.serves(j.domain().as_str()) {
                return Target::Component(j.domain().to_string());
            }
            return Target::Remote;
        }
        match j.node() {
            None => Target::Server,
            Some(n) => Target::Local {
                user: n.to_string(),
                resource: j.resource().map(|r| r.to_string()),
            },
        }
    }

    /// Whether `owner` blocks `other` (a JID string) per XEP-0191.
    pub(super) fn blocks(&self, owner: &str, other: &str) -> bool {
        let Ok(j) = jid::Jid::new(other) else { return false };
        let list = match self.ctx.store.blocklist(owner) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot read block list");
                return false;
            }
        };
        if list.is_empty() {
            return false;
        }
        let bare = j.to_bare().to_string();
        let domain = j.domain().to_string();
        list.iter().any(|b| *b == other || *b == bare || *b == domain)
    }

    pub(super) fn account_exists(&self, user: &str) -> bool {
        matches!(self.ctx.store.account_exists(user), Ok(true))
    }

    /// Replies with the XEP-0191 "you blocked them" error.
    pub(super) fn blocked_by_sender_error(&mut self, el: &Element) {
        let mut e = xml::error_reply(el, "cancel", "not-acceptable");
        if let Some(err) = e.get_child_mut("error", ns::CLIENT) {
            err.append_child(xml::new("blocked", ns::BLOCKING_ERRORS));
        }
        self.send(e);
    }

    pub(super) fn on_message(&mut self, el: Element) {
        let to = el.attr("to").map(str::to_owned).unwrap_or_else(|| self.bare());
        let _span = tracing::info_span!("message", %to, kind = el.attr("type").unwrap_or("normal")).entered();
        let mut el = el;
        el.put_attr("to", to.clone());
        if !is_error(&el) && !self.ctx.config.policy.e2e.allowed() && crate::pep::is_encrypted_message(&el) {
            metrics::counter!("chorus_e2e_refused_total").increment(1);
            return self.send(super::pep::e2e_denied(&el, "not-acceptable"));
        }
        match self.target(Some(&to)) {
            Target::Muc { room, nick } => self.muc_message(el, room, nick),
            Target::Component(domain) => {
                // A conversation with a bot or gateway is archived like
                // any other (`archive` stamps the sender's stanza id).
                let own = self.user().to_owned();
                match self.archive(&el, &own) {
                    Ok((archived, None)) => self.route_to_component(&domain, archived),
                    Ok((archived, Some(wait))) => self.defer(
                        wait,
                        Then::Component {
                            archived,
                            original: el,
                            domain,
                        },
                    ),
                    Err(refusal) => self.send(refusal),
                }
            }
            Target::Remote => {
                if !is_error(&el) {
                    self.send(xml::error_reply(&el, "cancel", "remote-server-not-found"));
                }
            }
            Target::Server => {
                if !is_error(&el) && el.attr("type") != Some("headline") {
                    self.send(xml::error_reply(&el, "cancel", "service-unavailable"));
                }
            }
            Target::Local { user, resource } => {
                if self.blocks(self.user(), &to) {
                    if !is_error(&el) {
                        self.blocked_by_sender_error(&el);
                    }
                    return;
                }
                let carbons = carbon_eligible(&el);
                self.route_message(el, user, resource, carbons);
            }
        }
    }

    /// Routes a message from this session to a local user, once its
    /// archive record is durable; if it is accepted (delivered or stored)
    /// and `carbons` is set, the sender's other resources get sent-carbons.
    fn route_message(&mut self, el: Element, user: String, resource: Option<String>, carbons: bool) {
        let typ = el.attr("type").unwrap_or("normal");
        let refusal = if !self.account_exists(&user) {
            (typ != "error" && typ != "headline").then_some("service-unavailable")
        } else if self.blocks(&user, &self.full()) {
            (typ != "error").then_some("service-unavailable")
        } else if typ == "groupchat" {
            Some("service-unavailable")
        } else {
            match self.archive(&el, &user) {
                Ok((archived, Some(wait))) => {
                    let then = Then::Local {
                        archived,
                        original: el,
                        user,
                        resource,
                        carbons,
                    };
                    return self.defer(wait, then);
                }
                Ok((archived, None)) => {
                    if self.deliver_archived(&archived, &user, resource.as_deref()) && carbons {
                        self.send_sent_carbons(&el);
                    }
                    return;
                }
                Err(reply) => return self.send(reply),
            }
        };
        if let Some(condition) = refusal {
            self.send(xml::error_reply(&el, "cancel", condition));
        }
    }

    /// Delivers a message whose record (if any) is durable to a local user.
    /// Returns whether it was accepted (delivered or stored).
    pub(super) fn deliver_archived(&mut self, el: &Element, user: &str, resource: Option<&str>) -> bool {
        let typ = el.attr("type").unwrap_or("normal");
        let resources = self.ctx.router.resources(user);
        if let Some(r) = resource {
            if resources.iter().any(|i| i.resource == r) {
                let delivered = self
                    .ctx
                    .router
                    .deliver(user, r, Routed::stanza(el.clone()))
                    .is_ok();
                if delivered {
                    let _ = crate::push::queued_message(&self.ctx, user, r, el);
                    self.send_received_carbons(el, user, &[r.to_owned()]);
                    return true;
                }
                return self.store_offline(el, user);
            }
            if typ == "headline" || typ == "error" {
                return false;
            }
        }
        let available: Vec<_> = resources
            .iter()
            .filter(|i| i.available && i.priority >= 0)
            .collect();
        let targets: Vec<String> = match typ {
            "headline" => available.iter().map(|i| i.resource.clone()).collect(),
            "error" => return false,
            _ => {
                let top = available.iter().map(|i| i.priority).max();
                available
                    .iter()
                    .filter(|i| Some(i.priority) == top)
                    .map(|i| i.resource.clone())
                    .collect()
            }
        };
        if targets.is_empty() {
            return typ != "headline" && self.store_offline(el, user);
        }
        let mut delivered = Vec::new();
        let mut pushed = false;
        for r in &targets {
            match self.ctx.router.deliver(user, r, Routed::stanza(el.clone())) {
                Ok(()) => {
                    // One push per message, however many parked resources.
                    pushed = pushed || crate::push::queued_message(&self.ctx, user, r, el);
                    delivered.push(r.clone());
                }
                Err(DeliverError::QueueFull | DeliverError::NotFound) => {}
            }
        }
        if delivered.is_empty() {
            return self.store_offline(el, user);
        }
        self.send_received_carbons(el, user, &delivered);
        true
    }

    /// Hands a message to the archive before it is delivered or stored;
    /// returns the message to deliver, carrying its XEP-0359 stanza-id when
    /// the archive assigned one, with the wait for its record's durability
    /// when it is not durable yet (nothing may be delivered before), or the
    /// error to send back.
    fn archive(&self, el: &Element, user: &str) -> Result<(Element, Option<Durable>), Element> {
        // A client must not be able to forge the archive's ids, neither in
        // what is delivered nor in what is archived.
        let el = &self.without_own_stanza_ids(el);
        let cfg = &self.ctx.config.archive;
        let typ = el.attr("type").unwrap_or("normal");
        let body = el.get_child("body", ns::CLIENT).map(|b| b.text());
        let edit = super::edits::edit_of(el);
        // A retraction has no body but is no chat state: it is archived.
        if !self.ctx.archive.enabled()
            || (body.is_none() && edit.is_none() && cfg.excludes(ArchiveExclusion::ChatStates))
            || (typ == "headline" && cfg.excludes(ArchiveExclusion::Headlines))
            || (typ == "error" && cfg.excludes(ArchiveExclusion::Errors))
        {
            return Ok((el.clone(), None));
        }
        let to_bare = format!("{user}@{}", self.ctx.domain);
        let record = ArchiveRecord {
            from: self.full(),
            to: el.attr("to").unwrap_or(&to_bare).to_owned(),
            stamp_ms: chorus_core::time::now_millis(),
            xml: self.archived_with_files(el).to_xml(),
            kind: RecordKind::Message,
            body,
            thread: el.get_child("thread", ns::CLIENT).map(|t| t.text()),
            room: None,
            occupants: Vec::new(),
            msg_id: super::edits::msg_id_of(el),
            edit,
        };
        match self.ctx.archive.append_deferred(record) {
            Ok(Accepted {
                id: Some(id),
                durable,
            }) => {
                let mut out = el.clone();
                out.append_child(
                    xml::new("stanza-id", ns::SID)
                        .with_attr("id", id)
                        .with_attr("by", to_bare),
                );
                Ok((out, durable))
            }
            Ok(Accepted { id: None, durable }) => Ok((el.clone(), durable)),
            Err(ArchiveError::NoQuorum(why)) => {
                tracing::warn!(reason = %why, "strict archive refused a message");
                Err(xml::error_reply(el, "wait", "service-unavailable"))
            }
            Err(e) => {
                tracing::warn!(error = %e, "archive refused a message");
                Err(xml::error_reply(el, "wait", "resource-constraint"))
            }
        }
    }

    /// The message without the XEP-0359 stanza-ids that claim to come from
    /// this service (only it may set those); other entities' ids stay.
    fn without_own_stanza_ids(&self, el: &Element) -> Element {
        xml::without_stanza_ids_by(el, &[&self.ctx.domain, &self.ctx.config.muc_domain()])
    }

    /// Records a subscription or blocking event in the archive (compliance
    /// officers see who subscribed to or blocked whom, and when). Failure to
    /// archive an event is logged, not fatal: the event already happened.
    pub(super) fn archive_event(&self, to: &str, event: &Element) {
        let kind = if event.name() == "presence" {
            RecordKind::Subscription
        } else {
            RecordKind::Blocking
        };
        let cfg = &self.ctx.config.archive;
        if !self.ctx.archive.enabled()
            || (kind == RecordKind::Subscription && cfg.excludes(ArchiveExclusion::Subscriptions))
            || (kind == RecordKind::Blocking && cfg.excludes(ArchiveExclusion::Blocking))
        {
            return;
        }
        let record = ArchiveRecord {
            from: self.full(),
            to: to.to_owned(),
            stamp_ms: chorus_core::time::now_millis(),
            xml: event.to_xml(),
            kind,
            ..ArchiveRecord::default()
        };
        if let Err(e) = self.ctx.archive.append(record) {
            tracing::warn!(error = %e, "archive refused an event");
        }
    }

    /// Keeps a message for an offline user; replies with an error if that
    /// is impossible. Returns whether it was stored.
    pub(super) fn store_offline(&mut self, el: &Element, user: &str) -> bool {
        if !worth_storing(el) {
            return false;
        }
        let msg = OfflineMessage {
            stamp_ms: chorus_core::time::now_millis(),
            xml: el.to_xml(),
        };
        match self
            .ctx
            .store
            .push_offline(user, &msg, self.ctx.config.limits.offline_messages_max)
        {
            Ok(()) => {
                metrics::counter!("chorus_offline_stored_total").increment(1);
                crate::push::offline_message(&self.ctx, user, el);
                true
            }
            Err(StoreError::QuotaExceeded(_)) => {
                self.send(xml::error_reply(el, "wait", "resource-constraint"));
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store offline message");
                self.send(xml::error_reply(el, "wait", "internal-server-error"));
                false
            }
        }
    }

    /// Keeps a stanza this session never got acknowledged, when it ends.
    pub(super) fn store_unacked(&mut self, el: Element) {
        if el.name() != "message" || !worth_storing(&el) {
            return;
        }
        let user = self.user().to_owned();
        let msg = OfflineMessage {
            stamp_ms: chorus_core::time::now_millis(),
            xml: el.to_xml(),
        };
        if let Err(e) = self
            .ctx
            .store
            .push_offline(&user, &msg, self.ctx.config.limits.offline_messages_max)
        {
            tracing::warn!(error = %e, user = %user, "unacknowledged message could not be kept offline");
        }
    }

    /// Delivers the offline queue to this session, oldest first, with delays.
    pub(super) fn deliver_offline(&mut self) {
        let user = self.user().to_owned();
        let msgs = match self.ctx.store.take_offline(&user) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "cannot read offline messages");
                return;
            }
        };
        let limits = &self.ctx.config.limits;
        let (bytes_max, depth_max) = (limits.stanza_bytes_max * 2, limits.xml_depth_max + 4);
        for m in msgs {
            match crate::parser::parse_frame(m.xml.as_bytes(), bytes_max, depth_max) {
                Ok(mut el) => {
                    if !el.has_child("delay", ns::DELAY) {
                        el.append_child(
                            xml::new("delay", ns::DELAY)
                                .with_attr("from", self.ctx.domain.clone())
                                .with_attr("stamp", chorus_core::time::xep0082(m.stamp_ms)),
                        );
                    }
                    self.send(el);
                }
                Err(e) => tracing::error!(error = %e, "dropping unparseable offline message"),
            }
        }
    }

    pub(super) fn send_sent_carbons(&mut self, el: &Element) {
        let me = self.resource.clone().unwrap_or_default();
        let user = self.user().to_owned();
        for r in self.ctx.router.resources(&user) {
            if r.carbons && r.resource != me {
                let c = carbon(
                    "sent",
                    el,
                    &self.bare(),
                    &format!("{}/{}", self.bare(), r.resource),
                );
                let _ = self.ctx.router.deliver(&user, &r.resource, Routed::stanza(c));
            }
        }
    }

    fn send_received_carbons(&mut self, el: &Element, user: &str, delivered: &[String]) {
        if !carbon_eligible(el) {
            return;
        }
        let bare = format!("{user}@{}", self.ctx.domain);
        for r in self.ctx.router.resources(user) {
            if r.carbons && r.available && !delivered.contains(&r.resource) {
                let c = carbon("received", el, &bare, &format!("{bare}/{}", r.resource));
                let _ = self.ctx.router.deliver(user, &r.resource, Routed::stanza(c));
            }
        }
    }
}

/// XEP-0280 section 6: which messages are copied.
fn carbon_eligible(el: &Element) -> bool {
    if el.has_child("private", ns::CARBONS) || el.has_child("no-copy", ns::HINTS) {
        return false;
    }
    match el.attr("type").unwrap_or("normal") {
        "chat" => true,
        "normal" => el.has_child("body", ns::CLIENT),
        _ => false,
    }
}

/// Whether a message is worth keeping offline (XEP-0160).
fn worth_storing(el: &Element) -> bool {
    el.has_child("body", ns::CLIENT) || el.has_child("subject", ns::CLIENT)
}

fn carbon(kind: &str, el: &Element, from: &str, to: &str) -> Element {
    let forwarded = xml::new("forwarded", ns::FORWARD).with_child(el.clone());
    xml::new("message", ns::CLIENT)
        .with_attr("from", from)
        .with_attr("to", to)
        .with_attr("type", el.attr("type").unwrap_or("normal"))
        .with_child(xml::new(kind, ns::CARBONS).with_child(forwarded))
}
