//! The welcome page behind a one-time link (`chorus user import --links`):
//! `/console/welcome/<user>/<token>` asks the person for a password, sets
//! it and spends the link ([`chorus_core::setup_link`]). Any site serves
//! it, since the link's setting is replicated.
//!
//! The token in the URL is the only credential: it is checked (in
//! constant time, against the SHA-256 the node keeps) before anything
//! else, so a stranger cannot make the node derive keys; a wrong, used or
//! expired link is one failed attempt for the address (the sign-in form's
//! counters). A form posted from another origin is refused. The page is
//! served only over HTTPS, and asks for at least [`PASSWORD_CHARS_MIN`]
//! characters, twice. The link is spent before the password is set, under
//! a lock, and a password set any other way (an admin's reset, the
//! person's own change) spends it too.

use crate::Console;
use crate::auth::Peer;
use crate::page::{self, Flash};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chorus_core::setup_link::{SETUP_LINK_SETTING, admits};
use maud::html;
use std::sync::Arc;

/// Characters a password set through a link has at least.
pub const PASSWORD_CHARS_MIN: usize = 10;

/// The password form's fields.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub(crate) struct SetupForm {
    password: String,
    confirm: String,
}

fn form_page(c: &Console, user: &str, error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        section.signin {
            h1 { "Welcome to Chorus" }
            p.muted { "Choose the password of " strong { (user) "@" (c.deps.ctx.domain) } ". This link works once." }
            @if let Some(e) = error { p.flash.error role="alert" { (e) } }
            form #setup method="post" {
                label { "New password" input name="password" type="password" autocomplete="new-password" autofocus; }
                label { "Again" input name="confirm" type="password" autocomplete="new-password"; }
                button type="submit" { "Set my password" }
            }
        }
    };
    let mut r = page::layout(c, None, "Welcome", Flash::None, body);
    *r.status_mut() = status;
    r
}

/// Whether the link is good, counting a bad one against the address.
fn link_ok(c: &Console, peer: &Peer, user: &str, token: &str) -> Result<(), Response> {
    let address = format!("ip:{}", peer.key());
    if !c.sessions.attempt(std::slice::from_ref(&address)) {
        let why = "Too many attempts from this address; wait a few minutes.";
        return Err(page::error_page(c, None, StatusCode::TOO_MANY_REQUESTS, why));
    }
    let store = &*c.deps.ctx.store;
    let setting = store.setting(user, SETUP_LINK_SETTING).ok().flatten();
    let now = chorus_core::time::now_millis();
    if admits(setting.as_deref(), token, now) && !chorus_core::store::is_disabled(store, user) {
        c.sessions.succeeded(&address);
        return Ok(());
    }
    metrics::counter!("chorus_setup_links_total", "result" => "refused").increment(1);
    let why = "This link is not valid: it was used already, it expired, or it was mistyped. Ask your administrator for a new one.";
    Err(page::error_page(c, None, StatusCode::NOT_FOUND, why))
}

/// `GET /console/welcome/{user}/{token}`
pub(crate) async fn page(
    State(c): State<Arc<Console>>,
    peer: Peer,
    Path((user, token)): Path<(String, String)>,
) -> Response {
    if !peer.secure {
        return crate::auth::insecure(&c);
    }
    match link_ok(&c, &peer, &user, &token) {
        Ok(()) => form_page(&c, &user, None, StatusCode::OK),
        Err(r) => r,
    }
}

/// `POST /console/welcome/{user}/{token}`
pub(crate) async fn set(
    State(c): State<Arc<Console>>,
    peer: Peer,
    headers: HeaderMap,
    Path((user, token)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if !peer.secure {
        return crate::auth::insecure(&c);
    }
    if crate::auth::foreign_origin(crate::auth::origin_of(&headers).as_ref()) {
        let why = "This form was not sent from this page.";
        return page::error_page(&c, None, StatusCode::FORBIDDEN, why);
    }
    if let Err(r) = link_ok(&c, &peer, &user, &token) {
        return r;
    }
    let f: SetupForm = page::form(&body).unwrap_or_default();
    // Checked before the link is spent: a password the key derivation
    // would refuse must not use the link up.
    if f.password.chars().count() < PASSWORD_CHARS_MIN
        || f.password.len() > chorus_core::credentials::PASSWORD_BYTES_MAX
    {
        let why = format!(
            "Choose at least {PASSWORD_CHARS_MIN} characters (and at most {} bytes).",
            chorus_core::credentials::PASSWORD_BYTES_MAX
        );
        return form_page(&c, &user, Some(&why), StatusCode::UNPROCESSABLE_ENTITY);
    }
    if f.password != f.confirm {
        return form_page(
            &c,
            &user,
            Some("The two passwords differ."),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    match spend(&c, &user, &token, f.password).await {
        Ok(()) => {
            metrics::counter!("chorus_setup_links_total", "result" => "used").increment(1);
            tracing::info!(user = %user, addr = %peer.addr(), "password set through a one-time link");
            let body = html! {
                section.signin {
                    h1 { "Your password is set" }
                    p { "Sign in to " (c.deps.ctx.domain) " with your chat app as "
                        strong { (user) "@" (c.deps.ctx.domain) } "." }
                }
            };
            page::layout(&c, None, "Password set", Flash::None, body)
        }
        Err((status, e)) => page::error_page(&c, None, status, &e),
    }
}

/// Spends the link, then sets the password. The link is checked again
/// and cleared under one lock, so two forms posted at once cannot both
/// use it (a derivation that fails after that leaves the link spent: the
/// person asks for a new one).
async fn spend(c: &Console, user: &str, token: &str, password: String) -> Result<(), (StatusCode, String)> {
    let internal = |e: String| (StatusCode::INTERNAL_SERVER_ERROR, e);
    {
        let _one = SPEND.lock().unwrap_or_else(|e| e.into_inner());
        let store = &*c.deps.ctx.store;
        let setting = store
            .setting(user, SETUP_LINK_SETTING)
            .map_err(|e| internal(e.to_string()))?;
        if !admits(setting.as_deref(), token, chorus_core::time::now_millis()) {
            return Err((StatusCode::CONFLICT, "This link was used already.".into()));
        }
        store
            .set_setting(user, SETUP_LINK_SETTING, "")
            .map_err(|e| internal(e.to_string()))?;
    }
    let iterations = c.deps.ctx.config.c2s.scram_iterations;
    let creds = tokio::task::spawn_blocking(move || {
        chorus_core::credentials::Credentials::from_password_with(&password, iterations)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| internal(e.to_string()))?
    .map_err(internal)?;
    c.deps
        .ctx
        .store
        .set_credentials(user, &creds)
        .map_err(|e| internal(e.to_string()))
}

/// Serializes the spending of links on this node.
static SPEND: std::sync::Mutex<()> = std::sync::Mutex::new(());
