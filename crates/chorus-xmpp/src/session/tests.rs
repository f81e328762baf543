//! Unit tests of the session state machine with in-memory seams.

use super::tests_support::*;
use super::*;

#[test]
fn plain_tcp_offers_only_starttls_and_refuses_auth() {
    let (ctx, _) = context(|_| {});
    let mut s = Session::new(ctx, Transport::Tcp, "127.0.0.1".parse().expect("ip"));
    s.on_header(&header());
    let out = elements(s.take_outputs());
    let features = out
        .iter()
        .find(|e| e.is("features", ns::STREAM))
        .expect("features");
    assert!(features.has_child("starttls", ns::TLS));
    assert!(!features.has_child("mechanisms", ns::SASL));
    s.on_element(plain_auth("alice", "apw"));
    let out = s.take_outputs();
    assert!(matches!(
        out.last(),
        Some(Output::StreamError {
            condition: "policy-violation",
            ..
        })
    ));
    assert!(s.is_closed());
}

#[test]
fn starttls_then_mechanisms() {
    let (ctx, _) = context(|_| {});
    let mut s = Session::new(ctx, Transport::Tcp, "127.0.0.1".parse().expect("ip"));
    s.on_header(&header());
    s.take_outputs();
    s.on_element(parse(&format!("<starttls xmlns='{}'/>", ns::TLS)));
    assert!(matches!(s.take_outputs().as_slice(), [Output::StartTls]));
    s.on_tls_established();
    s.on_header(&header());
    let out = elements(s.take_outputs());
    let mechs = out[0]
        .get_child("mechanisms", ns::SASL)
        .expect("mechanisms after TLS");
    let names: Vec<String> = mechs.children().map(|m| m.text()).collect();
    assert_eq!(names, vec!["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]);
}

#[test]
fn a_wrong_password_can_be_retried_on_the_same_stream() {
    let (ctx, _) = context(|_| {});
    let mut s = Session::new(
        ctx.clone(),
        Transport::DirectTls,
        "127.0.0.1".parse().expect("ip"),
    );
    s.on_header(&header());
    s.take_outputs();
    s.on_element(plain_auth("alice", "wrong"));
    let out = elements(s.take_outputs());
    assert!(out[0].is("failure", ns::SASL) && out[0].has_child("not-authorized", ns::SASL));
    s.on_element(plain_auth("alice", "apw"));
    let out = elements(s.take_outputs());
    assert!(
        out[0].is("success", ns::SASL),
        "retry on the same stream succeeds"
    );
    // The throttle that follows repeated failures: auth_tests.rs.
}

#[test]
fn a_parked_session_whose_window_passes_is_ended() {
    let (ctx, _) = context(|_| {});
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "pc");
    b.on_element(parse(&format!("<enable xmlns='{}' resume='true'/>", ns::SM)));
    b.on_element(parse("<presence xmlns='jabber:client'/>"));
    drain(&mut b, &mut brx);
    let timer = b.on_disconnect(Some(brx), false).expect("parked");
    assert_eq!(ctx.parked.len(), 1);
    assert!(!ctx.router.resources("bob").is_empty(), "routable while parked");
    // The driver's timer fires (here: at once).
    expire_parked(&ctx, timer.session_id);
    assert_eq!(ctx.parked.len(), 0);
    assert!(ctx.router.resources("bob").is_empty());
    // A second expiry (the session was resumed or ended meanwhile) is a no-op.
    expire_parked(&ctx, timer.session_id);
}

#[test]
fn stanzas_before_bind_are_refused() {
    let (ctx, _) = context(|_| {});
    let mut s = Session::new(ctx, Transport::DirectTls, "127.0.0.1".parse().expect("ip"));
    s.on_header(&header());
    s.on_element(plain_auth("alice", "apw"));
    s.on_header(&header());
    s.take_outputs();
    s.on_element(parse(
        "<message xmlns='jabber:client' to='bob@chorus.test'><body>x</body></message>",
    ));
    assert!(matches!(
        s.take_outputs().last(),
        Some(Output::StreamError {
            condition: "not-authorized",
            ..
        })
    ));
}

#[test]
fn message_offline_then_delivered_with_delay_once() {
    let (ctx, archive) = context(|_| {});
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    for i in 0..3 {
        a.on_element(parse(&format!(
            "<message xmlns='jabber:client' to='bob@chorus.test' type='chat'><body>m{i}</body></message>"
        )));
    }
    assert!(
        drain(&mut a, &mut arx).is_empty(),
        "no errors for stored messages"
    );
    assert_eq!(ctx.store.offline_count("bob").expect("count"), 3);
    assert_eq!(archive.records().len(), 3);
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "phone");
    b.on_element(parse("<presence xmlns='jabber:client'/>"));
    let got = drain(&mut b, &mut brx);
    let bodies: Vec<String> = got
        .iter()
        .filter(|e| e.is("message", ns::CLIENT))
        .map(|m| {
            assert!(m.has_child("delay", ns::DELAY), "offline message carries a delay");
            let sid = m
                .get_child("stanza-id", ns::SID)
                .expect("archived messages carry a stanza-id");
            assert!(sid.attr("id").is_some_and(|id| id.starts_with("mem-")));
            assert_eq!(sid.attr("by"), Some("bob@chorus.test"));
            m.get_child("body", ns::CLIENT)
                .map(|b| b.text())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(bodies, vec!["m0", "m1", "m2"]);
    assert_eq!(ctx.store.offline_count("bob").expect("count"), 0);
}

#[test]
fn bare_jid_message_goes_to_highest_priority() {
    let (ctx, _) = context(|_| {});
    let (mut b1, mut b1rx) = login(&ctx, "bob", "bpw", "low");
    let (mut b2, mut b2rx) = login(&ctx, "bob", "bpw", "high");
    b1.on_element(parse(
        "<presence xmlns='jabber:client'><priority>1</priority></presence>",
    ));
    b2.on_element(parse(
        "<presence xmlns='jabber:client'><priority>5</priority></presence>",
    ));
    drain(&mut b1, &mut b1rx);
    drain(&mut b2, &mut b2rx);
    let (mut a, _arx) = login(&ctx, "alice", "apw", "pc");
    a.on_element(parse(
        "<message xmlns='jabber:client' to='bob@chorus.test' type='chat'><body>hi</body></message>",
    ));
    assert!(
        drain(&mut b1, &mut b1rx)
            .iter()
            .all(|e| !e.is("message", ns::CLIENT))
    );
    let got = drain(&mut b2, &mut b2rx);
    let m = got
        .iter()
        .find(|e| e.is("message", ns::CLIENT))
        .expect("high priority gets it");
    assert_eq!(m.attr("from"), Some("alice@chorus.test/pc"));
}

#[test]
fn resource_conflict_ends_the_old_session() {
    let (ctx, _) = context(|_| {});
    let (mut old, mut orx) = login(&ctx, "alice", "apw", "same");
    let (_new, _nrx) = login(&ctx, "alice", "apw", "same");
    while let Ok(r) = orx.try_recv() {
        old.on_routed(r);
    }
    let out = old.take_outputs();
    assert!(
        matches!(
            out.last(),
            Some(Output::StreamError {
                condition: "conflict",
                ..
            })
        ),
        "{out:?}"
    );
    assert_eq!(ctx.router.resources("alice").len(), 1);
}

#[test]
fn subscription_handshake_reaches_both() {
    let (ctx, _) = context(|_| {});
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "pc");
    for (s, rx) in [(&mut a, &mut arx), (&mut b, &mut brx)] {
        s.on_element(parse(
            "<iq xmlns='jabber:client' type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
        ));
        s.on_element(parse("<presence xmlns='jabber:client'/>"));
        drain(s, rx);
    }
    a.on_element(parse(
        "<presence xmlns='jabber:client' type='subscribe' to='bob@chorus.test'/>",
    ));
    drain(&mut a, &mut arx);
    let got = drain(&mut b, &mut brx);
    assert!(
        got.iter()
            .any(|e| e.is("presence", ns::CLIENT) && e.attr("type") == Some("subscribe"))
    );
    b.on_element(parse(
        "<presence xmlns='jabber:client' type='subscribed' to='alice@chorus.test'/>",
    ));
    drain(&mut b, &mut brx);
    let got = drain(&mut a, &mut arx);
    assert!(
        got.iter().any(|e| e.attr("type") == Some("subscribed")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|e| e.is("presence", ns::CLIENT) && e.attr("type").is_none()),
        "bob's presence follows"
    );
    let item = ctx
        .store
        .roster_item("alice", "bob@chorus.test")
        .expect("read")
        .expect("item");
    assert_eq!(item.subscription, chorus_core::roster::Subscription::To);
    let item = ctx
        .store
        .roster_item("bob", "alice@chorus.test")
        .expect("read")
        .expect("item");
    assert_eq!(item.subscription, chorus_core::roster::Subscription::From);
}

#[test]
fn blocked_sender_is_not_delivered() {
    let (ctx, _) = context(|_| {});
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "pc");
    b.on_element(parse("<presence xmlns='jabber:client'/>"));
    b.on_element(parse(&format!(
        "<iq xmlns='jabber:client' type='set' id='bl'><block xmlns='{}'><item jid='alice@chorus.test'/></block></iq>",
        ns::BLOCKING
    )));
    drain(&mut b, &mut brx);
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    a.on_element(parse(
        "<message xmlns='jabber:client' to='bob@chorus.test' type='chat'><body>x</body></message>",
    ));
    let got = drain(&mut a, &mut arx);
    assert!(
        got.iter().any(|e| e.attr("type") == Some("error")),
        "sender gets an error"
    );
    assert!(
        drain(&mut b, &mut brx)
            .iter()
            .all(|e| !e.is("message", ns::CLIENT))
    );
}

#[test]
fn resumption_replays_unacked_stanzas() {
    let (ctx, _) = context(|_| {});
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "pc");
    b.on_element(parse(&format!("<enable xmlns='{}' resume='true'/>", ns::SM)));
    let out = elements(b.take_outputs());
    let id = out[0].attr("id").expect("resumption id").to_owned();
    b.on_element(parse("<presence xmlns='jabber:client'/>"));
    drain(&mut b, &mut brx);
    let timer = b
        .on_disconnect(Some(brx), false)
        .expect("parked, with a resumption timer");
    assert_eq!(ctx.parked.len(), 1);
    assert_eq!(timer.after, std::time::Duration::from_secs(300));

    let (mut a, _arx) = login(&ctx, "alice", "apw", "pc");
    a.on_element(parse("<message xmlns='jabber:client' to='bob@chorus.test/pc' type='chat'><body>while away</body></message>"));

    let mut n = Session::new(
        ctx.clone(),
        Transport::DirectTls,
        "127.0.0.1".parse().expect("ip"),
    );
    n.on_header(&header());
    n.on_element(plain_auth("bob", "bpw"));
    n.on_header(&header());
    n.take_outputs();
    n.on_element(parse(&format!(
        "<resume xmlns='{}' previd='{id}' h='0'/>",
        ns::SM
    )));
    let parked = n.take_resumed().expect("resumed");
    let mut s = parked.session;
    let mut rx = parked.rx;
    let got = drain(&mut s, &mut rx);
    assert!(got[0].is("resumed", ns::SM));
    assert!(got.iter().any(|e| {
        e.get_child("body", ns::CLIENT)
            .is_some_and(|b| b.text() == "while away")
    }));
}

#[test]
fn per_user_rate_limit_answers_resource_constraint() {
    let (ctx, _) = context(|c| {
        c.limits.user_stanzas_per_sec = 1;
        c.limits.user_stanzas_burst = 2;
    });
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    for i in 0..6 {
        a.on_element(parse(&format!(
            "<iq xmlns='jabber:client' type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>"
        )));
    }
    let out = drain(&mut a, &mut arx);
    let limited = out
        .iter()
        .filter(|e| {
            e.attr("type") == Some("error")
                && e.get_child("error", ns::CLIENT)
                    .is_some_and(|x| x.has_child("resource-constraint", ns::STANZAS))
        })
        .count();
    let answered = out.iter().filter(|e| e.attr("type") == Some("result")).count();
    assert_eq!(answered, 3, "the burst (rate + burst = 3) is served: {out:?}");
    assert_eq!(limited, 3, "the rest is refused, not dropped silently");
}

#[test]
fn subscription_and_blocking_events_are_archived() {
    let (ctx, archive) = context(|_| {});
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    a.on_element(parse(
        "<presence xmlns='jabber:client' type='subscribe' to='bob@chorus.test'/>",
    ));
    a.on_element(parse(&format!(
        "<iq xmlns='jabber:client' type='set' id='bl'><block xmlns='{}'><item jid='eve@chorus.test'/></block></iq>",
        ns::BLOCKING
    )));
    a.on_element(parse("<presence xmlns='jabber:client'/>"));
    drain(&mut a, &mut arx);
    let records = archive.records();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records[0].xml.contains("subscribe") && records[0].to == "bob@chorus.test");
    assert!(records[1].xml.contains("eve@chorus.test") && records[1].from == "alice@chorus.test/pc");
}

/// Sends a MAM query (form fields and RSM set as XML) and returns the
/// result messages' ids and the final iq.
fn mam(
    s: &mut Session,
    rx: &mut crate::queue::Receiver<Routed>,
    fields: &str,
    rsm: &str,
) -> (Vec<String>, Element) {
    s.on_element(parse(&format!(
        "<iq xmlns='jabber:client' type='set' id='q'><query xmlns='{}' queryid='f'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{}</value></field>{fields}</x>\
         <set xmlns='{}'>{rsm}</set></query></iq>",
        ns::MAM,
        ns::MAM,
        ns::RSM
    )));
    let out = drain(s, rx);
    let ids = out
        .iter()
        .filter_map(|m| m.get_child("result", ns::MAM))
        .map(|r| {
            assert_eq!(r.attr("queryid"), Some("f"));
            let fwd = r.get_child("forwarded", ns::FORWARD).expect("forwarded");
            assert!(
                fwd.get_child("delay", ns::DELAY).is_some(),
                "result carries its time"
            );
            assert!(
                fwd.get_child("message", ns::CLIENT).is_some(),
                "result carries the message"
            );
            r.attr("id").unwrap_or_default().to_owned()
        })
        .collect();
    let fin = out
        .into_iter()
        .find(|e| e.is("iq", ns::CLIENT))
        .expect("an iq answers the query");
    (ids, fin)
}

#[test]
fn mam_pages_filters_and_refuses_bad_queries() {
    let (ctx, _archive) = context(|_| {});
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    for i in 0..5 {
        a.on_element(parse(&format!(
            "<message xmlns='jabber:client' to='bob@chorus.test' type='chat'><body>note {i}</body></message>"
        )));
    }
    // A chat state has no body: not archived by default.
    a.on_element(parse(
        "<message xmlns='jabber:client' to='bob@chorus.test' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
    ));
    drain(&mut a, &mut arx);
    let (ids, fin) = mam(&mut a, &mut arx, "", "<max>2</max>");
    assert_eq!(ids, ["mem-1", "mem-2"]);
    let f = fin.get_child("fin", ns::MAM).expect("fin");
    assert_eq!(f.attr("complete"), None);
    let set = f.get_child("set", ns::RSM).expect("rsm");
    assert_eq!(
        set.get_child("last", ns::RSM).map(|l| l.text()),
        Some("mem-2".into())
    );
    let (ids, fin) = mam(&mut a, &mut arx, "", "<max>2</max><before/>");
    assert_eq!(ids, ["mem-4", "mem-5"]);
    assert_eq!(
        fin.get_child("fin", ns::MAM).and_then(|f| f.attr("complete")),
        None
    );
    let (ids, fin) = mam(&mut a, &mut arx, "", "<max>10</max><after>mem-3</after>");
    assert_eq!(ids, ["mem-4", "mem-5"]);
    assert_eq!(
        fin.get_child("fin", ns::MAM).and_then(|f| f.attr("complete")),
        Some("true")
    );
    let (ids, _) = mam(
        &mut a,
        &mut arx,
        "<field var='{urn:xmpp:fulltext:0}fulltext'><value>NOTE 3</value></field>",
        "",
    );
    assert_eq!(ids, ["mem-4"]);
    let (ids, _) = mam(
        &mut a,
        &mut arx,
        "<field var='with'><value>carol@chorus.test</value></field>",
        "",
    );
    assert!(ids.is_empty());
    let (_, fin) = mam(
        &mut a,
        &mut arx,
        "<field var='start'><value>yesterday</value></field>",
        "",
    );
    assert_eq!(fin.attr("type"), Some("error"));
    let (_, fin) = mam(
        &mut a,
        &mut arx,
        "<field var='color'><value>red</value></field>",
        "",
    );
    assert!(
        fin.get_child("error", ns::CLIENT)
            .is_some_and(|e| e.has_child("feature-not-implemented", ns::STANZAS))
    );
    // Bob's archive is his own.
    a.on_element(parse(&format!(
        "<iq xmlns='jabber:client' type='set' id='x' to='bob@chorus.test'><query xmlns='{}'/></iq>",
        ns::MAM
    )));
    let out = drain(&mut a, &mut arx);
    assert!(
        out[0]
            .get_child("error", ns::CLIENT)
            .is_some_and(|e| e.has_child("forbidden", ns::STANZAS)),
        "{out:?}"
    );
}

#[test]
fn mam_preferences_hide_conversations_and_exclusions_apply() {
    let (ctx, archive) = context(|c| c.archive.exclude.clear());
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    a.on_element(parse(
        "<message xmlns='jabber:client' to='bob@chorus.test' type='chat'><body>hi</body></message>",
    ));
    // With no exclusions, a chat state is archived too.
    a.on_element(parse(
        "<message xmlns='jabber:client' to='bob@chorus.test' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    ));
    assert_eq!(archive.records().len(), 2);
    a.on_element(parse(&format!(
        "<iq xmlns='jabber:client' type='set' id='p'><prefs xmlns='{}' default='always'><always/><never><jid>bob@chorus.test</jid></never></prefs></iq>",
        ns::MAM
    )));
    let out = drain(&mut a, &mut arx);
    assert_eq!(out[0].attr("type"), Some("result"), "{out:?}");
    let (ids, _) = mam(&mut a, &mut arx, "", "");
    assert!(ids.is_empty(), "bob is on the never list: {ids:?}");
    a.on_element(parse(&format!(
        "<iq xmlns='jabber:client' type='get' id='g'><prefs xmlns='{}'/></iq>",
        ns::MAM
    )));
    let out = drain(&mut a, &mut arx);
    let prefs = out[0].get_child("prefs", ns::MAM).expect("prefs");
    assert_eq!(
        prefs
            .get_child("never", ns::MAM)
            .map(|n| n.children().map(|j| j.text()).collect::<Vec<_>>()),
        Some(vec!["bob@chorus.test".to_string()])
    );
}
