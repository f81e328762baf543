//! Hybrid logical clocks and item versions for last-writer-wins merges.
//!
//! An [`Hlc`] timestamp packs milliseconds since the epoch in its upper 48
//! bits and a logical counter in its lower 16 bits, so timestamps compare as
//! plain integers, never go backwards on one node, and move past every
//! timestamp the node has seen from its peers. A [`Version`] adds the
//! writing node's tag to break ties, which makes the order total.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Bits of the logical counter.
const LOGICAL_BITS: u32 = 16;
/// Mask of the logical counter.
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// A hybrid logical timestamp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc(pub u64);

impl Hlc {
    /// The physical part, in milliseconds since the epoch.
    pub fn millis(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// Builds a timestamp from milliseconds and a counter.
    pub fn from_parts(millis: u64, logical: u64) -> Hlc {
        Hlc((millis << LOGICAL_BITS) | (logical & LOGICAL_MASK))
    }
}

/// The version of one replicated item: timestamp, then writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// When it was written.
    pub hlc: Hlc,
    /// Which node wrote it (a stable tag derived from the node id).
    pub node: u32,
}

impl Version {
    /// Big-endian bytes: comparing bytes compares versions.
    pub fn to_bytes(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&self.hlc.0.to_be_bytes());
        b[8..].copy_from_slice(&self.node.to_be_bytes());
        b
    }

    /// Parses [`Version::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Option<Version> {
        let hlc = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let node = u32::from_be_bytes(b.get(8..12)?.try_into().ok()?);
        Some(Version { hlc: Hlc(hlc), node })
    }
}

/// A node's clock. Thread-safe; the critical section is a few instructions.
pub struct Clock {
    node: u32,
    last: Mutex<u64>,
    now_millis: fn() -> u64,
}

impl Clock {
    /// A clock for the node with this tag, reading the system time.
    pub fn new(node: u32) -> Clock {
        Clock::with_time_source(node, crate::time::now_millis)
    }

    /// A clock with an injected time source (for tests and simulations).
    pub fn with_time_source(node: u32, now_millis: fn() -> u64) -> Clock {
        Clock {
            node,
            last: Mutex::new(0),
            now_millis,
        }
    }

    /// This node's tag.
    pub fn node(&self) -> u32 {
        self.node
    }

    /// A new version, greater than every version this clock issued or saw.
    pub fn tick(&self) -> Version {
        let physical = Hlc::from_parts((self.now_millis)(), 0).0;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        assert!(*last < u64::MAX, "the clock only takes admitted timestamps");
        *last = if physical > *last { physical } else { *last + 1 };
        Version {
            hlc: Hlc(*last),
            node: self.node,
        }
    }

    /// Whether a peer's timestamp is close enough to this clock's wall time
    /// to be taken: at most `max_skew_ms` ahead. Anything further ahead is
    /// refused, never observed, so one node's broken or hostile clock cannot
    /// drag every other clock (and every version written after) into the
    /// future, nor push a counter to its limit where keys stop changing.
    pub fn admits(&self, seen: Hlc, max_skew_ms: u64) -> bool {
        seen.millis() <= (self.now_millis)().saturating_add(max_skew_ms)
    }

    /// Moves the clock past a timestamp received from a peer.
    pub fn observe(&self, seen: Hlc) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if seen.0 > *last {
            *last = seen.0;
        }
    }
}

/// A stable 32-bit tag for a node id (FNV-1a).
pub fn node_tag(node_id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in node_id.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frozen() -> u64 {
        1_000
    }

    #[test]
    fn ticks_are_monotonic_even_when_time_stands_still() {
        let c = Clock::with_time_source(7, frozen);
        let a = c.tick();
        let b = c.tick();
        assert!(b > a);
        assert_eq!(a.hlc.millis(), 1_000);
        assert_eq!(b.node, 7);
    }

    #[test]
    fn observing_a_future_timestamp_moves_the_clock() {
        let c = Clock::with_time_source(1, frozen);
        let future = Hlc::from_parts(5_000, 3);
        c.observe(future);
        assert!(c.tick().hlc > future);
    }

    #[test]
    fn timestamps_beyond_the_skew_bound_are_not_admitted() {
        let c = Clock::with_time_source(1, frozen);
        let now = frozen();
        assert!(c.admits(Hlc::from_parts(now + 60_000, 0xffff), 60_000));
        assert!(!c.admits(Hlc::from_parts(now + 60_001, 0), 60_000));
        assert!(!c.admits(Hlc(u64::MAX), 60_000));
        assert!(c.admits(Hlc(0), 60_000), "the past is always admitted");
    }

    #[test]
    fn version_bytes_sort_like_versions() {
        let a = Version { hlc: Hlc(5), node: 9 };
        let b = Version {
            hlc: Hlc(5),
            node: 10,
        };
        let c = Version { hlc: Hlc(6), node: 0 };
        assert!(a.to_bytes() < b.to_bytes() && b.to_bytes() < c.to_bytes());
        assert_eq!(Version::from_bytes(&b.to_bytes()), Some(b));
    }
}
