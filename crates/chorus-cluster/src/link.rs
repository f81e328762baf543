//! The outbound link to one peer: reconnects with backoff, then streams
//! Hello, a directory snapshot, deltas, heartbeats, live replicated items
//! and the durable stanza outbox; acks from the peer trim the outbox.

use crate::antientropy;
use crate::node::{Cluster, OutboxRecord};
use crate::tls::ClusterTls;
use chorus_core::config::PeerConfig;
use chorus_core::failpoint::{self, Failpoint};
use chorus_core::replication::ReplItem;
use chorus_core::store::StoreError;
use chorus_proto::v1::cluster_client::ClusterClient;
use chorus_proto::v1::{
    DirectoryDelta, DirectorySnapshot, Frame, Heartbeat, Hello, Item, ItemBatch, ResourceEntry, ResourceKey,
    Stanza, StanzaBatch, frame,
};
use chorus_store::RocksStore;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};
use tonic::transport::{Channel, Endpoint};

/// Directory deltas and replicated items queued per peer before the link
/// falls back to a full snapshot and anti-entropy.
const LINK_QUEUE_MAX: usize = 16_384;
/// Frames buffered towards the gRPC stream.
const FRAMES_IN_FLIGHT_MAX: usize = 64;
/// Stanzas per frame.
const STANZAS_PER_FRAME_MAX: usize = 256;
/// Items per frame.
const ITEMS_PER_FRAME_MAX: usize = 512;
/// Largest gRPC message in either direction, in bytes (a full batch of
/// maximum-size stanzas fits).
pub const GRPC_MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Connection attempt timeout.
const CONNECT_TIMEOUT_MS: u64 = 2000;
/// Longest pause between reconnection attempts.
const BACKOFF_MAX_MS: u64 = 2000;
/// Anti-entropy runs at least this often while a link is up.
const ANTI_ENTROPY_INTERVAL_SECS: u64 = 30;

enum Outgoing {
    Up(ResourceEntry),
    Down(ResourceKey),
    Items(Vec<ReplItem>),
}

/// One peer's outbound link.
pub struct Link {
    /// The peer.
    pub peer: PeerConfig,
    tx: mpsc::Sender<Outgoing>,
    rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    resync: AtomicBool,
    up: AtomicBool,
    /// Connections opened so far (numbers each hello).
    connections: AtomicU64,
    outbox: Notify,
    lag: AtomicU64,
    /// True once, since the link last came up, we have pulled the stanzas
    /// the peer queued for us.
    pulled: watch::Sender<bool>,
}

/// How long replicated offline messages wait for their writer's outbox to
/// be pulled before they are delivered anyway (the writer may be down).
pub const OUTBOX_BARRIER_WAIT: Duration = Duration::from_secs(5);

pub(crate) fn to_proto(items: &[ReplItem]) -> Vec<Item> {
    items
        .iter()
        .map(|i| Item {
            table: i.table.index(),
            key: i.key.clone(),
            lww: i.lww.encode(),
        })
        .collect()
}

pub(crate) fn from_proto(items: Vec<Item>) -> Vec<ReplItem> {
    items
        .into_iter()
        .filter_map(|i| {
            Some(ReplItem {
                table: chorus_core::replication::Table::from_index(i.table)?,
                key: i.key,
                lww: chorus_core::lww::Lww::decode(&i.lww)?,
            })
        })
        .collect()
}

fn frame(body: frame::Body) -> Frame {
    Frame { body: Some(body) }
}

impl Link {
    /// A link that is not running yet.
    pub fn new(peer: PeerConfig) -> Link {
        let (tx, rx) = mpsc::channel(LINK_QUEUE_MAX);
        Link {
            peer,
            tx,
            rx: Mutex::new(Some(rx)),
            resync: AtomicBool::new(false),
            up: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            outbox: Notify::new(),
            lag: AtomicU64::new(0),
            pulled: watch::Sender::new(false),
        }
    }

    /// Whether the stream to the peer is established.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Waits until we have pulled the peer's outbox for us since the link
    /// came up, or `max` has passed.
    pub async fn outbox_pulled(&self, max: Duration) {
        let mut rx = self.pulled.subscribe();
        let _ = tokio::time::timeout(max, rx.wait_for(|p| *p)).await;
    }

    pub(crate) fn set_outbox_pulled(&self, pulled: bool) {
        self.pulled.send_replace(pulled);
    }

    /// Replicated items queued but not yet sent.
    pub fn lag(&self) -> u64 {
        self.lag.load(Ordering::Relaxed)
    }

    fn queue(&self, o: Outgoing) {
        if self.tx.try_send(o).is_err() {
            // Too much backlog (or no task): resend everything on the next
            // tick instead of growing without bound.
            self.resync.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn queue_up(&self, e: ResourceEntry) {
        self.queue(Outgoing::Up(e));
    }

    pub(crate) fn queue_down(&self, k: ResourceKey) {
        self.queue(Outgoing::Down(k));
    }

    pub(crate) fn queue_items(&self, items: Vec<ReplItem>) {
        self.lag.fetch_add(items.len() as u64, Ordering::Relaxed);
        self.queue(Outgoing::Items(items));
    }

    pub(crate) fn send_stanza(&self, store: &RocksStore, record: &OutboxRecord) -> Result<(), StoreError> {
        if !self.is_up() && failpoint::active(Failpoint::SkipOutboxWhenDown) {
            // The re-introduced bug the chaos suite must catch.
            return Ok(());
        }
        let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Io(e.to_string()))?;
        store.outbox_push(&self.peer.id, &bytes)?;
        metrics::counter!("chorus_cluster_stanzas_queued_total").increment(1);
        self.outbox.notify_one();
        Ok(())
    }

    /// Runs the link until shutdown.
    pub async fn run(
        self: Arc<Self>,
        cluster: Arc<Cluster>,
        tls: ClusterTls,
        heartbeat: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let Some(mut queue) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let mut backoff = 100;
        loop {
            if *stop.borrow() {
                return;
            }
            match self.connect(&tls).await {
                Ok(client) => {
                    backoff = 100;
                    tracing::info!(peer = %self.peer.id, "cluster link up");
                    self.session(&cluster, client, &mut queue, heartbeat, &mut stop)
                        .await;
                    self.up.store(false, Ordering::Relaxed);
                    self.set_outbox_pulled(false);
                    tracing::info!(peer = %self.peer.id, "cluster link down");
                }
                Err(e) => tracing::debug!(peer = %self.peer.id, error = %e, "cannot reach peer"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(backoff)) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX_MS);
        }
    }

    async fn connect(&self, tls: &ClusterTls) -> Result<ClusterClient<Channel>, tonic::transport::Error> {
        let ep = Endpoint::from_shared(format!("https://{}", self.peer.addr))?
            .tls_config(tls.client(&self.peer.id))?
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(3));
        let ch = ep.connect().await?;
        Ok(ClusterClient::new(ch)
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX))
    }

    async fn session(
        &self,
        cluster: &Arc<Cluster>,
        mut client: ClusterClient<Channel>,
        queue: &mut mpsc::Receiver<Outgoing>,
        heartbeat: Duration,
        stop: &mut watch::Receiver<bool>,
    ) {
        let (ftx, frx) = mpsc::channel::<Frame>(FRAMES_IN_FLIGHT_MAX);
        let hello = Hello {
            node_id: cluster.node_id.clone(),
            site: cluster.site.clone(),
            incarnation: cluster.incarnation,
            connection: self.connections.fetch_add(1, Ordering::Relaxed) + 1,
        };
        if ftx.send(frame(frame::Body::Hello(hello))).await.is_err() {
            return;
        }
        // Everything queued before now is covered by the snapshot and by
        // anti-entropy.
        while queue.try_recv().is_ok() {}
        self.lag.store(0, Ordering::Relaxed);
        self.resync.store(false, Ordering::Relaxed);
        let snap = DirectorySnapshot {
            entries: cluster.local_entries(),
        };
        if ftx.send(frame(frame::Body::Snapshot(snap))).await.is_err() {
            return;
        }
        let mut acks = match client
            .link(tokio_stream::wrappers::ReceiverStream::new(frx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(e) => {
                tracing::debug!(peer = %self.peer.id, error = %e, "link refused");
                return;
            }
        };
        self.up.store(true, Ordering::Relaxed);
        let (dead_tx, mut dead_rx) = mpsc::channel::<()>(1);
        let (store, peer) = (cluster.store.clone(), self.peer.id.clone());
        let ack_task = tokio::spawn(async move {
            while let Ok(Some(a)) = acks.message().await {
                if let Err(e) = store.outbox_ack(&peer, a.stanza_seq) {
                    tracing::error!(error = %e, "cannot trim the outbox");
                }
            }
            let _ = dead_tx.send(()).await;
        });
        let ae = tokio::spawn(antientropy::run(
            cluster.clone(),
            client.clone(),
            self.peer.id.clone(),
        ));
        let mut last_sent = 0u64;
        let mut tick = tokio::time::interval(heartbeat);
        let mut ae_tick = tokio::time::interval(Duration::from_secs(ANTI_ENTROPY_INTERVAL_SECS));
        ae_tick.tick().await;
        let mut ae_task = Some(ae);
        loop {
            let ok = tokio::select! {
                _ = stop.changed() => false,
                _ = dead_rx.recv() => false,
                _ = tick.tick() => self.on_tick(cluster, &ftx, &client).await,
                _ = ae_tick.tick() => {
                    if ae_task.as_ref().is_none_or(|t| t.is_finished()) {
                        ae_task = Some(tokio::spawn(antientropy::run(cluster.clone(), client.clone(), self.peer.id.clone())));
                    }
                    true
                }
                Some(o) = queue.recv() => self.forward(o, queue, &ftx).await,
                _ = self.outbox.notified() => true,
            };
            if !ok {
                break;
            }
            // Items written before a stanza was queued go out before it (a
            // subscription's roster changes before the presence that makes
            // the peer act on them); the peer handles frames in order.
            let mut flushed = true;
            while let Ok(o) = queue.try_recv() {
                if !self.forward(o, queue, &ftx).await {
                    flushed = false;
                    break;
                }
            }
            if !flushed {
                break;
            }
            match self.send_outbox(cluster, &ftx, &mut last_sent).await {
                Ok(()) => {}
                Err(()) => break,
            }
        }
        ack_task.abort();
        if let Some(t) = ae_task {
            t.abort();
        }
    }

    async fn on_tick(
        &self,
        cluster: &Arc<Cluster>,
        ftx: &mpsc::Sender<Frame>,
        client: &ClusterClient<Channel>,
    ) -> bool {
        if self.resync.swap(false, Ordering::Relaxed) {
            let snap = DirectorySnapshot {
                entries: cluster.local_entries(),
            };
            if ftx.send(frame(frame::Body::Snapshot(snap))).await.is_err() {
                return false;
            }
            tokio::spawn(antientropy::run(
                cluster.clone(),
                client.clone(),
                self.peer.id.clone(),
            ));
        }
        let hb = Heartbeat {
            sent_ms: chorus_core::time::now_millis(),
        };
        ftx.send(frame(frame::Body::Heartbeat(hb))).await.is_ok()
    }

    async fn forward(
        &self,
        first: Outgoing,
        queue: &mut mpsc::Receiver<Outgoing>,
        ftx: &mpsc::Sender<Frame>,
    ) -> bool {
        let mut delta = DirectoryDelta::default();
        let mut items: Vec<ReplItem> = Vec::new();
        let mut next = Some(first);
        while let Some(o) = next.take() {
            match o {
                Outgoing::Up(e) => delta.up.push(e),
                Outgoing::Down(k) => delta.down.push(k),
                Outgoing::Items(i) => items.extend(i),
            }
            if delta.up.len() + delta.down.len() + items.len() >= ITEMS_PER_FRAME_MAX {
                break;
            }
            next = queue.try_recv().ok();
        }
        let has_delta = !delta.up.is_empty() || !delta.down.is_empty();
        if has_delta && ftx.send(frame(frame::Body::Delta(delta))).await.is_err() {
            return false;
        }
        if !items.is_empty() {
            let n = items.len() as u64;
            let batch = ItemBatch {
                items: to_proto(&items),
            };
            if ftx.send(frame(frame::Body::Items(batch))).await.is_err() {
                return false;
            }
            let _ = self.lag.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                Some(l.saturating_sub(n))
            });
        }
        true
    }

    async fn send_outbox(
        &self,
        cluster: &Arc<Cluster>,
        ftx: &mpsc::Sender<Frame>,
        last_sent: &mut u64,
    ) -> Result<(), ()> {
        loop {
            let pending = match cluster
                .store
                .outbox_pending(&self.peer.id, *last_sent, STANZAS_PER_FRAME_MAX)
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    return Ok(());
                }
            };
            if pending.is_empty() {
                return Ok(());
            }
            let mut batch = StanzaBatch::default();
            for (seq, bytes) in pending {
                *last_sent = seq;
                match serde_json::from_slice::<OutboxRecord>(&bytes) {
                    Ok(r) => batch.stanzas.push(Stanza {
                        seq,
                        user: r.user,
                        resource: r.resource,
                        xml: r.xml,
                        traceparent: r.traceparent.unwrap_or_default(),
                    }),
                    Err(e) => tracing::error!(error = %e, seq, "skipping a corrupt outbox record"),
                }
            }
            if ftx.send(frame(frame::Body::Stanzas(batch))).await.is_err() {
                return Err(());
            }
        }
    }
}
