//! XEP-0012 last activity: the server's uptime, and for an account how
//! long ago its last resource went offline, with the status it left (only
//! to those who may see its presence). The time is recorded in the
//! replicated settings when the user's last resource goes unavailable.

use super::Session;
use crate::ns;
use crate::xml::{self, ElementExt};
use minidom::Element;
use serde::{Deserialize, Serialize};

/// The setting that keeps when the user was last seen.
const LAST_SETTING: &str = "last-activity";

/// Longest status text kept.
const STATUS_CHARS_MAX: usize = 1024;

#[derive(Serialize, Deserialize)]
struct LastSeen {
    ms: u64,
    status: String,
}

impl Session {
    /// `jabber:iq:last` to the server: seconds since this node started.
    pub(super) fn last_activity_server(&mut self, iq: &Element) {
        let secs = chorus_core::time::now_millis().saturating_sub(self.ctx.started_ms) / 1000;
        let q = xml::new("query", ns::LAST).with_attr("seconds", secs.to_string());
        self.send(xml::iq_result(iq).with_child(q));
    }

    /// `jabber:iq:last` to an account's bare JID.
    pub(super) fn last_activity_account(&mut self, iq: &Element, user: &str) {
        let me = self.user().to_owned();
        let jid = format!("{me}@{}", self.ctx.domain);
        let may = user == me
            || matches!(self.ctx.store.roster_item(user, &jid), Ok(Some(i)) if i.subscription.has_from());
        if !may {
            return self.send(xml::error_reply(iq, "auth", "forbidden"));
        }
        if self.ctx.router.resources(user).iter().any(|r| r.available) {
            let q = xml::new("query", ns::LAST).with_attr("seconds", "0");
            return self.send(xml::iq_result(iq).with_child(q));
        }
        let seen: Option<LastSeen> = self
            .ctx
            .store
            .setting(user, LAST_SETTING)
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str(&s).ok());
        let Some(seen) = seen else {
            return self.send(xml::error_reply(iq, "cancel", "item-not-found"));
        };
        let secs = chorus_core::time::now_millis().saturating_sub(seen.ms) / 1000;
        let q = xml::new("query", ns::LAST)
            .with_attr("seconds", secs.to_string())
            .with_text(seen.status);
        self.send(xml::iq_result(iq).with_child(q));
    }

    /// Records that the user went offline, if no other resource is online.
    pub(super) fn record_last_activity(&self, unavailable: &Element) {
        let user = self.user();
        let others_online = self
            .ctx
            .router
            .resources(user)
            .iter()
            .any(|r| r.available && r.session_id != self.id);
        if others_online {
            return;
        }
        let status: String = unavailable
            .get_child("status", ns::CLIENT)
            .map(|s| s.text())
            .unwrap_or_default()
            .chars()
            .take(STATUS_CHARS_MAX)
            .collect();
        let seen = LastSeen {
            ms: chorus_core::time::now_millis(),
            status,
        };
        let json = serde_json::to_string(&seen).unwrap_or_default();
        if let Err(e) = self.ctx.store.set_setting(user, LAST_SETTING, &json) {
            tracing::warn!(error = %e, "cannot record last activity");
        }
    }
}
