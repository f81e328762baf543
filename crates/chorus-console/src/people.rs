//! The admin's pages for accounts, rooms and API tokens: list and search
//! accounts, create one, reset a password, disable or enable it (a
//! disabled account cannot sign in anywhere), see where its sessions are
//! and end them (on this node at once, on the others when the replicated
//! setting reaches their sweeper: [`chorus_xmpp::revoke`]); list rooms with
//! owners and occupants, destroy one or set its owners; list the API
//! tokens (names and roles only: the tokens themselves are never stored).
//! Every view and change is in the audit trail.

use crate::Console;
use crate::auth::Viewer;
use crate::page::{self, Flash};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chorus_core::config::ApiRole;
use chorus_core::store::{DISABLED_SETTING, is_disabled};
use chorus_xmpp::revoke::SESSIONS_ENDED_SETTING;
use maud::html;
use std::sync::Arc;

/// Accounts listed on one page at most.
const LISTED_MAX: usize = 200;
/// The shortest password the console sets.
const PASSWORD_MIN: usize = 8;

/// An account form: create, or change one.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct UserForm {
    user: String,
    password: String,
    action: String,
}

fn bad(c: &Console, v: &Viewer, msg: &str) -> Response {
    page::error_page(c, Some(v), StatusCode::BAD_REQUEST, msg)
}

/// Refuses a password shorter than [`PASSWORD_MIN`].
fn long_enough(c: &Console, v: &Viewer, password: &str) -> Result<(), Response> {
    if password.chars().count() >= PASSWORD_MIN {
        return Ok(());
    }
    Err(bad(
        c,
        v,
        &format!("A password has at least {PASSWORD_MIN} characters."),
    ))
}

/// Refuses to set the password of (or create, or re-enable) an account
/// that `[console]` gives a role: an admin could otherwise sign in as an
/// officer, or as a second admin and pass dual control. Such accounts are
/// managed on the node (`chorus user passwd`).
fn guard_role_holder(c: &Console, v: &Viewer, user: &str) -> Result<(), Response> {
    if crate::auth::roles_of(c, user).is_empty() {
        return Ok(());
    }
    Err(page::error_page(
        c,
        Some(v),
        StatusCode::FORBIDDEN,
        &format!(
            "{user} holds a console role: its password is set on the node (chorus user passwd), \
             not from the console, so no admin can take over an officer's or another admin's sign-in."
        ),
    ))
}

/// A valid new account name (lower-case letters, digits, `.`, `_`, `-`).
fn account_name(s: &str, domain: &str) -> Option<String> {
    let s = s.trim().to_lowercase();
    let s = s.strip_suffix(&format!("@{domain}")).unwrap_or(&s).to_owned();
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        && !s.starts_with('.');
    ok.then_some(s)
}

/// `GET /console/users?q=`
pub(crate) async fn users(State(c): State<Arc<Console>>, v: Viewer, q: RawQuery) -> Response {
    if let Err(r) = v.require(&c, ApiRole::Admin) {
        return r;
    }
    let needle = page::query_value(q.0.as_deref(), "q")
        .unwrap_or_default()
        .to_lowercase();
    let audit = serde_json::json!({ "q": needle });
    if let Err(r) = crate::trail::view(&c, &v, ApiRole::Admin, "console.users", audit) {
        return r;
    }
    let ctx = &c.deps.ctx;
    let all = ctx.store.list_accounts().unwrap_or_default();
    let matching: Vec<&String> = all.iter().filter(|u| u.contains(&needle)).collect();
    let body = html! {
        h1 { "Users" }
        form.filters method="get" action="/console/users" role="search" {
            label { "Find" input name="q" value=(needle) placeholder="name"; }
            button type="submit" { "Find" }
        }
        p.muted { (all.len()) " accounts; " (matching.len()) " match"
            @if matching.len() > LISTED_MAX { ", the first " (LISTED_MAX) " shown" } "." }
        @if matching.is_empty() {
            (page::empty("No accounts match.", "Create one below, or clear the search."))
        } @else {
            table #users {
                thead { tr { th { "Account" } th { "State" } th { "Sessions" } th { "Actions" } } }
                tbody {
                    @for u in matching.iter().take(LISTED_MAX) {
                        @let sessions = ctx.router.resources(u);
                        @let disabled = is_disabled(&*ctx.store, u);
                        tr data-user=(u) {
                            td { strong { (u) "@" (ctx.domain) } }
                            td { @if disabled { span.tag.bad { "disabled" } } @else { span.tag.good { "active" } } }
                            td {
                                @if sessions.is_empty() { span.muted { "offline" } }
                                @for s in &sessions { div { (s.resource) " " span.muted { "on " (s.node.as_deref().unwrap_or("this node")) } } }
                            }
                            td { (user_actions(&v, u, disabled, !sessions.is_empty())) }
                        }
                    }
                }
            }
        }
        h2 { "Create an account" }
        form.card.filters method="post" action="/console/users" {
            input type="hidden" name="csrf" value=(v.csrf);
            label { "Name" input name="user" required autocomplete="off"; }
            label { "Password" input name="password" type="password" required minlength=(PASSWORD_MIN) autocomplete="new-password"; }
            button type="submit" { "Create" }
        }
    };
    page::layout(&c, Some(&v), "Users", Flash::None, body)
}

fn user_actions(v: &Viewer, u: &str, disabled: bool, online: bool) -> maud::Markup {
    let to = format!("/console/users/{}", page::encode(u));
    html! {
        form.inline method="post" action=(to) {
            input type="hidden" name="csrf" value=(v.csrf);
            input type="hidden" name="action" value="password";
            input name="password" type="password" placeholder="new password" minlength=(PASSWORD_MIN) required aria-label=(format!("New password for {u}")) autocomplete="new-password";
            button.secondary type="submit" { "Reset" }
        }
        " "
        form.inline method="post" action=(to) data-confirm=(format!("{} {u}?", if disabled { "Enable" } else { "Disable" })) {
            input type="hidden" name="csrf" value=(v.csrf);
            input type="hidden" name="action" value=(if disabled { "enable" } else { "disable" });
            button.danger[!disabled].secondary[disabled] type="submit" { @if disabled { "Enable" } @else { "Disable" } }
        }
        @if online {
            " "
            form.inline method="post" action=(to) {
                input type="hidden" name="csrf" value=(v.csrf);
                input type="hidden" name="action" value="end";
                button.secondary type="submit" { "End sessions" }
            }
        }
    }
}

/// Ends the sessions the settings now revoke on this node at once; other
/// nodes' sweepers end theirs once the setting reaches them. Returns
/// (ended here, held elsewhere).
async fn revoke_now(c: &Console, user: &str) -> (usize, usize) {
    let elsewhere = c
        .deps
        .ctx
        .router
        .resources(user)
        .iter()
        .filter(|r| r.node.is_some())
        .count();
    let ctx = c.deps.ctx.clone();
    let ended = tokio::task::spawn_blocking(move || chorus_xmpp::revoke::sweep(&ctx))
        .await
        .unwrap_or(0);
    (ended, elsewhere)
}

/// `POST /console/users`: creates an account.
pub(crate) async fn create_user(
    State(c): State<Arc<Console>>,
    v: Viewer,
    body: axum::body::Bytes,
) -> Response {
    let f: UserForm = match v.posted(&c, ApiRole::Admin, &body) {
        Ok((_, f)) => f,
        Err(r) => return r,
    };
    let ctx = c.deps.ctx.clone();
    let Some(user) = account_name(&f.user, &ctx.domain) else {
        return bad(
            &c,
            &v,
            "An account name is 1 to 64 lower-case letters, digits, '.', '_' or '-'.",
        );
    };
    if let Err(r) = guard_role_holder(&c, &v, &user) {
        return r;
    }
    if let Err(r) = long_enough(&c, &v, &f.password) {
        return r;
    }
    if let Err(r) = crate::trail::view(
        &c,
        &v,
        ApiRole::Admin,
        "user.create",
        serde_json::json!({ "user": user }),
    ) {
        return r;
    }
    let made = match credentials(&c, f.password).await {
        Ok(creds) => ctx.store.create_account(&user, &creds).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match made {
        Ok(()) => page::done(&c, &v, "/console/users", format!("Account {user} created.")),
        Err(e) => page::error_page(
            &c,
            Some(&v),
            StatusCode::CONFLICT,
            &format!("Cannot create {user}: {e}"),
        ),
    }
}

/// SCRAM credentials for a new password (derived off the async workers).
async fn credentials(c: &Console, password: String) -> Result<chorus_core::credentials::Credentials, String> {
    let iterations = c.deps.ctx.config.c2s.scram_iterations;
    tokio::task::spawn_blocking(move || {
        chorus_core::credentials::Credentials::from_password_with(&password, iterations)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Applies an account change; returns what to tell the admin.
async fn apply_change(c: &Console, user: &str, f: UserForm) -> Result<String, String> {
    let store = &c.deps.ctx.store;
    let msg = match f.action.as_str() {
        "password" => {
            let creds = credentials(c, f.password).await?;
            store.set_credentials(user, &creds).map_err(|e| e.to_string())?;
            return Ok(format!("Password of {user} reset."));
        }
        "enable" => {
            store
                .set_setting(user, DISABLED_SETTING, "")
                .map_err(|e| e.to_string())?;
            return Ok(format!("{user} can sign in again."));
        }
        "disable" => {
            store
                .set_setting(user, DISABLED_SETTING, "1")
                .map_err(|e| e.to_string())?;
            format!("{user} is disabled.")
        }
        _ => {
            let now = chorus_core::time::now_millis().to_string();
            store
                .set_setting(user, SESSIONS_ENDED_SETTING, &now)
                .map_err(|e| e.to_string())?;
            format!("Sessions of {user} are ended.")
        }
    };
    let (here, elsewhere) = revoke_now(c, user).await;
    Ok(format!(
        "{msg} {here} ended here; {elsewhere} on other nodes end within seconds."
    ))
}

/// `POST /console/users/{user}`: resets a password, disables, enables or
/// ends sessions.
pub(crate) async fn change_user(
    State(c): State<Arc<Console>>,
    v: Viewer,
    Path(user): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let f: UserForm = match v.posted(&c, ApiRole::Admin, &body) {
        Ok((_, f)) => f,
        Err(r) => return r,
    };
    let ctx = c.deps.ctx.clone();
    if !matches!(ctx.store.credentials(&user), Ok(Some(_))) {
        return page::error_page(
            &c,
            Some(&v),
            StatusCode::NOT_FOUND,
            &format!("No account {user}."),
        );
    }
    let action = format!("user.{}", f.action);
    if !["password", "disable", "enable", "end"].contains(&f.action.as_str()) {
        return bad(&c, &v, "Unknown action.");
    }
    if matches!(f.action.as_str(), "password" | "enable")
        && let Err(r) = guard_role_holder(&c, &v, &user)
    {
        return r;
    }
    if f.action == "password"
        && let Err(r) = long_enough(&c, &v, &f.password)
    {
        return r;
    }
    if let Err(r) = crate::trail::view(
        &c,
        &v,
        ApiRole::Admin,
        &action,
        serde_json::json!({ "user": user }),
    ) {
        return r;
    }
    let result = apply_change(&c, &user, f).await;
    match result {
        Ok(msg) => page::done(&c, &v, "/console/users", msg),
        Err(e) => page::error_page(&c, Some(&v), StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// A room form.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct RoomForm {
    action: String,
    owners: String,
    reason: String,
}

/// `GET /console/rooms`
pub(crate) async fn rooms(State(c): State<Arc<Console>>, v: Viewer) -> Response {
    if let Err(r) = v.require(&c, ApiRole::Admin) {
        return r;
    }
    if let Err(r) = crate::trail::view(&c, &v, ApiRole::Admin, "console.rooms", serde_json::json!({})) {
        return r;
    }
    let ctx = &c.deps.ctx;
    let rooms = ctx.store.rooms().unwrap_or_default();
    let body = html! {
        h1 { "Rooms" }
        p.muted { "Rooms live at " (ctx.config.muc_domain()) "." }
        @if rooms.is_empty() {
            (page::empty("No rooms yet.", "Rooms appear here once someone creates one from their client."))
        } @else {
            table #rooms {
                thead { tr { th { "Room" } th { "Owners" } th { "Occupants now" } th { "Actions" } } }
                tbody {
                    @for (room, _) in rooms.iter().take(LISTED_MAX) {
                        @let owners: Vec<String> = chorus_xmpp::muc::affiliations(ctx, room).into_iter()
                            .filter(|(_, a)| *a == chorus_xmpp::muc::Affiliation::Owner).map(|(j, _)| j).collect();
                        @let to = format!("/console/rooms/{}", page::encode(room));
                        tr data-room=(room) {
                            td { strong { (room) } }
                            td { (owners.join(", ")) }
                            td { (chorus_xmpp::muc::occupants(ctx, room).len()) }
                            td {
                                form.inline method="post" action=(to) {
                                    input type="hidden" name="csrf" value=(v.csrf);
                                    input type="hidden" name="action" value="owners";
                                    input name="owners" value=(owners.join(", ")) aria-label=(format!("Owners of {room}"));
                                    button.secondary type="submit" { "Set owners" }
                                }
                                " "
                                form.inline method="post" action=(to) data-confirm=(format!("Destroy room {room}? Its occupants are removed.")) {
                                    input type="hidden" name="csrf" value=(v.csrf);
                                    input type="hidden" name="action" value="destroy";
                                    input name="reason" placeholder="reason" aria-label=(format!("Why {room} is destroyed"));
                                    button.danger type="submit" { "Destroy" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page::layout(&c, Some(&v), "Rooms", Flash::None, body)
}

/// `POST /console/rooms/{room}`: destroys a room or sets its owners.
pub(crate) async fn change_room(
    State(c): State<Arc<Console>>,
    v: Viewer,
    Path(room): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let f: RoomForm = match v.posted(&c, ApiRole::Admin, &body) {
        Ok((_, f)) => f,
        Err(r) => return r,
    };
    let ctx = &c.deps.ctx;
    if chorus_xmpp::muc::room(ctx, &room).is_none() {
        return page::error_page(&c, Some(&v), StatusCode::NOT_FOUND, &format!("No room {room}."));
    }
    let owners: Vec<String> = f
        .owners
        .split([',', ' ', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains('@') {
                s.to_lowercase()
            } else {
                format!("{}@{}", s.to_lowercase(), ctx.domain)
            }
        })
        .collect();
    let detail = serde_json::json!({ "room": room, "owners": owners, "reason": f.reason });
    match f.action.as_str() {
        "destroy" => {
            if let Err(r) = crate::trail::view(&c, &v, ApiRole::Admin, "room.destroy", detail) {
                return r;
            }
            let told = chorus_xmpp::muc::destroy_room_by_admin(ctx, &room, f.reason.trim());
            page::done(
                &c,
                &v,
                "/console/rooms",
                format!("Room {room} destroyed; {told} occupants told."),
            )
        }
        "owners" if !owners.is_empty() => {
            if let Err(r) = crate::trail::view(&c, &v, ApiRole::Admin, "room.owners", detail) {
                return r;
            }
            set_owners(&c, &room, &owners);
            page::done(
                &c,
                &v,
                "/console/rooms",
                format!("Owners of {room}: {}.", owners.join(", ")),
            )
        }
        "owners" => bad(&c, &v, "A room needs at least one owner."),
        _ => bad(&c, &v, "Unknown action."),
    }
}

/// Makes `owners` the room's owners: others with the owner affiliation
/// become admins (they keep access, lose ownership).
fn set_owners(c: &Console, room: &str, owners: &[String]) {
    let store = &c.deps.ctx.store;
    for (j, a) in chorus_xmpp::muc::affiliations(&c.deps.ctx, room) {
        if a == chorus_xmpp::muc::Affiliation::Owner && !owners.contains(&j) {
            let _ = store.set_room_affiliation(room, &j, Some("admin"));
        }
    }
    for o in owners {
        let _ = store.set_room_affiliation(room, o, Some("owner"));
    }
}

/// `GET /console/tokens`
pub(crate) async fn tokens(State(c): State<Arc<Console>>, v: Viewer) -> Response {
    if let Err(r) = v.require(&c, ApiRole::Admin) {
        return r;
    }
    if let Err(r) = crate::trail::view(&c, &v, ApiRole::Admin, "console.tokens", serde_json::json!({})) {
        return r;
    }
    let cfg = &c.deps.ctx.config.console;
    let body = html! {
        h1 { "API tokens and console roles" }
        p.muted { "Tokens are in " code { "[api] tokens" } " of every node's configuration, stored as SHA-256 digests: "
            "the token itself is shown once, by " code { "chorus api-token new NAME ROLE" } ". Remove an entry and restart to revoke it." }
        @if c.deps.tokens.is_empty() {
            (page::empty("No API tokens.", "The API refuses everyone until one is configured."))
        } @else {
            table #tokens {
                thead { tr { th { "Name" } th { "Role" } th { "Digest (first 12)" } } }
                tbody { @for t in &c.deps.tokens {
                    tr { td { (t.name) } td { span.tag { (format!("{:?}", t.role).to_lowercase()) } } td { code { (t.sha256.chars().take(12).collect::<String>()) } } }
                } }
            }
        }
        h2 { "Console roles" }
        p { "compliance: " (if cfg.compliance.is_empty() { "nobody".to_owned() } else { cfg.compliance.join(", ") }) }
        p { "admin: " (if cfg.admin.is_empty() { "nobody".to_owned() } else { cfg.admin.join(", ") }) }
    };
    page::layout(&c, Some(&v), "Tokens", Flash::None, body)
}
