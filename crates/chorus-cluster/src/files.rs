//! Copies shared files (XEP-0363 uploads) to every site. The upload row
//! replicates like any other item; when a node learns of a finished upload
//! whose bytes it lacks, it fetches them from a peer over the `FetchFile`
//! RPC, checks the SHA-256 and keeps them. A sweep at start and every few
//! minutes catches what was missed while a node was down, and a download
//! of a file not yet here fetches it on demand.

use crate::link::GRPC_MESSAGE_BYTES_MAX;
use crate::tls::ClusterTls;
use chorus_core::config::PeerConfig;
use chorus_core::files::{Blobs, Upload, is_sha256_hex};
use chorus_core::replication::{DIGEST_BUCKETS, Table};
use chorus_proto::v1::cluster_client::ClusterClient;
use chorus_proto::v1::{FileChunk, FileRequest};
use chorus_store::{FileBlobs, RocksStore};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

/// Bytes per streamed chunk.
pub const FILE_CHUNK_BYTES: usize = 256 * 1024;
/// Files waiting to be fetched; past it, the next sweep finds them.
const WANTED_QUEUE_MAX: usize = 4096;
/// How often every finished upload is checked for missing bytes.
const SWEEP_INTERVAL: Duration = Duration::from_secs(120);
/// Time allowed to connect to a peer for a file.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for one chunk to arrive.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// The node's file replicator.
pub struct FileSync {
    /// The bytes this node holds.
    pub blobs: Arc<FileBlobs>,
    tls: ClusterTls,
    peers: Vec<PeerConfig>,
    file_bytes_max: u64,
    in_flight: Mutex<HashSet<String>>,
    wanted_tx: mpsc::Sender<String>,
    wanted_rx: Mutex<Option<mpsc::Receiver<String>>>,
}

impl FileSync {
    /// A replicator fetching from `peers`, refusing files over `file_bytes_max`.
    pub fn new(
        blobs: Arc<FileBlobs>,
        tls: ClusterTls,
        peers: &[PeerConfig],
        file_bytes_max: u64,
    ) -> FileSync {
        let (wanted_tx, wanted_rx) = mpsc::channel(WANTED_QUEUE_MAX);
        FileSync {
            blobs,
            tls,
            peers: peers.to_vec(),
            file_bytes_max,
            in_flight: Mutex::new(HashSet::new()),
            wanted_tx,
            wanted_rx: Mutex::new(Some(wanted_rx)),
        }
    }

    /// A replicated upload row changed: fetch its bytes if they are missing.
    pub fn on_upload_row(&self, value: &[u8]) {
        let Ok(u) = serde_json::from_slice::<Upload>(value) else {
            return;
        };
        if let Some(sha) = u.sha256
            && !self.blobs.contains(&sha)
        {
            let _ = self.wanted_tx.try_send(sha);
        }
    }

    /// Fetches `sha256` from the first peer that has it; true once this
    /// node holds the file.
    pub async fn fetch(&self, sha256: &str) -> bool {
        if !is_sha256_hex(sha256) {
            return false;
        }
        if self.blobs.contains(sha256) {
            return true;
        }
        if !self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sha256.to_owned())
        {
            // Another fetch of the same file is running: wait for it (bounded).
            for _ in 0..600 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if !self
                    .in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(sha256)
                {
                    break;
                }
            }
            return self.blobs.contains(sha256);
        }
        // Whoever drops this fetch (a download that gave up waiting), the
        // file is not left marked as being fetched.
        let _claim = InFlight {
            set: &self.in_flight,
            sha: sha256.to_owned(),
        };
        let mut got = false;
        for peer in &self.peers {
            match self.fetch_from(peer, sha256).await {
                Ok(()) => {
                    got = true;
                    metrics::counter!("chorus_files_replicated_total").increment(1);
                    tracing::info!(peer = %peer.id, sha256, "shared file copied from a peer");
                    break;
                }
                Err(e) => {
                    tracing::debug!(peer = %peer.id, sha256, error = %e, "peer could not give the file")
                }
            }
        }
        got
    }

    async fn client(&self, peer: &PeerConfig) -> Result<ClusterClient<Channel>, String> {
        let ep = Endpoint::from_shared(format!("https://{}", peer.addr))
            .map_err(|e| e.to_string())?
            .tls_config(self.tls.client(&peer.id))
            .map_err(|e| e.to_string())?
            .connect_timeout(CONNECT_TIMEOUT);
        let ch = ep.connect().await.map_err(|e| e.to_string())?;
        Ok(ClusterClient::new(ch).max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX))
    }

    async fn fetch_from(&self, peer: &PeerConfig, sha256: &str) -> Result<(), String> {
        let mut client = self.client(peer).await?;
        let req = FileRequest {
            sha256: sha256.to_owned(),
        };
        let mut stream = client
            .fetch_file(req)
            .await
            .map_err(|s| s.to_string())?
            .into_inner();
        let blobs = self.blobs.clone();
        let mut writer = tokio::task::spawn_blocking(move || blobs.create())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        loop {
            let next = tokio::time::timeout(CHUNK_TIMEOUT, stream.message())
                .await
                .map_err(|_| "peer stalled".to_string())?
                .map_err(|s| s.to_string())?;
            let Some(chunk) = next else { break };
            if writer.len() + chunk.data.len() as u64 > self.file_bytes_max {
                return Err("peer sent more than a file may hold".into());
            }
            writer = tokio::task::spawn_blocking(move || writer.write(&chunk.data).map(|()| writer))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
        let expected = sha256.to_owned();
        tokio::task::spawn_blocking(move || writer.finish(Some(&expected)))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Runs the fetcher: queued files one at a time, and a sweep of every
    /// finished upload at start and every [`SWEEP_INTERVAL`].
    pub async fn run(self: Arc<Self>, store: Arc<RocksStore>, mut stop: watch::Receiver<bool>) {
        let Some(mut rx) = self.wanted_rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = sweep.tick() => self.sweep(&store).await,
                Some(sha) = rx.recv() => {
                    self.fetch(&sha).await;
                }
            }
        }
    }

    async fn sweep(&self, store: &Arc<RocksStore>) {
        let s = store.clone();
        let all: Vec<u32> = (0..DIGEST_BUCKETS).collect();
        let Ok(Ok(items)) =
            tokio::task::spawn_blocking(move || s.items_in_buckets(Table::Uploads, &all)).await
        else {
            return;
        };
        for item in items {
            if let Some(v) = item.lww.value {
                self.on_upload_row(&v);
            }
        }
    }
}

/// Marks a file as being fetched for as long as it lives.
struct InFlight<'a> {
    set: &'a Mutex<HashSet<String>>,
    sha: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.sha);
    }
}

/// Streams the bytes of a file this node holds (the `FetchFile` RPC).
pub fn serve_file(
    blobs: Arc<FileBlobs>,
    sha256: &str,
) -> Result<mpsc::Receiver<Result<FileChunk, Status>>, Status> {
    if !is_sha256_hex(sha256) {
        return Err(Status::invalid_argument("not a SHA-256"));
    }
    let Some((mut file, _len)) = blobs.open(sha256).map_err(|e| Status::internal(e.to_string()))? else {
        return Err(Status::not_found("this node does not hold that file"));
    };
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        loop {
            let mut buf = vec![0u8; FILE_CHUNK_BYTES];
            match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(FileChunk { data: buf })).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
                    return;
                }
            }
        }
    });
    Ok(rx)
}
