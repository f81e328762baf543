//! XMPP over WebSocket (RFC 7395): one element per text frame, `<open/>`
//! and `<close/>` in place of the stream tags.

use crate::HttpState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use chorus_xmpp::ns;
use chorus_xmpp::parser::parse_frame;
use chorus_xmpp::router::Routed;
use chorus_xmpp::runtime::ConnectionGuard;
use chorus_xmpp::session::{Output, Session, Transport};
use chorus_xmpp::xml::{self, ElementExt};
use futures_util::{SinkExt, StreamExt};
use std::net::IpAddr;
use tokio::sync::mpsc;

/// Handles the upgrade request.
pub async fn upgrade(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<crate::PeerAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let ip = peer.0.ip();
    let Ok(guard) = s.limiter.admit(ip) else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too many connections",
        )
            .into_response();
    };
    let max = s.ctx.config.limits.stanza_bytes_max;
    ws.protocols(["xmpp"])
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| run(s, socket, ip, guard))
}

async fn run(s: HttpState, socket: WebSocket, ip: IpAddr, mut slot: ConnectionGuard) {
    let ctx = s.ctx.clone();
    let mut shutdown = s.shutdown.clone();
    let mut session = Box::new(Session::new(ctx.clone(), Transport::WebSocket, ip));
    let (mut sink, mut stream) = socket.split();
    let mut rx: Option<mpsc::Receiver<Routed>> = None;
    let limits = &ctx.config.limits;
    let handshake_deadline =
        tokio::time::Instant::now() + std::time::Duration::from_secs(limits.handshake_timeout_secs);
    let mut dropped = false;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => session.on_shutdown(),
            routed = chorus_xmpp::runtime::recv_routed(&mut rx) => match routed {
                Some(item) => session.on_routed(item),
                None => rx = None,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => on_frame(&mut session, t.as_bytes(), limits.stanza_bytes_max, limits.xml_depth_max),
                Some(Ok(Message::Binary(_))) => {
                    session.on_parse_error(&chorus_xmpp::parser::ParseError::NotWellFormed("binary frame".into()))
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    dropped = !session.is_closed();
                    break;
                }
            },
            _ = tokio::time::sleep_until(handshake_deadline), if !session.is_bound() => session.on_handshake_timeout(),
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
        let _ = session.take_restart();
        let mut close = false;
        for o in session.take_outputs() {
            let text = match o {
                Output::Header => xml::ws_open(&ctx.domain, session.stream_id()),
                Output::Element(e) => e.to_xml(),
                Output::StreamError { condition, text } => {
                    close = true;
                    xml::ws_stream_error(condition, text.as_deref())
                }
                Output::Close => {
                    close = true;
                    format!("<close xmlns='{}'/>", ns::FRAMING)
                }
                Output::StartTls => continue,
            };
            if sink.send(Message::Text(text.into())).await.is_err() {
                dropped = true;
                break;
            }
        }
        if close {
            let _ = sink
                .send(Message::Text(format!("<close xmlns='{}'/>", ns::FRAMING).into()))
                .await;
            let _ = sink.close().await;
            break;
        }
    }
    session.on_disconnect(rx, !dropped);
}

fn on_frame(session: &mut Session, data: &[u8], bytes_max: usize, depth_max: usize) {
    match parse_frame(data, bytes_max, depth_max) {
        Ok(el) if el.is("open", ns::FRAMING) => session.on_ws_open(&el),
        Ok(el) if el.is("close", ns::FRAMING) => session.on_close(),
        Ok(el) => session.on_element(el),
        Err(e) => session.on_parse_error(&e),
    }
}
