//! Validation of `[cluster]` and `[archive]` membership: node ids, sites,
//! peer addresses and the archive's voters; and the archive's Raft timing.

use super::{ArchiveConfig, Config};

impl Config {
    pub(super) fn validate_cluster(&self) -> Result<(), (&'static str, String)> {
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
        if !(100..=60_000).contains(&self.archive.election_timeout_ms) {
            return Err((
                "archive.election_timeout_ms",
                "must be between 100 and 60000 (a shorter timeout elects on every scheduling hiccup)".into(),
            ));
        }
        if !(0..=19).contains(&self.archive.background_nice) {
            return Err((
                "archive.background_nice",
                "must be between 0 (as the sessions) and 19 (the lowest priority)".into(),
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
}

impl ArchiveConfig {
    /// (heartbeat, shortest election timeout, longest election timeout),
    /// in milliseconds, from [`ArchiveConfig::election_timeout_ms`].
    pub fn raft_timing_ms(&self) -> (u64, u64, u64) {
        let min = self.election_timeout_ms;
        (min * 2 / 5, min, min * 9 / 5)
    }
}
