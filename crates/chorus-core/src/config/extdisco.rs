//! `[extdisco]`: STUN and TURN servers announced to clients for audio and
//! video calls (XEP-0215 external service discovery). A TURN server with a
//! shared secret gets time-limited credentials per request, in the form
//! coturn's `use-auth-secret` checks (username `expiry:user`, password
//! base64 HMAC-SHA1 of the username), so no long-lived password reaches a
//! client.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[extdisco]`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtdiscoConfig {
    /// The services, in the order announced.
    pub services: Vec<ExternalService>,
}

/// `[[extdisco.services]]`: one STUN or TURN server.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalService {
    /// `stun`, `stuns`, `turn` or `turns`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `udp` or `tcp`, if the service is bound to one.
    #[serde(default)]
    pub transport: Option<String>,
    /// A name to show.
    #[serde(default)]
    pub name: Option<String>,
    /// File holding the TURN server's shared secret (`static-auth-secret`):
    /// each request gets credentials valid for `credentials_ttl_secs`.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Lifetime of issued credentials.
    #[serde(default = "default_ttl")]
    pub credentials_ttl_secs: u64,
}

fn default_ttl() -> u64 {
    86_400
}

impl ExtdiscoConfig {
    /// Checks the services (the caller names the key in its error).
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        for s in &self.services {
            if !matches!(s.kind.as_str(), "stun" | "stuns" | "turn" | "turns") {
                return Err((
                    "extdisco.services",
                    format!("type {:?}: use stun, stuns, turn or turns", s.kind),
                ));
            }
            if s.host.is_empty() || s.port == 0 {
                return Err((
                    "extdisco.services",
                    format!("{} service needs a host and a port", s.kind),
                ));
            }
            if let Some(t) = &s.transport
                && !matches!(t.as_str(), "udp" | "tcp")
            {
                return Err(("extdisco.services", format!("transport {t:?}: use udp or tcp")));
            }
            if s.secret_file.is_some() && !s.kind.starts_with("turn") {
                return Err((
                    "extdisco.services",
                    format!("{}: only TURN servers take a secret", s.host),
                ));
            }
            if s.secret_file.is_some() && !(60..=7 * 86_400).contains(&s.credentials_ttl_secs) {
                return Err((
                    "extdisco.services",
                    "credentials_ttl_secs: between 60 and 604800".to_owned(),
                ));
            }
        }
        Ok(())
    }
}
