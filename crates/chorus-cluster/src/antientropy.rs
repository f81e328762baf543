//! Anti-entropy: after a (re)connect, and periodically, compare per-bucket
//! digests of every replicated table with a peer and exchange the items of
//! the buckets that differ, so nodes that were down or cut off converge.

use crate::link::{from_proto, to_proto};
use crate::node::Cluster;
use chorus_core::replication::{DIGEST_BUCKETS, Table};
use chorus_proto::v1::cluster_client::ClusterClient;
use chorus_proto::v1::{AckRequest, DigestRequest, FetchRequest, ItemBatch, PullRequest};
use std::sync::Arc;
use tonic::transport::Channel;

/// Buckets exchanged per request, to bound message sizes.
const BUCKETS_PER_REQUEST_MAX: usize = 16;

/// How long anti-entropy waits for our outbox to the peer to drain before it
/// exchanges items anyway.
const OUTBOX_DRAIN_WAIT_MS: u64 = 5000;

/// One anti-entropy pass over every table with `peer`.
///
/// Stanzas queued between the two nodes go first, in both directions: we
/// wait for our outbox to the peer to drain and pull the peer's outbox for
/// us. Only then are items exchanged. Messages queued before a cut are thus
/// delivered before messages that travelled as replicated offline items,
/// whichever direction of the link comes back first.
pub async fn run(cluster: Arc<Cluster>, mut client: ClusterClient<Channel>, peer: String) {
    let started = std::time::Instant::now();
    let deadline = started + std::time::Duration::from_millis(OUTBOX_DRAIN_WAIT_MS);
    while cluster.store.outbox_len(&peer).unwrap_or(0) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    if let Err(e) = pull_outbox(&cluster, &mut client, &peer).await {
        tracing::debug!(peer = %peer, error = %e, "outbox pull interrupted");
        return;
    }
    if let Some(link) = cluster.links.get(&peer) {
        link.set_outbox_pulled(true);
    }
    let mut exchanged = 0usize;
    for table in Table::ALL {
        match sync_table(&cluster, &mut client, table).await {
            Ok(n) => exchanged += n,
            Err(e) => {
                tracing::debug!(peer = %peer, error = %e, "anti-entropy interrupted");
                return;
            }
        }
    }
    metrics::counter!("chorus_antientropy_rounds_total").increment(1);
    if exchanged > 0 {
        tracing::info!(peer = %peer, items = exchanged, ms = started.elapsed().as_millis() as u64, "anti-entropy repaired differences");
    }
}

/// Pulls and handles the stanzas the peer holds for us.
async fn pull_outbox(
    cluster: &Arc<Cluster>,
    client: &mut ClusterClient<Channel>,
    peer: &str,
) -> Result<(), String> {
    let me = cluster.node_id.clone();
    let mut after = 0;
    loop {
        let batch = client
            .pull_stanzas(PullRequest {
                node_id: me.clone(),
                after_seq: after,
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let Some(last) = batch.stanzas.last().map(|s| s.seq) else {
            return Ok(());
        };
        let (c, origin) = (cluster.clone(), peer.to_owned());
        let mark = blocking(move || c.accept_stanzas(&origin, batch.stanzas))
            .await?
            .map_err(|e| e.to_string())?;
        client
            .ack_stanzas(AckRequest {
                node_id: me.clone(),
                stanza_seq: mark.max(last),
            })
            .await
            .map_err(|e| e.to_string())?;
        after = last;
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| e.to_string())
}

async fn sync_table(
    cluster: &Arc<Cluster>,
    client: &mut ClusterClient<Channel>,
    table: Table,
) -> Result<usize, String> {
    let theirs = client
        .digests(DigestRequest { table: table.index() })
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .digests;
    let store = cluster.store.clone();
    let ours = blocking(move || store.digests(table))
        .await?
        .map_err(|e| e.to_string())?;
    if theirs.len() != DIGEST_BUCKETS as usize {
        return Err(format!("peer sent {} digests", theirs.len()));
    }
    let diff: Vec<u32> = (0..DIGEST_BUCKETS)
        .filter(|b| ours[*b as usize] != theirs[*b as usize])
        .collect();
    let mut exchanged = 0;
    for chunk in diff.chunks(BUCKETS_PER_REQUEST_MAX) {
        let fetched = client
            .fetch_items(FetchRequest {
                table: table.index(),
                buckets: chunk.to_vec(),
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let items = from_proto(fetched.items);
        exchanged += items.len();
        let store = cluster.store.clone();
        blocking(move || store.apply_remote(&items))
            .await?
            .map_err(|e| e.to_string())?;
        let store = cluster.store.clone();
        let buckets = chunk.to_vec();
        let mine = blocking(move || store.items_in_buckets(table, &buckets))
            .await?
            .map_err(|e| e.to_string())?;
        exchanged += mine.len();
        client
            .push_items(ItemBatch {
                items: to_proto(&mine),
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(exchanged)
}
