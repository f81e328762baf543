//! The node's configuration: one TOML file, overridden by environment
//! variables, validated before the node starts.
//!
//! Environment overrides are named `CHORUS_<SECTION>__<KEY>`, for example
//! `CHORUS_SERVER__DOMAIN=example.com` or `CHORUS_LIMITS__STANZA_BYTES_MAX=65536`;
//! other `CHORUS_` variables (such as `CHORUS_CONFIG`) are not overrides.
//! The value is read as a TOML value when it parses as one (numbers,
//! booleans) and as a string otherwise.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

mod archive;
mod cluster;
mod components;
mod console;
mod contacts;
mod directory;
mod extdisco;
mod http;
mod limits;
mod policy;
mod push;
mod services;
mod upload;
pub use archive::{ArchiveConfig, ArchiveExclusion, ArchiveMode};
pub use components::{ComponentService, ComponentsConfig};
pub use console::ConsoleConfig;
pub use contacts::ContactsConfig;
pub use directory::{DirectoryConfig, SharedGroupConfig};
pub use extdisco::{ExtdiscoConfig, ExternalService};
pub use http::{Cidr, HttpConfig};
pub use limits::LimitsConfig;
pub use policy::{E2ePolicy, PolicyConfig};
pub use push::PushConfig;
pub use services::{MucConfig, TelemetryConfig};
pub use upload::UploadConfig;

/// Prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "CHORUS_";

/// A configuration error: which file, which key, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{source_name}: {key}: {reason}")]
pub struct ConfigError {
    /// The file (or `environment`) the bad value came from.
    pub source_name: String,
    /// The dotted key, such as `limits.stanza_bytes_max`.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Domain and data directory.
    pub server: ServerConfig,
    /// Certificates.
    pub tls: TlsConfig,
    /// Client-to-server listeners.
    pub c2s: C2sConfig,
    /// The HTTP listener (WebSocket, metrics, health).
    pub http: HttpConfig,
    /// Limits on everything.
    pub limits: LimitsConfig,
    /// XEP-0198 stream management.
    pub stream_management: StreamManagementConfig,
    /// XEP-0077 in-band registration.
    pub registration: RegistrationConfig,
    /// Logging.
    pub log: LogConfig,
    /// Membership of the multi-site cluster.
    pub cluster: ClusterConfig,
    /// The compliance archive.
    pub archive: ArchiveConfig,
    /// The token-protected HTTP API (compliance and administration).
    pub api: ApiConfig,
    /// XEP-0045 multi-user chat.
    pub muc: MucConfig,
    /// OpenTelemetry tracing.
    pub telemetry: TelemetryConfig,
    /// STUN/TURN servers for calls (XEP-0215).
    pub extdisco: ExtdiscoConfig,
    /// Compliance policy for users (end-to-end encryption).
    pub policy: PolicyConfig,
    /// XEP-0363 HTTP File Upload.
    pub upload: UploadConfig,
    /// XEP-0114 external components.
    pub components: ComponentsConfig,
    /// XEP-0357 push notifications.
    pub push: PushConfig,
    /// XEP-0157 contact addresses.
    pub contacts: ContactsConfig,
    /// The compliance and operations console at `/console/`.
    pub console: ConsoleConfig,
    /// An LDAP / Active Directory server whose people are accounts.
    pub directory: DirectoryConfig,
    /// Shared roster groups defined here (`[[shared_groups]]`).
    pub shared_groups: Vec<SharedGroupConfig>,
}

/// `[api]`: who may call the compliance and admin API under `/api/v1/`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer tokens, stored as SHA-256 digests (`chorus api-token new`
    /// prints a token and its entry). No tokens: the API refuses everyone.
    pub tokens: Vec<ApiToken>,
}

/// One API token.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who holds it (recorded in the audit trail).
    pub name: String,
    /// What it may do.
    pub role: ApiRole,
    /// Lower-case hex SHA-256 of the token.
    pub sha256: String,
}

/// What an API token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiRole {
    /// Cluster and archive administration (membership, retention policy).
    Admin,
    /// Search, conversations, holds, exports, the audit trail.
    Compliance,
}

/// The default of `cluster.max_clock_skew_ms`: how far ahead of this
/// node's clock a peer's timestamps may be.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: u64 = 60_000;

/// `[cluster]`: this node's identity and its peers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// The site (office) this node belongs to.
    pub site: String,
    /// Cluster gRPC listener (mTLS); empty for a node without peers.
    pub listen: Option<SocketAddr>,
    /// PEM of the cluster CA that signs every node certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate of this node (from `chorus cert node`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of this node.
    pub key_file: Option<PathBuf>,
    /// How long a silent peer's sessions stay valid, in milliseconds.
    pub lease_ms: u64,
    /// How often this node tells peers it is alive, in milliseconds.
    pub heartbeat_ms: u64,
    /// How far ahead of this node's clock a peer's timestamps (replicated
    /// item versions, archive records, audit entries) may be, in
    /// milliseconds; anything further ahead is refused and counted.
    pub max_clock_skew_ms: u64,
    /// The other nodes.
    pub peers: Vec<PeerConfig>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: "node1".into(),
            site: "default".into(),
            listen: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            lease_ms: 3000,
            heartbeat_ms: 500,
            max_clock_skew_ms: DEFAULT_MAX_CLOCK_SKEW_MS,
            peers: Vec::new(),
        }
    }
}

/// `[[cluster.peers]]`: another node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's node id (also the name in its certificate).
    pub id: String,
    /// The peer's site.
    pub site: String,
    /// Where to reach its cluster listener, `host:port`.
    pub addr: String,
}

/// `[server]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The XMPP domain this node serves.
    pub domain: String,
    /// Where RocksDB and generated certificates live.
    pub data_dir: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            domain: "localhost".into(),
            data_dir: PathBuf::from("./data"),
        }
    }
}

/// `[tls]`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain; when empty a self-signed development
    /// certificate is generated under `<data_dir>/tls/` on first start.
    pub cert_file: Option<PathBuf>,
    /// PEM private key matching `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// `[c2s]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct C2sConfig {
    /// Listener that requires STARTTLS (RFC 6120); empty to disable.
    pub starttls_listen: Option<SocketAddr>,
    /// Listener speaking TLS from the first byte (XEP-0368); empty to disable.
    pub direct_tls_listen: Option<SocketAddr>,
    /// Offer SASL PLAIN (always only inside TLS).
    pub allow_plain: bool,
    /// PBKDF2 iterations for new SCRAM credentials (registration, password
    /// changes, `chorus user add`); credentials with fewer are upgraded at
    /// the account's next PLAIN login, the only time the server sees the
    /// password. At least 4,096 (RFC 7677).
    pub scram_iterations: u32,
}

impl Default for C2sConfig {
    fn default() -> Self {
        C2sConfig {
            starttls_listen: Some(SocketAddr::from(([0, 0, 0, 0], 5222))),
            direct_tls_listen: Some(SocketAddr::from(([0, 0, 0, 0], 5223))),
            allow_plain: true,
            scram_iterations: crate::credentials::ITERATIONS_DEFAULT,
        }
    }
}

/// `[stream_management]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamManagementConfig {
    /// Offer XEP-0198.
    pub enabled: bool,
    /// How long a detached session waits for resumption, in seconds.
    pub resume_timeout_secs: u64,
    /// Unacknowledged stanzas kept for resending before the session is closed.
    pub unacked_stanzas_max: usize,
}

impl Default for StreamManagementConfig {
    fn default() -> Self {
        StreamManagementConfig {
            enabled: true,
            resume_timeout_secs: 300,
            unacked_stanzas_max: 2000,
        }
    }
}

/// `[registration]`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Allow XEP-0077 in-band registration of new accounts (off by default).
    pub enabled: bool,
}

/// `[log]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `chorus_xmpp=debug,info`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

impl Config {
    /// Parses a TOML document, applies environment overrides and validates.
    pub fn parse(
        text: &str,
        source_name: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let err = |key: &str, reason: String| ConfigError {
            source_name: source_name.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
            err("(syntax)", format!("{}{at}", e.message()))
        })?;
        for (name, value) in env {
            // Only CHORUS_<SECTION>__<KEY> names are overrides; others such as
            // CHORUS_CONFIG belong to the command line or to tools.
            if let Some(rest) = name.strip_prefix(ENV_PREFIX).filter(|r| r.contains("__")) {
                apply_env_override(&mut table, rest, &value).map_err(|reason| ConfigError {
                    source_name: format!("environment variable {name}"),
                    key: rest.to_lowercase().replace("__", "."),
                    reason,
                })?;
            }
        }
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| err(&e.path().to_string(), e.inner().to_string()))?;
        config.validate().map_err(|(k, r)| err(k, r))?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if jid::BareJid::new(&self.server.domain)
            .map(|j| j.node().is_some())
            .unwrap_or(true)
            || self.server.domain.contains('/')
        {
            return Err((
                "server.domain",
                format!("{:?} is not a valid XMPP domain", self.server.domain),
            ));
        }
        if self.server.data_dir.as_os_str().is_empty() {
            return Err(("server.data_dir", "must not be empty".into()));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err((
                "tls.key_file",
                "cert_file and key_file must be set together".into(),
            ));
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            return Err((
                "log.format",
                format!("{:?} is neither \"text\" nor \"json\"", self.log.format),
            ));
        }
        self.validate_cluster()?;
        self.upload.validate()?;
        let taken = [
            self.server.domain.clone(),
            self.muc_domain(),
            self.upload_domain(),
        ];
        self.components.validate(&taken)?;
        self.contacts.validate()?;
        self.console.validate()?;
        self.directory.validate()?;
        directory::validate_groups(&self.shared_groups)?;
        if self.directory.url.is_some() && !self.c2s.allow_plain {
            return Err((
                "c2s.allow_plain",
                "directory accounts log in with PLAIN over TLS (their password is checked by the directory)"
                    .into(),
            ));
        }
        self.extdisco.validate()?;
        self.http.validate()?;
        let l = &self.limits;
        let positive: [(&'static str, u64); 21] = [
            ("limits.stanza_bytes_max", l.stanza_bytes_max as u64),
            ("limits.xml_depth_max", l.xml_depth_max as u64),
            ("limits.connections_max", l.connections_max as u64),
            ("limits.connections_per_ip_max", l.connections_per_ip_max as u64),
            (
                "limits.unauthenticated_connections_max",
                l.unauthenticated_connections_max as u64,
            ),
            (
                "limits.unauthenticated_per_ip_max",
                l.unauthenticated_per_ip_max as u64,
            ),
            ("limits.connection_bytes_per_sec", l.connection_bytes_per_sec),
            ("limits.user_stanzas_per_sec", l.user_stanzas_per_sec as u64),
            ("limits.sessions_per_user_max", l.sessions_per_user_max as u64),
            ("limits.auth_failure_window_secs", l.auth_failure_window_secs),
            ("limits.handshake_timeout_secs", l.handshake_timeout_secs),
            ("limits.write_timeout_secs", l.write_timeout_secs),
            (
                "limits.session_queue_stanzas_max",
                l.session_queue_stanzas_max as u64,
            ),
            ("limits.roster_items_max", l.roster_items_max as u64),
            ("limits.directed_presence_max", l.directed_presence_max as u64),
            ("limits.pep_nodes_max", l.pep_nodes_max as u64),
            ("limits.pep_items_per_node_max", l.pep_items_per_node_max as u64),
            ("limits.pep_item_bytes_max", l.pep_item_bytes_max as u64),
            ("limits.pep_bytes_per_user_max", l.pep_bytes_per_user_max as u64),
            (
                "limits.private_storage_bytes_max",
                l.private_storage_bytes_max as u64,
            ),
            (
                "stream_management.unacked_stanzas_max",
                self.stream_management.unacked_stanzas_max as u64,
            ),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err((key, "must be greater than zero".into()));
            }
        }
        if l.stanza_bytes_max < 4096 {
            return Err(("limits.stanza_bytes_max", "must be at least 4096 bytes".into()));
        }
        if self.c2s.scram_iterations < crate::credentials::ITERATIONS_MIN {
            return Err((
                "c2s.scram_iterations",
                format!(
                    "must be at least {} (RFC 7677)",
                    crate::credentials::ITERATIONS_MIN
                ),
            ));
        }
        if l.connection_bytes_per_sec < l.stanza_bytes_max as u64 / 4 {
            return Err((
                "limits.connection_bytes_per_sec",
                "must be at least a quarter of limits.stanza_bytes_max".into(),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The archive's Raft voters: configured, or the first node of each site.
    pub fn archive_voters(&self) -> Vec<String> {
        if !self.archive.voters.is_empty() {
            return self.archive.voters.clone();
        }
        let mut seen = std::collections::HashSet::new();
        let me = std::iter::once((self.cluster.site.as_str(), self.cluster.node_id.as_str()));
        let peers = self
            .cluster
            .peers
            .iter()
            .map(|p| (p.site.as_str(), p.id.as_str()));
        me.chain(peers)
            .filter(|(site, _)| seen.insert(*site))
            .map(|(_, id)| id.to_owned())
            .collect()
    }

    /// The multi-user chat service's domain.
    pub fn muc_domain(&self) -> String {
        if self.muc.domain.is_empty() {
            format!("conference.{}", self.server.domain)
        } else {
            self.muc.domain.clone()
        }
    }

    /// This node's tag in versions (derived from the node id).
    pub fn node_tag(&self) -> u32 {
        crate::hlc::node_tag(&self.cluster.node_id)
    }
}

/// Applies `SECTION__KEY=value` to the table.
fn apply_env_override(table: &mut toml::Table, name: &str, value: &str) -> Result<(), String> {
    let path: Vec<String> = name.split("__").map(|p| p.to_lowercase()).collect();
    if path.len() < 2 || path.iter().any(String::is_empty) {
        return Err("expected CHORUS_<SECTION>__<KEY>".into());
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let mut cur = table;
    for part in &path[..path.len() - 1] {
        let entry = cur
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| format!("{part} is not a section"))?;
    }
    cur.insert(path[path.len() - 1].clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests;
