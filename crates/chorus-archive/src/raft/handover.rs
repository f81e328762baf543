//! Handing archive leadership over before a leader shuts down. The leader
//! stops heartbeating and campaigning and asks the other voters, most
//! up-to-date first, to stand for election until one leads: followers
//! accept a new leader once the old one's lease (the election timeout) has
//! run out, so the archive is writable again within about that time
//! instead of after a random timeout. Every request is bounded and the
//! whole handover has a deadline: a successor that does not answer (killed,
//! paused, behind a dead link) is skipped, never waited for, so the
//! shutdown always goes on. (A request once waited for the 10 s forwarding
//! timeout, and a chaos run killed the node for not exiting.)

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
/// next) until `handed(wait)` sees a new leader or `deadline` passes.
async fn ask_in_turn<A, F, H, G>(successors: &[u64], deadline: Instant, ask: A, mut handed: H) -> bool
where
    A: Fn(u64) -> F,
    F: Future<Output = Result<(), String>>,
    H: FnMut(Duration) -> G,
    G: Future<Output = bool>,
{
    let mut next = 0;
    loop {
        let target = successors[next % successors.len()];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(ASK_TIMEOUT.min(left), ask(target)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(target, error = %e, "successor did not start an election");
                next += 1;
            }
            Err(_) => {
                tracing::debug!(target, "successor did not answer in time");
                next += 1;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if handed(RETRY.min(left)).await {
            return true;
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
    async fn the_handover_ends_at_its_deadline_whatever_the_successors_do() {
        let t0 = Instant::now();
        let handed = ask_in_turn(
            &[1, 2, 3],
            t0 + HANDOVER,
            |_| std::future::pending::<Result<(), String>>(),
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
}
