//! Failpoints: known bugs that the chaos suite re-introduces on purpose to
//! prove its checkers catch them.
//!
//! Only debug builds read them (`CHORUS_FAILPOINTS=name[,name...]` in the
//! environment); in release builds [`active`] is a constant `false`, so
//! nothing a customer runs can be switched into a bug.

/// A buggy behaviour the chaos suite can switch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failpoint {
    /// A cross-node stanza queued for a peer whose link is down is
    /// dropped instead of being written to the durable outbox, while the
    /// sender's stream still acknowledges it ("ack before the spool
    /// write"). A site cut then loses messages.
    SkipOutboxWhenDown,
    /// Power-loss simulation, not a bug: writes that are not synced skip
    /// RocksDB's write-ahead log, so `kill -9` loses them as a power cut
    /// loses what the page cache held. Synced writes survive as before, so
    /// a test that kills the node shows whether everything acknowledged
    /// was synced.
    LoseUnsyncedWrites,
    /// Disk failure simulation, not a bug: once the file named by
    /// `CHORUS_FAILPOINT_TRIGGER` exists, every synced write fails as if
    /// fsync had returned EIO, so a test can break a running node's disk.
    FailSyncedWritesWhenTriggered,
}

impl Failpoint {
    /// The name used in `CHORUS_FAILPOINTS`.
    pub fn name(self) -> &'static str {
        match self {
            Failpoint::SkipOutboxWhenDown => "skip-outbox-when-down",
            Failpoint::LoseUnsyncedWrites => "lose-unsynced-writes",
            Failpoint::FailSyncedWritesWhenTriggered => "fail-synced-writes-when-triggered",
        }
    }
}

/// Whether `fp` is switched on for this process.
#[cfg(debug_assertions)]
pub fn active(fp: Failpoint) -> bool {
    use std::sync::OnceLock;
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES
        .get_or_init(|| parse(&std::env::var("CHORUS_FAILPOINTS").unwrap_or_default()))
        .iter()
        .any(|n| n == fp.name())
}

/// Whether `fp` is switched on for this process: never, in release builds.
#[cfg(not(debug_assertions))]
pub fn active(_fp: Failpoint) -> bool {
    false
}

/// Whether `fp` is on and its trigger file (`CHORUS_FAILPOINT_TRIGGER`)
/// exists now.
pub fn triggered(fp: Failpoint) -> bool {
    active(fp)
        && std::env::var_os("CHORUS_FAILPOINT_TRIGGER").is_some_and(|p| std::path::Path::new(&p).exists())
}

#[cfg_attr(not(debug_assertions), allow(dead_code))]
fn parse(list: &str) -> Vec<String> {
    list.split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_comma_separated_and_trimmed() {
        assert_eq!(
            parse(" skip-outbox-when-down , x,,"),
            vec!["skip-outbox-when-down", "x"]
        );
        assert!(parse("").is_empty());
    }
}
