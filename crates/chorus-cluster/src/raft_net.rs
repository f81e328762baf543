//! Carries the archive's Raft traffic over the cluster's mTLS gRPC: the
//! [`chorus_archive::raft::Transport`] of a clustered node. A request goes
//! to a configured peer (by Raft id) as a `RaftMessage` of a named kind,
//! over a channel cached per peer that is dropped on any failure; what the
//! bytes mean is the archive's business (`chorus_archive::raft`).

use crate::link::GRPC_MESSAGE_BYTES_MAX;
use crate::tls::ClusterTls;
use chorus_archive::raft::net::BoxFuture;
use chorus_archive::raft::{ArchiveNet, Transport, TransportError, raft_id};
use chorus_core::config::PeerConfig;
use chorus_proto::v1::RaftMessage;
use chorus_proto::v1::cluster_client::ClusterClient;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Time allowed to connect to a peer for Raft traffic.
const RAFT_CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);

/// The archive's network over the cluster's mTLS gRPC to `peers`.
pub fn archive_net(peers: &[PeerConfig], tls: ClusterTls) -> ArchiveNet {
    ArchiveNet::new(Arc::new(GrpcTransport::new(peers, tls)))
}

/// Raft requests to the configured peers over mTLS gRPC.
pub struct GrpcTransport {
    peers: HashMap<u64, PeerConfig>,
    tls: ClusterTls,
    clients: Mutex<HashMap<u64, ClusterClient<Channel>>>,
}

impl GrpcTransport {
    /// A transport to the configured peers.
    pub fn new(peers: &[PeerConfig], tls: ClusterTls) -> GrpcTransport {
        GrpcTransport {
            peers: peers.iter().map(|p| (raft_id(&p.id), p.clone())).collect(),
            tls,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The cached client for `target`, connecting first if there is none.
    async fn client(&self, target: u64) -> Result<ClusterClient<Channel>, TransportError> {
        if let Some(c) = self.cached(target) {
            return Ok(c);
        }
        let unreachable = |e: String| TransportError::Unreachable(e);
        let peer = self
            .peers
            .get(&target)
            .ok_or_else(|| unreachable(format!("raft node {target} is not a configured peer")))?;
        let ep = Endpoint::from_shared(format!("https://{}", peer.addr))
            .map_err(|e| unreachable(e.to_string()))?
            .tls_config(self.tls.client(&peer.id))
            .map_err(|e| unreachable(e.to_string()))?
            .connect_timeout(RAFT_CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let ch = ep.connect().await.map_err(|e| unreachable(e.to_string()))?;
        let c = ClusterClient::new(ch)
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        self.lock().insert(target, c.clone());
        Ok(c)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ClusterClient<Channel>>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self, target: u64) -> Option<ClusterClient<Channel>> {
        self.lock().get(&target).cloned()
    }

    async fn send(
        &self,
        target: u64,
        kind: &'static str,
        json: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let mut client = tokio::time::timeout(timeout, self.client(target))
            .await
            .map_err(|_| TransportError::Timeout)??;
        let call = client.raft(RaftMessage {
            kind: kind.into(),
            json,
        });
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(TransportError::Timeout),
            Ok(Ok(reply)) => Ok(reply.into_inner().json),
            Ok(Err(status)) => {
                // A fresh connection next time (the peer may have restarted
                // with a new certificate, or the channel broke).
                self.lock().remove(&target);
                Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::Unknown => {
                        TransportError::Unreachable(status.to_string())
                    }
                    _ => TransportError::Refused(status.message().to_owned()),
                })
            }
        }
    }
}

impl Transport for GrpcTransport {
    fn call(
        &self,
        target: u64,
        kind: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        Box::pin(self.send(target, kind, body, timeout))
    }
}
