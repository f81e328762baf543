//! `[archive]`: the Raft-replicated compliance archive's settings (what
//! is archived, when delivery waits for it, its Raft timing and the
//! priority of its background threads).

use serde::{Deserialize, Serialize};

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
    /// The shortest Raft election timeout, in milliseconds; the longest is
    /// 1.8 times it and the leader's heartbeat 0.4 times it. A follower
    /// starts an election once the leader's lease (the longest timeout)
    /// and its own random timeout have passed without a heartbeat, so the
    /// archive commits again about 3 to 3.6 times this after its leader's
    /// node dies. Raise it where links between sites lose packets often
    /// enough to delay heartbeats this long.
    pub election_timeout_ms: u64,
    /// How many nice steps below the sessions the archive's background
    /// threads (the Raft apply of committed batches, search indexing)
    /// run, 0 to 19: on a busy node a session's wake-up gets the core
    /// first and the archive catches up in the gaps. 0 runs them as the
    /// sessions.
    pub background_nice: i32,
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
            election_timeout_ms: 200,
            background_nice: 10,
        }
    }
}

impl ArchiveConfig {
    /// Whether records of this kind are left out.
    pub fn excludes(&self, e: ArchiveExclusion) -> bool {
        self.exclude.contains(&e)
    }
}
