//! `chorus cert …` and `chorus cluster status`.

use anyhow::Context as _;
use chorus_core::config::Config;
use chorus_proto::v1::StatusResponse;
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;

/// Certificate commands.
#[derive(Subcommand, Debug)]
pub enum CertAction {
    /// Create a cluster CA (`ca.pem`, `ca.key`).
    Ca {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Create a node certificate signed by the CA (`<id>.pem`, `<id>.key`).
    Node {
        /// Directory holding `ca.pem` and `ca.key`.
        #[arg(long)]
        ca: PathBuf,
        /// The node id (the certificate's name).
        #[arg(long)]
        id: String,
        /// Extra DNS names or IP addresses (repeatable), e.g. a Kubernetes
        /// service name.
        #[arg(long = "name")]
        names: Vec<String>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Create, in one directory, a CA and node certificates for every
    /// ID[=NAME,NAME...] given, keeping any that already exist (so it can
    /// run at every start of a container deployment).
    Bundle {
        /// Output directory (CA and nodes).
        #[arg(long)]
        out: PathBuf,
        /// Nodes: ID or ID=DNS1,DNS2 (repeatable).
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
    },
}

/// Cluster commands.
#[derive(Subcommand, Debug)]
pub enum ClusterAction {
    /// Show sites, nodes, link state and replication lag.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Call every cluster RPC of a node with a given certificate and print
    /// what it answered (one JSON line per RPC): shows what a certificate
    /// may do.
    Probe(crate::cluster_probe::ProbeArgs),
}

/// Runs a certificate command.
pub fn cert(action: CertAction) -> anyhow::Result<()> {
    match action {
        CertAction::Ca { out } => {
            let (c, k) = chorus_cluster::certs::create_ca(&out)?;
            println!("created {} and {}", c.display(), k.display());
        }
        CertAction::Node { ca, id, names, out } => {
            let (c, k) = chorus_cluster::certs::create_node(&ca, &id, &names, &out)?;
            println!("created {} and {}", c.display(), k.display());
        }
        CertAction::Bundle { out, nodes } => {
            if !out.join("ca.pem").exists() || !out.join("ca.key").exists() {
                let (c, _) = chorus_cluster::certs::create_ca(&out)?;
                println!("created {}", c.display());
            }
            for n in nodes {
                let (id, names) = match n.split_once('=') {
                    Some((id, names)) => (id.to_owned(), names.split(',').map(str::to_owned).collect()),
                    None => (n.clone(), Vec::new()),
                };
                if out.join(format!("{id}.pem")).exists() {
                    println!("{id}: exists");
                    continue;
                }
                let (c, _) = chorus_cluster::certs::create_node(&out, &id, &names, &out)?;
                println!("created {}", c.display());
            }
        }
    }
    Ok(())
}

/// The status as JSON (for the CLI and the admin endpoint).
pub fn status_json(s: &StatusResponse) -> serde_json::Value {
    serde_json::json!({
        "node_id": s.node_id,
        "site": s.site,
        "incarnation": s.incarnation,
        "local_sessions": s.local_sessions,
        "peers": s.peers.iter().map(|p| serde_json::json!({
            "node_id": p.node_id,
            "site": p.site,
            "link_up": p.link_up,
            "last_heard_ms_ago": (p.last_heard_ms_ago >= 0).then_some(p.last_heard_ms_ago),
            "alive": p.alive,
            "sessions": p.sessions,
            "incarnation": p.incarnation,
            "outbox_stanzas": p.outbox_stanzas,
            "replication_lag_items": p.replication_lag_items,
        })).collect::<Vec<_>>(),
    })
}

/// Runs a cluster command against the running node.
pub fn cluster(config: &Config, action: ClusterAction) -> anyhow::Result<()> {
    let json = match action {
        ClusterAction::Status { json } => json,
        ClusterAction::Probe(a) => return crate::cluster_probe::run(a),
    };
    let listen = config.cluster.listen.context("this node has no cluster.listen")?;
    let tls = chorus_cluster::tls::ClusterTls::load(&config.cluster).map_err(|e| anyhow::anyhow!(e))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = rt.block_on(async {
        let addr = if listen.ip().is_unspecified() {
            std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), listen.port())
        } else {
            listen
        };
        let ch = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(tls.client(&config.cluster.node_id))?
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .with_context(|| format!("connect to the node's cluster listener at {addr}"))?;
        let mut client = chorus_proto::v1::cluster_client::ClusterClient::new(ch);
        let s = client
            .status(chorus_proto::v1::StatusRequest {})
            .await
            .context("ask for status")?;
        anyhow::Ok(s.into_inner())
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status_json(&status))?);
        return Ok(());
    }
    println!(
        "node {} (site {}, incarnation {}), {} local sessions",
        status.node_id, status.site, status.incarnation, status.local_sessions
    );
    println!(
        "{:<12} {:<10} {:<6} {:<6} {:<12} {:>8} {:>8} {:>8}",
        "PEER", "SITE", "LINK", "ALIVE", "LAST HEARD", "SESSIONS", "OUTBOX", "LAG"
    );
    for p in status.peers {
        let heard = if p.last_heard_ms_ago < 0 {
            "never".to_string()
        } else {
            format!("{} ms", p.last_heard_ms_ago)
        };
        let link = if p.link_up { "up" } else { "down" };
        let alive = if p.alive { "yes" } else { "no" };
        println!(
            "{:<12} {:<10} {:<6} {:<6} {:<12} {:>8} {:>8} {:>8}",
            p.node_id, p.site, link, alive, heard, p.sessions, p.outbox_stanzas, p.replication_lag_items
        );
    }
    Ok(())
}
