//! An in-memory [`Store`] for unit tests of the XMPP layer.

use crate::credentials::Credentials;
use crate::roster::RosterItem;
use crate::store::{OfflineMessage, Roster, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

#[derive(Default)]
struct User {
    creds: Option<Credentials>,
    roster_version: u64,
    roster: BTreeMap<String, RosterItem>,
    vcard: Option<String>,
    settings: std::collections::BTreeMap<String, String>,
    blocks: BTreeSet<String>,
    offline: Vec<OfflineMessage>,
    pep_nodes: BTreeMap<String, String>,
    pep_items: BTreeMap<(String, String), String>,
    uploads: BTreeMap<String, String>,
}

#[derive(Default)]
struct Rooms {
    configs: BTreeMap<String, String>,
    affiliations: BTreeMap<(String, String), String>,
    occupants: BTreeMap<(String, String), String>,
}

/// Keeps everything in a mutex-protected map; loses it all on drop.
#[derive(Default)]
pub struct MemStore {
    users: Mutex<BTreeMap<String, User>>,
    rooms: Mutex<Rooms>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    fn lock_rooms(&self) -> std::sync::MutexGuard<'_, Rooms> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<R>(&self, user: &str, f: impl FnOnce(&mut User) -> R) -> R {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        f(users.entry(user.to_owned()).or_default())
    }
}

impl Store for MemStore {
    fn create_account(&self, user: &str, creds: &Credentials) -> Result<(), StoreError> {
        self.with(user, |u| {
            if u.creds.is_some() {
                return Err(StoreError::AccountExists(user.to_owned()));
            }
            u.creds = Some(creds.clone());
            Ok(())
        })
    }

    fn set_credentials(&self, user: &str, creds: &Credentials) -> Result<(), StoreError> {
        self.with(user, |u| match u.creds {
            Some(_) => {
                u.creds = Some(creds.clone());
                // A password set any way spends a one-time link still out.
                if let Some(link) = u.settings.get_mut(crate::setup_link::SETUP_LINK_SETTING) {
                    link.clear();
                }
                Ok(())
            }
            None => Err(StoreError::NoSuchAccount(user.to_owned())),
        })
    }

    fn credentials(&self, user: &str) -> Result<Option<Credentials>, StoreError> {
        Ok(self.with(user, |u| u.creds.clone()))
    }

    fn remove_account(&self, user: &str) -> Result<bool, StoreError> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        Ok(users.remove(user).is_some_and(|u| u.creds.is_some()))
    }

    fn list_accounts(&self) -> Result<Vec<String>, StoreError> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        Ok(users
            .iter()
            .filter(|(_, u)| u.creds.is_some())
            .map(|(n, _)| n.clone())
            .collect())
    }

    fn roster(&self, user: &str) -> Result<Roster, StoreError> {
        Ok(self.with(user, |u| Roster {
            version: u.roster_version,
            items: u.roster.values().cloned().collect(),
        }))
    }

    fn roster_item(&self, user: &str, contact: &str) -> Result<Option<RosterItem>, StoreError> {
        Ok(self.with(user, |u| u.roster.get(contact).cloned()))
    }

    fn put_roster_item(&self, user: &str, item: &RosterItem) -> Result<u64, StoreError> {
        Ok(self.with(user, |u| {
            u.roster.insert(item.jid.clone(), item.clone());
            u.roster_version += 1;
            u.roster_version
        }))
    }

    fn remove_roster_item(&self, user: &str, contact: &str) -> Result<u64, StoreError> {
        Ok(self.with(user, |u| {
            u.roster.remove(contact);
            u.roster_version += 1;
            u.roster_version
        }))
    }

    fn vcard(&self, user: &str) -> Result<Option<String>, StoreError> {
        Ok(self.with(user, |u| u.vcard.clone()))
    }

    fn set_vcard(&self, user: &str, xml: &str) -> Result<(), StoreError> {
        self.with(user, |u| u.vcard = Some(xml.to_owned()));
        Ok(())
    }

    fn blocklist(&self, user: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.with(user, |u| u.blocks.iter().cloned().collect()))
    }

    fn set_blocked(&self, user: &str, jids: &[String], blocked: bool) -> Result<(), StoreError> {
        self.with(user, |u| {
            for j in jids {
                if blocked {
                    u.blocks.insert(j.clone());
                } else {
                    u.blocks.remove(j);
                }
            }
        });
        Ok(())
    }

    fn clear_blocklist(&self, user: &str) -> Result<(), StoreError> {
        self.with(user, |u| u.blocks.clear());
        Ok(())
    }

    fn push_offline(&self, user: &str, msg: &OfflineMessage, max: usize) -> Result<(), StoreError> {
        self.with(user, |u| {
            if u.offline.len() >= max {
                return Err(StoreError::QuotaExceeded(format!(
                    "{user} has {max} offline messages"
                )));
            }
            u.offline.push(msg.clone());
            Ok(())
        })
    }

    fn take_offline(&self, user: &str) -> Result<Vec<OfflineMessage>, StoreError> {
        Ok(self.with(user, |u| std::mem::take(&mut u.offline)))
    }

    fn offline_count(&self, user: &str) -> Result<usize, StoreError> {
        Ok(self.with(user, |u| u.offline.len()))
    }

    fn setting(&self, user: &str, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.with(user, |u| u.settings.get(name).cloned()))
    }

    fn set_setting(&self, user: &str, name: &str, value: &str) -> Result<(), StoreError> {
        self.with(user, |u| u.settings.insert(name.to_owned(), value.to_owned()));
        Ok(())
    }

    fn settings(&self, user: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.with(user, |u| {
            u.settings.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        }))
    }

    fn room(&self, room: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock_rooms().configs.get(room).cloned())
    }

    fn rooms(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self
            .lock_rooms()
            .configs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn set_room(&self, room: &str, config: Option<&str>) -> Result<(), StoreError> {
        let mut r = self.lock_rooms();
        match config {
            Some(c) => r.configs.insert(room.to_owned(), c.to_owned()),
            None => r.configs.remove(room),
        };
        Ok(())
    }

    fn room_affiliations(&self, room: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self
            .lock_rooms()
            .affiliations
            .iter()
            .filter(|((r, _), _)| r == room)
            .map(|((_, j), a)| (j.clone(), a.clone()))
            .collect())
    }

    fn set_room_affiliation(
        &self,
        room: &str,
        jid: &str,
        affiliation: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut r = self.lock_rooms();
        let key = (room.to_owned(), jid.to_owned());
        match affiliation {
            Some(a) => r.affiliations.insert(key, a.to_owned()),
            None => r.affiliations.remove(&key),
        };
        Ok(())
    }

    fn occupants(&self, room: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self
            .lock_rooms()
            .occupants
            .iter()
            .filter(|((r, _), _)| r == room)
            .map(|((_, n), o)| (n.clone(), o.clone()))
            .collect())
    }

    fn set_occupant(&self, room: &str, nick: &str, occupant: Option<&str>) -> Result<(), StoreError> {
        let mut r = self.lock_rooms();
        let key = (room.to_owned(), nick.to_owned());
        match occupant {
            Some(o) => r.occupants.insert(key, o.to_owned()),
            None => r.occupants.remove(&key),
        };
        Ok(())
    }

    fn pep_nodes(&self, user: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.with(user, |u| {
            u.pep_nodes.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        }))
    }

    fn set_pep_node(&self, user: &str, node: &str, config: Option<&str>) -> Result<(), StoreError> {
        self.with(user, |u| match config {
            Some(c) => {
                u.pep_nodes.insert(node.to_owned(), c.to_owned());
            }
            None => {
                u.pep_nodes.remove(node);
                u.pep_items.retain(|(n, _), _| n != node);
            }
        });
        Ok(())
    }

    fn pep_items(&self, user: &str, node: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.with(user, |u| {
            u.pep_items
                .iter()
                .filter(|((n, _), _)| n == node)
                .map(|((_, id), v)| (id.clone(), v.clone()))
                .collect()
        }))
    }

    fn set_pep_items(
        &self,
        user: &str,
        node: &str,
        items: &[(String, Option<String>)],
    ) -> Result<(), StoreError> {
        self.with(user, |u| {
            for (id, item) in items {
                let key = (node.to_owned(), id.clone());
                match item {
                    Some(i) => u.pep_items.insert(key, i.clone()),
                    None => u.pep_items.remove(&key),
                };
            }
        });
        Ok(())
    }

    fn upload(&self, user: &str, token: &str) -> Result<Option<String>, StoreError> {
        Ok(self.with(user, |u| u.uploads.get(token).cloned()))
    }

    fn uploads(&self, user: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.with(user, |u| {
            u.uploads.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        }))
    }

    fn set_upload(&self, user: &str, token: &str, upload: Option<&str>) -> Result<(), StoreError> {
        self.with(user, |u| match upload {
            Some(x) => u.uploads.insert(token.to_owned(), x.to_owned()),
            None => u.uploads.remove(token),
        });
        Ok(())
    }
}
