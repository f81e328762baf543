//! Roster items and subscription states (RFC 6121 sections 2 and 3).

use serde::{Deserialize, Serialize};

/// The subscription state between a user and a contact, from the user's side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Subscription {
    /// Neither side is subscribed.
    #[default]
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    /// Both directions.
    Both,
}

impl Subscription {
    /// The value of the roster item's `subscription` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    /// Whether the user receives the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// Whether the contact receives the user's presence.
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    /// Builds a state from its two directions.
    pub fn from_parts(to: bool, from: bool) -> Subscription {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }
}

/// One contact in a user's roster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterItem {
    /// The contact's bare JID.
    pub jid: String,
    /// The user's name for the contact.
    pub name: Option<String>,
    /// The subscription state.
    pub subscription: Subscription,
    /// The user asked to subscribe to the contact and awaits an answer
    /// ("Pending Out" in RFC 6121 appendix A).
    pub ask: bool,
    /// The contact asked to subscribe to the user and awaits an answer
    /// ("Pending In"); such an item is hidden from roster results while its
    /// subscription is `none` and it was never added by the user.
    pub pending_in: bool,
    /// The user pre-approved a subscription request from the contact.
    pub approved: bool,
    /// The item exists only because of a pending inbound request.
    pub hidden: bool,
    /// Roster groups.
    pub groups: Vec<String>,
}
