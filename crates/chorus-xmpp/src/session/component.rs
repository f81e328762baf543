//! Stanzas from a session to an external component (XEP-0114), wherever
//! in the cluster the component is connected; a component that is not
//! connected answers `service-unavailable` through the server.

use super::Session;
use crate::component::{COMPONENT_RESOURCE, router_key};
use crate::router::Routed;
use crate::xml;
use minidom::Element;

impl Session {
    /// Routes `el` to the component serving `domain`.
    pub(super) fn route_to_component(&mut self, domain: &str, el: Element) {
        let request = match el.name() {
            "iq" => matches!(el.attr("type"), Some("get" | "set")),
            "message" => el.attr("type") != Some("error"),
            _ => false,
        };
        let sent = self.ctx.router.deliver(
            &router_key(domain),
            COMPONENT_RESOURCE,
            Routed::stanza(el.clone()),
        );
        if sent.is_err() && request {
            self.send(xml::error_reply(&el, "cancel", "service-unavailable"));
        }
    }
}
