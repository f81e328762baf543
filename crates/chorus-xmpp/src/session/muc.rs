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
    fn send_to_occupant(&mut self, full: &str, el: Element) {
        if full == self.full() {
            return self.send(el);
        }
        let Ok(j) = jid::FullJid::new(full) else { return };
        let user = j.node().map(|n| n.to_string()).unwrap_or_default();
        let _ = self
            .ctx
            .router
            .deliver(&user, j.resource().as_str(), Routed::Stanza(el));
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

    /// The presence payload an occupant shows (without the MUC elements).
    fn presence_payload(el: &Element) -> String {
        let mut p = xml::new("presence", ns::CLIENT);
        for c in el.children() {
            if c.ns() != ns::MUC && c.ns() != ns::MUC_USER {
                p.append_child(c.clone());
            }
        }
        p.to_xml()
    }

    fn muc_join(&mut self, room: &str, nick: &str, el: &Element) {
        let room_jid = self.muc_jid(room);
        let (bare, full) = (self.bare(), self.full());
        if nick.is_empty() || nick.len() > NICK_BYTES_MAX {
            return self.send(join_error(el, "modify", "jid-malformed"));
        }
        let mut created = false;
        let cfg = match muc::room(&self.ctx, room) {
            Some(c) => c,
            None => {
                let muc_cfg = &self.ctx.config.muc;
                if !muc_cfg.create {
                    return self.send(join_error(el, "cancel", "not-allowed"));
                }
                if self.ctx.store.rooms().map(|r| r.len()).unwrap_or(0) >= muc_cfg.rooms_max {
                    return self.send(join_error(el, "wait", "resource-constraint"));
                }
                let c = RoomConfig {
                    name: room.to_owned(),
                    locked: true,
                    ..RoomConfig::default()
                };
                if !muc::save_room(&self.ctx, room, &c)
                    || self
                        .ctx
                        .store
                        .set_room_affiliation(room, &bare, Some(Affiliation::Owner.as_str()))
                        .is_err()
                {
                    return self.send(join_error(el, "wait", "internal-server-error"));
                }
                created = true;
                c
            }
        };
        let aff = muc::affiliation(&self.ctx, room, &bare);
        if cfg.locked && aff != Affiliation::Owner {
            return self.send(join_error(el, "cancel", "item-not-found"));
        }
        if aff == Affiliation::Outcast {
            return self.send(join_error(el, "auth", "forbidden"));
        }
        if cfg.members_only && aff < Affiliation::Member {
            return self.send(join_error(el, "auth", "registration-required"));
        }
        let given = el
            .get_child("x", ns::MUC)
            .and_then(|x| x.get_child("password", ns::MUC))
            .map(|p| p.text());
        if cfg.password.as_ref().is_some_and(|p| Some(p) != given.as_ref()) {
            return self.send(join_error(el, "auth", "not-authorized"));
        }
        let occupants = muc::occupants(&self.ctx, room);
        if occupants.iter().any(|o| o.nick == nick && o.bare() != bare) {
            return self.send(join_error(el, "cancel", "conflict"));
        }
        let limit = cfg.max_users.min(self.ctx.config.muc.occupants_max);
        if occupants.len() >= limit && aff < Affiliation::Admin {
            return self.send(join_error(el, "wait", "service-unavailable"));
        }
        let role = aff.default_role(cfg.moderated);
        let me = Occupant {
            nick: nick.to_owned(),
            jid: full.clone(),
            role: role.as_str().to_owned(),
            presence: Self::presence_payload(el),
            node: self.ctx.config.cluster.node_id.clone(),
        };
        muc::save_occupant(&self.ctx, room, &full, Some(&me));
        self.rooms.insert(room.to_owned(), nick.to_owned());
        let affs = muc::affiliations(&self.ctx, room);
        let aff_of = |b: &str| {
            affs.iter()
                .find(|(j, _)| j == b)
                .map_or(Affiliation::None, |(_, a)| *a)
        };
        // Existing occupants to the newcomer (one presence per nick).
        let mut seen = std::collections::HashSet::new();
        for o in occupants.iter().filter(|o| o.jid != full) {
            if !seen.insert(o.nick.clone()) {
                continue;
            }
            let p = self.occupant_presence(
                &room_jid,
                &full,
                View {
                    occupant: o,
                    affiliation: aff_of(o.bare()),
                    role: o.role(),
                    show_jid: cfg.non_anonymous || role == Role::Moderator,
                    unavailable: false,
                    codes: &[],
                    extra: None,
                },
            );
            self.send(p);
        }
        // The newcomer to everyone else, unless the nick is already there
        // (another session of the same user).
        let nick_present = occupants.iter().any(|o| o.nick == nick && o.jid != full);
        if !nick_present {
            for o in occupants.iter().filter(|o| o.jid != full) {
                let p = self.occupant_presence(
                    &room_jid,
                    &o.jid,
                    View {
                        occupant: &me,
                        affiliation: aff,
                        role,
                        show_jid: cfg.non_anonymous || o.role() == Role::Moderator,
                        unavailable: false,
                        codes: &[],
                        extra: None,
                    },
                );
                self.send_to_occupant(&o.jid.clone(), p);
            }
        }
        let mut codes = vec![status::SELF];
        if cfg.non_anonymous {
            codes.push(status::NON_ANONYMOUS);
        }
        if created {
            codes.push(status::CREATED);
        }
        let own = self.occupant_presence(
            &room_jid,
            &full,
            View {
                occupant: &me,
                affiliation: aff,
                role,
                show_jid: true,
                unavailable: false,
                codes: &codes,
                extra: None,
            },
        );
        self.send(own);
        if !created {
            self.send_history(room, &room_jid, el);
        }
        let mut subject = xml::new("message", ns::CLIENT)
            .with_attr("type", "groupchat")
            .with_attr("id", super::random_id())
            .with_attr("to", full)
            .with_child(xml::new("subject", ns::CLIENT).with_text(cfg.subject.clone()));
        subject = if cfg.subject_by.is_empty() {
            subject.with_attr("from", room_jid)
        } else {
            subject.with_attr("from", format!("{room_jid}/{}", cfg.subject_by))
        };
        self.send(subject);
    }

    /// The room's discussion history from the archive, as the client asked
    /// (`maxstanzas`, `seconds`, `since`), capped by `muc.history_max`.
    fn send_history(&mut self, room: &str, room_jid: &str, el: &Element) {
        let h = el
            .get_child("x", ns::MUC)
            .and_then(|x| x.get_child("history", ns::MUC));
        let mut max = h
            .and_then(|h| h.attr("maxstanzas"))
            .and_then(|m| m.parse::<usize>().ok())
            .unwrap_or(HISTORY_DEFAULT);
        max = max.min(self.ctx.config.muc.history_max);
        if max == 0 || !self.ctx.archive.enabled() {
            return;
        }
        let now = chorus_core::time::now_millis();
        let start_ms = h
            .and_then(|h| h.attr("seconds"))
            .and_then(|s| s.parse::<u64>().ok())
            .map(|s| now.saturating_sub(s * 1000))
            .or_else(|| {
                h.and_then(|h| h.attr("since"))
                    .and_then(chorus_core::time::parse_xep0082)
            });
        let q = MamQuery {
            owner: room_jid.to_owned(),
            start_ms,
            last_page: true,
            max,
            ..MamQuery::default()
        };
        let page = match self.ctx.archive.query(&q) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(room, error = %e, "cannot read room history");
                return;
            }
        };
        let full = self.full();
        for r in page.records {
            let Ok(mut m) = crate::parser::parse_frame(r.xml.as_bytes(), 1 << 20, 32) else {
                continue;
            };
            m.put_attr("to", full.clone());
            m.append_child(
                xml::new("delay", ns::DELAY)
                    .with_attr("stamp", chorus_core::time::xep0082(r.stamp_ms))
                    .with_attr("from", room_jid.to_owned()),
            );
            self.send(m);
        }
    }

    fn muc_update_presence(&mut self, room: &str, el: &Element) {
        let full = self.full();
        let occupants = muc::occupants(&self.ctx, room);
        let Some(mut me) = occupants.iter().find(|o| o.jid == full).cloned() else {
            // Removed meanwhile (kicked, banned, or the room was destroyed):
            // this is a new join.
            let nick = self.rooms.remove(room).unwrap_or_default();
            return self.muc_join(room, &nick, el);
        };
        me.presence = Self::presence_payload(el);
        muc::save_occupant(&self.ctx, room, &full, Some(&me));
        self.broadcast_occupant(room, &me, &occupants, false, &[]);
    }

    /// Sends an occupant's presence to every occupant (with status 110 to
    /// the occupant's own sessions).
    fn broadcast_occupant(
        &mut self,
        room: &str,
        me: &Occupant,
        to: &[Occupant],
        unavailable: bool,
        codes: &[u16],
    ) {
        let room_jid = self.muc_jid(room);
        let non_anonymous = muc::room(&self.ctx, room).is_some_and(|c| c.non_anonymous);
        let aff = muc::affiliation(&self.ctx, room, me.bare());
        let role = if unavailable { Role::None } else { me.role() };
        for o in to {
            let mut c = codes.to_vec();
            if o.nick == me.nick && o.bare() == me.bare() {
                c.push(status::SELF);
            }
            let p = self.occupant_presence(
                &room_jid,
                &o.jid,
                View {
                    occupant: me,
                    affiliation: aff,
                    role,
                    show_jid: non_anonymous || o.role() == Role::Moderator,
                    unavailable,
                    codes: &c,
                    extra: None,
                },
            );
            self.send_to_occupant(&o.jid.clone(), p);
        }
    }

    fn muc_change_nick(&mut self, room: &str, nick: &str, el: &Element) {
        let full = self.full();
        let occupants = muc::occupants(&self.ctx, room);
        if occupants
            .iter()
            .any(|o| o.nick == nick && o.bare() != self.bare())
        {
            return self.send(xml::error_reply(el, "cancel", "conflict"));
        }
        let Some(old) = occupants.iter().find(|o| o.jid == full).cloned() else {
            self.rooms.remove(room);
            return self.muc_join(room, nick, el);
        };
        let room_jid = self.muc_jid(room);
        let non_anonymous = muc::room(&self.ctx, room).is_some_and(|c| c.non_anonymous);
        let aff = muc::affiliation(&self.ctx, room, &self.bare());
        for o in occupants.iter() {
            let mut codes = vec![status::NEW_NICK];
            if o.jid == full {
                codes.push(status::SELF);
            }
            let p = self.occupant_presence(
                &room_jid,
                &o.jid,
                View {
                    occupant: &old,
                    affiliation: aff,
                    role: old.role(),
                    show_jid: non_anonymous || o.role() == Role::Moderator,
                    unavailable: true,
                    codes: &codes,
                    extra: None,
                },
            );
            let mut p = p;
            if let Some(x) = p.get_child_mut("x", ns::MUC_USER)
                && let Some(item) = x.get_child_mut("item", ns::MUC_USER)
            {
                item.put_attr("nick", nick.to_owned());
            }
            self.send_to_occupant(&o.jid.clone(), p);
        }
        let me = Occupant {
            nick: nick.to_owned(),
            presence: Self::presence_payload(el),
            ..old
        };
        muc::save_occupant(&self.ctx, room, &full, Some(&me));
        self.rooms.insert(room.to_owned(), nick.to_owned());
        let now = muc::occupants(&self.ctx, room);
        self.broadcast_occupant(room, &me, &now, false, &[]);
    }

    /// Leaves a room (if in it): unavailable to every occupant; a
    /// temporary room left empty is destroyed.
    pub(super) fn muc_leave(&mut self, room: &str, codes: &[u16], _reason: Option<&str>) {
        let Some(nick) = self.rooms.remove(room) else {
            return;
        };
        let full = self.full();
        let before = muc::occupants(&self.ctx, room);
        let Some(me) = before.iter().find(|o| o.jid == full).cloned() else {
            return;
        };
        muc::save_occupant(&self.ctx, room, &full, None);
        let rest: Vec<Occupant> = before.into_iter().filter(|o| o.jid != full).collect();
        let nick_stays = rest.iter().any(|o| o.nick == nick);
        let mut to: Vec<Occupant> = vec![me.clone()];
        if !nick_stays {
            to.extend(rest.iter().cloned());
        }
        self.broadcast_occupant(room, &me, &to, true, codes);
        if rest.is_empty() && muc::room(&self.ctx, room).is_some_and(|c| !c.persistent) {
            muc::destroy_room(&self.ctx, room);
        }
    }

    /// Leaves every room (the session is ending or went unavailable).
    pub(super) fn muc_leave_all(&mut self) {
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for r in rooms {
            self.muc_leave(&r, &[], None);
        }
    }

    /// A message to a room (groupchat, subject, invitation) or to an
    /// occupant (private message).
    pub(super) fn muc_message(&mut self, el: Element, room: Option<String>, nick: Option<String>) {
        let typ = el.attr("type").unwrap_or("normal").to_owned();
        if typ == "error" {
            return;
        }
        let Some(room) = room else {
            return self.send(xml::error_reply(&el, "cancel", "service-unavailable"));
        };
        let Some(cfg) = muc::room(&self.ctx, &room) else {
            return self.send(xml::error_reply(&el, "cancel", "item-not-found"));
        };
        let full = self.full();
        let occupants = muc::occupants(&self.ctx, &room);
        let me = occupants.iter().find(|o| o.jid == full).cloned();
        if let Some(invites) = el
            .get_child("x", ns::MUC_USER)
            .filter(|x| x.has_child("invite", ns::MUC_USER))
        {
            return self.muc_invite(&el, &room, &cfg, me.as_ref(), invites);
        }
        let Some(me) = me else {
            return self.send(xml::error_reply(&el, "modify", "not-acceptable"));
        };
        match nick {
            Some(to_nick) => self.muc_private(&el, &room, &me, &to_nick, &occupants),
            None if typ == "groupchat" => self.muc_groupchat(el, &room, cfg, &me, &occupants),
            None => self.send(xml::error_reply(&el, "modify", "bad-request")),
        }
    }

    fn muc_groupchat(
        &mut self,
        el: Element,
        room: &str,
        mut cfg: RoomConfig,
        me: &Occupant,
        occupants: &[Occupant],
    ) {
        let room_jid = self.muc_jid(room);
        let subject = el.get_child("subject", ns::CLIENT).map(|s| s.text());
        let body = el.get_child("body", ns::CLIENT).map(|b| b.text());
        if let (Some(subject), None) = (&subject, &body) {
            let may = me.role() == Role::Moderator || (cfg.change_subject && me.role() >= Role::Participant);
            if !may {
                return self.send(xml::error_reply(&el, "auth", "forbidden"));
            }
            cfg.subject = subject.clone();
            cfg.subject_by = me.nick.clone();
            if !muc::save_room(&self.ctx, room, &cfg) {
                return self.send(xml::error_reply(&el, "wait", "internal-server-error"));
            }
        } else if me.role() < Role::Participant {
            return self.send(xml::error_reply(&el, "auth", "forbidden"));
        }
        let mut reflected = xml::new("message", ns::CLIENT)
            .with_attr("from", format!("{room_jid}/{}", me.nick))
            .with_attr("type", "groupchat");
        if let Some(id) = el.attr("id") {
            reflected = reflected.with_attr("id", id);
        }
        for c in el.children() {
            if !c.is("stanza-id", ns::SID) {
                reflected.append_child(c.clone());
            }
        }
        let edit = super::edits::edit_of(&el);
        if body.is_some() || edit.is_some() {
            let record = ArchiveRecord {
                from: self.full(),
                to: room_jid.clone(),
                stamp_ms: chorus_core::time::now_millis(),
                xml: reflected.to_xml(),
                kind: RecordKind::Message,
                body,
                thread: el.get_child("thread", ns::CLIENT).map(|t| t.text()),
                room: Some(room_jid.clone()),
                // Who receives it: a hold on any of them covers it.
                occupants: occupant_accounts(occupants),
                msg_id: super::edits::msg_id_of(&el),
                edit,
            };
            if self.ctx.archive.enabled() {
                match self.ctx.archive.append(record) {
                    Ok(Some(id)) => {
                        reflected.append_child(
                            xml::new("stanza-id", ns::SID)
                                .with_attr("id", id)
                                .with_attr("by", room_jid.clone()),
                        );
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "archive refused a room message");
                        return self.send(xml::error_reply(&el, "wait", "resource-constraint"));
                    }
                }
            }
        }
        for o in occupants {
            let mut m = reflected.clone();
            m.put_attr("to", o.jid.clone());
            self.send_to_occupant(&o.jid.clone(), m);
        }
    }

    fn muc_private(
        &mut self,
        el: &Element,
        room: &str,
        me: &Occupant,
        to_nick: &str,
        occupants: &[Occupant],
    ) {
        let targets: Vec<&Occupant> = occupants.iter().filter(|o| o.nick == to_nick).collect();
        if targets.is_empty() {
            return self.send(xml::error_reply(el, "cancel", "item-not-found"));
        }
        let room_jid = self.muc_jid(room);
        let mut m = el.clone();
        m.put_attr("from", format!("{room_jid}/{}", me.nick));
        if !m.has_child("x", ns::MUC_USER) {
            m.append_child(xml::new("x", ns::MUC_USER));
        }
        if let Some(body) = el.get_child("body", ns::CLIENT).map(|b| b.text())
            && self.ctx.archive.enabled()
        {
            let record = ArchiveRecord {
                from: self.full(),
                to: targets[0].jid.clone(),
                stamp_ms: chorus_core::time::now_millis(),
                xml: m.to_xml(),
                kind: RecordKind::Message,
                body: Some(body),
                thread: None,
                // A private message is one-to-one: it belongs to the two
                // occupants' archives, not to the room's history.
                room: None,
                occupants: Vec::new(),
                msg_id: super::edits::msg_id_of(el),
                edit: super::edits::edit_of(el),
            };
            if let Err(e) = self.ctx.archive.append(record) {
                tracing::warn!(error = %e, "archive refused a private room message");
                return self.send(xml::error_reply(el, "wait", "resource-constraint"));
            }
        }
        for t in targets {
            let mut copy = m.clone();
            copy.put_attr("to", t.jid.clone());
            self.send_to_occupant(&t.jid.clone(), copy);
        }
    }

    /// A mediated invitation: the room tells the invitee. In a members-only
    /// room an invitation by an admin or owner makes the invitee a member.
    fn muc_invite(&mut self, el: &Element, room: &str, cfg: &RoomConfig, me: Option<&Occupant>, x: &Element) {
        let Some(me) = me else {
            return self.send(xml::error_reply(el, "modify", "not-acceptable"));
        };
        let aff = muc::affiliation(&self.ctx, room, me.bare());
        if !cfg.allow_invites && me.role() != Role::Moderator {
            return self.send(xml::error_reply(el, "auth", "forbidden"));
        }
        if cfg.members_only && aff < Affiliation::Admin && !cfg.allow_invites {
            return self.send(xml::error_reply(el, "auth", "forbidden"));
        }
        let room_jid = self.muc_jid(room);
        for inv in x.children().filter(|c| c.is("invite", ns::MUC_USER)) {
            let Some(to) = inv.attr("to").and_then(|t| jid::BareJid::new(t).ok()) else {
                return self.send(xml::error_reply(el, "modify", "jid-malformed"));
            };
            let Some(user) = self.local_user_of(to.as_str()) else {
                return self.send(xml::error_reply(el, "cancel", "item-not-found"));
            };
            if cfg.members_only
                && aff >= Affiliation::Admin
                && muc::affiliation(&self.ctx, room, to.as_str()) < Affiliation::Member
            {
                let _ = self.ctx.store.set_room_affiliation(
                    room,
                    to.as_str(),
                    Some(Affiliation::Member.as_str()),
                );
            }
            let mut invite = xml::new("invite", ns::MUC_USER).with_attr("from", self.bare());
            if let Some(reason) = inv.get_child("reason", ns::MUC_USER) {
                invite.append_child(reason.clone());
            }
            let mut ux = xml::new("x", ns::MUC_USER).with_child(invite);
            if let Some(pw) = &cfg.password {
                ux.append_child(xml::new("password", ns::MUC_USER).with_text(pw.clone()));
            }
            let msg = xml::new("message", ns::CLIENT)
                .with_attr("from", room_jid.clone())
                .with_attr("to", to.to_string())
                .with_attr("id", super::random_id())
                .with_child(ux)
                .with_child(xml::new("x", ns::CONFERENCE).with_attr("jid", room_jid.clone()))
                .with_child(
                    xml::new("body", ns::CLIENT)
                        .with_text(format!("{} invites you to the room {room_jid}", self.bare())),
                );
            for r in self.ctx.router.resources(&user) {
                if r.available {
                    let _ = self
                        .ctx
                        .router
                        .deliver(&user, &r.resource, Routed::Stanza(msg.clone()));
                }
            }
        }
    }

    /// An IQ to the service, a room or an occupant.
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
        if nick.is_some() {
            return self.send(xml::error_reply(iq, "cancel", "service-unavailable"));
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

    fn muc_service_info(&mut self, iq: &Element) {
        let q = xml::new("query", ns::DISCO_INFO)
            .with_child(
                xml::new("identity", ns::DISCO_INFO)
                    .with_attr("category", "conference")
                    .with_attr("type", "text")
                    .with_attr("name", "Chorus rooms"),
            )
            .with_child(xml::new("feature", ns::DISCO_INFO).with_attr("var", ns::MUC))
            .with_child(xml::new("feature", ns::DISCO_INFO).with_attr("var", ns::DISCO_INFO))
            .with_child(xml::new("feature", ns::DISCO_INFO).with_attr("var", ns::DISCO_ITEMS))
            .with_child(xml::new("feature", ns::DISCO_INFO).with_attr("var", ns::MAM));
        self.send(xml::iq_result(iq).with_child(q));
    }

    fn muc_service_items(&mut self, iq: &Element) {
        let mut q = xml::new("query", ns::DISCO_ITEMS);
        for (room, json) in self.ctx.store.rooms().unwrap_or_default() {
            let Ok(cfg) = serde_json::from_str::<RoomConfig>(&json) else {
                continue;
            };
            if cfg.public && !cfg.locked {
                q.append_child(
                    xml::new("item", ns::DISCO_ITEMS)
                        .with_attr("jid", self.muc_jid(&room))
                        .with_attr(
                            "name",
                            if cfg.name.is_empty() {
                                room.clone()
                            } else {
                                cfg.name
                            },
                        ),
                );
            }
        }
        self.send(xml::iq_result(iq).with_child(q));
    }

    fn muc_room_info(&mut self, iq: &Element, room: &str, cfg: &RoomConfig) {
        let flags = [
            if cfg.persistent {
                "muc_persistent"
            } else {
                "muc_temporary"
            },
            if cfg.members_only {
                "muc_membersonly"
            } else {
                "muc_open"
            },
            if cfg.moderated {
                "muc_moderated"
            } else {
                "muc_unmoderated"
            },
            if cfg.password.is_some() {
                "muc_passwordprotected"
            } else {
                "muc_unsecured"
            },
            if cfg.public { "muc_public" } else { "muc_hidden" },
            if cfg.non_anonymous {
                "muc_nonanonymous"
            } else {
                "muc_semianonymous"
            },
        ];
        let mut q = xml::new("query", ns::DISCO_INFO).with_child(
            xml::new("identity", ns::DISCO_INFO)
                .with_attr("category", "conference")
                .with_attr("type", "text")
                .with_attr("name", if cfg.name.is_empty() { room } else { &cfg.name }),
        );
        for f in [ns::MUC, ns::MAM, ns::SID].into_iter().chain(flags) {
            q.append_child(xml::new("feature", ns::DISCO_INFO).with_attr("var", f));
        }
        let count = muc::occupants(&self.ctx, room).len();
        let field = |var: &str, value: String| {
            xml::new("field", ns::DATA)
                .with_attr("var", var)
                .with_child(xml::new("value", ns::DATA).with_text(value))
        };
        q.append_child(
            xml::new("x", ns::DATA)
                .with_attr("type", "result")
                .with_child(field("FORM_TYPE", ns::MUC_ROOMINFO.to_owned()))
                .with_child(field("muc#roominfo_description", cfg.description.clone()))
                .with_child(field("muc#roominfo_subject", cfg.subject.clone()))
                .with_child(field("muc#roominfo_occupants", count.to_string())),
        );
        self.send(xml::iq_result(iq).with_child(q));
    }

    fn muc_owner_set(&mut self, iq: &Element, room: &str, mut cfg: RoomConfig, q: &Element) {
        if let Some(destroy) = q.get_child("destroy", ns::MUC_OWNER) {
            let occupants = muc::occupants(&self.ctx, room);
            let room_jid = self.muc_jid(room);
            for o in &occupants {
                let p = self.occupant_presence(
                    &room_jid,
                    &o.jid,
                    View {
                        occupant: o,
                        affiliation: Affiliation::None,
                        role: Role::None,
                        show_jid: false,
                        unavailable: true,
                        codes: &[],
                        extra: None,
                    },
                );
                let mut p = p;
                if let Some(x) = p.get_child_mut("x", ns::MUC_USER) {
                    let mut d = xml::new("destroy", ns::MUC_USER);
                    if let Some(r) = destroy.get_child("reason", ns::MUC_OWNER) {
                        d.append_child(xml::new("reason", ns::MUC_USER).with_text(r.text()));
                    }
                    x.append_child(d);
                }
                self.send_to_occupant(&o.jid.clone(), p);
            }
            self.rooms.remove(room);
            muc::destroy_room(&self.ctx, room);
            return self.send(xml::iq_result(iq));
        }
        let Some(form) = q.get_child("x", ns::DATA) else {
            return self.send(xml::error_reply(iq, "modify", "bad-request"));
        };
        match form.attr("type") {
            Some("cancel") => {
                if cfg.locked {
                    self.rooms.remove(room);
                    muc::destroy_room(&self.ctx, room);
                }
                return self.send(xml::iq_result(iq));
            }
            Some("submit") => {}
            _ => return self.send(xml::error_reply(iq, "modify", "bad-request")),
        }
        if let Err(cond) = apply_form(&mut cfg, form, self.ctx.config.muc.occupants_max) {
            return self.send(xml::error_reply(iq, "modify", cond));
        }
        let was_locked = cfg.locked;
        cfg.locked = false;
        if !muc::save_room(&self.ctx, room, &cfg) {
            return self.send(xml::error_reply(iq, "wait", "internal-server-error"));
        }
        self.send(xml::iq_result(iq));
        if !was_locked {
            // Tell occupants the configuration changed.
            let room_jid = self.muc_jid(room);
            for o in muc::occupants(&self.ctx, room) {
                let m = xml::new("message", ns::CLIENT)
                    .with_attr("from", room_jid.clone())
                    .with_attr("to", o.jid.clone())
                    .with_attr("type", "groupchat")
                    .with_attr("id", super::random_id())
                    .with_child(
                        xml::new("x", ns::MUC_USER).with_child(
                            xml::new("status", ns::MUC_USER)
                                .with_attr("code", status::CONFIG_CHANGED.to_string()),
                        ),
                    );
                self.send_to_occupant(&o.jid, m);
            }
        }
    }

    fn muc_admin_get(&mut self, iq: &Element, room: &str, aff: Affiliation, q: &Element) {
        let Some(item) = q.get_child("item", ns::MUC_ADMIN) else {
            return self.send(xml::error_reply(iq, "modify", "bad-request"));
        };
        let mut out = xml::new("query", ns::MUC_ADMIN);
        if let Some(want) = item.attr("affiliation").and_then(Affiliation::parse) {
            if aff < Affiliation::Admin {
                return self.send(xml::error_reply(iq, "auth", "forbidden"));
            }
            for (j, a) in muc::affiliations(&self.ctx, room) {
                if a == want {
                    out.append_child(
                        xml::new("item", ns::MUC_ADMIN)
                            .with_attr("jid", j)
                            .with_attr("affiliation", a.as_str()),
                    );
                }
            }
        } else if let Some(want) = item.attr("role").and_then(Role::parse) {
            let me_moderator = muc::occupants(&self.ctx, room)
                .iter()
                .any(|o| o.jid == self.full() && o.role() == Role::Moderator);
            if !me_moderator {
                return self.send(xml::error_reply(iq, "auth", "forbidden"));
            }
            for o in muc::occupants(&self.ctx, room) {
                if o.role() == want {
                    out.append_child(
                        xml::new("item", ns::MUC_ADMIN)
                            .with_attr("nick", o.nick.clone())
                            .with_attr("jid", o.jid.clone())
                            .with_attr("role", o.role),
                    );
                }
            }
        } else {
            return self.send(xml::error_reply(iq, "modify", "bad-request"));
        }
        self.send(xml::iq_result(iq).with_child(out));
    }

    fn muc_admin_set(&mut self, iq: &Element, room: &str, cfg: &RoomConfig, aff: Affiliation, q: &Element) {
        let full = self.full();
        let occupants = muc::occupants(&self.ctx, room);
        let me_role = occupants
            .iter()
            .find(|o| o.jid == full)
            .map_or(Role::None, |o| o.role());
        // Check every item first, then apply them all.
        // (item, new role, new affiliation of a bare JID)
        type Change = (Element, Option<Role>, Option<(String, Affiliation)>);
        let mut changes: Vec<Change> = Vec::new();
        for item in q.children().filter(|c| c.is("item", ns::MUC_ADMIN)) {
            if let Some(role) = item.attr("role") {
                let Some(role) = Role::parse(role) else {
                    return self.send(xml::error_reply(iq, "modify", "bad-request"));
                };
                let Some(target) = item
                    .attr("nick")
                    .and_then(|n| occupants.iter().find(|o| o.nick == n))
                else {
                    return self.send(xml::error_reply(iq, "cancel", "item-not-found"));
                };
                let target_aff = muc::affiliation(&self.ctx, room, target.bare());
                let allowed = match role {
                    Role::Moderator => aff >= Affiliation::Admin,
                    _ => me_role == Role::Moderator && (target_aff < Affiliation::Admin || aff > target_aff),
                };
                if !allowed {
                    return self.send(xml::error_reply(iq, "cancel", "not-allowed"));
                }
                changes.push((item.clone(), Some(role), None));
            } else if let Some(a) = item.attr("affiliation") {
                let Some(new) = Affiliation::parse(a) else {
                    return self.send(xml::error_reply(iq, "modify", "bad-request"));
                };
                let Some(jid) = item.attr("jid").and_then(|j| jid::Jid::new(j).ok()) else {
                    return self.send(xml::error_reply(iq, "modify", "jid-malformed"));
                };
                let bare = jid.to_bare().to_string();
                let current = muc::affiliation(&self.ctx, room, &bare);
                let allowed = match aff {
                    Affiliation::Owner => true,
                    Affiliation::Admin => current < Affiliation::Admin && new < Affiliation::Admin,
                    _ => false,
                };
                if !allowed {
                    return self.send(xml::error_reply(iq, "auth", "forbidden"));
                }
                let owners = muc::affiliations(&self.ctx, room)
                    .iter()
                    .filter(|(j, a)| *a == Affiliation::Owner && *j != bare)
                    .count();
                if current == Affiliation::Owner && new != Affiliation::Owner && owners == 0 {
                    return self.send(xml::error_reply(iq, "cancel", "conflict"));
                }
                changes.push((item.clone(), None, Some((bare, new))));
            } else {
                return self.send(xml::error_reply(iq, "modify", "bad-request"));
            }
        }
        for (item, role, affiliation) in changes {
            let reason = item
                .get_child("reason", ns::MUC_ADMIN)
                .map(|r| xml::new("reason", ns::MUC_USER).with_text(r.text()));
            if let Some(role) = role {
                let nick = item.attr("nick").unwrap_or_default();
                for o in occupants.iter().filter(|o| o.nick == nick) {
                    self.set_role(room, o, role, &[status::KICKED], reason.clone());
                }
            }
            if let Some((bare, new)) = affiliation {
                let stored = (new != Affiliation::None).then_some(new.as_str());
                if self.ctx.store.set_room_affiliation(room, &bare, stored).is_err() {
                    return self.send(xml::error_reply(iq, "wait", "internal-server-error"));
                }
                let present: Vec<&Occupant> = occupants.iter().filter(|o| o.bare() == bare).collect();
                for o in present {
                    if new == Affiliation::Outcast {
                        self.set_role(room, o, Role::None, &[status::BANNED], reason.clone());
                    } else if cfg.members_only && new < Affiliation::Member {
                        self.set_role(
                            room,
                            o,
                            Role::None,
                            &[status::REMOVED_AFFILIATION],
                            reason.clone(),
                        );
                    } else {
                        self.set_role(room, o, new.default_role(cfg.moderated), &[], reason.clone());
                    }
                }
            }
        }
        self.send(xml::iq_result(iq));
    }

    /// Changes an occupant's role; `Role::None` removes it from the room
    /// with the given status codes (kick, ban, membership lost).
    fn set_role(&mut self, room: &str, o: &Occupant, role: Role, codes: &[u16], reason: Option<Element>) {
        let room_jid = self.muc_jid(room);
        let cfg = muc::room(&self.ctx, room).unwrap_or_default();
        let aff = muc::affiliation(&self.ctx, room, o.bare());
        let everyone = muc::occupants(&self.ctx, room);
        let gone = role == Role::None;
        let updated = Occupant {
            role: role.as_str().to_owned(),
            ..o.clone()
        };
        if gone {
            muc::save_occupant(&self.ctx, room, &o.jid, None);
            if o.jid == self.full() {
                self.rooms.remove(room);
            }
        } else {
            muc::save_occupant(&self.ctx, room, &o.jid, Some(&updated));
        }
        for to in &everyone {
            let mut c: Vec<u16> = if gone { codes.to_vec() } else { Vec::new() };
            if to.jid == o.jid {
                c.push(status::SELF);
            }
            let p = self.occupant_presence(
                &room_jid,
                &to.jid,
                View {
                    occupant: &updated,
                    affiliation: aff,
                    role,
                    show_jid: cfg.non_anonymous || to.role() == Role::Moderator,
                    unavailable: gone,
                    codes: &c,
                    extra: reason.clone(),
                },
            );
            self.send_to_occupant(&to.jid.clone(), p);
        }
    }
}

/// A refused join: the error carries the MUC element back, as XEP-0045's
/// examples show and clients expect to match it to their join.
fn join_error(el: &Element, typ: &str, condition: &str) -> Element {
    xml::error_reply(el, typ, condition).with_child(xml::new("x", ns::MUC))
}

/// The owner's configuration form, filled with the current values.
fn config_form(cfg: &RoomConfig) -> Element {
    let field = |var: &str, typ: &str, label: &str, value: String| {
        xml::new("field", ns::DATA)
            .with_attr("var", var)
            .with_attr("type", typ)
            .with_attr("label", label)
            .with_child(xml::new("value", ns::DATA).with_text(value))
    };
    let b = |v: bool| if v { "1" } else { "0" }.to_owned();
    let whois = xml::new("field", ns::DATA)
        .with_attr("var", "muc#roomconfig_whois")
        .with_attr("type", "list-single")
        .with_attr("label", "Who may discover real JIDs")
        .with_child(xml::new("value", ns::DATA).with_text(if cfg.non_anonymous {
            "anyone"
        } else {
            "moderators"
        }))
        .with_child(
            xml::new("option", ns::DATA)
                .with_attr("label", "Anyone")
                .with_child(xml::new("value", ns::DATA).with_text("anyone")),
        )
        .with_child(
            xml::new("option", ns::DATA)
                .with_attr("label", "Moderators")
                .with_child(xml::new("value", ns::DATA).with_text("moderators")),
        );
    xml::new("x", ns::DATA)
        .with_attr("type", "form")
        .with_child(field("FORM_TYPE", "hidden", "", ns::MUC_ROOMCONFIG.to_owned()))
        .with_child(field(
            "muc#roomconfig_roomname",
            "text-single",
            "Name",
            cfg.name.clone(),
        ))
        .with_child(field(
            "muc#roomconfig_roomdesc",
            "text-single",
            "Description",
            cfg.description.clone(),
        ))
        .with_child(field(
            "muc#roomconfig_persistentroom",
            "boolean",
            "Persistent",
            b(cfg.persistent),
        ))
        .with_child(field(
            "muc#roomconfig_publicroom",
            "boolean",
            "Listed",
            b(cfg.public),
        ))
        .with_child(field(
            "muc#roomconfig_membersonly",
            "boolean",
            "Members only",
            b(cfg.members_only),
        ))
        .with_child(field(
            "muc#roomconfig_moderatedroom",
            "boolean",
            "Moderated",
            b(cfg.moderated),
        ))
        .with_child(field(
            "muc#roomconfig_passwordprotectedroom",
            "boolean",
            "Password protected",
            b(cfg.password.is_some()),
        ))
        .with_child(field(
            "muc#roomconfig_roomsecret",
            "text-private",
            "Password",
            cfg.password.clone().unwrap_or_default(),
        ))
        .with_child(field(
            "muc#roomconfig_maxusers",
            "text-single",
            "Maximum occupants",
            cfg.max_users.to_string(),
        ))
        .with_child(whois)
        .with_child(field(
            "muc#roomconfig_changesubject",
            "boolean",
            "Occupants may change the subject",
            b(cfg.change_subject),
        ))
        .with_child(field(
            "muc#roomconfig_allowinvites",
            "boolean",
            "Occupants may invite",
            b(cfg.allow_invites),
        ))
        .with_child(field(
            "muc#roomconfig_enablelogging",
            "boolean",
            "Archived (always, for compliance)",
            "1".into(),
        ))
}

/// Applies a submitted configuration form; an unknown field or a bad value
/// is an error condition.
fn apply_form(cfg: &mut RoomConfig, form: &Element, occupants_max: usize) -> Result<(), &'static str> {
    let mut password_on = cfg.password.is_some();
    let mut secret = cfg.password.clone();
    for f in form.children().filter(|c| c.is("field", ns::DATA)) {
        let v = f
            .get_child("value", ns::DATA)
            .map(|v| v.text())
            .unwrap_or_default();
        let flag = || match v.as_str() {
            "1" | "true" => Ok(true),
            "0" | "false" => Ok(false),
            _ => Err("bad-request"),
        };
        match f.attr("var").unwrap_or_default() {
            "FORM_TYPE" => {}
            "muc#roomconfig_roomname" => cfg.name = v,
            "muc#roomconfig_roomdesc" => cfg.description = v,
            "muc#roomconfig_persistentroom" => cfg.persistent = flag()?,
            "muc#roomconfig_publicroom" => cfg.public = flag()?,
            "muc#roomconfig_membersonly" => cfg.members_only = flag()?,
            "muc#roomconfig_moderatedroom" => cfg.moderated = flag()?,
            "muc#roomconfig_passwordprotectedroom" => password_on = flag()?,
            "muc#roomconfig_roomsecret" => secret = Some(v).filter(|s| !s.is_empty()),
            "muc#roomconfig_maxusers" => {
                cfg.max_users = v
                    .parse::<usize>()
                    .map_err(|_| "bad-request")?
                    .clamp(1, occupants_max)
            }
            "muc#roomconfig_whois" => cfg.non_anonymous = v == "anyone",
            "muc#roomconfig_changesubject" => cfg.change_subject = flag()?,
            "muc#roomconfig_allowinvites" => cfg.allow_invites = flag()?,
            "muc#roomconfig_enablelogging" => {}
            _ => return Err("bad-request"),
        }
    }
    cfg.password = if password_on { secret } else { None };
    if password_on && cfg.password.is_none() {
        return Err("not-acceptable");
    }
    Ok(())
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
                    .deliver(&user, j.resource().as_str(), Routed::Stanza(p));
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
