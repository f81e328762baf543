//! XEP-0215 external service discovery: the STUN and TURN servers of
//! `[extdisco]`, for calls. A TURN server with a shared secret is given
//! credentials valid for `credentials_ttl_secs` from this request, in the
//! TURN REST form coturn checks (`expiry:user`, HMAC-SHA1 of it with the
//! secret, base64), so a client never holds a lasting TURN password.

use super::Session;
use crate::ns;
use crate::xml::{self, ElementExt};
use base64::Engine as _;
use chorus_core::config::ExternalService;
use hmac::{Hmac, Mac};
use minidom::Element;

impl Session {
    /// `<services/>` (all, or of one `type`) or `<credentials/>` for one
    /// service, asked of the server.
    pub(super) fn on_extdisco(&mut self, iq: &Element, q: &Element) {
        let now_ms = chorus_core::time::now_millis();
        let wanted = |s: &ExternalService, want: &Element| {
            want.attr("type").is_none_or(|t| t == s.kind) && want.attr("host").is_none_or(|h| h == s.host)
        };
        let services = &self.ctx.config.extdisco.services;
        let mut out = xml::new(q.name(), ns::EXTDISCO);
        if q.name() == "services" {
            for (i, s) in services.iter().enumerate().filter(|(_, s)| wanted(s, q)) {
                out.append_child(self.service_element(i, s, now_ms));
            }
            return self.send(xml::iq_result(iq).with_child(out));
        }
        let Some(want) = q.get_child("service", ns::EXTDISCO) else {
            return self.send(xml::error_reply(iq, "modify", "bad-request"));
        };
        let found = services
            .iter()
            .enumerate()
            .find(|(_, s)| wanted(s, want) && want.attr("host").is_some());
        match found {
            Some((i, s)) => {
                out.append_child(self.service_element(i, s, now_ms));
                self.send(xml::iq_result(iq).with_child(out));
            }
            None => self.send(xml::error_reply(iq, "cancel", "item-not-found")),
        }
    }

    fn service_element(&self, i: usize, s: &ExternalService, now_ms: u64) -> Element {
        let mut e = xml::new("service", ns::EXTDISCO)
            .with_attr("type", s.kind.clone())
            .with_attr("host", s.host.clone())
            .with_attr("port", s.port.to_string());
        if let Some(t) = &s.transport {
            e = e.with_attr("transport", t.clone());
        }
        if let Some(n) = &s.name {
            e = e.with_attr("name", n.clone());
        }
        let secret = self
            .ctx
            .turn_secrets
            .get()
            .and_then(|v| v.get(i))
            .and_then(Option::as_ref);
        if let Some(secret) = secret {
            let expires_ms = now_ms + s.credentials_ttl_secs * 1000;
            let (username, password) = turn_credentials(secret, expires_ms / 1000, &self.bare());
            e = e
                .with_attr("restricted", "1")
                .with_attr("username", username)
                .with_attr("password", password)
                .with_attr("expires", chorus_core::time::xep0082(expires_ms));
        }
        e
    }
}

/// TURN REST credentials: the username carries the expiry (Unix seconds)
/// and the user, the password is base64(HMAC-SHA1(secret, username)).
pub(crate) fn turn_credentials(secret: &[u8], expiry_secs: u64, user: &str) -> (String, String) {
    let username = format!("{expiry_secs}:{user}");
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

#[cfg(test)]
mod tests {
    use super::super::tests_support::*;
    use super::*;
    use chorus_core::config::ExternalService;

    fn service(kind: &str, host: &str, secret: bool) -> ExternalService {
        ExternalService {
            kind: kind.into(),
            host: host.into(),
            port: 3478,
            transport: Some("udp".into()),
            name: None,
            secret_file: secret.then(|| "/unused".into()),
            credentials_ttl_secs: 600,
        }
    }

    #[test]
    fn turn_credentials_are_the_rest_form_coturn_checks() {
        // Computed independently: base64(HMAC-SHA1("north", username)).
        let (u, p) = turn_credentials(b"north", 1_700_000_000, "alice@chorus.test");
        assert_eq!(u, "1700000000:alice@chorus.test");
        assert_eq!(p, "0Iq/La7g3/FETByw05DTGiX7hcA=");
    }

    #[test]
    fn services_are_listed_filtered_and_turn_gets_fresh_credentials() {
        let (ctx, _) = context(|c| {
            c.extdisco.services = vec![
                service("stun", "stun.chorus.test", false),
                service("turn", "turn.chorus.test", true),
            ];
        });
        let _ = ctx.turn_secrets.set(vec![None, Some(b"s3cret".to_vec())]);
        let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
        let ask = |s: &mut Session, rx: &mut crate::queue::Receiver<crate::router::Routed>, q: &str| {
            s.on_element(parse(&format!(
                "<iq xmlns='jabber:client' type='get' id='x' to='chorus.test'>{q}</iq>"
            )));
            drain(s, rx)
                .into_iter()
                .find(|e| e.attr("id") == Some("x"))
                .expect("answer")
        };
        let all = ask(&mut a, &mut arx, "<services xmlns='urn:xmpp:extdisco:2'/>");
        let list: Vec<&Element> = all
            .get_child("services", ns::EXTDISCO)
            .expect("services")
            .children()
            .collect();
        assert_eq!(list.len(), 2, "{all:?}");
        assert_eq!(list[0].attr("username"), None, "STUN needs no credentials");
        let turn = list[1];
        let user = turn.attr("username").expect("TURN credentials");
        let (expiry, who) = user.split_once(':').expect("expiry:user");
        assert_eq!(who, "alice@chorus.test");
        let now = chorus_core::time::now_millis() / 1000;
        let expiry: u64 = expiry.parse().expect("number");
        assert!((now + 590..=now + 610).contains(&expiry), "{expiry} vs {now}");
        assert_eq!(
            turn_credentials(b"s3cret", expiry, who).1,
            turn.attr("password").unwrap_or_default()
        );
        assert_eq!(turn.attr("restricted"), Some("1"));
        // Filtered by type; credentials for one host; an unknown one.
        let turns = ask(
            &mut a,
            &mut arx,
            "<services xmlns='urn:xmpp:extdisco:2' type='stun'/>",
        );
        assert_eq!(
            turns
                .get_child("services", ns::EXTDISCO)
                .map(|s| s.children().count()),
            Some(1)
        );
        let cred = ask(
            &mut a,
            &mut arx,
            "<credentials xmlns='urn:xmpp:extdisco:2'><service type='turn' host='turn.chorus.test'/></credentials>",
        );
        assert!(cred.get_child("credentials", ns::EXTDISCO).is_some(), "{cred:?}");
        let none = ask(
            &mut a,
            &mut arx,
            "<credentials xmlns='urn:xmpp:extdisco:2'><service type='turn' host='elsewhere'/></credentials>",
        );
        assert_eq!(none.attr("type"), Some("error"));
    }
}
