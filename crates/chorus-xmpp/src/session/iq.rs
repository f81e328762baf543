//! IQ handling: the server's own services (disco, ping, version, time,
//! vCard, blocking, carbons, registration) and routing IQs between users.

use super::Session;
use super::message::Target;
use crate::ns;
use crate::router::Routed;
use crate::xml::{self, ElementExt};
use chorus_core::credentials::Credentials;
use minidom::Element;

/// Features the server answers, advertised in disco#info. Every entry has a
/// handler in this module (or in the stream negotiation).
const SERVER_FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::DISCO_ITEMS,
    ns::PING,
    ns::VERSION,
    ns::TIME,
    ns::VCARD,
    ns::BLOCKING,
    ns::CARBONS,
    ns::ROSTER,
    ns::SM,
    ns::CSI,
    ns::LAST,
    ns::PRIVATE,
    "msgoffline",
];

/// What an account's PEP service does (XEP-0163 on XEP-0060), advertised
/// on the account's disco#info; each has its handler in `session/pep`.
const PEP_FEATURES: &[&str] = &[
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#multi-items",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#presence-notifications",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-default",
    "http://jabber.org/protocol/pubsub#retrieve-items",
];

/// The least time between two password changes on one session.
const PASSWORD_CHANGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

impl Session {
    pub(super) fn on_iq(&mut self, iq: Element) {
        let typ = iq.attr("type").unwrap_or_default().to_owned();
        if !matches!(typ.as_str(), "get" | "set" | "result" | "error") || iq.attr("id").is_none() {
            return self.send(xml::error_reply(&iq, "modify", "bad-request"));
        }
        if matches!(typ.as_str(), "result" | "error") && self.on_caps_reply(&iq) {
            return;
        }
        let to = iq.attr("to").map(str::to_owned);
        if self.is_upload_service(to.as_deref()) {
            return self.on_upload_iq(&iq, &typ);
        }
        let own_bare = to.as_deref() == Some(self.bare().as_str());
        match self.target(to.as_deref()) {
            Target::Muc { room, nick } => self.muc_iq(&iq, &typ, room, nick),
            Target::Component(domain) => self.route_to_component(&domain, iq),
            Target::Remote => {
                if typ == "get" || typ == "set" {
                    self.send(xml::error_reply(&iq, "cancel", "remote-server-not-found"));
                }
            }
            Target::Server => self.server_iq(&iq, &typ),
            Target::Local { user, resource: None } => {
                let disco = typ == "get"
                    && iq
                        .children()
                        .next()
                        .is_some_and(|p| p.is("query", ns::DISCO_INFO));
                if own_bare && disco {
                    self.account_disco_info(&iq, true)
                } else if own_bare {
                    self.server_iq(&iq, &typ)
                } else {
                    self.bare_iq(&iq, &typ, &user)
                }
            }
            Target::Local {
                user,
                resource: Some(r),
            } => self.route_iq(iq, &typ, &user, &r),
        }
    }

    fn route_iq(&mut self, iq: Element, typ: &str, user: &str, resource: &str) {
        let request = typ == "get" || typ == "set";
        if self.blocks(self.user(), iq.attr("to").unwrap_or_default()) {
            if request {
                self.blocked_by_sender_error(&iq);
            }
            return;
        }
        if self.blocks(user, &self.full()) {
            if request {
                self.send(xml::error_reply(&iq, "cancel", "service-unavailable"));
            }
            return;
        }
        if self
            .ctx
            .router
            .deliver(user, resource, Routed::stanza(iq.clone()))
            .is_err()
            && request
        {
            self.send(xml::error_reply(&iq, "cancel", "service-unavailable"));
        }
    }

    /// An IQ to another user's bare JID is answered by the server on the
    /// account's behalf (RFC 6121 section 8.5.1).
    fn bare_iq(&mut self, iq: &Element, typ: &str, user: &str) {
        if typ != "get" && typ != "set" {
            return;
        }
        let exists = self.account_exists(user);
        if !exists || self.blocks(user, &self.full()) {
            return self.send(xml::error_reply(iq, "cancel", "service-unavailable"));
        }
        let payload = iq.children().next().cloned();
        match payload {
            Some(p) if p.is("vCard", ns::VCARD) && typ == "get" => self.vcard_get(iq, user),
            Some(p) if p.is("ping", ns::PING) => self.send(xml::iq_result(iq)),
            Some(p) if p.ns() == ns::MAM => self.send(xml::error_reply(iq, "auth", "forbidden")),
            Some(p) if p.is("query", ns::DISCO_INFO) && typ == "get" => self.account_disco_info(iq, false),
            Some(p) if p.is("query", ns::DISCO_ITEMS) && typ == "get" => self.account_disco_items(iq, user),
            Some(p) if p.is("pubsub", ns::PUBSUB) && typ == "get" => self.on_pubsub(iq, &p, user, true),
            Some(p) if p.is("query", ns::LAST) && typ == "get" => self.last_activity_account(iq, user),
            Some(p) if p.ns() == ns::PUBSUB || p.ns() == ns::PUBSUB_OWNER => {
                self.send(xml::error_reply(iq, "auth", "forbidden"))
            }
            _ => self.send(xml::error_reply(iq, "cancel", "service-unavailable")),
        }
    }

    /// disco#info of an account (XEP-0030 `account/registered`): what its
    /// bare JID answers; the user's own also names the archive kept there
    /// (XEP-0313 is queried at the user's own bare JID).
    fn account_disco_info(&mut self, iq: &Element, own: bool) {
        let q = iq.children().next();
        if q.is_some_and(|q| q.attr("node").is_some()) {
            return self.send(xml::error_reply(iq, "cancel", "item-not-found"));
        }
        let identity = |category: &str, typ: &str| {
            xml::new("identity", ns::DISCO_INFO)
                .with_attr("category", category)
                .with_attr("type", typ)
        };
        let mut query = xml::new("query", ns::DISCO_INFO)
            .with_child(identity("account", "registered"))
            .with_child(identity("pubsub", "pep"));
        let mut features = vec![ns::DISCO_INFO, ns::DISCO_ITEMS, ns::PUBSUB, ns::LAST];
        features.extend(PEP_FEATURES);
        if own {
            features.extend([
                ns::BOOKMARKS2_COMPAT,
                ns::BOOKMARKS2_COMPAT_PEP,
                ns::PEP_VCARD_CONVERSION,
            ]);
        }
        if own && self.ctx.config.push.enabled {
            features.push(crate::push::NS_PUSH);
        }
        if own && self.ctx.archive.enabled() {
            features.extend([ns::MAM, ns::MAM_EXTENDED, ns::SID, ns::FULLTEXT]);
        }
        for f in features {
            query.append_child(xml::new("feature", ns::DISCO_INFO).with_attr("var", f));
        }
        self.send(xml::iq_result(iq).with_child(query));
    }

    fn server_iq(&mut self, iq: &Element, typ: &str) {
        if typ != "get" && typ != "set" {
            return;
        }
        let Some(payload) = iq.children().next().cloned() else {
            return self.send(xml::error_reply(iq, "modify", "bad-request"));
        };
        let get = typ == "get";
        if self.account_iq(iq, &payload, get) {
            return;
        }
        match (payload.name(), payload.ns().as_str()) {
            ("query", ns::LAST) if get => self.last_activity_server(iq),
            ("query", ns::ROSTER) => self.on_roster_iq(iq, &payload),
            ("query", ns::DISCO_INFO) if get => self.disco_info(iq, &payload),
            ("query", ns::DISCO_ITEMS) if get => {
                let mut items = xml::new("query", ns::DISCO_ITEMS);
                if self.ctx.config.muc.enabled && payload.attr("node").is_none() {
                    items.append_child(
                        xml::new("item", ns::DISCO_ITEMS)
                            .with_attr("jid", self.ctx.config.muc_domain())
                            .with_attr("name", "Chorus rooms"),
                    );
                }
                if self.ctx.config.upload.enabled && payload.attr("node").is_none() {
                    items.append_child(
                        xml::new("item", ns::DISCO_ITEMS)
                            .with_attr("jid", self.ctx.config.upload_domain())
                            .with_attr("name", "Chorus file sharing"),
                    );
                }
                self.send(xml::iq_result(iq).with_child(items))
            }
            ("ping", ns::PING) => self.send(xml::iq_result(iq)),
            ("query", ns::SEARCH) => self.on_search(iq, &payload, get),
            ("query", ns::VERSION) if get => {
                let q = xml::new("query", ns::VERSION)
                    .with_child(xml::new("name", ns::VERSION).with_text("Chorus"))
                    .with_child(xml::new("version", ns::VERSION).with_text(env!("CARGO_PKG_VERSION")));
                self.send(xml::iq_result(iq).with_child(q));
            }
            ("time", ns::TIME) if get => {
                let t = xml::new("time", ns::TIME)
                    .with_child(xml::new("tzo", ns::TIME).with_text("+00:00"))
                    .with_child(
                        xml::new("utc", ns::TIME)
                            .with_text(chorus_core::time::xep0082(chorus_core::time::now_millis())),
                    );
                self.send(xml::iq_result(iq).with_child(t));
            }
            ("vCard", ns::VCARD) if get => {
                let user = self.user().to_owned();
                self.vcard_get(iq, &user)
            }
            ("vCard", ns::VCARD) => self.vcard_set(iq, &payload),
            ("blocklist", ns::BLOCKING) if get => self.blocklist_get(iq),
            ("block" | "unblock", ns::BLOCKING) if !get => self.block_set(iq, &payload),
            ("enable" | "disable", ns::CARBONS) if !get => {
                let on = payload.name() == "enable";
                self.carbons = on;
                let (user, res, id) = (
                    self.user().to_owned(),
                    self.resource.clone().unwrap_or_default(),
                    self.id,
                );
                self.ctx.router.update(&user, &res, id, &mut |i| i.carbons = on);
                self.send(xml::iq_result(iq));
            }
            ("session", ns::SESSION) if !get => self.send(xml::iq_result(iq)),
            ("query" | "prefs" | "metadata", ns::MAM) if self.ctx.archive.enabled() => {
                self.on_mam_iq(iq, &payload, get)
            }
            ("query", ns::REGISTER) => self.register_authenticated(iq, &payload, get),
            ("services" | "credentials", ns::EXTDISCO) if get => self.on_extdisco(iq, &payload),
            _ => self.send(xml::error_reply(iq, "cancel", "service-unavailable")),
        }
    }

    /// What the user's own account answers (no 'to', or the user's bare
    /// JID): PEP, private storage, push, last activity, its disco#items.
    /// False if `payload` is none of those.
    fn account_iq(&mut self, iq: &Element, payload: &Element, get: bool) -> bool {
        let to_account = iq.attr("to").is_none_or(|t| t == self.bare());
        let to_bare = iq.attr("to") == Some(self.bare().as_str());
        let user = self.user().to_owned();
        match (payload.name(), payload.ns().as_str()) {
            ("pubsub", ns::PUBSUB | ns::PUBSUB_OWNER) if to_account => {
                self.on_pubsub(iq, payload, &user, get)
            }
            ("query", ns::PRIVATE) if to_account => self.on_private(iq, payload, get),
            (_, crate::push::NS_PUSH) if !get && to_account && Self::is_push_op(payload) => {
                self.on_push(iq, payload)
            }
            ("query", ns::LAST) if get && to_bare => self.last_activity_account(iq, &user),
            ("query", ns::DISCO_ITEMS) if get && to_bare => self.account_disco_items(iq, &user),
            _ => return false,
        }
        true
    }

    fn disco_info(&mut self, iq: &Element, q: &Element) {
        let query = self.server_disco_query();
        let caps_node = crate::caps::ver_of(&query).map(|v| format!("{}#{v}", crate::caps::CHORUS_CAPS_NODE));
        match q.attr("node") {
            None => self.send(xml::iq_result(iq).with_child(query)),
            Some(n) if Some(n) == caps_node.as_deref() => {
                self.send(xml::iq_result(iq).with_child(query.with_attr("node", n)))
            }
            Some(_) => self.send(xml::error_reply(iq, "cancel", "item-not-found")),
        }
    }

    /// The server's `<c/>` for stream features (XEP-0115).
    pub(super) fn server_caps(&self) -> Option<Element> {
        crate::caps::element_for(&self.server_disco_query())
    }

    /// The PEP nodes of `owner` that the requester may read (XEP-0060
    /// section 5.2), as disco#items of the account.
    fn account_disco_items(&mut self, iq: &Element, owner: &str) {
        let me = self.user().to_owned();
        let jid = format!("{owner}@{}", self.ctx.domain);
        let mut items = xml::new("query", ns::DISCO_ITEMS);
        for (node, json) in self.ctx.store.pep_nodes(owner).unwrap_or_default() {
            let Ok(cfg) = serde_json::from_str::<crate::pep::NodeConfig>(&json) else {
                continue;
            };
            if self.pep_may_read(owner, &me, &cfg) {
                items.append_child(
                    xml::new("item", ns::DISCO_ITEMS)
                        .with_attr("jid", jid.clone())
                        .with_attr("node", node),
                );
            }
        }
        self.send(xml::iq_result(iq).with_child(items));
    }

    fn server_disco_query(&self) -> Element {
        let mut query = xml::new("query", ns::DISCO_INFO).with_child(
            xml::new("identity", ns::DISCO_INFO)
                .with_attr("category", "server")
                .with_attr("type", "im")
                .with_attr("name", "Chorus"),
        );
        // jabber:iq:register answers every logged-in user (password
        // change); creating accounts is the stream feature, only when
        // registration is enabled.
        let mut features: Vec<&str> = SERVER_FEATURES.to_vec();
        features.push(ns::REGISTER);
        if !self.ctx.config.extdisco.services.is_empty() {
            features.push(ns::EXTDISCO);
        }
        if self.ctx.archive.enabled() {
            features.extend([ns::MAM, ns::MAM_EXTENDED, ns::SID, ns::FULLTEXT]);
        }
        if self.ctx.people.get().is_some() {
            features.push(ns::SEARCH);
        }
        for f in features {
            query.append_child(xml::new("feature", ns::DISCO_INFO).with_attr("var", f));
        }
        if let Some(form) = contact_form(&self.ctx.config.contacts) {
            query.append_child(form);
        }
        query
    }

    fn vcard_get(&mut self, iq: &Element, user: &str) {
        let stored = self.ctx.store.vcard(user);
        let vcard = match stored {
            Ok(Some(x)) => {
                crate::parser::parse_frame(x.as_bytes(), self.ctx.config.limits.vcard_bytes_max * 2, 64).ok()
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot read vCard");
                return self.send(xml::error_reply(iq, "wait", "internal-server-error"));
            }
        };
        let vcard = vcard.unwrap_or_else(|| xml::new("vCard", ns::VCARD));
        let vcard = self.vcard_with_avatar(user, vcard);
        self.send(xml::iq_result(iq).with_child(vcard));
    }

    fn vcard_set(&mut self, iq: &Element, vcard: &Element) {
        if iq.attr("to").is_some_and(|t| t != self.bare()) {
            return self.send(xml::error_reply(iq, "auth", "forbidden"));
        }
        let user = self.user().to_owned();
        // A directory account keeps the directory's fields (the size is
        // checked after: a card sent back whole carries the directory's
        // photo, which is not the person's to count).
        let stored = self.ctx.store.vcard(&user).ok().flatten();
        let vcard = super::avatar::keep_read_only(stored.as_deref(), vcard);
        let text = vcard.to_xml();
        if text.len() > self.ctx.config.limits.vcard_bytes_max {
            return self.send(xml::error_reply(iq, "modify", "not-acceptable"));
        }
        match self.ctx.store.set_vcard(&user, &text) {
            Ok(()) => {
                self.send(xml::iq_result(iq));
                self.avatar_from_vcard(&vcard);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store vCard");
                self.send(xml::error_reply(iq, "wait", "internal-server-error"))
            }
        }
    }

    fn blocklist_get(&mut self, iq: &Element) {
        let list = self.ctx.store.blocklist(self.user()).unwrap_or_default();
        let mut q = xml::new("blocklist", ns::BLOCKING);
        for j in list {
            q.append_child(xml::new("item", ns::BLOCKING).with_attr("jid", j));
        }
        self.send(xml::iq_result(iq).with_child(q));
    }

    fn block_set(&mut self, iq: &Element, payload: &Element) {
        let block = payload.name() == "block";
        let mut jids = Vec::new();
        for item in payload.children().filter(|c| c.is("item", ns::BLOCKING)) {
            match item.attr("jid").and_then(|j| jid::Jid::new(j).ok()) {
                Some(j) => jids.push(j.to_string()),
                None => return self.send(xml::error_reply(iq, "modify", "jid-malformed")),
            }
        }
        if block && jids.is_empty() {
            return self.send(xml::error_reply(iq, "modify", "bad-request"));
        }
        let user = self.user().to_owned();
        if block {
            let current = self.ctx.store.blocklist(&user).unwrap_or_default().len();
            if current + jids.len() > self.ctx.config.limits.blocklist_items_max {
                return self.send(xml::error_reply(iq, "wait", "resource-constraint"));
            }
            // Blocked contacts stop seeing us at once (XEP-0191 section 3.3).
            for j in &jids {
                self.send_unavailable_to(j);
            }
        }
        let result = if !block && jids.is_empty() {
            self.ctx.store.clear_blocklist(&user)
        } else {
            self.ctx.store.set_blocked(&user, &jids, block)
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot change block list");
            return self.send(xml::error_reply(iq, "wait", "internal-server-error"));
        }
        self.send(xml::iq_result(iq));
        let bare = self.bare();
        self.archive_event(&bare, payload);
        // Every resource of the user learns of the change.
        let mut push = xml::new(payload.name(), ns::BLOCKING);
        for j in &jids {
            push.append_child(xml::new("item", ns::BLOCKING).with_attr("jid", j.clone()));
        }
        for r in self.ctx.router.resources(&user) {
            let p = xml::new("iq", ns::CLIENT)
                .with_attr("type", "set")
                .with_attr("id", format!("block-{}", super::random_id()))
                .with_attr("to", format!("{bare}/{}", r.resource))
                .with_child(push.clone());
            if r.session_id == self.id {
                self.send(p);
            } else {
                let _ = self.ctx.router.deliver(&user, &r.resource, Routed::stanza(p));
            }
        }
    }

    fn register_authenticated(&mut self, iq: &Element, q: &Element, get: bool) {
        if get {
            let reply = xml::new("query", ns::REGISTER)
                .with_child(xml::new("registered", ns::REGISTER))
                .with_child(xml::new("username", ns::REGISTER).with_text(self.user().to_owned()));
            return self.send(xml::iq_result(iq).with_child(reply));
        }
        let user = self.user().to_owned();
        if q.has_child("remove", ns::REGISTER) && !self.ctx.config.registration.enabled {
            // Accounts are the administrators' to remove (XEP-0077 3.2).
            return self.send(xml::error_reply(iq, "cancel", "not-allowed"));
        }
        if q.has_child("remove", ns::REGISTER) {
            return match self.ctx.store.remove_account(&user) {
                Ok(_) => {
                    self.send(xml::iq_result(iq));
                    self.stream_error("not-authorized", Some("account removed"));
                }
                Err(_) => self.send(xml::error_reply(iq, "wait", "internal-server-error")),
            };
        }
        // XEP-0077 3.3: a password change names the account it changes.
        let named = q.get_child("username", ns::REGISTER).map(|u| u.text());
        if named.is_some_and(|n| {
            super::auth::normalize_user(&n, &self.ctx.domain).as_deref() != Some(user.as_str())
        }) {
            return self.send(xml::error_reply(iq, "modify", "bad-request"));
        }
        let password = q
            .get_child("password", ns::REGISTER)
            .map(|p| p.text())
            .unwrap_or_default();
        // Each change costs two PBKDF2 derivations: one per session per
        // PASSWORD_CHANGE_INTERVAL is plenty for a person.
        if self
            .password_changed
            .is_some_and(|t| self.now.saturating_duration_since(t) < PASSWORD_CHANGE_INTERVAL)
        {
            return self.send(xml::error_reply(iq, "wait", "resource-constraint"));
        }
        let iterations = self.ctx.config.c2s.scram_iterations;
        match crate::offload::cpu(|| Credentials::from_password_with(&password, iterations)) {
            Ok(c) => match self.ctx.store.set_credentials(&user, &c) {
                Ok(()) => {
                    self.password_changed = Some(self.now);
                    tracing::info!(user = %user, peer = %self.peer, "password changed (XEP-0077)");
                    self.send(xml::iq_result(iq))
                }
                Err(_) => self.send(xml::error_reply(iq, "wait", "internal-server-error")),
            },
            Err(_) => self.send(xml::error_reply(iq, "modify", "not-acceptable")),
        }
    }
}

/// The XEP-0157 `serverinfo` form, if any contact address is configured.
fn contact_form(c: &chorus_core::config::ContactsConfig) -> Option<Element> {
    if c.fields().iter().all(|(_, list)| list.is_empty()) {
        return None;
    }
    let mut x = xml::new("x", ns::DATA).with_attr("type", "result").with_child(
        xml::new("field", ns::DATA)
            .with_attr("var", "FORM_TYPE")
            .with_attr("type", "hidden")
            .with_child(xml::new("value", ns::DATA).with_text("http://jabber.org/network/serverinfo")),
    );
    for (var, list) in c.fields() {
        let mut f = xml::new("field", ns::DATA).with_attr("var", var);
        for a in list {
            f.append_child(xml::new("value", ns::DATA).with_text(a.clone()));
        }
        x.append_child(f);
    }
    Some(x)
}
