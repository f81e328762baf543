//! `chorus user add|remove|passwd|list`: against the database directly when
//! the node is stopped, through the control socket when it runs.

use crate::control::{self, Request};
use anyhow::Context as _;
use chorus_core::config::Config;
use chorus_core::credentials::Credentials;
use chorus_core::store::Store;
use chorus_store::{OpenError, RocksStore};
use clap::Subcommand;

/// An account operation.
#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// Create an account.
    Add {
        /// The account's localpart, e.g. `alice` for alice@domain.
        name: String,
        /// The password (read from standard input when omitted).
        #[arg(long)]
        password: Option<String>,
    },
    /// Remove an account and all its data.
    Remove {
        /// The account's localpart.
        name: String,
    },
    /// Change an account's password.
    Passwd {
        /// The account's localpart.
        name: String,
        /// The new password (read from standard input when omitted).
        #[arg(long)]
        password: Option<String>,
    },
    /// List accounts, one per line.
    List,
    /// Create the accounts that do not exist yet (NAME=PASSWORD ...);
    /// existing ones are left alone, so it can run at every start.
    Seed {
        /// NAME=PASSWORD pairs.
        accounts: Vec<String>,
    },
    /// Create accounts from a CSV file of `user,name,password` lines (an
    /// empty password gets a generated one, printed once); existing
    /// accounts are left alone.
    /// Print a new one-time link for an existing account, where its
    /// person sets a password (the old password keeps working until then).
    Link {
        /// The account's localpart.
        name: String,
        /// Days the link stays valid.
        #[arg(long, default_value_t = 7)]
        link_days: u64,
        /// The link's base URL (as for `import --links`).
        #[arg(long)]
        link_base: Option<String>,
    },
    Import {
        /// The CSV file (`-` for standard input).
        file: std::path::PathBuf,
        /// Instead of generating the passwords left empty, print a one-time
        /// link per account where the person sets their own (the console's
        /// welcome page, on any site).
        #[arg(long)]
        links: bool,
        /// Days a link stays valid.
        #[arg(long, default_value_t = 7)]
        link_days: u64,
        /// The links' base URL (default: the HTTPS listener at the domain,
        /// or the origin of `http.websocket_url`).
        #[arg(long)]
        link_base: Option<String>,
    },
}

fn password(p: Option<String>) -> anyhow::Result<String> {
    match p {
        Some(p) => Ok(p),
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("read password from standard input")?;
            Ok(line.trim_end_matches(['\r', '\n']).to_owned())
        }
    }
}

/// Runs the CLI action.
pub fn run(config: &Config, action: UserAction) -> anyhow::Result<()> {
    let req = match action {
        UserAction::Add { name, password: p } => Request::AddUser {
            user: name,
            password: password(p)?,
        },
        UserAction::Remove { name } => Request::RemoveUser { user: name },
        UserAction::Passwd { name, password: p } => Request::SetPassword {
            user: name,
            password: password(p)?,
        },
        UserAction::List => Request::ListUsers,
        UserAction::Seed { accounts } => return seed(config, &accounts),
        UserAction::Link {
            name,
            link_days,
            link_base,
        } => return link(config, &name, Links::new(config, link_days, link_base)?),
        UserAction::Import {
            file,
            links,
            link_days,
            link_base,
        } => {
            let links = links
                .then(|| Links::new(config, link_days, link_base))
                .transpose()?;
            return import(config, &file, links);
        }
    };
    let list = matches!(req, Request::ListUsers);
    let mut users = Vec::new();
    run_one(config, req, &mut users)?;
    if list {
        for u in users {
            println!("{u}");
        }
    }
    Ok(())
}

/// Creates missing accounts (`user seed`).
fn seed(config: &Config, accounts: &[String]) -> anyhow::Result<()> {
    let entries = crate::provision::seed_entries(accounts)?;
    crate::provision::provision(config, entries, &mut |e, existed| {
        println!("{}: {}", e.name, if existed { "exists" } else { "created" });
    })
}

/// Where one-time links point, and until when they hold.
struct Links {
    base: String,
    until_ms: u64,
}

impl Links {
    fn new(config: &Config, days: u64, base: Option<String>) -> anyhow::Result<Links> {
        anyhow::ensure!(
            config.console.enabled,
            "the console serves one-time links: set [console] enabled = true"
        );
        anyhow::ensure!((1..=90).contains(&days), "--link-days: 1 to 90");
        let base = match base {
            Some(b) => b,
            None => match config
                .http
                .websocket_url
                .as_deref()
                .and_then(|u| u.strip_prefix("wss://"))
            {
                Some(rest) => format!("https://{}", rest.split('/').next().unwrap_or(rest)),
                None => {
                    let port = config.http.listen.filter(|_| config.http.tls).map(|a| a.port()).context(
                        "no HTTPS listener of this node to point links at: give --link-base https://chat.example.com",
                    )?;
                    format!("https://{}:{port}", config.server.domain)
                }
            },
        };
        anyhow::ensure!(base.starts_with("https://"), "--link-base: an https:// URL");
        let until_ms = chorus_core::time::now_millis() + days * 86_400_000;
        Ok(Links {
            base: base.trim_end_matches('/').to_owned(),
            until_ms,
        })
    }
}

/// `s` percent-encoded for a URL path segment (an account name may hold
/// `#`, `?`, `%` or `/`-free oddities that would break the link).
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Gives an existing account a new one-time link and prints it (`user
/// link`); an earlier link of the account stops working.
fn link(config: &Config, name: &str, links: Links) -> anyhow::Result<()> {
    let user = normalize(name, &config.server.domain)?;
    let token = chorus_core::setup_link::new_token();
    let value = chorus_core::setup_link::setting_value(&token, links.until_ms);
    run_one(
        config,
        Request::SetupLink {
            user: user.clone(),
            value,
        },
        &mut Vec::new(),
    )?;
    println!(
        "{name}: one-time link {}/console/welcome/{}/{token}",
        links.base,
        path_segment(&user)
    );
    Ok(())
}

/// Creates the accounts of a CSV file (`user import`); a generated
/// password, or a one-time link, is printed with its account, once.
fn import(config: &Config, file: &std::path::Path, links: Option<Links>) -> anyhow::Result<()> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("read standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?
    };
    let entries = crate::provision::csv_entries(&text, links.as_ref().map(|l| l.until_ms))?;
    let domain = config.server.domain.clone();
    crate::provision::provision(
        config,
        entries,
        &mut |e, existed| match (existed, &e.link, e.generated) {
            (true, _, _) => println!("{}: exists", e.name),
            (false, Some((token, _)), _) => {
                let base = links.as_ref().map(|l| l.base.as_str()).unwrap_or_default();
                let user = path_segment(&normalize(&e.name, &domain).unwrap_or_else(|_| e.name.clone()));
                println!(
                    "{}: created, one-time link {base}/console/welcome/{user}/{token}",
                    e.name
                );
            }
            (false, None, true) => println!("{}: created, password {}", e.name, e.password),
            (false, None, false) => println!("{}: created", e.name),
        },
    )
}

/// Runs one request against the database or the running node.
fn run_one(config: &Config, req: Request, users: &mut Vec<String>) -> anyhow::Result<()> {
    let db = config.server.data_dir.join("db");
    crate::private_fs::private_dir(&config.server.data_dir)?;
    *users = match RocksStore::open(&db, config.node_tag()) {
        Ok(store) => apply(&store, &Realm::of(config), req)?,
        Err(OpenError::Locked(_)) => {
            let resp = control::call(&config.server.data_dir, &req)?;
            if let Some(e) = resp.error {
                anyhow::bail!(e);
            }
            resp.users
        }
        Err(e) => return Err(e.into()),
    };
    Ok(())
}

pub(crate) fn normalize(name: &str, domain: &str) -> anyhow::Result<String> {
    let j = jid::BareJid::new(&format!("{name}@{domain}"))
        .with_context(|| format!("{name:?} is not a valid username"))?;
    j.node()
        .map(|n| n.to_string())
        .with_context(|| format!("{name:?} is not a valid username"))
}

/// What account changes need of the node's config: the domain names are
/// normalized in, and the PBKDF2 iteration count new credentials get
/// (`c2s.scram_iterations`, the same as a login upgrades old ones to).
#[derive(Clone, Debug)]
pub struct Realm {
    /// The XMPP domain.
    pub domain: String,
    /// PBKDF2 iterations for new credentials.
    pub iterations: u32,
}

impl Realm {
    /// The realm of a node's config.
    pub fn of(config: &Config) -> Realm {
        Realm {
            domain: config.server.domain.clone(),
            iterations: config.c2s.scram_iterations,
        }
    }
}

/// Applies a request to a store; returns account names for `ListUsers`.
pub fn apply(store: &dyn Store, realm: &Realm, req: Request) -> anyhow::Result<Vec<String>> {
    let (domain, iterations) = (realm.domain.as_str(), realm.iterations);
    match req {
        Request::AddUser { user, password } => {
            let user = normalize(&user, domain)?;
            let creds = Credentials::from_password_with(&password, iterations)?;
            store.create_account(&user, &creds)?;
        }
        Request::RemoveUser { user } => {
            let user = normalize(&user, domain)?;
            anyhow::ensure!(store.remove_account(&user)?, "account {user} does not exist");
        }
        Request::SetPassword { user, password } => {
            let user = normalize(&user, domain)?;
            store.set_credentials(&user, &Credentials::from_password_with(&password, iterations)?)?;
        }
        Request::ListUsers => return Ok(store.list_accounts()?),
        Request::SetupLink { user, value } => {
            let user = normalize(&user, domain)?;
            anyhow::ensure!(
                store.credentials(&user)?.is_some(),
                "account {user} does not exist"
            );
            anyhow::ensure!(
                store
                    .setting(&user, chorus_core::directory::DIRECTORY_DN_SETTING)?
                    .is_none(),
                "{user} is a directory account: its password is the directory's"
            );
            store.set_setting(&user, chorus_core::setup_link::SETUP_LINK_SETTING, &value)?;
        }
        Request::CreateAccounts { accounts } => {
            for a in &accounts {
                anyhow::ensure!(
                    normalize(&a.user, domain)? == a.user,
                    "{:?} is not a normalized name",
                    a.user
                );
                anyhow::ensure!(
                    a.creds.sha1.iterations >= iterations && a.creds.sha256.iterations >= iterations,
                    "{}: credentials derived with fewer than {iterations} iterations",
                    a.user
                );
            }
            return Ok(store.create_accounts(&accounts)?);
        }
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_core::mem_store::MemStore;

    #[test]
    fn link_paths_encode_what_would_break_a_url() {
        assert_eq!(path_segment("nadia"), "nadia");
        assert_eq!(path_segment("a#b?c%d"), "a%23b%3Fc%25d");
        assert_eq!(path_segment("zoë"), "zo%C3%AB");
    }

    #[test]
    fn accounts_made_or_reset_by_the_cli_get_the_configured_iterations() {
        let store = MemStore::new();
        let realm = Realm {
            domain: "example.com".into(),
            iterations: 12_345,
        };
        let add = Request::AddUser {
            user: "Alice".into(),
            password: "pw-1".into(),
        };
        apply(&store, &realm, add).expect("add");
        let c = store.credentials("alice").expect("read").expect("created");
        assert_eq!((c.sha1.iterations, c.sha256.iterations), (12_345, 12_345));
        let realm = Realm {
            iterations: 23_456,
            ..realm
        };
        let reset = Request::SetPassword {
            user: "alice".into(),
            password: "pw-2".into(),
        };
        apply(&store, &realm, reset).expect("reset");
        let c = store.credentials("alice").expect("read").expect("kept");
        assert_eq!(c.sha256.iterations, 23_456);
    }
}
