//! Salted SCRAM credentials (RFC 5802, RFC 7677).
//!
//! A password is never stored. For each hash function we keep the salt, the
//! iteration count, `StoredKey = H(HMAC(SaltedPassword, "Client Key"))` and
//! `ServerKey = HMAC(SaltedPassword, "Server Key")`. Those are enough to run
//! a SCRAM exchange and to check a PLAIN password, but not to log in as the
//! user with another server.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Default PBKDF2 iteration count for new credentials (`c2s.scram_iterations`).
pub const ITERATIONS_DEFAULT: u32 = 10_000;
/// Fewest iterations accepted (RFC 7677's minimum).
pub const ITERATIONS_MIN: u32 = 4096;
/// Length of a freshly generated salt, in bytes.
pub const SALT_BYTES: usize = 16;
/// Longest password accepted when setting credentials, in bytes.
pub const PASSWORD_BYTES_MAX: usize = 1024;

/// The two hash functions Chorus offers for SCRAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScramHash {
    /// SCRAM-SHA-1, for older clients.
    Sha1,
    /// SCRAM-SHA-256 (RFC 7677), preferred.
    Sha256,
}

impl ScramHash {
    /// The SASL mechanism name.
    pub fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    /// `H(data)`.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// `HMAC(key, data)`.
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => {
                let mut m = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha256 => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    /// `Hi(password, salt, iterations)`, that is PBKDF2 with this HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => crate::hi::hi_sha1(password, salt, iterations).to_vec(),
            ScramHash::Sha256 => crate::hi::hi_sha256(password, salt, iterations).to_vec(),
        }
    }
}

/// SCRAM keys for one hash function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramKeys {
    /// The random salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(ClientKey)`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl ScramKeys {
    /// Derives keys from a password with the given salt and iteration count.
    pub fn derive(hash: ScramHash, password: &str, salt: &[u8], iterations: u32) -> ScramKeys {
        let salted = hash.salted_password(password.as_bytes(), salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        ScramKeys {
            salt: salt.to_vec(),
            iterations,
            stored_key: hash.hash(&client_key),
            server_key: hash.hmac(&salted, b"Server Key"),
        }
    }

    /// Checks a cleartext password (for SASL PLAIN) in constant time.
    pub fn verify_password(&self, hash: ScramHash, password: &str) -> bool {
        let other = ScramKeys::derive(hash, password, &self.salt, self.iterations);
        bool::from(other.stored_key.ct_eq(&self.stored_key))
    }
}

/// Everything Chorus stores to authenticate one account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// Keys for SCRAM-SHA-1.
    pub sha1: ScramKeys,
    /// Keys for SCRAM-SHA-256.
    pub sha256: ScramKeys,
}

/// Why a password cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    /// The password is empty.
    #[error("the password is empty")]
    Empty,
    /// The password is longer than [`PASSWORD_BYTES_MAX`].
    #[error("the password is longer than {PASSWORD_BYTES_MAX} bytes")]
    TooLong,
}

impl Credentials {
    /// Derives fresh credentials with new random salts.
    pub fn from_password(password: &str) -> Result<Credentials, PasswordError> {
        Self::from_password_with(password, ITERATIONS_DEFAULT)
    }

    /// Derives fresh credentials with new random salts and a chosen
    /// iteration count.
    pub fn from_password_with(password: &str, iterations: u32) -> Result<Credentials, PasswordError> {
        if password.is_empty() {
            return Err(PasswordError::Empty);
        }
        if password.len() > PASSWORD_BYTES_MAX {
            return Err(PasswordError::TooLong);
        }
        let salt1: [u8; SALT_BYTES] = rand::random();
        let salt256: [u8; SALT_BYTES] = rand::random();
        Ok(Credentials {
            sha1: ScramKeys::derive(ScramHash::Sha1, password, &salt1, iterations),
            sha256: ScramKeys::derive(ScramHash::Sha256, password, &salt256, iterations),
        })
    }

    /// Keys that no password matches (random keys, random salts): an
    /// account that opens only another way (a directory bind, or a
    /// one-time link that sets its password).
    pub fn unusable(iterations: u32) -> Credentials {
        let keys = |len: usize| ScramKeys {
            salt: (0..SALT_BYTES).map(|_| rand::random::<u8>()).collect(),
            iterations,
            stored_key: (0..len).map(|_| rand::random::<u8>()).collect(),
            server_key: (0..len).map(|_| rand::random::<u8>()).collect(),
        };
        Credentials {
            sha1: keys(20),
            sha256: keys(32),
        }
    }

    /// The keys for one hash function.
    pub fn keys(&self, hash: ScramHash) -> &ScramKeys {
        match hash {
            ScramHash::Sha1 => &self.sha1,
            ScramHash::Sha256 => &self.sha256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3 test vector: user "user", password "pencil".
    #[test]
    fn rfc7677_salted_password_matches_vector() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("valid base64");
        let keys = ScramKeys::derive(ScramHash::Sha256, "pencil", &salt, 4096);
        // ServerSignature from the RFC is HMAC(ServerKey, AuthMessage).
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let sig = ScramHash::Sha256.hmac(&keys.server_key, auth.as_bytes());
        assert_eq!(b64.encode(sig), "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn plain_password_check_uses_stored_keys() {
        let c = Credentials::from_password_with("s3cret", 64).expect("valid password");
        assert!(c.sha256.verify_password(ScramHash::Sha256, "s3cret"));
        assert!(!c.sha256.verify_password(ScramHash::Sha256, "s3cret!"));
        assert!(c.sha1.verify_password(ScramHash::Sha1, "s3cret"));
        assert_ne!(c.sha1.salt, c.sha256.salt);
    }

    #[test]
    fn rejects_empty_and_huge_passwords() {
        assert_eq!(Credentials::from_password(""), Err(PasswordError::Empty));
        let long = "x".repeat(PASSWORD_BYTES_MAX + 1);
        assert_eq!(Credentials::from_password(&long), Err(PasswordError::TooLong));
    }
}
