//! Drives one TCP connection: plain until STARTTLS, or TLS from the start.

use crate::context::Context;
use crate::parser::{StreamEvent, StreamParser};
use crate::runtime::ConnectionGuard;
use crate::runtime::driver::{End, Framing, Read, Written, drive};
use crate::sasl::ChannelBinding;
use crate::session::{Output, Session, Transport};
use crate::xml::{self, ElementExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Read buffer size, in bytes.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// Time allowed for the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT_SECS: u64 = 15;

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
    if direct_tls {
        let mut session = Session::new(ctx.clone(), Transport::DirectTls, peer.ip());
        match tls_handshake(&ctx, &acceptor, tcp, &slot, shutdown.clone()).await {
            Some(mut tls) => {
                session.set_channel_binding(channel_binding(&ctx, &tls));
                let mut framing = TcpFraming::new(&mut tls, parser, &ctx.domain);
                drive(&ctx, &mut framing, Box::new(session), shutdown, &mut slot).await;
            }
            None => tracing::debug!(%peer, "direct TLS handshake failed"),
        }
        return;
    }
    let session = Session::new(ctx.clone(), Transport::Tcp, peer.ip());
    let (mut session, mut parser) = {
        let mut plain = TcpFraming::new(&mut tcp, parser, &ctx.domain);
        let End::StartTls(session) =
            drive(&ctx, &mut plain, Box::new(session), shutdown.clone(), &mut slot).await
        else {
            return;
        };
        (session, plain.parser)
    };
    match tls_handshake(&ctx, &acceptor, tcp, &slot, shutdown.clone()).await {
        Some(mut tls) => {
            session.on_tls_established();
            session.set_channel_binding(channel_binding(&ctx, &tls));
            parser.reset();
            let mut framing = TcpFraming::new(&mut tls, parser, &ctx.domain);
            drive(&ctx, &mut framing, session, shutdown, &mut slot).await;
        }
        None => tracing::debug!(%peer, "STARTTLS handshake failed"),
    }
}

/// The TLS handshake, within [`TLS_HANDSHAKE_TIMEOUT_SECS`] and within
/// what is left of the connection's handshake timeout, and abandoned when
/// the node shuts down (a half-open handshake must not hold up draining).
async fn tls_handshake(
    ctx: &Context,
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    slot: &ConnectionGuard,
    mut shutdown: watch::Receiver<bool>,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let login_by = slot.handshake_deadline(Duration::from_secs(ctx.config.limits.handshake_timeout_secs));
    let tls_by = tokio::time::Instant::now() + Duration::from_secs(TLS_HANDSHAKE_TIMEOUT_SECS);
    tokio::select! {
        r = tokio::time::timeout_at(login_by.min(tls_by), acceptor.accept(tcp)) => r.ok()?.ok(),
        _ = shutdown.wait_for(|s| *s) => None,
    }
}

/// What an established TLS connection offers for SCRAM-*-PLUS: on TLS 1.3,
/// the RFC 9266 exporter and our certificate's RFC 5929 hash. Nothing on
/// TLS 1.2, where clients bind with `tls-unique`, which we do not offer:
/// they log in with plain SCRAM instead of failing.
fn channel_binding(ctx: &Context, tls: &tokio_rustls::server::TlsStream<TcpStream>) -> ChannelBinding {
    let conn = tls.get_ref().1;
    if conn.protocol_version() != Some(tokio_rustls::rustls::ProtocolVersion::TLSv1_3) {
        return ChannelBinding::default();
    }
    let exporter = conn
        .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
        .ok()
        .map(|k| k.to_vec());
    ChannelBinding {
        tls_exporter: exporter,
        tls_server_end_point: ctx.tls_server_end_point.get().cloned(),
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

/// An XML stream over TCP or TLS.
struct TcpFraming<'a, S> {
    stream: &'a mut S,
    parser: StreamParser,
    buf: Vec<u8>,
    domain: &'a str,
}

impl<'a, S> TcpFraming<'a, S> {
    fn new(stream: &'a mut S, parser: StreamParser, domain: &'a str) -> Self {
        TcpFraming {
            stream,
            parser,
            buf: vec![0u8; READ_BUFFER_BYTES],
            domain,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Framing for TcpFraming<'_, S> {
    type Chunk = usize;

    async fn read(&mut self) -> Read<usize> {
        match self.stream.read(&mut self.buf).await {
            Ok(0) | Err(_) => Read::Eof,
            Ok(n) => Read::Chunk(n),
        }
    }

    fn deliver(&mut self, n: usize, session: &mut Session) -> usize {
        match self.parser.feed(&self.buf[..n]) {
            Ok(events) => {
                for ev in events {
                    match ev {
                        StreamEvent::Header(a) => session.on_header(&a),
                        StreamEvent::Element(e) => session.on_element(e),
                        StreamEvent::Close => session.on_close(),
                    }
                    if session.take_restart() {
                        self.parser.reset();
                    }
                }
            }
            Err(e) => session.on_parse_error(&e),
        }
        n
    }

    async fn write(&mut self, outputs: Vec<Output>, session: &Session) -> std::io::Result<Written> {
        let (out, close, starttls) = render(outputs, self.domain, session.stream_id());
        self.stream.write_all(out.as_bytes()).await?;
        self.stream.flush().await?;
        Ok(Written { close, starttls })
    }

    async fn close(&mut self) {
        linger_close(self.stream).await;
    }
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
