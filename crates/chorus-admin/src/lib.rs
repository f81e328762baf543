//! The node's HTTP endpoint: XMPP over WebSocket (RFC 7395) at
//! `/xmpp-websocket`, Prometheus metrics at `/metrics`, the `/healthz` and
//! `/readyz` probes, `/cluster/status`, `/archive/status`,
//! `/directory/status` and the API's
//! routes. Served over TLS with the node's certificate unless the
//! configuration turns TLS off for a trusted proxy in front. The listener
//! bounds connections and times out slow clients ([`server`]); the
//! unauthenticated endpoints are rate-limited per address and serve cached
//! status documents ([`status`]). Shared files (XEP-0363) are uploaded and
//! downloaded under `/upload/` ([`upload`]).

mod client;
mod host_meta;
mod server;
mod status;
mod upload;
mod watched;
mod websocket;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chorus_xmpp::context::Context;
use chorus_xmpp::runtime::ConnectionLimiter;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub use client::Client;
pub use server::HttpLimits;
pub use status::StatusFn;
pub use upload::{FetchFn, FilesHttp};

/// The client's address (as [`Client`] names it), for handlers that log it.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Shared state of the HTTP endpoint.
#[derive(Clone)]
pub struct HttpState {
    /// Cluster status for `/cluster/status`, on clustered nodes.
    pub cluster_status: Option<StatusFn>,
    /// Archive status for `/archive/status`: Raft state, record count and
    /// the digest that proves two sites hold identical archives.
    pub archive_status: Option<StatusFn>,
    /// Directory status for `/directory/status`, with `[directory]`: the
    /// last synchronization, its error, and whether logins run on the
    /// grace period because the directory cannot be reached.
    pub directory_status: Option<StatusFn>,
    /// The XMPP context, for WebSocket sessions.
    pub ctx: Arc<Context>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// True once every listener is up; false again during shutdown.
    pub ready: Arc<AtomicBool>,
    /// Flips to true when the node shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Connection limits shared with the TCP listeners.
    pub limiter: Arc<ConnectionLimiter>,
    /// Further routes (the token-protected API), merged in as they are.
    pub api: Option<Router>,
    /// Shared files (XEP-0363), when file sharing is on.
    pub files: Option<FilesHttp>,
}

/// The routes' state: the caller's [`HttpState`] plus the status caches
/// and the rate limit of unauthenticated requests.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) s: HttpState,
    cluster: Option<Arc<status::Cached>>,
    archive: Option<Arc<status::Cached>>,
    directory: Option<Arc<status::Cached>>,
    rate: Arc<status::RateLimiter>,
    /// Upload slots being written on this node (one upload per slot).
    pub(crate) uploading: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// Builds the HTTP routes.
pub fn routes(state: HttpState) -> Router {
    let http = &state.ctx.config.http;
    let ttl = std::time::Duration::from_millis(http.status_cache_ms);
    let cache = |f: &Option<StatusFn>| f.clone().map(|f| Arc::new(status::Cached::new(f, ttl)));
    let app = Arc::new(App {
        cluster: cache(&state.cluster_status),
        archive: cache(&state.archive_status),
        directory: cache(&state.directory_status),
        rate: Arc::new(status::RateLimiter::new(http.status_requests_per_sec)),
        uploading: Arc::default(),
        s: state.clone(),
    });
    let mut r = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/cluster/status", get(cluster_status))
        .route("/archive/status", get(archive_status))
        .route("/directory/status", get(directory_status))
        .route("/.well-known/host-meta", get(host_meta_xrd))
        .route("/.well-known/host-meta.json", get(host_meta_jrd));
    if http.websocket {
        r = r.route("/xmpp-websocket", get(websocket::upgrade));
    }
    if state.files.is_some() && state.ctx.config.upload.enabled {
        let slot = get(upload::get)
            .head(upload::get)
            .put(upload::put)
            .options(upload::preflight);
        r = r.route("/upload/{user}/{token}/{filename}", slot);
    }
    let r = r.with_state(app);
    match state.api {
        Some(api) => r.merge(api),
        None => r,
    }
}

/// Refuses an unauthenticated request over its address's rate.
fn limited(app: &App, client: &Client) -> Option<Response> {
    (!app.rate.allow(client.ip)).then(|| {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(axum::http::header::RETRY_AFTER, "1")],
            "too many requests\n",
        )
            .into_response()
    })
}

async fn healthz(State(app): State<Arc<App>>, Extension(client): Extension<Client>) -> Response {
    limited(&app, &client).unwrap_or_else(|| "ok".into_response())
}

async fn readyz(State(app): State<Arc<App>>, Extension(client): Extension<Client>) -> Response {
    if let Some(r) = limited(&app, &client) {
        return r;
    }
    if let Some(f) = chorus_core::fatal::current() {
        let why = format!("fatal {} error: {}", f.component, f.reason);
        return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    }
    if app.s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

/// XEP-0156 `host-meta` (XRD).
async fn host_meta_xrd(
    State(app): State<Arc<App>>,
    Extension(client): Extension<Client>,
    headers: axum::http::HeaderMap,
) -> Response {
    host_meta_doc(&app, &client, &headers, false)
}

/// XEP-0156 `host-meta.json` (JRD).
async fn host_meta_jrd(
    State(app): State<Arc<App>>,
    Extension(client): Extension<Client>,
    headers: axum::http::HeaderMap,
) -> Response {
    host_meta_doc(&app, &client, &headers, true)
}

fn host_meta_doc(app: &App, client: &Client, headers: &axum::http::HeaderMap, json: bool) -> Response {
    if let Some(r) = limited(app, client) {
        return r;
    }
    let http = &app.s.ctx.config.http;
    let url = host_meta::websocket_url(http, headers);
    let (body, kind) = if json {
        (host_meta::jrd(url.as_deref()).to_string(), "application/json")
    } else {
        (host_meta::xrd(url.as_deref()), "application/xrd+xml")
    };
    host_meta::respond(body, kind, http.websocket_url.is_none())
}

/// A cached status document, or 404 with `missing` when the node has none.
async fn status_json(cached: &Option<Arc<status::Cached>>, missing: &str) -> Response {
    match cached {
        Some(c) => axum::Json(c.get().await.as_ref().clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": missing })),
        )
            .into_response(),
    }
}

async fn cluster_status(State(app): State<Arc<App>>, Extension(client): Extension<Client>) -> Response {
    match limited(&app, &client) {
        Some(r) => r,
        None => status_json(&app.cluster, "this node is not clustered").await,
    }
}

async fn directory_status(State(app): State<Arc<App>>, Extension(client): Extension<Client>) -> Response {
    match limited(&app, &client) {
        Some(r) => r,
        None => status_json(&app.directory, "no [directory] is configured").await,
    }
}

async fn archive_status(State(app): State<Arc<App>>, Extension(client): Extension<Client>) -> Response {
    match limited(&app, &client) {
        Some(r) => r,
        None => status_json(&app.archive, "archiving is off").await,
    }
}

async fn metrics(State(app): State<Arc<App>>, Extension(client): Extension<Client>) -> Response {
    if let Some(r) = limited(&app, &client) {
        return r;
    }
    let ctx = &app.s.ctx;
    metrics::gauge!("chorus_sessions").set(ctx.router.session_count() as f64);
    metrics::gauge!("chorus_parked_sessions").set(ctx.parked.len() as f64);
    app.s.metrics.render().into_response()
}

/// Serves HTTP (or HTTPS when `tls` is given) until shutdown, within the
/// configured connection bounds and timeouts.
pub async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, state: HttpState) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    let ctx = state.ctx.clone();
    if !ctx.config.http.tls && ctx.config.http.websocket && ctx.config.http.trusted_proxies.is_empty() {
        tracing::warn!(
            "http.tls is off and no http.trusted_proxies is set: WebSocket logins will be refused \
             (a client must reach us over TLS, ours or a trusted proxy's)"
        );
    }
    server::serve(listener, tls, routes(state), &ctx.config, shutdown).await
}
