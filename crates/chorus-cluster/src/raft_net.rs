//! The compliance archive's Raft traffic over the cluster's mTLS gRPC: an
//! openraft network whose clients are cached tonic channels to each peer,
//! and the server side that hands requests to the local Raft node. Requests
//! and replies travel as openraft's own serialized types.

use crate::link::GRPC_MESSAGE_BYTES_MAX;
use crate::tls::ClusterTls;
use chorus_archive::types::TypeConfig;
use chorus_core::config::PeerConfig;
use chorus_proto::v1::RaftMessage;
use chorus_proto::v1::cluster_client::ClusterClient;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// The archive's Raft node.
pub type ArchiveRaft = openraft::Raft<TypeConfig>;

/// Time allowed to connect to a peer for Raft traffic.
const RAFT_CONNECT_TIMEOUT_MS: u64 = 1000;

/// The Raft node id of a cluster node: its stable tag.
pub fn raft_id(node_id: &str) -> u64 {
    chorus_core::hlc::node_tag(node_id) as u64
}

/// Whether the Raft membership (voters or learners) lists `raft_id`.
pub fn in_raft_membership(raft: &ArchiveRaft, raft_id: u64) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    m.membership_config
        .membership()
        .nodes()
        .any(|(id, _)| *id == raft_id)
}

/// Whether this node currently leads the archive's Raft group.
pub fn leads(raft: &ArchiveRaft) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    m.current_leader == Some(m.id)
}

/// Creates clients for the peers of this node's Raft group.
#[derive(Clone)]
pub struct NetworkFactory {
    peers: Arc<HashMap<u64, PeerConfig>>,
    tls: Option<ClusterTls>,
}

impl NetworkFactory {
    /// A factory for the configured peers.
    pub fn new(peers: &[PeerConfig], tls: ClusterTls) -> NetworkFactory {
        let peers = peers.iter().map(|p| (raft_id(&p.id), p.clone())).collect();
        NetworkFactory {
            peers: Arc::new(peers),
            tls: Some(tls),
        }
    }

    /// The network of a single node, which never talks to anyone.
    pub fn alone() -> NetworkFactory {
        NetworkFactory {
            peers: Arc::new(HashMap::new()),
            tls: None,
        }
    }
}

impl NetworkFactory {
    /// Sends a spool batch to the leader `target` and waits for its commit.
    pub async fn forward_write(
        &self,
        target: u64,
        cmd: &chorus_archive::types::Command,
    ) -> Result<chorus_archive::types::Response, String> {
        let json = chorus_archive::codec::encode(cmd).map_err(|e| e.to_string())?;
        let reply = self.forward(target, "write", json).await?;
        chorus_archive::codec::decode::<Result<chorus_archive::types::Response, String>>(&reply)
            .map_err(|e| e.to_string())?
    }

    /// Asks the leader to change the archive group's membership.
    pub async fn forward_members(
        &self,
        target: u64,
        change: &crate::archive::MemberChange,
    ) -> Result<String, crate::archive::MemberChangeError> {
        use crate::archive::MemberChangeError;
        let json =
            chorus_archive::codec::encode(change).map_err(|e| MemberChangeError::Failed(e.to_string()))?;
        let reply = self
            .forward(target, "members", json)
            .await
            .map_err(MemberChangeError::Failed)?;
        chorus_archive::codec::decode::<Result<String, MemberChangeError>>(&reply)
            .map_err(|e| MemberChangeError::Failed(e.to_string()))?
    }

    /// Asks `target` for its chain head and the hash of its link `link`.
    pub async fn ask_chain(
        &self,
        target: u64,
        link: u64,
    ) -> Result<chorus_archive::chain::ChainPoint, String> {
        let json = chorus_archive::codec::encode(&link).map_err(|e| e.to_string())?;
        let out = self.forward(target, "chain", json).await?;
        chorus_archive::codec::decode(&out).map_err(|e| e.to_string())
    }

    /// Asks `target` to start an election now (leadership handover before
    /// this node, the leader, shuts down).
    pub async fn ask_to_elect(&self, target: u64) -> Result<(), String> {
        self.forward(target, "elect", Vec::new()).await.map(|_| ())
    }

    /// Sends one request of `kind` to `target` and returns its reply.
    async fn forward(&self, target: u64, kind: &str, json: Vec<u8>) -> Result<Vec<u8>, String> {
        let mut net = PeerNetwork {
            target,
            peer: self.peers.get(&target).cloned(),
            tls: self.tls.clone(),
            client: None,
        };
        let mut client = net.client().await?;
        let call = client.raft(RaftMessage {
            kind: kind.into(),
            json,
        });
        Ok(
            tokio::time::timeout(Duration::from_secs(FORWARD_TIMEOUT_SECS), call)
                .await
                .map_err(|_| "forwarding to the leader timed out".to_string())?
                .map_err(|e| e.to_string())?
                .into_inner()
                .json,
        )
    }
}

/// Time a forwarded write may take, in seconds.
const FORWARD_TIMEOUT_SECS: u64 = 10;

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> PeerNetwork {
        PeerNetwork {
            target,
            peer: self.peers.get(&target).cloned(),
            tls: self.tls.clone(),
            client: None,
        }
    }
}

/// Raft client for one peer, with a cached channel.
pub struct PeerNetwork {
    target: u64,
    peer: Option<PeerConfig>,
    tls: Option<ClusterTls>,
    client: Option<ClusterClient<Channel>>,
}

type RpcErr<E> = RPCError<u64, BasicNode, RaftError<u64, E>>;

impl PeerNetwork {
    async fn client(&mut self) -> Result<ClusterClient<Channel>, String> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let peer = self
            .peer
            .as_ref()
            .ok_or_else(|| format!("raft node {} is not a configured peer", self.target))?;
        let tls = self.tls.as_ref().ok_or("this node has no cluster TLS")?;
        let ep = Endpoint::from_shared(format!("https://{}", peer.addr))
            .map_err(|e| e.to_string())?
            .tls_config(tls.client(&peer.id))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_millis(RAFT_CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true);
        let ch = ep.connect().await.map_err(|e| e.to_string())?;
        let c = ClusterClient::new(ch)
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        self.client = Some(c.clone());
        Ok(c)
    }

    async fn call<Req, Resp, E>(
        &mut self,
        kind: openraft::RPCTypes,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let io = |e: String| std::io::Error::other(e);
        let mut client = self
            .client()
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&io(e))))?;
        let json =
            chorus_archive::codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let ttl = option.hard_ttl();
        let name = match kind {
            openraft::RPCTypes::Vote => "vote",
            openraft::RPCTypes::InstallSnapshot => "snapshot",
            _ => "append",
        };
        let call = client.raft(RaftMessage {
            kind: name.to_owned(),
            json,
        });
        let reply = match tokio::time::timeout(ttl, call).await {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action: kind,
                    id: 0,
                    target: self.target,
                    timeout: ttl,
                }));
            }
            Ok(Err(status)) => {
                self.client = None;
                return Err(RPCError::Unreachable(Unreachable::new(&io(status.to_string()))));
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        let result: Result<Resp, RaftError<u64, E>> = chorus_archive::codec::decode(&reply.json)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcErr<openraft::error::Infallible>> {
        self.call(openraft::RPCTypes::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcErr<InstallSnapshotError>> {
        self.call(openraft::RPCTypes::InstallSnapshot, &rpc, &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcErr<openraft::error::Infallible>> {
        self.call(openraft::RPCTypes::Vote, &rpc, &option).await
    }
}
