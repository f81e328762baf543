//! Gauges for Prometheus that describe state rather than count events:
//! cluster links and replication lag per peer, the archive's Raft state
//! (term, leadership, log and apply indexes, apply lag), spool depth and
//! archive size, and whether a fatal error stopped the node from serving
//! (a stopped Raft core is reported as one here). Refreshed every second
//! by one task.

use chorus_archive::raft::ArchiveRaft;
use chorus_archive::state_machine::ArchiveStateMachine;
use chorus_cluster::node::Cluster;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the gauges are refreshed.
const EVERY: Duration = Duration::from_secs(1);

/// Runs until `stop`.
pub async fn run(
    cluster: Option<Arc<Cluster>>,
    raft: Option<(ArchiveRaft, ArchiveStateMachine)>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(EVERY);
    while chorus_archive::raft::tick_or_stop(&mut tick, &mut stop).await {
        if let Some(c) = &cluster {
            let s = chorus_cluster::service::status(c);
            for p in &s.peers {
                let labels = [("peer", p.node_id.clone()), ("site", p.site.clone())];
                metrics::gauge!("chorus_cluster_peer_up", &labels)
                    .set(f64::from(u8::from(p.link_up && p.alive)));
                metrics::gauge!("chorus_cluster_replication_lag_items", &labels)
                    .set(p.replication_lag_items as f64);
                metrics::gauge!("chorus_cluster_outbox_stanzas", &labels).set(p.outbox_stanzas as f64);
                metrics::gauge!("chorus_cluster_last_heard_ms", &labels).set(p.last_heard_ms_ago as f64);
            }
        }
        if let Some((r, sm)) = &raft {
            let m = r.metrics().borrow().clone();
            let last_log = m.last_log_index.unwrap_or(0);
            let applied = m.last_applied.map_or(0, |l| l.index);
            metrics::gauge!("chorus_raft_term").set(m.current_term as f64);
            metrics::gauge!("chorus_raft_is_leader").set(f64::from(u8::from(m.current_leader == Some(m.id))));
            metrics::gauge!("chorus_raft_leader_known").set(f64::from(u8::from(m.current_leader.is_some())));
            metrics::gauge!("chorus_raft_last_log_index").set(last_log as f64);
            metrics::gauge!("chorus_raft_last_applied_index").set(applied as f64);
            metrics::gauge!("chorus_raft_apply_lag").set(last_log.saturating_sub(applied) as f64);
            if let Ok(n) = sm.applied_records() {
                metrics::gauge!("chorus_archive_records_applied").set(n as f64);
            }
            if let Err(fatal) = &m.running_state {
                let reason = format!("the archive's Raft core stopped: {fatal}");
                if chorus_core::fatal::report("archive", reason.clone()) {
                    tracing::error!(%reason, "fatal archive error: this node stops reporting ready");
                }
            }
        }
        for component in ["storage", "archive"] {
            let on = chorus_core::fatal::failed(component);
            metrics::gauge!("chorus_fatal_error", "component" => component).set(f64::from(u8::from(on)));
        }
    }
}
