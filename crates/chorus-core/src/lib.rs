//! Core types shared by every Chorus crate: configuration, SCRAM credentials,
//! roster items, and the storage and archive seams that the XMPP layer talks
//! to. This crate performs no I/O: it never opens a file or a socket.

pub mod api_query;
pub mod archive;
pub mod config;
pub mod credentials;
pub mod directory;
pub mod failpoint;
pub mod fatal;
pub mod files;
pub mod group_commit;
pub mod hi;
pub mod hlc;
pub mod jids;
pub mod lww;
pub mod mem_store;
pub mod replication;
pub mod roster;
pub mod setup_link;
pub mod shared_groups;
pub mod store;
pub mod time;

pub use jid;
