//! SASL negotiation and in-band registration before authentication.

use super::{Session, State};
use crate::ns;
use crate::sasl::{CredentialLookup, Mechanism, Step};
use crate::xml::{self, ElementExt};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chorus_core::credentials::Credentials;
use chorus_core::credentials::ScramHash;
use chorus_core::store::{Store, StoreError};
use minidom::Element;

/// SASL failures tolerated on one stream before it is closed.
const SASL_FAILURES_PER_STREAM_MAX: u32 = 5;

struct StoreLookup<'a> {
    store: &'a dyn Store,
    /// The directory that checks its people's passwords.
    people: Option<&'a dyn chorus_core::directory::People>,
    domain: &'a str,
    /// Iterations new credentials get (and unknown accounts show).
    iterations: u32,
}

/// Normalizes a username to its nodeprep'd localpart, if valid.
pub(crate) fn normalize_user(name: &str, domain: &str) -> Option<String> {
    let j = jid::BareJid::new(&format!("{name}@{domain}")).ok()?;
    let node = j.node()?.to_string();
    (j.domain().as_str() == domain).then_some(node)
}

/// The per-deployment secret behind unknown accounts' SCRAM salts: a
/// replicated setting of the server itself (the empty user), so every node
/// of a cluster shows an unknown name the same salt once it has converged.
const FAKE_SALT_SECRET: &str = "sasl-fake-salt-secret";

fn fake_salt_secret(store: &dyn Store) -> String {
    if let Ok(Some(s)) = store.setting("", FAKE_SALT_SECRET) {
        return s;
    }
    let fresh = hex(&rand::random::<[u8; 32]>());
    if let Err(e) = store.set_setting("", FAKE_SALT_SECRET, &fresh) {
        tracing::error!(error = %e, "cannot store the SASL salt secret");
    }
    // Whichever write won replication is the secret from now on.
    store
        .setting("", FAKE_SALT_SECRET)
        .ok()
        .flatten()
        .unwrap_or(fresh)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl CredentialLookup for StoreLookup<'_> {
    fn check_external(&self, username: &str, password: &str) -> Option<bool> {
        let user = normalize_user(username, self.domain)?;
        let dn = self
            .store
            .setting(&user, chorus_core::directory::DIRECTORY_DN_SETTING)
            .ok()
            .flatten()?;
        if chorus_core::store::is_disabled(self.store, &user) {
            return Some(false);
        }
        // A directory account with no directory configured here: refused.
        let people = self.people?;
        let ok = people.check_password(&user, password);
        tracing::debug!(user = %user, dn = %dn, ok = ?ok, "directory login");
        Some(ok.unwrap_or(false))
    }

    fn fake(&self, username: &str, hash: ScramHash) -> (Vec<u8>, u32) {
        use hmac::{Hmac, Mac};
        let secret = fake_salt_secret(self.store);
        let key = normalize_user(username, self.domain).unwrap_or_else(|| username.to_owned());
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(hash.mechanism().as_bytes());
        mac.update(&[0]);
        mac.update(key.as_bytes());
        let salt = mac.finalize().into_bytes()[..chorus_core::credentials::SALT_BYTES].to_vec();
        (salt, self.iterations)
    }

    fn lookup(&self, username: &str) -> Option<Credentials> {
        let user = normalize_user(username, self.domain)?;
        if chorus_core::store::is_disabled(self.store, &user) {
            // Answered like an unknown account (a fake salt and a failure).
            return None;
        }
        match self.store.credentials(&user) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot read credentials");
                None
            }
        }
    }
}

impl Session {
    /// The features of a secure stream before authentication: the SASL
    /// mechanisms (-PLUS first when the channel offers binding), the
    /// XEP-0440 binding types, and registration when it is enabled.
    pub(super) fn sasl_features(&self, f: &mut Element) {
        let mut mechs = xml::new("mechanisms", ns::SASL);
        let mut names = Vec::new();
        if self.channel_binding.any() {
            names.extend(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"]);
        }
        names.extend(["SCRAM-SHA-256", "SCRAM-SHA-1"]);
        if self.ctx.config.c2s.allow_plain {
            names.push("PLAIN");
        }
        for m in names {
            mechs.append_child(xml::new("mechanism", ns::SASL).with_text(m));
        }
        f.append_child(mechs);
        if self.channel_binding.any() {
            let mut cb = xml::new("sasl-channel-binding", ns::SASL_CB);
            for t in self.channel_binding.types() {
                cb.append_child(xml::new("channel-binding", ns::SASL_CB).with_attr("type", t));
            }
            f.append_child(cb);
        }
        if self.ctx.config.registration.enabled {
            f.append_child(xml::new("register", ns::REGISTER_FEATURE));
        }
    }

    pub(super) fn on_sasl(&mut self, el: Element) {
        match el.name() {
            "auth" => {
                let mech = el.attr("mechanism").unwrap_or_default().to_owned();
                let allowed = match mech.as_str() {
                    "PLAIN" => self.ctx.config.c2s.allow_plain,
                    _ => true,
                };
                let m = if allowed {
                    Mechanism::start(&mech, &self.channel_binding)
                } else {
                    None
                };
                let Some(m) = m else {
                    return self.sasl_failure("invalid-mechanism", None);
                };
                if self.ctx.auth_throttle.address_blocked(self.peer, self.now) {
                    return self.sasl_failure("temporary-auth-failure", None);
                }
                self.sasl = Some(m);
                self.sasl_step(&el, &mech);
            }
            "response" => {
                if self.sasl.is_none() {
                    return self.sasl_failure("malformed-request", None);
                }
                self.sasl_step(&el, "");
            }
            "abort" => {
                self.sasl = None;
                self.sasl_failure("aborted", None);
            }
            _ => self.stream_error("unsupported-stanza-type", None),
        }
    }

    fn sasl_step(&mut self, el: &Element, mech_name: &str) {
        let text = el.text();
        let data = if text.trim() == "=" {
            Vec::new()
        } else {
            match B64.decode(text.trim()) {
                Ok(d) => d,
                Err(_) => {
                    self.sasl = None;
                    return self.sasl_failure("incorrect-encoding", None);
                }
            }
        };
        let Some(mut mech) = self.sasl.take() else { return };
        // The lockout is checked on the normalized account before any
        // password work, and a locked account gets the same answer whether
        // the guess was right or wrong (a PLAIN guess was once verified
        // first, so "temporary-auth-failure" meant "right password").
        let account = if mech_name == "PLAIN" {
            plain_user(&data)
        } else {
            scram_user(&data)
        };
        if let Some(user) = account.and_then(|u| normalize_user(&u, &self.ctx.domain))
            && self.ctx.auth_throttle.account_blocked(&user, self.peer, self.now)
        {
            return self.sasl_failure("temporary-auth-failure", None);
        }
        let step = {
            let lookup = StoreLookup {
                store: self.ctx.store.as_ref(),
                people: self.ctx.people.get().map(|p| p.as_ref()),
                domain: &self.ctx.domain,
                iterations: self.ctx.config.c2s.scram_iterations,
            };
            crate::offload::cpu(|| mech.step(&data, &lookup))
        };
        match step {
            Step::Challenge(c) => {
                self.sasl = Some(mech);
                self.out.push(super::Output::Element(
                    xml::new("challenge", ns::SASL).with_text(B64.encode(c)),
                ));
            }
            Step::Success {
                username,
                additional,
                password,
            } => {
                self.sasl_success(&username, additional, mech_name);
                if let Some(p) = password {
                    self.upgrade_credentials(&p);
                }
            }
            Step::Failure { condition, username } => self.sasl_failure(condition, username),
        }
    }

    fn sasl_success(&mut self, username: &str, additional: Vec<u8>, mech_name: &str) {
        let Some(user) = normalize_user(username, &self.ctx.domain) else {
            return self.sasl_failure("not-authorized", None);
        };
        if self.ctx.auth_throttle.account_blocked(&user, self.peer, self.now) {
            return self.sasl_failure("temporary-auth-failure", None);
        }
        self.ctx.auth_throttle.succeeded(&user, self.peer, self.now);
        let mech = if mech_name.is_empty() { "SCRAM" } else { mech_name };
        metrics::counter!("chorus_logins_total", "mechanism" => mech.to_owned()).increment(1);
        tracing::info!(user = %user, peer = %self.peer, "authenticated");
        self.user = Some(user);
        self.state = State::Authenticated;
        let mut s = xml::new("success", ns::SASL);
        if !additional.is_empty() {
            s.append_text(B64.encode(additional));
        }
        self.out.push(super::Output::Element(s));
        self.stream_open = false;
        self.restart = true;
    }

    /// After a PLAIN login, re-derives credentials stored with fewer
    /// iterations than configured (SCRAM logins never show the password).
    fn upgrade_credentials(&mut self, password: &str) {
        let Some(user) = self.user.clone() else { return };
        let want = self.ctx.config.c2s.scram_iterations;
        let stored = self.ctx.store.credentials(&user).ok().flatten();
        if stored.is_none_or(|c| c.sha256.iterations >= want) {
            return;
        }
        match crate::offload::cpu(|| Credentials::from_password_with(password, want)) {
            Ok(c) => match self.ctx.store.set_credentials(&user, &c) {
                Ok(()) => tracing::info!(user = %user, iterations = want, "credentials upgraded"),
                Err(e) => tracing::warn!(user = %user, error = %e, "cannot upgrade credentials"),
            },
            Err(e) => tracing::warn!(user = %user, error = %e, "cannot upgrade credentials"),
        }
    }

    fn sasl_failure(&mut self, condition: &'static str, username: Option<String>) {
        self.sasl = None;
        if matches!(condition, "not-authorized" | "invalid-authzid") {
            let account = username.and_then(|u| normalize_user(&u, &self.ctx.domain));
            self.ctx
                .auth_throttle
                .failed(account.as_deref(), self.peer, self.now);
        }
        metrics::counter!("chorus_login_failures_total", "reason" => condition).increment(1);
        let f = xml::new("failure", ns::SASL).with_child(xml::new(condition, ns::SASL));
        self.out.push(super::Output::Element(f));
        self.sasl_failures += 1;
        if self.sasl_failures >= SASL_FAILURES_PER_STREAM_MAX {
            self.stream_error(
                "policy-violation",
                Some("too many failed authentication attempts"),
            );
        }
    }

    pub(super) fn on_register_unauthenticated(&mut self, iq: &Element, q: &Element) {
        match iq.attr("type") {
            Some("get") => {
                let form = xml::new("query", ns::REGISTER)
                    .with_child(
                        xml::new("instructions", ns::REGISTER).with_text("Choose a username and password."),
                    )
                    .with_child(xml::new("username", ns::REGISTER))
                    .with_child(xml::new("password", ns::REGISTER));
                self.out
                    .push(super::Output::Element(xml::iq_result(iq).with_child(form)));
            }
            Some("set") => {
                let reply = self.register(iq, q);
                self.out.push(super::Output::Element(reply));
            }
            _ => {}
        }
    }

    fn register(&mut self, iq: &Element, q: &Element) -> Element {
        let name = q
            .get_child("username", ns::REGISTER)
            .map(|e| e.text())
            .unwrap_or_default();
        let password = q
            .get_child("password", ns::REGISTER)
            .map(|e| e.text())
            .unwrap_or_default();
        if self.ctx.auth_throttle.address_blocked(self.peer, self.now) {
            return xml::error_reply(iq, "wait", "resource-constraint");
        }
        let Some(user) = normalize_user(&name, &self.ctx.domain) else {
            return xml::error_reply(iq, "modify", "jid-malformed");
        };
        let iterations = self.ctx.config.c2s.scram_iterations;
        let Ok(creds) = crate::offload::cpu(|| Credentials::from_password_with(&password, iterations)) else {
            return xml::error_reply(iq, "modify", "not-acceptable");
        };
        // Registrations count against the address like failures do, so one
        // address cannot mass-create accounts.
        self.ctx.auth_throttle.failed(None, self.peer, self.now);
        match self.ctx.store.create_account(&user, &creds) {
            Ok(()) => {
                tracing::info!(user = %user, peer = %self.peer, "account registered in-band");
                xml::iq_result(iq)
            }
            Err(StoreError::AccountExists(_)) => xml::error_reply(iq, "cancel", "conflict"),
            Err(e) => {
                tracing::error!(error = %e, "registration failed");
                xml::error_reply(iq, "wait", "internal-server-error")
            }
        }
    }
}

/// The username from a PLAIN message (`authzid NUL authcid NUL passwd`),
/// for throttling.
fn plain_user(data: &[u8]) -> Option<String> {
    let user = data.split(|b| *b == 0).nth(1)?;
    std::str::from_utf8(user).ok().map(str::to_owned)
}

/// The username from a SCRAM client-first message, for throttling.
fn scram_user(data: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(data).ok()?;
    let bare = text.splitn(3, ',').nth(2)?;
    crate::sasl::decode_saslname(bare.split(',').next()?.strip_prefix("n=")?)
}
