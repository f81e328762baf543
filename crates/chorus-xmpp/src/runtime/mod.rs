//! The thin I/O runtime that drives [`crate::session::Session`]s: one
//! driver for every transport (`driver`), the TCP framing with STARTTLS
//! and direct TLS (`conn`) over our unbuffered TLS stream (`tls`), and the
//! connection limiter. The HTTP crate
//! supplies the WebSocket framing to the same driver.

mod conn;
pub mod driver;
mod limiter;
pub mod tls;

pub use conn::serve_connection;
pub use driver::{ACK_REQUEST_INTERVAL_SECS, recv_routed};
pub use limiter::{ConnectionGuard, ConnectionLimiter, Refusal, address_key};
