//! Drives one TCP connection: plain until STARTTLS, or TLS from the start.

use crate::context::Context;
use crate::parser::{StreamEvent, StreamParser};
use crate::router::Routed;
use crate::runtime::ConnectionGuard;
use crate::session::{Output, Session, Transport};
use crate::throttle::TokenBucket;
use crate::xml::{self, ElementExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

/// How often a session with unacknowledged stanzas is asked for an ack.
pub const ACK_REQUEST_INTERVAL_SECS: u64 = 30;

/// On a graceful shutdown, how long a stream-management session gets to
/// acknowledge what it received before the stream ends. Stanzas still
/// unacknowledged then are kept offline and delivered again (XEP-0198), so
/// without this grace a restart would hand clients duplicates.
pub const SHUTDOWN_ACK_WAIT: Duration = Duration::from_secs(1);
/// Read buffer size, in bytes.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// Time allowed for writing one batch of output before the peer counts as stalled.
const WRITE_TIMEOUT_SECS: u64 = 30;
/// Time allowed for the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT_SECS: u64 = 15;

enum End {
    StartTls(Box<Session>, Box<StreamParser>),
    Done,
}

/// Serves one accepted TCP connection until it ends.
pub async fn serve_connection(
    ctx: Arc<Context>,
    acceptor: TlsAcceptor,
    mut tcp: TcpStream,
    peer: SocketAddr,
    direct_tls: bool,
    shutdown: watch::Receiver<bool>,
    mut slot: ConnectionGuard,
) {
    let _ = tcp.set_nodelay(true);
    let limits = &ctx.config.limits;
    let parser = StreamParser::new(limits.stanza_bytes_max, limits.xml_depth_max);
    let handshake = tokio::time::Duration::from_secs(TLS_HANDSHAKE_TIMEOUT_SECS);
    if direct_tls {
        let session = Session::new(ctx.clone(), Transport::DirectTls, peer.ip());
        match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
            Ok(Ok(mut tls)) => {
                drive(&ctx, &mut tls, Box::new(session), parser, shutdown, &mut slot).await;
            }
            _ => tracing::debug!(%peer, "direct TLS handshake failed"),
        }
        return;
    }
    let session = Session::new(ctx.clone(), Transport::Tcp, peer.ip());
    let End::StartTls(mut session, mut parser) = drive(
        &ctx,
        &mut tcp,
        Box::new(session),
        parser,
        shutdown.clone(),
        &mut slot,
    )
    .await
    else {
        return;
    };
    match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
        Ok(Ok(mut tls)) => {
            session.on_tls_established();
            parser.reset();
            drive(&ctx, &mut tls, session, *parser, shutdown, &mut slot).await;
        }
        _ => tracing::debug!(%peer, "STARTTLS handshake failed"),
    }
}

/// Renders outputs for a TCP stream; returns (bytes, close, starttls).
fn render(outputs: Vec<Output>, domain: &str, stream_id: &str) -> (String, bool, bool) {
    let mut buf = String::new();
    let (mut close, mut starttls) = (false, false);
    for o in outputs {
        match o {
            Output::Header => buf.push_str(&xml::stream_header(domain, stream_id)),
            Output::Element(e) => buf.push_str(&e.to_xml()),
            Output::StreamError { condition, text } => {
                buf.push_str(&xml::stream_error(condition, text.as_deref()));
                buf.push_str("</stream:stream>");
                close = true;
            }
            Output::Close => {
                buf.push_str("</stream:stream>");
                close = true;
            }
            Output::StartTls => {
                buf.push_str(&format!("<proceed xmlns='{}'/>", crate::ns::TLS));
                starttls = true;
            }
        }
    }
    (buf, close, starttls)
}

async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Arc<Context>,
    stream: &mut S,
    mut session: Box<Session>,
    mut parser: StreamParser,
    mut shutdown: watch::Receiver<bool>,
    slot: &mut ConnectionGuard,
) -> End {
    let limits = &ctx.config.limits;
    let rate = limits.connection_bytes_per_sec as f64;
    let mut shaper = TokenBucket::new(rate, rate.max(limits.stanza_bytes_max as f64), Instant::now());
    let mut rx: Option<mpsc::Receiver<Routed>> = None;
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    let handshake_deadline = tokio::time::Instant::now() + Duration::from_secs(limits.handshake_timeout_secs);
    let mut ack_timer = tokio::time::interval(Duration::from_secs(ACK_REQUEST_INTERVAL_SECS));
    ack_timer.tick().await;
    // A connection that drops without a clean close may be resumed
    // (XEP-0198); one we ended with a stream error may not.
    let mut dropped = false;
    // Set once a shutdown waits for the client's acknowledgement.
    let mut draining: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed(), if draining.is_none() => {
                if session.unacked() > 0 {
                    session.on_ack_timer();
                    draining = Some(tokio::time::Instant::now() + SHUTDOWN_ACK_WAIT);
                } else {
                    session.on_shutdown();
                }
            }
            _ = tokio::time::sleep_until(draining.unwrap_or_else(tokio::time::Instant::now)), if draining.is_some() => {
                session.on_shutdown();
            }
            routed = recv_routed(&mut rx), if draining.is_none() => match routed {
                Some(item) => session.on_routed(item),
                None => rx = None,
            },
            n = stream.read(&mut buf) => match n {
                Ok(0) | Err(_) => {
                    dropped = !session.is_closed();
                    break;
                }
                Ok(n) => {
                    match parser.feed(&buf[..n]) {
                        Ok(events) => {
                            for ev in events {
                                match ev {
                                    StreamEvent::Header(a) => session.on_header(&a),
                                    StreamEvent::Element(e) => session.on_element(e),
                                    StreamEvent::Close => session.on_close(),
                                }
                                if session.take_restart() {
                                    parser.reset();
                                }
                            }
                        }
                        Err(e) => session.on_parse_error(&e),
                    }
                    let wait = shaper.take_debt(n as f64, Instant::now());
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
            },
            _ = tokio::time::sleep_until(handshake_deadline), if !session.is_bound() => session.on_handshake_timeout(),
            _ = ack_timer.tick() => session.on_ack_timer(),
            _ = slot.evicted() => session.on_evicted(),
        }
        if let Some(parked) = session.take_resumed() {
            session = parked.session;
            rx = Some(parked.rx);
        }
        if rx.is_none() {
            rx = session.take_rx();
        }
        if session.is_authenticated() && !slot.is_authenticated() && slot.promote().is_err() {
            session.on_server_full();
        }
        if draining.is_some() && session.unacked() == 0 && !session.is_closed() {
            session.on_shutdown();
        } else if session.wants_ack_request() {
            session.on_ack_timer();
        }
        let (out, close, starttls) = render(session.take_outputs(), &ctx.domain, session.stream_id());
        if !out.is_empty() {
            let w = async {
                stream.write_all(out.as_bytes()).await?;
                stream.flush().await
            };
            if !matches!(
                tokio::time::timeout(Duration::from_secs(WRITE_TIMEOUT_SECS), w).await,
                Ok(Ok(()))
            ) {
                dropped = true;
                break;
            }
        }
        if starttls {
            return End::StartTls(session, Box::new(parser));
        }
        if close {
            linger_close(stream).await;
            break;
        }
    }
    session.on_disconnect(rx, !dropped);
    End::Done
}

/// Bytes read and dropped after a stream error before the socket closes.
const LINGER_BYTES_MAX: usize = 64 * 1024;

/// Closes our side, then reads and drops what the client still sends (at
/// most [`LINGER_BYTES_MAX`], for at most 2 s) before the socket is
/// dropped: closing a socket with unread input sends a TCP reset, which
/// can destroy the stream error in flight before the client reads it.
async fn linger_close<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES_MAX {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// Receives from a session's queue once it has one; pends forever before
/// binding, so it can sit in a `select!` from the start.
pub async fn recv_routed(rx: &mut Option<mpsc::Receiver<Routed>>) -> Option<Routed> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}
