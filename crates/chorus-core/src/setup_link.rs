//! One-time links that let a person set their own password (`chorus user
//! import --links`): the account is created with keys no password opens,
//! and the replicated setting [`SETUP_LINK_SETTING`] holds the SHA-256 of
//! a random 256-bit token and when it expires. The console's welcome page
//! (`/console/welcome/<user>/<token>`, on any site) checks the token in
//! constant time, sets the password and clears the setting: one use.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The per-user setting holding `sha256-hex:expires-ms` (empty once used).
pub const SETUP_LINK_SETTING: &str = "account.setup_link";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token (64 hex digits).
pub fn new_token() -> String {
    hex(&rand::random::<[u8; 32]>())
}

/// The setting's value for `token`, valid until `expires_ms`.
pub fn setting_value(token: &str, expires_ms: u64) -> String {
    format!("{}:{expires_ms}", hex(&Sha256::digest(token.as_bytes())))
}

/// Whether `token` opens the link `setting` describes at `now_ms`.
pub fn admits(setting: Option<&str>, token: &str, now_ms: u64) -> bool {
    let Some((digest, expires)) = setting.and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(expires) = expires.parse::<u64>() else {
        return false;
    };
    let given = hex(&Sha256::digest(token.as_bytes()));
    let same = given.len() == digest.len() && bool::from(given.as_bytes().ct_eq(digest.as_bytes()));
    same && now_ms < expires
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_its_link_until_it_expires_and_no_other_does() {
        let t = new_token();
        assert_eq!(t.len(), 64);
        let v = setting_value(&t, 1_000);
        assert!(!v.contains(&t), "only the digest is kept");
        assert!(admits(Some(&v), &t, 999));
        assert!(!admits(Some(&v), &t, 1_000), "expired");
        assert!(!admits(Some(&v), &new_token(), 0));
        assert!(!admits(Some(""), &t, 0), "used");
        assert!(!admits(None, &t, 0));
        assert!(!admits(Some("zz:notanumber"), &t, 0));
    }
}
