//! Shared roster groups in sessions: fellows in the roster get, presence
//! without subscription, and pushes when the groups change.

use super::tests_support::*;
use super::*;
use chorus_core::config::SharedGroupConfig;
use chorus_core::credentials::Credentials;
use chorus_core::shared_groups::{Member, SharedGroup};
use std::collections::BTreeMap;

fn roster_get(s: &mut Session, rx: &mut crate::queue::Receiver<Routed>) -> Element {
    s.on_element(parse(
        "<iq xmlns='jabber:client' type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
    ));
    drain(s, rx)
        .into_iter()
        .find(|e| e.attr("id") == Some("r"))
        .and_then(|e| e.get_child("query", ns::ROSTER).cloned())
        .expect("roster result")
}

fn item<'a>(q: &'a Element, jid: &str) -> Option<&'a Element> {
    q.children().find(|i| i.attr("jid") == Some(jid))
}

fn online(ctx: &Arc<Context>, user: &str, pw: &str) -> (Session, crate::queue::Receiver<Routed>) {
    let (mut s, mut rx) = login(ctx, user, pw, "pc");
    roster_get(&mut s, &mut rx);
    s.on_element(parse(
        "<presence xmlns='jabber:client'><status>here</status></presence>",
    ));
    (s, rx)
}

#[test]
fn configured_group_members_see_each_other_without_subscribing() {
    let (ctx, _) = context(|c| {
        c.shared_groups = vec![SharedGroupConfig {
            name: "Everyone".into(),
            members: vec!["alice".into(), "bob".into()],
        }];
    });
    let (mut a, mut arx) = online(&ctx, "alice", "apw");
    drain(&mut a, &mut arx);
    let (mut b, mut brx) = online(&ctx, "bob", "bpw");
    let at_login = drain(&mut b, &mut brx);
    assert!(
        at_login
            .iter()
            .any(|e| e.is("presence", ns::CLIENT) && e.attr("from") == Some("alice@chorus.test/pc")),
        "bob's login shows alice's presence: {at_login:?}"
    );
    let got = drain(&mut a, &mut arx);
    assert!(
        got.iter()
            .any(|e| e.is("presence", ns::CLIENT) && e.attr("from") == Some("bob@chorus.test/pc")),
        "alice hears bob come online: {got:?}"
    );
    let q = roster_get(&mut a, &mut arx);
    let bob = item(&q, "bob@chorus.test").expect("bob in alice's roster");
    assert_eq!(bob.attr("subscription"), Some("both"));
    assert_eq!(
        bob.get_child("group", ns::ROSTER).map(|g| g.text()).as_deref(),
        Some("Everyone")
    );
    assert!(!q.attr("ver").unwrap_or_default().is_empty());
    b.on_element(parse("<presence xmlns='jabber:client' type='unavailable'/>"));
    let got = drain(&mut a, &mut arx);
    assert!(
        got.iter()
            .any(|e| e.attr("type") == Some("unavailable") && e.attr("from") == Some("bob@chorus.test/pc"))
    );
}

#[test]
fn a_group_change_pushes_the_roster_and_presence_and_a_removal_withdraws_them() {
    let (ctx, _) = context(|_| {});
    ctx.store
        .create_account(
            "carol",
            &Credentials::from_password_with("cpw", 64).expect("creds"),
        )
        .expect("carol");
    let (mut a, mut arx) = online(&ctx, "alice", "apw");
    let (mut c, mut crx) = online(&ctx, "carol", "cpw");
    drain(&mut a, &mut arx);
    drain(&mut c, &mut crx);
    let mut groups = BTreeMap::new();
    let member = |u: &str, n: &str| Member {
        user: u.into(),
        name: n.into(),
    };
    groups.insert(
        "dir:cn=eng".to_string(),
        SharedGroup {
            name: "Engineering".into(),
            members: vec![member("alice", "Alice A"), member("carol", "Carol C")],
        },
    );
    chorus_core::shared_groups::store(&*ctx.store, &groups).expect("store");
    assert_eq!(crate::shared::refresh(&ctx), 2, "both online members told");
    let got = drain(&mut a, &mut arx);
    let push = got
        .iter()
        .find_map(|e| {
            e.get_child("query", ns::ROSTER)
                .and_then(|q| item(q, "carol@chorus.test"))
                .cloned()
        })
        .expect("a roster push of carol");
    assert_eq!(
        (push.attr("subscription"), push.attr("name")),
        (Some("both"), Some("Carol C"))
    );
    assert!(
        got.iter()
            .any(|e| e.is("presence", ns::CLIENT) && e.attr("from") == Some("carol@chorus.test/pc")),
        "carol's presence follows the push: {got:?}"
    );
    assert_eq!(crate::shared::refresh(&ctx), 0, "unchanged: nobody told");

    chorus_core::shared_groups::store(&*ctx.store, &BTreeMap::new()).expect("store");
    assert_eq!(crate::shared::refresh(&ctx), 2);
    let got = drain(&mut a, &mut arx);
    assert!(got.iter().any(|e| {
        e.get_child("query", ns::ROSTER)
            .and_then(|q| item(q, "carol@chorus.test"))
            .is_some_and(|i| i.attr("subscription") == Some("remove"))
    }));
    assert!(
        got.iter()
            .any(|e| e.attr("type") == Some("unavailable") && e.attr("from") == Some("carol@chorus.test/pc"))
    );
    let q = roster_get(&mut a, &mut arx);
    assert!(item(&q, "carol@chorus.test").is_none());
}

/// A directory account's card marks the fields the directory owns: the
/// person's own vCard update keeps the directory's values of those and
/// its other fields.
#[test]
fn a_directory_persons_vcard_update_keeps_the_directorys_fields() {
    let (ctx, _) = context(|_| {});
    ctx.store
        .set_vcard(
            "alice",
            "<vCard xmlns='vcard-temp'><FN>Alice Directory</FN><TITLE>Engineer</TITLE>\
             <read-only xmlns='urn:chorus:directory:0'><field>FN</field><field>TITLE</field></read-only></vCard>",
        )
        .expect("card");
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    a.on_element(parse(
        "<iq xmlns='jabber:client' type='set' id='v'><vCard xmlns='vcard-temp'><FN>Queen Alice</FN>\
         <NICKNAME>Al</NICKNAME></vCard></iq>",
    ));
    let got = drain(&mut a, &mut arx);
    assert!(
        got.iter()
            .any(|e| e.attr("id") == Some("v") && e.attr("type") == Some("result"))
    );
    let stored: Element = ctx
        .store
        .vcard("alice")
        .expect("read")
        .expect("card")
        .parse()
        .expect("xml");
    let text = |n: &str| stored.get_child(n, ns::VCARD).map(|e| e.text());
    assert_eq!(text("FN").as_deref(), Some("Alice Directory"));
    assert_eq!(text("TITLE").as_deref(), Some("Engineer"));
    assert_eq!(text("NICKNAME").as_deref(), Some("Al"));
    assert!(stored.get_child("read-only", "urn:chorus:directory:0").is_some());
}

/// XEP-0191: no presence crosses a block, also when it comes from another
/// node's lease expiry or heal, or from a shared group. (Before, a session
/// elsewhere reappearing after a heal sent its presence to every local
/// subscriber, blocked or not.)
#[test]
fn presence_from_another_node_or_a_group_change_respects_blocks() {
    let (ctx, _) = context(|_| {});
    ctx.store
        .create_account(
            "carol",
            &Credentials::from_password_with("cpw", 64).expect("creds"),
        )
        .expect("carol");
    let (mut a, mut arx) = online(&ctx, "alice", "apw");
    drain(&mut a, &mut arx);
    // alice is subscribed to bob and carol, and blocks bob.
    for c in ["bob", "carol"] {
        let item = chorus_core::roster::RosterItem {
            jid: format!("{c}@chorus.test"),
            subscription: chorus_core::roster::Subscription::Both,
            ..Default::default()
        };
        ctx.store.put_roster_item("alice", &item).expect("item");
    }
    ctx.store
        .set_blocked("alice", &["bob@chorus.test".to_string()], true)
        .expect("block");
    let presence = parse("<presence xmlns='jabber:client'/>");
    crate::remote::remote_presence_changed(&ctx, "bob", "phone", Some(presence.clone()));
    crate::remote::remote_presence_changed(&ctx, "carol", "phone", Some(presence));
    let got = drain(&mut a, &mut arx);
    let from: Vec<_> = got.iter().filter_map(|e| e.attr("from")).collect();
    assert_eq!(from, ["carol@chorus.test/phone"], "bob is blocked: {got:?}");

    // A group change brings bob's presence neither.
    let (mut b, mut brx) = online(&ctx, "bob", "bpw");
    drain(&mut a, &mut arx);
    drain(&mut b, &mut brx);
    let member = |u: &str| Member {
        user: u.into(),
        name: String::new(),
    };
    let groups: BTreeMap<String, SharedGroup> = [(
        "dir:cn=all".to_string(),
        SharedGroup {
            name: "All".into(),
            members: vec![member("alice"), member("bob")],
        },
    )]
    .into();
    chorus_core::shared_groups::store(&*ctx.store, &groups).expect("store");
    crate::shared::refresh(&ctx);
    let got = drain(&mut b, &mut brx);
    assert!(
        !got.iter()
            .any(|e| e.is("presence", ns::CLIENT) && e.attr("from") == Some("alice@chorus.test/pc")),
        "bob sees nothing of alice, who blocks him: {got:?}"
    );
    let got = drain(&mut a, &mut arx);
    assert!(
        !got.iter()
            .any(|e| e.is("presence", ns::CLIENT) && e.attr("from").is_some_and(|f| f.starts_with("bob@")))
    );
}

/// Only the directory's synchronization marks fields read-only: a local
/// account's own marker is dropped, so its card cannot pass for the
/// directory's.
#[test]
fn a_client_cannot_mark_its_own_vcard_fields_as_the_directorys() {
    let (ctx, _) = context(|_| {});
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    a.on_element(parse(
        "<iq xmlns='jabber:client' type='set' id='v'><vCard xmlns='vcard-temp'><TITLE>CEO</TITLE>\
         <read-only xmlns='urn:chorus:directory:0'><field>TITLE</field></read-only></vCard></iq>",
    ));
    drain(&mut a, &mut arx);
    let stored = ctx.store.vcard("alice").expect("read").expect("card");
    assert!(
        stored.contains("CEO") && !stored.contains("urn:chorus:directory:0"),
        "{stored}"
    );
}
