//! Shared harness of the in-process cluster tests: three nodes on loopback
//! with real mTLS gRPC, every directed link through its own fault-injecting
//! proxy.

#![allow(dead_code)]

use chorus_archive::raft::{ArchiveNet, ArchiveRaft, raft_id};
use chorus_archive::spool::Spool;
use chorus_archive::state_machine::ArchiveStateMachine;
use chorus_cluster::node::{Cluster, ClusterRouter};
use chorus_core::archive::NoArchive;
use chorus_core::config::{Config, PeerConfig};
use chorus_core::credentials::Credentials;
use chorus_core::store::Store;
use chorus_store::RocksStore;
use chorus_xmpp::context::Context;
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};

pub const DOMAIN: &str = "chorus.test";
pub const NODES: [(&str, &str); 3] = [("a1", "a"), ("b1", "b"), ("c1", "c")];
pub const STEP: Duration = Duration::from_secs(10);

/// A TCP proxy in front of one node's cluster port that can cut its traffic
/// (close every connection and refuse new ones) or pause it (hold every
/// byte, connections stay open, as a congested path would).
pub struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    kill: broadcast::Sender<()>,
    paused: watch::Sender<bool>,
}

/// Copies one direction of a proxied connection, holding bytes while paused.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut paused: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if paused.wait_for(|p| !*p).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = l.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let (kill, _) = broadcast::channel(4);
        let paused = watch::Sender::new(false);
        let (c2, k2, p2) = (cut.clone(), kill.clone(), paused.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = l.accept().await {
                if c2.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown().await;
                    continue;
                }
                let mut killed = k2.subscribe();
                let (up, down) = (p2.subscribe(), p2.subscribe());
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let ((ir, iw), (or, ow)) = (inbound.into_split(), outbound.into_split());
                    tokio::select! {
                        _ = async { tokio::join!(pump(ir, ow, up), pump(or, iw, down)) } => {}
                        _ = killed.recv() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            cut,
            kill,
            paused,
        }
    }

    /// Holds (or releases) every byte through this proxy.
    pub fn set_paused(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            let _ = self.kill.send(());
        }
    }
}

pub struct Node {
    pub cluster: Arc<Cluster>,
    pub ctx: Arc<Context>,
    pub store: Arc<RocksStore>,
    pub config: Config,
    pub stop: watch::Sender<bool>,
}

/// A free port below the kernel's ephemeral range, so an outgoing
/// connection cannot take it between this check and the node's bind.
pub async fn free_port() -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    if NEXT.load(Ordering::SeqCst) == 0 {
        // Spread concurrent test processes (often consecutive pids) apart.
        let start = 12000 + ((std::process::id() as u64 * 97) % 19000) as u16;
        let _ = NEXT.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst);
    }
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 31990, "ran out of test ports");
        if TcpListener::bind(("127.0.0.1", port)).await.is_ok() {
            return port;
        }
    }
}

/// Proxies by (from, to) node index: every directed link has its own.
pub struct Net(pub HashMap<(usize, usize), Proxy>);

impl Net {
    /// Cuts (or heals) every link to and from node `k`.
    pub fn isolate(&self, k: usize, cut: bool) {
        for ((from, to), p) in &self.0 {
            if *from == k || *to == k {
                p.set_cut(cut);
            }
        }
    }
}

/// Starts three nodes; node i reaches node j through proxy (i, j).
pub async fn start(dir: &std::path::Path) -> (Vec<Node>, Net) {
    let certs = dir.join("certs");
    chorus_cluster::certs::create_ca(&certs).expect("ca");
    let mut ports = Vec::new();
    for (id, _) in NODES {
        chorus_cluster::certs::create_node(&certs, id, &["127.0.0.1".into()], &certs).expect("node cert");
        ports.push(free_port().await);
    }
    let mut proxies = HashMap::new();
    for i in 0..NODES.len() {
        for (j, port) in ports.iter().enumerate() {
            if i != j {
                proxies.insert((i, j), Proxy::start(*port).await);
            }
        }
    }
    let mut nodes = Vec::new();
    for (i, (id, site)) in NODES.iter().enumerate() {
        let mut config = Config::default();
        config.server.domain = DOMAIN.into();
        config.server.data_dir = dir.join(id);
        config.cluster.node_id = id.to_string();
        config.cluster.site = site.to_string();
        config.cluster.listen = Some(([127, 0, 0, 1], ports[i]).into());
        config.cluster.ca_file = Some(certs.join("ca.pem"));
        config.cluster.cert_file = Some(certs.join(format!("{id}.pem")));
        config.cluster.key_file = Some(certs.join(format!("{id}.key")));
        config.cluster.lease_ms = 600;
        config.cluster.heartbeat_ms = 100;
        config.cluster.peers = NODES
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, (pid, psite))| PeerConfig {
                id: pid.to_string(),
                site: psite.to_string(),
                addr: format!("127.0.0.1:{}", proxies[&(i, j)].port),
            })
            .collect();
        let store =
            Arc::new(RocksStore::open(&dir.join(id).join("db"), config.node_tag()).expect("open store"));
        for u in ["alice", "bob", "carol", "dave"] {
            let _ = store.create_account(u, &Credentials::from_password_with("pw", 16).expect("creds"));
        }
        let cluster = Cluster::new(&config, store.clone(), 1);
        let ctx = Arc::new(Context::new(
            config.clone(),
            store.clone(),
            Arc::new(ClusterRouter(cluster.clone())),
            Arc::new(NoArchive),
        ));
        cluster.set_context(ctx.clone());
        let tls = chorus_cluster::tls::ClusterTls::load(&config.cluster).expect("tls");
        let (stop, stop_rx) = watch::channel(false);
        let listen = config.cluster.listen.expect("listen");
        chorus_cluster::start(
            cluster.clone(),
            tls,
            listen,
            Duration::from_millis(600),
            Duration::from_millis(100),
            stop_rx,
        )
        .await
        .expect("start")
        .detach_all();
        nodes.push(Node {
            cluster,
            ctx,
            store,
            config,
            stop,
        });
    }
    (nodes, Net(proxies))
}

pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn ready(nodes: &[Node]) {
    eventually("all links up", || {
        nodes.iter().all(|n| {
            let s = chorus_cluster::service::status(&n.cluster);
            s.peers
                .iter()
                .all(|p| p.link_up && p.last_heard_ms_ago >= 0 && p.last_heard_ms_ago < 500)
        })
    })
    .await;
}

/// Every node with its cluster address, as Raft members.
pub fn all_members(nodes: &[Node]) -> BTreeMap<u64, BasicNode> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                raft_id(NODES[i].0),
                BasicNode::new(n.config.cluster.listen.expect("listen").to_string()),
            )
        })
        .collect()
}

/// Runs a node's spool shipper until the node stops.
pub fn spawn_shipper(
    archive: &Arc<chorus_archive::raft::RaftArchive>,
    raft: &Option<ArchiveRaft>,
    net: &ArchiveNet,
    node: &Node,
) {
    let (a, r, n, stop) = (
        archive.clone(),
        raft.clone().expect("raft"),
        net.clone(),
        node.stop.subscribe(),
    );
    tokio::spawn(async move { a.ship(r, n, stop).await });
}

pub async fn shutdown(rafts: Vec<Option<ArchiveRaft>>) {
    for r in rafts.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(5), r.shutdown()).await;
    }
}

pub async fn leader(rafts: &[Option<ArchiveRaft>]) -> usize {
    for _ in 0..200 {
        for (i, r) in rafts.iter().enumerate() {
            if let Some(r) = r
                && r.metrics().borrow().current_leader == Some(r.metrics().borrow().id)
            {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader elected");
}

/// Starts one Raft node per cluster node (all voters) and initializes the
/// group.
pub async fn start_raft(
    nodes: &[Node],
    dir: &std::path::Path,
    voters: &[usize],
) -> (
    Vec<Option<ArchiveRaft>>,
    Vec<ArchiveStateMachine>,
    Vec<Spool>,
    Vec<ArchiveNet>,
) {
    let config = Arc::new(
        openraft::Config {
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            max_payload_entries: chorus_archive::raft::shipper::RAFT_ENTRIES_PER_MESSAGE,
            ..Default::default()
        }
        .validate()
        .expect("raft config"),
    );
    let mut rafts: Vec<Option<ArchiveRaft>> = Vec::new();
    let mut machines: Vec<ArchiveStateMachine> = Vec::new();
    let (mut spools, mut nets) = (Vec::new(), Vec::new());
    for (i, n) in nodes.iter().enumerate() {
        let (log, sm, spool) =
            chorus_archive::db::open_with_spool(&dir.join(format!("archive-{i}")), NODES[i].0, 100_000)
                .expect("archive db");
        // The archive benchmark can run the apply at the producers'
        // priority (0) to measure the archive alone; the default is the
        // shipped one.
        if let Some(nice) = std::env::var("ARCHIVE_BENCH_NICE")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            sm.set_background_nice(nice);
        }
        spools.push(spool);
        let tls = chorus_cluster::tls::ClusterTls::load(&n.config.cluster).expect("tls");
        let net = chorus_cluster::raft_net::archive_net(&n.config.cluster.peers, tls);
        nets.push(net.clone());
        let raft = ArchiveRaft::new(raft_id(NODES[i].0), config.clone(), net, log, sm.clone())
            .await
            .expect("raft");
        assert!(n.cluster.raft.set(raft.clone()).is_ok());
        rafts.push(Some(raft));
        machines.push(sm);
    }
    let voter_ids: Vec<u64> = voters.iter().map(|v| raft_id(NODES[*v].0)).collect();
    let members: BTreeMap<u64, BasicNode> = all_members(nodes)
        .into_iter()
        .filter(|(id, _)| voter_ids.contains(id))
        .collect();
    rafts[0]
        .as_ref()
        .expect("raft")
        .initialize(members)
        .await
        .expect("initialize");

    (rafts, machines, spools, nets)
}
