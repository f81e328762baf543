//! The session router: which resources of which users are online, with
//! their presence, and a bounded queue into each session.
//!
//! [`Router`] is the seam the cluster layer implements to make sessions on
//! other nodes reachable; [`LocalRouter`] is the single-node implementation.

use minidom::Element;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Something delivered into a session's queue.
#[derive(Debug, Clone)]
pub enum Routed {
    /// A stanza to write to the client. Boxed: a session's queue reserves
    /// room for 32 items when it is created, whether or not anything ever
    /// arrives, and an inline element made that 3.4 KiB per idle session.
    Stanza(Box<Element>),
    /// Another session bound the same full JID; end this one with
    /// `<conflict/>` (RFC 6120 section 7.7.2.2).
    Conflict,
    /// An administrator disabled the account or ended its sessions: end
    /// this one with `<policy-violation/>` and this text.
    Revoked(Box<str>),
}

impl Routed {
    /// A stanza to write to the client.
    pub fn stanza(el: Element) -> Routed {
        Routed::Stanza(Box::new(el))
    }
}

/// What the router knows about one bound resource.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// The resourcepart.
    pub resource: String,
    /// The session that holds it.
    pub session_id: u64,
    /// Priority from the last presence (0 until then).
    pub priority: i8,
    /// Whether the resource sent initial presence and is not unavailable.
    pub available: bool,
    /// The last broadcast presence stanza, serialized and shared: about a
    /// hundred bytes where its element tree takes a kilobyte, and every
    /// lookup of a user's resources (each delivery) copies this info.
    /// [`ResourceInfo::presence_element`] parses it where it is used.
    pub presence: Option<Arc<str>>,
    /// Whether the resource requested the roster (receives roster pushes).
    pub interested: bool,
    /// Whether XEP-0280 carbons are enabled.
    pub carbons: bool,
    /// The node holding the session, `None` for this node.
    pub node: Option<String>,
    /// When the resource was bound (ms since the epoch; 0 when another
    /// node holds it).
    pub bound_ms: u64,
}

/// Largest stored presence parsed back, in bytes (a local one was bounded
/// by the stanza limit when it arrived, a peer's by the cluster link).
const PRESENCE_BYTES_MAX: usize = 1024 * 1024;
/// Deepest stored presence parsed back.
const PRESENCE_DEPTH_MAX: usize = 64;

impl ResourceInfo {
    /// The stored presence as an element (`None` if there is none, or if a
    /// peer's does not parse).
    pub fn presence_element(&self) -> Option<Element> {
        let xml = self.presence.as_deref()?;
        match crate::parser::parse_frame(xml.as_bytes(), PRESENCE_BYTES_MAX, PRESENCE_DEPTH_MAX) {
            Ok(el) => Some(el),
            Err(e) => {
                tracing::warn!(error = %e, resource = %self.resource, "stored presence does not parse");
                None
            }
        }
    }
}

/// Why a resource could not be bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// The user already has the maximum number of resources.
    #[error("too many resources bound for this user")]
    TooManyResources,
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    /// No session holds that resource.
    #[error("no such resource")]
    NotFound,
    /// The session's queue is full (the client is not reading).
    #[error("session queue full")]
    QueueFull,
}

/// Resolves users and resources to sessions and delivers to them.
pub trait Router: Send + Sync + 'static {
    /// Binds a resource; returns the id of the session it replaced, if any
    /// (that session has been sent [`Routed::Conflict`]).
    fn bind(
        &self,
        user: &str,
        resource: &str,
        session_id: u64,
        tx: crate::queue::Sender<Routed>,
        resources_max: usize,
    ) -> Result<Option<u64>, BindError>;
    /// Unbinds a resource if `session_id` still holds it.
    fn unbind(&self, user: &str, resource: &str, session_id: u64) -> bool;
    /// Changes what is known about a resource held by `session_id`.
    fn update(&self, user: &str, resource: &str, session_id: u64, f: &mut dyn FnMut(&mut ResourceInfo));
    /// All bound resources of a user.
    fn resources(&self, user: &str) -> Vec<ResourceInfo>;
    /// Whether one resource is bound anywhere (cheaper than `resources`
    /// where only existence matters, as for room occupants).
    fn has_resource(&self, user: &str, resource: &str) -> bool {
        self.resources(user).iter().any(|r| r.resource == resource)
    }
    /// Queues something for one resource.
    fn deliver(&self, user: &str, resource: &str, item: Routed) -> Result<(), DeliverError>;
    /// Number of bound sessions.
    fn session_count(&self) -> usize;
    /// Users with at least one session on this node.
    fn local_users(&self) -> Vec<String>;
    /// Every resource bound on this node, with its user.
    fn local_resources(&self) -> Vec<(String, ResourceInfo)>;
}

struct Entry {
    info: ResourceInfo,
    tx: crate::queue::Sender<Routed>,
}

/// The in-process router of one node.
#[derive(Default)]
pub struct LocalRouter {
    users: Mutex<HashMap<String, Vec<Entry>>>,
}

impl LocalRouter {
    /// An empty router.
    pub fn new() -> LocalRouter {
        LocalRouter::default()
    }
}

impl Router for LocalRouter {
    fn bind(
        &self,
        user: &str,
        resource: &str,
        session_id: u64,
        tx: crate::queue::Sender<Routed>,
        resources_max: usize,
    ) -> Result<Option<u64>, BindError> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let list = users.entry(user.to_owned()).or_default();
        let info = ResourceInfo {
            resource: resource.to_owned(),
            session_id,
            priority: 0,
            available: false,
            presence: None,
            interested: false,
            carbons: false,
            node: None,
            bound_ms: chorus_core::time::now_millis(),
        };
        if let Some(old) = list.iter_mut().find(|e| e.info.resource == resource) {
            let replaced = old.info.session_id;
            let _ = old.tx.try_send(Routed::Conflict);
            *old = Entry { info, tx };
            return Ok(Some(replaced));
        }
        if list.len() >= resources_max {
            return Err(BindError::TooManyResources);
        }
        // Most users have one or two resources: grow one at a time (a
        // plain push reserves four entries, 0.7 KiB, for the first).
        list.reserve_exact(1);
        list.push(Entry { info, tx });
        Ok(None)
    }

    fn unbind(&self, user: &str, resource: &str, session_id: u64) -> bool {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let Some(list) = users.get_mut(user) else {
            return false;
        };
        let before = list.len();
        list.retain(|e| !(e.info.resource == resource && e.info.session_id == session_id));
        let removed = list.len() != before;
        if list.is_empty() {
            users.remove(user);
        }
        removed
    }

    fn update(&self, user: &str, resource: &str, session_id: u64, f: &mut dyn FnMut(&mut ResourceInfo)) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = users.get_mut(user).and_then(|l| {
            l.iter_mut()
                .find(|e| e.info.resource == resource && e.info.session_id == session_id)
        }) {
            f(&mut e.info);
        }
    }

    fn resources(&self, user: &str) -> Vec<ResourceInfo> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .get(user)
            .map(|l| l.iter().map(|e| e.info.clone()).collect())
            .unwrap_or_default()
    }

    fn deliver(&self, user: &str, resource: &str, item: Routed) -> Result<(), DeliverError> {
        let tx = {
            let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            users
                .get(user)
                .and_then(|l| l.iter().find(|e| e.info.resource == resource))
                .map(|e| e.tx.clone())
                .ok_or(DeliverError::NotFound)?
        };
        match tx.try_send(item) {
            Ok(()) => {
                let depth = tx.max_capacity() - tx.capacity();
                metrics::histogram!("chorus_session_queue_depth").record(depth as f64);
                Ok(())
            }
            Err(crate::queue::TrySendError::Full(_)) => {
                metrics::counter!("chorus_router_queue_full_total").increment(1);
                Err(DeliverError::QueueFull)
            }
            Err(crate::queue::TrySendError::Closed(_)) => Err(DeliverError::NotFound),
        }
    }

    fn session_count(&self) -> usize {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.values().map(Vec::len).sum()
    }

    fn local_users(&self) -> Vec<String> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.keys().cloned().collect()
    }

    fn local_resources(&self) -> Vec<(String, ResourceInfo)> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .iter()
            .flat_map(|(u, l)| l.iter().map(|e| (u.clone(), e.info.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_conflict_replaces_and_signals_old_session() {
        let r = LocalRouter::new();
        let (tx1, mut rx1) = crate::queue::channel(4);
        let (tx2, _rx2) = crate::queue::channel(4);
        assert_eq!(r.bind("a", "phone", 1, tx1, 4), Ok(None));
        assert_eq!(r.bind("a", "phone", 2, tx2, 4), Ok(Some(1)));
        assert!(matches!(rx1.try_recv(), Ok(Routed::Conflict)));
        assert!(
            !r.unbind("a", "phone", 1),
            "the old session must not unbind the new one"
        );
        assert_eq!(r.resources("a")[0].session_id, 2);
    }

    #[test]
    fn resource_limit_and_queue_full() {
        let r = LocalRouter::new();
        let (tx, _rx) = crate::queue::channel(1);
        r.bind("a", "1", 1, tx.clone(), 2).expect("bind");
        r.bind("a", "2", 2, tx.clone(), 2).expect("bind");
        assert_eq!(r.bind("a", "3", 3, tx, 2), Err(BindError::TooManyResources));
        let el = crate::xml::new("message", crate::ns::CLIENT);
        assert_eq!(r.deliver("a", "1", Routed::stanza(el.clone())), Ok(()));
        assert_eq!(
            r.deliver("a", "1", Routed::stanza(el.clone())),
            Err(DeliverError::QueueFull)
        );
        assert_eq!(
            r.deliver("b", "1", Routed::stanza(el)),
            Err(DeliverError::NotFound)
        );
        assert_eq!(r.session_count(), 2);
    }
}
