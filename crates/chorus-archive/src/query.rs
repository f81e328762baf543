//! History queries over the archive's indexes: XEP-0313 pages for a user
//! or room (with/start/end/ids/full-text filters, the after-id/before-id
//! range, XEP-0059 paging both ways), merged with records still waiting in
//! the local spool so a user always sees what they just sent. Results are
//! in archive time order: server timestamp, then archive position; spooled
//! records, which have no position yet, sort after committed ones of the
//! same millisecond, in the order the node accepted them.

use crate::state_machine::{ArchiveStateMachine, be_u64};
use crate::view::View;
use chorus_core::archive::{ArchiveError, MamPage, MamQuery, Record, RecordKind, bare, matches};
use rocksdb::{Direction, IteratorMode};

/// Sort key of a result: stamp, position, id.
type Key = (u64, u64, String);

/// Spooled records sort after every committed position, by spool sequence.
const SPOOLED: u64 = 1 << 63;

fn key_of(pos: u64, r: &Record) -> Key {
    (r.stamp_ms, pos, r.id.clone())
}

/// The sort key of a spooled record (its id ends with its spool sequence).
fn spooled_key(r: &Record) -> Key {
    let seq =
        r.id.rsplit('-')
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
    key_of(SPOOLED | (seq & (SPOOLED - 1)), r)
}

fn unavailable(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Unavailable(e.to_string())
}

/// Exclusive bounds on sort keys.
#[derive(Default)]
struct Bounds {
    above: Option<Key>,
    below: Option<Key>,
}

impl Bounds {
    fn admits(&self, k: &Key) -> bool {
        self.above.as_ref().is_none_or(|a| k > a) && self.below.as_ref().is_none_or(|b| k < b)
    }
    fn raise(&mut self, k: Key) {
        if self.above.as_ref().is_none_or(|a| k > *a) {
            self.above = Some(k);
        }
    }
    fn lower(&mut self, k: Key) {
        if self.below.as_ref().is_none_or(|b| k < *b) {
            self.below = Some(k);
        }
    }
}

impl ArchiveStateMachine {
    /// One page of `q` from the committed archive merged with `spooled`
    /// (read from the spool before this call: the spool drops a record only
    /// after it is applied, so every record is in one or the other).
    pub fn mam(&self, q: &MamQuery, spooled: &[Record]) -> Result<MamPage, ArchiveError> {
        self.mam_observed(q, spooled, &mut || {})
    }

    /// [`ArchiveStateMachine::mam`], running `between` after the bounds are
    /// known and before the scan (tests apply records there).
    pub(crate) fn mam_observed(
        &self,
        q: &MamQuery,
        spooled: &[Record],
        between: &mut dyn FnMut(),
    ) -> Result<MamPage, ArchiveError> {
        let view = View::new(self);
        // Spooled records the view does not hold; one it holds is taken
        // from the view, and nothing applied later is seen at all.
        let mut pending: Vec<&Record> = Vec::new();
        for r in spooled {
            if view.position_of(&r.id).map_err(unavailable)?.is_none() {
                pending.push(r);
            }
        }
        let backward = q.before.is_some() || q.last_page;
        let mut bounds = Bounds::default();
        for (id, raise) in [
            (&q.after_id, true),
            (&q.before_id, false),
            (&q.after, true),
            (&q.before, false),
        ] {
            let Some(id) = id else { continue };
            let k = cursor(&view, q, id, &pending)?;
            if raise { bounds.raise(k) } else { bounds.lower(k) }
        }
        between();
        let want = q.max + 1;
        let mut found: Vec<(Key, Record)> = Vec::new();
        if q.ids.is_empty() {
            scan(&view, q, backward, &bounds, want, &mut found)?;
        } else {
            for id in &q.ids {
                let hit = match view.record_by_id(id).map_err(unavailable)? {
                    Some((p, r)) => Some((key_of(p, &r), r)),
                    None => pending
                        .iter()
                        .find(|r| r.id == *id)
                        .map(|r| (spooled_key(r), (*r).clone())),
                };
                match hit {
                    Some((k, r)) if in_archive(q, &r) => {
                        if matches(q, &r) && bounds.admits(&k) {
                            found.push((k, r));
                        }
                    }
                    _ => return Err(ArchiveError::NotFound(id.clone())),
                }
            }
        }
        for r in pending {
            let k = spooled_key(r);
            if matches(q, r) && bounds.admits(&k) && !found.iter().any(|(_, f)| f.id == r.id) {
                found.push((k, r.clone()));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        if backward {
            found.reverse();
        }
        let complete = found.len() <= q.max;
        found.truncate(q.max);
        if backward {
            found.reverse();
        }
        Ok(MamPage {
            records: found.into_iter().map(|(_, r)| r).collect(),
            complete,
        })
    }
}

/// The sort key of an id used as a cursor or range bound; the id must name
/// a message in the queried archive (another user's message is as unknown
/// as a made-up id).
fn cursor(view: &View, q: &MamQuery, id: &str, pending: &[&Record]) -> Result<Key, ArchiveError> {
    if let Some((p, r)) = view.record_by_id(id).map_err(unavailable)?
        && in_archive(q, &r)
    {
        return Ok(key_of(p, &r));
    }
    pending
        .iter()
        .find(|r| r.id == id && in_archive(q, r))
        .map(|r| spooled_key(r))
        .ok_or_else(|| ArchiveError::NotFound(id.to_owned()))
}

/// Walks the owner's (or owner-with) index in the paging direction,
/// collecting up to `want` matching records within the bounds.
fn scan(
    view: &View,
    q: &MamQuery,
    backward: bool,
    bounds: &Bounds,
    want: usize,
    found: &mut Vec<(Key, Record)>,
) -> Result<(), ArchiveError> {
    let prefix = match &q.with {
        Some(w) => crate::layout::pair_prefix(&q.owner, bare(w)),
        None => [b"u", q.owner.as_bytes(), b"\0"].concat(),
    };
    let tail = |stamp: u64, pos: u64| [prefix.as_slice(), &stamp.to_be_bytes(), &pos.to_be_bytes()].concat();
    let mut lo = q.start_ms.unwrap_or(0);
    let mut hi = q.end_ms.unwrap_or(u64::MAX);
    if let Some(a) = &bounds.above {
        lo = lo.max(a.0);
    }
    if let Some(b) = &bounds.below {
        hi = hi.min(b.0);
    }
    if lo > hi {
        return Ok(());
    }
    let (from, dir) = if backward {
        (tail(hi, u64::MAX), Direction::Reverse)
    } else {
        (tail(lo, 0), Direction::Forward)
    };
    for item in view.index(IteratorMode::From(&from, dir)) {
        let (k, _) = item.map_err(unavailable)?;
        if !k.starts_with(&prefix) || k.len() != prefix.len() + 16 {
            break;
        }
        let stamp = be_u64(&k[prefix.len()..prefix.len() + 8]).map_err(unavailable)?;
        let pos = be_u64(&k[prefix.len() + 8..]).map_err(unavailable)?;
        if stamp < lo || stamp > hi {
            break;
        }
        let Some(r) = view.record_at(pos).map_err(unavailable)? else {
            continue;
        };
        let key = key_of(pos, &r);
        if bounds.admits(&key) && matches(q, &r) {
            found.push((key, r));
            if found.len() >= want {
                break;
            }
        }
    }
    Ok(())
}

/// Whether a record belongs to the queried archive at all (a message the
/// owner took part in), whatever the other filters say.
fn in_archive(q: &MamQuery, r: &Record) -> bool {
    r.kind == RecordKind::Message && r.participants().contains(&q.owner)
}

#[cfg(test)]
mod tests;
