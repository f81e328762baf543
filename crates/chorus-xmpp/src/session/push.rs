//! XEP-0357 push notifications, the client's side: enabling and disabling
//! a push service for the account. Only a configured component may be a
//! push service (the firm's IM does not federate).

use super::Session;
use crate::ns;
use crate::push::{NS_PUSH, PUSH_SETTING, Registration, registrations};
use crate::xml::{self, ElementExt};
use minidom::Element;

/// Longest node name accepted.
const PUSH_NODE_BYTES_MAX: usize = 1024;

impl Session {
    /// `<enable/>` or `<disable/>` in `urn:xmpp:push:0`.
    pub(super) fn on_push(&mut self, iq: &Element, op: &Element) {
        if !self.ctx.config.push.enabled {
            return self.send(xml::error_reply(iq, "cancel", "service-unavailable"));
        }
        let service = op.attr("jid").and_then(|j| jid::Jid::new(j).ok());
        let Some(service) = service else {
            return self.send(xml::error_reply(iq, "modify", "bad-request"));
        };
        let node = op.attr("node").unwrap_or_default().to_owned();
        let user = self.user().to_owned();
        let mut regs = registrations(&self.ctx, &user);
        if op.name() == "disable" {
            regs.retain(|r| !(r.jid == service.to_string() && (node.is_empty() || r.node == node)));
        } else {
            if node.is_empty() || node.len() > PUSH_NODE_BYTES_MAX {
                return self.send(xml::error_reply(iq, "modify", "bad-request"));
            }
            if !self.ctx.config.components.serves(service.domain().as_str()) {
                return self.send(xml::error_reply(iq, "cancel", "not-acceptable"));
            }
            regs.retain(|r| !(r.jid == service.to_string() && r.node == node));
            if regs.len() >= self.ctx.config.push.registrations_per_user_max {
                return self.send(xml::error_reply(iq, "wait", "resource-constraint"));
            }
            let options = op
                .get_child("x", ns::DATA)
                .map(|x| x.to_xml())
                .filter(|x| x.len() <= self.ctx.config.limits.pep_item_bytes_max);
            regs.push(Registration {
                jid: service.to_string(),
                node,
                options,
            });
        }
        let json = serde_json::to_string(&regs).unwrap_or_default();
        match self.ctx.store.set_setting(&user, PUSH_SETTING, &json) {
            Ok(()) => self.send(xml::iq_result(iq)),
            Err(_) => self.send(xml::error_reply(iq, "wait", "internal-server-error")),
        }
    }

    /// Whether `el` is a push enable or disable request.
    pub(super) fn is_push_op(el: &Element) -> bool {
        el.is("enable", NS_PUSH) || el.is("disable", NS_PUSH)
    }
}
