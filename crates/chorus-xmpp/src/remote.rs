//! Entry points for the cluster layer: stanzas arriving from other nodes,
//! presence changes of sessions on other nodes, and offline messages that
//! replication brought in for users online here.

use crate::context::Context;
use crate::ns;
use crate::router::{ResourceInfo, Routed};
use crate::xml::{self, ElementExt};
use minidom::Element;

/// The signal a node sends when one of its sessions takes over a full JID
/// bound on another node.
pub fn conflict_signal() -> Element {
    xml::new("conflict", ns::CHORUS_CLUSTER)
}

/// Parses a stanza received from a peer; `None` (and a log line) if broken.
pub fn parse_stanza(ctx: &Context, xml_text: &str) -> Option<Element> {
    let limits = &ctx.config.limits;
    match crate::parser::parse_frame(
        xml_text.as_bytes(),
        limits.stanza_bytes_max * 2,
        limits.xml_depth_max + 8,
    ) {
        Ok(el) => Some(el),
        Err(e) => {
            tracing::warn!(error = %e, "dropping an unparseable stanza from a peer");
            None
        }
    }
}

/// The best available resources of a user across the cluster: highest
/// non-negative priority.
fn best(resources: &[ResourceInfo]) -> Vec<&ResourceInfo> {
    let available: Vec<&ResourceInfo> = resources
        .iter()
        .filter(|r| r.available && r.priority >= 0)
        .collect();
    let top = available.iter().map(|r| r.priority).max();
    available
        .into_iter()
        .filter(|r| Some(r.priority) == top)
        .collect()
}

/// Delivers a stanza a peer routed to `user/resource` on this node. If that
/// session is gone, a message is re-routed like one to the bare JID, and
/// kept offline if nobody is available.
pub fn deliver_from_peer(ctx: &Context, user: &str, resource: &str, el: Element) {
    if el.is("conflict", ns::CHORUS_CLUSTER) {
        // A session on another node bound this full JID: ours gives way
        // (RFC 6120 section 7.7.2.2), as with a conflict on one node.
        let _ = ctx.router.deliver(user, resource, Routed::Conflict);
        return;
    }
    if ctx
        .router
        .deliver(user, resource, Routed::stanza(el.clone()))
        .is_ok()
    {
        if el.name() == "message" {
            let _ = crate::push::queued_message(ctx, user, resource, &el);
        }
        return;
    }
    if el.name() != "message" || el.attr("type") == Some("error") {
        return;
    }
    let resources = ctx.router.resources(user);
    for r in best(&resources) {
        if ctx
            .router
            .deliver(user, &r.resource, Routed::stanza(el.clone()))
            .is_ok()
        {
            let _ = crate::push::queued_message(ctx, user, &r.resource, &el);
            return;
        }
    }
    if el.has_child("body", ns::CLIENT) || el.has_child("subject", ns::CLIENT) {
        let msg = chorus_core::store::OfflineMessage {
            stamp_ms: chorus_core::time::now_millis(),
            xml: el.to_xml(),
        };
        match ctx
            .store
            .push_offline(user, &msg, ctx.config.limits.offline_messages_max)
        {
            Ok(()) => crate::push::offline_message(ctx, user, &el),
            Err(e) => tracing::warn!(error = %e, user, "message from a peer could not be kept offline"),
        }
    }
}

/// A session on another node appeared, changed or vanished without being
/// able to say so itself (lease expiry, restart, heal): tell local users
/// who are subscribed to its presence, or share a group with it, unless
/// either blocks the other. `presence` is `None` for gone.
pub fn remote_presence_changed(ctx: &Context, user: &str, resource: &str, presence: Option<Element>) {
    let bare = format!("{user}@{}", ctx.domain);
    let full = format!("{bare}/{resource}");
    let mut p = presence.unwrap_or_else(|| xml::new("presence", ns::CLIENT).with_attr("type", "unavailable"));
    p.put_attr("from", full);
    let shared = ctx.shared.roster();
    for (local_user, info) in ctx.router.local_resources() {
        if !info.available {
            continue;
        }
        let subscribed = shared.are_fellows(&local_user, user)
            || ctx
                .store
                .roster_item(&local_user, &bare)
                .ok()
                .flatten()
                .is_some_and(|i| i.subscription.has_to());
        if subscribed && !crate::shared::blocked_either(ctx, &local_user, user) {
            let mut p = p.clone();
            p.put_attr("to", format!("{local_user}@{}", ctx.domain));
            let _ = ctx.router.deliver(&local_user, &info.resource, Routed::stanza(p));
        }
    }
}

/// Offline messages for `user` arrived by replication. If the user is
/// online and this node holds the session that should get them (the best
/// available resource; ties go to the node with the smallest id), deliver
/// them now with their delay stamps.
pub fn flush_offline(ctx: &Context, user: &str) {
    let resources = ctx.router.resources(user);
    let best = best(&resources);
    let me = ctx.config.cluster.node_id.as_str();
    let node_of = |r: &ResourceInfo| r.node.clone().unwrap_or_else(|| me.to_owned());
    let Some(target) = best.iter().min_by_key(|r| node_of(r)) else {
        return;
    };
    if target.node.is_some() {
        return;
    }
    let msgs = match ctx.store.take_offline(user) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "cannot read offline messages");
            return;
        }
    };
    for m in msgs {
        if let Some(mut el) = parse_stanza(ctx, &m.xml) {
            if !el.has_child("delay", ns::DELAY) {
                el.append_child(
                    xml::new("delay", ns::DELAY)
                        .with_attr("from", ctx.domain.clone())
                        .with_attr("stamp", chorus_core::time::xep0082(m.stamp_ms)),
                );
            }
            let _ = ctx.router.deliver(user, &target.resource, Routed::stanza(el));
        }
    }
}

/// A subscription request from `contact` (a bare JID) to `user` reached
/// this node by replication of the user's roster. Tell the user's available
/// sessions here: the requester's node may not have seen them yet. (A
/// session may then see the request twice, which RFC 6121 allows: servers
/// redeliver pending requests at every login.)
pub fn subscription_requested(ctx: &Context, user: &str, contact: &str) {
    let bare = format!("{user}@{}", ctx.domain);
    for r in ctx.router.local_resources() {
        if r.0 == user && r.1.available {
            let p = xml::new("presence", ns::CLIENT)
                .with_attr("type", "subscribe")
                .with_attr("from", contact)
                .with_attr("to", bare.clone());
            let _ = ctx.router.deliver(user, &r.1.resource, Routed::stanza(p));
        }
    }
}
