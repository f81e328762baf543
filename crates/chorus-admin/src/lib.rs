//! The node's HTTP endpoint: XMPP over WebSocket (RFC 7395) at
//! `/xmpp-websocket`, Prometheus metrics at `/metrics`, and the `/healthz`
//! and `/readyz` probes. Served over TLS with the node's certificate unless
//! the configuration turns TLS off for a trusted proxy in front.

mod tls_listener;
mod websocket;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chorus_xmpp::context::Context;
use chorus_xmpp::runtime::ConnectionLimiter;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub use tls_listener::TlsListener;

/// The client's address, for connection limits on WebSocket sessions.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub std::net::SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// Produces the cluster status as JSON.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Shared state of the HTTP endpoint.
#[derive(Clone)]
pub struct HttpState {
    /// Cluster status for `/cluster/status`, on clustered nodes.
    pub cluster_status: Option<StatusFn>,
    /// Archive status for `/archive/status`: Raft state, record count and
    /// the digest that proves two sites hold identical archives.
    pub archive_status: Option<StatusFn>,
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
}

/// Builds the HTTP routes.
pub fn routes(state: HttpState) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/cluster/status", get(cluster_status))
        .route("/archive/status", get(archive_status));
    if state.ctx.config.http.websocket {
        r = r.route("/xmpp-websocket", get(websocket::upgrade));
    }
    let api = state.api.clone();
    let r = r.with_state(state);
    match api {
        Some(api) => r.merge(api),
        None => r,
    }
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, String) {
    if let Some(f) = chorus_core::fatal::current() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("fatal {} error: {}", f.component, f.reason),
        );
    }
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready".into())
    }
}

/// A status document, or 404 with `missing` when the node has none.
fn status_json(f: &Option<StatusFn>, missing: &str) -> (StatusCode, axum::Json<serde_json::Value>) {
    match f {
        Some(f) => (StatusCode::OK, axum::Json(f())),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": missing })),
        ),
    }
}

async fn cluster_status(State(s): State<HttpState>) -> (StatusCode, axum::Json<serde_json::Value>) {
    status_json(&s.cluster_status, "this node is not clustered")
}

async fn archive_status(State(s): State<HttpState>) -> (StatusCode, axum::Json<serde_json::Value>) {
    status_json(&s.archive_status, "archiving is off")
}

async fn metrics(State(s): State<HttpState>) -> String {
    metrics::gauge!("chorus_sessions").set(s.ctx.router.session_count() as f64);
    metrics::gauge!("chorus_parked_sessions").set(s.ctx.parked.len() as f64);
    s.metrics.render()
}

/// Serves HTTP (or HTTPS when `tls` is given) until shutdown.
pub async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, state: HttpState) -> std::io::Result<()> {
    let mut shutdown = state.shutdown.clone();
    let app = routes(state);
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    match tls {
        Some(acceptor) => {
            axum::serve(
                TlsListener::new(listener, acceptor),
                app.into_make_service_with_connect_info::<PeerAddr>(),
            )
            .with_graceful_shutdown(stop)
            .await
        }
        None => {
            axum::serve(listener, app.into_make_service_with_connect_info::<PeerAddr>())
                .with_graceful_shutdown(stop)
                .await
        }
    }
}
