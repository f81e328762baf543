//! Group commit: writers that must be durable before they answer share one
//! synced write. Each writer adds its changes to the pending batch (under
//! one lock, so whatever it numbers there is numbered in commit order) and
//! waits; the first waiter with no flush under way takes the pending batch
//! and flushes it (one fsync), and every writer whose changes it carried
//! returns. Writers that arrive during a flush form the next batch. No I/O
//! happens here: the caller supplies the flush.

use std::sync::{Condvar, Mutex};

/// Writers whose changes may share one flush.
const GROUP_WRITERS_MAX: u64 = 4096;

struct State<B> {
    pending: B,
    /// Tickets handed out so far (the newest writer's ticket).
    issued: u64,
    /// Tickets whose flush has finished (successfully or not).
    flushed: u64,
    /// The tickets of a failed flush and why, kept until the next one.
    failed: Option<(u64, u64, String)>,
    flushing: bool,
}

/// A staged write's place in the flush order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "staged changes are durable only after `wait`"]
pub struct Ticket(u64);

/// A group committer for batches of type `B`.
pub struct GroupCommit<B> {
    state: Mutex<State<B>>,
    done: Condvar,
}

impl<B: Default> Default for GroupCommit<B> {
    fn default() -> Self {
        GroupCommit {
            state: Mutex::new(State {
                pending: B::default(),
                issued: 0,
                flushed: 0,
                failed: None,
                flushing: false,
            }),
            done: Condvar::new(),
        }
    }
}

impl<B: Default> GroupCommit<B> {
    /// Adds changes with `add` and returns its result once a flush that
    /// carries them succeeded; `flush` writes a whole batch durably.
    /// `wait` runs each blocking wait (a runtime may move other work off
    /// this thread meanwhile).
    pub fn commit<R>(
        &self,
        add: impl FnOnce(&mut B) -> R,
        flush: impl Fn(B) -> Result<(), String>,
        wait: impl Fn(&mut dyn FnMut()),
    ) -> Result<R, String> {
        let (out, ticket) = self.stage(add);
        self.wait(ticket, flush, wait).map(|()| out)
    }

    /// Adds changes to the pending batch; the ticket says which flush must
    /// finish before they count as durable. A caller that numbers its
    /// changes under a lock of its own stages under that lock and waits
    /// after releasing it.
    pub fn stage<R>(&self, add: impl FnOnce(&mut B) -> R) -> (R, Ticket) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.issued - st.flushed >= GROUP_WRITERS_MAX {
            st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        let out = add(&mut st.pending);
        st.issued += 1;
        (out, Ticket(st.issued))
    }

    /// Waits until the flush carrying `ticket` is done, flushing the
    /// pending batch itself when no flush is under way.
    pub fn wait(
        &self,
        ticket: Ticket,
        flush: impl Fn(B) -> Result<(), String>,
        wait: impl Fn(&mut dyn FnMut()),
    ) -> Result<(), String> {
        let mut result = None;
        wait(&mut || result = Some(self.wait_for(ticket.0, &flush)));
        result.unwrap_or_else(|| Err("group commit wait did not run".into()))
    }

    fn wait_for(&self, ticket: u64, flush: &impl Fn(B) -> Result<(), String>) -> Result<(), String> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if st.flushed >= ticket {
                return match &st.failed {
                    Some((from, to, why)) if (*from..=*to).contains(&ticket) => Err(why.clone()),
                    _ => Ok(()),
                };
            }
            if !st.flushing {
                st.flushing = true;
                let batch = std::mem::take(&mut st.pending);
                let (from, to) = (st.flushed + 1, st.issued);
                drop(st);
                let r = flush(batch);
                st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                assert!(st.flushed < to, "flushed tickets only grow");
                st.flushed = to;
                st.flushing = false;
                st.failed = r.err().map(|why| (from, to, why));
                self.done.notify_all();
                continue;
            }
            st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn inline(f: &mut dyn FnMut()) {
        f()
    }

    #[test]
    fn concurrent_writers_share_flushes_and_keep_their_order() {
        let gc: Arc<GroupCommit<Vec<u64>>> = Arc::new(GroupCommit::default());
        let flushed: Arc<Mutex<Vec<u64>>> = Arc::default();
        let flushes = Arc::new(AtomicUsize::new(0));
        let next = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gc, flushed, flushes, next) =
                    (gc.clone(), flushed.clone(), flushes.clone(), next.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let flush = |b: Vec<u64>| {
                            flushes.fetch_add(1, Ordering::SeqCst);
                            flushed.lock().expect("flushed").extend(b);
                            Ok(())
                        };
                        let seq = gc
                            .commit(
                                |b| {
                                    let s = next.fetch_add(1, Ordering::SeqCst) as u64;
                                    b.push(s);
                                    s
                                },
                                flush,
                                inline,
                            )
                            .expect("commit");
                        // Once commit returns, the write is in a finished flush.
                        assert!(flushed.lock().expect("flushed").contains(&seq));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writer thread");
        }
        let all = flushed.lock().expect("flushed").clone();
        assert_eq!(
            all,
            (0..1600).collect::<Vec<u64>>(),
            "flushed in numbering order, once each"
        );
        assert!(
            flushes.load(Ordering::SeqCst) <= 1600,
            "never more flushes than writers"
        );
    }

    #[test]
    fn writers_staged_before_a_flush_share_it() {
        let gc: GroupCommit<Vec<u32>> = GroupCommit::default();
        let batches: Mutex<Vec<Vec<u32>>> = Mutex::default();
        let flush = |b: Vec<u32>| {
            batches.lock().expect("batches").push(b);
            Ok(())
        };
        let ((), t1) = gc.stage(|b| b.push(1));
        let ((), t2) = gc.stage(|b| b.push(2));
        let ((), t3) = gc.stage(|b| b.push(3));
        assert_eq!(gc.wait(t3, flush, inline), Ok(()));
        assert_eq!(gc.wait(t1, flush, inline), Ok(()), "already carried");
        assert_eq!(gc.wait(t2, flush, inline), Ok(()), "already carried");
        assert_eq!(
            *batches.lock().expect("batches"),
            vec![vec![1, 2, 3]],
            "one flush for three writers"
        );
        let ((), t4) = gc.stage(|b| b.push(4));
        assert_eq!(gc.wait(t4, flush, inline), Ok(()));
        assert_eq!(
            batches.lock().expect("batches").len(),
            2,
            "a later writer gets a flush of its own"
        );
    }

    #[test]
    fn a_failed_flush_fails_exactly_its_writers() {
        let gc: GroupCommit<Vec<u32>> = GroupCommit::default();
        let bad = |_b: Vec<u32>| Err("disk full".to_string());
        assert_eq!(gc.commit(|b| b.push(1), bad, inline), Err("disk full".into()));
        let good = |_b: Vec<u32>| Ok(());
        assert_eq!(gc.commit(|b| b.push(2), good, inline), Ok(()));
    }
}
