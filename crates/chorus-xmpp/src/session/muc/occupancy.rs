//! Being in a room: joining (creation, members-only, passwords, bans,
//! nick conflicts, history from the archive), presence updates, nick
//! changes and leaving.

use super::*;

impl Session {
    /// The presence payload an occupant shows (without the MUC elements).
    pub(in crate::session) fn presence_payload(el: &Element) -> String {
        let mut p = xml::new("presence", ns::CLIENT);
        for c in el.children() {
            if c.ns() != ns::MUC && c.ns() != ns::MUC_USER {
                p.append_child(c.clone());
            }
        }
        p.to_xml()
    }

    pub(in crate::session) fn muc_join(&mut self, room: &str, nick: &str, el: &Element) {
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
            .with_attr("id", crate::session::random_id())
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
    pub(in crate::session) fn send_history(&mut self, room: &str, room_jid: &str, el: &Element) {
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
            .map(|s| now.saturating_sub(s.saturating_mul(1000)))
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

    pub(in crate::session) fn muc_update_presence(&mut self, room: &str, el: &Element) {
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
    pub(in crate::session) fn broadcast_occupant(
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

    pub(in crate::session) fn muc_change_nick(&mut self, room: &str, nick: &str, el: &Element) {
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
    pub(in crate::session) fn muc_leave(&mut self, room: &str, codes: &[u16], _reason: Option<&str>) {
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
    pub(in crate::session) fn muc_leave_all(&mut self) {
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for r in rooms {
            self.muc_leave(&r, &[], None);
        }
    }
}
