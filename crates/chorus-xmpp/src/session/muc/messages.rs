//! Messages to a room: groupchat (archived once, then routed to every
//! occupant), subject changes, private messages between occupants and
//! mediated invitations.

use super::*;
use crate::session::deferred::Then;
use chorus_core::archive::Accepted;

impl Session {
    /// A message to a room (groupchat, subject, invitation) or to an
    /// occupant (private message).
    pub(in crate::session) fn muc_message(
        &mut self,
        el: Element,
        room: Option<String>,
        nick: Option<String>,
    ) {
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

    pub(in crate::session) fn muc_groupchat(
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
        let to: Vec<String> = occupants.iter().map(|o| o.jid.clone()).collect();
        let edit = crate::session::edits::edit_of(&el);
        if body.is_some() || edit.is_some() {
            let record = ArchiveRecord {
                from: self.full(),
                to: room_jid.clone(),
                stamp_ms: chorus_core::time::now_millis(),
                xml: self.archived_with_files(&reflected).to_xml(),
                kind: RecordKind::Message,
                body,
                thread: el.get_child("thread", ns::CLIENT).map(|t| t.text()),
                room: Some(room_jid.clone()),
                // Who receives it: a hold on any of them covers it.
                occupants: occupant_accounts(occupants),
                msg_id: crate::session::edits::msg_id_of(&el),
                edit,
            };
            if self.ctx.archive.enabled() {
                match self.ctx.archive.append_deferred(record) {
                    Ok(accepted) => {
                        if let Some(id) = accepted.id {
                            reflected.append_child(
                                xml::new("stanza-id", ns::SID)
                                    .with_attr("id", id)
                                    .with_attr("by", room_jid.clone()),
                            );
                        }
                        if let Some(wait) = accepted.durable {
                            return self.defer(wait, Then::occupants(reflected, to, el));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "archive refused a room message");
                        return self.send(xml::error_reply(&el, "wait", "resource-constraint"));
                    }
                }
            }
        }
        self.send_to_occupants(&reflected, to);
    }

    pub(in crate::session) fn muc_private(
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
        let to: Vec<String> = targets.iter().map(|t| t.jid.clone()).collect();
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
                msg_id: crate::session::edits::msg_id_of(el),
                edit: crate::session::edits::edit_of(el),
            };
            match self.ctx.archive.append_deferred(record) {
                Ok(Accepted {
                    durable: Some(wait), ..
                }) => {
                    return self.defer(wait, Then::occupants(m, to, el.clone()));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "archive refused a private room message");
                    return self.send(xml::error_reply(el, "wait", "resource-constraint"));
                }
            }
        }
        self.send_to_occupants(&m, to);
    }

    /// Sends a copy of `message` to each occupant's full JID.
    pub(in crate::session) fn send_to_occupants(&mut self, message: &Element, to: Vec<String>) {
        for jid in to {
            let mut copy = message.clone();
            copy.put_attr("to", jid.clone());
            self.send_to_occupant(&jid, copy);
        }
    }

    /// A mediated invitation: the room tells the invitee. In a members-only
    /// room an invitation by an admin or owner makes the invitee a member.
    pub(in crate::session) fn muc_invite(
        &mut self,
        el: &Element,
        room: &str,
        cfg: &RoomConfig,
        me: Option<&Occupant>,
        x: &Element,
    ) {
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
                .with_attr("id", crate::session::random_id())
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
                        .deliver(&user, &r.resource, Routed::stanza(msg.clone()));
                }
            }
        }
    }
}
