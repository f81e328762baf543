//! [`Cluster`]: this node's view of the cluster and the [`Router`] that
//! reaches sessions on every node.

use crate::directory::{Change, Directory};
use crate::link::Link;
use chorus_core::config::Config;
use chorus_core::replication::{ChangeOrigin, ReplItem, Table};
use chorus_proto::v1::{ResourceEntry, ResourceKey};
use chorus_store::RocksStore;
use chorus_xmpp::context::Context;
use chorus_xmpp::router::{BindError, DeliverError, LocalRouter, ResourceInfo, Routed, Router};
use chorus_xmpp::xml::ElementExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;

/// Replication events waiting to be handed to local sessions.
const EVENT_QUEUE_MAX: usize = 4096;

/// Something replication brought in that local sessions must hear about.
/// Handled off the storage write path, which holds the store's locks.
pub(crate) enum Event {
    /// Offline messages for this user arrived, written by the given peer
    /// (`None`: by this node or an unknown one).
    OfflineArrived(String, Option<Arc<Link>>),
    /// (user, contact): the contact asked to subscribe to the user.
    SubscriptionRequest(String, String),
}

/// A stanza waiting in the durable outbox for a peer.
#[derive(Serialize, Deserialize)]
pub(crate) struct OutboxRecord {
    pub user: String,
    pub resource: String,
    pub xml: String,
    /// W3C traceparent of the routing span, when tracing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// This node's membership, directory, links and local sessions.
pub struct Cluster {
    /// This node's id.
    pub node_id: String,
    /// This node's site.
    pub site: String,
    /// Increases at every start.
    pub incarnation: u64,
    /// Peers' sessions.
    pub directory: Directory,
    /// Sessions on this node.
    pub local: LocalRouter,
    /// Outbound links by peer id.
    pub links: HashMap<String, Arc<Link>>,
    /// Who may call this node's cluster API.
    pub access: crate::access::Access,
    /// How far ahead of our clock a peer's timestamps may be (ms).
    pub max_clock_skew_ms: u64,
    /// The durable store (replicated tables and the stanza outbox).
    pub store: Arc<RocksStore>,
    /// The archive's Raft node, once started.
    pub raft: OnceLock<chorus_archive::raft::ArchiveRaft>,
    /// The archive's local replica, once started (peers compare chains).
    pub archive_sm: OnceLock<chorus_archive::state_machine::ArchiveStateMachine>,
    /// Copies shared files to this node, once started.
    pub files: OnceLock<Arc<crate::files::FileSync>>,
    ctx: OnceLock<Arc<Context>>,
    event_tx: mpsc::Sender<Event>,
    event_rx: std::sync::Mutex<Option<mpsc::Receiver<Event>>>,
    /// Serializes intake of stanzas from peers (link frames and pulls), so
    /// the per-origin de-duplication mark only moves forward.
    intake: std::sync::Mutex<()>,
}

impl Cluster {
    /// Builds the cluster state for a node; `start` runs it.
    pub fn new(config: &Config, store: Arc<RocksStore>, incarnation: u64) -> Arc<Cluster> {
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE_MAX);
        let links = config
            .cluster
            .peers
            .iter()
            .map(|p| (p.id.clone(), Arc::new(Link::new(p.clone()))))
            .collect();
        let cluster = Arc::new(Cluster {
            node_id: config.cluster.node_id.clone(),
            site: config.cluster.site.clone(),
            incarnation,
            directory: Directory::default(),
            local: LocalRouter::new(),
            links,
            access: crate::access::Access::new(
                &config.cluster.node_id,
                &config.cluster.listen.map(|a| a.to_string()).unwrap_or_default(),
                &config.cluster.peers,
            ),
            max_clock_skew_ms: config.cluster.max_clock_skew_ms,
            store: store.clone(),
            raft: OnceLock::new(),
            archive_sm: OnceLock::new(),
            files: OnceLock::new(),
            ctx: OnceLock::new(),
            event_tx,
            event_rx: std::sync::Mutex::new(Some(event_rx)),
            intake: std::sync::Mutex::new(()),
        });
        store.set_max_clock_skew_ms(config.cluster.max_clock_skew_ms);
        let weak = Arc::downgrade(&cluster);
        store.set_listener(Arc::new(move |items: &[ReplItem], origin: ChangeOrigin| {
            if let Some(c) = weak.upgrade() {
                c.on_store_change(items, origin);
            }
        }));
        cluster
    }

    /// Connects the XMPP context (created with this cluster's router).
    pub fn set_context(&self, ctx: Arc<Context>) {
        let _ = self.ctx.set(ctx);
    }

    pub(crate) fn ctx(&self) -> Option<&Arc<Context>> {
        self.ctx.get()
    }

    /// Our link to the peer whose versions carry `tag`.
    fn link_by_tag(&self, tag: u32) -> Option<Arc<Link>> {
        self.links
            .values()
            .find(|l| chorus_core::hlc::node_tag(&l.peer.id) == tag)
            .cloned()
    }

    pub(crate) fn take_event_rx(&self) -> Option<mpsc::Receiver<Event>> {
        self.event_rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn on_store_change(&self, items: &[ReplItem], origin: ChangeOrigin) {
        match origin {
            ChangeOrigin::Local => {
                for link in self.links.values() {
                    link.queue_items(items.to_vec());
                }
            }
            ChangeOrigin::Remote => {
                if let Some(files) = self.files.get() {
                    for item in items.iter().filter(|i| i.table == Table::Uploads) {
                        if let Some(v) = &item.lww.value {
                            files.on_upload_row(v);
                        }
                    }
                }
                for item in items.iter().filter(|i| i.table == Table::Rosters) {
                    self.on_remote_roster_item(item);
                }
                for item in items
                    .iter()
                    .filter(|i| i.table == Table::Offline && i.lww.value.is_some())
                {
                    if let Some(user) = item.key.split(|b| *b == 0).next() {
                        let user = String::from_utf8_lossy(user).into_owned();
                        if !self.local.resources(&user).is_empty() {
                            let writer = self.link_by_tag(item.lww.version.node);
                            let _ = self.event_tx.try_send(Event::OfflineArrived(user, writer));
                        }
                    }
                }
            }
        }
    }

    /// Delivers stanzas a peer routed here, dropping any whose sequence
    /// number is not above the persisted mark for that peer; returns the new
    /// mark (everything up to it is handled).
    pub fn accept_stanzas(
        &self,
        origin: &str,
        stanzas: Vec<chorus_proto::v1::Stanza>,
    ) -> Result<u64, chorus_core::store::StoreError> {
        let _g = self.intake.lock().unwrap_or_else(|e| e.into_inner());
        let before = self.store.inbox_mark(origin)?;
        let ctx = self.ctx();
        let (mark, duplicates) =
            chorus_core::replication::intake(before, stanzas.into_iter().map(|s| (s.seq, s)), |s| {
                if let Some(ctx) = ctx
                    && let Some(el) = chorus_xmpp::remote::parse_stanza(ctx, &s.xml)
                {
                    let span = tracing::info_span!("deliver.from_peer", origin, stanza = el.name());
                    crate::trace_ctx::set_parent(&span, &s.traceparent);
                    let _g = span.entered();
                    chorus_xmpp::remote::deliver_from_peer(ctx, &s.user, &s.resource, el);
                }
            });
        metrics::counter!("chorus_cluster_duplicates_dropped_total").increment(duplicates);
        if mark != before {
            self.store.set_inbox_mark(origin, mark)?;
        }
        Ok(mark)
    }

    /// A replicated roster item that carries a new subscription request for
    /// a user online here: hand it to the user's sessions.
    fn on_remote_roster_item(&self, item: &ReplItem) {
        let Some(value) = &item.lww.value else { return };
        let Ok(roster_item) = serde_json::from_slice::<chorus_core::roster::RosterItem>(value) else {
            return;
        };
        if !roster_item.pending_in || roster_item.subscription.has_from() {
            return;
        }
        let Some(user) = item.key.split(|b| *b == 0).next() else {
            return;
        };
        let user = String::from_utf8_lossy(user).into_owned();
        if self.local.resources(&user).iter().any(|r| r.available) {
            let _ = self
                .event_tx
                .try_send(Event::SubscriptionRequest(user, roster_item.jid));
        }
    }

    /// The directory entry announcing a local resource.
    pub(crate) fn entry(user: &str, info: &ResourceInfo) -> ResourceEntry {
        ResourceEntry {
            user: user.to_owned(),
            resource: info.resource.clone(),
            priority: info.priority as i32,
            available: info.available,
            presence_xml: info.presence.as_deref().map(str::to_owned).unwrap_or_default(),
            interested: info.interested,
            carbons: info.carbons,
        }
    }

    /// Every local resource as directory entries (for snapshots).
    pub fn local_entries(&self) -> Vec<ResourceEntry> {
        self.local
            .local_resources()
            .iter()
            .map(|(u, i)| Cluster::entry(u, i))
            .collect()
    }

    fn announce_up(&self, user: &str, resource: &str) {
        if let Some(info) = self
            .local
            .resources(user)
            .into_iter()
            .find(|r| r.resource == resource)
        {
            let e = Cluster::entry(user, &info);
            for link in self.links.values() {
                link.queue_up(e.clone());
            }
        }
    }

    /// Presence notifications for sessions that appeared or vanished
    /// without announcing it themselves.
    pub(crate) fn apply_changes(&self, changes: Vec<Change>) {
        let Some(ctx) = self.ctx() else { return };
        let mut vanished = Vec::new();
        for c in changes {
            match c {
                Change::Vanished(user, resource) => {
                    chorus_xmpp::remote::remote_presence_changed(ctx, &user, &resource, None);
                    vanished.push(format!("{user}@{}/{resource}", ctx.domain));
                }
                Change::Appeared(e) => {
                    let presence = (!e.presence_xml.is_empty())
                        .then(|| chorus_xmpp::remote::parse_stanza(ctx, &e.presence_xml))
                        .flatten();
                    if presence.is_some() {
                        chorus_xmpp::remote::remote_presence_changed(ctx, &e.user, &e.resource, presence);
                    }
                }
            }
        }
        // Rooms tell their occupants here who left, in one pass.
        chorus_xmpp::session::occupants_gone(ctx, &vanished);
    }
}

/// The router of a clustered node.
pub struct ClusterRouter(pub Arc<Cluster>);

impl Router for ClusterRouter {
    fn bind(
        &self,
        user: &str,
        resource: &str,
        session_id: u64,
        tx: chorus_xmpp::queue::Sender<Routed>,
        resources_max: usize,
    ) -> Result<Option<u64>, BindError> {
        let remote = self.0.directory.resources(user).len();
        let room = resources_max.saturating_sub(remote).max(1);
        let r = self.0.local.bind(user, resource, session_id, tx, room)?;
        if let Some(node) = self.0.directory.node_of(user, resource)
            && let Some(link) = self.0.links.get(&node)
        {
            let record = OutboxRecord {
                user: user.to_owned(),
                resource: resource.to_owned(),
                xml: chorus_xmpp::remote::conflict_signal().to_xml(),
                traceparent: None,
            };
            if let Err(e) = link.send_stanza(&self.0.store, &record) {
                tracing::warn!(error = %e, "cannot tell a peer about a resource conflict");
            }
        }
        self.0.announce_up(user, resource);
        Ok(r)
    }

    fn unbind(&self, user: &str, resource: &str, session_id: u64) -> bool {
        let removed = self.0.local.unbind(user, resource, session_id);
        if removed {
            let k = ResourceKey {
                user: user.to_owned(),
                resource: resource.to_owned(),
            };
            for link in self.0.links.values() {
                link.queue_down(k.clone());
            }
        }
        removed
    }

    fn update(&self, user: &str, resource: &str, session_id: u64, f: &mut dyn FnMut(&mut ResourceInfo)) {
        self.0.local.update(user, resource, session_id, f);
        self.0.announce_up(user, resource);
    }

    fn resources(&self, user: &str) -> Vec<ResourceInfo> {
        let mut out = self.0.local.resources(user);
        for (node, e) in self.0.directory.resources(user) {
            if out.iter().any(|r| r.resource == e.resource) {
                continue;
            }
            // Kept as the peer sent it: parsed only where it is used
            // (`ResourceInfo::presence_element`), not on every lookup.
            let presence = (!e.presence_xml.is_empty()).then(|| Arc::from(e.presence_xml.as_str()));
            out.push(ResourceInfo {
                resource: e.resource,
                session_id: 0,
                priority: e.priority.clamp(-128, 127) as i8,
                available: e.available,
                presence,
                interested: e.interested,
                carbons: e.carbons,
                node: Some(node),
                bound_ms: 0,
            });
        }
        out
    }

    fn has_resource(&self, user: &str, resource: &str) -> bool {
        self.0.local.has_resource(user, resource) || self.0.directory.node_of(user, resource).is_some()
    }

    fn deliver(&self, user: &str, resource: &str, item: Routed) -> Result<(), DeliverError> {
        match self.0.local.deliver(user, resource, item.clone()) {
            Err(DeliverError::NotFound) => {}
            other => return other,
        }
        let Routed::Stanza(el) = item else {
            return Err(DeliverError::NotFound);
        };
        let node = self
            .0
            .directory
            .node_of(user, resource)
            .ok_or(DeliverError::NotFound)?;
        let link = self.0.links.get(&node).ok_or(DeliverError::NotFound)?;
        if el.name() == "presence" && !link.is_up() {
            // Presence is soft state: a stale update delivered after a heal
            // would be wrong, and lease expiry already tells subscribers.
            return Err(DeliverError::NotFound);
        }
        let _span = tracing::info_span!("route.remote", peer = %node, stanza = el.name()).entered();
        let record = OutboxRecord {
            user: user.to_owned(),
            resource: resource.to_owned(),
            xml: el.to_xml(),
            traceparent: crate::trace_ctx::current_traceparent(),
        };
        link.send_stanza(&self.0.store, &record).map_err(|e| {
            tracing::error!(error = %e, peer = %node, "cannot queue a stanza for a peer");
            DeliverError::QueueFull
        })
    }

    fn session_count(&self) -> usize {
        self.0.local.session_count()
    }

    fn local_users(&self) -> Vec<String> {
        self.0.local.local_users()
    }

    fn local_resources(&self) -> Vec<(String, ResourceInfo)> {
        self.0.local.local_resources()
    }
}
