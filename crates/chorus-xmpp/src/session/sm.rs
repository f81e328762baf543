//! XEP-0198 stream management: acknowledgements and resumption.

use super::{Output, Session, State};
use crate::ns;
use crate::xml::{self, ElementExt};
use minidom::Element;
use std::collections::VecDeque;

/// Stream management state of a session.
#[derive(Debug)]
pub struct SmState {
    /// Resumption id, if resumption was enabled.
    pub id: Option<String>,
    /// Whether the session may be resumed after a disconnect.
    pub resumable: bool,
    h_in: u32,
    h_out: u32,
    unacked: VecDeque<(u32, Element)>,
    max: usize,
}

impl SmState {
    fn new(id: Option<String>, max: usize) -> SmState {
        SmState {
            resumable: id.is_some(),
            id,
            h_in: 0,
            h_out: 0,
            unacked: VecDeque::new(),
            max,
        }
    }

    /// Counts a stanza received from the client.
    pub fn received(&mut self) {
        self.h_in = self.h_in.wrapping_add(1);
    }

    /// Records a stanza sent to the client.
    pub fn sent(&mut self, el: Element) {
        self.h_out = self.h_out.wrapping_add(1);
        self.unacked.push_back((self.h_out, el));
    }

    /// Drops everything the client acknowledged with `h`.
    fn acked(&mut self, h: u32) -> bool {
        // `h` may not exceed what we sent (mod 2^32).
        if self.h_out.wrapping_sub(h) > self.unacked.len() as u32 {
            return false;
        }
        while let Some((n, _)) = self.unacked.front() {
            if h.wrapping_sub(*n) < u32::MAX / 2 {
                self.unacked.pop_front();
            } else {
                break;
            }
        }
        true
    }

    /// Whether too many stanzas await acknowledgement.
    fn overflowing(&self) -> bool {
        self.unacked.len() > self.max
    }

    /// The stanzas never acknowledged.
    pub fn into_unacked(self) -> Vec<Element> {
        self.unacked.into_iter().map(|(_, e)| e).collect()
    }

    /// Unacknowledged stanzas waiting (for ack requests).
    pub fn pending(&self) -> usize {
        self.unacked.len()
    }
}

impl Session {
    pub(super) fn on_sm(&mut self, el: &Element) {
        match el.name() {
            "enable" => {
                if self.sm.is_some() || !self.ctx.config.stream_management.enabled {
                    let f =
                        xml::new("failed", ns::SM).with_child(xml::new("unexpected-request", ns::STANZAS));
                    return self.out.push(Output::Element(f));
                }
                let resume = matches!(el.attr("resume"), Some("true" | "1"));
                let id = resume.then(super::random_id);
                let mut enabled = xml::new("enabled", ns::SM);
                if let Some(id) = &id {
                    enabled.put_attr("id", id.clone());
                    enabled.put_attr("resume", "true");
                    enabled.put_attr(
                        "max",
                        self.ctx.config.stream_management.resume_timeout_secs.to_string(),
                    );
                }
                self.sm = Some(SmState::new(
                    id,
                    self.ctx.config.stream_management.unacked_stanzas_max,
                ));
                self.out.push(Output::Element(enabled));
            }
            "r" => {
                if let Some(sm) = &self.sm {
                    let a = xml::new("a", ns::SM).with_attr("h", sm.h_in.to_string());
                    self.out.push(Output::Element(a));
                }
            }
            "a" => {
                let h = el.attr("h").and_then(|h| h.parse::<u32>().ok());
                let ok = match (self.sm.as_mut(), h) {
                    (Some(sm), Some(h)) => sm.acked(h),
                    _ => false,
                };
                if !ok {
                    self.stream_error("undefined-condition", Some("invalid acknowledgement"));
                }
            }
            _ => self.stream_error("unsupported-stanza-type", None),
        }
    }

    /// Asks the client for an acknowledgement if stanzas are pending; ends
    /// the stream if it lets too many pile up. Called by the driver's timer.
    pub fn on_ack_timer(&mut self) {
        let Some(sm) = &self.sm else { return };
        if sm.overflowing() {
            return self.stream_error("policy-violation", Some("too many unacknowledged stanzas"));
        }
        if sm.pending() > 0 {
            self.out.push(Output::Element(xml::new("r", ns::SM)));
        }
    }

    /// Stanzas sent to the client that it has not acknowledged yet.
    pub fn unacked(&self) -> usize {
        self.sm.as_ref().map_or(0, |s| s.pending())
    }

    /// Whether an ack request is due because many stanzas are pending.
    pub fn wants_ack_request(&self) -> bool {
        self.sm
            .as_ref()
            .is_some_and(|s| s.pending() > 0 && s.pending() % 16 == 0)
    }

    pub(super) fn on_resume(&mut self, el: &Element) {
        let previd = el.attr("previd").unwrap_or_default().to_owned();
        let h = el.attr("h").and_then(|h| h.parse::<u32>().ok());
        let failed = |s: &mut Session| {
            let f = xml::new("failed", ns::SM).with_child(xml::new("item-not-found", ns::STANZAS));
            s.out.push(Output::Element(f));
        };
        let Some(h) = h else { return failed(self) };
        let Some(mut parked) = self.ctx.parked.take(&previd) else {
            return failed(self);
        };
        if parked.session.user != self.user {
            // Someone else's session: put it back untouched.
            self.ctx.parked.park(previd, parked);
            return failed(self);
        }
        let old = &mut parked.session;
        let ok = old.sm.as_mut().is_some_and(|sm| sm.acked(h));
        if !ok {
            super::finish_parked(parked);
            return failed(self);
        }
        old.transport = self.transport;
        old.peer = self.peer;
        old.secure = self.secure;
        old.stream_open = true;
        old.closed = false;
        old.out.clear();
        let h_in = old.sm.as_ref().map(|s| s.h_in).unwrap_or(0);
        let resumed = xml::new("resumed", ns::SM)
            .with_attr("previd", previd)
            .with_attr("h", h_in.to_string());
        old.out.push(Output::Element(resumed));
        let retransmit: Vec<Element> = old
            .sm
            .as_mut()
            .map(|s| s.unacked.drain(..).map(|(_, e)| e).collect())
            .unwrap_or_default();
        if let Some(sm) = old.sm.as_mut() {
            sm.h_out = sm.h_out.wrapping_sub(retransmit.len() as u32);
        }
        for e in retransmit {
            old.send(e);
        }
        debug_assert_eq!(old.state, State::Bound);
        tracing::debug!(jid = %old.full(), "session resumed");
        self.closed = true;
        self.resumed = Some(parked);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_drop_acknowledged_prefix() {
        let mut s = SmState::new(Some("x".into()), 10);
        for _ in 0..5 {
            s.sent(xml::new("message", ns::CLIENT));
        }
        assert!(s.acked(3));
        assert_eq!(s.pending(), 2);
        assert!(!s.acked(9), "acknowledging more than was sent is an error");
        assert!(s.acked(5));
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn counters_wrap() {
        let mut s = SmState::new(None, 10);
        s.h_out = u32::MAX - 1;
        s.sent(xml::new("message", ns::CLIENT));
        s.sent(xml::new("message", ns::CLIENT));
        s.sent(xml::new("message", ns::CLIENT));
        assert!(s.acked(0));
        assert_eq!(s.pending(), 1);
    }
}
