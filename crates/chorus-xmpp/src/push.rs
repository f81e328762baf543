//! XEP-0357 push notifications, the sending side: when a message for a user
//! is kept offline (no session to take it, on any site), each push service
//! the user registered is told, through its component, with the summary
//! fields the configuration allows. Registrations are the user's replicated
//! settings, so a phone registered in one office is woken from any office.

use crate::component::{COMPONENT_RESOURCE, router_key};
use crate::context::Context;
use crate::ns;
use crate::router::Routed;
use crate::xml::{self, ElementExt};
use minidom::Element;
use serde::{Deserialize, Serialize};

/// XEP-0357 namespace.
pub const NS_PUSH: &str = "urn:xmpp:push:0";
/// The settings entry holding a user's registrations.
pub const PUSH_SETTING: &str = "push";
/// Longest body text put in a notification.
const BODY_CHARS_MAX: usize = 256;

/// One registered push service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The app server's JID (a component's domain, or a JID in it).
    pub jid: String,
    /// The node the app server gave the device.
    pub node: String,
    /// The publish-options form the client sent (its secret), serialized.
    pub options: Option<String>,
}

/// A user's registrations.
pub fn registrations(ctx: &Context, user: &str) -> Vec<Registration> {
    ctx.store
        .setting(user, PUSH_SETTING)
        .ok()
        .flatten()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

/// `msg` was queued to `user`'s `resource`: if that session is parked
/// (XEP-0198: a phone whose app the OS suspended), wake their devices;
/// true if it did.
pub fn queued_message(ctx: &Context, user: &str, resource: &str, msg: &Element) -> bool {
    // Called for every delivered message: the common case (nothing to
    // push, nobody parked) must not look the user's sessions up.
    let wakes = ctx.config.push.enabled && msg.get_child("body", ns::CLIENT).is_some();
    if !wakes || ctx.parked.is_empty() {
        return false;
    }
    let parked = ctx
        .router
        .resources(user)
        .iter()
        .any(|r| r.resource == resource && r.node.is_none() && ctx.parked.holds(r.session_id));
    if parked {
        offline_message(ctx, user, msg);
    }
    parked
}

/// `msg` was kept offline for `user`: wake their devices.
pub fn offline_message(ctx: &Context, user: &str, msg: &Element) {
    if !ctx.config.push.enabled || msg.get_child("body", ns::CLIENT).is_none() {
        return;
    }
    let regs = registrations(ctx, user);
    if regs.is_empty() {
        return;
    }
    let count = ctx.store.offline_count(user).unwrap_or(1);
    let summary = summary(ctx, msg, count);
    let from = format!("{user}@{}", ctx.domain);
    for reg in regs {
        let Ok(to) = jid::Jid::new(&reg.jid) else { continue };
        let mut publish = xml::new("pubsub", ns::PUBSUB).with_child(
            xml::new("publish", ns::PUBSUB)
                .with_attr("node", reg.node.clone())
                .with_child(
                    xml::new("item", ns::PUBSUB)
                        .with_child(xml::new("notification", NS_PUSH).with_child(summary.clone())),
                ),
        );
        if let Some(form) = reg
            .options
            .as_deref()
            .and_then(|o| crate::parser::parse_frame(o.as_bytes(), o.len() * 2 + 1024, 16).ok())
        {
            publish.append_child(xml::new("publish-options", ns::PUBSUB).with_child(form));
        }
        let iq = xml::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", format!("push-{}", crate::session::random_id()))
            .with_attr("from", from.clone())
            .with_attr("to", reg.jid.clone())
            .with_child(publish);
        let key = router_key(to.domain().as_str());
        match ctx.router.deliver(&key, COMPONENT_RESOURCE, Routed::stanza(iq)) {
            Ok(()) => metrics::counter!("chorus_push_sent_total").increment(1),
            Err(e) => tracing::debug!(service = %reg.jid, error = %e, "push service not reachable"),
        }
    }
}

/// The `urn:xmpp:push:summary` form.
fn summary(ctx: &Context, msg: &Element, count: usize) -> Element {
    let field = |var: &str, value: String| {
        xml::new("field", ns::DATA)
            .with_attr("var", var)
            .with_child(xml::new("value", ns::DATA).with_text(value))
    };
    let mut x = xml::new("x", ns::DATA)
        .with_attr("type", "submit")
        .with_child(field("FORM_TYPE", "urn:xmpp:push:summary".into()))
        .with_child(field("message-count", count.to_string()));
    if ctx.config.push.include_sender
        && let Some(from) = msg.attr("from")
    {
        x.append_child(field("last-message-sender", from.to_owned()));
    }
    if ctx.config.push.include_body
        && let Some(body) = msg.get_child("body", ns::CLIENT)
    {
        x.append_child(field(
            "last-message-body",
            body.text().chars().take(BODY_CHARS_MAX).collect(),
        ));
    }
    x
}
