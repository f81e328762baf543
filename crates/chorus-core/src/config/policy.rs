//! `[policy]`: compliance settings that change what users may do, decided
//! by the firm rather than by each client.

use serde::{Deserialize, Serialize};

/// `[policy]`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Whether end-to-end encryption (OMEMO, OpenPGP) is allowed.
    pub e2e: E2ePolicy,
}

/// `policy.e2e`: an archived deployment must be able to read what it
/// archives, so end-to-end encryption is refused unless the firm allows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum E2ePolicy {
    /// Clients may publish OMEMO/OpenPGP keys and send encrypted messages;
    /// the archive then holds only ciphertext for those messages.
    Allow,
    /// Key publication and encrypted messages are refused with an error
    /// (`not-allowed`, `not-acceptable`) whose text says why.
    #[default]
    Deny,
}

impl E2ePolicy {
    /// Whether end-to-end encryption is allowed.
    pub fn allowed(self) -> bool {
        self == E2ePolicy::Allow
    }
}
