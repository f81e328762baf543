//! The session directory of the other nodes: which resources each peer
//! holds, with leases. Soft state: rebuilt from snapshots on reconnect and
//! dropped when a peer falls silent for longer than its lease.

use chorus_proto::v1::{ResourceEntry, ResourceKey};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What we know of one peer.
#[derive(Debug, Default)]
pub struct PeerView {
    /// The peer's site.
    pub site: String,
    /// The incarnation of its last Hello.
    pub incarnation: u64,
    /// When it last sent us anything.
    pub last_heard: Option<Instant>,
    /// Whether its lease is valid.
    pub alive: bool,
    /// Its resources by (user, resource).
    pub entries: HashMap<(String, String), ResourceEntry>,
}

/// A resource that appeared or vanished, for presence notifications.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Now reachable again (or new after a heal): its current entry.
    Appeared(ResourceEntry),
    /// No longer reachable: user and resource.
    Vanished(String, String),
}

/// All peers' directories.
#[derive(Default)]
pub struct Directory {
    peers: Mutex<HashMap<String, PeerView>>,
}

impl Directory {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, PeerView>) -> R) -> R {
        f(&mut self.peers.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A peer said hello. A new incarnation drops what its old self held.
    pub fn hello(&self, node: &str, site: &str, incarnation: u64, now: Instant) -> Vec<Change> {
        self.with(|peers| {
            let p = peers.entry(node.to_owned()).or_default();
            p.site = site.to_owned();
            p.last_heard = Some(now);
            let mut changes = Vec::new();
            if p.incarnation != incarnation {
                if p.alive {
                    changes = p
                        .entries
                        .drain()
                        .map(|((u, r), _)| Change::Vanished(u, r))
                        .collect();
                } else {
                    p.entries.clear();
                }
                p.incarnation = incarnation;
            }
            p.alive = true;
            changes
        })
    }

    /// Any frame from a peer renews its lease.
    pub fn heard(&self, node: &str, now: Instant) {
        self.with(|peers| {
            if let Some(p) = peers.get_mut(node) {
                p.last_heard = Some(now);
                p.alive = true;
            }
        })
    }

    /// Replaces a peer's entries with a snapshot; reports what changed.
    pub fn snapshot(&self, node: &str, entries: Vec<ResourceEntry>) -> Vec<Change> {
        self.with(|peers| {
            let p = peers.entry(node.to_owned()).or_default();
            let mut new: HashMap<(String, String), ResourceEntry> = entries
                .into_iter()
                .map(|e| ((e.user.clone(), e.resource.clone()), e))
                .collect();
            let mut changes = Vec::new();
            for (k, _) in p.entries.iter() {
                if !new.contains_key(k) {
                    changes.push(Change::Vanished(k.0.clone(), k.1.clone()));
                }
            }
            for (k, e) in new.iter() {
                if p.entries.get(k) != Some(e) && e.available {
                    changes.push(Change::Appeared(e.clone()));
                }
            }
            std::mem::swap(&mut p.entries, &mut new);
            changes
        })
    }

    /// Applies a delta (the peer's sessions announce their own presence, so
    /// deltas produce no synthesized changes).
    pub fn delta(&self, node: &str, up: Vec<ResourceEntry>, down: Vec<ResourceKey>) {
        self.with(|peers| {
            let p = peers.entry(node.to_owned()).or_default();
            for e in up {
                p.entries.insert((e.user.clone(), e.resource.clone()), e);
            }
            for k in down {
                p.entries.remove(&(k.user, k.resource));
            }
        })
    }

    /// Drops the entries of peers silent for longer than `lease`.
    pub fn expire(&self, now: Instant, lease: Duration) -> Vec<(String, Vec<Change>)> {
        self.with(|peers| {
            let mut out = Vec::new();
            for (node, p) in peers.iter_mut() {
                let silent = p.last_heard.is_none_or(|t| now.duration_since(t) > lease);
                if p.alive && silent {
                    p.alive = false;
                    let gone = p
                        .entries
                        .drain()
                        .map(|((u, r), _)| Change::Vanished(u, r))
                        .collect();
                    out.push((node.clone(), gone));
                }
            }
            out
        })
    }

    /// Resources of `user` on live peers, with the node holding each.
    pub fn resources(&self, user: &str) -> Vec<(String, ResourceEntry)> {
        self.with(|peers| {
            peers
                .iter()
                .filter(|(_, p)| p.alive)
                .flat_map(|(n, p)| {
                    p.entries
                        .values()
                        .filter(|e| e.user == user)
                        .map(move |e| (n.clone(), e.clone()))
                })
                .collect()
        })
    }

    /// Which live peer holds `user/resource`.
    pub fn node_of(&self, user: &str, resource: &str) -> Option<String> {
        self.with(|peers| {
            let key = (user.to_owned(), resource.to_owned());
            peers
                .iter()
                .find(|(_, p)| p.alive && p.entries.contains_key(&key))
                .map(|(n, _)| n.clone())
        })
    }

    /// (alive, ms since heard, sessions, incarnation) of a peer.
    pub fn peer_summary(&self, node: &str, now: Instant) -> (bool, Option<u64>, u64, u64) {
        self.with(|peers| match peers.get(node) {
            Some(p) => (
                p.alive,
                p.last_heard.map(|t| now.duration_since(t).as_millis() as u64),
                p.entries.len() as u64,
                p.incarnation,
            ),
            None => (false, None, 0, 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: &str, res: &str) -> ResourceEntry {
        ResourceEntry {
            user: user.into(),
            resource: res.into(),
            available: true,
            ..Default::default()
        }
    }

    #[test]
    fn lease_expiry_drops_entries_and_snapshot_restores_them() {
        let d = Directory::default();
        let t0 = Instant::now();
        d.hello("c1", "c", 1, t0);
        d.snapshot("c1", vec![entry("carol", "phone")]);
        assert_eq!(d.resources("carol").len(), 1);
        let lease = Duration::from_secs(3);
        assert!(d.expire(t0 + Duration::from_secs(2), lease).is_empty());
        let gone = d.expire(t0 + Duration::from_secs(4), lease);
        assert_eq!(
            gone,
            vec![(
                "c1".to_string(),
                vec![Change::Vanished("carol".into(), "phone".into())]
            )]
        );
        assert!(d.resources("carol").is_empty());
        d.hello("c1", "c", 1, t0 + Duration::from_secs(5));
        let back = d.snapshot("c1", vec![entry("carol", "phone")]);
        assert_eq!(back, vec![Change::Appeared(entry("carol", "phone"))]);
        assert_eq!(d.node_of("carol", "phone").as_deref(), Some("c1"));
    }

    #[test]
    fn new_incarnation_forgets_the_old_sessions() {
        let d = Directory::default();
        let t0 = Instant::now();
        d.hello("c1", "c", 1, t0);
        d.snapshot("c1", vec![entry("carol", "phone")]);
        let gone = d.hello("c1", "c", 2, t0);
        assert_eq!(gone, vec![Change::Vanished("carol".into(), "phone".into())]);
        assert!(d.resources("carol").is_empty());
    }

    #[test]
    fn deltas_add_and_remove() {
        let d = Directory::default();
        d.hello("b1", "b", 1, Instant::now());
        d.delta("b1", vec![entry("bob", "a"), entry("bob", "b")], vec![]);
        d.delta(
            "b1",
            vec![],
            vec![ResourceKey {
                user: "bob".into(),
                resource: "a".into(),
            }],
        );
        let r = d.resources("bob");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].1.resource, "b");
    }
}
