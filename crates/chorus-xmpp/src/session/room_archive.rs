//! Who may read a room's archive (XEP-0313 on a MUC, and the history sent
//! on join): only those who may enter the room now. Every check reads the
//! room's shared state (configuration, affiliations, the occupant list)
//! at the time of the query, never the session's own memory of the rooms
//! it joined, so a kicked, banned or de-membered user loses access at once
//! on every session and every node. In a semi-anonymous room the `with`
//! filter (which matches the sender's real JID) is for moderators only:
//! anyone else could learn who is behind a nick by filtering on a guess.

use super::Session;
use super::mam::Refusal;
use crate::muc::{self, Affiliation, Role, RoomConfig};
use crate::ns;
use crate::xml;
use minidom::Element;

impl Session {
    /// A MAM request addressed to a room (`get` for the form or the
    /// metadata, `set` for a query).
    pub(super) fn room_mam_iq(&mut self, iq: &Element, payload: &Element, room: &str, cfg: &RoomConfig) {
        let aff = muc::affiliation(&self.ctx, room, &self.bare());
        if let Err((typ, cond)) = self.may_read_room(room, cfg, aff) {
            return self.send(xml::error_reply(iq, typ, cond));
        }
        let room_jid = format!("{room}@{}", self.ctx.config.muc_domain());
        let get = iq.attr("type") == Some("get");
        match (payload.name(), get) {
            ("query", true) => self.on_mam_iq(iq, payload, true),
            ("metadata", true) => self.mam_metadata_of(iq, &room_jid),
            ("query", false) => {
                if has_with(payload) && !self.may_filter_real_jids(room, cfg, aff) {
                    return self.send(xml::error_reply(iq, "auth", "forbidden"));
                }
                self.mam_query_for(iq, payload, &room_jid);
            }
            _ => self.send(xml::error_reply(iq, "cancel", "feature-not-implemented")),
        }
    }

    /// Whether this session's user may read the room's archive now: the
    /// same rules as entering it. A password-protected room is readable by
    /// its current occupants (who gave the password) and its owners.
    pub(super) fn may_read_room(
        &self,
        room: &str,
        cfg: &RoomConfig,
        aff: Affiliation,
    ) -> Result<(), Refusal> {
        if aff == Affiliation::Outcast {
            return Err(("auth", "forbidden"));
        }
        if cfg.locked && aff != Affiliation::Owner {
            return Err(("cancel", "item-not-found"));
        }
        if cfg.members_only && aff < Affiliation::Member {
            return Err(("auth", "registration-required"));
        }
        if cfg.password.is_some() && aff != Affiliation::Owner && !self.occupies(room) {
            return Err(("auth", "not-authorized"));
        }
        Ok(())
    }

    /// Whether this session is in the room's shared occupant list now.
    fn occupies(&self, room: &str) -> bool {
        let full = self.full();
        muc::occupants(&self.ctx, room).iter().any(|o| o.jid == full)
    }

    /// Whether this user may see real JIDs in the room (and so filter its
    /// archive by one): everyone in a non-anonymous room; otherwise owners,
    /// admins and current moderators.
    fn may_filter_real_jids(&self, room: &str, cfg: &RoomConfig, aff: Affiliation) -> bool {
        if cfg.non_anonymous || aff >= Affiliation::Admin {
            return true;
        }
        let full = self.full();
        muc::occupants(&self.ctx, room)
            .iter()
            .any(|o| o.jid == full && o.role() == Role::Moderator)
    }
}

/// Whether a query form filters on `with` (with a value).
fn has_with(q: &Element) -> bool {
    q.get_child("x", ns::DATA).is_some_and(|form| {
        form.children().any(|f| {
            f.is("field", ns::DATA)
                && f.attr("var") == Some("with")
                && f.children()
                    .any(|v| v.is("value", ns::DATA) && !v.text().trim().is_empty())
        })
    })
}
