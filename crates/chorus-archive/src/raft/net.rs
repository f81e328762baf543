//! The archive's side of the network. The cluster implements
//! [`Transport`]: one request of a named kind, as bytes, to a member by
//! Raft id over its mutually authenticated channel. On top of it,
//! [`ArchiveNet`] is openraft's network (votes, log appends, snapshots
//! travel as openraft's own serialized types) and the archive's own
//! requests: a forwarded write or membership change, a chain comparison,
//! an election before handover. The server side is `serve`.

use crate::chain::ChainPoint;
use crate::raft::members::{MemberChange, MemberChangeError};
use crate::types::{Command, Response, TypeConfig};
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
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed future a [`Transport`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Time a forwarded write, membership change or chain question may take.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No connection (not a configured peer, refused, reset).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No answer within the time allowed.
    #[error("no answer in time")]
    Timeout,
    /// The peer answered with an error (it refused or could not run it).
    #[error("{0}")]
    Refused(String),
}

/// Why a member did not stand for election when the leader handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, thiserror::Error)]
pub enum ElectRefusal {
    /// Its Raft node has stopped: it is shutting down too (a whole site or
    /// cluster stopped at once), so asking it again is pointless.
    #[error("it is shutting down too")]
    Stopping,
    /// Anything else (unreachable, refused, failed); it may be asked again.
    #[error("{0}")]
    Failed(String),
}

/// Carries one archive request to another member and brings its reply
/// back; implemented by the cluster over its mTLS gRPC.
pub trait Transport: Send + Sync + 'static {
    /// Sends `body` as a request of `kind` to the member `target`,
    /// waiting at most `timeout` for the reply.
    fn call(
        &self,
        target: u64,
        kind: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, TransportError>>;
}

/// The transport of a node alone: nobody to talk to.
struct Alone;

impl Transport for Alone {
    fn call(
        &self,
        target: u64,
        _: &'static str,
        _: Vec<u8>,
        _: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        Box::pin(async move {
            Err(TransportError::Unreachable(format!(
                "raft node {target} is not a peer"
            )))
        })
    }
}

/// The archive's network: openraft's clients and the archive's own
/// requests, over a [`Transport`].
#[derive(Clone)]
pub struct ArchiveNet {
    transport: Arc<dyn Transport>,
}

impl ArchiveNet {
    /// The network over `transport`.
    pub fn new(transport: Arc<dyn Transport>) -> ArchiveNet {
        ArchiveNet { transport }
    }

    /// The network of a single node, which never talks to anyone.
    pub fn alone() -> ArchiveNet {
        ArchiveNet::new(Arc::new(Alone))
    }

    async fn ask<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: u64,
        kind: &'static str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, String> {
        let body = crate::codec::encode(req).map_err(|e| e.to_string())?;
        let reply = self
            .transport
            .call(target, kind, body, timeout)
            .await
            .map_err(|e| e.to_string())?;
        crate::codec::decode(&reply).map_err(|e| format!("bad reply from raft node {target}: {e}"))
    }

    /// Sends a spool batch or an audited action to the leader `target`
    /// and waits for its commit.
    pub async fn forward_write(&self, target: u64, cmd: &Command) -> Result<Response, String> {
        self.ask::<_, Result<Response, String>>(target, "write", cmd, FORWARD_TIMEOUT)
            .await?
    }

    /// Asks the leader to change the archive group's membership.
    pub async fn forward_members(
        &self,
        target: u64,
        change: &MemberChange,
    ) -> Result<String, MemberChangeError> {
        self.ask::<_, Result<String, MemberChangeError>>(target, "members", change, FORWARD_TIMEOUT)
            .await
            .map_err(MemberChangeError::Failed)?
    }

    /// Asks `target` for its chain head and the hash of its link `link`.
    pub async fn ask_chain(&self, target: u64, link: u64) -> Result<ChainPoint, String> {
        self.ask(target, "chain", &link, FORWARD_TIMEOUT).await
    }

    /// Asks `target` to start an election now (leadership handover before
    /// this node, the leader, shuts down), waiting at most `timeout`.
    pub async fn ask_to_elect(&self, target: u64, timeout: Duration) -> Result<(), ElectRefusal> {
        self.ask::<_, Result<(), ElectRefusal>>(target, "elect", &(), timeout)
            .await
            .map_err(ElectRefusal::Failed)?
    }
}

impl RaftNetworkFactory<TypeConfig> for ArchiveNet {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> PeerNetwork {
        PeerNetwork {
            target,
            transport: self.transport.clone(),
        }
    }
}

/// openraft's client for one peer.
pub struct PeerNetwork {
    target: u64,
    transport: Arc<dyn Transport>,
}

type RpcErr<E> = RPCError<u64, BasicNode, RaftError<u64, E>>;

impl PeerNetwork {
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
        let body = crate::codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let ttl = option.hard_ttl();
        let name = match kind {
            openraft::RPCTypes::Vote => "vote",
            openraft::RPCTypes::InstallSnapshot => "snapshot",
            _ => "append",
        };
        let reply = match self.transport.call(self.target, name, body, ttl).await {
            Ok(r) => r,
            Err(TransportError::Timeout) => {
                return Err(RPCError::Timeout(Timeout {
                    action: kind,
                    id: 0,
                    target: self.target,
                    timeout: ttl,
                }));
            }
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e)))),
        };
        let result: Result<Resp, RaftError<u64, E>> =
            crate::codec::decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
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
