//! Group rooms (XEP-0045) as data. A room's configuration and its
//! affiliations are durable items in the replicated store (last writer
//! wins, like rosters), so every node serves every room and losing the
//! site that created a room stops nothing. Occupancy is soft state: an
//! occupant entry counts only while its session exists somewhere in the
//! cluster (the router knows, lease included), so a crashed node's
//! occupants vanish with its lease. Entries are removed by the node that
//! holds the session (leaving, session end), by a moderator's kick or ban,
//! and, for a node that crashed, by that node when it starts again: never
//! by bystanders, so every node can still tell its own occupants who left.

use crate::context::Context;
use serde::{Deserialize, Serialize};

/// A room's configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomConfig {
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Kept when the last occupant leaves.
    pub persistent: bool,
    /// Listed in the service's disco#items.
    pub public: bool,
    /// Only members (and above) may enter.
    pub members_only: bool,
    /// Only participants (not visitors) may speak.
    pub moderated: bool,
    /// Password required to enter, if set.
    pub password: Option<String>,
    /// Occupants at most.
    pub max_users: usize,
    /// Everyone (not only moderators) sees occupants' real JIDs.
    pub non_anonymous: bool,
    /// Participants (not only moderators) may change the subject.
    pub change_subject: bool,
    /// Participants may invite others.
    pub allow_invites: bool,
    /// Created but not yet configured by its owner: nobody else may enter.
    pub locked: bool,
    /// The subject and the nick that set it.
    pub subject: String,
    /// Who set the subject.
    pub subject_by: String,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            moderated: false,
            password: None,
            max_users: 100,
            non_anonymous: true,
            change_subject: false,
            allow_invites: true,
            locked: false,
            subject: String::new(),
            subject_by: String::new(),
        }
    }
}

/// A long-lived relation between a user and a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Affiliation {
    /// Banned.
    Outcast,
    /// No affiliation.
    None,
    /// A member.
    Member,
    /// An administrator.
    Admin,
    /// An owner.
    Owner,
}

impl Affiliation {
    /// The XEP-0045 name.
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    /// Parses an XEP-0045 name.
    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }

    /// The role an occupant with this affiliation gets on entering.
    pub fn default_role(self, moderated: bool) -> Role {
        match self {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }
}

/// A session-long relation between an occupant and a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Not in the room.
    None,
    /// May listen only (in moderated rooms).
    Visitor,
    /// May speak.
    Participant,
    /// May kick and grant voice.
    Moderator,
}

impl Role {
    /// The XEP-0045 name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    /// Parses an XEP-0045 name.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }
}

/// One occupant as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occupant {
    /// The room nickname.
    pub nick: String,
    /// The occupant's full real JID.
    pub jid: String,
    /// The role's XEP-0045 name.
    pub role: String,
    /// The occupant's presence payload (show, status, priority) as XML.
    #[serde(default)]
    pub presence: String,
    /// The node holding the session.
    #[serde(default)]
    pub node: String,
}

impl Occupant {
    /// The occupant's role.
    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::Participant)
    }

    /// The bare real JID.
    pub fn bare(&self) -> &str {
        chorus_core::archive::bare(&self.jid)
    }
}

/// Reads a room's configuration.
pub fn room(ctx: &Context, room: &str) -> Option<RoomConfig> {
    match ctx.store.room(room) {
        Ok(Some(json)) => serde_json::from_str(&json)
            .map_err(|e| tracing::error!(room, error = %e, "unreadable room configuration"))
            .ok(),
        Ok(None) => None,
        Err(e) => {
            tracing::error!(room, error = %e, "cannot read room");
            None
        }
    }
}

/// Writes a room's configuration.
pub fn save_room(ctx: &Context, room: &str, cfg: &RoomConfig) -> bool {
    let json = serde_json::to_string(cfg).unwrap_or_default();
    ctx.store
        .set_room(room, Some(&json))
        .map_err(|e| tracing::error!(room, error = %e, "cannot write room"))
        .is_ok()
}

/// Destroys a room: its configuration, affiliations and occupant entries.
pub fn destroy_room(ctx: &Context, room: &str) {
    for (jid, _) in ctx.store.room_affiliations(room).unwrap_or_default() {
        let _ = ctx.store.set_room_affiliation(room, &jid, None);
    }
    for (nick, _) in ctx.store.occupants(room).unwrap_or_default() {
        let _ = ctx.store.set_occupant(room, &nick, None);
    }
    if let Err(e) = ctx.store.set_room(room, None) {
        tracing::error!(room, error = %e, "cannot destroy room");
    }
}

/// Destroys a room for an administrator outside the room (the console):
/// every live occupant is told with an unavailable presence carrying
/// `<destroy/>` and the reason (XEP-0045 section 10.9), then the room goes.
/// Returns how many occupants were told.
pub fn destroy_room_by_admin(ctx: &Context, room: &str, reason: &str) -> usize {
    use crate::xml::ElementExt as _;
    use crate::{ns, xml};
    let room_jid = format!("{room}@{}", ctx.config.muc_domain());
    let live = occupants(ctx, room);
    for o in &live {
        let Some((bare, resource)) = o.jid.split_once('/') else {
            continue;
        };
        let user = bare.split('@').next().unwrap_or_default();
        let x = xml::new("x", ns::MUC_USER)
            .with_child(
                xml::new("item", ns::MUC_USER)
                    .with_attr("affiliation", "none")
                    .with_attr("role", "none"),
            )
            .with_child(
                xml::new("destroy", ns::MUC_USER)
                    .with_child(xml::new("reason", ns::MUC_USER).with_text(reason)),
            );
        let p = xml::new("presence", ns::CLIENT)
            .with_attr("from", format!("{room_jid}/{}", o.nick))
            .with_attr("to", o.jid.clone())
            .with_attr("type", "unavailable")
            .with_child(x);
        let _ = ctx
            .router
            .deliver(user, resource, crate::router::Routed::stanza(p));
    }
    destroy_room(ctx, room);
    live.len()
}

/// Every affiliation of a room.
pub fn affiliations(ctx: &Context, room: &str) -> Vec<(String, Affiliation)> {
    ctx.store
        .room_affiliations(room)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(j, a)| Affiliation::parse(&a).map(|a| (j, a)))
        .collect()
}

/// A bare JID's affiliation with a room.
pub fn affiliation(ctx: &Context, room: &str, bare: &str) -> Affiliation {
    affiliations(ctx, room)
        .into_iter()
        .find(|(j, _)| j == bare)
        .map_or(Affiliation::None, |(_, a)| a)
}

/// Whether a full JID's session exists anywhere in the cluster.
fn alive(ctx: &Context, full: &str) -> bool {
    let Ok(j) = jid::FullJid::new(full) else {
        return false;
    };
    if j.domain().as_str() != ctx.domain {
        return false;
    }
    let user = j.node().map(|n| n.to_string()).unwrap_or_default();
    ctx.router.has_resource(&user, j.resource().as_str())
}

/// The room's live occupants, sorted by nick (entries whose session is
/// gone are skipped, not removed: see the module documentation).
pub fn occupants(ctx: &Context, room: &str) -> Vec<Occupant> {
    let mut out: Vec<Occupant> = all_occupants(ctx, room)
        .into_iter()
        .filter(|o| alive(ctx, &o.jid))
        .collect();
    out.sort_by(|a, b| a.nick.cmp(&b.nick));
    out
}

/// Every occupant entry of a room, live or not.
pub fn all_occupants(ctx: &Context, room: &str) -> Vec<Occupant> {
    ctx.store
        .occupants(room)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, json)| serde_json::from_str::<Occupant>(&json).ok())
        .collect()
}

/// At start: removes the entries of this node's previous run, whose
/// sessions all ended with it. Returns how many.
pub fn forget_node_occupants(store: &dyn chorus_core::store::Store, node: &str) -> usize {
    let mut n = 0;
    for (room, _) in store.rooms().unwrap_or_default() {
        for (key, json) in store.occupants(&room).unwrap_or_default() {
            if serde_json::from_str::<Occupant>(&json).is_ok_and(|o| o.node == node) {
                let _ = store.set_occupant(&room, &key, None);
                n += 1;
            }
        }
    }
    n
}

/// Writes (or with `None` removes) the occupant entry of a session (keyed
/// by its full JID: one user may be in a room from several devices).
pub fn save_occupant(ctx: &Context, room: &str, full: &str, o: Option<&Occupant>) {
    let json = o.map(|o| serde_json::to_string(o).unwrap_or_default());
    if let Err(e) = ctx.store.set_occupant(room, full, json.as_deref()) {
        tracing::error!(room, full, error = %e, "cannot write occupant");
    }
}
