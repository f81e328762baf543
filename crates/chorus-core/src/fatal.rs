//! Fatal errors: failures after which this node must not be trusted to
//! serve, such as a synced write that failed (after a failed fsync the
//! kernel may already have dropped the data, so retrying proves nothing)
//! or the archive's Raft core stopping on a storage error. The first one
//! is kept with its reason; from then on `/readyz` fails with it and
//! `chorus_fatal_error` is 1, so load balancers send clients elsewhere and
//! an alert fires. Only a restart (after the operator fixed the cause)
//! clears it. One process is one node, so the state is process-wide.

use std::sync::Mutex;

/// What failed and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fatal {
    /// The part of the node: `storage` or `archive`.
    pub component: &'static str,
    /// The error, as the failing layer reported it.
    pub reason: String,
}

/// The first fatal error of each component, in the order they happened.
static FATAL: Mutex<Vec<Fatal>> = Mutex::new(Vec::new());

/// Records a fatal error; returns whether it was the component's first
/// (callers log it then, so the log names each cause once).
pub fn report(component: &'static str, reason: impl Into<String>) -> bool {
    let mut f = FATAL.lock().unwrap_or_else(|e| e.into_inner());
    if f.iter().any(|x| x.component == component) {
        return false;
    }
    f.push(Fatal {
        component,
        reason: reason.into(),
    });
    true
}

/// The first fatal error, if one happened (what `/readyz` reports).
pub fn current() -> Option<Fatal> {
    FATAL.lock().unwrap_or_else(|e| e.into_inner()).first().cloned()
}

/// Whether `component` has had a fatal error.
pub fn failed(component: &str) -> bool {
    FATAL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|x| x.component == component)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_fatal_error_is_kept() {
        assert_eq!(current(), None);
        assert!(report("storage", "fsync failed: EIO"));
        assert!(!report("storage", "again"), "one report per component");
        assert!(report("archive", "later"));
        assert!(failed("archive") && failed("storage") && !failed("other"));
        assert_eq!(
            current(),
            Some(Fatal {
                component: "storage",
                reason: "fsync failed: EIO".into()
            })
        );
    }
}
