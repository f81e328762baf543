//! `chorus dev`: a local three-site cluster, one node per site, as three
//! real `chorus serve` processes on 127.0.0.1 with generated certificates
//! and demo accounts. Ctrl-C stops all three cleanly.

use anyhow::Context as _;
use chorus_core::store::Store as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The sites of the dev cluster: (site, node id).
const SITES: [(&str, &str); 3] = [
    ("london", "london-1"),
    ("newyork", "newyork-1"),
    ("tokyo", "tokyo-1"),
];

/// Ports of site `i`: c2s STARTTLS, direct TLS, HTTP, cluster.
fn ports(base: u16, i: usize) -> [u16; 4] {
    let b = base + 10 * i as u16;
    [b, b + 1, b + 2, b + 3]
}

fn config_text(dir: &Path, certs: &Path, base: u16, i: usize) -> String {
    let (site, node) = SITES[i];
    let [c2s, tls, http, cluster] = ports(base, i);
    let mut peers = String::new();
    for (j, (psite, pnode)) in SITES.iter().enumerate() {
        if j != i {
            let p = ports(base, j)[3];
            peers.push_str(&format!(
                "\n[[cluster.peers]]\nid = \"{pnode}\"\nsite = \"{psite}\"\naddr = \"127.0.0.1:{p}\"\n"
            ));
        }
    }
    format!(
        "# Written by `chorus dev`: site {site}.\n[server]\ndomain = \"{DOMAIN}\"\ndata_dir = \"{data}\"\n\n[c2s]\nstarttls_listen = \"127.0.0.1:{c2s}\"\ndirect_tls_listen = \"127.0.0.1:{tls}\"\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n[cluster]\nnode_id = \"{node}\"\nsite = \"{site}\"\nlisten = \"127.0.0.1:{cluster}\"\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n\n[tls]\ncert_file = \"{xcert}\"\nkey_file = \"{xkey}\"\n\n[console]\ncompliance = [\"officer\"]\nadmin = [\"admin\"]\n{peers}",
        data = dir.join(site).join("data").display(),
        ca = certs.join("ca.pem").display(),
        cert = certs.join(format!("{node}.pem")).display(),
        key = certs.join(format!("{node}.key")).display(),
        xcert = certs.join("xmpp").join(format!("{DOMAIN}.pem")).display(),
        xkey = certs.join("xmpp").join(format!("{DOMAIN}.key")).display(),
    )
}

/// The console's demo accounts: an officer (compliance) and an admin.
const CONSOLE_ACCOUNTS: [(&str, &str); 2] = [("officer", "officer-pass"), ("admin", "admin-pass")];

/// The domain the dev cluster serves.
const DOMAIN: &str = "localhost";

/// One certificate for the domain, served by every site, signed by a CA
/// of its own (not the cluster's: a client certificate could never pass
/// for a node's), so a client that trusts `certs/xmpp/ca.pem` once
/// trusts every office. Returns the CA's path.
fn client_certificate(certs: &Path) -> anyhow::Result<PathBuf> {
    let dir = certs.join("xmpp");
    if !dir.join("ca.pem").exists() {
        chorus_cluster::certs::create_ca(&dir)?;
    }
    if !dir.join(format!("{DOMAIN}.pem")).exists() {
        let names: Vec<String> = [
            format!("*.{DOMAIN}"),
            format!("conference.{DOMAIN}"),
            "127.0.0.1".into(),
            "::1".into(),
        ]
        .into();
        chorus_cluster::certs::create_node(&dir, DOMAIN, &names, &dir)?;
    }
    Ok(dir.join("ca.pem"))
}

/// Writes configs and certificates (once), creates the demo accounts and
/// runs the three nodes until Ctrl-C.
pub fn run(dir: &Path, base: u16) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolve {}", dir.display()))?;
    let certs = dir.join("certs");
    if !certs.join("ca.pem").exists() {
        chorus_cluster::certs::create_ca(&certs)?;
    }
    for (_, node) in SITES {
        if !certs.join(format!("{node}.pem")).exists() {
            let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
            chorus_cluster::certs::create_node(&certs, node, &names, &certs)?;
        }
    }
    let client_ca = client_certificate(&certs)?;
    let mut configs: Vec<PathBuf> = Vec::new();
    for (i, (site, _)) in SITES.iter().enumerate() {
        let path = dir.join(site).join("chorus.toml");
        std::fs::create_dir_all(dir.join(site))?;
        std::fs::write(&path, config_text(&dir, &certs, base, i))
            .with_context(|| format!("write {}", path.display()))?;
        let config = crate::load_config(&path)?;
        std::fs::create_dir_all(&config.server.data_dir)?;
        let store = chorus_store::RocksStore::open(&config.server.data_dir.join("db"), config.node_tag())?;
        let existing = store.list_accounts()?;
        for &(user, pass) in crate::demo::DEMO_ACCOUNTS.iter().chain(&CONSOLE_ACCOUNTS) {
            if !existing.iter().any(|u| u == user) {
                let req = crate::control::Request::AddUser {
                    user: user.into(),
                    password: pass.into(),
                };
                crate::users::apply(&store, &crate::users::Realm::of(&config), req)?;
            }
        }
        configs.push(path);
    }
    let exe = std::env::current_exe().context("find the chorus binary")?;
    let mut children: Vec<(String, Child)> = Vec::new();
    for (i, path) in configs.iter().enumerate() {
        let log = std::fs::File::create(dir.join(SITES[i].0).join("node.log"))?;
        let child = Command::new(&exe)
            .arg("--config")
            .arg(path)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start the {} node", SITES[i].0))?;
        children.push((SITES[i].0.to_string(), child));
    }
    println!(
        "Chorus dev cluster for domain 'localhost' (data, configs and logs in {})",
        dir.display()
    );
    println!(
        "{:<9} {:<11} {:>9} {:>11} {:>11} {:>8}",
        "SITE", "NODE", "STARTTLS", "DIRECT TLS", "HTTPS", "CLUSTER"
    );
    for (i, (site, node)) in SITES.iter().enumerate() {
        let [c2s, tls, http, cluster] = ports(base, i);
        println!("{site:<9} {node:<11} {c2s:>9} {tls:>11} {http:>11} {cluster:>8}");
    }
    println!(
        "Accounts (log in at any site): alice / alice-pass, bob / bob-pass, carol / carol-pass @localhost"
    );
    println!(
        "Console: https://127.0.0.1:{}/console/ as officer / officer-pass (compliance) or admin / admin-pass (admin)",
        ports(base, 0)[2]
    );
    println!(
        "Certificate: one for '{DOMAIN}' at every site; clients trust it once through the CA {}",
        client_ca.display()
    );
    println!(
        "Status: chorus --config {} cluster status. Stop with Ctrl-C.",
        configs[0].display()
    );
    wait(children)
}

fn wait(mut children: Vec<(String, Child)>) -> anyhow::Result<()> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let exited = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut poll = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = term.recv() => return anyhow::Ok(None),
                _ = int.recv() => return anyhow::Ok(None),
                _ = poll.tick() => {
                    for (site, c) in children.iter_mut() {
                        if let Ok(Some(status)) = c.try_wait() {
                            return anyhow::Ok(Some(format!("the {site} node exited ({status}); see its node.log")));
                        }
                    }
                }
            }
        }
    })?;
    println!("stopping the cluster");
    for (_, c) in &children {
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
    }
    for (site, c) in children.iter_mut() {
        match c.wait() {
            Ok(s) if s.success() => {}
            Ok(s) => eprintln!("the {site} node stopped with {s}"),
            Err(e) => eprintln!("the {site} node: {e}"),
        }
    }
    match exited {
        Some(msg) => anyhow::bail!(msg),
        None => Ok(()),
    }
}
