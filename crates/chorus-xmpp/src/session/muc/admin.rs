//! The service's and rooms' IQs: disco of the service and of rooms, the
//! owner's configuration (XEP-0045 10) and the admin use cases (roles
//! and affiliations, XEP-0045 9).

use super::*;

impl Session {
    pub(in crate::session) fn muc_service_info(&mut self, iq: &Element) {
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

    pub(in crate::session) fn muc_service_items(&mut self, iq: &Element) {
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

    pub(in crate::session) fn muc_room_info(&mut self, iq: &Element, room: &str, cfg: &RoomConfig) {
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
        for f in [ns::MUC, ns::MAM, ns::SID, ns::MUC_SELF_PING_OPTIMIZATION]
            .into_iter()
            .chain(flags)
        {
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

    pub(in crate::session) fn muc_owner_set(
        &mut self,
        iq: &Element,
        room: &str,
        mut cfg: RoomConfig,
        q: &Element,
    ) {
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
                    .with_attr("id", crate::session::random_id())
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

    pub(in crate::session) fn muc_admin_get(
        &mut self,
        iq: &Element,
        room: &str,
        aff: Affiliation,
        q: &Element,
    ) {
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

    pub(in crate::session) fn muc_admin_set(
        &mut self,
        iq: &Element,
        room: &str,
        cfg: &RoomConfig,
        aff: Affiliation,
        q: &Element,
    ) {
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
    pub(in crate::session) fn set_role(
        &mut self,
        room: &str,
        o: &Occupant,
        role: Role,
        codes: &[u16],
        reason: Option<Element>,
    ) {
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
