//! Durable writes: what a client or peer is told succeeded is synced to
//! disk first. Concurrent writers share one fsync (group commit, see
//! `chorus_core::group_commit`): the flusher writes the pending batches in
//! order and syncs the write-ahead log once with the last, which covers
//! them all. Waiting threads hand their tokio worker's other tasks to a
//! fresh thread (`block_in_place`), so many sessions can wait at once and
//! their writes share flushes. An async writer ([`DurableWriter::flushed`])
//! blocks no thread at all: it awaits, and the flushes run on a blocking
//! thread that one of the waiters starts.
//!
//! Writes that may be lost in a crash (replicated items that anti-entropy
//! repairs, state the Raft log rebuilds) use [`unsynced`]. Under the
//! `lose-unsynced-writes` failpoint (debug builds) those skip the
//! write-ahead log entirely, so a `kill -9` loses exactly what a power cut
//! could: that is the power-loss simulation the tests run.

use chorus_core::failpoint::{self, Failpoint};
use chorus_core::group_commit::{GroupCommit, Ticket};
use rocksdb::{DB, WriteBatch, WriteOptions};
use std::future::Future;
use std::sync::Arc;

/// Group commit of synced writes to one database.
#[derive(Default)]
pub struct DurableWriter {
    gc: Arc<GroupCommit<Vec<WriteBatch>>>,
}

/// The flusher's role, claimed by an async waiter: flushes until nothing
/// staged is left. Run on a blocking thread; if the runtime drops it
/// unrun (it is shutting down), it flushes where it is dropped, so the
/// role is never lost and no writer waits forever.
struct FlushRole {
    gc: Arc<GroupCommit<Vec<WriteBatch>>>,
    db: Arc<DB>,
    done: bool,
}

impl FlushRole {
    fn run(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        if !std::mem::replace(&mut self.done, true) {
            self.gc.flush_all(|b| flush(&self.db, b));
        }
    }
}

impl Drop for FlushRole {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Options for a write that may be lost in a crash.
pub fn unsynced() -> WriteOptions {
    let mut o = WriteOptions::default();
    if failpoint::active(Failpoint::LoseUnsyncedWrites) {
        o.disable_wal(true);
    }
    o
}

/// Options for a write that is on disk when it returns (one fsync of its
/// own: for rare writes that do not share a group commit).
pub fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

/// Writes `batches` in order with one fsync at the end.
fn flush(db: &DB, batches: Vec<WriteBatch>) -> Result<(), String> {
    let n = batches.len();
    let started = std::time::Instant::now();
    for (i, b) in batches.into_iter().enumerate() {
        let mut o = WriteOptions::default();
        o.set_sync(i + 1 == n);
        let r = if failpoint::triggered(Failpoint::FailSyncedWritesWhenTriggered) {
            Err("fsync failed: Input/output error (failpoint)".to_owned())
        } else {
            db.write_opt(b, &o).map_err(|e| e.into_string())
        };
        if let Err(e) = r {
            let reason = format!("a synced write to {} failed: {e}", db.path().display());
            if chorus_core::fatal::report("storage", reason.clone()) {
                tracing::error!(%reason, "fatal storage error: this node stops reporting ready");
            }
            return Err(e);
        }
    }
    metrics::counter!("chorus_store_fsyncs_total").increment(1);
    metrics::histogram!("chorus_store_group_commit_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("chorus_store_group_commit_batches").record(n as f64);
    Ok(())
}

/// Runs a blocking wait without stalling the other tasks of a
/// multi-threaded runtime's worker; in place elsewhere.
pub fn blocking(f: &mut dyn FnMut()) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl DurableWriter {
    /// Writes `batch` to `db` and returns once it is on disk.
    pub fn write(&self, db: &DB, batch: WriteBatch) -> Result<(), String> {
        self.gc.commit(|p| p.push(batch), |b| flush(db, b), blocking)
    }

    /// Queues `batch` for the next flush (call under the lock that numbers
    /// its contents, then [`DurableWriter::wait`] after releasing it).
    pub fn stage(&self, batch: WriteBatch) -> Ticket {
        self.gc.stage(|p| p.push(batch)).1
    }

    /// Returns once the flush carrying `ticket` is on disk.
    pub fn wait(&self, db: &DB, ticket: Ticket) -> Result<(), String> {
        self.gc.wait(ticket, |b| flush(db, b), blocking)
    }

    /// Resolves once the flush carrying `ticket` is on disk, blocking no
    /// thread while it waits. When no flush is under way, this waiter
    /// starts the flusher on the runtime's blocking pool (inline where
    /// there is no runtime).
    pub fn flushed(
        &self,
        db: Arc<DB>,
        ticket: Ticket,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let gc = self.gc.clone();
        std::future::poll_fn(move |cx| {
            let (poll, start) = gc.poll_flushed(ticket, cx);
            if !start {
                return poll;
            }
            let role = FlushRole {
                gc: gc.clone(),
                db: db.clone(),
                done: false,
            };
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn_blocking(move || role.run());
                    poll
                }
                Err(_) => {
                    role.run();
                    gc.poll_flushed(ticket, cx).0
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Poll, Waker};

    fn db(dir: &std::path::Path) -> Arc<DB> {
        let mut o = rocksdb::Options::default();
        o.create_if_missing(true);
        Arc::new(DB::open(&o, dir).expect("open"))
    }

    #[test]
    fn a_flusher_role_dropped_unrun_still_flushes() {
        // The runtime drops a blocking job it never ran when it shuts down:
        // the waiters it carried must not wait forever.
        let tmp = tempfile::tempdir().expect("temp dir");
        let db = db(tmp.path());
        let w = DurableWriter::default();
        let mut b = WriteBatch::default();
        b.put(b"k", b"v");
        let ticket = w.stage(b);
        let mut cx = Context::from_waker(Waker::noop());
        let (poll, start) = w.gc.poll_flushed(ticket, &mut cx);
        assert!(poll.is_pending() && start, "this waiter holds the flusher's role");
        drop(FlushRole {
            gc: w.gc.clone(),
            db: db.clone(),
            done: false,
        });
        assert_eq!(w.gc.poll_flushed(ticket, &mut cx).0, Poll::Ready(Ok(())));
        assert_eq!(db.get(b"k").expect("read").as_deref(), Some(b"v".as_slice()));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_async_writer_is_flushed_on_the_blocking_pool() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let db = db(tmp.path());
        let w = DurableWriter::default();
        let tickets: Vec<Ticket> = (0..8u8)
            .map(|i| {
                let mut b = WriteBatch::default();
                b.put([i], [i]);
                w.stage(b)
            })
            .collect();
        for t in tickets {
            w.flushed(db.clone(), t).await.expect("flushed");
        }
        for i in 0..8u8 {
            assert_eq!(db.get([i]).expect("read").as_deref(), Some([i].as_slice()));
        }
    }
}
