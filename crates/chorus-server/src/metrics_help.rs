//! `# HELP` and `# TYPE` text for every metric the node exports on
//! `/metrics`, registered once the recorder is installed. A test reads
//! the whole source tree and fails on a metric name used in code but not
//! described here, so a new metric cannot ship without its help line.

use metrics::Unit;

/// What kind of metric a name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution.
    Histogram,
}

use Kind::{Counter, Gauge, Histogram};

/// Every metric: name, kind, unit (if any) and help text.
pub const METRICS: &[(&str, Kind, Option<Unit>, &str)] = &[
    (
        "chorus_sessions",
        Gauge,
        None,
        "Bound client sessions on this node.",
    ),
    (
        "chorus_parked_sessions",
        Gauge,
        None,
        "Stream-management sessions waiting to be resumed (XEP-0198).",
    ),
    (
        "chorus_sessions_aborted_total",
        Counter,
        None,
        "Sessions whose task ended without a clean close (cleaned up by their guard).",
    ),
    (
        "chorus_connections",
        Gauge,
        None,
        "Open client connections, authenticated or not.",
    ),
    (
        "chorus_connections_unauthenticated",
        Gauge,
        None,
        "Open client connections that have not authenticated yet.",
    ),
    (
        "chorus_connections_admitted_total",
        Counter,
        None,
        "Client connections admitted to the unauthenticated pool.",
    ),
    (
        "chorus_connections_refused_total",
        Counter,
        None,
        "Client connections closed at once, by reason (pool full, per-address limit).",
    ),
    (
        "chorus_connections_evicted_total",
        Counter,
        None,
        "Unauthenticated connections evicted to make room for another address.",
    ),
    (
        "chorus_message_handling_seconds",
        Histogram,
        Some(Unit::Seconds),
        "Time the node spends on a client's message: checks, the archive record (spooled or committed), \
         delivery into the recipients' queues.",
    ),
    (
        "chorus_stanzas_in_total",
        Counter,
        None,
        "Stanzas received from clients, by kind.",
    ),
    (
        "chorus_stanzas_out_total",
        Counter,
        None,
        "Stanzas sent to clients, by kind.",
    ),
    (
        "chorus_stream_errors_total",
        Counter,
        None,
        "Client streams ended with a stream error, by condition.",
    ),
    (
        "chorus_caps_cache_hits_total",
        Counter,
        None,
        "Client capabilities (XEP-0115) found in the node's cache instead of asked for.",
    ),
    (
        "chorus_caps_mismatch_total",
        Counter,
        None,
        "Client disco#info answers whose hash did not match the announced caps ver (not cached).",
    ),
    (
        "chorus_e2e_refused_total",
        Counter,
        None,
        "End-to-end encrypted messages refused under policy.e2e = \"deny\".",
    ),
    (
        "chorus_uploads_total",
        Counter,
        None,
        "Files uploaded to this node (XEP-0363), stored and synced.",
    ),
    (
        "chorus_files_replicated_total",
        Counter,
        None,
        "Shared files this node copied from a peer (checked against their SHA-256).",
    ),
    (
        "chorus_component_auth_failures_total",
        Counter,
        None,
        "XEP-0114 component handshakes refused (wrong secret).",
    ),
    (
        "chorus_push_sent_total",
        Counter,
        None,
        "XEP-0357 push notifications handed to a push service's component.",
    ),
    (
        "chorus_rate_limited_total",
        Counter,
        None,
        "Stanzas refused because their sender exceeded the per-user rate.",
    ),
    (
        "chorus_router_queue_full_total",
        Counter,
        None,
        "Stanzas not queued because the recipient session's queue was full.",
    ),
    (
        "chorus_session_queue_depth",
        Histogram,
        None,
        "Depth of a session's routed queue when a stanza is queued.",
    ),
    (
        "chorus_offline_stored_total",
        Counter,
        None,
        "Messages stored for offline delivery.",
    ),
    (
        "chorus_logins_total",
        Counter,
        None,
        "Successful logins, by SASL mechanism.",
    ),
    (
        "chorus_login_failures_total",
        Counter,
        None,
        "Failed SASL exchanges, by condition.",
    ),
    (
        "chorus_auth_throttle_evictions_total",
        Counter,
        None,
        "Times the failed-login table was full and dropped its oldest half.",
    ),
    (
        "chorus_control_refused_total",
        Counter,
        None,
        "Control-socket callers refused for running as another user.",
    ),
    (
        "chorus_http_connections",
        Gauge,
        None,
        "Open HTTP connections (API, WebSocket, metrics, probes).",
    ),
    (
        "chorus_http_connections_refused_total",
        Counter,
        None,
        "HTTP connections closed at once over the total or per-address cap.",
    ),
    (
        "chorus_http_closed_total",
        Counter,
        None,
        "HTTP connections closed by a timeout, by reason (handshake, idle, write_stall).",
    ),
    (
        "chorus_http_rate_limited_total",
        Counter,
        None,
        "Unauthenticated HTTP requests answered 429.",
    ),
    (
        "chorus_store_fsyncs_total",
        Counter,
        None,
        "Group-commit fsyncs of the local store.",
    ),
    (
        "chorus_store_group_commit_batches",
        Histogram,
        None,
        "Writes made durable by one group-commit fsync.",
    ),
    (
        "chorus_store_group_commit_seconds",
        Histogram,
        Some(Unit::Seconds),
        "Time one group commit takes: its batches written and the write-ahead log synced.",
    ),
    (
        "chorus_fatal_error",
        Gauge,
        None,
        "1 while a component has hit a fatal error (disk full, corruption), by component.",
    ),
    (
        "chorus_cluster_peer_up",
        Gauge,
        None,
        "1 while the link to a peer node is up, by peer.",
    ),
    (
        "chorus_cluster_last_heard_ms",
        Gauge,
        Some(Unit::Milliseconds),
        "Time since a peer node was last heard from, by peer.",
    ),
    (
        "chorus_cluster_outbox_stanzas",
        Gauge,
        None,
        "Stanzas queued durably for a peer node, by peer.",
    ),
    (
        "chorus_cluster_replication_lag_items",
        Gauge,
        None,
        "Replicated items a peer node has not acknowledged, by peer.",
    ),
    (
        "chorus_cluster_stanzas_queued_total",
        Counter,
        None,
        "Stanzas queued for peer nodes.",
    ),
    (
        "chorus_cluster_duplicates_dropped_total",
        Counter,
        None,
        "Stanzas from peers dropped as already delivered.",
    ),
    (
        "chorus_cluster_lease_expiries_total",
        Counter,
        None,
        "Times a peer's session lease expired (its sessions were dropped here).",
    ),
    (
        "chorus_cluster_rpc_refused_total",
        Counter,
        None,
        "Cluster RPCs refused, by RPC and reason (not a member, speaking for another).",
    ),
    (
        "chorus_cluster_clock_skew_refused_total",
        Counter,
        None,
        "Items or records refused for a timestamp beyond the clock-skew bound, by source.",
    ),
    (
        "chorus_antientropy_rounds_total",
        Counter,
        None,
        "Anti-entropy digest rounds run against peers.",
    ),
    (
        "chorus_archive_spool_depth",
        Gauge,
        None,
        "Archive records spooled here and not yet committed through Raft.",
    ),
    (
        "chorus_archive_commit_seconds",
        Histogram,
        Some(Unit::Seconds),
        "Time from proposing a batch of spooled records to its commit and its apply on this node's replica.",
    ),
    (
        "chorus_archive_shipped_total",
        Counter,
        None,
        "Archive records shipped from the spool into Raft.",
    ),
    (
        "chorus_archive_records_applied",
        Gauge,
        None,
        "Archive records applied on this node's replica.",
    ),
    (
        "chorus_shared_roster_refreshes_total",
        Counter,
        None,
        "Times the shared roster groups changed and this node told its online members.",
    ),
    (
        "chorus_sessions_revoked_total",
        Counter,
        None,
        "Sessions ended because an administrator disabled the account or ended its sessions.",
    ),
    (
        "chorus_directory_people",
        Gauge,
        None,
        "People in the enterprise directory's index after the last good synchronization.",
    ),
    (
        "chorus_directory_errors_total",
        Counter,
        None,
        "Directory operations that failed, by operation (sync, bind).",
    ),
    (
        "chorus_people_searches_total",
        Counter,
        None,
        "XEP-0055 people-finder searches answered.",
    ),
    (
        "chorus_setup_links_total",
        Counter,
        None,
        "One-time password links, by result: used (a password was set) or refused (wrong, used or expired).",
    ),
    (
        "chorus_console_logins_total",
        Counter,
        None,
        "Console sign-ins, by result (ok, refused).",
    ),
    (
        "chorus_console_csrf_refused_total",
        Counter,
        None,
        "Console forms refused for a missing or stale CSRF token or another origin.",
    ),
    (
        "chorus_console_audit_queue",
        Gauge,
        None,
        "Console audit entries (views of health, users, rooms; admin actions) waiting for the archive.",
    ),
    (
        "chorus_console_audit_refused_total",
        Counter,
        None,
        "Console views and actions refused because the audit queue was full (no quorum for long).",
    ),
    (
        "chorus_archive_heavy_refused_total",
        Counter,
        None,
        "Exports and verifications refused because two were already running.",
    ),
    (
        "chorus_raft_term",
        Gauge,
        None,
        "The archive Raft group's current term as seen here.",
    ),
    (
        "chorus_raft_is_leader",
        Gauge,
        None,
        "1 while this node leads the archive Raft group.",
    ),
    (
        "chorus_raft_leader_known",
        Gauge,
        None,
        "1 while this node knows a leader of the archive Raft group.",
    ),
    (
        "chorus_raft_last_log_index",
        Gauge,
        None,
        "Index of the last entry in this node's archive Raft log.",
    ),
    (
        "chorus_raft_last_applied_index",
        Gauge,
        None,
        "Index of the last archive Raft entry applied here.",
    ),
    (
        "chorus_raft_apply_lag",
        Gauge,
        None,
        "Archive Raft entries in the log here and not yet applied.",
    ),
];

/// Registers the help text of every metric with the installed recorder.
pub fn describe() {
    for (name, kind, unit, help) in METRICS {
        let (name, help) = (*name, *help);
        match (kind, unit) {
            (Counter, Some(u)) => metrics::describe_counter!(name, *u, help),
            (Counter, None) => metrics::describe_counter!(name, help),
            (Gauge, Some(u)) => metrics::describe_gauge!(name, *u, help),
            (Gauge, None) => metrics::describe_gauge!(name, help),
            (Histogram, Some(u)) => metrics::describe_histogram!(name, *u, help),
            (Histogram, None) => metrics::describe_histogram!(name, help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn used_names(dir: &Path, out: &mut BTreeSet<(String, Kind)>) {
        for entry in std::fs::read_dir(dir).expect("readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                used_names(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("metrics_help.rs") {
                let text = std::fs::read_to_string(&path).expect("readable");
                for (mac, kind) in [
                    ("counter!(", Counter),
                    ("gauge!(", Gauge),
                    ("histogram!(", Histogram),
                ] {
                    for (i, _) in text.match_indices(mac) {
                        let rest = text[i + mac.len()..].trim_start();
                        if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                            out.insert((name.to_owned(), kind));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_metric_in_the_code_has_help_and_the_right_kind() {
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut used = BTreeSet::new();
        used_names(&crates, &mut used);
        assert!(used.len() > 30, "found the metrics: {used:?}");
        let described: BTreeSet<(String, Kind)> =
            METRICS.iter().map(|(n, k, _, _)| ((*n).to_owned(), *k)).collect();
        let missing: Vec<_> = used.difference(&described).collect();
        assert!(missing.is_empty(), "metrics without help text here: {missing:?}");
        let stale: Vec<_> = described.difference(&used).collect();
        assert!(
            stale.is_empty(),
            "help text for metrics no code records: {stale:?}"
        );
    }
}
