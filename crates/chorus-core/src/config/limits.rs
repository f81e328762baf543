//! `[limits]`: every bound the node enforces on connections, stanzas,
//! logins, rosters, rooms and rates, with its default.

use serde::{Deserialize, Serialize};

/// `[limits]`: every bound the node enforces.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest stanza accepted, in bytes.
    pub stanza_bytes_max: usize,
    /// Deepest element nesting accepted inside a stanza.
    pub xml_depth_max: usize,
    /// Open client connections that have authenticated, all listeners
    /// together.
    pub connections_max: usize,
    /// Open client connections from one IP address (IPv6: one /64).
    pub connections_per_ip_max: usize,
    /// Connections not yet authenticated, all listeners together: a pool
    /// of their own, so a flood of them cannot take logged-in users' slots.
    /// A connection over the bound is closed at once.
    pub unauthenticated_connections_max: usize,
    /// Connections not yet authenticated from one IP address (IPv6: one /64).
    pub unauthenticated_per_ip_max: usize,
    /// Bytes per second one connection may send (excess is slowed down).
    pub connection_bytes_per_sec: u64,
    /// Stanzas per second one user may send across all resources.
    pub user_stanzas_per_sec: u32,
    /// Burst allowance on top of `user_stanzas_per_sec`.
    pub user_stanzas_burst: u32,
    /// Resources one user may have bound at once.
    pub sessions_per_user_max: usize,
    /// Failed logins for one account within the window before it is throttled.
    pub auth_failures_per_account_max: u32,
    /// Failed logins from one address within the window before it is throttled.
    pub auth_failures_per_address_max: u32,
    /// Length of the failed-login window, in seconds.
    pub auth_failure_window_secs: u64,
    /// Time a new connection has to authenticate and bind, in seconds.
    pub handshake_timeout_secs: u64,
    /// Time one batch of output may take to write before the client
    /// counts as stalled and the connection is dropped, in seconds (a
    /// client that never reads).
    pub write_timeout_secs: u64,
    /// Stanzas queued for one session before it counts as stalled.
    pub session_queue_stanzas_max: usize,
    /// Items in one roster.
    pub roster_items_max: usize,
    /// Entities one session may send directed presence to (outside its
    /// roster) at once; each is told when the session goes offline.
    pub directed_presence_max: usize,
    /// Messages held in one user's offline queue.
    pub offline_messages_max: usize,
    /// Size of one vCard, in bytes.
    pub vcard_bytes_max: usize,
    /// Entries in one block list.
    pub blocklist_items_max: usize,
    /// PEP nodes (XEP-0163) one user may have.
    pub pep_nodes_max: usize,
    /// Items one PEP node keeps (a node's own `max_items` may be lower).
    pub pep_items_per_node_max: usize,
    /// Size of one published PEP item, in bytes.
    pub pep_item_bytes_max: usize,
    /// All PEP items of one user together, in bytes.
    pub pep_bytes_per_user_max: usize,
    /// Size of one user's private XML storage (XEP-0049) for one namespace,
    /// in bytes.
    pub private_storage_bytes_max: usize,
    /// Namespaces one user may keep in private XML storage.
    pub private_storage_namespaces_max: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            stanza_bytes_max: 256 * 1024,
            xml_depth_max: 32,
            connections_max: 10_000,
            connections_per_ip_max: 200,
            unauthenticated_connections_max: 2_000,
            unauthenticated_per_ip_max: 64,
            connection_bytes_per_sec: 1024 * 1024,
            user_stanzas_per_sec: 200,
            user_stanzas_burst: 400,
            sessions_per_user_max: 16,
            auth_failures_per_account_max: 5,
            auth_failures_per_address_max: 20,
            auth_failure_window_secs: 60,
            handshake_timeout_secs: 10,
            write_timeout_secs: 30,
            session_queue_stanzas_max: 1024,
            roster_items_max: 2000,
            directed_presence_max: 1000,
            offline_messages_max: 1000,
            vcard_bytes_max: 64 * 1024,
            blocklist_items_max: 1000,
            pep_nodes_max: 256,
            pep_items_per_node_max: 1000,
            pep_item_bytes_max: 128 * 1024,
            pep_bytes_per_user_max: 4 * 1024 * 1024,
            private_storage_bytes_max: 64 * 1024,
            private_storage_namespaces_max: 32,
        }
    }
}
