//! XEP-0114 external components: a bot, gateway or push app server
//! connects, names its domain, proves the shared secret
//! (`SHA-1(stream id + secret)`, compared in constant time) and then
//! exchanges stanzas with the domain's users.
//!
//! A connected component is bound in the router under a name no account
//! can have (`@component:<domain>`), so the cluster's session directory
//! makes it reachable from every site like any session. What it sends must
//! come from its own domain; it reaches users by the RFC 6121 rules (a
//! message to a bare JID goes to the best resources or offline).

use crate::context::Context;
use crate::ns;
use crate::parser::{StreamEvent, StreamParser};
use crate::router::Routed;
use crate::xml::{self, ElementExt};
use minidom::Element;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// XEP-0114 stream namespace.
pub const NS_COMPONENT: &str = "jabber:component:accept";
/// The router resource a component is bound under.
pub const COMPONENT_RESOURCE: &str = "component";
/// Stanzas queued towards one component.
const COMPONENT_QUEUE_MAX: usize = 4096;
/// Read buffer size, in bytes.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// The router key of a component's domain (never a valid localpart).
pub fn router_key(domain: &str) -> String {
    format!("@component:{domain}")
}

/// The shared secrets of the configured components, by domain.
pub type Secrets = HashMap<String, Vec<u8>>;

/// Serves one component connection (TLS already done by the caller, if any).
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: Arc<Context>,
    secrets: Arc<Secrets>,
    mut io: S,
    peer: std::net::SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = &ctx.config.limits;
    let mut parser = StreamParser::new(limits.stanza_bytes_max, limits.xml_depth_max);
    let mut state = Handshake::default();
    let handshake_by = tokio::time::Instant::now() + Duration::from_secs(limits.handshake_timeout_secs);
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    let (tx, mut rx) = crate::queue::channel::<Routed>(COMPONENT_QUEUE_MAX);
    let session_id = ctx.next_session_id();
    let mut bound: Option<String> = None;
    loop {
        // Until the handshake, the connection has the handshake timeout;
        // after it, a component may stay quiet as long as it likes.
        let read_by = match bound {
            None => handshake_by,
            Some(_) => tokio::time::Instant::now() + Duration::from_secs(86_400),
        };
        let out = tokio::select! {
            r = tokio::time::timeout_at(read_by, io.read(&mut buf)) => match r {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => state.on_bytes(&secrets, &mut parser, &buf[..n]),
                Err(_) if bound.is_none() => Step::fail("connection-timeout"),
                Err(_) => Step::default(),
            },
            Some(item) = rx.recv(), if bound.is_some() => match item {
                Routed::Stanza(el) => Step::write(renamed_ns(&el, ns::CLIENT, NS_COMPONENT).to_xml()),
                Routed::Conflict => Step::fail("conflict"),
                Routed::Revoked(_) => Step::fail("policy-violation"),
            },
            _ = shutdown.wait_for(|s| *s) => Step::fail("system-shutdown"),
        };
        if let Some(domain) = out.bind {
            let key = router_key(&domain);
            if let Ok(Some(old)) = ctx
                .router
                .bind(&key, COMPONENT_RESOURCE, session_id, tx.clone(), 1)
            {
                tracing::info!(%domain, replaced = old, "component reconnected");
            }
            ctx.router
                .update(&key, COMPONENT_RESOURCE, session_id, &mut |i| i.available = true);
            tracing::info!(%domain, %peer, "component connected");
            bound = Some(key);
        }
        for el in out.deliver {
            from_component(&ctx, el);
        }
        let write = tokio::time::timeout(
            Duration::from_secs(limits.write_timeout_secs),
            io.write_all(out.bytes.as_bytes()),
        );
        if !out.bytes.is_empty() && !matches!(write.await, Ok(Ok(()))) {
            break;
        }
        if out.close {
            let _ = io.shutdown().await;
            break;
        }
    }
    if let Some(key) = bound {
        ctx.router.unbind(&key, COMPONENT_RESOURCE, session_id);
        tracing::info!(component = %key, "component disconnected");
    }
}

/// What one step of the connection produced.
#[derive(Default)]
struct Step {
    bytes: String,
    close: bool,
    bind: Option<String>,
    deliver: Vec<Element>,
}

impl Step {
    fn write(bytes: String) -> Step {
        Step {
            bytes,
            ..Step::default()
        }
    }

    fn fail(condition: &str) -> Step {
        let mut s = Step::write(format!("{}</stream:stream>", xml::stream_error(condition, None)));
        s.close = true;
        s
    }
}

/// The component stream's state before and after the handshake.
#[derive(Default)]
struct Handshake {
    domain: Option<String>,
    stream_id: String,
    accepted: bool,
}

impl Handshake {
    fn on_bytes(&mut self, secrets: &Secrets, parser: &mut StreamParser, data: &[u8]) -> Step {
        let events = match parser.feed(data) {
            Ok(e) => e,
            Err(e) => return Step::fail(e.condition()),
        };
        let mut step = Step::default();
        for ev in events {
            let s = match ev {
                StreamEvent::Header(attrs) => self.on_header(secrets, &attrs),
                StreamEvent::Element(el) if self.accepted => self.on_stanza(el),
                StreamEvent::Element(el) => self.on_handshake(secrets, &el),
                StreamEvent::Close => {
                    let mut s = Step::write("</stream:stream>".into());
                    s.close = true;
                    s
                }
            };
            step.bytes.push_str(&s.bytes);
            step.close |= s.close;
            step.bind = step.bind.or(s.bind);
            step.deliver.extend(s.deliver);
            if step.close {
                break;
            }
        }
        step
    }

    fn on_header(&mut self, secrets: &Secrets, attrs: &HashMap<String, String>) -> Step {
        let to = attrs.get("to").cloned().unwrap_or_default();
        self.stream_id = crate::session::random_id();
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='{NS_COMPONENT}' xmlns:stream='{}' id='{}' from='{}'>",
            ns::STREAM,
            xml::escape(&self.stream_id),
            xml::escape(&to)
        );
        if self.domain.is_some() || !secrets.contains_key(&to) {
            let mut s = Step::fail("host-unknown");
            s.bytes.insert_str(0, &header);
            return s;
        }
        self.domain = Some(to);
        Step::write(header)
    }

    fn on_handshake(&mut self, secrets: &Secrets, el: &Element) -> Step {
        let Some(domain) = self.domain.clone() else {
            return Step::fail("not-authorized");
        };
        if !el.is("handshake", NS_COMPONENT) {
            return Step::fail("not-authorized");
        }
        let Some(secret) = secrets.get(&domain) else {
            return Step::fail("not-authorized");
        };
        if !handshake_matches(&self.stream_id, secret, &el.text()) {
            metrics::counter!("chorus_component_auth_failures_total").increment(1);
            tracing::warn!(%domain, "component handshake refused");
            return Step::fail("not-authorized");
        }
        self.accepted = true;
        let mut s = Step::write(format!("<handshake xmlns='{NS_COMPONENT}'/>"));
        s.bind = Some(domain);
        s
    }

    fn on_stanza(&mut self, el: Element) -> Step {
        let domain = self.domain.clone().unwrap_or_default();
        if !matches!(el.name(), "message" | "presence" | "iq") {
            return Step::fail("unsupported-stanza-type");
        }
        let from_ok = el
            .attr("from")
            .and_then(|f| jid::Jid::new(f).ok())
            .is_some_and(|j| j.domain().as_str() == domain);
        if !from_ok {
            return Step::fail("invalid-from");
        }
        Step {
            deliver: vec![to_client_ns(&el)],
            ..Step::default()
        }
    }
}

/// Whether `answer` is the lowercase hex SHA-1 of the stream id and the
/// secret, compared without leaking where they differ.
pub fn handshake_matches(stream_id: &str, secret: &[u8], answer: &str) -> bool {
    use sha1::Digest;
    let mut h = sha1::Sha1::new();
    h.update(stream_id.as_bytes());
    h.update(secret);
    let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let got = answer.trim().to_ascii_lowercase();
    want.len() == got.len()
        && want
            .bytes()
            .zip(got.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The stanza with the component namespace turned into `jabber:client`.
fn to_client_ns(el: &Element) -> Element {
    renamed_ns(el, NS_COMPONENT, ns::CLIENT)
}

/// `el` with every element in namespace `from` moved to `to`.
fn renamed_ns(el: &Element, from: &str, to: &str) -> Element {
    let name_ns = if el.ns() == from { to.to_owned() } else { el.ns() };
    let mut out = xml::new(el.name(), &name_ns);
    for ((attr_ns, name), v) in el.attrs() {
        out.attrs_mut().insert(attr_ns.clone(), name.clone(), v.clone());
    }
    for node in el.nodes() {
        match node {
            minidom::Node::Element(c) => {
                out.append_child(renamed_ns(c, from, to));
            }
            minidom::Node::Text(t) => out.append_text(t.clone()),
        }
    }
    out
}

/// Delivers a stanza a component sent to a user of the domain, another
/// component or the server itself.
fn from_component(ctx: &Context, el: Element) {
    let Some(to) = el.attr("to").and_then(|t| jid::Jid::new(t).ok()) else {
        return;
    };
    let domain = to.domain().to_string();
    if ctx.config.components.serves(&domain) {
        let _ = ctx
            .router
            .deliver(&router_key(&domain), COMPONENT_RESOURCE, Routed::stanza(el));
        return;
    }
    if domain != ctx.domain {
        return bounce(ctx, &el, "remote-server-not-found");
    }
    let Some(user) = to.node().map(|n| n.to_string()) else {
        if el.name() == "iq" && el.has_child("ping", ns::PING) {
            let reply = xml::iq_result(&el).with_attr("from", ctx.domain.clone());
            return back(ctx, reply);
        }
        return bounce(ctx, &el, "service-unavailable");
    };
    let answer = matches!(el.attr("type"), Some("result" | "error"));
    let el = match admit_for_user(ctx, &user, el) {
        Some(el) => el,
        None => return,
    };
    match to.resource() {
        Some(r) => crate::remote::deliver_from_peer(ctx, &user, r.as_str(), el),
        // The app server's answer to a push notification (sent from the
        // account's bare JID) ends here.
        None if el.name() == "iq" && answer => {
            tracing::debug!(user = %user, answer = ?el.attr("type"), "component answered the server");
        }
        None if el.name() == "iq" => bounce(ctx, &el, "service-unavailable"),
        None => to_bare(ctx, &user, el),
    }
}

/// What a component sends a user passes the user's block list and the
/// end-to-end policy, and a message is archived like any other (with the
/// archive's stanza id) before it is delivered; `None` if it goes no
/// further (an error went back where one is due).
fn admit_for_user(ctx: &Context, user: &str, el: Element) -> Option<Element> {
    let from = el.attr("from").unwrap_or_default().to_owned();
    let blocked = ctx.store.blocklist(user).unwrap_or_default().iter().any(|b| {
        jid::Jid::new(&from)
            .is_ok_and(|j| *b == from || *b == j.to_bare().to_string() || *b == j.domain().as_str())
    });
    if blocked {
        if el.name() == "iq" {
            bounce(ctx, &el, "service-unavailable");
        }
        return None;
    }
    if el.name() != "message" || el.attr("type") == Some("error") {
        return Some(el);
    }
    if !ctx.config.policy.e2e.allowed() && crate::pep::is_encrypted_message(&el) {
        bounce(ctx, &el, "not-acceptable");
        return None;
    }
    archive_message(ctx, user, el)
}

/// Archives a component's message to `user`; `None` (and an error back)
/// if a strict archive cannot take it.
fn archive_message(ctx: &Context, user: &str, el: Element) -> Option<Element> {
    use chorus_core::archive::{ArchiveRecord, RecordKind};
    // Only the archive may stamp our stanza ids; a component's own go.
    let el = xml::without_stanza_ids_by(&el, &[&ctx.domain, &ctx.config.muc_domain()]);
    let body = el.get_child("body", ns::CLIENT).map(|b| b.text());
    if !ctx.archive.enabled() || body.is_none() {
        return Some(el);
    }
    let to_bare = format!("{user}@{}", ctx.domain);
    let record = ArchiveRecord {
        from: el.attr("from").unwrap_or_default().to_owned(),
        to: el.attr("to").unwrap_or(&to_bare).to_owned(),
        stamp_ms: chorus_core::time::now_millis(),
        xml: el.to_xml(),
        kind: RecordKind::Message,
        body,
        thread: el.get_child("thread", ns::CLIENT).map(|t| t.text()),
        room: None,
        occupants: Vec::new(),
        msg_id: el.attr("id").map(str::to_owned),
        edit: None,
    };
    match ctx.archive.append(record) {
        Ok(Some(id)) => {
            let sid = xml::new("stanza-id", ns::SID)
                .with_attr("id", id)
                .with_attr("by", to_bare);
            Some(el.with_child(sid))
        }
        Ok(None) => Some(el),
        Err(e) => {
            tracing::warn!(error = %e, "archive refused a component's message");
            bounce(ctx, &el, "service-unavailable");
            None
        }
    }
}

/// A message or presence to a user's bare JID: presence to every available
/// resource, a message to the best resources or offline.
fn to_bare(ctx: &Context, user: &str, el: Element) {
    let resources = ctx.router.resources(user);
    if el.name() == "presence" {
        for r in resources.iter().filter(|r| r.available) {
            let _ = ctx.router.deliver(user, &r.resource, Routed::stanza(el.clone()));
        }
        return;
    }
    let target = resources
        .iter()
        .filter(|r| r.available && r.priority >= 0)
        .max_by_key(|r| r.priority)
        .map(|r| r.resource.clone())
        .unwrap_or_default();
    crate::remote::deliver_from_peer(ctx, user, &target, el);
}

/// An error back to the component that sent `el` (never for an error).
fn bounce(ctx: &Context, el: &Element, condition: &str) {
    if el.attr("type") == Some("error") || el.name() == "presence" {
        return;
    }
    back(ctx, xml::error_reply(el, "cancel", condition));
}

fn back(ctx: &Context, reply: Element) {
    let Some(to) = reply.attr("to").and_then(|t| jid::Jid::new(t).ok()) else {
        return;
    };
    let key = router_key(to.domain().as_str());
    let _ = ctx
        .router
        .deliver(&key, COMPONENT_RESOURCE, Routed::stanza(reply));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_is_sha1_of_id_and_secret() {
        use sha1::Digest;
        let hex: String = sha1::Sha1::digest(b"3BF96D32secret")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(handshake_matches("3BF96D32", b"secret", &hex));
        assert!(handshake_matches("3BF96D32", b"secret", &hex.to_uppercase()));
        assert!(!handshake_matches("3BF96D32", b"secret2", &hex));
        assert!(!handshake_matches("3BF96D32", b"secret", ""));
    }

    #[test]
    fn component_stanzas_become_client_stanzas() {
        let el: Element =
            "<message xmlns='jabber:component:accept' from='bot.test' to='a@t'><body>hi</body></message>"
                .parse()
                .expect("xml");
        let c = to_client_ns(&el);
        assert!(c.is("message", ns::CLIENT));
        assert!(c.get_child("body", ns::CLIENT).is_some_and(|b| b.text() == "hi"));
    }
}
