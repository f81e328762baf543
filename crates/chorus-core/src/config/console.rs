//! `[console]`: the compliance and operations console served at
//! `/console/` by every node: which accounts of the domain hold which role
//! (API tokens sign in with their own role), and how long a sign-in lasts.

use serde::{Deserialize, Serialize};

/// `[console]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console at `/console/` on the HTTP listener.
    pub enabled: bool,
    /// Accounts (local parts or bare JIDs of the domain) with the
    /// `compliance` role: search, conversations, holds, exports, audit.
    pub compliance: Vec<String>,
    /// Accounts with the `admin` role: health, users, rooms, tokens,
    /// retention.
    pub admin: Vec<String>,
    /// Minutes without a request after which a sign-in ends.
    pub idle_timeout_mins: u64,
    /// Hours after which a sign-in ends however active it is.
    pub session_max_hours: u64,
    /// Signed-in console sessions one node holds at most.
    pub sessions_max: usize,
    /// Failed sign-ins one address may make in 5 minutes.
    pub login_failures_max: u32,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            compliance: Vec::new(),
            admin: Vec::new(),
            idle_timeout_mins: 15,
            session_max_hours: 12,
            sessions_max: 256,
            login_failures_max: 10,
        }
    }
}

impl ConsoleConfig {
    /// Checks the values (the caller names the key in its error).
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive: [(&'static str, u64); 4] = [
            ("console.idle_timeout_mins", self.idle_timeout_mins),
            ("console.session_max_hours", self.session_max_hours),
            ("console.sessions_max", self.sessions_max as u64),
            ("console.login_failures_max", u64::from(self.login_failures_max)),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        for u in self.compliance.iter().chain(&self.admin) {
            if u.trim().is_empty() || u.contains('/') {
                return Err(("console", format!("{u:?} is not an account (name or bare JID)")));
            }
        }
        Ok(())
    }
}
