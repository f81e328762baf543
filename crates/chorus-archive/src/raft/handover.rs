//! Handing archive leadership over before a leader shuts down. The leader
//! stops heartbeating and campaigning and asks the other voters, most
//! up-to-date first, to stand for election until one leads: followers
//! accept a new leader once the old one's lease (the election timeout) has
//! run out, so the archive is writable again within about that time
//! instead of after a random timeout. Every request is bounded and the
//! whole handover has a deadline: a successor that does not answer (killed,
//! paused, behind a dead link) is skipped, never waited for, so the
//! shutdown always goes on. (A request once waited for the 10 s forwarding
//! timeout, and a chaos run killed the node for not exiting.) A successor
//! whose own Raft node has stopped says so (`ElectRefusal::Stopping`) and
//! is not asked again, and once every successor in turn has failed to stand
//! (stopping, unreachable, silent: a whole cluster or site shut down at
//! once, whose listeners are already closed) the handover ends instead of
//! asking round and round until its deadline; the others elect on their
//! own if any is left.

use crate::raft::net::ElectRefusal;
use crate::raft::{ArchiveNet, ArchiveRaft};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Time a leader waits for a successor when shutting down.
pub const HANDOVER: Duration = Duration::from_secs(5);
/// Pause between requests while no new leader is seen.
const RETRY: Duration = Duration::from_millis(300);
/// Longest a single request to a successor may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// If this node leads the archive, hands leadership over (see the module
/// documentation); returns once another node leads or `HANDOVER` passed.
pub async fn hand_over(raft: &ArchiveRaft, net: &ArchiveNet) {
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(m.id) {
        return;
    }
    let matched = |v: &u64| {
        m.replication
            .as_ref()
            .and_then(|r| r.get(v).cloned().flatten())
            .map_or(0, |l| l.index)
    };
    let mut successors: Vec<u64> = m
        .membership_config
        .membership()
        .voter_ids()
        .filter(|v| *v != m.id)
        .collect();
    successors.sort_by_key(|v| std::cmp::Reverse(matched(v)));
    if successors.is_empty() {
        return;
    }
    tracing::info!(?successors, "handing archive leadership over before shutdown");
    raft.runtime_config().heartbeat(false);
    raft.runtime_config().elect(false);
    let me = m.id;
    let rx = raft.metrics();
    let handed = ask_in_turn(
        &successors,
        Instant::now() + HANDOVER,
        |target| net.ask_to_elect(target, ASK_TIMEOUT),
        |wait| {
            let mut rx = rx.clone();
            async move {
                let seen = rx.wait_for(|m| m.current_leader.is_some_and(|l| l != me));
                matches!(tokio::time::timeout(wait, seen).await, Ok(Ok(_)))
            }
        },
    )
    .await;
    if handed {
        tracing::info!(leader = ?raft.metrics().borrow().current_leader, "archive leadership handed over");
    } else {
        tracing::warn!("archive leadership not handed over in time; the others will elect on their own");
    }
}

/// Asks `successors` in turn to stand (each request bounded by
/// `ASK_TIMEOUT`; one that fails or does not answer makes way for the
/// next, one that is stopping is dropped) until `handed(wait)` sees a new
/// leader, `deadline` passes, no successor is left, or every one left has
/// failed in a row.
async fn ask_in_turn<A, F, H, G>(successors: &[u64], deadline: Instant, ask: A, mut handed: H) -> bool
where
    A: Fn(u64) -> F,
    F: Future<Output = Result<(), ElectRefusal>>,
    H: FnMut(Duration) -> G,
    G: Future<Output = bool>,
{
    let mut successors = successors.to_vec();
    let mut next = 0;
    let mut failed_in_a_row = 0;
    loop {
        if successors.is_empty() {
            tracing::info!("every successor is shutting down too: no handover");
            return false;
        }
        let target = successors[next % successors.len()];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(ASK_TIMEOUT.min(left), ask(target)).await {
            Ok(Ok(())) => failed_in_a_row = 0,
            Ok(Err(ElectRefusal::Stopping)) => {
                tracing::debug!(target, "successor is shutting down too");
                successors.retain(|s| *s != target);
                continue;
            }
            Ok(Err(e)) => {
                tracing::debug!(target, error = %e, "successor did not start an election");
                next += 1;
                failed_in_a_row += 1;
            }
            Err(_) => {
                tracing::debug!(target, "successor did not answer in time");
                next += 1;
                failed_in_a_row += 1;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if handed(RETRY.min(left)).await {
            return true;
        }
        if failed_in_a_row >= successors.len() {
            tracing::info!("no successor could stand: the others elect on their own");
            return false;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_successor_that_never_answers_is_skipped() {
        let asked_second = AtomicBool::new(false);
        let t0 = Instant::now();
        let handed = ask_in_turn(
            &[1, 2],
            t0 + HANDOVER,
            |target| {
                let second = &asked_second;
                async move {
                    if target == 1 {
                        // Killed, or behind a dead link: never answers.
                        std::future::pending::<()>().await;
                    }
                    second.store(true, Ordering::SeqCst);
                    Ok(())
                }
            },
            |wait| {
                let done = asked_second.load(Ordering::SeqCst);
                async move {
                    tokio::time::sleep(wait).await;
                    done
                }
            },
        )
        .await;
        assert!(handed);
        assert!(t0.elapsed() <= ASK_TIMEOUT + 2 * RETRY, "{:?}", t0.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn the_handover_gives_up_after_a_round_in_which_no_successor_answers() {
        let t0 = Instant::now();
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let handed = ask_in_turn(
            &[1, 2, 3],
            t0 + HANDOVER,
            |_| {
                asked.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<Result<(), ElectRefusal>>()
            },
            |wait| async move {
                tokio::time::sleep(wait).await;
                false
            },
        )
        .await;
        assert!(!handed);
        assert_eq!(asked.load(Ordering::SeqCst), 3, "each asked once");
        assert!(t0.elapsed() <= 3 * (ASK_TIMEOUT + RETRY), "{:?}", t0.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn the_handover_ends_at_its_deadline_while_a_successor_keeps_accepting() {
        let t0 = Instant::now();
        let handed = ask_in_turn(
            &[1, 2],
            t0 + HANDOVER,
            // Accepts, but no election ever completes.
            |_| std::future::ready(Ok(())),
            |wait| async move {
                tokio::time::sleep(wait).await;
                false
            },
        )
        .await;
        assert!(!handed);
        assert!(
            t0.elapsed() >= HANDOVER && t0.elapsed() <= HANDOVER + RETRY,
            "{:?}",
            t0.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_successor_is_stopping_the_handover_ends_at_once() {
        let t0 = Instant::now();
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let handed = ask_in_turn(
            &[1, 2],
            t0 + HANDOVER,
            |_| {
                asked.fetch_add(1, Ordering::SeqCst);
                std::future::ready(Err(ElectRefusal::Stopping))
            },
            |wait| async move {
                tokio::time::sleep(wait).await;
                false
            },
        )
        .await;
        assert!(!handed);
        assert_eq!(asked.load(Ordering::SeqCst), 2, "each asked once");
        // Before, it asked again and again until the deadline (5 s).
        assert!(t0.elapsed() < RETRY, "{:?}", t0.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_successor_makes_way_for_one_that_stands() {
        let stood = AtomicBool::new(false);
        let handed = ask_in_turn(
            &[1, 2],
            Instant::now() + HANDOVER,
            |target| {
                let r = if target == 1 {
                    Err(ElectRefusal::Stopping)
                } else {
                    stood.store(true, Ordering::SeqCst);
                    Ok(())
                };
                std::future::ready(r)
            },
            |wait| {
                let done = stood.load(Ordering::SeqCst);
                async move {
                    tokio::time::sleep(wait).await;
                    done
                }
            },
        )
        .await;
        assert!(handed);
    }
}
