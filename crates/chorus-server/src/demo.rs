//! `chorus demo`: a single local node with demo accounts, for a first look.

use anyhow::Context as _;
use chorus_core::store::Store as _;
use std::path::Path;

/// The demo accounts and their passwords.
pub const DEMO_ACCOUNTS: [(&str, &str); 3] = [
    ("alice", "alice-pass"),
    ("bob", "bob-pass"),
    ("carol", "carol-pass"),
];

/// Writes a demo config (once), creates the accounts and runs the node.
pub fn run(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolve {}", dir.display()))?;
    let cfg_path = dir.join("chorus.toml");
    if !cfg_path.exists() {
        let text = format!(
            "# Demo node written by `chorus demo`.\n[server]\ndomain = \"localhost\"\ndata_dir = \"{}\"\n\n[c2s]\nstarttls_listen = \"127.0.0.1:5222\"\ndirect_tls_listen = \"127.0.0.1:5223\"\n\n[http]\nlisten = \"127.0.0.1:8080\"\n",
            dir.join("data").display()
        );
        std::fs::write(&cfg_path, text).with_context(|| format!("write {}", cfg_path.display()))?;
    }
    let config = crate::load_config(&cfg_path)?;
    for (user, pass) in DEMO_ACCOUNTS {
        let req = crate::control::Request::AddUser {
            user: user.into(),
            password: pass.into(),
        };
        let db = config.server.data_dir.join("db");
        std::fs::create_dir_all(&config.server.data_dir)?;
        let store = chorus_store::RocksStore::open(&db, config.node_tag())?;
        if store.list_accounts()?.iter().all(|u| u != user) {
            crate::users::apply(&store, &crate::users::Realm::of(&config), req)?;
        }
    }
    println!(
        "Chorus demo node for domain 'localhost' (config: {})",
        cfg_path.display()
    );
    println!("  XMPP with STARTTLS  127.0.0.1:5222    direct TLS  127.0.0.1:5223");
    println!("  WebSocket           wss://127.0.0.1:8080/xmpp-websocket");
    println!("  Metrics             https://127.0.0.1:8080/metrics");
    println!(
        "Accounts: alice@localhost / alice-pass, bob@localhost / bob-pass, carol@localhost / carol-pass"
    );
    println!("The certificate is self-signed: accept it in your client. Stop with Ctrl-C.");
    crate::serve::run(config)
}
