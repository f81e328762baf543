//! XEP-0045 multi-user chat, handled on the node of the session that sends
//! the stanza: every node serves every room (see [`crate::muc`]). Joining
//! writes an occupant entry and sends presence to every occupant through
//! the router (which crosses nodes durably); a groupchat message is
//! archived once (as a room record) and then routed to each occupant's
//! session. Live ordering: each sender's messages reach every occupant in
//! the order sent; messages of different senders may interleave
//! differently for different occupants. The archive's order (and so the
//! history and MUC MAM) is one order for everyone.

use super::Session;
use crate::muc::{self, Affiliation, Occupant, Role, RoomConfig};
use crate::ns;
use crate::router::Routed;
use crate::xml::{self, ElementExt};
use chorus_core::archive::{ArchiveRecord, MamQuery, RecordKind};
use minidom::Element;

mod admin;
mod forms;
mod messages;
mod occupancy;

use forms::{apply_form, config_form};

/// History sent on join when the client does not say.
const HISTORY_DEFAULT: usize = 20;
/// Longest nickname, in bytes.
const NICK_BYTES_MAX: usize = 128;

/// Status codes of XEP-0045.
mod status {
    pub const NON_ANONYMOUS: u16 = 100;
    pub const CONFIG_CHANGED: u16 = 104;
    pub const SELF: u16 = 110;
    pub const CREATED: u16 = 201;
    pub const BANNED: u16 = 301;
    pub const NEW_NICK: u16 = 303;
    pub const KICKED: u16 = 307;
    pub const REMOVED_AFFILIATION: u16 = 321;
    pub const SHUTDOWN: u16 = 332;
}

/// How one occupant appears in a presence.
struct View<'a> {
    occupant: &'a Occupant,
    affiliation: Affiliation,
    role: Role,
    show_jid: bool,
    unavailable: bool,
    codes: &'a [u16],
    extra: Option<Element>,
}

impl Session {
    fn muc_jid(&self, room: &str) -> String {
        format!("{room}@{}", self.ctx.config.muc_domain())
    }

    /// Sends a stanza to an occupant's session, wherever it is.
    pub(in crate::session) fn send_to_occupant(&mut self, full: &str, el: Element) {
        if full == self.full() {
            return self.send(el);
        }
        let Ok(j) = jid::FullJid::new(full) else { return };
        let user = j.node().map(|n| n.to_string()).unwrap_or_default();
        let _ = self
            .ctx
            .router
            .deliver(&user, j.resource().as_str(), Routed::stanza(el));
    }

    fn occupant_presence(&self, room_jid: &str, to: &str, v: View<'_>) -> Element {
        let mut p = xml::new("presence", ns::CLIENT)
            .with_attr("from", format!("{room_jid}/{}", v.occupant.nick))
            .with_attr("to", to);
        if v.unavailable {
            p = p.with_attr("type", "unavailable");
        } else if let Ok(stored) = crate::parser::parse_frame(v.occupant.presence.as_bytes(), 64 * 1024, 16) {
            for c in stored.children() {
                p.append_child(c.clone());
            }
        }
        let mut item = xml::new("item", ns::MUC_USER)
            .with_attr("affiliation", v.affiliation.as_str())
            .with_attr("role", v.role.as_str());
        if v.show_jid {
            item = item.with_attr("jid", v.occupant.jid.clone());
        }
        if let Some(e) = v.extra {
            item.append_child(e);
        }
        let mut x = xml::new("x", ns::MUC_USER).with_child(item);
        for c in v.codes {
            x.append_child(xml::new("status", ns::MUC_USER).with_attr("code", c.to_string()));
        }
        p.with_child(x)
    }

    /// Presence (or leaving) sent to a room or one of its nicks.
    pub(super) fn muc_presence(&mut self, el: Element, room: Option<String>, nick: Option<String>) {
        let Some(room) = room else { return };
        let typ = el.attr("type").map(str::to_owned);
        match typ.as_deref() {
            Some("unavailable") => self.muc_leave(&room, &[], None),
            None => match nick {
                None => self.send(xml::error_reply(&el, "modify", "jid-malformed")),
                Some(nick) => match self.rooms.get(&room).cloned() {
                    Some(current) if current == nick => self.muc_update_presence(&room, &el),
                    Some(_) => self.muc_change_nick(&room, &nick, &el),
                    None => self.muc_join(&room, &nick, &el),
                },
            },
            _ => {}
        }
    }

    /// An IQ to the service, a room or an occupant.
    /// An IQ to an occupant's JID. XEP-0410: a client pings its own
    /// occupant JID to learn whether it is still in the room, and reads
    /// `not-acceptable` as "not joined" (every other error as "joined"), so
    /// a session that is not an occupant, by the room's shared state, must
    /// get exactly that; its own ping is answered here (the optimization
    /// the room advertises). IQs between occupants are not relayed.
    fn occupant_iq(&mut self, iq: &Element, room: &str, nick: &str, payload: &Element) {
        let me = self.full();
        let mine = muc::occupants(&self.ctx, room).into_iter().find(|o| o.jid == me);
        match mine {
            None => self.send(xml::error_reply(iq, "cancel", "not-acceptable")),
            Some(o) if o.nick == nick && payload.is("ping", ns::PING) => self.send(xml::iq_result(iq)),
            Some(_) => self.send(xml::error_reply(iq, "cancel", "service-unavailable")),
        }
    }

    pub(super) fn muc_iq(&mut self, iq: &Element, typ: &str, room: Option<String>, nick: Option<String>) {
        if typ != "get" && typ != "set" {
            return;
        }
        let get = typ == "get";
        let Some(payload) = iq.children().next().cloned() else {
            return self.send(xml::error_reply(iq, "modify", "bad-request"));
        };
        let Some(room) = room else {
            return match (payload.name(), payload.ns().as_str()) {
                ("query", ns::DISCO_INFO) if get => self.muc_service_info(iq),
                ("query", ns::DISCO_ITEMS) if get => self.muc_service_items(iq),
                ("ping", ns::PING) => self.send(xml::iq_result(iq)),
                _ => self.send(xml::error_reply(iq, "cancel", "service-unavailable")),
            };
        };
        if let Some(nick) = nick {
            return self.occupant_iq(iq, &room, &nick, &payload);
        }
        let Some(cfg) = muc::room(&self.ctx, &room) else {
            return self.send(xml::error_reply(iq, "cancel", "item-not-found"));
        };
        let aff = muc::affiliation(&self.ctx, &room, &self.bare());
        match (payload.name(), payload.ns().as_str()) {
            ("query", ns::DISCO_INFO) if get => self.muc_room_info(iq, &room, &cfg),
            ("query", ns::DISCO_ITEMS) if get => {
                self.send(xml::iq_result(iq).with_child(xml::new("query", ns::DISCO_ITEMS)))
            }
            ("ping", ns::PING) => self.send(xml::iq_result(iq)),
            ("query", ns::MUC_OWNER) => {
                if aff != Affiliation::Owner {
                    return self.send(xml::error_reply(iq, "auth", "forbidden"));
                }
                if get {
                    let form = config_form(&cfg);
                    self.send(
                        xml::iq_result(iq).with_child(xml::new("query", ns::MUC_OWNER).with_child(form)),
                    );
                } else {
                    self.muc_owner_set(iq, &room, cfg, &payload);
                }
            }
            ("query", ns::MUC_ADMIN) if get => self.muc_admin_get(iq, &room, aff, &payload),
            ("query", ns::MUC_ADMIN) => self.muc_admin_set(iq, &room, &cfg, aff, &payload),
            ("query" | "metadata", ns::MAM) if self.ctx.archive.enabled() => {
                self.room_mam_iq(iq, &payload, &room, &cfg)
            }
            _ => self.send(xml::error_reply(iq, "cancel", "service-unavailable")),
        }
    }
}

/// A refused join: the error carries the MUC element back, as XEP-0045's
/// examples show and clients expect to match it to their join.
fn join_error(el: &Element, typ: &str, condition: &str) -> Element {
    xml::error_reply(el, typ, condition).with_child(xml::new("x", ns::MUC))
}

/// Tells local occupants which sessions on other nodes are gone (their
/// node's lease lapsed or it restarted), in one pass over the rooms
/// however many sessions went. Every node does this for its own
/// occupants; the entries themselves are left for the sessions' node to
/// remove when it starts again, so no node's notice depends on another's
/// timing.
pub fn occupants_gone(ctx: &crate::context::Context, gone: &[String]) {
    if gone.is_empty() || !ctx.config.muc.enabled {
        return;
    }
    let gone: std::collections::HashSet<&str> = gone.iter().map(String::as_str).collect();
    for (room, _) in ctx.store.rooms().unwrap_or_default() {
        let all = muc::all_occupants(ctx, &room);
        let left: Vec<&Occupant> = all.iter().filter(|o| gone.contains(o.jid.as_str())).collect();
        if left.is_empty() {
            continue;
        }
        let room_jid = format!("{room}@{}", ctx.config.muc_domain());
        let cfg = muc::room(ctx, &room).unwrap_or_default();
        for o in muc::occupants(ctx, &room) {
            let Ok(j) = jid::FullJid::new(&o.jid) else {
                continue;
            };
            let user = j.node().map(|n| n.to_string()).unwrap_or_default();
            let local = ctx
                .router
                .resources(&user)
                .iter()
                .any(|r| r.resource == j.resource().as_str() && r.node.is_none());
            if !local {
                continue;
            }
            for g in &left {
                let aff = muc::affiliation(ctx, &room, g.bare());
                let mut item = xml::new("item", ns::MUC_USER)
                    .with_attr("affiliation", aff.as_str())
                    .with_attr("role", "none");
                if cfg.non_anonymous || o.role() == Role::Moderator {
                    item = item.with_attr("jid", g.jid.clone());
                }
                let p = xml::new("presence", ns::CLIENT)
                    .with_attr("from", format!("{room_jid}/{}", g.nick))
                    .with_attr("to", o.jid.clone())
                    .with_attr("type", "unavailable")
                    .with_child(xml::new("x", ns::MUC_USER).with_child(item).with_child(
                        xml::new("status", ns::MUC_USER).with_attr("code", status::SHUTDOWN.to_string()),
                    ));
                let _ = ctx
                    .router
                    .deliver(&user, j.resource().as_str(), Routed::stanza(p));
            }
        }
    }
}

/// The distinct bare JIDs (accounts) of a room's occupants.
fn occupant_accounts(occupants: &[Occupant]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for o in occupants {
        let b = chorus_core::archive::bare(&o.jid).to_owned();
        if !out.contains(&b) {
            out.push(b);
        }
    }
    out
}
