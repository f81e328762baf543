//! Server side of SASL PLAIN and SCRAM-SHA-1/SCRAM-SHA-256 (RFC 4616,
//! RFC 5802, RFC 7677), checked against stored SCRAM keys.
//!
//! Written here rather than taken from a crate because the Rust SASL crates'
//! server sides need the salted password itself, whereas Chorus stores only
//! `StoredKey` and `ServerKey` (see ARCHITECTURE.md).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chorus_core::credentials::{Credentials, ScramHash, ScramKeys};

/// Longest SASL message accepted, in bytes (after base64 decoding).
pub const SASL_MESSAGE_BYTES_MAX: usize = 4096;

/// What a mechanism step produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge and wait for a response.
    Challenge(Vec<u8>),
    /// Authenticated as this (unnormalized) username; send this additional data.
    Success {
        /// The authentication identity as the client sent it.
        username: String,
        /// Additional data for `<success/>` (the SCRAM server signature).
        additional: Vec<u8>,
        /// The password, for PLAIN only: lets the server upgrade stored
        /// credentials to the configured iteration count.
        password: Option<String>,
    },
    /// Authentication failed with a SASL condition; the username if known.
    Failure {
        /// RFC 6120 SASL failure condition.
        condition: &'static str,
        /// The username, when the client sent one.
        username: Option<String>,
    },
}

/// Looks up credentials for a username during an exchange.
pub trait CredentialLookup {
    /// The stored credentials, or `None` if the account does not exist.
    fn lookup(&self, username: &str) -> Option<Credentials>;
    /// The salt and iteration count shown for an account that does not
    /// exist: stable per name and indistinguishable from a real one's
    /// (derived with a server secret), so replies do not reveal which
    /// accounts exist.
    fn fake(&self, username: &str, hash: ScramHash) -> (Vec<u8>, u32);
}

/// One SASL exchange in progress.
pub enum Mechanism {
    /// PLAIN: a single message.
    Plain,
    /// SCRAM: waiting for client-first or client-final.
    Scram(Box<ScramState>),
}

/// SCRAM progress.
pub struct ScramState {
    hash: ScramHash,
    stage: ScramStage,
}

enum ScramStage {
    First,
    Final {
        username: String,
        keys: Option<ScramKeys>,
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

fn fail(condition: &'static str, username: Option<String>) -> Step {
    Step::Failure { condition, username }
}

impl Mechanism {
    /// Starts the named mechanism, or `None` if it is unknown.
    pub fn start(name: &str) -> Option<Mechanism> {
        match name {
            "PLAIN" => Some(Mechanism::Plain),
            "SCRAM-SHA-1" => Some(Mechanism::Scram(Box::new(ScramState {
                hash: ScramHash::Sha1,
                stage: ScramStage::First,
            }))),
            "SCRAM-SHA-256" => Some(Mechanism::Scram(Box::new(ScramState {
                hash: ScramHash::Sha256,
                stage: ScramStage::First,
            }))),
            _ => None,
        }
    }

    /// Feeds one client message.
    pub fn step(&mut self, data: &[u8], creds: &dyn CredentialLookup) -> Step {
        if data.len() > SASL_MESSAGE_BYTES_MAX {
            return fail("malformed-request", None);
        }
        match self {
            Mechanism::Plain => plain(data, creds),
            Mechanism::Scram(s) => s.step(data, creds),
        }
    }
}

fn plain(data: &[u8], creds: &dyn CredentialLookup) -> Step {
    let mut parts = data.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return fail("malformed-request", None);
    };
    let (Ok(authzid), Ok(user), Ok(pass)) = (
        std::str::from_utf8(authzid),
        std::str::from_utf8(user),
        std::str::from_utf8(pass),
    ) else {
        return fail("malformed-request", None);
    };
    if user.is_empty() {
        return fail("malformed-request", None);
    }
    let user = user.to_owned();
    if !authzid.is_empty() && !authzid.starts_with(&format!("{user}@")) && authzid != user {
        return fail("invalid-authzid", Some(user));
    }
    let verified = match creds.lookup(&user) {
        Some(c) => c.sha256.verify_password(ScramHash::Sha256, pass),
        None => {
            // The same work as for a real account, so timing does not tell.
            let (salt, iterations) = creds.fake(&user, ScramHash::Sha256);
            let _ = ScramKeys::derive(ScramHash::Sha256, pass, &salt, iterations);
            false
        }
    };
    if verified {
        Step::Success {
            username: user,
            additional: Vec::new(),
            password: Some(pass.to_owned()),
        }
    } else {
        fail("not-authorized", Some(user))
    }
}

/// Decodes a SCRAM `saslname` (`=2C` is `,`, `=3D` is `=`).
pub(crate) fn decode_saslname(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "2C" => ',',
            "3D" => '=',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

fn attr(part: Option<&str>, key: char) -> Option<&str> {
    let p = part?;
    let mut chars = p.chars();
    (chars.next()? == key && chars.next()? == '=').then(|| &p[2..])
}

impl ScramState {
    fn step(&mut self, data: &[u8], creds: &dyn CredentialLookup) -> Step {
        let Ok(text) = std::str::from_utf8(data) else {
            return fail("malformed-request", None);
        };
        match std::mem::replace(&mut self.stage, ScramStage::Done) {
            ScramStage::First => self.first(text, creds),
            ScramStage::Final {
                username,
                keys,
                gs2_header,
                client_first_bare,
                server_first,
                nonce,
            } => self.final_(
                text,
                username,
                keys,
                &gs2_header,
                &client_first_bare,
                &server_first,
                &nonce,
            ),
            ScramStage::Done => fail("malformed-request", None),
        }
    }

    fn first(&mut self, text: &str, creds: &dyn CredentialLookup) -> Step {
        // gs2-header: cbind-flag "," [authzid] ","
        let mut it = text.splitn(3, ',');
        let (Some(cb), Some(authz), Some(bare)) = (it.next(), it.next(), it.next()) else {
            return fail("malformed-request", None);
        };
        if cb.starts_with("p=") {
            // Channel binding is not offered (no -PLUS mechanisms).
            return fail("malformed-request", None);
        }
        if cb != "n" && cb != "y" {
            return fail("malformed-request", None);
        }
        let mut parts = bare.split(',');
        let first = parts.next();
        if first.is_some_and(|p| p.starts_with("m=")) {
            return fail("malformed-request", None);
        }
        let (Some(user), Some(cnonce)) = (
            attr(first, 'n').and_then(decode_saslname),
            attr(parts.next(), 'r'),
        ) else {
            return fail("malformed-request", None);
        };
        if user.is_empty() || cnonce.is_empty() || cnonce.contains(',') {
            return fail("malformed-request", None);
        }
        if let Some(a) = authz.strip_prefix("a=") {
            let a = decode_saslname(a).unwrap_or_default();
            if a != user && !a.starts_with(&format!("{user}@")) {
                return fail("invalid-authzid", Some(user));
            }
        }
        let keys = creds.lookup(&user).map(|c| c.keys(self.hash).clone());
        // An unknown user still gets a plausible challenge, so replies do not
        // reveal which accounts exist; the final step then fails.
        let (salt, iterations) = match &keys {
            Some(k) => (k.salt.clone(), k.iterations),
            None => creds.fake(&user, self.hash),
        };
        let snonce: [u8; 18] = rand::random();
        let nonce = format!("{cnonce}{}", B64.encode(snonce));
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
        let challenge = server_first.clone().into_bytes();
        self.stage = ScramStage::Final {
            username: user,
            keys,
            gs2_header: format!("{cb},{authz},"),
            client_first_bare: bare.to_owned(),
            server_first,
            nonce,
        };
        Step::Challenge(challenge)
    }

    #[allow(clippy::too_many_arguments)]
    fn final_(
        &mut self,
        text: &str,
        username: String,
        keys: Option<ScramKeys>,
        gs2_header: &str,
        client_first_bare: &str,
        server_first: &str,
        nonce: &str,
    ) -> Step {
        let Some((without_proof, proof_part)) = text.rsplit_once(",p=") else {
            return fail("malformed-request", Some(username));
        };
        let mut parts = without_proof.split(',');
        let (Some(cbind), Some(r)) = (attr(parts.next(), 'c'), attr(parts.next(), 'r')) else {
            return fail("malformed-request", Some(username));
        };
        if B64.decode(cbind).ok().as_deref() != Some(gs2_header.as_bytes()) || r != nonce {
            return fail("malformed-request", Some(username));
        }
        let Ok(proof) = B64.decode(proof_part) else {
            return fail("malformed-request", Some(username));
        };
        let Some(keys) = keys else {
            return fail("not-authorized", Some(username));
        };
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_sig = self.hash.hmac(&keys.stored_key, auth_message.as_bytes());
        if proof.len() != client_sig.len() {
            return fail("not-authorized", Some(username));
        }
        let client_key: Vec<u8> = proof.iter().zip(&client_sig).map(|(a, b)| a ^ b).collect();
        use subtle_eq::ct_eq;
        if !ct_eq(&self.hash.hash(&client_key), &keys.stored_key) {
            return fail("not-authorized", Some(username));
        }
        let server_sig = self.hash.hmac(&keys.server_key, auth_message.as_bytes());
        Step::Success {
            username,
            additional: format!("v={}", B64.encode(server_sig)).into_bytes(),
            password: None,
        }
    }
}

mod subtle_eq {
    /// Constant-time equality of two byte strings of equal length.
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One(Credentials);
    impl CredentialLookup for One {
        fn lookup(&self, username: &str) -> Option<Credentials> {
            (username == "user").then(|| self.0.clone())
        }
        fn fake(&self, username: &str, hash: ScramHash) -> (Vec<u8>, u32) {
            (
                hash.hash(format!("secret{username}").as_bytes())[..16].to_vec(),
                4096,
            )
        }
    }

    /// Runs the client side of SCRAM by hand, as a client library would.
    fn client_final(hash: ScramHash, password: &str, client_first_bare: &str, server_first: &str) -> String {
        let mut salt = None;
        let mut iters = 0;
        let mut nonce = "";
        for p in server_first.split(',') {
            if let Some(v) = p.strip_prefix("s=") {
                salt = Some(B64.decode(v).expect("salt"));
            } else if let Some(v) = p.strip_prefix("i=") {
                iters = v.parse().expect("iterations");
            } else if let Some(v) = p.strip_prefix("r=") {
                nonce = v;
            }
        }
        let salted = hash.salted_password(password.as_bytes(), &salt.expect("salt"), iters);
        let client_key = hash.hmac(&salted, b"Client Key");
        let stored = hash.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = hash.hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    fn run(mech: &str, hash: ScramHash, password: &str) -> Step {
        let creds = One(Credentials::from_password_with("pencil", 64).expect("valid"));
        let mut m = Mechanism::start(mech).expect("known");
        let bare = "n=user,r=fyko+d2lbbFgONRv9qkxdawL";
        let Step::Challenge(sf) = m.step(format!("n,,{bare}").as_bytes(), &creds) else {
            panic!("expected challenge")
        };
        let sf = String::from_utf8(sf).expect("utf8");
        assert!(sf.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"));
        m.step(client_final(hash, password, bare, &sf).as_bytes(), &creds)
    }

    #[test]
    fn scram_sha256_and_sha1_succeed_and_fail() {
        assert!(matches!(
            run("SCRAM-SHA-256", ScramHash::Sha256, "pencil"),
            Step::Success { .. }
        ));
        assert!(matches!(
            run("SCRAM-SHA-1", ScramHash::Sha1, "pencil"),
            Step::Success { .. }
        ));
        assert_eq!(
            run("SCRAM-SHA-256", ScramHash::Sha256, "wrong"),
            Step::Failure {
                condition: "not-authorized",
                username: Some("user".into())
            }
        );
    }

    #[test]
    fn plain_checks_password_and_shape() {
        let creds = One(Credentials::from_password_with("pencil", 64).expect("valid"));
        let mut m = Mechanism::start("PLAIN").expect("known");
        assert!(matches!(m.step(b"\0user\0pencil", &creds), Step::Success { .. }));
        let mut m = Mechanism::start("PLAIN").expect("known");
        assert!(matches!(
            m.step(b"\0user\0nope", &creds),
            Step::Failure {
                condition: "not-authorized",
                ..
            }
        ));
        let mut m = Mechanism::start("PLAIN").expect("known");
        assert!(matches!(
            m.step(b"garbage", &creds),
            Step::Failure {
                condition: "malformed-request",
                ..
            }
        ));
    }

    #[test]
    fn unknown_user_gets_a_challenge_then_fails() {
        let creds = One(Credentials::from_password_with("pencil", 64).expect("valid"));
        let mut m = Mechanism::start("SCRAM-SHA-256").expect("known");
        assert!(matches!(m.step(b"n,,n=nobody,r=abc", &creds), Step::Challenge(_)));
    }

    #[test]
    fn saslname_decoding() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(decode_saslname("bad=99"), None);
    }
}
