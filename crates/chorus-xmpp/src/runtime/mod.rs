//! The thin I/O runtime that drives [`crate::session::Session`]s over TCP
//! (with STARTTLS) and direct TLS. WebSocket sessions are driven by the HTTP
//! crate with the same session API.

mod conn;
mod limiter;

pub use conn::{ACK_REQUEST_INTERVAL_SECS, recv_routed, serve_connection};
pub use limiter::{ConnectionGuard, ConnectionLimiter, Refusal, address_key};
