//! The compliance and operations console at `/console/`, served by every
//! node's HTTPS listener: server-rendered HTML (maud), one stylesheet and a
//! little JavaScript embedded in the binary, no third-party assets.
//!
//! Officers (the `compliance` role) search the archive, open the
//! conversation around a hit, place and release legal holds, run exports,
//! read the retention policy and the audit trail; admins (the `admin` role) see the cluster's
//! health, manage accounts and rooms, see the API tokens and change the
//! retention policy under dual control. Sign-in is with
//! an account of the domain that `[console]` gives a role, or with an API
//! token ([`auth`]). Every page view and action is in the archive's audit
//! trail: reads of archive content through the same audited operations the
//! API uses, other views and admin actions through [`trail`].

// Handlers refuse with whole pages: `Result<_, Response>` is the natural
// shape here, and a 128-byte error value on a request path costs nothing.
#![allow(clippy::result_large_err)]

mod assets;
mod auth;
mod exports;
mod finder;
mod health;
mod holds;
mod page;
mod people;
mod retention;
mod search;
mod sessions;
mod trail;
mod welcome;

use axum::Router;
use axum::routing::{get, post};
use chorus_archive::compliance::Compliance;
use chorus_core::config::ApiToken;
use chorus_xmpp::context::Context;
use std::sync::Arc;

/// A status document (`/cluster/status`, `/archive/status`).
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Renders the node's Prometheus metrics (for the health page's charts).
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;

/// What the console reads and acts on.
pub struct Deps {
    /// The XMPP context: configuration, store, router.
    pub ctx: Arc<Context>,
    /// The archive's compliance side, when archiving is on.
    pub compliance: Option<Arc<Compliance>>,
    /// The API tokens (`[api]`), which may also sign in.
    pub tokens: Vec<ApiToken>,
    /// The cluster's status, on clustered nodes.
    pub cluster_status: Option<StatusFn>,
    /// The archive's status, when archiving is on.
    pub archive_status: Option<StatusFn>,
    /// The node's metrics.
    pub metrics: MetricsFn,
    /// The enterprise directory's synchronization status, when there is one.
    pub directory_status: Option<StatusFn>,
    /// The node's last warnings and errors (a JSON array, newest first:
    /// `at_ms`, `level`, `target`, `text`).
    pub recent_errors: Option<StatusFn>,
}

/// The console's state, shared by its handlers.
pub(crate) struct Console {
    pub(crate) deps: Deps,
    pub(crate) sessions: sessions::Sessions,
    pub(crate) exports: exports::Jobs,
    pub(crate) history: health::History,
    pub(crate) trail: trail::Trail,
}

/// The console's routes, and its background work (the metrics sampler,
/// the audit trail's queue), which ends when the routes are dropped.
pub fn routes(deps: Deps) -> Router {
    let console = Arc::new(Console {
        sessions: sessions::Sessions::new(&deps.ctx.config.console),
        exports: exports::Jobs::default(),
        history: health::History::default(),
        trail: trail::Trail::default(),
        deps,
    });
    health::spawn_sampler(Arc::downgrade(&console));
    trail::spawn(Arc::downgrade(&console));
    Router::new()
        .route("/console", get(page::to_home))
        .route("/console/", get(page::home))
        .route("/console/assets/{name}", get(assets::serve))
        .route("/console/login", get(auth::login_page).post(auth::login))
        .route("/console/logout", post(auth::logout))
        .route("/console/search", get(search::search))
        .route("/console/conversation", get(search::conversation))
        .route("/console/holds", get(holds::list).post(holds::place))
        .route("/console/holds/{id}/release", post(holds::release))
        .route("/console/exports", get(exports::list).post(exports::start))
        .route("/console/exports/{id}/download", get(exports::download))
        .route("/console/audit", get(trail::page))
        .route(
            "/console/retention",
            get(retention::page).post(retention::propose),
        )
        .route("/console/retention/changes/{id}", post(retention::decide))
        .route("/console/health", get(health::page))
        .route("/console/users", get(people::users).post(people::create_user))
        .route("/console/users/{user}", post(people::change_user))
        .route("/console/rooms", get(people::rooms))
        .route("/console/rooms/{room}", post(people::change_room))
        .route("/console/tokens", get(people::tokens))
        .route("/console/people", get(finder::page))
        .route(
            "/console/welcome/{user}/{token}",
            get(welcome::page).post(welcome::set),
        )
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(console)
}
