//! XEP-0352 client state indication: while the client says it is
//! inactive, presence updates are held (the newest per sender) and
//! delivered together when it is active again or a message arrives.
//! Routed stanzas pass through here on their way to the client.

use super::Session;
use crate::ns;
use minidom::Element;

/// CSI-buffered presence updates kept at most.
const CSI_BUFFER_MAX: usize = 1000;

impl Session {
    pub(super) fn on_csi(&mut self, el: &Element) {
        match el.name() {
            "inactive" => self.csi_inactive = true,
            "active" => {
                self.csi_inactive = false;
                self.flush_csi();
            }
            _ => {}
        }
    }

    pub(super) fn flush_csi(&mut self) {
        let buffered: Vec<Element> = self.csi_buffer.drain().map(|(_, e)| e).collect();
        for p in buffered {
            self.send(p);
        }
    }

    pub(super) fn deliver_routed(&mut self, el: Element) {
        if !self.pep_event_wanted(&el) {
            return;
        }
        if el.name() == "presence" && !self.first_prompt(&el) {
            return;
        }
        if self.csi_inactive && el.name() == "presence" {
            if self.csi_buffer.len() >= CSI_BUFFER_MAX {
                self.flush_csi();
            }
            let key = el.attr("from").unwrap_or_default().to_owned();
            self.csi_buffer.insert(key, el);
            return;
        }
        if self.csi_inactive && el.name() == "message" {
            self.flush_csi();
        }
        if el.name() == "iq" && el.has_child("query", ns::ROSTER) && el.attr("type") == Some("set") {
            self.interested = true;
        }
        self.send(el);
    }
}
