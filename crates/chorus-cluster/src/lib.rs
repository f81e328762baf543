//! The multi-site cluster: membership from the configuration, mTLS gRPC
//! between nodes (tonic), the replicated session directory with leases,
//! cross-node stanza routing through a durable outbox with exactly-once
//! delivery, live replication of durable items and anti-entropy.
//!
//! [`node::ClusterRouter`] implements the XMPP layer's `Router`, so sessions
//! reach users on any node without knowing the cluster exists.

pub mod access;
pub mod antientropy;
pub mod certs;
pub mod directory;
pub mod files;
pub mod link;
pub mod node;
pub mod raft_net;
pub mod service;
pub mod tls;
pub mod trace_ctx;

use node::Cluster;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Starts the cluster listener, the links to every peer, lease expiry and
/// delivery of replicated offline messages. Everything stops when `stop`
/// turns true.
pub async fn start(
    cluster: Arc<Cluster>,
    tls: tls::ClusterTls,
    listen: SocketAddr,
    lease: Duration,
    heartbeat: Duration,
    stop: watch::Receiver<bool>,
) -> Result<JoinSet<()>, String> {
    let mut tasks = JoinSet::new();
    let incoming = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("listen on {listen}: {e}"))?;
    // Keepalives end inbound links whose peer vanished without a reset (a
    // silent cut), instead of holding them until TCP gives up hours later.
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(1)))
        .http2_keepalive_timeout(Some(Duration::from_secs(3)))
        .tls_config(tls.server())
        .map_err(|e| format!("cluster TLS: {e}"))?
        .add_service(service::Service::server(cluster.clone()));
    let mut s = stop.clone();
    tasks.spawn(async move {
        // Small frames (acks, single stanzas) must not wait for Nagle.
        let incoming =
            tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(incoming), |s| {
                s.inspect(|s| {
                    let _ = s.set_nodelay(true);
                })
            });
        let shutdown = async move {
            let _ = s.wait_for(|v| *v).await;
        };
        if let Err(e) = server.serve_with_incoming_shutdown(incoming, shutdown).await {
            tracing::error!(error = %e, "cluster listener failed");
        }
    });
    tracing::info!(%listen, node = %cluster.node_id, site = %cluster.site, "cluster listener up");
    for link in cluster.links.values() {
        tasks.spawn(
            link.clone()
                .run(cluster.clone(), tls.clone(), heartbeat, stop.clone()),
        );
    }
    tasks.spawn(expire_leases(cluster.clone(), lease, heartbeat, stop.clone()));
    if let Some(files) = cluster.files.get() {
        tasks.spawn(files.clone().run(cluster.store.clone(), stop.clone()));
    }
    if let Some(mut rx) = cluster.take_event_rx() {
        let c = cluster.clone();
        let mut s = stop.clone();
        tasks.spawn(async move {
            loop {
                let event = tokio::select! {
                    e = rx.recv() => e,
                    _ = s.changed() => return,
                };
                let Some(event) = event else { return };
                let Some(ctx) = c.ctx() else { continue };
                match event {
                    node::Event::OfflineArrived(u, None) => chorus_xmpp::remote::flush_offline(ctx, &u),
                    node::Event::OfflineArrived(u, Some(writer)) => {
                        // Stanzas the writer queued for us before it stored
                        // these messages come first: wait (bounded) until we
                        // have pulled its outbox since the link came up.
                        let ctx = ctx.clone();
                        tokio::spawn(async move {
                            writer.outbox_pulled(link::OUTBOX_BARRIER_WAIT).await;
                            chorus_xmpp::remote::flush_offline(&ctx, &u);
                        });
                    }
                    node::Event::SubscriptionRequest(u, contact) => {
                        chorus_xmpp::remote::subscription_requested(ctx, &u, &contact)
                    }
                }
            }
        });
    }
    Ok(tasks)
}

async fn expire_leases(
    cluster: Arc<Cluster>,
    lease: Duration,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    while chorus_archive::raft::tick_or_stop(&mut tick, &mut stop).await {
        for (node, changes) in cluster.directory.expire(std::time::Instant::now(), lease) {
            tracing::warn!(peer = %node, sessions = changes.len(), "peer lease expired; its sessions count as gone");
            metrics::counter!("chorus_cluster_lease_expiries_total").increment(1);
            cluster.apply_changes(changes);
        }
    }
}
