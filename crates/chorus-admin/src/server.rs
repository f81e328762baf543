//! The HTTP listener's connections: a bounded number (in all and per
//! address), each given a TLS handshake timeout, a header-read timeout, an
//! idle timeout between requests, a timeout from a request's headers to
//! its response, and a write timeout on a client that stops reading. A
//! connection upgraded to WebSocket leaves this bookkeeping: the XMPP
//! session driver and its own limits take over.

use crate::client::{self, Client};
use crate::watched::{Activity, Stalled, Watched};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use chorus_core::config::{Cidr, Config};
use chorus_xmpp::runtime::address_key;
use chorus_xmpp::runtime::tls::ServerTls;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

/// The most a connection's read buffer holds (headers included).
const READ_BUFFER_MAX: usize = 64 * 1024;

/// Longest wait for open connections to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The listener's bounds, from `[http]` and `[limits]`.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// TLS handshake.
    pub handshake: Duration,
    /// A request's headers.
    pub header_read: Duration,
    /// A kept-alive connection waiting for its next request.
    pub idle: Duration,
    /// From a request's headers to its response.
    pub request: Duration,
    /// A write waiting on a client that does not read.
    pub write_stall: Duration,
    /// Connections at most.
    pub connections_max: usize,
    /// Connections per address (IPv6: per /64).
    pub per_ip_max: usize,
}

impl HttpLimits {
    /// The configured bounds.
    pub fn from_config(c: &Config) -> HttpLimits {
        HttpLimits {
            handshake: Duration::from_secs(c.limits.handshake_timeout_secs),
            header_read: Duration::from_secs(c.http.header_read_timeout_secs),
            idle: Duration::from_secs(c.http.idle_timeout_secs),
            request: Duration::from_secs(c.http.request_timeout_secs),
            write_stall: Duration::from_secs(c.limits.write_timeout_secs),
            connections_max: c.http.connections_max,
            per_ip_max: c.http.connections_per_ip_max,
        }
    }
}

/// Open connections, in all and per address.
struct Slots {
    max: usize,
    per_ip_max: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One open connection; frees its slot when dropped.
struct Slot {
    slots: Arc<Slots>,
    key: IpAddr,
}

impl Slots {
    /// A slot for a connection from `ip`; a trusted proxy (which carries
    /// many clients) counts only against the total.
    fn take(self: &Arc<Self>, ip: IpAddr, proxy: bool) -> Option<Slot> {
        let key = address_key(ip);
        let mut g = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mine = g.1.get(&key).copied().unwrap_or(0);
        if g.0 >= self.max || (mine >= self.per_ip_max && !proxy) {
            return None;
        }
        g.0 += 1;
        *g.1.entry(key).or_insert(0) += 1;
        metrics::gauge!("chorus_http_connections").set(g.0 as f64);
        Some(Slot {
            slots: self.clone(),
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = g.0.saturating_sub(1);
        if let Some(n) = g.1.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                g.1.remove(&self.key);
            }
        }
        metrics::gauge!("chorus_http_connections").set(g.0 as f64);
    }
}

/// What every connection shares.
struct Shared {
    app: Router,
    tls: Option<TlsAcceptor>,
    proxies: Vec<Cidr>,
    limits: HttpLimits,
    shutdown: watch::Receiver<bool>,
}

/// Serves `app` on `listener` (HTTPS when `tls` is given) until `shutdown`
/// turns true, then waits (up to a grace period) for open requests.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    config: &Config,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limits = HttpLimits::from_config(config);
    let slots = Arc::new(Slots {
        max: limits.connections_max,
        per_ip_max: limits.per_ip_max,
        open: Mutex::new((0, HashMap::new())),
    });
    let shared = Arc::new(Shared {
        app,
        tls,
        proxies: config.http.proxies(),
        limits,
        shutdown: shutdown.clone(),
    });
    let (alive, mut all_done) = mpsc::channel::<()>(1);
    let mut stop = shutdown;
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let proxy = shared.proxies.iter().any(|c| c.contains(peer.ip()));
        let Some(slot) = slots.take(peer.ip(), proxy) else {
            metrics::counter!("chorus_http_connections_refused_total").increment(1);
            drop(tcp);
            continue;
        };
        let (shared, alive) = (shared.clone(), alive.clone());
        tokio::spawn(async move {
            connection(shared, tcp, peer).await;
            drop((slot, alive));
        });
    }
    drop(alive);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, all_done.recv()).await;
    Ok(())
}

/// Resolves once the shutdown flag is set (the watch guard is dropped inside,
/// so the future stays `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn connection(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let activity = Activity::new();
    match &shared.tls {
        Some(acceptor) => {
            // The XMPP listener's TLS stream: it holds no buffer while the
            // connection is idle (a WebSocket session can idle for hours),
            // where tokio-rustls keeps rustls's 4 KiB receive buffer.
            let accept = ServerTls::accept(acceptor.config().clone(), tcp);
            let hs = tokio::time::timeout(shared.limits.handshake, accept).await;
            let Ok(Ok(mut tls)) = hs else {
                metrics::counter!("chorus_http_closed_total", "reason" => "handshake").increment(1);
                return;
            };
            // Nothing here binds to the channel: wipe the exporter secret
            // now rather than when the connection closes.
            let _ = tls.take_exporter();
            http1(&shared, Watched::new(tls, activity.clone()), peer, activity).await;
        }
        None => http1(&shared, Watched::new(tcp, activity.clone()), peer, activity).await,
    }
}

/// Serves HTTP/1.1 on one connection until it closes, stalls, or the node
/// shuts down (then the request in progress finishes).
async fn http1<T>(shared: &Arc<Shared>, io: Watched<T>, peer: SocketAddr, activity: Arc<Activity>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let (shared, activity) = (shared.clone(), activity.clone());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            respond(shared.clone(), activity.clone(), peer, req)
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.header_read)
        // A slow client's half-sent headers hold at most this much.
        .max_buf_size(READ_BUFFER_MAX)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut stop = shared.shutdown.clone();
    let (idle_ms, write_ms) = (
        shared.limits.idle.as_millis() as u64,
        shared.limits.write_stall.as_millis() as u64,
    );
    let tick = Duration::from_millis((idle_ms.min(write_ms) / 4).clamp(50, 1000));
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stopped(&mut stop) => break,
            _ = tokio::time::sleep(tick) => {
                if let Some(why) = activity.stalled(idle_ms, write_ms) {
                    let reason = match why {
                        Stalled::Idle => "idle",
                        Stalled::Write => "write_stall",
                    };
                    metrics::counter!("chorus_http_closed_total", "reason" => reason).increment(1);
                    return;
                }
            }
        }
    }
    // Shutting down: the request in progress (if any) finishes.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
}

/// One request: tagged with its client, answered by the router within the
/// request timeout (408 after it).
async fn respond(
    shared: Arc<Shared>,
    activity: Arc<Activity>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let in_flight = activity.request();
    let client: Client = client::identify(peer, shared.tls.is_some(), &shared.proxies, req.headers());
    req.extensions_mut().insert(client);
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(crate::PeerAddr(SocketAddr::new(
            client.ip,
            peer.port(),
        ))));
    let mut app = shared.app.clone();
    // An authenticated API read (no body to trickle) may take as long as
    // its work does: an export or a verification of a large archive runs
    // for minutes, bounded by the archive's own limits instead.
    // An upload takes as long as its bytes do; it is cut when its body
    // stalls instead (crate::upload).
    let long = req.uri().path().starts_with("/api/")
        && matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD)
        || req.uri().path().starts_with("/upload/") && req.method() == axum::http::Method::PUT;
    let answer = if long {
        Ok(app.call(req).await)
    } else {
        tokio::time::timeout(shared.limits.request, app.call(req)).await
    };
    drop(in_flight);
    Ok(match answer {
        Ok(Ok(r)) => r,
        Ok(Err(never)) => match never {},
        Err(_) => {
            metrics::counter!("chorus_http_closed_total", "reason" => "request_timeout").increment(1);
            let mut r = Response::new(Body::from("request timeout\n"));
            *r.status_mut() = StatusCode::REQUEST_TIMEOUT;
            r.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            r
        }
    })
}
