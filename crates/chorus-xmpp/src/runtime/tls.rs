//! TLS for client connections on rustls's unbuffered API, so that the
//! connection owns every buffer and an idle one holds none.
//!
//! rustls's buffered connection keeps a 4 KiB receive buffer for its whole
//! life once anything was read: a third of an idle session's memory.
//! [`ServerTls`] reads through stack space in the poll that reads, keeps
//! received bytes only while they end inside a record, keeps plaintext
//! only until the reader takes it, and keeps encrypted output only until
//! the socket takes it. Each of those is freed as soon as it is empty.
//!
//! Every bound of the buffered connection holds here too: rustls rejects
//! a record over the protocol's maximum, so the received bytes stay under
//! one record plus one read (or one handshake message, at most 64 KiB,
//! while a handshake is under way); one read's plaintext is at most one
//! read's worth of records; output waits for the socket before more is
//! encrypted.

mod exporter;

pub use exporter::ExporterSecretLog;

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::server::UnbufferedServerConnection;
use tokio_rustls::rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio_rustls::rustls::{ProtocolVersion, ServerConfig, SupportedCipherSuite};
use zeroize::Zeroizing;

/// Stack space for one read from the socket: more than one record at the
/// protocol's maximum (16 KiB of plaintext plus its overhead).
const READ_SPACE: usize = 18 * 1024;
/// Most plaintext encrypted by one write; `write_all` comes back for more.
const WRITE_CHUNK: usize = 64 * 1024;
/// Room reserved per record for its header, tag and content type.
const RECORD_OVERHEAD: usize = 64;
/// Plaintext per record.
const RECORD_PLAINTEXT: usize = 16 * 1024;

/// One client connection's TLS, server side.
pub struct ServerTls {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Received bytes rustls has not yet let go of (the start of a record).
    incoming: Vec<u8>,
    /// Decrypted bytes the reader has not yet taken, from `plain_at`.
    plaintext: Vec<u8>,
    plain_at: usize,
    /// Encrypted bytes the socket has not yet taken, from `out_at`.
    outgoing: Vec<u8>,
    out_at: usize,
    /// The peer sent close_notify, or closed its side.
    read_closed: bool,
    close_queued: bool,
    /// The exporter master secret, until [`ServerTls::take_exporter`].
    exporter_secret: Option<Zeroizing<Vec<u8>>>,
}

/// What the connection waits for after [`ServerTls::pump`].
#[derive(Debug, PartialEq)]
enum Next {
    /// More input from the peer (the handshake is not done).
    Input,
    /// Nothing: application data may flow both ways.
    Traffic,
    /// Both sides have closed.
    Closed,
}

/// What [`ServerTls::pump`] does once application data may be written.
enum Action<'a> {
    Nothing,
    Encrypt(&'a [u8]),
    CloseNotify,
}

impl ServerTls {
    /// Completes a server handshake on `tcp`. Bytes the client sent after
    /// its Finished wait, decrypted, for the first read.
    pub async fn accept(config: Arc<ServerConfig>, tcp: TcpStream) -> io::Result<ServerTls> {
        let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
        let mut tls = ServerTls {
            tcp,
            conn,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            plain_at: 0,
            outgoing: Vec::new(),
            out_at: 0,
            read_closed: false,
            close_queued: false,
            exporter_secret: None,
        };
        loop {
            let next = match tls.pump(Action::Nothing) {
                Ok(next) => next,
                Err(e) => {
                    // The alert, so the client can say why (bounded by the
                    // caller's handshake timeout).
                    let _ = std::future::poll_fn(|cx| tls.poll_send(cx)).await;
                    return Err(e);
                }
            };
            std::future::poll_fn(|cx| tls.poll_send(cx)).await?;
            if !tls.conn.is_handshaking() {
                return Ok(tls);
            }
            if next == Next::Closed || tls.read_closed {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if std::future::poll_fn(|cx| tls.poll_receive(cx)).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// The TLS 1.3 exporter value for `tls-exporter` channel binding
    /// (RFC 9266), once; the secret behind it is wiped. `None` on TLS 1.2.
    pub fn take_exporter(&mut self) -> Option<[u8; 32]> {
        let secret = self.exporter_secret.take()?;
        if self.conn.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
            return None;
        }
        let Some(SupportedCipherSuite::Tls13(suite)) = self.conn.negotiated_cipher_suite() else {
            return None;
        };
        let mut out = [0u8; 32];
        exporter::export(suite, &secret, b"EXPORTER-Channel-Binding", None, &mut out)?;
        Some(out)
    }

    /// The negotiated protocol version.
    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// Lets rustls process what was received, collecting plaintext and
    /// queueing its output, until it waits for input or for us; then does
    /// `action` if application data may be written. On a TLS error the
    /// alert rustls prepared is queued for sending, and the error returned.
    fn pump(&mut self, action: Action<'_>) -> io::Result<Next> {
        let capture = self.conn.is_handshaking().then(exporter::Capture::arm);
        let result = self.process(action);
        if let Some(secret) = capture.as_ref().and_then(exporter::Capture::take) {
            self.exporter_secret = Some(secret);
        }
        if result.is_err() {
            self.queue_alerts();
        }
        result
    }

    /// [`ServerTls::pump`]'s loop over rustls's states.
    fn process(&mut self, action: Action<'_>) -> io::Result<Next> {
        let mut done = 0;
        let mut action = Some(action);
        let next = loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut self.incoming[done..]);
            done += discard;
            match state.map_err(invalid)? {
                ConnectionState::ReadTraffic(mut read) => {
                    while let Some(record) = read.next_record() {
                        self.plaintext.extend_from_slice(record.map_err(invalid)?.payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    append_with(&mut self.outgoing, RECORD_PLAINTEXT, |buf| {
                        encode_error(encode.encode(buf))
                    })?;
                }
                // Queued in `outgoing`, which goes out in order.
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::PeerClosed => self.read_closed = true,
                ConnectionState::Closed => break Next::Closed,
                ConnectionState::BlockedHandshake => break Next::Input,
                ConnectionState::WriteTraffic(mut write) => {
                    match action.take() {
                        Some(Action::Encrypt(data)) => {
                            let records = data.len().div_ceil(RECORD_PLAINTEXT).max(1);
                            append_with(
                                &mut self.outgoing,
                                data.len() + records * RECORD_OVERHEAD,
                                |buf| encrypt_error(write.encrypt(data, buf)),
                            )?;
                        }
                        Some(Action::CloseNotify) => {
                            append_with(&mut self.outgoing, RECORD_OVERHEAD, |buf| {
                                encrypt_error(write.queue_close_notify(buf))
                            })?;
                        }
                        Some(Action::Nothing) | None => {}
                    }
                    break Next::Traffic;
                }
                // Early data is never accepted (`max_early_data_size` is 0),
                // so rustls never reports it; refuse rather than drop it.
                _ => return Err(invalid("unexpected TLS state")),
            }
        };
        self.incoming.drain(..done);
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        Ok(next)
    }

    /// After an error, queues the alerts rustls prepared, so the peer
    /// learns why the connection ends.
    fn queue_alerts(&mut self) {
        loop {
            match self.conn.process_tls_records(&mut []).state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    if append_with(&mut self.outgoing, RECORD_OVERHEAD, |buf| {
                        encode_error(encode.encode(buf))
                    })
                    .is_err()
                    {
                        return;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                _ => return,
            }
        }
    }

    /// Writes queued output until the socket takes all of it, then frees it.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.out_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_at += n;
        }
        self.outgoing = Vec::new();
        self.out_at = 0;
        Poll::Ready(Ok(()))
    }

    /// Writes what the socket takes now without waiting or registering
    /// for a wake-up (the reader must not take the writer's place);
    /// whatever is left goes out with the next write or flush.
    fn try_send(&mut self) -> io::Result<()> {
        while self.out_at < self.outgoing.len() {
            match self.tcp.try_write(&self.outgoing[self.out_at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.outgoing = Vec::new();
        self.out_at = 0;
        Ok(())
    }

    /// One read from the socket, through stack space, appended to
    /// `incoming`; the number of bytes read (0 at the end of the stream).
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut space = [MaybeUninit::<u8>::uninit(); READ_SPACE];
        let mut buf = ReadBuf::uninit(&mut space);
        ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut buf))?;
        self.incoming.extend_from_slice(buf.filled());
        Poll::Ready(Ok(buf.filled().len()))
    }
}

/// Appends what `write` puts into a buffer of `guess` bytes to `out`,
/// growing it once if `write` asks for more (`Err(Some(size))`).
fn append_with(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> io::Result<()> {
    let start = out.len();
    out.resize(start + guess, 0);
    let written = match write(&mut out[start..]) {
        Err(Some(required)) => {
            out.resize(start + required, 0);
            write(&mut out[start..])
        }
        other => other,
    };
    match written {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(_) => {
            out.truncate(start);
            Err(invalid("TLS output could not be encoded"))
        }
    }
}

fn encode_error(r: Result<usize, EncodeError>) -> Result<usize, Option<usize>> {
    r.map_err(|e| match e {
        EncodeError::InsufficientSize(e) => Some(e.required_size),
        _ => None,
    })
}

fn encrypt_error(r: Result<usize, EncryptError>) -> Result<usize, Option<usize>> {
    r.map_err(|e| match e {
        EncryptError::InsufficientSize(e) => Some(e.required_size),
        _ => None,
    })
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

impl AsyncRead for ServerTls {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_at < this.plaintext.len() {
                let n = buf.remaining().min(this.plaintext.len() - this.plain_at);
                buf.put_slice(&this.plaintext[this.plain_at..this.plain_at + n]);
                this.plain_at += n;
                if this.plain_at == this.plaintext.len() {
                    this.plaintext = Vec::new();
                    this.plain_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            // What rustls answered while reading (a key update, say) goes
            // out now; a full socket does not hold up reading.
            this.try_send()?;
            if ready!(this.poll_receive(cx))? == 0 {
                this.read_closed = true;
                continue;
            }
            match this.pump(Action::Nothing) {
                Ok(Next::Closed) => this.read_closed = true,
                Ok(_) => {}
                Err(e) => {
                    let _ = this.try_send();
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

impl AsyncWrite for ServerTls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        if this.close_queued {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = data.len().min(WRITE_CHUNK);
        match this.pump(Action::Encrypt(&data[..n]))? {
            Next::Traffic => {}
            Next::Input => return Poll::Ready(Err(invalid("write before the handshake completed"))),
            Next::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
        this.try_send()?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_queued {
            ready!(this.poll_send(cx))?;
            this.close_queued = true;
            if this.pump(Action::CloseNotify)? != Next::Traffic {
                tracing::debug!("TLS closed before close_notify could be sent");
            }
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
