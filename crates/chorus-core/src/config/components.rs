//! `[components]`: XEP-0114 external components (bots, gateways, the push
//! app server) that a firm attaches, each under its own domain with its own
//! shared secret. Off unless a listener and services are configured.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[components]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComponentsConfig {
    /// Where components connect; unset means no component listener.
    pub listen: Option<SocketAddr>,
    /// TLS from the first byte (with the c2s certificate). Turning it off
    /// is allowed only on a loopback address.
    pub tls: bool,
    /// The components that may connect.
    pub services: Vec<ComponentService>,
}

impl Default for ComponentsConfig {
    fn default() -> Self {
        ComponentsConfig {
            listen: None,
            tls: true,
            services: Vec::new(),
        }
    }
}

/// `[[components.services]]`: one component.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentService {
    /// Its domain, such as `bots.example.com`.
    pub domain: String,
    /// File holding its shared secret (read at start).
    pub secret_file: PathBuf,
}

impl ComponentsConfig {
    /// Checks the section against the server's own domains.
    pub(super) fn validate(&self, taken: &[String]) -> Result<(), (&'static str, String)> {
        if let Some(addr) = self.listen
            && !self.tls
            && !addr.ip().is_loopback()
        {
            return Err((
                "components.tls",
                format!("a component listener without TLS must be on loopback, not {addr}"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.services {
            let valid =
                jid::BareJid::new(&s.domain).is_ok_and(|j| j.node().is_none()) && !s.domain.contains('/');
            if !valid {
                return Err(("components.services", format!("{:?} is not a domain", s.domain)));
            }
            if taken.contains(&s.domain) || !seen.insert(s.domain.clone()) {
                return Err(("components.services", format!("{} is already in use", s.domain)));
            }
        }
        Ok(())
    }

    /// Whether `domain` is a configured component.
    pub fn serves(&self, domain: &str) -> bool {
        self.services.iter().any(|s| s.domain == domain)
    }
}
