//! The client-to-server session state machine (sans-IO).
//!
//! A [`Session`] takes parsed stream events and routed stanzas and produces
//! [`Output`]s for its transport; it never touches a socket or a timer.
//! Stream negotiation (STARTTLS, SASL, binding, stream management) lives
//! here; stanza handling lives in the sibling modules.

mod auth;
mod avatar;
mod component;
mod csi;
mod deferred;
mod edits;
mod extdisco;
mod iq;
mod last;
mod lifecycle;
mod mam;
mod message;
mod muc;
mod pep;
mod presence;
mod private;
mod push;
mod room_archive;
mod roster;
mod search;
mod shared_files;
mod sm;
mod upload;

pub use muc::occupants_gone;
pub(crate) use roster::item_element as roster_item_element;

use crate::context::{Context, ParkedSession};
use crate::ns;
use crate::router::Routed;
use crate::xml::{self, ElementExt};
use minidom::Element;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

pub use lifecycle::{ParkTimer, expire_parked, finish_parked};
pub use sm::SmState;

/// How the session's bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP, plain until STARTTLS.
    Tcp,
    /// TCP with TLS from the first byte (XEP-0368).
    DirectTls,
    /// WebSocket (RFC 7395), secured by the HTTP listener.
    WebSocket,
}

/// What the transport must write or do.
#[derive(Debug, Clone)]
pub enum Output {
    /// The server's stream header (or WebSocket `<open/>`).
    Header,
    /// A top-level element.
    Element(Element),
    /// A stream error; the transport then closes the stream.
    StreamError {
        /// RFC 6120 condition.
        condition: &'static str,
        /// Optional human-readable text.
        text: Option<String>,
    },
    /// The closing tag; then the transport closes the connection.
    Close,
    /// Write `<proceed/>`, then upgrade the connection to TLS.
    StartTls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Authenticated,
    Bound,
}

/// Queue length of a session's inbound channel.
fn queue_len(ctx: &Context) -> usize {
    ctx.config.limits.session_queue_stanzas_max
}

/// One client session.
pub struct Session {
    ctx: Arc<Context>,
    /// Unique on this node.
    pub id: u64,
    transport: Transport,
    peer: IpAddr,
    secure: bool,
    stream_id: String,
    stream_open: bool,
    state: State,
    sasl: Option<crate::sasl::Mechanism>,
    /// What the TLS channel offers for SCRAM-*-PLUS.
    channel_binding: crate::sasl::ChannelBinding,
    sasl_failures: u32,
    user: Option<String>,
    resource: Option<String>,
    out: Vec<Output>,
    restart: bool,
    tx: crate::queue::Sender<Routed>,
    rx: Option<crate::queue::Receiver<Routed>>,
    available: bool,
    priority: i8,
    directed: HashSet<String>,
    /// Rooms this session is in: room localpart → nick.
    rooms: HashMap<String, String>,
    carbons: bool,
    interested: bool,
    csi_inactive: bool,
    csi_buffer: HashMap<String, Element>,
    /// Requesters (bare JIDs) whose subscription request this session has
    /// shown: each once, whichever path brought it (see `presence.rs`).
    prompted: HashSet<String>,
    /// When this session last changed the account's password (XEP-0077).
    password_changed: Option<Instant>,
    sm: Option<SmState>,
    /// XEP-0115 capabilities and XEP-0163 interests of the client.
    pep: pep::PepSession,
    resumed: Option<ParkedSession>,
    /// A message whose archive record is not durable yet, and the input
    /// held behind it (`deferred.rs`).
    deferred: Option<Box<deferred::Deferred>>,
    closed: bool,
    /// The time now, as the driver last said ([`Session::set_now`]): the
    /// session reads no clock of its own.
    now: Instant,
}

impl Session {
    /// A new session for a connection from `peer`.
    pub fn new(ctx: Arc<Context>, transport: Transport, peer: IpAddr) -> Session {
        let (tx, rx) = crate::queue::channel(queue_len(&ctx));
        let secure = transport != Transport::Tcp;
        Session {
            id: ctx.next_session_id(),
            ctx,
            transport,
            peer,
            secure,
            stream_id: random_id(),
            stream_open: false,
            state: State::Start,
            sasl: None,
            channel_binding: crate::sasl::ChannelBinding::default(),
            sasl_failures: 0,
            user: None,
            resource: None,
            out: Vec::new(),
            restart: false,
            tx,
            rx: Some(rx),
            available: false,
            priority: 0,
            directed: HashSet::new(),
            rooms: HashMap::new(),
            carbons: false,
            interested: false,
            csi_inactive: false,
            csi_buffer: HashMap::new(),
            prompted: HashSet::new(),
            password_changed: None,
            sm: None,
            pep: pep::PepSession::default(),
            resumed: None,
            deferred: None,
            closed: false,
            now: Instant::now(),
        }
    }

    /// Tells the session the time; the driver calls it before every event.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// Takes the outputs produced so far.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    /// Whether the transport must reset its parser (stream restart).
    pub fn take_restart(&mut self) -> bool {
        std::mem::take(&mut self.restart)
    }

    /// The receiving end of this session's queue, once, after binding.
    pub fn take_rx(&mut self) -> Option<crate::queue::Receiver<Routed>> {
        if self.state == State::Bound {
            self.rx.take()
        } else {
            None
        }
    }

    /// A parked session this connection resumed; the driver switches to it.
    pub fn take_resumed(&mut self) -> Option<ParkedSession> {
        self.resumed.take()
    }

    /// Whether the stream is over.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether the client has authenticated (the connection then needs a
    /// logged-in slot).
    pub fn is_authenticated(&self) -> bool {
        self.state != State::Start
    }

    /// No logged-in slot is free for this authenticated connection.
    pub fn on_server_full(&mut self) {
        self.stream_error(
            "resource-constraint",
            Some("the server has no room for another connection"),
        );
    }

    /// A newer connection took this unauthenticated connection's place in
    /// a full pool.
    pub fn on_evicted(&mut self) {
        if self.state == State::Start {
            self.stream_error(
                "resource-constraint",
                Some("too many unauthenticated connections"),
            );
        }
    }

    /// Whether the session has bound a resource.
    pub fn is_bound(&self) -> bool {
        self.state == State::Bound
    }

    /// What the connection's TLS channel offers for channel binding (set
    /// by the transport once TLS is up; -PLUS mechanisms are offered then).
    pub fn set_channel_binding(&mut self, cb: crate::sasl::ChannelBinding) {
        self.channel_binding = cb;
    }

    /// The TLS handshake finished (after STARTTLS).
    /// The transport resets its parser itself at this point.
    pub fn on_tls_established(&mut self) {
        self.secure = true;
        self.stream_open = false;
    }

    /// The bare JID string of the authenticated user.
    fn bare(&self) -> String {
        format!("{}@{}", self.user.as_deref().unwrap_or_default(), self.ctx.domain)
    }

    /// The full JID string of the bound resource.
    fn full(&self) -> String {
        format!("{}/{}", self.bare(), self.resource.as_deref().unwrap_or_default())
    }

    fn user(&self) -> &str {
        self.user.as_deref().unwrap_or_default()
    }

    fn send(&mut self, el: Element) {
        if self.closed {
            return;
        }
        let kind = el.name().to_owned();
        let counted = matches!(kind.as_str(), "message" | "presence" | "iq");
        if counted {
            metrics::counter!("chorus_stanzas_out_total", "kind" => kind).increment(1);
            if let Some(sm) = self.sm.as_mut() {
                sm.sent(el.clone());
            }
        }
        self.out.push(Output::Element(el));
    }

    fn stream_error(&mut self, condition: &'static str, text: Option<&str>) {
        if self.closed {
            return;
        }
        if !self.stream_open {
            self.out.push(Output::Header);
            self.stream_open = true;
        }
        metrics::counter!("chorus_stream_errors_total", "condition" => condition).increment(1);
        self.out.push(Output::StreamError {
            condition,
            text: text.map(str::to_owned),
        });
        self.closed = true;
    }

    /// The peer's stream header (`on_header`, in order with held input).
    fn header(&mut self, attrs: &HashMap<String, String>) {
        self.out.push(Output::Header);
        self.stream_open = true;
        self.stream_id = random_id();
        if let Some(to) = attrs.get("to")
            && !to.eq_ignore_ascii_case(&self.ctx.domain)
        {
            return self.stream_error("host-unknown", Some("this server does not serve that domain"));
        }
        if attrs.get("version").map(String::as_str) != Some("1.0") {
            return self.stream_error("unsupported-version", Some("XMPP 1.0 is required"));
        }
        self.send_features();
    }

    /// Handles the `<open/>` frame of a WebSocket stream.
    pub fn on_ws_open(&mut self, open: &Element) {
        let attrs: HashMap<String, String> = ["to", "version"]
            .iter()
            .filter_map(|k| open.attr(*k).map(|v| (k.to_string(), v.to_string())))
            .collect();
        self.on_header(&attrs);
    }

    /// The stream id of the current stream.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    fn send_features(&mut self) {
        let mut f = xml::new("features", ns::STREAM);
        match self.state {
            State::Start if !self.secure => {
                f.append_child(xml::new("starttls", ns::TLS).with_child(xml::new("required", ns::TLS)));
            }
            State::Start => self.sasl_features(&mut f),
            State::Authenticated => {
                f.append_child(xml::new("bind", ns::BIND));
                f.append_child(
                    xml::new("session", ns::SESSION).with_child(xml::new("optional", ns::SESSION)),
                );
                if self.ctx.config.stream_management.enabled {
                    f.append_child(xml::new("sm", ns::SM));
                }
                f.append_child(xml::new("csi", ns::CSI));
                f.append_child(xml::new("ver", ns::ROSTER_VER));
                f.append_child(xml::new("sub", ns::PRE_APPROVAL));
                if let Some(c) = self.server_caps() {
                    f.append_child(c);
                }
            }
            State::Bound => {}
        }
        self.out.push(Output::Element(f));
    }

    /// One top-level element (`on_element`, in order with held input).
    fn element(&mut self, el: Element) {
        if self.closed {
            return;
        }
        if !self.stream_open {
            return self.stream_error("not-well-formed", Some("stream header expected"));
        }
        match self.state {
            State::Start => self.on_element_unauthenticated(el),
            State::Authenticated => self.on_element_authenticated(el),
            State::Bound => self.on_element_bound(el),
        }
    }

    fn on_element_unauthenticated(&mut self, el: Element) {
        if el.is("starttls", ns::TLS) && self.transport == Transport::Tcp && !self.secure {
            self.out.push(Output::StartTls);
            return;
        }
        if !self.secure {
            return self.stream_error("policy-violation", Some("STARTTLS is required"));
        }
        if el.has_ns(ns::SASL) {
            return self.on_sasl(el);
        }
        if el.is("iq", ns::CLIENT)
            && self.ctx.config.registration.enabled
            && let Some(q) = el.get_child("query", ns::REGISTER)
        {
            let q = q.clone();
            return self.on_register_unauthenticated(&el, &q);
        }
        if el.is("iq", ns::CLIENT) && matches!(el.attr("type"), Some("get" | "set")) {
            return self
                .out
                .push(Output::Element(xml::error_reply(&el, "auth", "not-authorized")));
        }
        self.stream_error("not-authorized", Some("authenticate first"))
    }

    fn on_element_authenticated(&mut self, el: Element) {
        if el.is("resume", ns::SM) {
            return self.on_resume(&el);
        }
        if el.is("enable", ns::SM) {
            let f = xml::new("failed", ns::SM).with_child(xml::new("unexpected-request", ns::STANZAS));
            return self.out.push(Output::Element(f));
        }
        if el.is("iq", ns::CLIENT) && el.attr("type") == Some("set") && el.has_child("bind", ns::BIND) {
            return self.on_bind(&el);
        }
        if el.is("iq", ns::CLIENT) && matches!(el.attr("type"), Some("get" | "set")) {
            return self
                .out
                .push(Output::Element(xml::error_reply(&el, "auth", "not-authorized")));
        }
        self.stream_error("not-authorized", Some("bind a resource first"))
    }

    fn on_bind(&mut self, iq: &Element) {
        let requested = iq
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("resource", ns::BIND))
            .map(|r| r.text())
            .filter(|r| !r.trim().is_empty());
        let resource = match requested {
            Some(r) => match jid::BareJid::new(&self.bare()).map(|b| b.with_resource_str(&r)) {
                Ok(Ok(full)) => full.resource().to_string(),
                _ => {
                    return self
                        .out
                        .push(Output::Element(xml::error_reply(iq, "modify", "bad-request")));
                }
            },
            None => format!("chorus-{}", random_id()),
        };
        let user = self.user().to_owned();
        let max = self.ctx.config.limits.sessions_per_user_max;
        match self
            .ctx
            .router
            .bind(&user, &resource, self.id, self.tx.clone(), max)
        {
            Ok(replaced) => {
                if let Some(old) = replaced {
                    // A parked session has no connection to read the
                    // conflict notice: end it here.
                    if let Some(p) = self.ctx.parked.take_session(old) {
                        finish_parked(p);
                    }
                }
            }
            Err(_) => {
                return self.out.push(Output::Element(xml::error_reply(
                    iq,
                    "cancel",
                    "resource-constraint",
                )));
            }
        }
        self.resource = Some(resource);
        self.state = State::Bound;
        let jid = xml::new("jid", ns::BIND).with_text(self.full());
        let reply = xml::iq_result(iq).with_child(xml::new("bind", ns::BIND).with_child(jid));
        self.out.push(Output::Element(reply));
    }

    fn on_element_bound(&mut self, el: Element) {
        if el.has_ns(ns::SM) {
            return self.on_sm(&el);
        }
        if el.has_ns(ns::CSI) {
            return self.on_csi(&el);
        }
        if !(el.has_ns(ns::CLIENT) && matches!(el.name(), "message" | "presence" | "iq")) {
            return self.stream_error("unsupported-stanza-type", None);
        }
        if let Some(sm) = self.sm.as_mut() {
            sm.received();
        }
        let kind = el.name().to_owned();
        metrics::counter!("chorus_stanzas_in_total", "kind" => kind.clone()).increment(1);
        if !self.ctx.user_limits.allow(self.user(), self.now) {
            metrics::counter!("chorus_rate_limited_total").increment(1);
            if kind != "presence" && el.attr("type") != Some("error") {
                let mut el = el;
                el.put_attr("from", self.full());
                self.send(xml::error_reply(&el, "wait", "resource-constraint"));
            }
            return;
        }
        let mut el = el;
        el.put_attr("from", self.full());
        if let Some(to) = el.attr("to") {
            match jid::Jid::new(to) {
                Ok(j) => {
                    let normalized = j.to_string();
                    el.put_attr("to", normalized);
                }
                Err(_) => {
                    if el.attr("type") != Some("error") {
                        self.send(xml::error_reply(&el, "modify", "jid-malformed"));
                    }
                    return;
                }
            }
        }
        match kind.as_str() {
            "message" => {
                let started = std::time::Instant::now();
                self.on_message(el);
                self.message_handled(started);
            }
            "presence" => self.on_presence(el),
            _ => self.on_iq(el),
        }
    }

    /// Handles something routed to this session by another.
    pub fn on_routed(&mut self, item: Routed) {
        match item {
            Routed::Conflict => {
                // Our resource now belongs to a newer session: end without
                // broadcasting unavailable on its behalf.
                self.resource_lost();
                self.stream_error("conflict", Some("replaced by a new connection"));
            }
            Routed::Revoked(why) => self.stream_error("policy-violation", Some(&why)),
            Routed::Stanza(el) => self.deliver_routed(*el),
        }
    }

    /// The node is shutting down: end the stream politely.
    pub fn on_shutdown(&mut self) {
        self.stream_error("system-shutdown", Some("the server is shutting down"));
    }

    /// The handshake took too long.
    pub fn on_handshake_timeout(&mut self) {
        if self.state != State::Bound {
            self.stream_error("connection-timeout", Some("authentication took too long"));
        }
    }

    /// A parse error ended the stream (`on_parse_error`).
    fn parse_error(&mut self, e: &crate::parser::ParseError) {
        self.stream_error(e.condition(), Some(&e.to_string()));
    }

    /// The client closed its stream (`on_close`).
    fn close_stream(&mut self) {
        if !self.closed {
            self.out.push(Output::Close);
            self.closed = true;
        }
        if let Some(sm) = self.sm.as_mut() {
            // A clean close ends the session: no resumption.
            sm.resumable = false;
        }
    }
}

/// A random identifier for streams, resources and resumption ids.
pub fn random_id() -> String {
    use base64::Engine;
    let bytes: [u8; 12] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod deferred_tests;
#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod muc_tests;
#[cfg(test)]
mod pep_tests;
#[cfg(test)]
mod room_archive_tests;
#[cfg(test)]
mod shared_files_tests;
#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_support;
