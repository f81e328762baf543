//! Shared roster groups: everyone in a group sees every other member in
//! their roster, with presence, without subscription requests (Openfire's
//! shared groups). Groups come from the directory (each group under
//! `directory.group_base`, nested groups expanded) and from
//! `[[shared_groups]]` in the configuration.
//!
//! Directory groups are replicated: the node that synchronizes writes each
//! group as a setting of the reserved owner [`GROUPS_OWNER`] (not a valid
//! localpart, so never an account), so every site holds the same groups
//! even where no directory is configured, and each site may read its own
//! LDAP replica (equal groups written twice are one value). An empty value
//! is a deleted group.
//!
//! [`SharedRoster`] is the in-memory index sessions consult: who shares a
//! group with whom, answered without a store read, so a group of
//! thousands costs no query per member.

use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The settings owner under which replicated groups are kept.
pub const GROUPS_OWNER: &str = "@groups";

/// One member of a shared group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Member {
    /// The member's account (localpart).
    pub user: String,
    /// The name the roster shows (may be empty).
    #[serde(default)]
    pub name: String,
}

/// A shared roster group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedGroup {
    /// The roster group name members see.
    pub name: String,
    /// Members, sorted by account.
    pub members: Vec<Member>,
}

impl SharedGroup {
    /// Sorts and de-duplicates the members.
    pub fn normalized(mut self) -> SharedGroup {
        self.members.sort();
        self.members.dedup_by(|a, b| a.user == b.user);
        self
    }

    fn position(&self, user: &str) -> Option<usize> {
        self.members.binary_search_by(|m| m.user.as_str().cmp(user)).ok()
    }
}

/// The replicated directory groups, by key (an unreadable one, which a
/// newer node may have written, is left out).
pub fn load(store: &dyn Store) -> Result<BTreeMap<String, SharedGroup>, StoreError> {
    Ok(parse(store.settings(GROUPS_OWNER)?))
}

/// The groups in the rows of [`GROUPS_OWNER`]'s settings.
pub fn parse(rows: Vec<(String, String)>) -> BTreeMap<String, SharedGroup> {
    rows.into_iter()
        .filter(|(_, value)| !value.is_empty())
        .filter_map(|(key, value)| {
            let g = serde_json::from_str::<SharedGroup>(&value).ok()?;
            Some((key, g.normalized()))
        })
        .collect()
}

/// Makes the replicated groups equal `groups`: writes the ones that
/// differ, clears the ones gone. Returns how many rows were written.
pub fn store(store: &dyn Store, groups: &BTreeMap<String, SharedGroup>) -> Result<usize, StoreError> {
    let mut written = 0;
    let current: HashMap<String, String> = store.settings(GROUPS_OWNER)?.into_iter().collect();
    for (key, group) in groups {
        let json = serde_json::to_string(group).map_err(|e| StoreError::Io(e.to_string()))?;
        if current.get(key) != Some(&json) {
            store.set_setting(GROUPS_OWNER, key, &json)?;
            written += 1;
        }
    }
    for (key, value) in &current {
        if !value.is_empty() && !groups.contains_key(key) {
            store.set_setting(GROUPS_OWNER, key, "")?;
            written += 1;
        }
    }
    Ok(written)
}

/// A fellow member: the contact's account, the name to show, and the
/// groups shared with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fellow {
    /// The contact's account (localpart).
    pub user: String,
    /// The name the roster shows (may be empty).
    pub name: String,
    /// The shared groups both are in, sorted.
    pub groups: Vec<String>,
}

/// Who shares a group with whom.
#[derive(Debug, Default)]
pub struct SharedRoster {
    groups: Vec<SharedGroup>,
    by_member: HashMap<String, Vec<u32>>,
}

impl SharedRoster {
    /// The index of `groups`.
    pub fn new(groups: impl IntoIterator<Item = SharedGroup>) -> SharedRoster {
        let groups: Vec<SharedGroup> = groups
            .into_iter()
            .map(SharedGroup::normalized)
            .filter(|g| !g.members.is_empty())
            .collect();
        let mut by_member: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, g) in groups.iter().enumerate() {
            for m in &g.members {
                by_member.entry(m.user.clone()).or_default().push(i as u32);
            }
        }
        SharedRoster { groups, by_member }
    }

    /// Whether no group exists.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Whether `a` and `b` (different accounts) share a group.
    pub fn are_fellows(&self, a: &str, b: &str) -> bool {
        a != b
            && self
                .by_member
                .get(a)
                .is_some_and(|gs| gs.iter().any(|&i| self.groups[i as usize].position(b).is_some()))
    }

    /// Every account sharing a group with `user` (not `user`), sorted, once.
    pub fn fellow_users<'a>(&'a self, user: &str) -> Vec<&'a str> {
        let Some(gs) = self.by_member.get(user) else {
            return Vec::new();
        };
        let mut out: Vec<&str> = gs
            .iter()
            .flat_map(|&i| self.groups[i as usize].members.iter().map(|m| m.user.as_str()))
            .filter(|u| *u != user)
            .collect();
        if gs.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    /// The fellows of `user` with names and shared groups, by account.
    pub fn fellows(&self, user: &str) -> BTreeMap<String, Fellow> {
        let mut out: BTreeMap<String, Fellow> = BTreeMap::new();
        for &i in self.by_member.get(user).map(Vec::as_slice).unwrap_or_default() {
            let g = &self.groups[i as usize];
            for m in g.members.iter().filter(|m| m.user != user) {
                let f = out.entry(m.user.clone()).or_insert_with(|| Fellow {
                    user: m.user.clone(),
                    name: m.name.clone(),
                    groups: Vec::new(),
                });
                f.groups.push(g.name.clone());
            }
        }
        for f in out.values_mut() {
            f.groups.sort();
            f.groups.dedup();
        }
        out
    }

    /// `contact` as a fellow of `user`, if they share a group.
    pub fn fellow(&self, user: &str, contact: &str) -> Option<Fellow> {
        let mut found: Option<Fellow> = None;
        for &i in self.by_member.get(user).map(Vec::as_slice).unwrap_or_default() {
            let g = &self.groups[i as usize];
            if user == contact {
                break;
            }
            if let Some(pos) = g.position(contact) {
                let f = found.get_or_insert_with(|| Fellow {
                    user: contact.to_owned(),
                    name: g.members[pos].name.clone(),
                    groups: Vec::new(),
                });
                f.groups.push(g.name.clone());
            }
        }
        if let Some(f) = &mut found {
            f.groups.sort();
            f.groups.dedup();
        }
        found
    }

    /// Every account in some group.
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.by_member.keys().map(String::as_str)
    }

    /// A digest of everything `user` sees, for roster versions.
    pub fn digest_for(&self, user: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for f in self.fellows(user).values() {
            (&f.user, &f.name, &f.groups).hash(&mut h);
        }
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem_store::MemStore;

    fn group(name: &str, users: &[&str]) -> SharedGroup {
        SharedGroup {
            name: name.into(),
            members: users
                .iter()
                .map(|u| Member {
                    user: u.to_string(),
                    name: u.to_uppercase(),
                })
                .collect(),
        }
    }

    #[test]
    fn fellows_are_the_union_of_a_users_groups_without_the_user() {
        let r = SharedRoster::new([
            group("Eng", &["bob", "ada", "cy"]),
            group("Leads", &["ada", "dee", "bob"]),
        ]);
        assert!(r.are_fellows("ada", "dee") && r.are_fellows("cy", "bob"));
        assert!(!r.are_fellows("cy", "dee") && !r.are_fellows("ada", "ada"));
        assert!(!r.are_fellows("zed", "ada"));
        let f = r.fellows("ada");
        assert_eq!(f.keys().collect::<Vec<_>>(), ["bob", "cy", "dee"]);
        assert_eq!(f["bob"].groups, ["Eng", "Leads"]);
        assert_eq!(f["bob"].name, "BOB");
        assert_eq!(r.fellow("ada", "bob").as_ref(), Some(&f["bob"]));
        assert_eq!(r.fellow("cy", "dee"), None);
        assert_eq!(r.fellow_users("ada"), ["bob", "cy", "dee"]);
        assert_ne!(r.digest_for("ada"), r.digest_for("cy"));
    }

    #[test]
    fn stored_groups_round_trip_and_vanished_ones_are_cleared() {
        let store = MemStore::new();
        let mut groups = BTreeMap::new();
        groups.insert("g1".to_string(), group("Eng", &["ada", "bob"]).normalized());
        groups.insert("g2".to_string(), group("Ops", &["cy"]).normalized());
        assert_eq!(super::store(&store, &groups).expect("store"), 2);
        assert_eq!(
            super::store(&store, &groups).expect("store"),
            0,
            "unchanged: no write"
        );
        assert_eq!(load(&store).expect("load"), groups);
        groups.remove("g2");
        assert_eq!(super::store(&store, &groups).expect("store"), 1);
        assert_eq!(load(&store).expect("load"), groups);
    }
}
