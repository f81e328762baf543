//! A seeded, deterministic simulation of Chorus's replication and
//! cross-node routing under faults, fast enough to run thousands of seeds
//! in a test. Each run draws a fault schedule and a workload from its seed
//! ([`world`]), runs them over virtual time, heals, and checks the
//! invariants ([`check`]). A failing seed is replayed exactly with
//! `cargo run -p chorus-sim -- --seed N`. Known bugs can be re-introduced
//! ([`Bug`]) to show that the checks catch them.

pub mod check;
pub mod faults;
pub mod rng;
pub mod world;

pub use check::Violation;
pub use faults::{Bug, Params};
pub use world::World;

/// What one seed did and found.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Events processed.
    pub steps: u64,
    /// Faults injected.
    pub faults: usize,
    /// Stanzas acknowledged to clients.
    pub stanzas: usize,
    /// Register writes.
    pub writes: usize,
    /// Broken invariants (empty: the run passed).
    pub violations: Vec<Violation>,
    /// The faults injected, with their times.
    pub schedule: Vec<(u64, faults::Fault)>,
}

/// Runs one seed and checks it.
pub fn run(seed: u64, p: &Params) -> Outcome {
    let mut w = World::new(seed, p.clone());
    w.run();
    Outcome {
        seed,
        steps: w.steps,
        faults: w.history.faults.len(),
        stanzas: w.history.acked.len(),
        writes: w.history.writes.len(),
        violations: check::all(&w),
        schedule: std::mem::take(&mut w.history.faults),
    }
}

/// The command that replays `seed` (with `bug` re-introduced, if any).
pub fn repro(seed: u64, bug: Option<Bug>) -> String {
    match bug {
        Some(b) => format!("cargo run -p chorus-sim -- --seed {seed} --bug {}", b.name()),
        None => format!("cargo run -p chorus-sim -- --seed {seed}"),
    }
}
