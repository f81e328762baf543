//! The session directory of the other nodes: which resources each peer
//! holds, with leases. Soft state: rebuilt from snapshots on reconnect and
//! dropped when a peer falls silent for longer than its lease.
//!
//! Each inbound link is a stream, numbered by its hello; only the peer's
//! newest stream may change what we hold for it. After a silent network
//! cut, the old connection's frames can still arrive (retransmitted by the
//! kernel) after the new connection's snapshot; unfenced, an old "logged
//! in" delta would leave a ghost session. `chorus-sim` found this.

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
    /// The stream of its newest hello: frames from others are stale.
    pub stream: u64,
    /// The connection number of that hello (within `incarnation`).
    pub connection: u64,
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
    streams: std::sync::atomic::AtomicU64,
}

impl Directory {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, PeerView>) -> R) -> R {
        f(&mut self.peers.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A peer said hello on a new stream, for its `connection`-th
    /// connection of `incarnation`; returns the stream's number (for the
    /// frames that follow on it) and what changed. A hello older than the
    /// newest one seen (a late arrival from a dead connection) opens a
    /// stream whose frames are all ignored. A new incarnation drops what
    /// its old self held.
    pub fn hello(
        &self,
        node: &str,
        site: &str,
        (incarnation, connection): (u64, u64),
        now: Instant,
    ) -> (u64, Vec<Change>) {
        let stream = self.streams.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let changes = self.with(|peers| {
            let p = peers.entry(node.to_owned()).or_default();
            if (incarnation, connection) < (p.incarnation, p.connection) {
                return Vec::new();
            }
            p.stream = stream;
            p.connection = connection;
            p.site = site.to_owned();
            p.last_heard = Some(now);
            let mut changes = Vec::new();
            if !p.alive {
                // Already reported gone at lease expiry; the snapshot that
                // follows reports what is there now.
                p.entries.clear();
            } else if p.incarnation != incarnation {
                changes = p
                    .entries
                    .drain()
                    .map(|((u, r), _)| Change::Vanished(u, r))
                    .collect();
            }
            p.incarnation = incarnation;
            p.alive = true;
            changes
        });
        (stream, changes)
    }

    /// Any frame on a peer's newest stream renews its lease. A peer whose
    /// lease ran out but whose connection held (it was paused, or the
    /// network stalled) comes back with the sessions it had: the stream is
    /// ordered and lossless, so those plus the deltas that follow are
    /// exact. Returns them as appeared, for presence.
    pub fn heard(&self, node: &str, stream: u64, now: Instant) -> Vec<Change> {
        self.with(|peers| {
            let Some(p) = peers.get_mut(node) else {
                return Vec::new();
            };
            if p.stream != stream {
                return Vec::new();
            }
            p.last_heard = Some(now);
            if p.alive {
                return Vec::new();
            }
            p.alive = true;
            p.entries
                .values()
                .filter(|e| e.available)
                .map(|e| Change::Appeared(e.clone()))
                .collect()
        })
    }

    /// Replaces a peer's entries with a snapshot from `stream`; reports
    /// what changed. A stale stream's snapshot changes nothing.
    pub fn snapshot(&self, node: &str, stream: u64, entries: Vec<ResourceEntry>) -> Vec<Change> {
        self.with(|peers| {
            let p = peers.entry(node.to_owned()).or_default();
            if p.stream != stream {
                return Vec::new();
            }
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

    /// Applies a delta from `stream` (the peer's sessions announce their
    /// own presence, so deltas produce no synthesized changes). A stale
    /// stream's delta is dropped.
    pub fn delta(&self, node: &str, stream: u64, up: Vec<ResourceEntry>, down: Vec<ResourceKey>) {
        self.with(|peers| {
            let p = peers.entry(node.to_owned()).or_default();
            if p.stream != stream {
                return;
            }
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
                    // Kept (but hidden) in case the same connection wakes
                    // up again; see `heard`.
                    p.alive = false;
                    let gone = p
                        .entries
                        .keys()
                        .map(|(u, r)| Change::Vanished(u.clone(), r.clone()))
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
                if p.alive { p.entries.len() as u64 } else { 0 },
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
        let (s1, _) = d.hello("c1", "c", (1, 1), t0);
        d.snapshot("c1", s1, vec![entry("carol", "phone")]);
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
        let (s2, _) = d.hello("c1", "c", (1, 1), t0 + Duration::from_secs(5));
        let back = d.snapshot("c1", s2, vec![entry("carol", "phone")]);
        assert_eq!(back, vec![Change::Appeared(entry("carol", "phone"))]);
        assert_eq!(d.node_of("carol", "phone").as_deref(), Some("c1"));
    }

    #[test]
    fn new_incarnation_forgets_the_old_sessions() {
        let d = Directory::default();
        let t0 = Instant::now();
        let (s1, _) = d.hello("c1", "c", (1, 1), t0);
        d.snapshot("c1", s1, vec![entry("carol", "phone")]);
        let (_, gone) = d.hello("c1", "c", (2, 1), t0);
        assert_eq!(gone, vec![Change::Vanished("carol".into(), "phone".into())]);
        assert!(d.resources("carol").is_empty());
    }

    #[test]
    fn deltas_add_and_remove() {
        let d = Directory::default();
        let (s1, _) = d.hello("b1", "b", (1, 1), Instant::now());
        d.delta("b1", s1, vec![entry("bob", "a"), entry("bob", "b")], vec![]);
        d.delta(
            "b1",
            s1,
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

    #[test]
    fn frames_from_an_older_stream_change_nothing() {
        let d = Directory::default();
        let t0 = Instant::now();
        let (old, _) = d.hello("b1", "b", (1, 1), t0);
        d.delta("b1", old, vec![entry("bob", "a")], vec![]);
        // A silent cut: the peer reconnects; bob logged out meanwhile.
        let (new, _) = d.hello("b1", "b", (1, 2), t0 + Duration::from_secs(4));
        d.snapshot("b1", new, vec![]);
        // The old connection's retransmitted frames arrive late.
        d.delta("b1", old, vec![entry("bob", "b")], vec![]);
        assert!(d.snapshot("b1", old, vec![entry("bob", "a")]).is_empty());
        assert!(d.resources("bob").is_empty(), "ghost: {:?}", d.resources("bob"));
        // Even the old connection's hello, arriving last, changes nothing.
        let (late, _) = d.hello("b1", "b", (1, 1), t0 + Duration::from_secs(5));
        d.delta("b1", late, vec![entry("bob", "c")], vec![]);
        d.delta("b1", new, vec![entry("bob", "d")], vec![]);
        let r = d.resources("bob");
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].1.resource, "d");
        d.heard("b1", old, t0 + Duration::from_secs(60));
        assert!(
            !d.expire(t0 + Duration::from_secs(9), Duration::from_secs(3))
                .is_empty()
        );
    }

    #[test]
    fn a_peer_heard_again_on_the_same_stream_comes_back_with_its_sessions() {
        // A paused peer: its lease runs out, then its connection wakes up.
        let d = Directory::default();
        let t0 = Instant::now();
        let (s1, _) = d.hello("c1", "c", (1, 1), t0);
        d.snapshot("c1", s1, vec![entry("carol", "phone")]);
        let lease = Duration::from_secs(3);
        let gone = d.expire(t0 + Duration::from_secs(4), lease);
        assert_eq!(gone[0].1, vec![Change::Vanished("carol".into(), "phone".into())]);
        assert!(d.resources("carol").is_empty());
        assert_eq!(d.peer_summary("c1", t0).2, 0);
        let back = d.heard("c1", s1, t0 + Duration::from_secs(5));
        assert_eq!(back, vec![Change::Appeared(entry("carol", "phone"))]);
        assert_eq!(d.node_of("carol", "phone").as_deref(), Some("c1"));
        assert!(d.heard("c1", s1, t0 + Duration::from_secs(6)).is_empty());
    }
}
