//! The LDAP side: connections (LDAPS, or StartTLS; the server's
//! certificate checked against `ca_file` or the system's roots), the
//! node's service bind, a paged search of every person (and of the
//! disabled ones), and a person's own bind to check a password. Every
//! operation is bounded by `timeout_secs`.

use chorus_core::config::DirectoryConfig;
use chorus_core::directory::Person;
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Entries asked for per page.
const PAGE: i32 = 500;

/// Why the directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    /// Connecting, TLS, a bind or a search failed.
    #[error("directory: {0}")]
    Ldap(#[from] ldap3::LdapError),
    /// The configuration cannot be used (CA file, password).
    #[error("directory configuration: {0}")]
    Config(String),
    /// The directory answered something that cannot be right.
    #[error("directory: {0}")]
    Protocol(String),
    /// More entries than `entries_max`.
    #[error("the directory lists more than {0} people (directory.entries_max)")]
    TooMany(usize),
}

/// A connection factory for one configured directory.
#[derive(Clone)]
pub struct Client {
    cfg: DirectoryConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    bind_password: String,
}

fn tls_config(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, LdapError> {
    let pem = std::fs::read(ca_file).map_err(|e| LdapError::Config(format!("{}: {e}", ca_file.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| LdapError::Config(format!("{}: {e}", ca_file.display())))?;
        roots
            .add(cert)
            .map_err(|e| LdapError::Config(format!("{}: {e}", ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(LdapError::Config(format!(
            "{}: no certificates",
            ca_file.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LdapError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn first(e: &SearchEntry, attr: &str) -> String {
    e.attrs
        .get(attr)
        .and_then(|v| v.first())
        .cloned()
        .unwrap_or_default()
}

/// The account name an entry's `attr_uid` value gives: lower-cased, and
/// for a `userPrincipalName` (`Ada@corp.example`) the part before the `@`.
pub fn account_name(value: &str) -> String {
    value.split('@').next().unwrap_or_default().trim().to_lowercase()
}

/// The people whose account names can be accounts: an entry whose name is
/// not a valid localpart is left out, and so is every entry after the
/// first with a name already taken (`ada@corp` and `ada@lab` both give
/// `ada`), each with a warning; merging them would merge two people.
fn usable(people: Vec<Person>) -> Vec<Person> {
    let mut seen = HashSet::new();
    people
        .into_iter()
        .filter(|p| {
            if !chorus_core::directory::is_account_name(&p.uid) {
                tracing::warn!(dn = %p.dn, uid = %p.uid, "skipping a directory entry whose name cannot be an account");
                return false;
            }
            if !seen.insert(p.uid.clone()) {
                tracing::warn!(dn = %p.dn, uid = %p.uid, "skipping a directory entry whose account name another entry has");
                return false;
            }
            true
        })
        .collect()
}

/// Photos larger than this are skipped (the vCard must stay under the
/// 64 KiB `limits.vcard_bytes_max` once base64-encoded, with room for
/// the other fields).
pub const PHOTO_BYTES_MAX: usize = 46 * 1024;

/// The entry's photo, if it has one of an acceptable size (binary values
/// arrive in `bin_attrs`; a server may send a JPEG as text if it is valid
/// UTF-8, rarely).
fn photo(e: &SearchEntry, attr: &str) -> Vec<u8> {
    if attr.is_empty() {
        return Vec::new();
    }
    let bytes = e
        .bin_attrs
        .get(attr)
        .and_then(|v| v.first().cloned())
        .or_else(|| {
            e.attrs
                .get(attr)
                .and_then(|v| v.first())
                .map(|s| s.as_bytes().to_vec())
        })
        .unwrap_or_default();
    if bytes.len() > PHOTO_BYTES_MAX {
        tracing::warn!(dn = %e.dn, bytes = bytes.len(), "skipping a directory photo over 46 KiB");
        return Vec::new();
    }
    bytes
}

impl Client {
    /// A client for `cfg` (reads the CA file and the bind password now, so
    /// a broken configuration fails at start).
    pub fn new(cfg: &DirectoryConfig) -> Result<Client, LdapError> {
        let tls = cfg.ca_file.as_deref().map(tls_config).transpose()?;
        let bind_password = match (&cfg.bind_password_file, &cfg.bind_password_env) {
            (Some(f), _) => std::fs::read_to_string(f)
                .map_err(|e| LdapError::Config(format!("{}: {e}", f.display())))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            (None, Some(var)) => {
                std::env::var(var).map_err(|_| LdapError::Config(format!("${var} is not set")))?
            }
            (None, None) => String::new(),
        };
        Ok(Client {
            cfg: cfg.clone(),
            tls,
            bind_password,
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.timeout_secs)
    }

    async fn connect(&self) -> Result<Ldap, LdapError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.timeout())
            .set_starttls(self.cfg.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let url = self.cfg.url.clone().unwrap_or_default();
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &url).await?;
        ldap3::drive!(conn);
        ldap.with_timeout(self.timeout());
        Ok(ldap)
    }

    /// Whether `dn` binds with `password` (an empty password is refused
    /// here: LDAP would take it as an anonymous bind).
    pub async fn check(&self, dn: &str, password: &str) -> Result<bool, LdapError> {
        if password.is_empty() || dn.is_empty() {
            return Ok(false);
        }
        let mut ldap = self.connect().await?;
        let r = ldap.simple_bind(dn, password).await?;
        let _ = ldap.unbind().await;
        // 49 is invalidCredentials; anything else is the directory's trouble.
        match r.rc {
            0 => Ok(true),
            49 => Ok(false),
            _ => {
                r.success()?;
                Ok(false)
            }
        }
    }

    /// The configuration this client was made for.
    pub fn config(&self) -> &DirectoryConfig {
        &self.cfg
    }

    /// A connection bound as the node's service account.
    pub(crate) async fn bound(&self) -> Result<Ldap, LdapError> {
        let mut ldap = self.connect().await?;
        if !self.cfg.bind_dn.is_empty() {
            ldap.simple_bind(&self.cfg.bind_dn, &self.bind_password)
                .await?
                .success()?;
        }
        Ok(ldap)
    }

    async fn search(
        &self,
        ldap: &mut Ldap,
        filter: &str,
        attrs: Vec<String>,
    ) -> Result<Vec<SearchEntry>, LdapError> {
        let base = self.cfg.user_base.clone();
        self.search_in(ldap, &base, filter, attrs).await
    }

    /// A paged subtree search under `base`, bounded by `entries_max`.
    pub(crate) async fn search_in(
        &self,
        ldap: &mut Ldap,
        base: &str,
        filter: &str,
        attrs: Vec<String>,
    ) -> Result<Vec<SearchEntry>, LdapError> {
        let adapters: Vec<Box<dyn Adapter<_, _>>> =
            vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(PAGE))];
        let mut stream = ldap
            .streaming_search_with(adapters, base, Scope::Subtree, filter, attrs)
            .await?;
        let mut out = Vec::new();
        while let Some(entry) = stream.next().await? {
            if out.len() >= self.cfg.entries_max {
                return Err(LdapError::TooMany(self.cfg.entries_max));
            }
            out.push(SearchEntry::construct(entry));
        }
        stream.finish().await.success()?;
        Ok(out)
    }

    /// Every person of the directory, with managers' names resolved and
    /// the disabled ones marked.
    pub async fn people(&self) -> Result<Vec<Person>, LdapError> {
        let mut ldap = self.bound().await?;
        let c = &self.cfg;
        let attrs: Vec<String> = [
            &c.attr_uid,
            &c.attr_name,
            &c.attr_mail,
            &c.attr_title,
            &c.attr_department,
            &c.attr_office,
            &c.attr_manager,
            &c.attr_phone,
            &c.attr_skills,
            &c.attr_photo,
            &c.attr_member_of,
        ]
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.to_string())
        .collect();
        let entries = self.search(&mut ldap, &c.user_filter, attrs).await?;
        let disabled: HashSet<String> = match &c.disabled_filter {
            Some(f) => {
                let both = format!("(&{}{})", c.user_filter, f);
                let found = self.search(&mut ldap, &both, vec![c.attr_uid.clone()]).await?;
                found
                    .iter()
                    .map(|e| account_name(&first(e, &c.attr_uid)))
                    .collect()
            }
            None => HashSet::new(),
        };
        let _ = ldap.unbind().await;
        let names: HashMap<String, String> = entries
            .iter()
            .map(|e| (e.dn.to_lowercase(), first(e, &c.attr_name)))
            .collect();
        let people = entries
            .iter()
            .filter(|e| !first(e, &c.attr_uid).is_empty())
            .map(|e| {
                let uid = account_name(&first(e, &c.attr_uid));
                let manager_dn = first(e, &c.attr_manager);
                Person {
                    disabled: disabled.contains(&uid),
                    uid,
                    dn: e.dn.clone(),
                    name: first(e, &c.attr_name),
                    mail: first(e, &c.attr_mail),
                    title: first(e, &c.attr_title),
                    department: first(e, &c.attr_department),
                    office: first(e, &c.attr_office),
                    manager: names
                        .get(&manager_dn.to_lowercase())
                        .cloned()
                        .unwrap_or(manager_dn),
                    phone: first(e, &c.attr_phone),
                    skills: e.attrs.get(&c.attr_skills).cloned().unwrap_or_default(),
                    photo: photo(e, &c.attr_photo),
                    member_of: if c.attr_member_of.is_empty() {
                        Vec::new()
                    } else {
                        e.attrs.get(&c.attr_member_of).cloned().unwrap_or_default()
                    },
                }
            })
            .collect();
        Ok(usable(people))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn invalid_and_colliding_account_names_are_left_out() {
        let p = |uid: &str, dn: &str| chorus_core::directory::Person {
            uid: uid.into(),
            dn: dn.into(),
            ..Default::default()
        };
        let kept = super::usable(vec![
            p("ada", "a1"),
            p("", "e"),
            p("a b", "s"),
            p("ada", "a2"),
            p("bob", "b"),
        ]);
        let dns: Vec<_> = kept.iter().map(|p| p.dn.as_str()).collect();
        assert_eq!(dns, ["a1", "b"]);
    }

    #[test]
    fn user_principal_names_give_their_local_part() {
        assert_eq!(super::account_name("Ada.Lovelace@Corp.Example"), "ada.lovelace");
        assert_eq!(super::account_name("GRACE"), "grace");
    }
}
