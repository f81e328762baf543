//! `[push]`: what a XEP-0357 push notification tells the app server (the
//! firm's push service, attached as a XEP-0114 component). The message
//! text leaves the firm only if it says so.

use serde::{Deserialize, Serialize};

/// `[push]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Let clients register for push notifications at all.
    pub enabled: bool,
    /// Include who sent the last message (`last-message-sender`).
    pub include_sender: bool,
    /// Include the text of the last message (`last-message-body`).
    pub include_body: bool,
    /// Push services one user may register (one per device, usually).
    pub registrations_per_user_max: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            enabled: true,
            include_sender: true,
            include_body: false,
            registrations_per_user_max: 10,
        }
    }
}
