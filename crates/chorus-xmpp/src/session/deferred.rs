//! Messages whose archive record is accepted but not yet durable.
//!
//! A message (one-to-one, to a component, or in a room) is archived before
//! it is delivered, and its record must be on disk first (promise: an
//! acknowledged message is in the archive). The archive assigns the
//! record's id at once and hands back a wait for the group commit that
//! carries it ([`chorus_core::archive::Archive::append_deferred`]).
//! The session keeps what it will do once that wait resolves (deliver the
//! message, or refuse it if the write failed) and holds every later input
//! from the client until then, so stanzas keep their order and a stream
//! management ack never counts a message that is not durable yet. The
//! driver awaits the wait ([`Session::take_durable_wait`]) and reports the
//! outcome ([`Session::on_durable`]); no thread blocks meanwhile.
//!
//! Held input is what one read carried after the message, so it is bounded
//! by the read size.

use super::Session;
use crate::parser::ParseError;
use crate::xml;
use chorus_core::archive::{ArchiveError, Durable};
use minidom::Element;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// What the session does once a message's record is durable.
pub(super) enum Then {
    /// Deliver to a local user (see `deliver_archived`); then, if it was
    /// accepted and `carbons` is set, send the sender's other resources
    /// their sent-carbons.
    Local {
        archived: Element,
        original: Element,
        user: String,
        resource: Option<String>,
        carbons: bool,
    },
    /// Hand to an external component.
    Component {
        archived: Element,
        original: Element,
        domain: String,
    },
    /// Send a room message (or a private message in a room) to these
    /// occupants' full JIDs.
    Occupants {
        message: Element,
        to: Vec<String>,
        original: Element,
    },
}

impl Then {
    /// A room message to `to`, refused as `original` if it fails.
    pub(super) fn occupants(message: Element, to: Vec<String>, original: Element) -> Then {
        Then::Occupants {
            message,
            to,
            original,
        }
    }

    fn original(&self) -> &Element {
        match self {
            Then::Local { original, .. }
            | Then::Component { original, .. }
            | Then::Occupants { original, .. } => original,
        }
    }
}

/// Client input that arrived while a record was pending.
enum Held {
    Header(HashMap<String, String>),
    Element(Element),
    ParseError(ParseError),
    Close,
}

/// A pending record, and the input held behind it.
#[derive(Default)]
pub(super) struct Deferred {
    /// The wait, until the driver takes it.
    wait: Option<Durable>,
    /// What to do once it resolves.
    then: Option<Then>,
    /// When the pending message's handling began (for
    /// `chorus_message_handling_seconds`, recorded once it is delivered).
    started: Option<Instant>,
    /// The message's tracing span: its delivery, which happens later,
    /// stays in the message's trace (routing, a peer's delivery).
    span: Option<tracing::Span>,
    held: VecDeque<Held>,
}

impl Session {
    /// Handles the peer's stream header.
    pub fn on_header(&mut self, attrs: &HashMap<String, String>) {
        match self.deferred.as_mut() {
            Some(d) => d.held.push_back(Held::Header(attrs.clone())),
            None => self.header(attrs),
        }
    }

    /// Handles one top-level element from the client.
    pub fn on_element(&mut self, el: Element) {
        match self.deferred.as_mut() {
            Some(d) => d.held.push_back(Held::Element(el)),
            None => self.element(el),
        }
    }

    /// A parse error ended the stream (after whatever came before it).
    pub fn on_parse_error(&mut self, e: &ParseError) {
        match self.deferred.as_mut() {
            Some(d) => d.held.push_back(Held::ParseError(e.clone())),
            None => self.parse_error(e),
        }
    }

    /// The client closed its stream (after whatever came before it).
    pub fn on_close(&mut self) {
        match self.deferred.as_mut() {
            Some(d) => d.held.push_back(Held::Close),
            None => self.close_stream(),
        }
    }

    /// The wait for a message's record to become durable, once: the
    /// driver awaits it and reports the outcome with
    /// [`Session::on_durable`] before anything else reaches the session.
    pub fn take_durable_wait(&mut self) -> Option<Durable> {
        self.deferred.as_mut().and_then(|d| d.wait.take())
    }

    /// The pending record is durable (or its write failed): delivers the
    /// message (or refuses it), then handles the input held behind it
    /// until another record is pending or nothing is left.
    pub fn on_durable(&mut self, result: Result<(), ArchiveError>) {
        let then = self.deferred.as_mut().and_then(|d| d.then.take());
        let started = self.deferred.as_mut().and_then(|d| d.started.take());
        let span = self.deferred.as_mut().and_then(|d| d.span.take());
        let entered = span.as_ref().map(tracing::Span::enter);
        if let Some(then) = then {
            match result {
                Ok(()) => self.proceed(then),
                Err(e) => {
                    tracing::warn!(error = %e, "archive refused a message");
                    let refusal = xml::error_reply(then.original(), "wait", "resource-constraint");
                    self.send(refusal);
                }
            }
        }
        drop(entered);
        if let Some(started) = started {
            record_handling(started);
        }
        loop {
            let Some(d) = self.deferred.as_mut() else { return };
            if d.wait.is_some() {
                return;
            }
            let Some(next) = d.held.pop_front() else {
                self.deferred = None;
                return;
            };
            match next {
                Held::Header(attrs) => self.header(&attrs),
                Held::Element(el) => self.element(el),
                Held::ParseError(e) => self.parse_error(&e),
                Held::Close => self.close_stream(),
            }
        }
    }

    /// A client's message has been handled as far as it can be now: its
    /// handling time is recorded, or, if it waits for its record, once it
    /// is delivered.
    pub(super) fn message_handled(&mut self, started: Instant) {
        match self.deferred.as_mut().filter(|d| d.wait.is_some()) {
            Some(d) => d.started = Some(started),
            None => record_handling(started),
        }
    }

    /// Keeps `then` until `wait` resolves, and holds later input.
    pub(super) fn defer(&mut self, wait: Durable, then: Then) {
        let d = self.deferred.get_or_insert_with(Box::default);
        d.wait = Some(wait);
        d.then = Some(then);
        d.span = Some(tracing::Span::current());
    }

    fn proceed(&mut self, then: Then) {
        match then {
            Then::Local {
                archived,
                original,
                user,
                resource,
                carbons,
            } => {
                if self.deliver_archived(&archived, &user, resource.as_deref()) && carbons {
                    self.send_sent_carbons(&original);
                }
            }
            Then::Component { archived, domain, .. } => self.route_to_component(&domain, archived),
            Then::Occupants { message, to, .. } => self.send_to_occupants(&message, to),
        }
    }
}

fn record_handling(started: Instant) {
    metrics::histogram!("chorus_message_handling_seconds").record(started.elapsed().as_secs_f64());
}
