//! Signing in and out, and who is viewing.
//!
//! A sign-in is an account of the domain that `[console]` names for a role
//! (its XMPP password, checked against the stored SCRAM keys, never kept;
//! a disabled account is refused) or an API token (its own role). It
//! becomes a random 256-bit session id in a `__Host-` cookie that is
//! `Secure`, `HttpOnly` and `SameSite=Strict`; the node keeps only the
//! id's SHA-256, with an idle timeout and a maximum age. Every form
//! carries the session's CSRF token (compared in constant time) and a
//! request whose `Origin` names another host is refused. The sign-in form
//! itself is protected by a double-submit cookie, and failed sign-ins are
//! bounded per address.

use crate::Console;
use crate::page::{self, Flash};
use axum::extract::{FromRequestParts, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Redirect, Response};
use chorus_archive::compliance::Caller;
use chorus_core::config::{ApiRole, ConsoleConfig};
use maud::html;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The session cookie.
pub(crate) const COOKIE: &str = "__Host-chorus-console";
/// The sign-in form's double-submit cookie.
const LOGIN_COOKIE: &str = "__Host-chorus-login";
/// The window failed sign-ins are counted in.
const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// Addresses whose failures are remembered at most.
const FAILURE_ADDRESSES_MAX: usize = 4096;

/// One signed-in viewer.
struct Signed {
    name: String,
    roles: Vec<ApiRole>,
    csrf: String,
    created: Instant,
    last: Instant,
}

/// The node's console sign-ins and failed attempts.
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Signed>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    idle: Duration,
    max_age: Duration,
    max: usize,
    failures_max: u32,
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Sessions {
    pub(crate) fn new(c: &ConsoleConfig) -> Sessions {
        Sessions {
            map: Mutex::default(),
            failures: Mutex::default(),
            idle: Duration::from_secs(c.idle_timeout_mins.saturating_mul(60)),
            max_age: Duration::from_secs(c.session_max_hours.saturating_mul(3600)),
            max: c.sessions_max,
            failures_max: c.login_failures_max,
        }
    }

    fn live(&self, s: &Signed, now: Instant) -> bool {
        now.duration_since(s.last) < self.idle && now.duration_since(s.created) < self.max_age
    }

    /// Starts a sign-in; returns the cookie value, or `None` when the node
    /// holds as many as it may.
    fn start(&self, name: String, roles: Vec<ApiRole>) -> Option<String> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| {
            now.duration_since(s.last) < self.idle && now.duration_since(s.created) < self.max_age
        });
        if map.len() >= self.max {
            return None;
        }
        let id = random_hex();
        let signed = Signed {
            name,
            roles,
            csrf: random_hex(),
            created: now,
            last: now,
        };
        map.insert(digest(&id), signed);
        Some(id)
    }

    fn end(&self, id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&digest(id));
    }

    /// The viewer holding cookie value `id`, touching its idle timer.
    fn find(&self, id: &str) -> Option<(String, Vec<ApiRole>, String)> {
        let now = Instant::now();
        let key = digest(id);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let live = map.get(&key).is_some_and(|s| self.live(s, now));
        if !live {
            map.remove(&key);
            return None;
        }
        let s = map.get_mut(&key)?;
        s.last = now;
        Some((s.name.clone(), s.roles.clone(), s.csrf.clone()))
    }

    fn failed_too_often(&self, ip: IpAddr) -> bool {
        let f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.get(&ip)
            .is_some_and(|(at, n)| at.elapsed() < FAILURE_WINDOW && *n >= self.failures_max)
    }

    fn failed(&self, ip: IpAddr) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() >= FAILURE_ADDRESSES_MAX {
            f.retain(|_, (at, _)| at.elapsed() < FAILURE_WINDOW);
        }
        if f.len() >= FAILURE_ADDRESSES_MAX && !f.contains_key(&ip) {
            return;
        }
        let e = f.entry(ip).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= FAILURE_WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
    }
}

/// Who is viewing: a live sign-in.
#[derive(Clone, Debug)]
pub(crate) struct Viewer {
    /// The account or token name.
    pub(crate) name: String,
    /// The roles it holds.
    pub(crate) roles: Vec<ApiRole>,
    /// The session's CSRF token.
    pub(crate) csrf: String,
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
            name: format!("{} (console)", self.name),
            role,
            addr: self.addr.clone(),
        }
    }

    /// Refuses a viewer without `role` with a page saying so.
    pub(crate) fn require(&self, c: &Console, role: ApiRole) -> Result<Caller, Response> {
        if self.has(role) {
            return Ok(self.caller(role));
        }
        let role_name = format!("{role:?}").to_lowercase();
        Err(page::error_page(
            c,
            Some(self),
            StatusCode::FORBIDDEN,
            &format!(
                "This page needs the {role_name} role, which {} does not hold.",
                self.name
            ),
        ))
    }

    /// Checks a form's CSRF token and the request's origin.
    pub(crate) fn check_form(&self, c: &Console, token: &str) -> Result<(), Response> {
        let cross = self
            .origin
            .as_ref()
            .is_some_and(|(origin, host)| origin.split_once("://").map(|(_, h)| h) != Some(host.as_str()));
        if cross || !same(token, &self.csrf) {
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

fn client(parts: &Parts) -> (String, Option<IpAddr>) {
    match parts.extensions.get::<chorus_admin::Client>() {
        Some(c) => (c.ip.to_string(), Some(c.ip)),
        None => (String::new(), None),
    }
}

/// The client's address (as the listener identified it).
pub(crate) struct Peer(String, Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let (addr, ip) = client(parts);
        Ok(Peer(addr, ip))
    }
}

impl FromRequestParts<Arc<Console>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, c: &Arc<Console>) -> Result<Self, Response> {
        let found = cookie(&parts.headers, COOKIE).and_then(|id| c.sessions.find(&id));
        let Some((name, roles, csrf)) = found else {
            let next = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/console/");
            let to = format!("/console/login?next={}", page::encode(next));
            return Err(Redirect::to(&to).into_response());
        };
        let (addr, _) = client(parts);
        let header = |h: header::HeaderName| {
            parts
                .headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let origin = header(header::ORIGIN).map(|o| (o, header(header::HOST).unwrap_or_default()));
        Ok(Viewer {
            name,
            roles,
            csrf,
            addr,
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
pub(crate) async fn login_page(State(c): State<Arc<Console>>, q: axum::extract::RawQuery) -> Response {
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

/// Resolves a sign-in to a name and roles, or says why not.
async fn authenticate(c: &Console, f: &LoginForm) -> Option<(String, Vec<ApiRole>)> {
    if !f.token.trim().is_empty() {
        let d = digest(f.token.trim());
        let t = c.deps.tokens.iter().find(|t| same(&t.sha256, &d))?;
        return Some((format!("token:{}", t.name), vec![t.role]));
    }
    let domain = &c.deps.ctx.domain;
    let user = f.user.trim().to_lowercase();
    let user = user
        .strip_suffix(&format!("@{domain}"))
        .unwrap_or(&user)
        .to_owned();
    let cfg = &c.deps.ctx.config.console;
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
    let store = c.deps.ctx.store.clone();
    let (u, pw) = (user.clone(), f.password.clone());
    // The password is checked even for an account without a role, so the
    // time taken does not tell which accounts have one.
    let ok = tokio::task::spawn_blocking(move || {
        let creds = store.credentials(&u).ok().flatten();
        let good = creds.is_some_and(|c| {
            c.sha256
                .verify_password(chorus_core::credentials::ScramHash::Sha256, &pw)
        });
        good && !chorus_core::store::is_disabled(&*store, &u)
    })
    .await
    .unwrap_or(false);
    (ok && !roles.is_empty() && !user.is_empty()).then(|| (format!("{user}@{domain}"), roles))
}

/// `POST /console/login`
pub(crate) async fn login(
    State(c): State<Arc<Console>>,
    Peer(addr, ip): Peer,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
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
    if ip.is_some_and(|ip| c.sessions.failed_too_often(ip)) {
        let why = "Too many failed sign-ins from this address; wait a few minutes.";
        return login_form(&c, &next, Some(why), StatusCode::TOO_MANY_REQUESTS);
    }
    let Some((name, roles)) = authenticate(&c, &f).await else {
        if let Some(ip) = ip {
            c.sessions.failed(ip);
        }
        metrics::counter!("chorus_console_logins_total", "result" => "refused").increment(1);
        let why = "Wrong account, password or token, or the account has no console role.";
        return login_form(&c, &next, Some(why), StatusCode::UNAUTHORIZED);
    };
    let Some(id) = c.sessions.start(name.clone(), roles.clone()) else {
        let why = "This node holds as many console sign-ins as it may; try again later or another site.";
        return login_form(&c, &next, Some(why), StatusCode::SERVICE_UNAVAILABLE);
    };
    metrics::counter!("chorus_console_logins_total", "result" => "ok").increment(1);
    let caller = Caller {
        name: format!("{name} (console)"),
        role: roles[0],
        addr,
    };
    c.trail
        .note(caller, "console.login", serde_json::json!({ "roles": roles }));
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

/// `POST /console/logout`
pub(crate) async fn logout(
    State(c): State<Arc<Console>>,
    v: Viewer,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let f: CsrfForm = page::form(&body).unwrap_or_default();
    if let Err(r) = v.check_form(&c, &f.csrf) {
        return r;
    }
    if let Some(id) = cookie(&headers, COOKIE) {
        c.sessions.end(&id);
    }
    c.trail
        .note(v.caller(v.roles[0]), "console.logout", serde_json::json!({}));
    let mut r = Redirect::to("/console/login").into_response();
    let clear = format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = clear.parse() {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(idle_mins: u64) -> Sessions {
        Sessions::new(&ConsoleConfig {
            idle_timeout_mins: idle_mins,
            sessions_max: 2,
            login_failures_max: 2,
            ..ConsoleConfig::default()
        })
    }

    #[test]
    fn a_session_is_found_by_its_cookie_only_and_ends() {
        let s = sessions(15);
        let id = s.start("carol".into(), vec![ApiRole::Compliance]).expect("room");
        assert_eq!(s.find(&id).map(|f| f.0), Some("carol".into()));
        assert!(
            s.find(&digest(&id)).is_none(),
            "the stored digest is not a cookie"
        );
        s.end(&id);
        assert!(s.find(&id).is_none());
    }

    #[test]
    fn sessions_are_bounded_and_failures_counted_per_address() {
        let s = sessions(15);
        assert!(s.start("a".into(), vec![]).is_some());
        assert!(s.start("b".into(), vec![]).is_some());
        assert!(s.start("c".into(), vec![]).is_none());
        let ip: IpAddr = [127, 0, 0, 9].into();
        assert!(!s.failed_too_often(ip));
        s.failed(ip);
        s.failed(ip);
        assert!(s.failed_too_often(ip));
        assert!(!s.failed_too_often([127, 0, 0, 10].into()));
    }

    #[test]
    fn an_idle_session_expires() {
        let s = sessions(15);
        let id = s.start("carol".into(), vec![]).expect("room");
        {
            let mut map = s.map.lock().expect("lock");
            let e = map.get_mut(&digest(&id)).expect("stored");
            e.last = Instant::now()
                .checked_sub(Duration::from_secs(16 * 60))
                .expect("clock");
        }
        assert!(
            s.find(&id).is_none(),
            "idle for 16 minutes with a 15 minute timeout"
        );
    }
}
