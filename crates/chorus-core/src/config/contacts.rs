//! `[contacts]`: XEP-0157 contact addresses for the service, shown to
//! clients in the server's disco#info (who to tell about abuse, a security
//! problem, or to ask for support). None by default.

use serde::{Deserialize, Serialize};

/// `[contacts]`: each a list of URIs (`mailto:`, `xmpp:`, `https:`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContactsConfig {
    /// Where to report abuse.
    pub abuse: Vec<String>,
    /// The service's administrators.
    pub admin: Vec<String>,
    /// Where to send feedback.
    pub feedback: Vec<String>,
    /// Where to report security problems.
    pub security: Vec<String>,
    /// Where the service's status is published.
    pub status: Vec<String>,
    /// Where users get support.
    pub support: Vec<String>,
}

impl ContactsConfig {
    /// The XEP-0157 field names with their addresses, in a fixed order.
    pub fn fields(&self) -> [(&'static str, &[String]); 6] {
        [
            ("abuse-addresses", &self.abuse),
            ("admin-addresses", &self.admin),
            ("feedback-addresses", &self.feedback),
            ("security-addresses", &self.security),
            ("status-addresses", &self.status),
            ("support-addresses", &self.support),
        ]
    }

    /// Checks that every address is a URI with a scheme.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        for (_, list) in self.fields() {
            for a in list {
                let scheme_ok = a.split_once(':').is_some_and(|(s, rest)| {
                    !s.is_empty()
                        && !rest.is_empty()
                        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '+')
                });
                if !scheme_ok || a.len() > 1024 {
                    return Err((
                        "contacts",
                        format!("{a:?} is not a URI (such as mailto:it@example.com)"),
                    ));
                }
            }
        }
        Ok(())
    }
}
