//! A watchdog for the ordered shutdown: the shutdown records which step it
//! is in, and a plain OS thread (not a tokio task, so it still runs if
//! every runtime worker is blocked) logs the step and how long it has
//! taken once the shutdown runs past [`SHUTDOWN_WARN_AFTER`], then again
//! every few seconds. It only reports: a node that cannot stop cleanly is
//! still stopped by its supervisor, and the log then says where it stuck.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// When a shutdown counts as slow (a clean one takes a few seconds).
pub const SHUTDOWN_WARN_AFTER: Duration = Duration::from_secs(6);

/// The steps of the ordered shutdown, in order.
pub const STEPS: &[&str] = &[
    "draining sessions",
    "finishing parked sessions",
    "handing the archive over",
    "closing cluster links",
    "flushing storage",
    "done",
];

/// The shutdown's current step, shared with the watchdog thread.
#[derive(Clone)]
pub struct ShutdownWatch {
    step: Arc<AtomicUsize>,
}

impl ShutdownWatch {
    /// Starts the watchdog thread; the shutdown begins with `STEPS[0]`.
    pub fn start() -> ShutdownWatch {
        let w = ShutdownWatch {
            step: Arc::new(AtomicUsize::new(0)),
        };
        let step = w.step.clone();
        let started = Instant::now();
        let spawned = std::thread::Builder::new()
            .name("shutdown-watch".into())
            .spawn(move || {
                let mut wait = SHUTDOWN_WARN_AFTER;
                loop {
                    std::thread::sleep(wait);
                    let s = step.load(Ordering::Relaxed).min(STEPS.len() - 1);
                    if s == STEPS.len() - 1 {
                        return;
                    }
                    tracing::error!(
                        step = STEPS[s],
                        secs = started.elapsed().as_secs(),
                        "shutdown is taking long"
                    );
                    wait = Duration::from_secs(2);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the shutdown watchdog");
        }
        w
    }

    /// Moves to the step named `name` (one of [`STEPS`]).
    pub fn at(&self, name: &str) {
        if let Some(i) = STEPS.iter().position(|s| *s == name) {
            self.step.store(i, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_recorded_by_name() {
        let w = ShutdownWatch::start();
        w.at("flushing storage");
        assert_eq!(w.step.load(Ordering::Relaxed), 4);
        w.at("no such step");
        assert_eq!(w.step.load(Ordering::Relaxed), 4, "unknown names change nothing");
        w.at("done");
    }
}
