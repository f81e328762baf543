//! Bounds on what one user can make the server keep: roster items however
//! they are added (roster sets, outgoing and incoming subscription
//! requests) and the set of directed-presence recipients.

use super::tests_support::*;
use super::*;
use chorus_core::credentials::Credentials;

fn roster_len(ctx: &Arc<Context>, user: &str) -> usize {
    ctx.store.roster(user).map(|r| r.items.len()).expect("roster")
}

fn has_error(out: &[Element], condition: &str) -> bool {
    out.iter().any(|e| {
        e.attr("type") == Some("error")
            && e.get_child("error", ns::CLIENT)
                .is_some_and(|x| x.has_child(condition, ns::STANZAS))
    })
}

#[test]
fn subscription_requests_cannot_grow_a_roster_past_its_limit() {
    let (ctx, _) = context(|c| c.limits.roster_items_max = 3);
    for u in ["carol", "dave", "erin"] {
        ctx.store
            .create_account(u, &Credentials::from_password_with("pw", 64).expect("valid"))
            .expect("create");
    }
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    // Outgoing requests: to real accounts and to names that do not exist.
    for to in ["bob", "carol", "nobody1", "nobody2", "nobody3"] {
        a.on_element(parse(&format!(
            "<presence xmlns='jabber:client' type='subscribe' to='{to}@chorus.test'/>"
        )));
    }
    let out = drain(&mut a, &mut arx);
    assert_eq!(roster_len(&ctx, "alice"), 3, "{out:?}");
    assert!(
        has_error(&out, "resource-constraint"),
        "the sender is told: {out:?}"
    );
    // Incoming requests fill bob's roster as pending items: the fourth
    // stranger's request is refused back to its sender, not stored.
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "pc");
    drain(&mut b, &mut brx);
    for (u, pw) in [("carol", "pw"), ("dave", "pw"), ("erin", "pw")] {
        let (mut s, mut rx) = login(&ctx, u, pw, "pc");
        s.on_element(parse(
            "<presence xmlns='jabber:client' type='subscribe' to='bob@chorus.test'/>",
        ));
        let out = drain(&mut s, &mut rx);
        if u == "erin" {
            assert!(has_error(&out, "resource-constraint"), "{out:?}");
        }
    }
    assert_eq!(
        roster_len(&ctx, "bob"),
        3,
        "alice's pending request and two strangers'"
    );
    // Bob comes online: he is shown the stored requests, and only those.
    b.on_element(parse("<presence xmlns='jabber:client'/>"));
    let got = drain(&mut b, &mut brx);
    let mut askers: Vec<&str> = got
        .iter()
        .filter(|e| e.is("presence", ns::CLIENT) && e.attr("type") == Some("subscribe"))
        .filter_map(|e| e.attr("from"))
        .collect();
    askers.sort_unstable();
    assert_eq!(
        askers,
        ["alice@chorus.test", "carol@chorus.test", "dave@chorus.test"],
        "{got:?}"
    );
}

#[test]
fn the_directed_presence_set_is_bounded() {
    let (ctx, _) = context(|c| c.limits.directed_presence_max = 2);
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    a.on_element(parse("<presence xmlns='jabber:client'/>"));
    drain(&mut a, &mut arx);
    for to in ["x1", "x2", "x2", "x3"] {
        a.on_element(parse(&format!(
            "<presence xmlns='jabber:client' to='{to}@chorus.test/r'/>"
        )));
    }
    let out = drain(&mut a, &mut arx);
    let refused: Vec<&Element> = out.iter().filter(|e| e.attr("type") == Some("error")).collect();
    assert_eq!(refused.len(), 1, "{out:?}");
    assert_eq!(refused[0].attr("from"), Some("x3@chorus.test/r"));
    // Saying goodbye to one makes room for another.
    a.on_element(parse(
        "<presence xmlns='jabber:client' type='unavailable' to='x1@chorus.test/r'/>",
    ));
    a.on_element(parse("<presence xmlns='jabber:client' to='x3@chorus.test/r'/>"));
    let out = drain(&mut a, &mut arx);
    assert!(!out.iter().any(|e| e.attr("type") == Some("error")), "{out:?}");
}

#[test]
fn one_subscription_request_is_one_prompt_whatever_the_path() {
    let (ctx, _) = context(|_| {});
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "pc");
    b.on_element(parse("<presence xmlns='jabber:client'/>"));
    drain(&mut b, &mut brx);
    let request = || {
        parse(
            "<presence xmlns='jabber:client' type='subscribe' from='alice@chorus.test' to='bob@chorus.test'/>",
        )
    };
    let prompts = |out: &[Element]| {
        out.iter()
            .filter(|e| e.is("presence", ns::CLIENT) && e.attr("type") == Some("subscribe"))
            .count()
    };
    // The routed request and the replicated roster item's copy (the same
    // stanza, by another path) and a resource-qualified copy: one prompt.
    b.on_routed(Routed::stanza(request()));
    b.on_routed(Routed::stanza(request()));
    let mut full = request();
    full.put_attr("from", "alice@chorus.test/laptop");
    b.on_routed(Routed::stanza(full));
    assert_eq!(prompts(&drain(&mut b, &mut brx)), 1);
    // Withdrawn, then asked again: a new request, a new prompt.
    b.on_routed(Routed::stanza(parse(
        "<presence xmlns='jabber:client' type='unsubscribe' from='alice@chorus.test' to='bob@chorus.test'/>",
    )));
    b.on_routed(Routed::stanza(request()));
    assert_eq!(prompts(&drain(&mut b, &mut brx)), 1);
    // Answered (denied), then asked again: shown again.
    b.on_element(parse(
        "<presence xmlns='jabber:client' type='unsubscribed' to='alice@chorus.test'/>",
    ));
    drain(&mut b, &mut brx);
    b.on_routed(Routed::stanza(request()));
    assert_eq!(prompts(&drain(&mut b, &mut brx)), 1);
}
