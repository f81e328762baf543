//! The node's console sign-ins and the bound on sign-in attempts.
//!
//! A sign-in is kept under the SHA-256 of its cookie value, with an idle
//! timeout and a maximum age; it carries the account it belongs to (so a
//! disabled account, or one whose sessions an admin ended, loses it on its
//! next request) and a one-shot message for the next page. Attempts are
//! counted before the password is checked, per address (an IPv6 /64 as
//! one) and per account, so parallel guesses count too; when the table of
//! counters is full, new keys are refused rather than let through.

use chorus_core::config::{ApiRole, ConsoleConfig};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window sign-in attempts are counted in.
const ATTEMPT_WINDOW: Duration = Duration::from_secs(300);
/// Keys (addresses and accounts) whose attempts are counted at most.
const ATTEMPT_KEYS_MAX: usize = 4096;

/// One signed-in viewer.
struct Signed {
    name: String,
    account: Option<String>,
    roles: Vec<ApiRole>,
    csrf: String,
    created: Instant,
    created_ms: u64,
    last: Instant,
    flash: Option<String>,
}

/// What a live sign-in says of its viewer.
pub(crate) struct Found {
    /// The key the sign-in is stored under (not the cookie).
    pub(crate) key: String,
    /// The account's bare JID or the token's name.
    pub(crate) name: String,
    /// The account's localpart, for account sign-ins.
    pub(crate) account: Option<String>,
    /// The roles it holds.
    pub(crate) roles: Vec<ApiRole>,
    /// The session's CSRF token.
    pub(crate) csrf: String,
    /// When it signed in (ms since the epoch).
    pub(crate) created_ms: u64,
}

/// The node's console sign-ins and sign-in attempts.
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Signed>>,
    attempts: Mutex<HashMap<String, (Instant, u32)>>,
    idle: Duration,
    max_age: Duration,
    max: usize,
    attempts_max: u32,
}

pub(crate) fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn digest(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Sessions {
    pub(crate) fn new(c: &ConsoleConfig) -> Sessions {
        Sessions {
            map: Mutex::default(),
            attempts: Mutex::default(),
            idle: Duration::from_secs(c.idle_timeout_mins.saturating_mul(60)),
            max_age: Duration::from_secs(c.session_max_hours.saturating_mul(3600)),
            max: c.sessions_max,
            attempts_max: c.login_failures_max,
        }
    }

    fn live(&self, s: &Signed, now: Instant) -> bool {
        now.duration_since(s.last) < self.idle && now.duration_since(s.created) < self.max_age
    }

    /// Starts a sign-in; returns the cookie value, or `None` when the node
    /// holds as many as it may.
    pub(crate) fn start(&self, name: String, account: Option<String>, roles: Vec<ApiRole>) -> Option<String> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| {
            now.duration_since(s.last) < self.idle && now.duration_since(s.created) < self.max_age
        });
        if map.len() >= self.max {
            return None;
        }
        let id = random_hex();
        let signed = Signed {
            name,
            account,
            roles,
            csrf: random_hex(),
            created: now,
            created_ms: chorus_core::time::now_millis(),
            last: now,
            flash: None,
        };
        map.insert(digest(&id), signed);
        Some(id)
    }

    /// Ends the sign-in stored under `key`.
    pub(crate) fn end(&self, key: &str) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// The viewer holding cookie value `id`, touching its idle timer.
    pub(crate) fn find(&self, id: &str) -> Option<Found> {
        let now = Instant::now();
        let key = digest(id);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let live = map.get(&key).is_some_and(|s| self.live(s, now));
        if !live {
            map.remove(&key);
            return None;
        }
        let s = map.get_mut(&key)?;
        s.last = now;
        Some(Found {
            name: s.name.clone(),
            account: s.account.clone(),
            roles: s.roles.clone(),
            csrf: s.csrf.clone(),
            created_ms: s.created_ms,
            key,
        })
    }

    /// Leaves a message for the sign-in's next page.
    pub(crate) fn set_flash(&self, key: &str, msg: String) {
        if let Some(s) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get_mut(key) {
            s.flash = Some(msg);
        }
    }

    /// Takes the message left for this page, if any.
    pub(crate) fn take_flash(&self, key: &str) -> Option<String> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(key)?
            .flash
            .take()
    }

    /// Counts a sign-in attempt against every key; false (and nothing
    /// counted) when one of them has used up its window, or when a new key
    /// finds the table full.
    pub(crate) fn attempt(&self, keys: &[String]) -> bool {
        let mut a = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        a.retain(|_, (at, _)| at.elapsed() < ATTEMPT_WINDOW);
        let over = keys
            .iter()
            .any(|k| a.get(k).is_some_and(|(_, n)| *n >= self.attempts_max));
        let new = keys.iter().filter(|k| !a.contains_key(*k)).count();
        if over || a.len() + new > ATTEMPT_KEYS_MAX {
            return false;
        }
        for k in keys {
            a.entry(k.clone()).or_insert((Instant::now(), 0)).1 += 1;
        }
        true
    }

    /// A sign-in succeeded: its attempt does not count against the address
    /// (the account's count stays, so a guesser cannot reset it by
    /// signing in to another account).
    pub(crate) fn succeeded(&self, address_key: &str) {
        let mut a = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = a.get_mut(address_key) {
            e.1 = e.1.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(attempts: u32) -> Sessions {
        Sessions::new(&ConsoleConfig {
            sessions_max: 2,
            login_failures_max: attempts,
            ..ConsoleConfig::default()
        })
    }

    #[test]
    fn a_session_is_found_by_its_cookie_only_and_ends() {
        let s = sessions(2);
        let id = s
            .start("carol@x".into(), Some("carol".into()), vec![ApiRole::Compliance])
            .expect("room");
        let found = s.find(&id).expect("live");
        assert_eq!(
            (found.name.as_str(), found.account.as_deref()),
            ("carol@x", Some("carol"))
        );
        assert!(
            s.find(&digest(&id)).is_none(),
            "the stored digest is not a cookie"
        );
        s.set_flash(&found.key, "done".into());
        assert_eq!(s.take_flash(&found.key).as_deref(), Some("done"));
        assert_eq!(s.take_flash(&found.key), None, "shown once");
        s.end(&found.key);
        assert!(s.find(&id).is_none());
    }

    #[test]
    fn sessions_are_bounded() {
        let s = sessions(2);
        assert!(s.start("a".into(), None, vec![]).is_some());
        assert!(s.start("b".into(), None, vec![]).is_some());
        assert!(s.start("c".into(), None, vec![]).is_none());
    }

    #[test]
    fn attempts_are_counted_per_address_and_account_before_the_check() {
        let s = sessions(2);
        let (ip, alice, bob) = ("ip:1".to_owned(), "acct:alice".to_owned(), "acct:bob".to_owned());
        assert!(s.attempt(&[ip.clone(), alice.clone()]));
        assert!(s.attempt(&[ip.clone(), alice.clone()]));
        assert!(
            !s.attempt(&["ip:2".into(), alice.clone()]),
            "alice's guesses from anywhere"
        );
        assert!(
            !s.attempt(&[ip.clone(), bob.clone()]),
            "this address's guesses at anyone"
        );
        s.succeeded(&ip);
        assert!(
            s.attempt(&[ip, bob]),
            "a success gives the address its attempt back"
        );
    }

    #[test]
    fn a_full_table_refuses_new_keys() {
        let s = sessions(5);
        for i in 0..ATTEMPT_KEYS_MAX {
            assert!(s.attempt(&[format!("k{i}")]));
        }
        assert!(!s.attempt(&["fresh".into()]), "fails closed");
        assert!(s.attempt(&["k7".into()]), "known keys still count");
    }

    #[test]
    fn an_idle_session_expires() {
        let s = sessions(2);
        let id = s.start("carol".into(), None, vec![]).expect("room");
        {
            let mut map = s.map.lock().expect("lock");
            let e = map.get_mut(&digest(&id)).expect("stored");
            e.last = Instant::now()
                .checked_sub(Duration::from_secs(16 * 60))
                .expect("clock");
        }
        assert!(
            s.find(&id).is_none(),
            "idle for 16 minutes with a 15 minute timeout"
        );
    }
}
