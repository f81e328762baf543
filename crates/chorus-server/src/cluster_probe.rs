//! `chorus cluster probe`: calls every cluster RPC of a node with a given
//! certificate and prints what the node answered, one JSON line per RPC.
//! An SRE uses it to check that a certificate (a retired node's, another
//! node's, one the CA signed for a name that is not a member) can do
//! nothing; the end-to-end tests use it as the attacker.

use anyhow::Context as _;
use chorus_proto::v1::cluster_client::ClusterClient;
use chorus_proto::v1::{
    AckRequest, DigestRequest, FetchRequest, Frame, Hello, ItemBatch, PullRequest, RaftMessage,
    StatusRequest, frame,
};
use futures_util::StreamExt as _;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Time allowed for each probe call.
const PROBE_CALL_TIMEOUT_MS: u64 = 5000;

/// What to probe, and as whom.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// The node's cluster address, HOST:PORT.
    #[arg(long)]
    pub addr: String,
    /// The node's id (the name its certificate must carry).
    #[arg(long)]
    pub server_id: String,
    /// The cluster CA certificate (PEM).
    #[arg(long)]
    pub ca: PathBuf,
    /// The client certificate to present (PEM).
    #[arg(long)]
    pub cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// The node id the requests claim (Hello, pull, ack).
    #[arg(long = "as")]
    pub claim: String,
    /// Also ask the node to stand for election (`raft_elect`). Disruptive
    /// with the current leader's certificate: the node then campaigns.
    #[arg(long)]
    pub elect: bool,
}

fn read(p: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("read {}", p.display()))
}

async fn connect(a: &ProbeArgs) -> anyhow::Result<ClusterClient<Channel>> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&a.ca)?))
        .identity(Identity::from_pem(read(&a.cert)?, read(&a.key)?))
        .domain_name(a.server_id.clone());
    let ch = Endpoint::from_shared(format!("https://{}", a.addr))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("connect to {}", a.addr))?;
    Ok(ClusterClient::new(ch))
}

fn outcome<T>(
    rpc: &str,
    r: Result<Result<T, tonic::Status>, tokio::time::error::Elapsed>,
) -> serde_json::Value {
    let (code, message) = match r {
        Ok(Ok(_)) => ("Ok".to_string(), String::new()),
        Ok(Err(s)) => (format!("{:?}", s.code()), s.message().to_owned()),
        Err(_) => ("Timeout".to_string(), String::new()),
    };
    serde_json::json!({ "rpc": rpc, "code": code, "message": message })
}

/// Calls every RPC once and prints one JSON line for each.
pub fn run(a: ProbeArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut c = connect(&a).await?;
        let t = Duration::from_millis(PROBE_CALL_TIMEOUT_MS);
        let claim = a.claim.clone();
        let mut lines = vec![
            outcome(
                "status",
                tokio::time::timeout(t, c.status(StatusRequest {})).await,
            ),
            outcome(
                "digests",
                tokio::time::timeout(t, c.digests(DigestRequest { table: 0 })).await,
            ),
            outcome(
                "fetch_items",
                tokio::time::timeout(
                    t,
                    c.fetch_items(FetchRequest {
                        table: 0,
                        buckets: vec![0],
                    }),
                )
                .await,
            ),
            outcome(
                "push_items",
                tokio::time::timeout(t, c.push_items(ItemBatch { items: vec![] })).await,
            ),
            outcome(
                "pull_stanzas",
                tokio::time::timeout(
                    t,
                    c.pull_stanzas(PullRequest {
                        node_id: claim.clone(),
                        after_seq: 0,
                    }),
                )
                .await,
            ),
            outcome(
                "ack_stanzas",
                tokio::time::timeout(
                    t,
                    c.ack_stanzas(AckRequest {
                        node_id: claim.clone(),
                        stanza_seq: 0,
                    }),
                )
                .await,
            ),
            outcome(
                "fetch_file",
                tokio::time::timeout(
                    t,
                    c.fetch_file(chorus_proto::v1::FileRequest {
                        sha256: "0".repeat(64),
                    }),
                )
                .await,
            ),
            raft_call(&mut c, t, "raft", "write", vec![]).await,
            raft_call(&mut c, t, "raft_members", "members", stranger_member_change()?).await,
        ];
        if a.elect {
            lines.push(raft_call(&mut c, t, "raft_elect", "elect", vec![]).await);
        }
        lines.push(outcome(
            "link",
            tokio::time::timeout(t, link(&mut c, &claim)).await,
        ));
        for l in lines {
            println!("{l}");
        }
        anyhow::Ok(())
    })
}

/// Sends one Raft message of `kind` and describes the answer as `rpc`.
async fn raft_call(
    c: &mut ClusterClient<Channel>,
    t: Duration,
    rpc: &'static str,
    kind: &str,
    json: Vec<u8>,
) -> serde_json::Value {
    let msg = RaftMessage {
        kind: kind.into(),
        json,
    };
    outcome(rpc, tokio::time::timeout(t, c.raft(msg)).await)
}

/// A forwarded membership change adding a node no one configured, at an
/// address of the caller's choosing.
fn stranger_member_change() -> anyhow::Result<Vec<u8>> {
    let change = chorus_archive::raft::MemberChange::Add {
        id: "probe-stranger".into(),
        addr: "192.0.2.1:7070".into(),
        voter: true,
    };
    Ok(chorus_archive::codec::encode(&change)?)
}

/// Opens a link claiming `claim` and waits for the node's first answer.
async fn link(c: &mut ClusterClient<Channel>, claim: &str) -> Result<(), tonic::Status> {
    let hello = Frame {
        body: Some(frame::Body::Hello(Hello {
            node_id: claim.to_owned(),
            site: String::new(),
            // Older than any real stream of the claimed node, so a node
            // that admits it never lets it fence off that node's own link.
            incarnation: 0,
            connection: 0,
        })),
    };
    // Hello, then nothing: the stream stays open while we wait.
    let frames = futures_util::stream::iter([hello]).chain(futures_util::stream::pending());
    let mut acks = c.link(frames).await?.into_inner();
    match tokio::time::timeout(Duration::from_millis(500), acks.message()).await {
        Ok(Err(s)) => Err(s),
        _ => Ok(()),
    }
}
