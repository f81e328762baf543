//! The enterprise directory (LDAP / Active Directory) behind `[directory]`:
//! its people become accounts of the domain, log in by binding as
//! themselves (the password is never stored), and are found by the people
//! finder (XEP-0055) through a local index.
//!
//! [`ldap`] talks to the server. [`Directory`] holds the index of the last
//! good synchronization and implements [`chorus_core::directory::People`].
//! [`sync`] runs the synchronization every `sync_interval_secs`: new
//! people get a local account (random SCRAM keys: no password opens it,
//! only a directory bind over PLAIN does; their vCard from the entry),
//! people the directory disables or no longer lists are disabled (the
//! revocation sweeper ends their sessions), and the index is replaced.
//! When the directory cannot be reached the last index stays and the
//! status says so; people who logged in within `login_grace_hours` keep
//! logging in with the same password (checked against a salted PBKDF2
//! verifier kept in memory, never the password).

pub mod groups;
pub mod ldap;
pub mod sync;
pub mod vcard;

use chorus_core::credentials::{ScramHash, ScramKeys};
use chorus_core::directory::{People, PeopleQuery, Person};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How the last synchronization went.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SyncStatus {
    /// When the last good one finished (ms since the epoch).
    pub last_ok_ms: Option<u64>,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
    /// People in the index.
    pub people: usize,
    /// Whether the last attempt reached the directory (false: logins run
    /// on the grace period, the people finder on the last good index).
    pub reachable: bool,
    /// People who may log in on the grace period (seen within it).
    pub recent_logins: usize,
    /// The grace period, in hours.
    pub grace_hours: u64,
}

/// Verifiers of recent directory logins kept at most.
const RECENT_MAX: usize = 100_000;

/// The directory: the LDAP client and the index of its people.
pub struct Directory {
    client: ldap::Client,
    /// Each person, and a lower-cased copy to search.
    people: RwLock<Arc<BTreeMap<String, (Person, Person)>>>,
    status: RwLock<SyncStatus>,
    /// Recent good logins: a salted verifier and when, for the grace period.
    recent: Mutex<HashMap<String, (ScramKeys, Instant)>>,
    grace: Duration,
    on_groups_changed: Mutex<Option<GroupsChanged>>,
}

/// Called after a synchronization changed the shared groups.
pub type GroupsChanged = Box<dyn Fn() + Send + Sync>;

impl Directory {
    /// The directory of `client`, with an empty index until the first sync.
    pub fn new(client: ldap::Client, grace: Duration) -> Directory {
        Directory {
            client,
            people: RwLock::default(),
            status: RwLock::default(),
            recent: Mutex::default(),
            grace,
            on_groups_changed: Mutex::default(),
        }
    }

    /// Sets what to call when a synchronization changed the groups (the
    /// node refreshes its shared roster and tells its sessions at once).
    pub fn on_groups_changed(&self, f: GroupsChanged) {
        *self.on_groups_changed.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    fn groups_changed(&self) {
        if let Some(f) = &*self.on_groups_changed.lock().unwrap_or_else(|e| e.into_inner()) {
            f();
        }
    }

    /// Remembers a good login's verifier (or forgets it after a refusal).
    fn remember(&self, user: &str, password: Option<&str>) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pw) = password.filter(|_| !self.grace.is_zero()) else {
            recent.remove(user);
            return;
        };
        if recent.len() >= RECENT_MAX {
            recent.retain(|_, (_, at)| at.elapsed() < self.grace);
        }
        if recent.len() < RECENT_MAX || recent.contains_key(user) {
            let salt: [u8; 16] = rand::random();
            let keys = ScramKeys::derive(
                ScramHash::Sha256,
                pw,
                &salt,
                chorus_core::credentials::ITERATIONS_MIN,
            );
            recent.insert(user.to_owned(), (keys, Instant::now()));
        }
    }

    /// Whether a recent login's verifier admits `password`.
    fn admits_recent(&self, user: &str, password: &str) -> bool {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.get(user).is_some_and(|(keys, at)| {
            at.elapsed() < self.grace && keys.verify_password(ScramHash::Sha256, password)
        })
    }

    /// How the last synchronization went.
    pub fn status(&self) -> SyncStatus {
        let mut s = self.status.read().unwrap_or_else(|e| e.into_inner()).clone();
        s.reachable = s.last_ok_ms.is_some() && s.last_error.is_none();
        s.recent_logins = self.recent.lock().unwrap_or_else(|e| e.into_inner()).len();
        s.grace_hours = self.grace.as_secs() / 3600;
        s
    }

    /// The person behind an account, from the index.
    pub fn person(&self, uid: &str) -> Option<Person> {
        self.people
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .map(|(p, _)| p.clone())
    }

    fn replace(&self, people: Vec<Person>) {
        let map: BTreeMap<String, (Person, Person)> = people
            .into_iter()
            .map(|mut p| {
                p.photo = Vec::new();
                p.member_of = Vec::new();
                let lower = p.lowercased();
                (p.uid.clone(), (p, lower))
            })
            .collect();
        let n = map.len();
        *self.people.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
        let mut s = self.status.write().unwrap_or_else(|e| e.into_inner());
        *s = SyncStatus {
            last_ok_ms: Some(chorus_core::time::now_millis()),
            people: n,
            ..SyncStatus::default()
        };
    }

    fn failed(&self, why: String) {
        self.status.write().unwrap_or_else(|e| e.into_inner()).last_error = Some(why);
    }
}

impl People for Directory {
    fn check_password(&self, user: &str, password: &str) -> Option<bool> {
        let dn = self.person(user).filter(|p| !p.disabled)?.dn;
        let client = self.client.clone();
        let pw = password.to_owned();
        // Called off the async workers (the session's CPU offload): wait
        // on the runtime for the bind.
        let handle = tokio::runtime::Handle::try_current().ok()?;
        match handle.block_on(async move { client.check(&dn, &pw).await }) {
            Ok(ok) => {
                self.remember(user, ok.then_some(password));
                Some(ok)
            }
            Err(e) => {
                metrics::counter!("chorus_directory_errors_total", "op" => "bind").increment(1);
                let admitted = self.admits_recent(user, password);
                tracing::warn!(user, error = %e, grace = admitted, "directory unreachable for a login");
                Some(admitted)
            }
        }
    }

    fn search(&self, q: &PeopleQuery, max: usize) -> Vec<Person> {
        let people = self.people.read().unwrap_or_else(|e| e.into_inner()).clone();
        let q = q.lowercased();
        let mut out: Vec<&(Person, Person)> = people.values().filter(|(_, l)| q.matches_lowered(l)).collect();
        out.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        out.into_iter().take(max).map(|(p, _)| p.clone()).collect()
    }
}
