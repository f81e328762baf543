//! Bulk provisioning of local accounts: `chorus user import FILE` (CSV:
//! user, name, password; with `--links`, an empty password becomes a
//! one-time link to set it, [`chorus_core::setup_link`]) and `chorus user
//! seed NAME=PASSWORD...`.
//!
//! What made seeding slow was opening the database (or the control
//! socket) and syncing once per account. Here credentials are derived on
//! every core at once (PBKDF2 is the real work), and the accounts are
//! written [`BATCH`] at a time, each batch one synced write: straight into
//! the database when the node is stopped, through the control socket in
//! batches when it runs. Existing accounts are left as they are, so both
//! commands can run at every start.

use crate::control::{self, Request};
use anyhow::Context as _;
use chorus_core::config::Config;
use chorus_core::credentials::Credentials;
use chorus_core::store::{NewAccount, Store};
use chorus_store::{OpenError, RocksStore};
use std::time::Instant;

/// Accounts per synced write (and per control-socket request).
pub const BATCH: usize = 1000;
/// Accounts per control-socket request (each line of the request stays
/// well under its 1 MiB bound: credentials and a vCard of a name of
/// [`DISPLAY_CHARS_MAX`] characters are under 2 KiB).
const SOCKET_BATCH: usize = 250;
/// Characters of a person's name at most.
const DISPLAY_CHARS_MAX: usize = 256;
/// Characters of a generated password.
const GENERATED_CHARS: usize = 20;

/// One account to provision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name as given.
    pub name: String,
    /// The password (generated when the file left it empty).
    pub password: String,
    /// The person's name, for the vCard.
    pub display: Option<String>,
    /// Whether the password was generated here (and must be handed out).
    pub generated: bool,
    /// Instead of a password: a one-time link's token and when it expires
    /// (ms since the epoch).
    pub link: Option<(String, u64)>,
}

/// `NAME=PASSWORD` arguments.
pub fn seed_entries(args: &[String]) -> anyhow::Result<Vec<Entry>> {
    args.iter()
        .map(|a| {
            let (name, pw) = a
                .split_once('=')
                .with_context(|| format!("{a:?}: use NAME=PASSWORD"))?;
            anyhow::ensure!(!pw.is_empty(), "{name}: empty password");
            Ok(Entry {
                name: name.to_owned(),
                password: pw.to_owned(),
                display: None,
                generated: false,
                link: None,
            })
        })
        .collect()
}

/// Splits one CSV line (RFC 4180 quoting: `"a, b"`, `""` for a quote).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        let field = out.last_mut().expect("one field");
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => out.push(String::new()),
            (c, _) => field.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    Ok(out.into_iter().map(|f| f.trim().to_owned()).collect())
}

fn generated_password() -> String {
    const CHARS: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..GENERATED_CHARS)
        .map(|_| CHARS[rand::random_range(0..CHARS.len())] as char)
        .collect()
}

/// Reads an import file: `user,name,password` per line (a header line
/// naming `user` is skipped; `#` lines and blank lines too). An empty
/// password gets a generated one, printed once for the admin to hand out,
/// or with `links_until` (an expiry, ms since the epoch) a one-time link.
pub fn csv_entries(text: &str, links_until: Option<u64>) -> anyhow::Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut first = true;
    let mut seen = std::collections::HashMap::new();
    for (n, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let f = csv_fields(line).map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))?;
        if std::mem::take(&mut first) && f[0].eq_ignore_ascii_case("user") {
            continue;
        }
        if let Some(earlier) = seen.insert(f[0].to_lowercase(), n + 1) {
            anyhow::bail!("line {}: {} is on line {earlier} already", n + 1, f[0]);
        }
        anyhow::ensure!(
            f.get(1).is_none_or(|d| d.chars().count() <= DISPLAY_CHARS_MAX),
            "line {}: a name of at most {DISPLAY_CHARS_MAX} characters",
            n + 1
        );
        anyhow::ensure!(
            (1..=3).contains(&f.len()) && !f[0].is_empty(),
            "line {}: want user,name,password (got {} fields)",
            n + 1,
            f.len()
        );
        let password = f.get(2).cloned().unwrap_or_default();
        let link = links_until
            .filter(|_| password.is_empty())
            .map(|until| (chorus_core::setup_link::new_token(), until));
        anyhow::ensure!(
            link.is_none() || !matches!(f[0].as_str(), "." | ".."),
            "line {}: {:?} cannot be part of a link: give it a password",
            n + 1,
            f[0]
        );
        let generated = password.is_empty() && link.is_none();
        out.push(Entry {
            name: f[0].clone(),
            password: if generated { generated_password() } else { password },
            display: f.get(1).filter(|d| !d.is_empty()).cloned(),
            generated,
            link,
        });
    }
    Ok(out)
}

/// A vCard with the person's full name.
fn vcard(name: &str) -> String {
    use chorus_xmpp::xml::ElementExt as _;
    chorus_xmpp::xml::new("vCard", "vcard-temp")
        .with_child(chorus_xmpp::xml::new("FN", "vcard-temp").with_text(name))
        .to_xml()
}

/// Derives every entry's credentials on all cores.
fn derive(config: &Config, entries: &[Entry]) -> anyhow::Result<Vec<NewAccount>> {
    let domain = &config.server.domain;
    let iterations = config.c2s.scram_iterations;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = entries.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = entries
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|e| {
                            let user = crate::users::normalize(&e.name, domain)?;
                            let (creds, settings) = match &e.link {
                                Some((token, until)) => (
                                    Credentials::unusable(iterations),
                                    vec![(
                                        chorus_core::setup_link::SETUP_LINK_SETTING.to_owned(),
                                        chorus_core::setup_link::setting_value(token, *until),
                                    )],
                                ),
                                None => (
                                    Credentials::from_password_with(&e.password, iterations)
                                        .with_context(|| format!("{}: bad password", e.name))?,
                                    Vec::new(),
                                ),
                            };
                            let vcard = e.display.as_deref().map(vcard);
                            Ok(NewAccount {
                                user,
                                creds,
                                vcard,
                                settings,
                            })
                        })
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(entries.len());
        for w in workers {
            out.extend(
                w.join()
                    .map_err(|_| anyhow::anyhow!("a derivation thread panicked"))??,
            );
        }
        Ok(out)
    })
}

/// Writes the accounts a batch at a time, telling `done` each batch's
/// names that existed once it is durable.
fn write(
    config: &Config,
    accounts: &[NewAccount],
    done: &mut dyn FnMut(&[NewAccount], &[String]),
) -> anyhow::Result<()> {
    crate::private_fs::private_dir(&config.server.data_dir)?;
    match RocksStore::open(&config.server.data_dir.join("db"), config.node_tag()) {
        Ok(store) => {
            for batch in accounts.chunks(BATCH) {
                let existing = store.create_accounts(batch)?;
                done(batch, &existing);
            }
            store.flush().context("flush storage")?;
        }
        Err(OpenError::Locked(_)) => {
            for batch in accounts.chunks(SOCKET_BATCH) {
                let req = Request::CreateAccounts {
                    accounts: batch.to_vec(),
                };
                let resp = control::call(&config.server.data_dir, &req)?;
                if let Some(e) = resp.error {
                    anyhow::bail!(e);
                }
                done(batch, &resp.users);
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Creates the accounts that do not exist yet, calling `report` for each
/// entry (with whether it existed) as soon as its batch is durable, so a
/// failure later leaves nothing unreported (generated passwords included).
pub fn provision(
    config: &Config,
    entries: Vec<Entry>,
    report: &mut dyn FnMut(&Entry, bool),
) -> anyhow::Result<()> {
    let started = Instant::now();
    let accounts = derive(config, &entries)?;
    let (mut created, mut existed, mut at) = (0usize, 0usize, 0usize);
    write(config, &accounts, &mut |batch, existing| {
        for (e, a) in entries[at..at + batch.len()].iter().zip(batch) {
            let was = existing.contains(&a.user);
            if was {
                existed += 1;
            } else {
                created += 1;
            }
            report(e, was);
        }
        at += batch.len();
    })?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{created} accounts created, {existed} existed, in {secs:.2} s ({:.0} accounts/s)",
        created as f64 / secs.max(1e-9)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_with_quotes_headers_and_generated_passwords() {
        let text = "user,name,password\r\nalice,\"Alice Liddell, CFO\",pw-1\n# a comment\n\nbob,\"Bob \"\"B\"\" Jones\",\ncarol\n";
        let e = csv_entries(text, None).expect("valid");
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e[0].name.as_str(), e[0].display.as_deref()),
            ("alice", Some("Alice Liddell, CFO"))
        );
        assert_eq!((e[0].password.as_str(), e[0].generated), ("pw-1", false));
        assert_eq!(e[1].display.as_deref(), Some("Bob \"B\" Jones"));
        assert!(e[1].generated && e[1].password.len() == GENERATED_CHARS);
        assert!(e[2].display.is_none() && e[2].generated);
        assert_ne!(e[1].password, e[2].password);
    }

    #[test]
    fn with_links_an_empty_password_gets_a_one_time_link_kept_as_a_digest() {
        let e = csv_entries("ann,Ann,\nben,Ben,ben-pw\n", Some(5_000)).expect("valid");
        let (token, until) = e[0].link.clone().expect("ann gets a link");
        assert!(!e[0].generated && e[1].link.is_none() && e[1].password == "ben-pw");
        assert_eq!(until, 5_000);
        let mut config = Config::default();
        config.server.domain = "example.com".into();
        let a = derive(&config, &e).expect("derive");
        let (name, value) = &a[0].settings[0];
        assert_eq!(name, chorus_core::setup_link::SETUP_LINK_SETTING);
        assert!(!value.contains(&token), "the token itself is not stored");
        assert!(chorus_core::setup_link::admits(Some(value), &token, 4_999));
        assert!(
            !a[0]
                .creds
                .sha256
                .verify_password(chorus_core::credentials::ScramHash::Sha256, "")
        );
        assert!(a[1].settings.is_empty());
    }

    #[test]
    fn bad_lines_are_named() {
        let err = csv_entries("alice,A,pw\nbob,\"B,pw\n", None).expect_err("unclosed quote");
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = csv_entries("a,b,c,d\n", None).expect_err("four fields");
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = csv_entries("alice,A,pw\nAlice,B,pw2\n", None).expect_err("twice");
        assert!(err.to_string().contains("on line 1 already"), "{err}");
        // A byte-order mark and a comment before the header do not make
        // the header an account.
        let e = csv_entries("\u{feff}# people\nuser,name,password\nbob,Bob,pw\n", None).expect("valid");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].name, "bob");
        assert!(seed_entries(&["alice".into()]).is_err());
        assert!(seed_entries(&["alice=".into()]).is_err());
    }

    #[test]
    fn accounts_are_derived_on_every_core_and_written_once_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.server.data_dir = dir.path().to_owned();
        config.server.domain = "example.com".into();
        config.c2s.scram_iterations = chorus_core::credentials::ITERATIONS_MIN;
        let entries: Vec<Entry> = (0..50)
            .map(|i| Entry {
                name: format!("User{i}"),
                password: format!("pw-{i}"),
                display: (i == 0).then(|| "Zero <Z>".to_owned()),
                generated: false,
                link: None,
            })
            .collect();
        let mut seen = Vec::new();
        provision(&config, entries.clone(), &mut |e, existed| {
            seen.push((e.name.clone(), existed))
        })
        .expect("provision");
        assert_eq!(seen.len(), 50);
        assert!(seen.iter().all(|(_, existed)| !existed));
        let mut again = Vec::new();
        let some = vec![
            entries[0].clone(),
            Entry {
                name: "new".into(),
                ..entries[1].clone()
            },
        ];
        provision(&config, some, &mut |e, existed| {
            again.push((e.name.clone(), existed))
        })
        .expect("again");
        assert_eq!(again, [("User0".to_owned(), true), ("new".to_owned(), false)]);
        let store = RocksStore::open(&dir.path().join("db"), config.node_tag()).expect("open");
        let c = store.credentials("user7").expect("read").expect("created");
        assert!(
            c.sha256
                .verify_password(chorus_core::credentials::ScramHash::Sha256, "pw-7")
        );
        let card = store.vcard("user0").expect("read").expect("vcard");
        assert!(card.contains("Zero &lt;Z&gt;"), "{card}");
    }
}
