//! XMPP over WebSocket (RFC 7395): one element per text frame, `<open/>`
//! and `<close/>` in place of the stream tags. The framing only; the
//! session runs on the same driver as TCP (`chorus_xmpp::runtime::driver`:
//! routed queue, stream-management acks, write timeout, shaping, shutdown
//! grace, handshake timeout, pool eviction).

use crate::{App, Client, HttpState};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chorus_xmpp::ns;
use chorus_xmpp::parser::{ParseError, parse_frame};
use chorus_xmpp::runtime::ConnectionGuard;
use chorus_xmpp::runtime::driver::{Framing, Read, Written, drive};
use chorus_xmpp::session::{Output, Session, Transport};
use chorus_xmpp::xml::{self, ElementExt};
use std::net::IpAddr;
use std::sync::Arc;

/// The WebSocket read buffer each connection holds.
const WS_READ_BUFFER: usize = 4096;

/// Handles the upgrade request. XMPP over WebSocket needs TLS (ours, or a
/// trusted proxy's that says so): the session would carry a password.
pub async fn upgrade(
    State(app): State<Arc<App>>,
    Extension(client): Extension<Client>,
    ws: WebSocketUpgrade,
) -> Response {
    if !client.secure {
        metrics::counter!("chorus_connections_refused_total", "reason" => "insecure_websocket").increment(1);
        return (
            StatusCode::FORBIDDEN,
            "XMPP over WebSocket needs TLS: connect with wss://, or through a proxy listed in http.trusted_proxies that sets X-Forwarded-Proto: https\n",
        )
            .into_response();
    }
    let ip = client.ip;
    let s = app.s.clone();
    let Ok(guard) = s.limiter.admit(ip) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    };
    let max = s.ctx.config.limits.stanza_bytes_max;
    ws.protocols(["xmpp"])
        .max_message_size(max)
        .max_frame_size(max)
        // tungstenite allocates its whole read buffer per connection (128
        // KiB by default): 144 KiB per idle web client. A stanza larger
        // than this grows it for as long as it takes.
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| run(s, socket, ip, guard))
}

async fn run(s: HttpState, socket: WebSocket, ip: IpAddr, mut slot: ConnectionGuard) {
    let ctx = s.ctx.clone();
    let session = Box::new(Session::new(ctx.clone(), Transport::WebSocket, ip));
    let limits = &ctx.config.limits;
    let mut framing = WsFraming {
        socket,
        domain: ctx.domain.clone(),
        bytes_max: limits.stanza_bytes_max,
        depth_max: limits.xml_depth_max,
    };
    // WebSocket has no STARTTLS: the driver only ever ends with Done.
    let _ = drive(&ctx, &mut framing, session, s.shutdown.clone(), &mut slot).await;
}

/// RFC 7395 framing: one element per text frame, `<open/>` and `<close/>`
/// in place of the stream tags.
struct WsFraming {
    socket: WebSocket,
    domain: String,
    bytes_max: usize,
    depth_max: usize,
}

impl Framing for WsFraming {
    type Chunk = Message;

    async fn read(&mut self) -> Read<Message> {
        match self.socket.recv().await {
            Some(Ok(m)) => Read::Chunk(m),
            Some(Err(_)) | None => Read::Eof,
        }
    }

    fn deliver(&mut self, msg: Message, session: &mut Session) -> usize {
        match msg {
            Message::Text(t) => {
                on_frame(session, t.as_bytes(), self.bytes_max, self.depth_max);
                let _ = session.take_restart();
                t.len()
            }
            Message::Binary(b) => {
                session.on_parse_error(&ParseError::NotWellFormed("binary frame".into()));
                b.len()
            }
            // Pings are answered by the WebSocket layer; they still cost
            // shaping, so a ping flood is slowed like any other.
            Message::Ping(p) | Message::Pong(p) => p.len(),
            Message::Close(_) => {
                session.on_close();
                0
            }
        }
    }

    async fn write(&mut self, outputs: Vec<Output>, session: &Session) -> std::io::Result<Written> {
        let mut written = Written::default();
        for o in outputs {
            let text = match o {
                Output::Header => xml::ws_open(&self.domain, session.stream_id()),
                Output::Element(e) => e.to_xml(),
                Output::StreamError { condition, text } => {
                    written.close = true;
                    xml::ws_stream_error(condition, text.as_deref())
                }
                Output::Close => {
                    written.close = true;
                    format!("<close xmlns='{}'/>", ns::FRAMING)
                }
                Output::StartTls => continue,
            };
            self.socket
                .send(Message::Text(text.into()))
                .await
                .map_err(std::io::Error::other)?;
        }
        Ok(written)
    }

    async fn close(&mut self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            let close = format!("<close xmlns='{}'/>", ns::FRAMING);
            let _ = self.socket.send(Message::Text(close.into())).await;
            let _ = self.socket.send(Message::Close(None)).await;
        })
        .await;
    }
}

fn on_frame(session: &mut Session, data: &[u8], bytes_max: usize, depth_max: usize) {
    match parse_frame(data, bytes_max, depth_max) {
        Ok(el) if el.is("open", ns::FRAMING) => session.on_ws_open(&el),
        Ok(el) if el.is("close", ns::FRAMING) => session.on_close(),
        Ok(el) => session.on_element(el),
        Err(e) => session.on_parse_error(&e),
    }
}
