//! The storage seam: everything the XMPP layer keeps durably, as a trait.
//!
//! `chorus-store` implements it on RocksDB; [`crate::mem_store::MemStore`]
//! implements it in memory for unit tests. Calls are synchronous and short:
//! implementations must not block on the network.

use crate::credentials::Credentials;
use crate::roster::RosterItem;
use serde::{Deserialize, Serialize};

/// A storage failure the caller can branch on.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The account already exists.
    #[error("account {0} already exists")]
    AccountExists(String),
    /// The account does not exist.
    #[error("account {0} does not exist")]
    NoSuchAccount(String),
    /// A per-user quota is exhausted (for example the offline queue).
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The disk refused the write (full, read-only, or failing).
    #[error("storage write failed: {0}")]
    Io(String),
    /// Stored bytes could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// A message kept for a user who was offline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineMessage {
    /// When the server accepted it, in milliseconds since the epoch.
    pub stamp_ms: u64,
    /// The serialized `<message/>` stanza.
    pub xml: String,
}

/// A user's roster with its version (RFC 6121 section 2.6).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roster {
    /// Increases with every change to the roster.
    pub version: u64,
    /// Every item, including hidden pending-in items.
    pub items: Vec<RosterItem>,
}

/// Durable per-user data. User names are normalized localparts.
pub trait Store: Send + Sync + 'static {
    /// Creates an account; fails with [`StoreError::AccountExists`].
    fn create_account(&self, user: &str, creds: &Credentials) -> Result<(), StoreError>;
    /// Replaces an account's credentials; spends any one-time link
    /// ([`crate::setup_link::SETUP_LINK_SETTING`]) still out for it.
    fn set_credentials(&self, user: &str, creds: &Credentials) -> Result<(), StoreError>;
    /// Reads an account's credentials; `None` if it does not exist.
    fn credentials(&self, user: &str) -> Result<Option<Credentials>, StoreError>;
    /// Whether an account exists (checked on every message to a local
    /// user; a store may answer without decoding the credentials).
    fn account_exists(&self, user: &str) -> Result<bool, StoreError> {
        self.credentials(user).map(|c| c.is_some())
    }
    /// Creates many accounts in as few durable writes as the store can
    /// (bulk provisioning); an account that exists already is left as it
    /// is and named in the result.
    fn create_accounts(&self, accounts: &[NewAccount]) -> Result<Vec<String>, StoreError> {
        let mut existing = Vec::new();
        for a in accounts {
            match self.create_account(&a.user, &a.creds) {
                Ok(()) => {
                    if let Some(v) = &a.vcard {
                        self.set_vcard(&a.user, v)?;
                    }
                    for (name, value) in &a.settings {
                        self.set_setting(&a.user, name, value)?;
                    }
                }
                Err(StoreError::AccountExists(u)) => existing.push(u),
                Err(e) => return Err(e),
            }
        }
        Ok(existing)
    }
    /// Removes an account and every piece of its data; false if absent.
    fn remove_account(&self, user: &str) -> Result<bool, StoreError>;
    /// Lists all account names in order.
    fn list_accounts(&self) -> Result<Vec<String>, StoreError>;

    /// Reads a user's roster.
    fn roster(&self, user: &str) -> Result<Roster, StoreError>;
    /// Reads one roster item.
    fn roster_item(&self, user: &str, contact: &str) -> Result<Option<RosterItem>, StoreError>;
    /// Writes one roster item and returns the new roster version.
    fn put_roster_item(&self, user: &str, item: &RosterItem) -> Result<u64, StoreError>;
    /// Removes one roster item and returns the new roster version.
    fn remove_roster_item(&self, user: &str, contact: &str) -> Result<u64, StoreError>;

    /// Reads a user's vCard (XEP-0054) as serialized XML.
    fn vcard(&self, user: &str) -> Result<Option<String>, StoreError>;
    /// Stores a user's vCard.
    fn set_vcard(&self, user: &str, xml: &str) -> Result<(), StoreError>;

    /// Reads a user's block list (XEP-0191), sorted.
    fn blocklist(&self, user: &str) -> Result<Vec<String>, StoreError>;
    /// Adds or removes JIDs from the block list.
    fn set_blocked(&self, user: &str, jids: &[String], blocked: bool) -> Result<(), StoreError>;
    /// Empties the block list.
    fn clear_blocklist(&self, user: &str) -> Result<(), StoreError>;

    /// Appends to a user's offline queue, refusing past `max` messages.
    fn push_offline(&self, user: &str, msg: &OfflineMessage, max: usize) -> Result<(), StoreError>;
    /// Removes and returns a user's offline queue, oldest first.
    fn take_offline(&self, user: &str) -> Result<Vec<OfflineMessage>, StoreError>;
    /// Counts a user's offline messages.
    fn offline_count(&self, user: &str) -> Result<usize, StoreError>;
    /// A per-user setting (e.g. `mam-prefs`), if set.
    fn setting(&self, user: &str, name: &str) -> Result<Option<String>, StoreError>;
    /// Sets a per-user setting.
    fn set_setting(&self, user: &str, name: &str, value: &str) -> Result<(), StoreError>;
    /// Every setting of a user, by name (empty values included).
    fn settings(&self, user: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// A room's configuration (JSON), if the room exists.
    fn room(&self, room: &str) -> Result<Option<String>, StoreError>;
    /// Every room with its configuration.
    fn rooms(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Creates, changes or (with `None`) destroys a room's configuration.
    fn set_room(&self, room: &str, config: Option<&str>) -> Result<(), StoreError>;
    /// A room's affiliations: (bare JID, affiliation).
    fn room_affiliations(&self, room: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Sets (or with `None` removes) one affiliation.
    fn set_room_affiliation(
        &self,
        room: &str,
        jid: &str,
        affiliation: Option<&str>,
    ) -> Result<(), StoreError>;
    /// A room's occupant entries: (nick, occupant JSON).
    fn occupants(&self, room: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Sets (or with `None` removes) one occupant entry.
    fn set_occupant(&self, room: &str, nick: &str, occupant: Option<&str>) -> Result<(), StoreError>;

    /// A user's PEP nodes (XEP-0163): (node, configuration JSON), by name.
    fn pep_nodes(&self, user: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Creates or reconfigures (or with `None` deletes, with its items) one
    /// PEP node.
    fn set_pep_node(&self, user: &str, node: &str, config: Option<&str>) -> Result<(), StoreError>;
    /// The items of one PEP node: (item id, item JSON), by id.
    fn pep_items(&self, user: &str, node: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// One upload slot of a user (JSON [`crate::files::Upload`]).
    fn upload(&self, user: &str, token: &str) -> Result<Option<String>, StoreError>;
    /// Every upload slot of a user: (token, JSON).
    fn uploads(&self, user: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Creates, completes or (with `None`) removes an upload slot.
    fn set_upload(&self, user: &str, token: &str, upload: Option<&str>) -> Result<(), StoreError>;
    /// Writes (or with `None`) removes items of one PEP node in one durable
    /// write.
    fn set_pep_items(
        &self,
        user: &str,
        node: &str,
        items: &[(String, Option<String>)],
    ) -> Result<(), StoreError>;
}

/// One account for [`Store::create_accounts`]: its normalized name, its
/// credentials and, optionally, its vCard (XML).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewAccount {
    /// The localpart.
    pub user: String,
    /// The SCRAM credentials.
    pub creds: Credentials,
    /// The vCard (vcard-temp XML), e.g. with the person's name.
    pub vcard: Option<String>,
    /// Settings written with the account: (name, value).
    #[serde(default)]
    pub settings: Vec<(String, String)>,
}

/// The per-user setting that marks an account disabled (`"1"`): it cannot
/// sign in over XMPP or to the console. Any other value, or none, leaves it
/// enabled. Settings replicate, so every site agrees.
pub const DISABLED_SETTING: &str = "account.disabled";

/// Whether `user`'s account is disabled (by an admin, or by the
/// directory's sync); a store that cannot be read
/// answers yes (a login refused is safer than one let through).
pub fn is_disabled(store: &dyn Store, user: &str) -> bool {
    let flag = |name| match store.setting(user, name) {
        Ok(v) => v.as_deref() == Some("1"),
        Err(_) => true,
    };
    flag(DISABLED_SETTING) || flag(crate::directory::DIRECTORY_DISABLED_SETTING)
}
