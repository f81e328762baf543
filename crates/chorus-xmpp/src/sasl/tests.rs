//! SASL mechanism tests: PLAIN, SCRAM with and without channel binding,
//! run against a hand-written client side as a client library would.

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
    client_final_bound(hash, password, client_first_bare, server_first, b"n,,")
}

/// The client-final message with `c=` carrying `cbind_input`.
fn client_final_bound(
    hash: ScramHash,
    password: &str,
    client_first_bare: &str,
    server_first: &str,
    cbind_input: &[u8],
) -> String {
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
    let without_proof = format!("c={},r={nonce}", B64.encode(cbind_input));
    let auth = format!("{client_first_bare},{server_first},{without_proof}");
    let sig = hash.hmac(&stored, auth.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
    format!("{without_proof},p={}", B64.encode(proof))
}

fn run(mech: &str, hash: ScramHash, password: &str) -> Step {
    let creds = One(Credentials::from_password_with("pencil", 64).expect("valid"));
    let mut m = Mechanism::start(mech, &ChannelBinding::default()).expect("known");
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
    let mut m = Mechanism::start("PLAIN", &ChannelBinding::default()).expect("known");
    assert!(matches!(m.step(b"\0user\0pencil", &creds), Step::Success { .. }));
    let mut m = Mechanism::start("PLAIN", &ChannelBinding::default()).expect("known");
    assert!(matches!(
        m.step(b"\0user\0nope", &creds),
        Step::Failure {
            condition: "not-authorized",
            ..
        }
    ));
    let mut m = Mechanism::start("PLAIN", &ChannelBinding::default()).expect("known");
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
    let mut m = Mechanism::start("SCRAM-SHA-256", &ChannelBinding::default()).expect("known");
    assert!(matches!(m.step(b"n,,n=nobody,r=abc", &creds), Step::Challenge(_)));
}

#[test]
fn saslname_decoding() {
    assert_eq!(decode_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
    assert_eq!(decode_saslname("bad=99"), None);
}

fn channel() -> ChannelBinding {
    ChannelBinding {
        tls_exporter: Some(vec![0xe1; 32]),
        tls_server_end_point: Some(vec![0x5e; 32]),
    }
}

/// A SCRAM exchange over `cb` with GS2 flag `flag`, binding `data` in `c=`.
fn bound(mech: &str, cb: &ChannelBinding, flag: &str, data: &[u8]) -> Step {
    let creds = One(Credentials::from_password_with("pencil", 64).expect("valid"));
    let Some(mut m) = Mechanism::start(mech, cb) else {
        return fail("invalid-mechanism", None);
    };
    let bare = "n=user,r=cbnonce";
    let hash = if mech.contains("SHA-256") {
        ScramHash::Sha256
    } else {
        ScramHash::Sha1
    };
    let sf = match m.step(format!("{flag},,{bare}").as_bytes(), &creds) {
        Step::Challenge(sf) => String::from_utf8(sf).expect("utf8"),
        other => return other,
    };
    let input = [format!("{flag},,").as_bytes(), data].concat();
    m.step(
        client_final_bound(hash, "pencil", bare, &sf, &input).as_bytes(),
        &creds,
    )
}

#[test]
fn plus_binds_the_exchange_to_the_channel() {
    let cb = channel();
    for mech in ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"] {
        let ok = bound(mech, &cb, "p=tls-exporter", &[0xe1; 32]);
        assert!(matches!(ok, Step::Success { .. }), "{mech}: {ok:?}");
        let ok = bound(mech, &cb, "p=tls-server-end-point", &[0x5e; 32]);
        assert!(matches!(ok, Step::Success { .. }), "{mech}: {ok:?}");
        // A man in the middle has another channel, so other binding data:
        // refused as an authentication failure (it counts for the lockout).
        let mitm = bound(mech, &cb, "p=tls-exporter", &[0x00; 32]);
        assert!(
            matches!(
                mitm,
                Step::Failure {
                    condition: "not-authorized",
                    ..
                }
            ),
            "{mitm:?}"
        );
        // Unknown types, and a -PLUS mechanism without binding, are refused.
        for flag in ["p=tls-unique", "n", "y"] {
            let r = bound(mech, &cb, flag, b"");
            assert!(
                matches!(
                    r,
                    Step::Failure {
                        condition: "malformed-request",
                        ..
                    }
                ),
                "{flag}: {r:?}"
            );
        }
    }
}

#[test]
fn a_stripped_plus_offer_is_detected() {
    // The client could bind but saw no -PLUS: with -PLUS offered, that is a
    // downgrade on the way, refused; with no binding available, it is fine.
    let r = bound("SCRAM-SHA-256", &channel(), "y", b"");
    assert!(
        matches!(
            r,
            Step::Failure {
                condition: "malformed-request",
                ..
            }
        ),
        "{r:?}"
    );
    let r = bound("SCRAM-SHA-256", &ChannelBinding::default(), "y", b"");
    assert!(matches!(r, Step::Success { .. }), "{r:?}");
    // Plain SCRAM still works where -PLUS is offered.
    let r = bound("SCRAM-SHA-256", &channel(), "n", b"");
    assert!(matches!(r, Step::Success { .. }), "{r:?}");
    // -PLUS cannot start without a channel to bind to, nor bind a plain one.
    assert!(Mechanism::start("SCRAM-SHA-256-PLUS", &ChannelBinding::default()).is_none());
    let r = bound("SCRAM-SHA-256", &channel(), "p=tls-exporter", &[0xe1; 32]);
    assert!(
        matches!(
            r,
            Step::Failure {
                condition: "malformed-request",
                ..
            }
        ),
        "{r:?}"
    );
    // Only the types the channel has are usable.
    let exporter_only = ChannelBinding {
        tls_server_end_point: None,
        ..channel()
    };
    assert_eq!(exporter_only.types(), ["tls-exporter"]);
    let r = bound(
        "SCRAM-SHA-256-PLUS",
        &exporter_only,
        "p=tls-server-end-point",
        &[0x5e; 32],
    );
    assert!(matches!(r, Step::Failure { .. }), "{r:?}");
}
