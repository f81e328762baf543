//! Drives one TCP connection: plain until STARTTLS, or TLS from the start.

use crate::context::Context;
use crate::parser::{StreamEvent, StreamParser};
use crate::runtime::ConnectionGuard;
use crate::runtime::driver::{End, Framing, Read, Written, drive};
use crate::runtime::tls::ServerTls;
use crate::sasl::ChannelBinding;
use crate::session::{Output, Session, Transport};
use crate::xml::{self, ElementExt};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Most bytes taken from the connection in one read. The space is on the
/// stack of the poll that reads (see [`read_chunk`]), so an idle
/// connection holds no read buffer at all.
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
    // The session, the parser and the TLS stream are boxed (together about
    // 2.5 KiB): inline, each would take one or more slots of this future for
    // the connection's whole life, as the future keeps a place for every
    // value that moves between its await points.
    let parser = Box::new(StreamParser::new(limits.stanza_bytes_max, limits.xml_depth_max));
    if direct_tls {
        let mut session = Box::new(Session::new(ctx.clone(), Transport::DirectTls, peer.ip()));
        match Box::pin(tls_handshake(&ctx, &acceptor, tcp, &slot, shutdown.clone())).await {
            Some(mut tls) => {
                session.set_channel_binding(channel_binding(&ctx, &mut tls));
                let mut framing = TcpFraming::new(&mut *tls, parser, &ctx.domain);
                drive(&ctx, &mut framing, session, shutdown, &mut slot).await;
            }
            None => tracing::debug!(%peer, "direct TLS handshake failed"),
        }
        return;
    }
    let session = Box::new(Session::new(ctx.clone(), Transport::Tcp, peer.ip()));
    let (mut session, mut parser) = {
        let mut plain = TcpFraming::new(&mut tcp, parser, &ctx.domain);
        let End::StartTls(session) = drive(&ctx, &mut plain, session, shutdown.clone(), &mut slot).await
        else {
            return;
        };
        (session, plain.parser)
    };
    match Box::pin(tls_handshake(&ctx, &acceptor, tcp, &slot, shutdown.clone())).await {
        Some(mut tls) => {
            session.on_tls_established();
            session.set_channel_binding(channel_binding(&ctx, &mut tls));
            parser.reset();
            let mut framing = TcpFraming::new(&mut *tls, parser, &ctx.domain);
            drive(&ctx, &mut framing, session, shutdown, &mut slot).await;
        }
        None => tracing::debug!(%peer, "STARTTLS handshake failed"),
    }
}

/// The TLS handshake, within [`TLS_HANDSHAKE_TIMEOUT_SECS`] and within
/// what is left of the connection's handshake timeout, and abandoned when
/// the node shuts down (a half-open handshake must not hold up draining).
/// The connection is a [`ServerTls`], which holds no buffer while idle.
async fn tls_handshake(
    ctx: &Context,
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    slot: &ConnectionGuard,
    mut shutdown: watch::Receiver<bool>,
) -> Option<Box<ServerTls>> {
    let login_by = slot.handshake_deadline(Duration::from_secs(ctx.config.limits.handshake_timeout_secs));
    let tls_by = tokio::time::Instant::now() + Duration::from_secs(TLS_HANDSHAKE_TIMEOUT_SECS);
    let accept = ServerTls::accept(acceptor.config().clone(), tcp);
    tokio::select! {
        r = tokio::time::timeout_at(login_by.min(tls_by), accept) => r.ok()?.ok().map(Box::new),
        _ = shutdown.wait_for(|s| *s) => None,
    }
}

/// What an established TLS connection offers for SCRAM-*-PLUS: on TLS 1.3,
/// the RFC 9266 exporter and our certificate's RFC 5929 hash. Nothing on
/// TLS 1.2, where clients bind with `tls-unique`, which we do not offer:
/// they log in with plain SCRAM instead of failing.
fn channel_binding(ctx: &Context, tls: &mut ServerTls) -> ChannelBinding {
    let exporter = tls.take_exporter().map(|k| k.to_vec());
    if tls.protocol_version() != Some(tokio_rustls::rustls::ProtocolVersion::TLSv1_3) {
        return ChannelBinding::default();
    }
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
    parser: Box<StreamParser>,
    domain: &'a str,
}

impl<'a, S> TcpFraming<'a, S> {
    fn new(stream: &'a mut S, parser: Box<StreamParser>, domain: &'a str) -> Self {
        TcpFraming {
            stream,
            parser,
            domain,
        }
    }
}

/// One read from `stream` into stack space, returned as an owned chunk of
/// exactly the bytes read. Cancel-safe: a poll either takes bytes and
/// returns them at once, or takes nothing. Thousands of idle sessions each
/// holding a 16 KiB read buffer were most of their memory.
async fn read_chunk<S: AsyncRead + Unpin>(stream: &mut S) -> Read<Vec<u8>> {
    std::future::poll_fn(|cx| {
        let mut space = [MaybeUninit::<u8>::uninit(); READ_BUFFER_BYTES];
        let mut buf = ReadBuf::uninit(&mut space);
        match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                Poll::Ready(Read::Chunk(buf.filled().to_vec()))
            }
            Poll::Ready(_) => Poll::Ready(Read::Eof),
        }
    })
    .await
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Framing for TcpFraming<'_, S> {
    type Chunk = Vec<u8>;

    async fn read(&mut self) -> Read<Vec<u8>> {
        read_chunk(self.stream).await
    }

    fn deliver(&mut self, chunk: Vec<u8>, session: &mut Session) -> usize {
        let n = chunk.len();
        match self.parser.feed(&chunk) {
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
        // On the heap: an array here would sit in every connection's
        // future for its whole life, not only while it closes.
        let mut sink = vec![0u8; 4096];
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::LocalRouter;
    use chorus_core::archive::MemArchive;
    use chorus_core::config::Config;
    use chorus_core::mem_store::MemStore;
    use tokio_rustls::rustls;

    /// Answers no server name: enough to build an acceptor for a future
    /// that is only measured, never run.
    #[derive(Debug)]
    struct NoCert;

    impl rustls::server::ResolvesServerCert for NoCert {
        fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
            None
        }
    }

    /// Every connection's task is allocated at the size of its whole
    /// future, for the connection's life: with 20,000 idle sessions each
    /// KiB here is 20 MB. An array held across an await (the 4 KiB linger
    /// buffer did that) or an inline handshake state would show here.
    #[tokio::test]
    async fn a_connection_future_stays_small() {
        let config = Config::default();
        let ctx = Arc::new(Context::new(
            config.clone(),
            Arc::new(MemStore::new()),
            Arc::new(LocalRouter::new()),
            Arc::new(MemArchive::default()),
        ));
        let tls =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(NoCert));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (tcp, peer) = listener.accept().await.expect("accept");
        let slot = crate::runtime::ConnectionLimiter::new(&config.limits)
            .admit(peer.ip())
            .expect("admitted");
        let (_stop, shutdown) = watch::channel(false);
        let fut = serve_connection(
            ctx,
            TlsAcceptor::from(Arc::new(tls)),
            tcp,
            peer,
            false,
            shutdown,
            slot,
        );
        let bytes = std::mem::size_of_val(&fut);
        println!("connection future: {bytes} bytes");
        assert!(
            bytes <= FUTURE_BYTES_MAX,
            "a connection's future is {bytes} bytes"
        );
    }

    /// The bound for [`a_connection_future_stays_small`], with room for
    /// debug builds, whose futures are larger than release builds'.
    const FUTURE_BYTES_MAX: usize = 4096;
}
