//! Runs the simulation over many seeds (CHORUS_SIM_SEEDS, default 1,000)
//! and shows that each re-introduced bug is caught.

use chorus_sim::{Bug, Params, repro, run};

fn seeds() -> u64 {
    std::env::var("CHORUS_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000)
}

#[test]
fn the_protocol_keeps_its_promises_over_many_seeds() {
    let p = Params::default();
    let mut stanzas = 0;
    for seed in 0..seeds() {
        let o = run(seed, &p);
        assert!(
            o.violations.is_empty(),
            "seed {seed}: {:?}\nrepro: {}",
            &o.violations[..o.violations.len().min(5)],
            repro(seed, None)
        );
        assert!(
            o.stanzas > 0 && o.writes > 0 && o.faults > 0,
            "seed {seed} did nothing"
        );
        stanzas += o.stanzas;
    }
    assert!(stanzas > 0);
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let p = Params::default();
    let (a, b, c) = (run(42, &p), run(42, &p), run(43, &p));
    assert_eq!(
        (a.steps, a.faults, a.stanzas, a.writes),
        (b.steps, b.faults, b.stanzas, b.writes)
    );
    assert_ne!((a.steps, a.stanzas), (c.steps, c.stanzas));
}

#[test]
fn every_reintroduced_bug_is_caught() {
    for bug in Bug::ALL {
        let p = Params {
            bug: Some(bug),
            ..Params::default()
        };
        let caught = (0..200).find(|seed| !run(*seed, &p).violations.is_empty());
        assert!(caught.is_some(), "{} went unnoticed over 200 seeds", bug.name());
    }
}
