//! Server side of SASL PLAIN and SCRAM-SHA-1/SCRAM-SHA-256 (RFC 4616,
//! RFC 5802, RFC 7677), checked against stored SCRAM keys, with the -PLUS
//! variants binding the exchange to the TLS channel: `tls-exporter`
//! (RFC 9266, TLS 1.3) and `tls-server-end-point` (RFC 5929). A client that
//! says it could bind but thinks we cannot (`y`) while we offer -PLUS is
//! refused: someone stripped the -PLUS mechanisms on the way.
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
    /// For an account whose password another system checks (an
    /// enterprise directory): whether `password` is right; `None` for an
    /// account checked against its stored keys. Only PLAIN can use it.
    fn check_external(&self, _username: &str, _password: &str) -> Option<bool> {
        None
    }
}

/// What the TLS channel under a stream offers for channel binding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelBinding {
    /// RFC 9266 `tls-exporter` data (TLS 1.3 only).
    pub tls_exporter: Option<Vec<u8>>,
    /// RFC 5929 `tls-server-end-point` data: the hash of our certificate.
    pub tls_server_end_point: Option<Vec<u8>>,
}

impl ChannelBinding {
    /// Whether any binding type is available (so -PLUS is offered).
    pub fn any(&self) -> bool {
        self.tls_exporter.is_some() || self.tls_server_end_point.is_some()
    }

    /// The binding types available, for XEP-0440's stream feature.
    pub fn types(&self) -> Vec<&'static str> {
        let mut t = Vec::new();
        if self.tls_exporter.is_some() {
            t.push("tls-exporter");
        }
        if self.tls_server_end_point.is_some() {
            t.push("tls-server-end-point");
        }
        t
    }

    fn data(&self, kind: &str) -> Option<&[u8]> {
        match kind {
            "tls-exporter" => self.tls_exporter.as_deref(),
            "tls-server-end-point" => self.tls_server_end_point.as_deref(),
            _ => None,
        }
    }
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
    /// A -PLUS mechanism: the client must bind to the channel.
    plus: bool,
    /// What the channel offers.
    cb: ChannelBinding,
    stage: ScramStage,
}

enum ScramStage {
    First,
    Final {
        username: String,
        keys: Option<ScramKeys>,
        /// What `c=` must decode to: the GS2 header and any binding data.
        cbind_input: Vec<u8>,
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
    /// Starts the named mechanism over a channel offering `cb`, or `None`
    /// if it is unknown (or a -PLUS one the channel cannot support).
    pub fn start(name: &str, cb: &ChannelBinding) -> Option<Mechanism> {
        let (hash, plus) = match name {
            "PLAIN" => return Some(Mechanism::Plain),
            "SCRAM-SHA-1" => (ScramHash::Sha1, false),
            "SCRAM-SHA-256" => (ScramHash::Sha256, false),
            "SCRAM-SHA-1-PLUS" => (ScramHash::Sha1, true),
            "SCRAM-SHA-256-PLUS" => (ScramHash::Sha256, true),
            _ => return None,
        };
        if plus && !cb.any() {
            return None;
        }
        Some(Mechanism::Scram(Box::new(ScramState {
            hash,
            plus,
            cb: cb.clone(),
            stage: ScramStage::First,
        })))
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
    if let Some(verified) = creds.check_external(&user, pass) {
        return if verified {
            // No password to keep: the directory holds it.
            Step::Success {
                username: user,
                additional: Vec::new(),
                password: None,
            }
        } else {
            fail("not-authorized", Some(user))
        };
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
                cbind_input,
                client_first_bare,
                server_first,
                nonce,
            } => self.final_(
                text,
                username,
                keys,
                &cbind_input,
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
        let gs2_header = format!("{cb},{authz},");
        let Some(cbind_input) = self.binding_input(cb, &gs2_header) else {
            return fail("malformed-request", None);
        };
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
            cbind_input,
            client_first_bare: bare.to_owned(),
            server_first,
            nonce,
        };
        Step::Challenge(challenge)
    }

    /// What the client's `c=` must carry for GS2 flag `cb`, or `None` if
    /// the flag is not acceptable: a -PLUS mechanism needs `p=` with a
    /// type the channel offers; a plain one takes `n`, or `y` only when we
    /// offer no binding (else the -PLUS offer was stripped on the way).
    fn binding_input(&self, cb: &str, gs2_header: &str) -> Option<Vec<u8>> {
        let mut input = gs2_header.as_bytes().to_vec();
        match (cb.strip_prefix("p="), self.plus) {
            (Some(kind), true) => input.extend_from_slice(self.cb.data(kind)?),
            (None, false) if cb == "n" => {}
            (None, false) if cb == "y" && !self.cb.any() => {}
            _ => return None,
        }
        Some(input)
    }

    #[allow(clippy::too_many_arguments)]
    fn final_(
        &mut self,
        text: &str,
        username: String,
        keys: Option<ScramKeys>,
        cbind_input: &[u8],
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
        if r != nonce {
            return fail("malformed-request", Some(username));
        }
        // Other binding data than ours: the client's TLS channel ends
        // somewhere else (a man in the middle). An authentication failure,
        // counted like a wrong password.
        if B64.decode(cbind).ok().as_deref() != Some(cbind_input) {
            return fail("not-authorized", Some(username));
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
mod tests;
