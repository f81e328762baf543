//! Anti-entropy: after a (re)connect, and periodically, compare per-bucket
//! digests of every replicated table with a peer and exchange the items of
//! the buckets that differ, so nodes that were down or cut off converge.

use crate::link::{from_proto, to_proto};
use crate::node::Cluster;
use chorus_core::replication::{DIGEST_BUCKETS, Table};
use chorus_proto::v1::cluster_client::ClusterClient;
use chorus_proto::v1::{AckRequest, DigestRequest, FetchRequest, ItemBatch, PullRequest};
use std::sync::Arc;
use std::time::Duration;
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
    outbox_delivered(
        &cluster,
        &peer,
        Duration::from_millis(OUTBOX_DRAIN_WAIT_MS),
        false,
    )
    .await;
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

/// Waits, at most `max`, until `peer` has acknowledged every stanza queued
/// for it before the call (later ones do not prolong the wait, so steady
/// traffic cannot hold it up); with `while_up`, stops as soon as our link
/// to the peer is down, as nothing drains the outbox then. Returns whether
/// they were all acknowledged.
pub(crate) async fn outbox_delivered(cluster: &Cluster, peer: &str, max: Duration, while_up: bool) -> bool {
    let deadline = tokio::time::Instant::now() + max;
    let Ok((target, _)) = cluster.store.outbox_marks(peer) else {
        return false;
    };
    loop {
        match cluster.store.outbox_marks(peer) {
            Ok((_, acked)) if acked >= target => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
        let up = cluster.links.get(peer).is_some_and(|l| l.is_up());
        if (while_up && !up) || tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
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
