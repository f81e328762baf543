//! The gRPC service peers call: inbound links (directory, stanzas,
//! replicated items), anti-entropy and status.

use crate::link::{GRPC_MESSAGE_BYTES_MAX, from_proto};
use crate::node::Cluster;
use chorus_core::replication::Table;
use chorus_proto::v1::cluster_server::{Cluster as ClusterApi, ClusterServer};
use chorus_proto::v1::{
    Ack, AckRequest, AckResponse, DigestRequest, DigestResponse, FetchRequest, FileChunk, FileRequest, Frame,
    ItemBatch, PeerStatus, PullRequest, PushResponse, RaftMessage, Stanza, StanzaBatch, StatusRequest,
    StatusResponse, frame,
};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Stanzas returned by one outbox pull.
const PULL_BATCH_MAX: usize = 256;

/// How long a pull waits for our live link to the puller to deliver what
/// it already carries before handing the rest out.
const PULL_DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Acks buffered towards a peer.
const ACKS_IN_FLIGHT_MAX: usize = 64;

/// The service implementation.
pub struct Service {
    cluster: Arc<Cluster>,
}

impl Service {
    /// A tonic server for this node's cluster API, with large message limits
    /// so full batches never stall.
    pub fn server(cluster: Arc<Cluster>) -> ClusterServer<Service> {
        ClusterServer::new(Service { cluster })
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
    }
}

fn table(i: u32) -> Result<Table, Status> {
    Table::from_index(i).ok_or_else(|| Status::invalid_argument(format!("unknown table {i}")))
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl ClusterApi for Service {
    type LinkStream = ReceiverStream<Result<Ack, Status>>;
    type FetchFileStream = ReceiverStream<Result<FileChunk, Status>>;

    async fn fetch_file(&self, req: Request<FileRequest>) -> Result<Response<Self::FetchFileStream>, Status> {
        self.cluster.access.caller(&req, "fetch_file")?;
        let Some(files) = self.cluster.files.get() else {
            return Err(Status::unavailable("this node shares no files"));
        };
        let rx = crate::files::serve_file(files.blobs.clone(), &req.into_inner().sha256)?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn link(&self, req: Request<Streaming<Frame>>) -> Result<Response<Self::LinkStream>, Status> {
        let peer = self.cluster.access.caller(&req, "link")?;
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.and_then(|f| f.body);
        let Some(frame::Body::Hello(hello)) = first else {
            return Err(Status::invalid_argument("a link starts with Hello"));
        };
        self.cluster.access.same_node(&peer, &hello.node_id, "link")?;
        let (stream, changes) = self.cluster.directory.hello(
            &hello.node_id,
            &hello.site,
            (hello.incarnation, hello.connection),
            Instant::now(),
        );
        self.cluster.apply_changes(changes);
        tracing::debug!(peer = %hello.node_id, incarnation = hello.incarnation, "inbound link");
        let (tx, rx) = mpsc::channel(ACKS_IN_FLIGHT_MAX);
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_link(&cluster, &hello.node_id, stream, inbound, tx).await {
                tracing::debug!(peer = %hello.node_id, error = %e, "inbound link ended");
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn digests(&self, req: Request<DigestRequest>) -> Result<Response<DigestResponse>, Status> {
        self.cluster.access.caller(&req, "digests")?;
        let t = table(req.into_inner().table)?;
        let store = self.cluster.store.clone();
        let digests = tokio::task::spawn_blocking(move || store.digests(t))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        Ok(Response::new(DigestResponse { digests }))
    }

    async fn fetch_items(&self, req: Request<FetchRequest>) -> Result<Response<ItemBatch>, Status> {
        self.cluster.access.caller(&req, "fetch_items")?;
        let r = req.into_inner();
        let t = table(r.table)?;
        let store = self.cluster.store.clone();
        let items = tokio::task::spawn_blocking(move || store.items_in_buckets(t, &r.buckets))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        Ok(Response::new(ItemBatch {
            items: crate::link::to_proto(&items),
        }))
    }

    async fn push_items(&self, req: Request<ItemBatch>) -> Result<Response<PushResponse>, Status> {
        self.cluster.access.caller(&req, "push_items")?;
        let items = from_proto(req.into_inner().items);
        let store = self.cluster.store.clone();
        let changed = tokio::task::spawn_blocking(move || store.apply_remote(&items))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        Ok(Response::new(PushResponse {
            applied: changed.len() as u32,
        }))
    }

    async fn pull_stanzas(&self, req: Request<PullRequest>) -> Result<Response<StanzaBatch>, Status> {
        let caller = self.cluster.access.caller(&req, "pull_stanzas")?;
        let r = req.into_inner();
        self.cluster
            .access
            .same_node(&caller, &r.node_id, "pull_stanzas")?;
        // Our own link to the caller streams these stanzas in order, each
        // behind the replicated items written before it; pulled, one could
        // overtake them (a subscription request ahead of the roster change
        // that records it, answered as a pre-approval). While that link is
        // up, let it deliver them; hand out only what it could not.
        if r.after_seq == 0 {
            crate::antientropy::outbox_delivered(&self.cluster, &r.node_id, PULL_DRAIN_WAIT, true).await;
        }
        let store = self.cluster.store.clone();
        let pending = tokio::task::spawn_blocking(move || {
            store.outbox_pending(&r.node_id, r.after_seq, PULL_BATCH_MAX)
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        let stanzas = pending
            .into_iter()
            .filter_map(|(seq, bytes)| {
                let r: crate::node::OutboxRecord = serde_json::from_slice(&bytes).ok()?;
                Some(Stanza {
                    seq,
                    user: r.user,
                    resource: r.resource,
                    xml: r.xml,
                    traceparent: r.traceparent.unwrap_or_default(),
                })
            })
            .collect();
        Ok(Response::new(StanzaBatch { stanzas }))
    }

    async fn ack_stanzas(&self, req: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        let caller = self.cluster.access.caller(&req, "ack_stanzas")?;
        let r = req.into_inner();
        self.cluster
            .access
            .same_node(&caller, &r.node_id, "ack_stanzas")?;
        self.cluster
            .store
            .outbox_ack(&r.node_id, r.stanza_seq)
            .map_err(internal)?;
        Ok(Response::new(AckResponse {}))
    }

    async fn raft(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let access = &self.cluster.access;
        let caller = access.configured_caller(&req, "raft")?;
        let Some(raft) = self.cluster.raft.get() else {
            return Err(Status::unavailable("the archive's raft node is not running here"));
        };
        let Some(member) = access.configured(&caller) else {
            return Err(Status::permission_denied("not a member"));
        };
        let removed = access.member(&caller).is_none();
        if removed && !chorus_archive::raft::in_raft_membership(raft, member.raft_id) {
            access.refuse(&caller, "raft", "removed");
            return Err(Status::permission_denied(format!(
                "{caller} was removed from the archive"
            )));
        }
        let addr_of = |id: &str| access.addr_of(id);
        let from = chorus_archive::raft::serve::Forwarder {
            node_id: &caller,
            site: &member.site,
            raft_id: member.raft_id,
            addr: &member.addr,
            removed,
            max_clock_skew_ms: self.cluster.max_clock_skew_ms,
            addr_of: &addr_of,
        };
        let msg = req.into_inner();
        chorus_archive::raft::serve::handle(raft, self.cluster.archive_sm.get(), &msg.kind, &msg.json, &from)
            .await
            .map(|json| {
                Response::new(RaftMessage {
                    kind: msg.kind.clone(),
                    json,
                })
            })
            .map_err(|e| {
                if e.refused {
                    self.cluster
                        .access
                        .refuse(&caller, "raft", "forbidden raft request");
                    Status::permission_denied(e.reason)
                } else {
                    Status::invalid_argument(e.reason)
                }
            })
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.cluster.access.caller(&req, "status")?;
        Ok(Response::new(status(&self.cluster)))
    }
}

/// What this node knows about the cluster.
pub fn status(c: &Cluster) -> StatusResponse {
    use chorus_xmpp::router::Router as _;
    let now = Instant::now();
    let mut peers: Vec<PeerStatus> = c
        .links
        .values()
        .map(|l| {
            let (alive, heard, sessions, incarnation) = c.directory.peer_summary(&l.peer.id, now);
            PeerStatus {
                node_id: l.peer.id.clone(),
                site: l.peer.site.clone(),
                link_up: l.is_up(),
                last_heard_ms_ago: heard.map(|h| h as i64).unwrap_or(-1),
                outbox_stanzas: c.store.outbox_len(&l.peer.id).unwrap_or(0),
                replication_lag_items: l.lag(),
                sessions,
                incarnation,
                alive,
            }
        })
        .collect();
    peers.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    StatusResponse {
        node_id: c.node_id.clone(),
        site: c.site.clone(),
        incarnation: c.incarnation,
        local_sessions: c.local.session_count() as u64,
        peers,
    }
}

async fn serve_link(
    cluster: &Arc<Cluster>,
    peer: &str,
    stream: u64,
    mut inbound: Streaming<Frame>,
    acks: mpsc::Sender<Result<Ack, Status>>,
) -> Result<(), Status> {
    while let Some(f) = inbound.message().await? {
        cluster.access.still_member(peer, "link")?;
        let revived = cluster.directory.heard(peer, stream, Instant::now());
        if !revived.is_empty() {
            cluster.apply_changes(revived);
        }
        match f.body {
            Some(frame::Body::Heartbeat(_)) | Some(frame::Body::Hello(_)) | None => {}
            Some(frame::Body::Snapshot(s)) => {
                let changes = cluster.directory.snapshot(peer, stream, s.entries);
                cluster.apply_changes(changes);
            }
            Some(frame::Body::Delta(d)) => cluster.directory.delta(peer, stream, d.up, d.down),
            Some(frame::Body::Items(batch)) => {
                let items = from_proto(batch.items);
                cluster.store.apply_remote(&items).map_err(internal)?;
            }
            Some(frame::Body::Stanzas(batch)) => {
                let mark = cluster.accept_stanzas(peer, batch.stanzas).map_err(internal)?;
                if acks.send(Ok(Ack { stanza_seq: mark })).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
