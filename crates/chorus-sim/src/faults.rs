//! What can go wrong in a simulated run: the faults a seed's schedule
//! injects ([`Fault`], drawn by [`schedule`] from the run's [`Params`]) and
//! the known bugs a run can re-introduce ([`Bug`]) to show that the
//! checkers catch them.

use crate::rng::Rng;
/// A known bug the simulation can re-introduce, to show the checkers
/// catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The sender's client is acknowledged before the stanza is in the
    /// durable outbox (it is spooled on the next flush): a crash in
    /// between loses it.
    AckBeforeSpool,
    /// Intake ignores the persisted mark: a batch resent after a lost
    /// acknowledgement is delivered twice.
    NoIntakeMark,
    /// Replicated writes overwrite whatever is there instead of merging
    /// by version: nodes diverge.
    LastArrivalWins,
    /// The directory takes frames from any of a peer's connections, not
    /// only its newest: after a silent cut, the old connection's late
    /// frames undo the new connection's snapshot and leave ghost
    /// sessions. `chorus-cluster` did this until this simulation found it.
    NoStreamFence,
    /// A local write takes a fresh clock reading without first observing
    /// the version it replaces. The clock forgets what it learned from
    /// peers when the node restarts, so a write after a restart can carry
    /// an older version than the one it overwrites, and anti-entropy later
    /// reverts it. `RocksStore::write_local` did this until this
    /// simulation found it.
    BlindLocalWrite,
    /// Replicated items are taken whatever their version: one poisoned
    /// clock's far-future item beats every later write to its key, which
    /// then never changes again.
    NoSkewBound,
}

impl Bug {
    /// Every bug, for `--bug` and the self-test.
    pub const ALL: [Bug; 6] = [
        Bug::NoSkewBound,
        Bug::AckBeforeSpool,
        Bug::NoIntakeMark,
        Bug::LastArrivalWins,
        Bug::BlindLocalWrite,
        Bug::NoStreamFence,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeSpool => "ack-before-spool",
            Bug::NoIntakeMark => "no-intake-mark",
            Bug::LastArrivalWins => "last-arrival-wins",
            Bug::BlindLocalWrite => "blind-local-write",
            Bug::NoStreamFence => "no-stream-fence",
            Bug::NoSkewBound => "no-skew-bound",
        }
    }

    /// Parses [`Bug::name`].
    pub fn parse(s: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == s)
    }
}

/// The shape of one run.
#[derive(Clone, Debug)]
pub struct Params {
    /// Number of nodes (each its own site).
    pub nodes: usize,
    /// Virtual milliseconds of workload and faults.
    pub active_ms: u64,
    /// Virtual milliseconds after every fault healed, before checking.
    pub settle_ms: u64,
    /// Distinct register keys written (few, so writes conflict).
    pub keys: u32,
    /// A bug to re-introduce, if any.
    pub bug: Option<Bug>,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            nodes: 3,
            active_ms: 20_000,
            settle_ms: 10_000,
            keys: 12,
            bug: None,
        }
    }
}

/// A fault the schedule injects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The node dies; it restarts after `down_ms` with its clock skewed by
    /// `skew_ms`.
    Crash {
        /// Which node.
        node: usize,
        /// Time down.
        down_ms: u64,
        /// Clock offset after the restart.
        skew_ms: i64,
    },
    /// The link between two nodes is cut for `ms` (a blip when short).
    Cut {
        /// One end.
        a: usize,
        /// The other end.
        b: usize,
        /// Duration.
        ms: u64,
        /// Packets are dropped silently instead of connections being
        /// reset: both ends learn of it only through keepalives, and what
        /// was in flight is delivered late, after the heal, on the old
        /// connection (TCP retransmission), possibly after a new one.
        silent: bool,
    },
    /// Every link of the node is cut for `ms`.
    Isolate {
        /// Which node.
        node: usize,
        /// Duration.
        ms: u64,
    },
    /// The node stops (SIGSTOP) for `ms`: it keeps its connections and its
    /// state but neither acts nor answers; its peers' leases on it run out.
    Pause {
        /// Which node.
        node: usize,
        /// Duration.
        ms: u64,
    },
    /// The node's wall clock jumps to `skew_ms` off true time (possibly
    /// backwards) while it runs.
    ClockJump {
        /// Which node.
        node: usize,
        /// New offset.
        skew_ms: i64,
    },
    /// Clock poisoning: the node sends its peers a replicated item
    /// versioned `ahead_ms` in the future (a broken clock or a hostile
    /// node; the item is not a client's write and is never stored at the
    /// sender). Every peer must refuse it.
    Poison {
        /// Which node sends it.
        node: usize,
        /// How far ahead of true time (up to the largest HLC).
        ahead_ms: u64,
    },
}

/// How far any node's wall clock is skewed from true time, at most.
pub const CLOCK_SKEW_MAX_MS: u64 = 60_000;

/// How far ahead of a node's clock a replicated version may be: above the
/// largest spread of the clocks the faults skew (two nodes 60 s off in
/// opposite directions), as production's `cluster.max_clock_skew_ms` must
/// be above the spread of its clocks.
pub const MAX_CLOCK_SKEW_MS: u64 = 130_000;

/// Draws the fault schedule of a run from its seed: `(time, fault)`,
/// every fault over before `active_ms`.
pub fn schedule(rng: &mut Rng, p: &Params) -> Vec<(u64, Fault)> {
    let n = p.nodes;
    let count = rng.range(2, 14);
    let mut out = Vec::new();
    for _ in 0..count {
        let at = rng.range(0, p.active_ms.saturating_sub(500));
        let room = p.active_ms - at;
        let skew = |rng: &mut Rng| rng.range(0, 2 * CLOCK_SKEW_MAX_MS + 1) as i64 - CLOCK_SKEW_MAX_MS as i64;
        let fault = match rng.range(0, 7) {
            0 => Fault::Crash {
                node: rng.index(n),
                down_ms: rng.range(100, 3_000).min(room),
                skew_ms: skew(rng),
            },
            1 => {
                let a = rng.index(n);
                Fault::Cut {
                    a,
                    b: (a + 1 + rng.index(n - 1)) % n,
                    ms: rng.range(100, 6_000).min(room),
                    silent: rng.chance(0.5),
                }
            }
            2 => {
                let a = rng.index(n);
                Fault::Cut {
                    a,
                    b: (a + 1 + rng.index(n - 1)) % n,
                    ms: rng.range(1, 20),
                    silent: false,
                }
            }
            3 => Fault::Isolate {
                node: rng.index(n),
                ms: rng.range(100, 4_000).min(room),
            },
            4 => Fault::Pause {
                node: rng.index(n),
                ms: rng.range(500, 5_000).min(room),
            },
            5 => Fault::ClockJump {
                node: rng.index(n),
                skew_ms: skew(rng),
            },
            _ => Fault::Poison {
                node: rng.index(n),
                ahead_ms: match rng.range(0, 3) {
                    // Beyond every node's bound, however its clock is skewed
                    // (an item a fast node admits pulls its clock forward
                    // by at most the bound: the damage the bound allows).
                    0 => rng.range(MAX_CLOCK_SKEW_MS + CLOCK_SKEW_MAX_MS + 1, 3_600_000),
                    1 => rng.range(3_600_000, 10 * 365 * 86_400_000),
                    // Just below the largest millisecond an HLC can hold.
                    _ => (u64::MAX >> 16) - 1,
                },
            },
        };
        out.push((at, fault));
    }
    out.sort_by_key(|(t, _)| *t);
    out
}
