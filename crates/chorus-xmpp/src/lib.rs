//! The XMPP layer of Chorus: the incremental stream parser, the sans-IO
//! client session state machine with its RFC 6120/6121 and XEP handlers,
//! the session router, and the thin runtime that drives sessions over TCP,
//! TLS and WebSocket transports.
//!
//! This crate never touches RocksDB or the cluster transport: it talks to
//! [`chorus_core::store::Store`], [`chorus_core::archive::Archive`] and the
//! [`router::Router`] trait, which the server wires up.

pub mod caps;
pub mod component;
pub mod context;
pub mod muc;
pub mod ns;
pub mod offload;
pub mod parser;
pub mod pep;
pub mod push;
pub mod queue;
pub mod remote;
pub mod revoke;
pub mod router;
pub mod runtime;
pub mod sasl;
pub mod session;
pub mod shared;
pub mod throttle;
pub mod xml;
