//! Background lanes: dedicated threads for the archive's throughput work
//! (the state machine's apply of committed batches, search indexing), run
//! at a lower CPU priority than the sessions.
//!
//! Both are CPU work that can wait a little: a message is acknowledged
//! and delivered once its spool record is on disk, long before its batch
//! is applied. On a node whose cores are busy, the scheduler then gives a
//! session's wake-up the core first, and the archive catches up in the
//! gaps; on an idle node a lane runs at full speed all the same (a nice
//! value weights sharing, it does not cap). Before, an apply ran on a
//! runtime worker through `block_in_place` at the sessions' priority, and
//! a batch of thousands of index writes took a core from under them.
//!
//! A lane runs one job at a time, in order. A job that panics is reported
//! to its caller as [`LaneGone`]; the lane carries on with the next one.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// How much lower than the sessions a lane runs by default (a nice value:
/// under contention a lane gets about a tenth of a session thread's share).
pub const DEFAULT_NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// A job's lane stopped or the job panicked.
#[derive(Debug, thiserror::Error)]
#[error("the archive's {0} lane failed to run a job (it panicked or the lane is gone)")]
pub struct LaneGone(pub String);

/// One dedicated thread running jobs in order.
pub struct Lane {
    name: String,
    jobs: mpsc::Sender<Job>,
}

impl Lane {
    /// Starts the thread `archive-<name>`, `nice` steps below its creator
    /// (0: as the sessions). A priority the system refuses is logged, not fatal.
    pub fn start(name: &str, nice: i32) -> std::io::Result<Lane> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let label = name.to_owned();
        std::thread::Builder::new()
            .name(format!("archive-{name}"))
            .spawn(move || {
                lower_priority(&label, nice);
                chorus_store::quiet_perf_counters();
                // Ends when every sender (the lane) is dropped.
                while let Ok(job) = rx.recv() {
                    // The caller learns of a panic: its reply is dropped.
                    let _ = catch_unwind(AssertUnwindSafe(job));
                }
            })?;
        Ok(Lane {
            name: name.to_owned(),
            jobs,
        })
    }

    /// Runs `f` on the lane and waits for its result without holding a
    /// runtime thread.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, LaneGone> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.send(job).map_err(|_| LaneGone(self.name.clone()))?;
        rx.await.map_err(|_| LaneGone(self.name.clone()))
    }
}

/// Lowers the calling thread's CPU priority by `by` nice steps, to at most
/// 19 (Linux nice values are per thread; a new thread starts with its
/// creator's).
fn lower_priority(lane: &str, by: i32) {
    if by <= 0 {
        return;
    }
    let tid = rustix::thread::gettid();
    let lowered = rustix::process::getpriority_process(Some(tid))
        .and_then(|now| rustix::process::setpriority_process(Some(tid), (now + by).min(19)));
    if let Err(e) = lowered {
        tracing::warn!(lane, by, error = %e, "cannot lower the archive lane's CPU priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of_thread(tid: rustix::process::Pid) -> i32 {
        rustix::process::getpriority_process(Some(tid)).expect("getpriority")
    }

    /// This process's threads: id and nice value (field 19 of `stat`; a
    /// new thread's name may not be set yet, its nice value is).
    fn threads() -> Vec<(String, i32)> {
        let mut out = Vec::new();
        for t in std::fs::read_dir("/proc/self/task").expect("tasks") {
            let dir = t.expect("task").path();
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
            let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
            if let Some(n) = after_name.split_whitespace().nth(16).and_then(|v| v.parse().ok()) {
                out.push((dir.display().to_string(), n));
            }
        }
        out
    }

    fn own_nice() -> i32 {
        nice_of_thread(rustix::thread::gettid())
    }

    #[tokio::test]
    async fn the_state_machine_applies_on_its_lowered_lane() {
        let mut m = crate::testing::Machine::new();
        m.sm.set_background_nice(5);
        let r = crate::types::Record {
            id: "n-1".into(),
            body: Some("applied on the lane".into()),
            ..crate::types::Record::default()
        };
        let resp = m.apply(vec![crate::types::Command::Append(vec![r])]).await;
        assert_eq!(resp[0].inserted, 1);
        let apply = std::fs::read_dir("/proc/self/task")
            .expect("tasks")
            .map(|t| t.expect("task").path())
            .find(|d| std::fs::read_to_string(d.join("comm")).is_ok_and(|c| c.trim() == "archive-apply"))
            .expect("an archive-apply thread");
        let tid = apply
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<i32>().ok());
        let tid = rustix::process::Pid::from_raw(tid.expect("tid")).expect("pid");
        assert_eq!(nice_of_thread(tid), (own_nice() + 5).min(19));
    }

    #[tokio::test]
    async fn tantivys_threads_inherit_the_index_lanes_priority() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lane = Lane::start("index", 6).expect("start");
        lane.run(|| ()).await.expect("the lane runs");
        let before: Vec<String> = threads().into_iter().map(|(t, _)| t).collect();
        let path = dir.path().join("index");
        let _index = lane
            .run(move || crate::search::SearchIndex::open(&path))
            .await
            .expect("ran")
            .expect("open");
        // Threads started since are tantivy's (a current-thread runtime
        // starts none of its own).
        let tantivy: Vec<i32> = threads()
            .into_iter()
            .filter(|(t, _)| !before.contains(t))
            .map(|(_, n)| n)
            .collect();
        assert!(!tantivy.is_empty(), "tantivy started no thread");
        let lowered = (own_nice() + 6).min(19);
        assert!(
            tantivy.iter().all(|n| *n == lowered),
            "{tantivy:?}, want {lowered}"
        );
    }

    #[tokio::test]
    async fn jobs_run_in_order_on_a_lowered_thread_and_a_panic_is_reported() {
        let lane = Lane::start("test", 7).expect("start");
        let here = rustix::thread::gettid();
        let (tid, name) = lane
            .run(|| {
                let me = std::thread::current();
                (rustix::thread::gettid(), me.name().map(str::to_owned))
            })
            .await
            .expect("ran");
        assert_ne!(tid, here, "the job ran on the caller's thread");
        assert_eq!(name.as_deref(), Some("archive-test"));
        assert_eq!(nice_of_thread(tid), (nice_of_thread(here) + 7).min(19));
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let runs: Vec<_> = (0..5)
            .map(|i| {
                let o = order.clone();
                lane.run(move || o.lock().expect("lock").push(i))
            })
            .collect();
        for r in runs {
            r.await.expect("ran");
        }
        assert_eq!(*order.lock().expect("lock"), [0, 1, 2, 3, 4]);
        let panicked = lane.run(|| panic!("a bug in a job")).await;
        assert!(matches!(panicked, Err(LaneGone(n)) if n == "test"));
        assert_eq!(lane.run(|| 41 + 1).await.expect("the lane carries on"), 42);
    }
}
