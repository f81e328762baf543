//! Signing in and out, and who is viewing.
//!
//! A sign-in is an account of the domain that `[console]` names for a role
//! (its XMPP password, checked against the stored SCRAM keys, never kept;
//! a disabled account is refused) or an API token (its own role). It
//! becomes a random 256-bit session id in a `__Host-` cookie that is
//! `Secure`, `HttpOnly` and `SameSite=Strict` ([`crate::sessions`]). The
//! console answers only over a secure channel. Every request re-checks an
//! account sign-in: a disabled account, or one whose sessions an admin
//! ended, is signed out. Every form carries the session's CSRF token
//! (compared in constant time) and a request whose `Origin` names another
//! host is refused. The sign-in form itself is protected by a
//! double-submit cookie; attempts are bounded per address and account,
//! and an unknown account costs the same key derivation as a known one.
//!
//! In the audit trail a viewer is the same identity as through the API
//! (the account's bare JID, or the token's name), so dual control cannot
//! be passed by using one credential on both; the address says
//! `(console)`.

use crate::Console;
use crate::page::{self, Flash};
use crate::sessions::{digest, random_hex};
use axum::extract::{FromRequestParts, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Redirect, Response};
use chorus_archive::compliance::Caller;
use chorus_core::config::ApiRole;
use chorus_core::credentials::{ScramHash, ScramKeys};
use maud::html;
use std::net::IpAddr;
use std::sync::Arc;

/// The session cookie.
pub(crate) const COOKIE: &str = "__Host-chorus-console";
/// The sign-in form's double-submit cookie.
const LOGIN_COOKIE: &str = "__Host-chorus-login";

fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Who is viewing: a live sign-in.
#[derive(Clone, Debug)]
pub(crate) struct Viewer {
    /// The account's bare JID or the token's name.
    pub(crate) name: String,
    /// The roles it holds.
    pub(crate) roles: Vec<ApiRole>,
    /// The session's CSRF token.
    pub(crate) csrf: String,
    /// The key the sign-in is stored under.
    pub(crate) key: String,
    /// The client's address.
    pub(crate) addr: String,
    /// The request's `Origin` and `Host`.
    origin: Option<(String, String)>,
}

impl Viewer {
    /// Whether the viewer holds `role`.
    pub(crate) fn has(&self, role: ApiRole) -> bool {
        self.roles.contains(&role)
    }

    /// The caller as the audit trail records it, acting in `role`.
    pub(crate) fn caller(&self, role: ApiRole) -> Caller {
        Caller {
            name: self.name.clone(),
            role,
            addr: format!("{} (console)", self.addr),
        }
    }

    /// Refuses a viewer without `role` with a page saying so.
    pub(crate) fn require(&self, c: &Console, role: ApiRole) -> Result<Caller, Response> {
        if self.has(role) {
            return Ok(self.caller(role));
        }
        let role_name = format!("{role:?}").to_lowercase();
        let msg = format!(
            "This page needs the {role_name} role, which {} does not hold.",
            self.name
        );
        Err(page::error_page(c, Some(self), StatusCode::FORBIDDEN, &msg))
    }

    /// A form posted by a viewer holding `role`: the role is checked
    /// first, then the CSRF token and origin, then the form is parsed.
    pub(crate) fn posted<T: serde::de::DeserializeOwned>(
        &self,
        c: &Console,
        role: ApiRole,
        body: &[u8],
    ) -> Result<(Caller, T), Response> {
        let who = self.require(c, role)?;
        let token: CsrfForm = page::form(body).unwrap_or_default();
        self.check_form(c, &token.csrf)?;
        let f = page::form(body).map_err(|e| page::error_page(c, Some(self), StatusCode::BAD_REQUEST, &e))?;
        Ok((who, f))
    }

    /// Checks a form's CSRF token and the request's origin.
    pub(crate) fn check_form(&self, c: &Console, token: &str) -> Result<(), Response> {
        if foreign_origin(self.origin.as_ref()) || !same(token, &self.csrf) {
            metrics::counter!("chorus_console_csrf_refused_total").increment(1);
            return Err(page::error_page(
                c,
                Some(self),
                StatusCode::FORBIDDEN,
                "This form was not sent from this console page (its security token is missing or stale). \
                 Reload the page and try again.",
            ));
        }
        Ok(())
    }
}

/// The request's `Origin` and `Host`, when it names an origin.
pub(crate) fn origin_of(headers: &HeaderMap) -> Option<(String, String)> {
    let get = |h| headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_owned);
    get(header::ORIGIN).map(|o| (o, get(header::HOST).unwrap_or_default()))
}

/// Whether a request's `Origin` names another host than the one it was
/// sent to (no `Origin`: a same-site navigation, allowed).
pub(crate) fn foreign_origin(origin: Option<&(String, String)>) -> bool {
    origin.is_some_and(|(origin, host)| origin.split_once("://").map(|(_, h)| h) != Some(host.as_str()))
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The client as the listener identified it: its address, and whether its
/// channel is secure (TLS, or a trusted proxy's).
pub(crate) struct Peer {
    addr: String,
    ip: Option<IpAddr>,
    pub(crate) secure: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(match parts.extensions.get::<chorus_admin::Client>() {
            Some(c) => Peer {
                addr: c.ip.to_string(),
                ip: Some(c.ip),
                secure: c.secure,
            },
            None => Peer {
                addr: String::new(),
                ip: None,
                secure: true,
            },
        })
    }
}

impl Peer {
    /// The address the attempt counters key on (IPv6 by its /64).
    pub(crate) fn key(&self) -> String {
        self.ip
            .map(chorus_xmpp::runtime::address_key)
            .map(|i| i.to_string())
            .unwrap_or_default()
    }

    /// The client's address, for logs.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }
}

pub(crate) fn insecure(c: &Console) -> Response {
    page::error_page(
        c,
        None,
        StatusCode::FORBIDDEN,
        "The console answers only over HTTPS (or behind a proxy in http.trusted_proxies that says so).",
    )
}

/// Whether an account sign-in still holds: the account is not disabled and
/// its sessions were not ended after it signed in.
fn still_allowed(c: &Console, account: &str, created_ms: u64) -> bool {
    let store = &*c.deps.ctx.store;
    if chorus_core::store::is_disabled(store, account) {
        return false;
    }
    let ended = store
        .setting(account, chorus_xmpp::revoke::SESSIONS_ENDED_SETTING)
        .ok()
        .flatten()
        .and_then(|v| v.parse::<u64>().ok());
    ended.is_none_or(|t| t < created_ms)
}

impl FromRequestParts<Arc<Console>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, c: &Arc<Console>) -> Result<Self, Response> {
        let Ok(peer) = Peer::from_request_parts(parts, c).await;
        if !peer.secure {
            return Err(insecure(c));
        }
        let mut found = cookie(&parts.headers, COOKIE).and_then(|id| c.sessions.find(&id));
        if let Some(f) = &found
            && let Some(account) = &f.account
            && !still_allowed(c, account, f.created_ms)
        {
            c.sessions.end(&f.key);
            found = None;
        }
        let Some(f) = found else {
            let next = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/console/");
            let to = format!("/console/login?next={}", page::encode(next));
            return Err(Redirect::to(&to).into_response());
        };
        let origin = origin_of(&parts.headers);
        Ok(Viewer {
            name: f.name,
            roles: f.roles,
            csrf: f.csrf,
            key: f.key,
            addr: peer.addr,
            origin,
        })
    }
}

/// The sign-in form's fields.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub(crate) struct LoginForm {
    nonce: String,
    user: String,
    password: String,
    token: String,
    next: String,
}

/// `GET /console/login`
pub(crate) async fn login_page(
    State(c): State<Arc<Console>>,
    peer: Peer,
    q: axum::extract::RawQuery,
) -> Response {
    if !peer.secure {
        return insecure(&c);
    }
    let next = page::query_value(q.0.as_deref(), "next").unwrap_or_default();
    login_form(&c, &next, None, StatusCode::OK)
}

fn login_form(c: &Console, next: &str, error: Option<&str>, status: StatusCode) -> Response {
    let nonce = random_hex();
    let body = html! {
        section.signin {
            h1 { "Sign in to Chorus" }
            p.muted { "Compliance officers and administrators of " (c.deps.ctx.domain) "." }
            @if let Some(e) = error { p.flash.error role="alert" { (e) } }
            form method="post" action="/console/login" {
                input type="hidden" name="nonce" value=(nonce);
                input type="hidden" name="next" value=(next);
                label { "Account" input name="user" autocomplete="username" autofocus; }
                label { "Password" input name="password" type="password" autocomplete="current-password"; }
                p.muted { "or" }
                label { "API token" input name="token" type="password" autocomplete="off"; }
                button type="submit" { "Sign in" }
            }
        }
    };
    let mut r = page::layout(c, None, "Sign in", Flash::None, body);
    *r.status_mut() = status;
    let set = format!("{LOGIN_COOKIE}={nonce}; Path=/; Secure; HttpOnly; SameSite=Strict");
    if let Ok(v) = set.parse() {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The account a sign-in form names (localpart), or `None` for a token.
fn account_of(c: &Console, f: &LoginForm) -> Option<String> {
    if !f.token.trim().is_empty() {
        return None;
    }
    let domain = &c.deps.ctx.domain;
    let user = f.user.trim().to_lowercase();
    Some(
        user.strip_suffix(&format!("@{domain}"))
            .unwrap_or(&user)
            .to_owned(),
    )
}

/// The roles `[console]` gives an account.
pub(crate) fn roles_of(c: &Console, user: &str) -> Vec<ApiRole> {
    let (cfg, domain) = (&c.deps.ctx.config.console, &c.deps.ctx.domain);
    let named = |list: &[String]| {
        list.iter()
            .any(|a| a.to_lowercase() == user || a.to_lowercase() == format!("{user}@{domain}"))
    };
    let mut roles = Vec::new();
    if named(&cfg.compliance) {
        roles.push(ApiRole::Compliance);
    }
    if named(&cfg.admin) {
        roles.push(ApiRole::Admin);
    }
    roles
}

/// Resolves a sign-in to a name, its account and roles, or `None`.
async fn authenticate(c: &Console, f: &LoginForm) -> Option<(String, Option<String>, Vec<ApiRole>)> {
    let Some(user) = account_of(c, f) else {
        let d = digest(f.token.trim());
        let t = c.deps.tokens.iter().find(|t| same(&t.sha256, &d))?;
        return Some((t.name.clone(), None, vec![t.role]));
    };
    let roles = roles_of(c, &user);
    let store = c.deps.ctx.store.clone();
    let iterations = c.deps.ctx.config.c2s.scram_iterations;
    let (u, pw) = (user.clone(), f.password.clone());
    // An unknown account, or one without a role, costs the same key
    // derivation as a known one (one PBKDF2-SHA-256 at the configured
    // iterations): the time taken tells nothing.
    let ok = tokio::task::spawn_blocking(move || match store.credentials(&u).ok().flatten() {
        Some(creds) => {
            let good = creds.sha256.verify_password(ScramHash::Sha256, &pw);
            Some(good && !chorus_core::store::is_disabled(&*store, &u))
        }
        None => {
            let _ = ScramKeys::derive(ScramHash::Sha256, &pw, &[0u8; 16], iterations);
            Some(false)
        }
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(false);
    let name = format!("{user}@{}", c.deps.ctx.domain);
    (ok && !roles.is_empty() && !user.is_empty()).then_some((name, Some(user), roles))
}

/// `POST /console/login`
pub(crate) async fn login(
    State(c): State<Arc<Console>>,
    peer: Peer,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !peer.secure {
        return insecure(&c);
    }
    let f: LoginForm = page::form(&body).unwrap_or_default();
    let next = if f.next.starts_with("/console/") && !f.next.starts_with("/console//") {
        f.next.clone()
    } else {
        "/console/".to_owned()
    };
    let nonce_ok = cookie(&headers, LOGIN_COOKIE).is_some_and(|n| !f.nonce.is_empty() && same(&n, &f.nonce));
    if !nonce_ok {
        let why = "The sign-in form expired or was not sent from this page; try again.";
        return login_form(&c, &next, Some(why), StatusCode::FORBIDDEN);
    }
    let address = format!("ip:{}", peer.key());
    let account = format!("acct:{}", account_of(&c, &f).unwrap_or_else(|| "(token)".into()));
    if !c.sessions.attempt(&[address.clone(), account]) {
        let why = "Too many sign-in attempts from this address or for this account; wait a few minutes.";
        return login_form(&c, &next, Some(why), StatusCode::TOO_MANY_REQUESTS);
    }
    let Some((name, account, roles)) = authenticate(&c, &f).await else {
        metrics::counter!("chorus_console_logins_total", "result" => "refused").increment(1);
        let why = "Wrong account, password or token, or the account has no console role.";
        return login_form(&c, &next, Some(why), StatusCode::UNAUTHORIZED);
    };
    c.sessions.succeeded(&address);
    let caller = Caller {
        name: name.clone(),
        role: roles[0],
        addr: format!("{} (console)", peer.addr),
    };
    if !c
        .trail
        .note(caller, "console.login", serde_json::json!({ "roles": roles }))
    {
        let why = "The audit trail is not reachable and its queue is full: no sign-in until it is.";
        return login_form(&c, &next, Some(why), StatusCode::SERVICE_UNAVAILABLE);
    }
    let Some(id) = c.sessions.start(name, account, roles) else {
        let why = "This node holds as many console sign-ins as it may; try again later or another site.";
        return login_form(&c, &next, Some(why), StatusCode::SERVICE_UNAVAILABLE);
    };
    metrics::counter!("chorus_console_logins_total", "result" => "ok").increment(1);
    let mut r = Redirect::to(&next).into_response();
    let set = format!("{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict");
    let clear = format!("{LOGIN_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
    for v in [set, clear] {
        if let Ok(v) = v.parse() {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// The sign-out form.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub(crate) struct CsrfForm {
    csrf: String,
}

/// `POST /console/logout` (always ends the sign-in; its audit entry is
/// queued like any other).
pub(crate) async fn logout(State(c): State<Arc<Console>>, v: Viewer, body: axum::body::Bytes) -> Response {
    let f: CsrfForm = page::form(&body).unwrap_or_default();
    if let Err(r) = v.check_form(&c, &f.csrf) {
        return r;
    }
    c.sessions.end(&v.key);
    if !c
        .trail
        .note(v.caller(v.roles[0]), "console.logout", serde_json::json!({}))
    {
        tracing::warn!(who = %v.name, "console sign-out not queued for the audit trail (queue full)");
    }
    let mut r = Redirect::to("/console/login").into_response();
    let clear = format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = clear.parse() {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}
