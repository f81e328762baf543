//! CPU-heavy work (PBKDF2 for PLAIN logins, registration and password
//! changes) off the async workers: on a multi-threaded runtime the current
//! worker hands its other tasks to a fresh worker for the duration
//! (`block_in_place`), so a burst of logins cannot stall every session on
//! the node; elsewhere (unit tests, current-thread runtimes) it runs in
//! place.

/// Runs `f`, moving it off the async workers where the runtime allows.
pub fn cpu<R>(f: impl FnOnce() -> R) -> R {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_without_a_runtime() {
        assert_eq!(super::cpu(|| 2 + 2), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_single_worker_stays_free_for_other_tasks() {
        // With one worker, a blocking closure run in place would starve the
        // spawned task; offloaded, the task completes while it waits.
        let (tx, rx) = std::sync::mpsc::channel();
        tokio::spawn(async move { tx.send(()).expect("send") });
        let got = super::cpu(|| rx.recv_timeout(std::time::Duration::from_secs(10)));
        assert!(got.is_ok(), "the other task never ran");
    }
}
