//! The archive's transport over the cluster's mTLS gRPC names each way a
//! request can fail, since the archive decides on the variant (retry
//! another member, report a refusal): a node that is not a configured peer
//! or not running the archive is unreachable, a peer that never answers is
//! a timeout, and a request the peer's archive rejects is refused.

mod common;

use chorus_archive::raft::raft_id;
use chorus_archive::raft::{Transport, TransportError};
use chorus_cluster::raft_net::GrpcTransport;
use chorus_cluster::tls::ClusterTls;
use chorus_core::config::PeerConfig;
use common::{NODES, ready, start, start_raft};
use std::time::Duration;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_transport_names_each_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, _net) = start(dir.path()).await;
    ready(&nodes).await;
    let a = &nodes[0].config.cluster;
    let tls = || ClusterTls::load(a).expect("tls");
    let b1 = raft_id(NODES[1].0);

    // Not a configured peer.
    let t = GrpcTransport::new(&a.peers, tls());
    let r = t.call(raft_id("nobody"), "vote", b"{}".to_vec(), WAIT).await;
    assert!(matches!(r, Err(TransportError::Unreachable(_))), "{r:?}");

    // A configured peer whose archive is not running yet.
    let r = t.call(b1, "vote", b"{}".to_vec(), WAIT).await;
    assert!(
        matches!(r, Err(TransportError::Unreachable(ref e)) if e.contains("not running")),
        "{r:?}"
    );

    let mut peers = a.peers.clone();
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        probe.local_addr().expect("addr").port()
    };
    // A closed port: the connection is refused.
    peers[0] = PeerConfig {
        addr: format!("127.0.0.1:{port}"),
        ..peers[0].clone()
    };
    let closed = GrpcTransport::new(&peers, tls());
    let r = closed.call(b1, "vote", b"{}".to_vec(), WAIT).await;
    assert!(matches!(r, Err(TransportError::Unreachable(_))), "{r:?}");

    // With the archive running there, a request it cannot read is refused,
    // and the next request on a fresh channel still gets through.
    let (rafts, ..) = start_raft(&nodes, dir.path(), &[0, 1, 2]).await;
    let r = t.call(b1, "vote", b"not a vote".to_vec(), WAIT).await;
    assert!(matches!(r, Err(TransportError::Refused(_))), "{r:?}");
    let r = t.call(b1, "no-such-kind", Vec::new(), WAIT).await;
    assert!(matches!(r, Err(TransportError::Refused(_))), "{r:?}");
    common::shutdown(rafts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_is_a_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, _net) = start(dir.path()).await;
    let a = &nodes[0].config.cluster;
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = silent.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let mut peers = a.peers.clone();
    peers[0].addr = addr.to_string();
    let t = GrpcTransport::new(&peers, ClusterTls::load(a).expect("tls"));
    let r = t.call(raft_id(NODES[1].0), "vote", b"{}".to_vec(), WAIT).await;
    assert!(matches!(r, Err(TransportError::Timeout)), "{r:?}");
    held.abort();
}
