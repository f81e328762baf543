//! The invariants checked at the end of every run, one function each.
//!
//! After the settle period every fault has healed, so the protocol owes:
//! every acknowledged stanza delivered exactly once, in per-sender order,
//! with nothing left in any outbox; every node holding the same registers,
//! each the greatest-versioned write; and no local write that lost to a
//! version its own node already held.

use crate::world::World;
use std::collections::BTreeMap;

/// One broken promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

fn violation(invariant: &'static str, detail: String) -> Violation {
    Violation { invariant, detail }
}

/// Every invariant, in a fixed order.
pub fn all(w: &World) -> Vec<Violation> {
    let mut v = exactly_once(w);
    v.extend(per_sender_order(w));
    v.extend(outboxes_drained(w));
    v.extend(registers_converge(w));
    v.extend(writes_win_locally(w));
    v.extend(clocks_stay_bounded(w));
    v.extend(directories_converge(w));
    v
}

/// Every node's directory shows exactly the sessions each peer holds: no
/// ghost that logged out (or died with its node), none missing, the right
/// availability.
pub fn directories_converge(w: &World) -> Vec<Violation> {
    let mut out = Vec::new();
    for n in 0..w.node_count() {
        for of in (0..w.node_count()).filter(|of| *of != n) {
            let (seen, real) = (w.directory_view(n, of), w.sessions_of(of));
            if seen != real {
                out.push(violation(
                    "directories-converge",
                    format!("n{n} shows n{of} holding {seen:?}, but it holds {real:?}"),
                ));
            }
        }
    }
    out
}

/// Every acknowledged stanza is delivered exactly once, and nothing that
/// was never acknowledged is delivered.
pub fn exactly_once(w: &World) -> Vec<Violation> {
    let mut count: BTreeMap<(usize, u64), usize> = BTreeMap::new();
    for (node, got) in w.history.delivered.iter().enumerate() {
        for (_, id) in got {
            *count.entry((node, *id)).or_default() += 1;
        }
    }
    let mut out = Vec::new();
    for a in &w.history.acked {
        match count.remove(&(a.to, a.id)).unwrap_or(0) {
            1 => {}
            0 => out.push(violation(
                "exactly-once",
                format!(
                    "stanza {} from n{} to n{} was acknowledged but never delivered",
                    a.id, a.from, a.to
                ),
            )),
            k => out.push(violation(
                "exactly-once",
                format!(
                    "stanza {} from n{} to n{} was delivered {k} times",
                    a.id, a.from, a.to
                ),
            )),
        }
    }
    for ((node, id), k) in count {
        out.push(violation(
            "exactly-once",
            format!("n{node} got stanza {id} ({k}x) that no client had sent"),
        ));
    }
    out
}

/// Stanzas from one node to another arrive in the order they were sent.
pub fn per_sender_order(w: &World) -> Vec<Violation> {
    let mut out = Vec::new();
    for (node, got) in w.history.delivered.iter().enumerate() {
        let mut last: BTreeMap<usize, u64> = BTreeMap::new();
        for (origin, id) in got {
            let prev = last.insert(*origin, *id).unwrap_or(0);
            if *id < prev {
                out.push(violation(
                    "per-sender-order",
                    format!("n{node} got stanza {id} from n{origin} after the later {prev}"),
                ));
            }
        }
    }
    out
}

/// After the heal, every outbox has been delivered and acknowledged.
pub fn outboxes_drained(w: &World) -> Vec<Violation> {
    (0..w.node_count())
        .filter(|n| w.pending(*n) > 0)
        .map(|n| {
            violation(
                "outboxes-drained",
                format!("n{n} still has {} stanzas queued after the heal", w.pending(n)),
            )
        })
        .collect()
}

/// Every node holds the same registers, each the greatest-versioned write
/// made anywhere.
pub fn registers_converge(w: &World) -> Vec<Violation> {
    let mut winner = BTreeMap::new();
    for wr in &w.history.writes {
        let e = winner.entry(wr.key.clone()).or_insert_with(|| wr.lww.clone());
        if wr.lww.version > e.version {
            *e = wr.lww.clone();
        }
    }
    let mut out = Vec::new();
    for n in 0..w.node_count() {
        if w.registers(n) != &winner {
            let differing: Vec<String> = winner
                .iter()
                .filter(|(k, v)| w.registers(n).get(*k) != Some(v))
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                .collect();
            out.push(violation(
                "registers-converge",
                format!("n{n} differs from the latest writes on {differing:?}"),
            ));
        }
    }
    out
}

/// No write is versioned further ahead of true time than a skewed clock
/// plus what the admission bound lets a peer pull it forward: a poisoned
/// clock elsewhere must not drag the cluster's versions into the future.
pub fn clocks_stay_bounded(w: &World) -> Vec<Violation> {
    use crate::faults::{CLOCK_SKEW_MAX_MS, MAX_CLOCK_SKEW_MS};
    let limit = CLOCK_SKEW_MAX_MS + MAX_CLOCK_SKEW_MS;
    w.history
        .writes
        .iter()
        .filter(|wr| wr.lww.version.hlc.millis() > wr.true_ms + limit)
        .take(1)
        .map(|wr| {
            violation(
                "clocks-stay-bounded",
                format!(
                    "n{} wrote {} versioned {} ms ahead of true time",
                    wr.node,
                    String::from_utf8_lossy(&wr.key),
                    wr.lww.version.hlc.millis() - wr.true_ms
                ),
            )
        })
        .collect()
}

/// A client's write wins over everything its node held for that key when
/// it was made (otherwise anti-entropy quietly reverts it).
pub fn writes_win_locally(w: &World) -> Vec<Violation> {
    w.history
        .stale_writes
        .iter()
        .map(|s| violation("writes-win-locally", s.clone()))
        .collect()
}
