//! The one session driver every transport shares. It performs the
//! session's effects: reading (through the transport's [`Framing`]),
//! awaiting a message's archive record until it is durable, the routed
//! queue, the stream-management ack timer and ack requests, the
//! handshake timeout, eviction from the unauthenticated pool and promotion
//! to a logged-in slot, byte shaping, the write timeout, the shutdown ack
//! grace, switching to a resumed session and the close. Only framing
//! differs between TCP (an XML stream, STARTTLS) and WebSocket (one
//! element per frame, RFC 7395).

use crate::context::Context;
use crate::router::Routed;
use crate::runtime::ConnectionGuard;
use crate::session::{Output, Session};
use crate::throttle::TokenBucket;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often a session with unacknowledged stanzas is asked for an ack.
pub const ACK_REQUEST_INTERVAL_SECS: u64 = 30;

/// On a graceful shutdown, how long a stream-management session gets to
/// acknowledge what it received before the stream ends. Stanzas still
/// unacknowledged then are kept offline and delivered again (XEP-0198), so
/// without this grace a restart would hand clients duplicates.
pub const SHUTDOWN_ACK_WAIT: Duration = Duration::from_secs(1);

/// What a transport's read produced.
pub enum Read<C> {
    /// Something to hand to the session with [`Framing::deliver`].
    Chunk(C),
    /// The peer closed the connection, or it broke.
    Eof,
}

/// What writing a batch of output asked for.
#[derive(Default)]
pub struct Written {
    /// The stream is over: close the connection.
    pub close: bool,
    /// Upgrade to TLS (TCP only).
    pub starttls: bool,
}

/// How one transport frames a session's stream.
pub trait Framing {
    /// What one read yields.
    type Chunk;
    /// Reads the next chunk. Must be cancel-safe: the driver selects it
    /// against timers and the routed queue.
    fn read(&mut self) -> impl Future<Output = Read<Self::Chunk>> + Send;
    /// Hands a chunk to the session; returns its size in bytes, for
    /// shaping.
    fn deliver(&mut self, chunk: Self::Chunk, session: &mut Session) -> usize;
    /// Writes a batch of output.
    fn write(
        &mut self,
        outputs: Vec<Output>,
        session: &Session,
    ) -> impl Future<Output = std::io::Result<Written>> + Send;
    /// Ends the connection after the stream closed.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// How a drive ended.
pub enum End {
    /// The session asked for STARTTLS: the caller upgrades and drives on.
    StartTls(Box<Session>),
    /// The connection is over (the session has been ended or parked).
    Done,
}

/// Drives `session` over `framing` until the connection ends.
pub async fn drive<F: Framing>(
    ctx: &Arc<Context>,
    framing: &mut F,
    mut session: Box<Session>,
    mut shutdown: watch::Receiver<bool>,
    slot: &mut ConnectionGuard,
) -> End {
    let limits = &ctx.config.limits;
    let rate = limits.connection_bytes_per_sec as f64;
    let mut shaper = TokenBucket::new(rate, rate.max(limits.stanza_bytes_max as f64), Instant::now());
    let mut rx: Option<crate::queue::Receiver<Routed>> = None;
    let handshake_deadline = slot.handshake_deadline(Duration::from_secs(limits.handshake_timeout_secs));
    let mut ack_timer = tokio::time::interval(Duration::from_secs(ACK_REQUEST_INTERVAL_SECS));
    ack_timer.tick().await;
    // A connection that drops without a clean close may be resumed
    // (XEP-0198); one we ended with a stream error may not.
    let mut dropped = false;
    // Set once a shutdown waits for the client's acknowledgement.
    let mut draining: Option<tokio::time::Instant> = None;
    // A client that never reads is dropped once one write takes this long.
    let write_timeout = Duration::from_secs(limits.write_timeout_secs);
    loop {
        session.set_now(Instant::now());
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
            read = framing.read() => match read {
                Read::Eof => {
                    dropped = !session.is_closed();
                    break;
                }
                Read::Chunk(c) => {
                    let n = framing.deliver(c, &mut session);
                    // A message waits for its archive record's group
                    // commit before it is delivered; the session holds
                    // later input meanwhile, and no thread blocks.
                    while let Some(wait) = session.take_durable_wait() {
                        let result = wait.await;
                        session.set_now(Instant::now());
                        session.on_durable(result);
                    }
                    let wait = shaper.take_debt(n as f64, Instant::now());
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
            },
            _ = tokio::time::sleep_until(handshake_deadline), if !session.is_bound() => session.on_handshake_timeout(),
            _ = slot.evicted() => session.on_evicted(),
            _ = ack_timer.tick() => session.on_ack_timer(),
        }
        session.set_now(Instant::now());
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
        let outputs = session.take_outputs();
        let mut written = Written::default();
        if !outputs.is_empty() {
            match tokio::time::timeout(write_timeout, framing.write(outputs, &session)).await {
                Ok(Ok(w)) => written = w,
                _ => {
                    dropped = true;
                    break;
                }
            }
        }
        if written.starttls {
            return End::StartTls(session);
        }
        if written.close {
            framing.close().await;
            break;
        }
    }
    if let Some(timer) = session.on_disconnect(rx, !dropped) {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timer.after).await;
            crate::session::expire_parked(&ctx, timer.session_id);
        });
    }
    End::Done
}

/// Receives from a session's queue once it has one; pends forever before
/// binding, so it can sit in a `select!` from the start.
pub async fn recv_routed(rx: &mut Option<crate::queue::Receiver<Routed>>) -> Option<Routed> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}
