//! Authentication through the session state machine: lockout before any
//! password work, the clock the driver passes in, unknown accounts.

use super::tests_support::*;
use super::*;

#[test]
fn the_lockout_ends_when_the_clock_the_driver_passes_in_leaves_the_window() {
    let (ctx, _) = context(|_| {});
    let t0 = std::time::Instant::now();
    let mut s = Session::new(
        ctx.clone(),
        Transport::DirectTls,
        "127.0.0.3".parse().expect("ip"),
    );
    s.set_now(t0);
    s.on_header(&header());
    for _ in 0..3 {
        s.on_element(plain_auth("bob", "wrong"));
    }
    s.take_outputs();
    s.on_element(plain_auth("bob", "bpw"));
    let out = elements(s.take_outputs());
    assert!(out[0].has_child("temporary-auth-failure", ns::SASL), "{out:?}");
    // No sleeping: the session reads no clock of its own.
    let window = std::time::Duration::from_secs(ctx.config.limits.auth_failure_window_secs);
    s.set_now(t0 + window + std::time::Duration::from_secs(1));
    s.on_element(plain_auth("bob", "bpw"));
    let out = elements(s.take_outputs());
    assert!(out[0].is("success", ns::SASL), "{out:?}");
}

#[test]
fn a_locked_account_gets_the_same_answer_for_right_and_wrong_passwords_in_any_spelling() {
    let (ctx, _) = context(|_| {});
    let answer = |ip: &str, user: &str, pass: &str| {
        let mut s = Session::new(ctx.clone(), Transport::DirectTls, ip.parse().expect("ip"));
        s.on_header(&header());
        s.take_outputs();
        s.on_element(plain_auth(user, pass));
        let out = elements(s.take_outputs());
        out[0].children().next().map(|c| c.name().to_owned())
    };
    // Three wrong guesses from different addresses lock bob (limit 3).
    for ip in ["10.1.0.1", "10.1.0.2", "10.1.0.3"] {
        assert_eq!(answer(ip, "bob", "wrong").as_deref(), Some("not-authorized"));
    }
    for (user, pass) in [("bob", "bpw"), ("bob", "wrong"), ("BOB", "bpw"), ("Bob", "nope")] {
        assert_eq!(
            answer("10.1.0.9", user, pass).as_deref(),
            Some("temporary-auth-failure"),
            "{user}/{pass} while locked"
        );
    }
    // SCRAM's first message is refused before any challenge, for any case.
    let mut s = Session::new(ctx.clone(), Transport::DirectTls, "10.1.0.9".parse().expect("ip"));
    s.on_header(&header());
    s.take_outputs();
    let first = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "n,,n=Bob,r=abcdefgh");
    s.on_element(parse(&format!(
        "<auth xmlns='{}' mechanism='SCRAM-SHA-256'>{first}</auth>",
        ns::SASL
    )));
    let out = elements(s.take_outputs());
    assert!(out[0].has_child("temporary-auth-failure", ns::SASL), "{out:?}");
    // Alice is not affected.
    assert_eq!(answer("10.1.0.9", "alice", "apw").as_deref(), None);
}

#[test]
fn an_unknown_account_shows_a_stable_secret_salt_and_the_configured_iterations() {
    let (ctx, _) = context(|c| c.c2s.scram_iterations = 12_345);
    let server_first = |user: &str| {
        let mut s = Session::new(ctx.clone(), Transport::DirectTls, "10.2.0.1".parse().expect("ip"));
        s.on_header(&header());
        s.take_outputs();
        let first = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("n,,n={user},r=abcdefgh"),
        );
        s.on_element(parse(&format!(
            "<auth xmlns='{}' mechanism='SCRAM-SHA-256'>{first}</auth>",
            ns::SASL
        )));
        let out = elements(s.take_outputs());
        assert!(out[0].is("challenge", ns::SASL), "{out:?}");
        let text = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, out[0].text())
            .expect("base64");
        let text = String::from_utf8(text).expect("utf8");
        let salt = text
            .split(',')
            .find_map(|p| p.strip_prefix("s="))
            .expect("salt")
            .to_owned();
        let iters = text
            .split(',')
            .find_map(|p| p.strip_prefix("i="))
            .expect("i")
            .to_owned();
        (salt, iters)
    };
    let (salt, iters) = server_first("nobody");
    assert_eq!(iters, "12345");
    assert_eq!(
        server_first("nobody").0,
        salt,
        "the same name shows the same salt"
    );
    assert_eq!(server_first("NoBody").0, salt, "any spelling of the name");
    assert_ne!(server_first("somebody").0, salt);
    // Not derivable without the server's secret (it once was SHA-256(name)).
    let guess = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        &chorus_core::credentials::ScramHash::Sha256.hash(b"nobody")[..16],
    );
    assert_ne!(salt, guess);
}

#[test]
fn password_changes_are_spaced_on_one_session() {
    let (ctx, _) = context(|_| {});
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    let t0 = std::time::Instant::now();
    let change = |s: &mut Session, rx: &mut crate::queue::Receiver<crate::router::Routed>, pw: &str| {
        s.on_element(parse(&format!(
            "<iq xmlns='jabber:client' type='set' id='pw'><query xmlns='{}'><username>alice</username><password>{pw}</password></query></iq>",
            ns::REGISTER
        )));
        let out = drain(s, rx);
        out.into_iter()
            .find(|e| e.attr("id") == Some("pw"))
            .and_then(|e| e.attr("type").map(str::to_owned))
    };
    a.set_now(t0);
    assert_eq!(change(&mut a, &mut arx, "second").as_deref(), Some("result"));
    a.set_now(t0 + std::time::Duration::from_secs(2));
    assert_eq!(
        change(&mut a, &mut arx, "third").as_deref(),
        Some("error"),
        "two PBKDF2 runs per IQ, unbounded"
    );
    a.set_now(t0 + std::time::Duration::from_secs(11));
    assert_eq!(change(&mut a, &mut arx, "third").as_deref(), Some("result"));
}
