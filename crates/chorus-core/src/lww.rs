//! Last-writer-wins registers with tombstones: the merge rule for every
//! replicated durable item (accounts, rosters, vCards, blocks, offline
//! messages). The greater [`Version`] wins; a deletion is a tombstone that
//! wins like any other write, so a deleted item stays deleted on every node.

use crate::hlc::Version;
use serde::{Deserialize, Serialize};

/// A replicated value or its tombstone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lww {
    /// The version of the last write.
    pub version: Version,
    /// The value, or `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

impl Lww {
    /// Merges two registers for the same key.
    pub fn merge(self, other: Lww) -> Lww {
        if other.version > self.version { other } else { self }
    }

    /// Merges an optional current register with an incoming one; returns the
    /// result and whether the incoming write changed anything.
    pub fn apply(current: Option<Lww>, incoming: Lww) -> (Lww, bool) {
        match current {
            Some(c) if c.version >= incoming.version => (c, false),
            _ => (incoming, true),
        }
    }

    /// Encodes as version bytes, a tag byte and the value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + self.value.as_ref().map_or(0, Vec::len));
        out.extend_from_slice(&self.version.to_bytes());
        match &self.value {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(v);
            }
            None => out.push(0),
        }
        out
    }

    /// Decodes [`Lww::encode`].
    pub fn decode(b: &[u8]) -> Option<Lww> {
        let version = Version::from_bytes(b)?;
        match b.get(12)? {
            1 => Some(Lww {
                version,
                value: Some(b[13..].to_vec()),
            }),
            0 if b.len() == 13 => Some(Lww { version, value: None }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use proptest::prelude::*;

    fn lww() -> impl Strategy<Value = Lww> {
        (
            0u64..20,
            0u32..3,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4)),
        )
            .prop_map(|(h, n, value)| Lww {
                version: Version { hlc: Hlc(h), node: n },
                value,
            })
    }

    /// Writes with equal versions must be equal writes (a version names one write).
    fn consistent(xs: &[&Lww]) -> bool {
        xs.iter()
            .all(|a| xs.iter().all(|b| a.version != b.version || a.value == b.value))
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in lww(), b in lww()) {
            prop_assume!(consistent(&[&a, &b]));
            prop_assert_eq!(a.clone().merge(b.clone()), b.merge(a));
        }

        #[test]
        fn merge_is_associative(a in lww(), b in lww(), c in lww()) {
            prop_assume!(consistent(&[&a, &b, &c]));
            let left = a.clone().merge(b.clone()).merge(c.clone());
            let right = a.merge(b.merge(c));
            prop_assert_eq!(left, right);
        }

        #[test]
        fn merge_is_idempotent(a in lww()) {
            prop_assert_eq!(a.clone().merge(a.clone()), a);
        }

        #[test]
        fn apply_agrees_with_merge(a in lww(), b in lww()) {
            prop_assume!(consistent(&[&a, &b]));
            let (applied, _) = Lww::apply(Some(a.clone()), b.clone());
            prop_assert_eq!(applied, a.merge(b));
        }

        #[test]
        fn any_delivery_order_converges(writes in proptest::collection::vec(lww(), 1..8), seed in any::<u64>()) {
            let refs: Vec<&Lww> = writes.iter().collect();
            prop_assume!(consistent(&refs));
            let mut shuffled = writes.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            let fold = |ws: Vec<Lww>| ws.into_iter().fold(None::<Lww>, |acc, w| Some(Lww::apply(acc, w).0));
            prop_assert_eq!(fold(writes), fold(shuffled));
        }

        #[test]
        fn encoding_roundtrips(a in lww()) {
            prop_assert_eq!(Lww::decode(&a.encode()), Some(a));
        }
    }
}
