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

mod http;
pub use http::{Cidr, HttpConfig};

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
}

/// `[telemetry]`: OpenTelemetry traces over OTLP/gRPC (off by default).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector endpoint, e.g. `http://otel-collector:4317`;
    /// empty turns tracing off.
    pub otlp_endpoint: String,
    /// Fraction of traces sampled (0.0 to 1.0).
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: String::new(),
            sample_ratio: 1.0,
            service_name: "chorus".into(),
        }
    }
}

/// `[muc]`: group rooms (XEP-0045), served by every node of the cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MucConfig {
    /// Serve rooms at all.
    pub enabled: bool,
    /// The service's domain; empty means `conference.<server.domain>`.
    pub domain: String,
    /// Whether any user may create rooms (otherwise only existing rooms work).
    pub create: bool,
    /// Occupants per room.
    pub occupants_max: usize,
    /// Messages of discussion history a joining occupant may ask for.
    pub history_max: usize,
    /// Rooms a node keeps.
    pub rooms_max: usize,
}

impl Default for MucConfig {
    fn default() -> Self {
        MucConfig {
            enabled: true,
            domain: String::new(),
            create: true,
            occupants_max: 500,
            history_max: 50,
            rooms_max: 10_000,
        }
    }
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

/// When delivery waits for the archive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveMode {
    /// Deliver once the record is in the node's durable spool; a site cut
    /// off from the majority keeps serving and its records commit later.
    #[default]
    Spool,
    /// Deliver only after the record is committed by a Raft majority;
    /// refuse messages while there is no quorum.
    Strict,
}

/// What the archive may leave out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveExclusion {
    /// Messages without a body: chat states, receipts, markers.
    ChatStates,
    /// `type="headline"` messages.
    Headlines,
    /// `type="error"` messages.
    Errors,
    /// Subscription requests, approvals and cancellations.
    Subscriptions,
    /// Block and unblock events.
    Blocking,
}

/// `[archive]`: the Raft-replicated compliance archive.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Archive every one-to-one message with a body.
    pub enabled: bool,
    /// Node ids of the Raft voters; empty means the first node listed for
    /// each site (this node included), so every site has one vote.
    pub voters: Vec<String>,
    /// Records a node may spool while it cannot commit (cut off from the
    /// majority) before it refuses messages.
    pub spool_records_max: u64,
    /// `spool` (deliver once spooled) or `strict` (deliver once committed).
    pub mode: ArchiveMode,
    /// Strict mode: how long delivery waits for the commit before the
    /// message is refused.
    pub strict_timeout_ms: u64,
    /// What is not archived.
    pub exclude: Vec<ArchiveExclusion>,
    /// The largest XEP-0313 page a client may ask for.
    pub mam_page_max: usize,
    /// How often the Raft leader runs retention (proposes a purge).
    pub retention_interval_secs: u64,
    /// The shortest retention, in days, any policy may set: a floor fixed
    /// in the configuration, which no API call can lower.
    pub retention_min_days: u32,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            enabled: true,
            voters: Vec::new(),
            spool_records_max: 1_000_000,
            mode: ArchiveMode::Spool,
            strict_timeout_ms: 5000,
            exclude: vec![ArchiveExclusion::ChatStates, ArchiveExclusion::Errors],
            mam_page_max: 100,
            retention_interval_secs: 3600,
            retention_min_days: 1,
        }
    }
}

impl ArchiveConfig {
    /// Whether records of this kind are left out.
    pub fn excludes(&self, e: ArchiveExclusion) -> bool {
        self.exclude.contains(&e)
    }
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

/// `[limits]`: every bound the node enforces.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest stanza accepted, in bytes.
    pub stanza_bytes_max: usize,
    /// Deepest element nesting accepted inside a stanza.
    pub xml_depth_max: usize,
    /// Open client connections that have authenticated, all listeners
    /// together.
    pub connections_max: usize,
    /// Open client connections from one IP address (IPv6: one /64).
    pub connections_per_ip_max: usize,
    /// Connections not yet authenticated, all listeners together: a pool
    /// of their own, so a flood of them cannot take logged-in users' slots.
    /// A connection over the bound is closed at once.
    pub unauthenticated_connections_max: usize,
    /// Connections not yet authenticated from one IP address (IPv6: one /64).
    pub unauthenticated_per_ip_max: usize,
    /// Bytes per second one connection may send (excess is slowed down).
    pub connection_bytes_per_sec: u64,
    /// Stanzas per second one user may send across all resources.
    pub user_stanzas_per_sec: u32,
    /// Burst allowance on top of `user_stanzas_per_sec`.
    pub user_stanzas_burst: u32,
    /// Resources one user may have bound at once.
    pub sessions_per_user_max: usize,
    /// Failed logins for one account within the window before it is throttled.
    pub auth_failures_per_account_max: u32,
    /// Failed logins from one address within the window before it is throttled.
    pub auth_failures_per_address_max: u32,
    /// Length of the failed-login window, in seconds.
    pub auth_failure_window_secs: u64,
    /// Time a new connection has to authenticate and bind, in seconds.
    pub handshake_timeout_secs: u64,
    /// Time one batch of output may take to write before the client
    /// counts as stalled and the connection is dropped, in seconds (a
    /// client that never reads).
    pub write_timeout_secs: u64,
    /// Stanzas queued for one session before it counts as stalled.
    pub session_queue_stanzas_max: usize,
    /// Items in one roster.
    pub roster_items_max: usize,
    /// Entities one session may send directed presence to (outside its
    /// roster) at once; each is told when the session goes offline.
    pub directed_presence_max: usize,
    /// Messages held in one user's offline queue.
    pub offline_messages_max: usize,
    /// Size of one vCard, in bytes.
    pub vcard_bytes_max: usize,
    /// Entries in one block list.
    pub blocklist_items_max: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            stanza_bytes_max: 256 * 1024,
            xml_depth_max: 32,
            connections_max: 10_000,
            connections_per_ip_max: 200,
            unauthenticated_connections_max: 2_000,
            unauthenticated_per_ip_max: 64,
            connection_bytes_per_sec: 1024 * 1024,
            user_stanzas_per_sec: 200,
            user_stanzas_burst: 400,
            sessions_per_user_max: 16,
            auth_failures_per_account_max: 5,
            auth_failures_per_address_max: 20,
            auth_failure_window_secs: 60,
            handshake_timeout_secs: 10,
            write_timeout_secs: 30,
            session_queue_stanzas_max: 1024,
            roster_items_max: 2000,
            directed_presence_max: 1000,
            offline_messages_max: 1000,
            vcard_bytes_max: 64 * 1024,
            blocklist_items_max: 1000,
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
        self.http.validate()?;
        let l = &self.limits;
        let positive: [(&'static str, u64); 16] = [
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
    fn validate_cluster(&self) -> Result<(), (&'static str, String)> {
        let c = &self.cluster;
        let id_ok = |s: &str| {
            !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !id_ok(&c.node_id) {
            return Err(("cluster.node_id", "use 1-64 letters, digits or '-'".into()));
        }
        if !id_ok(&c.site) {
            return Err(("cluster.site", "use 1-64 letters, digits or '-'".into()));
        }
        for v in &self.archive.voters {
            if *v != c.node_id && !c.peers.iter().any(|p| p.id == *v) {
                return Err((
                    "archive.voters",
                    format!("{v:?} is neither this node nor a configured peer"),
                ));
            }
        }
        if self.archive.spool_records_max == 0 {
            return Err(("archive.spool_records_max", "must be greater than zero".into()));
        }
        if self.archive.mam_page_max == 0 || self.archive.strict_timeout_ms == 0 {
            return Err((
                "archive",
                "mam_page_max and strict_timeout_ms must be greater than zero".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.telemetry.sample_ratio) {
            return Err(("telemetry.sample_ratio", "must be between 0.0 and 1.0".into()));
        }
        if !self.telemetry.otlp_endpoint.is_empty()
            && !self.telemetry.otlp_endpoint.starts_with("http://")
            && !self.telemetry.otlp_endpoint.starts_with("https://")
        {
            return Err((
                "telemetry.otlp_endpoint",
                "use http://host:port or https://host:port".into(),
            ));
        }
        if self.muc.occupants_max == 0 || self.muc.rooms_max == 0 {
            return Err((
                "muc",
                "occupants_max and rooms_max must be greater than zero".into(),
            ));
        }
        if self.archive.retention_interval_secs == 0 {
            return Err((
                "archive.retention_interval_secs",
                "must be greater than zero".into(),
            ));
        }
        if self.archive.retention_min_days == 0 {
            return Err((
                "archive.retention_min_days",
                "must be at least 1 (a policy of zero days would purge records as they arrive)".into(),
            ));
        }
        for t in &self.api.tokens {
            if t.sha256.len() != 64
                || !t
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err((
                    "api.tokens",
                    format!("token {:?}: sha256 must be 64 lower-case hex digits", t.name),
                ));
            }
        }
        if c.peers.is_empty() {
            return Ok(());
        }
        if c.listen.is_none() {
            return Err((
                "cluster.listen",
                "required when cluster.peers are configured".into(),
            ));
        }
        for (key, v) in [
            ("cluster.ca_file", &c.ca_file),
            ("cluster.cert_file", &c.cert_file),
            ("cluster.key_file", &c.key_file),
        ] {
            if v.is_none() {
                return Err((
                    key,
                    "required when cluster.peers are configured (see `chorus cert`)".into(),
                ));
            }
        }
        if c.heartbeat_ms == 0 || c.lease_ms < 2 * c.heartbeat_ms {
            return Err((
                "cluster.lease_ms",
                "must be at least twice cluster.heartbeat_ms".into(),
            ));
        }
        if !(1_000..=3_600_000).contains(&c.max_clock_skew_ms) {
            return Err((
                "cluster.max_clock_skew_ms",
                "must be between 1000 (1 s) and 3600000 (1 h)".into(),
            ));
        }
        let mut tags = std::collections::HashMap::new();
        tags.insert(crate::hlc::node_tag(&c.node_id), c.node_id.clone());
        for p in &c.peers {
            if !id_ok(&p.id) || !id_ok(&p.site) {
                return Err((
                    "cluster.peers",
                    format!("peer {:?}: ids and sites use letters, digits or '-'", p.id),
                ));
            }
            if p.addr
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .is_none()
            {
                return Err((
                    "cluster.peers",
                    format!("peer {}: addr {:?} is not host:port", p.id, p.addr),
                ));
            }
            if let Some(other) = tags.insert(crate::hlc::node_tag(&p.id), p.id.clone()) {
                return Err((
                    "cluster.peers",
                    format!("node ids {other} and {} collide or repeat", p.id),
                ));
            }
        }
        Ok(())
    }

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
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Vec::new())
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").expect("defaults are valid");
        assert_eq!(c.limits.stanza_bytes_max, 262_144);
        assert!(!c.registration.enabled);
        assert!(c.http.tls);
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let e = parse("[limits]\nstanza_bytes = 5\n").expect_err("unknown key");
        assert_eq!(e.source_name, "test.toml");
        assert_eq!(e.key, "limits.stanza_bytes");
        assert!(e.reason.contains("stanza_bytes"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = parse("[limits]\nstanza_bytes_max = \"big\"\n").expect_err("wrong type");
        assert_eq!(e.key, "limits.stanza_bytes_max");
    }

    #[test]
    fn syntax_error_reports_line() {
        let e = parse("[server]\ndomain = \n").expect_err("syntax");
        assert!(e.reason.contains("line 2"), "{e}");
    }

    #[test]
    fn invalid_domain_rejected() {
        let e = parse("[server]\ndomain = \"a@b\"\n").expect_err("bad domain");
        assert_eq!(e.key, "server.domain");
    }

    #[test]
    fn zero_limit_rejected() {
        let e = parse("[limits]\nconnections_max = 0\n").expect_err("zero");
        assert_eq!(e.key, "limits.connections_max");
    }

    #[test]
    fn environment_overrides_file() {
        let env = vec![
            ("CHORUS_SERVER__DOMAIN".to_string(), "corp.example".to_string()),
            ("CHORUS_LIMITS__STANZA_BYTES_MAX".to_string(), "65536".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
            ("CHORUS_CONFIG".to_string(), "/etc/chorus.toml".to_string()),
            ("CHORUS_BIN".to_string(), "target/debug/chorus".to_string()),
        ];
        let c = Config::parse("[server]\ndomain = \"x.example\"\n", "f", env).expect("valid");
        assert_eq!(c.server.domain, "corp.example");
        assert_eq!(c.limits.stanza_bytes_max, 65536);
    }

    #[test]
    fn bad_environment_value_names_variable() {
        let env = vec![("CHORUS_LIMITS__XML_DEPTH_MAX".to_string(), "deep".to_string())];
        let e = Config::parse("", "f", env).expect_err("bad env");
        assert_eq!(e.key, "limits.xml_depth_max");
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    /// deploy/chorus.example.toml documents every setting with its default.
    #[test]
    fn example_config_matches_defaults_and_names_every_key() {
        let text = include_str!("../../../deploy/chorus.example.toml");
        let parsed = Config::parse(text, "chorus.example.toml", Vec::new()).expect("example parses");
        let as_toml = |c: &Config| toml::Value::try_from(c).expect("serializes");
        assert_eq!(as_toml(&parsed), as_toml(&Config::default()));
        let toml::Value::Table(sections) = as_toml(&Config::default()) else {
            panic!("table")
        };
        for (section, keys) in sections {
            assert!(
                text.contains(&format!("[{section}]")),
                "section {section} missing"
            );
            if let toml::Value::Table(keys) = keys {
                for key in keys.keys() {
                    assert!(
                        text.contains(&format!("{key} = ")),
                        "{section}.{key} missing from the example"
                    );
                }
            }
        }
        assert!(text.contains("cert_file") && text.contains("key_file"));
    }
}
