//! Group commit: writers that must be durable before they answer share one
//! synced write. Each writer adds its changes to the pending batch (under
//! one lock, so whatever it numbers there is numbered in commit order) and
//! waits; the first waiter with no flush under way takes the pending batch
//! and flushes it (one fsync), and every writer whose changes it carried
//! returns. Writers that arrive during a flush form the next batch. No I/O
//! happens here: the caller supplies the flush.
//!
//! A writer on an async runtime need not block a thread while it waits:
//! [`GroupCommit::poll_flushed`] registers its waker, and when no flush is
//! under way tells it to start [`GroupCommit::flush_all`] on a blocking
//! thread, which flushes batch after batch until nothing is pending.
//!
//! A failed flush fails exactly the writers it carried, however late they
//! look: each failure is kept until every one of its writers has read it
//! (at most [`FAILURES_KEPT`] failures are remembered).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Writers whose changes may share one flush.
const GROUP_WRITERS_MAX: u64 = 4096;
/// Failed flushes remembered for writers that have not looked yet. A
/// writer that never looks (its task was dropped) would otherwise keep its
/// failure forever; beyond this many the oldest is forgotten.
pub const FAILURES_KEPT: usize = 1024;

/// A failed flush: the tickets it carried, why, and how many of its
/// writers have not read the failure yet.
struct Failure {
    from: u64,
    to: u64,
    why: String,
    unread: u64,
}

struct State<B> {
    pending: B,
    /// Tickets handed out so far (the newest writer's ticket).
    issued: u64,
    /// Tickets whose flush has finished (successfully or not).
    flushed: u64,
    /// Failed flushes whose writers have not all looked.
    failed: Vec<Failure>,
    flushing: bool,
    /// Async writers waiting, with the ticket each waits for.
    wakers: Vec<(u64, Waker)>,
}

impl<B> State<B> {
    /// The outcome for a finished ticket; counts the failure as read.
    fn outcome(&mut self, ticket: u64) -> Result<(), String> {
        let Some(i) = self.failed.iter().position(|f| (f.from..=f.to).contains(&ticket)) else {
            return Ok(());
        };
        let f = &mut self.failed[i];
        let why = f.why.clone();
        f.unread -= 1;
        if f.unread == 0 {
            self.failed.remove(i);
        }
        Err(why)
    }

    /// Records a finished flush of tickets `from..=to`.
    fn finish(&mut self, from: u64, to: u64, result: Result<(), String>) {
        assert!(self.flushed < to, "flushed tickets only grow");
        self.flushed = to;
        if let Err(why) = result {
            if self.failed.len() >= FAILURES_KEPT {
                self.failed.remove(0);
            }
            self.failed.push(Failure {
                from,
                to,
                why,
                unread: to - from + 1,
            });
        }
        let flushed = self.flushed;
        self.wakers.retain(|(t, w)| {
            if *t <= flushed {
                w.wake_by_ref();
                false
            } else {
                true
            }
        });
    }
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
                failed: Vec::new(),
                flushing: false,
                wakers: Vec::new(),
            }),
            done: Condvar::new(),
        }
    }
}

impl<B: Default> GroupCommit<B> {
    fn lock(&self) -> MutexGuard<'_, State<B>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

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
        let mut st = self.lock();
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
        let mut st = self.lock();
        loop {
            if st.flushed >= ticket {
                return st.outcome(ticket);
            }
            if !st.flushing {
                st.flushing = true;
                st = self.flush_once(st, flush);
                st.flushing = false;
                // Async writers that staged during this flush wait for a
                // flusher: wake them, so one of them claims the role.
                for (_, w) in st.wakers.drain(..) {
                    w.wake();
                }
                self.done.notify_all();
                continue;
            }
            st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Flushes the pending batch with the lock released meanwhile (the
    /// caller has set `flushing`); returns the lock again.
    fn flush_once<'a>(
        &'a self,
        mut st: MutexGuard<'a, State<B>>,
        flush: &impl Fn(B) -> Result<(), String>,
    ) -> MutexGuard<'a, State<B>> {
        let batch = std::mem::take(&mut st.pending);
        let (from, to) = (st.flushed + 1, st.issued);
        drop(st);
        let r = flush(batch);
        let mut st = self.lock();
        st.finish(from, to, r);
        self.done.notify_all();
        st
    }

    /// The async form of [`GroupCommit::wait`]: ready with the outcome
    /// once the flush carrying `ticket` is done. Otherwise the waker is
    /// kept, and the second value says whether the caller must now run
    /// [`GroupCommit::flush_all`] on a thread that may block (no flush was
    /// under way, and this call has claimed the flusher's role).
    pub fn poll_flushed(&self, ticket: Ticket, cx: &mut Context<'_>) -> (Poll<Result<(), String>>, bool) {
        let mut st = self.lock();
        if st.flushed >= ticket.0 {
            return (Poll::Ready(st.outcome(ticket.0)), false);
        }
        match st.wakers.iter_mut().find(|(t, _)| *t == ticket.0) {
            Some((_, w)) => w.clone_from(cx.waker()),
            None => st.wakers.push((ticket.0, cx.waker().clone())),
        }
        let start = !st.flushing;
        st.flushing = true;
        (Poll::Pending, start)
    }

    /// Flushes batch after batch until nothing staged is left unflushed;
    /// run by the caller that [`GroupCommit::poll_flushed`] told to.
    pub fn flush_all(&self, flush: impl Fn(B) -> Result<(), String>) {
        let mut st = self.lock();
        debug_assert!(st.flushing, "flush_all runs only in the flusher's role");
        while st.issued > st.flushed {
            st = self.flush_once(st, &flush);
        }
        st.flushing = false;
        self.done.notify_all();
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

    #[test]
    fn a_failure_reaches_its_writers_after_a_later_flush_succeeded() {
        // Writer 1 is carried by writer 2's failed flush but looks only
        // after writer 3's flush succeeded: it must still see the failure
        // (it used to read "the last flush's failure", by then cleared, and
        // answer that its unsynced write was durable).
        let gc: GroupCommit<Vec<u32>> = GroupCommit::default();
        let bad = |_b: Vec<u32>| Err("fsync failed".to_string());
        let good = |_b: Vec<u32>| Ok(());
        let ((), t1) = gc.stage(|b| b.push(1));
        let ((), t2) = gc.stage(|b| b.push(2));
        assert_eq!(gc.wait(t2, bad, inline), Err("fsync failed".into()));
        let ((), t3) = gc.stage(|b| b.push(3));
        assert_eq!(gc.wait(t3, good, inline), Ok(()));
        assert_eq!(gc.wait(t1, good, inline), Err("fsync failed".into()));
        assert!(
            gc.lock().failed.is_empty(),
            "read by both its writers, the failure is forgotten"
        );
    }

    /// Counts wake-ups.
    struct CountWaker(AtomicUsize);

    impl std::task::Wake for CountWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn async_writers_wait_without_a_thread_and_one_flusher_carries_them() {
        let gc: GroupCommit<Vec<u32>> = GroupCommit::default();
        let woken = Arc::new(CountWaker(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let ((), t1) = gc.stage(|b| b.push(1));
        let ((), t2) = gc.stage(|b| b.push(2));
        let (p1, start1) = gc.poll_flushed(t1, &mut cx);
        assert!(p1.is_pending() && start1, "the first waiter becomes the flusher");
        let (p2, start2) = gc.poll_flushed(t2, &mut cx);
        assert!(p2.is_pending() && !start2, "one flusher at a time");
        // A writer staged while the flusher is about to run is carried too.
        let ((), t3) = gc.stage(|b| b.push(3));
        let batches: Mutex<Vec<Vec<u32>>> = Mutex::default();
        gc.flush_all(|b| {
            batches.lock().expect("batches").push(b);
            Ok(())
        });
        assert_eq!(*batches.lock().expect("batches"), vec![vec![1, 2, 3]]);
        assert_eq!(woken.0.load(Ordering::SeqCst), 2, "both waiters woken");
        for t in [t1, t2, t3] {
            let (p, start) = gc.poll_flushed(t, &mut cx);
            assert_eq!(p, Poll::Ready(Ok(())));
            assert!(!start);
        }
        // The flusher's role is free again: a sync writer flushes itself.
        let good = |_b: Vec<u32>| Ok(());
        assert_eq!(gc.commit(|b| b.push(4), good, inline), Ok(()));
    }

    #[test]
    fn an_async_writer_sees_its_flush_fail() {
        let gc: GroupCommit<Vec<u32>> = GroupCommit::default();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let ((), t1) = gc.stage(|b| b.push(1));
        let (_, start) = gc.poll_flushed(t1, &mut cx);
        assert!(start);
        gc.flush_all(|_b| Err("disk full".to_string()));
        assert_eq!(
            gc.poll_flushed(t1, &mut cx).0,
            Poll::Ready(Err("disk full".into()))
        );
    }

    #[test]
    fn an_async_writer_staged_during_a_sync_flush_is_not_stranded() {
        let gc: GroupCommit<Vec<u32>> = GroupCommit::default();
        let woken = Arc::new(CountWaker(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(woken.clone());
        let late: Mutex<Option<Ticket>> = Mutex::default();
        let ((), t1) = gc.stage(|b| b.push(1));
        // While the sync writer flushes, an async writer stages and polls:
        // a flush is under way, so it does not become the flusher.
        let flush = |_b: Vec<u32>| {
            if late.lock().expect("late").is_none() {
                let ((), t2) = gc.stage(|b| b.push(2));
                let (p, start) = gc.poll_flushed(t2, &mut Context::from_waker(&waker));
                assert!(p.is_pending() && !start);
                *late.lock().expect("late") = Some(t2);
            }
            Ok(())
        };
        assert_eq!(gc.wait(t1, flush, inline), Ok(()));
        let t2 = late.lock().expect("late").expect("staged during the flush");
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            1,
            "the async writer was left waiting"
        );
        let (p, start) = gc.poll_flushed(t2, &mut Context::from_waker(&waker));
        assert!(p.is_pending() && start, "woken, it becomes the flusher");
        gc.flush_all(|_b| Ok(()));
        assert_eq!(
            gc.poll_flushed(t2, &mut Context::from_waker(&waker)).0,
            Poll::Ready(Ok(()))
        );
    }
}
