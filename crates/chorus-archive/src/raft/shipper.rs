//! The Raft-replicated archive as the XMPP layer sees it: `append` writes
//! the record to this node's durable spool and returns its archive id; a
//! shipper proposes spooled batches to the Raft group (forwarding to the
//! leader when this node is a follower) and drops them once committed. In
//! strict mode `append` also waits for that commit, and refuses at once
//! when this node sees no leader. History queries read the local replica
//! merged with the spool.

use crate::raft::{ArchiveNet, ArchiveRaft};
use crate::spool::Spool;
use crate::state_machine::ArchiveStateMachine;
use crate::types::{Command, Record, Response};
use chorus_core::archive::{Accepted, Archive, ArchiveError, ArchiveRecord, MamPage, MamQuery};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, RaftMetrics};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// Records per Raft proposal.
pub const SHIP_BATCH_MAX: usize = 2048;
/// Log entries per AppendEntries message: with full batches of records of
/// a few hundred bytes, about 10 MiB, far below the 256 MiB gRPC limit.
pub const RAFT_ENTRIES_PER_MESSAGE: u64 = 16;
/// How long a proposal may wait for its commit.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// A leader that heard from no quorum for this long counts as cut off.
const QUORUM_LOST_MS: u64 = 3000;
/// How long the shipper waits for this node to apply a batch the leader
/// committed before it drops the spooled copies anyway.
const LOCAL_APPLY_WAIT: Duration = Duration::from_secs(2);
/// While less than a full batch waits (and not in strict mode, where
/// every append waits for its commit), the shipper lets records gather
/// this long before it proposes. Each proposal costs a Raft entry: a log
/// fsync, the apply's write, a spool trim. Proposing as soon as the last
/// commit returned made entries of about 22 records at 5,000 msg/s;
/// lingering makes them about 75 (with the search indexer's slower pace,
/// a sixth less node CPU: BENCHMARKS.md). Delivery never waits for it.
const SHIP_LINGER: Duration = Duration::from_millis(10);
/// Pause after a failed proposal, in milliseconds.
const SHIP_RETRY_MS: u64 = 200;

/// The archive of a clustered node.
pub struct RaftArchive {
    spool: Spool,
    site: String,
    wake: Arc<Notify>,
    sm: Option<ArchiveStateMachine>,
    /// Strict mode: how long `append` waits for the commit.
    strict: Option<Duration>,
    /// The Raft node's metrics, once the shipper runs.
    metrics: OnceLock<watch::Receiver<RaftMetrics<u64, BasicNode>>>,
    /// Bumped (and waiters woken) whenever the shipper trims the spool.
    trimmed: (Mutex<u64>, Condvar),
}

impl RaftArchive {
    /// An archive spooling into `spool` for this node's site.
    pub fn new(spool: Spool, site: &str) -> RaftArchive {
        RaftArchive {
            spool,
            site: site.to_owned(),
            wake: Arc::new(Notify::new()),
            sm: None,
            strict: None,
            metrics: OnceLock::new(),
            trimmed: (Mutex::new(0), Condvar::new()),
        }
    }

    /// Answers history queries from this state machine (and the spool).
    pub fn with_state_machine(mut self, sm: ArchiveStateMachine) -> RaftArchive {
        self.sm = Some(sm);
        self
    }

    /// Strict mode: `append` returns only once the record is committed,
    /// waiting at most `timeout`.
    pub fn strict(mut self, timeout: Duration) -> RaftArchive {
        self.strict = Some(timeout);
        self
    }

    /// Records still waiting in the spool (for queries).
    pub fn spooled_records(&self) -> Vec<Record> {
        self.spool
            .oldest(usize::MAX)
            .map(|v| v.into_iter().map(|(_, r)| r).collect())
            .unwrap_or_default()
    }

    /// Whether this node currently sees a Raft leader (known once the
    /// shipper runs).
    pub fn sees_leader(&self) -> bool {
        self.metrics.get().is_some_and(|m| {
            let m = m.borrow();
            match m.current_leader {
                // A leader must have heard from a quorum lately.
                Some(l) if l == m.id => m.millis_since_quorum_ack.is_some_and(|ms| ms < QUORUM_LOST_MS),
                Some(_) => true,
                None => false,
            }
        })
    }

    /// Blocks until the spool entry `seq` is committed (trimmed) or the
    /// timeout passes; returns whether it was committed.
    fn wait_committed(&self, seq: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let wait = || {
            let mut g = self.trimmed.0.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if !self.spool.contains(seq).unwrap_or(true) {
                    return true;
                }
                let now = Instant::now();
                if now >= deadline {
                    return false;
                }
                g = self
                    .trimmed
                    .1
                    .wait_timeout(g, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        };
        // Inside a multi-threaded runtime, let other tasks use this worker.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    /// Records waiting in the spool.
    pub fn spooled(&self) -> u64 {
        self.spool.len()
    }

    /// Waits (at most [`LOCAL_APPLY_WAIT`]) until this node's replica holds
    /// the record `id`.
    async fn await_local_apply(&self, raft: &ArchiveRaft, id: &str) {
        let Some(sm) = &self.sm else { return };
        let mut metrics = raft.metrics();
        let deadline = tokio::time::Instant::now() + LOCAL_APPLY_WAIT;
        while !matches!(sm.position_of(id), Ok(Some(_))) {
            let changed = tokio::time::timeout_at(deadline, metrics.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                tracing::debug!(
                    id,
                    "the local replica has not applied a committed batch yet; trimming anyway"
                );
                return;
            }
        }
    }

    /// Runs the shipper until `stop`.
    pub async fn ship(&self, raft: ArchiveRaft, net: ArchiveNet, mut stop: watch::Receiver<bool>) {
        let _ = self.metrics.set(raft.metrics());
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(SHIP_RETRY_MS)) => {}
                _ = stop.changed() => return,
            }
            loop {
                if self.strict.is_none() && self.spool.len() < SHIP_BATCH_MAX as u64 {
                    tokio::time::sleep(SHIP_LINGER).await;
                }
                let batch = match self.spool.oldest(SHIP_BATCH_MAX) {
                    Ok(b) if b.is_empty() => break,
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the archive spool");
                        break;
                    }
                };
                let (seqs, records): (Vec<u64>, Vec<Record>) = batch.into_iter().unzip();
                let last_id = records.last().map(|r| r.id.clone()).unwrap_or_default();
                let span = tracing::info_span!("archive.commit", records = records.len());
                let proposed = Instant::now();
                let proposal = propose(&raft, &net, Command::Append(records));
                match tracing::Instrument::instrument(proposal, span).await {
                    Ok(_) => {
                        // A follower hears of the commit from the leader
                        // before it applies the batch itself; until then
                        // queries here still need the spooled copies.
                        self.await_local_apply(&raft, &last_id).await;
                        metrics::histogram!("chorus_archive_commit_seconds")
                            .record(proposed.elapsed().as_secs_f64());
                        if let Err(e) = self.spool.remove(&seqs) {
                            tracing::error!(error = %e, "cannot trim the archive spool");
                            break;
                        }
                        *self.trimmed.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                        self.trimmed.1.notify_all();
                        metrics::counter!("chorus_archive_shipped_total").increment(seqs.len() as u64);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, spooled = self.spool.len(), "archive batch not committed yet");
                        break;
                    }
                }
            }
            metrics::gauge!("chorus_archive_spool_depth").set(self.spool.len() as f64);
        }
    }
}

/// Commits a command through the leader (forwarding when this node
/// follows) and returns what applying it produced.
pub async fn propose(raft: &ArchiveRaft, net: &ArchiveNet, cmd: Command) -> Result<Response, ProposeError> {
    // A leader cut off from its followers keeps believing it leads (openraft
    // 0.9 has no leader lease), so a write to it would wait forever.
    let write = tokio::time::timeout(PROPOSE_TIMEOUT, raft.client_write(cmd.clone()));
    let Ok(written) = write.await else {
        return Err(ProposeError::Timeout);
    };
    match written {
        Ok(r) => Ok(r.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => match f.leader_id {
            Some(leader) => net
                .forward_write(leader, &cmd)
                .await
                .map_err(ProposeError::Forward),
            None => Err(ProposeError::NoLeader),
        },
        Err(e) => Err(e.into()),
    }
}

impl Archive for RaftArchive {
    fn enabled(&self) -> bool {
        true
    }

    fn append(&self, r: ArchiveRecord) -> Result<Option<String>, ArchiveError> {
        let _span = tracing::info_span!("archive.spool", strict = self.strict.is_some()).entered();
        if self.strict.is_some() && !self.sees_leader() {
            return Err(ArchiveError::NoQuorum("this node sees no archive leader".into()));
        }
        let (id, seq) = self
            .spool
            .append_seq(Record::accepted(r, &self.site))
            .map_err(|e| ArchiveError::Unavailable(e.to_string()))?;
        self.wake.notify_one();
        if let Some(timeout) = self.strict
            && !self.wait_committed(seq, timeout)
        {
            // Refused messages are not archived (XEP-0313): withdraw the
            // record unless it committed at the last moment.
            if let Err(e) = self.spool.remove(&[seq]) {
                tracing::warn!(error = %e, "cannot withdraw a refused record from the spool");
            }
            return Err(ArchiveError::NoQuorum(format!(
                "record {id} not committed within {} ms",
                timeout.as_millis()
            )));
        }
        Ok(Some(id))
    }

    fn append_deferred(&self, r: ArchiveRecord) -> Result<Accepted, ArchiveError> {
        // Strict mode waits for the commit itself.
        if self.strict.is_some() {
            return self.append(r).map(|id| Accepted { id, durable: None });
        }
        let _span = tracing::info_span!("archive.spool", deferred = true).entered();
        let staged = self
            .spool
            .stage(Record::accepted(r, &self.site))
            .map_err(|e| ArchiveError::Unavailable(e.to_string()))?;
        let flushed = self.spool.durable(&staged);
        let wake = self.wake.clone();
        Ok(Accepted {
            id: Some(staged.id),
            durable: Some(Box::pin(async move {
                flushed
                    .await
                    .map_err(|e| ArchiveError::Unavailable(e.to_string()))?;
                wake.notify_one();
                Ok(())
            })),
        })
    }

    fn query(&self, q: &MamQuery) -> Result<MamPage, ArchiveError> {
        let Some(sm) = &self.sm else {
            return Err(ArchiveError::Unavailable(
                "no archive replica on this node".into(),
            ));
        };
        sm.mam(q, &self.spooled_records())
    }
}

/// Why a proposal did not commit.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// Nothing committed within [`PROPOSE_TIMEOUT`] (a leader cut off from
    /// its followers still believes it leads).
    #[error("the archive did not commit in time (no quorum?)")]
    Timeout,
    /// No leader is known.
    #[error("the archive has no leader (no quorum)")]
    NoLeader,
    /// Forwarding to the leader failed, or the leader refused.
    #[error("{0}")]
    Forward(String),
    /// The local Raft node failed.
    #[error(transparent)]
    Raft(#[from] RaftError<u64, ClientWriteError<u64, BasicNode>>),
}
