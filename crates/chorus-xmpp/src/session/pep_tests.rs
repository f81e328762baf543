//! PEP end to end inside one node: caps queries and their cache, publish
//! and notifications filtered by `+notify`, access models, last-item
//! delivery, publish-options, quotas, the e2e policy, bookmarks through
//! private storage, the vCard avatar bridge and last activity.

use super::tests_support::*;
use super::*;
use chorus_core::config::E2ePolicy;
use chorus_core::credentials::Credentials;
use chorus_core::roster::{RosterItem, Subscription};

const CAPS_NODE: &str = "https://client.test";

/// A disco#info answer naming `features`.
fn disco(features: &[&str]) -> Element {
    let mut q = xml::new("query", ns::DISCO_INFO).with_child(
        xml::new("identity", ns::DISCO_INFO)
            .with_attr("category", "client")
            .with_attr("type", "pc")
            .with_attr("name", "Test"),
    );
    for f in features {
        q.append_child(xml::new("feature", ns::DISCO_INFO).with_attr("var", *f));
    }
    q
}

/// Sends available presence with caps for `features` and answers the
/// server's caps query if it asks; returns what the session sent.
fn announce(s: &mut Session, rx: &mut crate::queue::Receiver<Routed>, features: &[&str]) -> Vec<Element> {
    let q = disco(features);
    let ver = crate::caps::ver_of(&q).expect("ver");
    s.on_element(parse(&format!(
        "<presence xmlns='jabber:client'><c xmlns='{}' hash='sha-1' node='{CAPS_NODE}' ver='{ver}'/></presence>",
        ns::CAPS
    )));
    let mut out = drain(s, rx);
    if let Some(query) = out
        .iter()
        .find(|e| e.attr("id").is_some_and(|i| i.starts_with("caps-")))
    {
        let reply = xml::new("iq", ns::CLIENT)
            .with_attr("type", "result")
            .with_attr("id", query.attr("id").unwrap_or_default())
            .with_attr("to", DOMAIN)
            .with_child(q.with_attr("node", format!("{CAPS_NODE}#{ver}")));
        s.on_element(reply);
        out.extend(drain(s, rx));
    }
    out
}

/// A third account, no contact of anyone.
fn add_carol(ctx: &Arc<Context>) {
    ctx.store
        .create_account(
            "carol",
            &Credentials::from_password_with("cpw", 64).expect("valid"),
        )
        .expect("create");
}

fn subscribe_both(ctx: &Arc<Context>, a: &str, b: &str) {
    for (user, contact) in [(a, b), (b, a)] {
        let item = RosterItem {
            jid: format!("{contact}@{DOMAIN}"),
            subscription: Subscription::Both,
            ..RosterItem::default()
        };
        ctx.store.put_roster_item(user, &item).expect("roster");
    }
}

fn publish(node: &str, id: &str, payload: &str, options: &str) -> Element {
    parse(&format!(
        "<iq xmlns='jabber:client' type='set' id='pub'><pubsub xmlns='{}'>\
         <publish node='{node}'><item id='{id}'>{payload}</item></publish>{options}</pubsub></iq>",
        ns::PUBSUB
    ))
}

fn events(out: &[Element], node: &str) -> usize {
    out.iter()
        .filter(|e| {
            e.get_child("event", ns::PUBSUB_EVENT)
                .and_then(|ev| ev.children().next())
                .is_some_and(|i| i.attr("node") == Some(node))
        })
        .count()
}

fn result_of(out: &[Element], id: &str) -> Element {
    out.iter()
        .find(|e| e.is("iq", ns::CLIENT) && e.attr("id") == Some(id))
        .cloned()
        .unwrap_or_else(|| panic!("no answer to {id}: {out:?}"))
}

fn condition(iq: &Element) -> Option<String> {
    iq.get_child("error", ns::CLIENT)
        .and_then(|e| e.children().find(|c| c.ns() == ns::STANZAS && c.name() != "text"))
        .map(|c| c.name().to_owned())
}

const NICK: &str = "<nick xmlns='http://jabber.org/protocol/nick'>Al</nick>";

#[test]
fn caps_are_asked_once_then_come_from_the_cache_and_a_forged_answer_is_not_cached() {
    let (ctx, _) = context(|_| {});
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    let out = announce(&mut a, &mut arx, &["urn:x+notify"]);
    assert!(
        out.iter()
            .any(|e| e.attr("id").is_some_and(|i| i.starts_with("caps-")))
    );
    assert_eq!(ctx.caps.len(), 1);
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "pc");
    let out = announce(&mut b, &mut brx, &["urn:x+notify"]);
    assert!(
        !out.iter()
            .any(|e| e.attr("id").is_some_and(|i| i.starts_with("caps-"))),
        "a cached ver is not asked again: {out:?}"
    );
    // A client that answers with other features than its ver stands for.
    let (mut c, mut crx) = login(&ctx, "bob", "bpw", "phone");
    c.on_element(parse(&format!(
        "<presence xmlns='jabber:client'><c xmlns='{}' hash='sha-1' node='n' ver='forged='/></presence>",
        ns::CAPS
    )));
    let out = drain(&mut c, &mut crx);
    let q = out
        .iter()
        .find(|e| e.attr("id").is_some_and(|i| i.starts_with("caps-")))
        .expect("asked");
    let reply = xml::new("iq", ns::CLIENT)
        .with_attr("type", "result")
        .with_attr("id", q.attr("id").unwrap_or_default())
        .with_child(disco(&["urn:evil+notify"]));
    c.on_element(reply);
    assert!(
        ctx.caps.get("forged=").is_none(),
        "an unverified answer is not cached"
    );
}

#[test]
fn a_publish_reaches_subscribed_contacts_that_asked_for_the_node_only() {
    let (ctx, _) = context(|_| {});
    add_carol(&ctx);
    subscribe_both(&ctx, "alice", "bob");
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    announce(&mut a, &mut arx, &[]);
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "pc");
    announce(&mut b, &mut brx, &["http://jabber.org/protocol/nick+notify"]);
    let (mut b2, mut b2rx) = login(&ctx, "bob", "bpw", "old");
    announce(&mut b2, &mut b2rx, &["urn:other+notify"]);
    let (mut c, mut crx) = login(&ctx, "carol", "cpw", "pc");
    announce(&mut c, &mut crx, &["http://jabber.org/protocol/nick+notify"]);
    drain(&mut b, &mut brx);
    a.on_element(publish(ns::NICK, "current", NICK, ""));
    let out = drain(&mut a, &mut arx);
    assert_eq!(result_of(&out, "pub").attr("type"), Some("result"), "{out:?}");
    assert_eq!(events(&out, ns::NICK), 0, "alice's client did not ask");
    assert_eq!(events(&drain(&mut b, &mut brx), ns::NICK), 1, "bob asked");
    assert_eq!(
        events(&drain(&mut b2, &mut b2rx), ns::NICK),
        0,
        "bob's other client did not"
    );
    assert_eq!(
        events(&drain(&mut c, &mut crx), ns::NICK),
        0,
        "carol is no contact"
    );
    // Items: bob may read (presence access), carol may not.
    let get = format!(
        "<iq xmlns='jabber:client' type='get' id='g' to='alice@{DOMAIN}'><pubsub xmlns='{}'><items node='{}'/></pubsub></iq>",
        ns::PUBSUB,
        ns::NICK
    );
    b.on_element(parse(&get));
    let got = result_of(&drain(&mut b, &mut brx), "g");
    assert!(got.to_xml().contains(">Al<"), "{got:?}");
    c.on_element(parse(&get));
    let refused = result_of(&drain(&mut c, &mut crx), "g");
    assert_eq!(condition(&refused).as_deref(), Some("not-authorized"));
}

#[test]
fn a_contact_coming_online_gets_the_last_item() {
    let (ctx, _) = context(|_| {});
    subscribe_both(&ctx, "alice", "bob");
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    a.on_element(publish(
        ns::NICK,
        "1",
        "<nick xmlns='http://jabber.org/protocol/nick'>Old</nick>",
        "",
    ));
    a.on_element(publish(ns::NICK, "2", NICK, ""));
    drain(&mut a, &mut arx);
    assert_eq!(
        ctx.store.pep_items("alice", ns::NICK).expect("items").len(),
        1,
        "max_items 1"
    );
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "pc");
    let out = announce(&mut b, &mut brx, &["http://jabber.org/protocol/nick+notify"]);
    assert_eq!(events(&out, ns::NICK), 1, "{out:?}");
    let ev = out
        .iter()
        .find(|e| events(std::slice::from_ref(*e), ns::NICK) == 1)
        .expect("event");
    assert!(ev.to_xml().contains(">Al<") && !ev.to_xml().contains("Old"));
}

#[test]
fn bookmarks_are_private_and_meet_their_publish_options() {
    let (ctx, _) = context(|_| {});
    subscribe_both(&ctx, "alice", "bob");
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    let options = format!(
        "<publish-options><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{}</value></field>\
         <field var='pubsub#persist_items'><value>true</value></field>\
         <field var='pubsub#max_items'><value>max</value></field>\
         <field var='pubsub#send_last_published_item'><value>never</value></field>\
         <field var='pubsub#access_model'><value>whitelist</value></field></x></publish-options>",
        ns::PUBSUB_PUBLISH_OPTIONS
    );
    for room in ["a", "b"] {
        a.on_element(publish(
            ns::BOOKMARKS2,
            &format!("{room}@conference.{DOMAIN}"),
            "<conference xmlns='urn:xmpp:bookmarks:1' autojoin='true'><nick>al</nick></conference>",
            &options,
        ));
        assert_eq!(
            result_of(&drain(&mut a, &mut arx), "pub").attr("type"),
            Some("result")
        );
    }
    // Options the node does not have: precondition-not-met.
    let open = options.replace("whitelist", "open");
    a.on_element(publish(
        ns::BOOKMARKS2,
        "c@x",
        "<conference xmlns='urn:xmpp:bookmarks:1'/>",
        &open,
    ));
    let refused = result_of(&drain(&mut a, &mut arx), "pub");
    assert!(refused.to_xml().contains("precondition-not-met"), "{refused:?}");
    // The old way (XEP-0049) sees both; bob sees nothing.
    a.on_element(parse(
        "<iq xmlns='jabber:client' type='get' id='p'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>",
    ));
    let legacy = result_of(&drain(&mut a, &mut arx), "p").to_xml();
    assert!(
        legacy.contains("a@conference.chorus.test") && legacy.contains("b@conference.chorus.test"),
        "{legacy}"
    );
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "pc");
    b.on_element(parse(&format!(
        "<iq xmlns='jabber:client' type='get' id='g' to='alice@{DOMAIN}'><pubsub xmlns='{}'><items node='{}'/></pubsub></iq>",
        ns::PUBSUB,
        ns::BOOKMARKS2
    )));
    assert_eq!(
        condition(&result_of(&drain(&mut b, &mut brx), "g")).as_deref(),
        Some("not-allowed")
    );
    // Writing the old way replaces the PEP bookmarks.
    a.on_element(parse(
        "<iq xmlns='jabber:client' type='set' id='s'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>\
         <conference jid='z@conference.chorus.test' name='Z' autojoin='true'><nick>al</nick></conference>\
         <url name='wiki' url='https://wiki.test'/></storage></query></iq>",
    ));
    assert_eq!(
        result_of(&drain(&mut a, &mut arx), "s").attr("type"),
        Some("result")
    );
    let ids: Vec<String> = ctx
        .store
        .pep_items("alice", ns::BOOKMARKS2)
        .expect("items")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["z@conference.chorus.test"]);
    a.on_element(parse(
        "<iq xmlns='jabber:client' type='get' id='p2'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>",
    ));
    let legacy = result_of(&drain(&mut a, &mut arx), "p2").to_xml();
    assert!(
        legacy.contains("wiki.test") && legacy.contains("name=\"Z\"") || legacy.contains("name='Z'"),
        "{legacy}"
    );
}

#[test]
fn e2e_keys_and_encrypted_messages_follow_the_policy() {
    for policy in [E2ePolicy::Deny, E2ePolicy::Allow] {
        let (ctx, _) = context(|c| c.policy.e2e = policy);
        let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
        a.on_element(publish(
            "eu.siacs.conversations.axolotl.devicelist",
            "current",
            "<list xmlns='eu.siacs.conversations.axolotl'><device id='1'/></list>",
            "",
        ));
        a.on_element(parse(&format!(
            "<message xmlns='jabber:client' id='m' to='bob@{DOMAIN}' type='chat'>\
             <encrypted xmlns='eu.siacs.conversations.axolotl'><payload>x</payload></encrypted></message>"
        )));
        let out = drain(&mut a, &mut arx);
        let published = result_of(&out, "pub");
        let refused_msg = out
            .iter()
            .find(|e| e.is("message", ns::CLIENT) && e.attr("type") == Some("error"));
        if policy == E2ePolicy::Deny {
            assert_eq!(condition(&published).as_deref(), Some("not-allowed"));
            assert!(published.to_xml().contains("policy.e2e"), "the error says why");
            assert!(published.to_xml().contains(ns::CHORUS_POLICY));
            assert!(refused_msg.is_some_and(|m| condition(m).as_deref() == Some("not-acceptable")));
        } else {
            assert_eq!(published.attr("type"), Some("result"), "{out:?}");
            assert!(refused_msg.is_none(), "{out:?}");
        }
    }
}

#[test]
fn pep_quotas_hold() {
    let (ctx, _) = context(|c| {
        c.limits.pep_item_bytes_max = 200;
        c.limits.pep_nodes_max = 2;
    });
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    let big = format!(
        "<nick xmlns='http://jabber.org/protocol/nick'>{}</nick>",
        "x".repeat(300)
    );
    a.on_element(publish(ns::NICK, "1", &big, ""));
    assert_eq!(
        condition(&result_of(&drain(&mut a, &mut arx), "pub")).as_deref(),
        Some("not-acceptable")
    );
    for node in ["urn:a", "urn:b", "urn:c"] {
        a.on_element(publish(node, "1", "<x xmlns='urn:x'/>", ""));
        let r = result_of(&drain(&mut a, &mut arx), "pub");
        if node == "urn:c" {
            assert_eq!(condition(&r).as_deref(), Some("resource-constraint"));
        } else {
            assert_eq!(r.attr("type"), Some("result"));
        }
    }
}

#[test]
fn the_pep_avatar_is_the_vcard_photo_and_the_presence_hash() {
    let (ctx, _) = context(|_| {});
    subscribe_both(&ctx, "alice", "bob");
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "pc");
    b.on_element(parse("<presence xmlns='jabber:client'/>"));
    a.on_element(parse("<presence xmlns='jabber:client'/>"));
    drain(&mut a, &mut arx);
    drain(&mut b, &mut brx);
    // An old client sets a vCard photo: it becomes the PEP avatar.
    a.on_element(parse(
        "<iq xmlns='jabber:client' type='set' id='v'><vCard xmlns='vcard-temp'><FN>Alice</FN>\
         <PHOTO><TYPE>image/png</TYPE><BINVAL>aGVsbG8=</BINVAL></PHOTO></vCard></iq>",
    ));
    drain(&mut a, &mut arx);
    // sha1("hello")
    let hash = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";
    assert_eq!(a.avatar_hash("alice").as_deref(), Some(hash));
    let seen = drain(&mut b, &mut brx);
    let presence = seen
        .iter()
        .find(|e| e.is("presence", ns::CLIENT))
        .expect("new presence");
    assert!(presence.to_xml().contains(hash), "{presence:?}");
    // A new client publishes a PEP avatar: the vCard shows it.
    a.on_element(publish(
        ns::AVATAR_DATA,
        "0123",
        "<data xmlns='urn:xmpp:avatar:data'>d29ybGQ=</data>",
        "",
    ));
    a.on_element(publish(
        ns::AVATAR_METADATA,
        "0123",
        "<metadata xmlns='urn:xmpp:avatar:metadata'><info id='0123' bytes='5' type='image/jpeg'/></metadata>",
        "",
    ));
    drain(&mut a, &mut arx);
    b.on_element(parse(&format!(
        "<iq xmlns='jabber:client' type='get' id='vc' to='alice@{DOMAIN}'><vCard xmlns='vcard-temp'/></iq>"
    )));
    let vcard = result_of(&drain(&mut b, &mut brx), "vc").to_xml();
    assert!(
        vcard.contains("d29ybGQ=") && vcard.contains("image/jpeg") && !vcard.contains("aGVsbG8="),
        "{vcard}"
    ); // A stranger does not get the avatar through the vCard: its nodes are
    // for contacts (presence access).
    add_carol(&ctx);
    let (mut c, mut crx) = login(&ctx, "carol", "cpw", "pc");
    c.on_element(parse(&format!(
        "<iq xmlns='jabber:client' type='get' id='vc' to='alice@{DOMAIN}'><vCard xmlns='vcard-temp'/></iq>"
    )));
    let vcard = result_of(&drain(&mut c, &mut crx), "vc").to_xml();
    assert!(!vcard.contains("d29ybGQ="), "{vcard}");
}

#[test]
fn last_activity_is_told_to_contacts_only() {
    let (ctx, _) = context(|_| {});
    add_carol(&ctx);
    subscribe_both(&ctx, "alice", "bob");
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    a.on_element(parse("<presence xmlns='jabber:client'/>"));
    a.on_element(parse(
        "<presence xmlns='jabber:client' type='unavailable'><status>lunch</status></presence>",
    ));
    drain(&mut a, &mut arx);
    let query = format!(
        "<iq xmlns='jabber:client' type='get' id='l' to='alice@{DOMAIN}'><query xmlns='jabber:iq:last'/></iq>"
    );
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "pc");
    b.on_element(parse(&query));
    let got = result_of(&drain(&mut b, &mut brx), "l");
    let q = got.get_child("query", ns::LAST).expect("answer");
    assert!(q.attr("seconds").is_some() && q.text() == "lunch", "{got:?}");
    let (mut c, mut crx) = login(&ctx, "carol", "cpw", "pc");
    c.on_element(parse(&query));
    assert_eq!(
        condition(&result_of(&drain(&mut c, &mut crx), "l")).as_deref(),
        Some("forbidden")
    );
}

#[test]
fn private_storage_keeps_what_it_may_and_refuses_the_rest() {
    let (ctx, _) = context(|c| c.limits.private_storage_namespaces_max = 1);
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    let set = |n: &str| {
        parse(&format!(
            "<iq xmlns='jabber:client' type='set' id='s'><query xmlns='jabber:iq:private'><prefs xmlns='{n}'><v>1</v></prefs></query></iq>"
        ))
    };
    a.on_element(set("urn:a"));
    assert_eq!(
        result_of(&drain(&mut a, &mut arx), "s").attr("type"),
        Some("result")
    );
    a.on_element(set("urn:b"));
    assert_eq!(
        condition(&result_of(&drain(&mut a, &mut arx), "s")).as_deref(),
        Some("resource-constraint")
    );
    a.on_element(set("jabber:client"));
    assert_eq!(
        condition(&result_of(&drain(&mut a, &mut arx), "s")).as_deref(),
        Some("not-acceptable")
    );
    a.on_element(parse(
        "<iq xmlns='jabber:client' type='get' id='g'><query xmlns='jabber:iq:private'><prefs xmlns='urn:a'/></query></iq>",
    ));
    assert!(
        result_of(&drain(&mut a, &mut arx), "g")
            .to_xml()
            .contains("<v>1</v>")
    );
}

#[test]
fn contact_addresses_are_in_the_server_disco_and_its_caps() {
    let (ctx, _) = context(|c| c.contacts.admin = vec!["mailto:it@chorus.test".into()]);
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    a.on_element(parse(&format!(
        "<iq xmlns='jabber:client' type='get' id='d' to='{DOMAIN}'><query xmlns='{}'/></iq>",
        ns::DISCO_INFO
    )));
    let info = result_of(&drain(&mut a, &mut arx), "d");
    let q = info.get_child("query", ns::DISCO_INFO).expect("query");
    assert!(q.to_xml().contains("mailto:it@chorus.test") && q.to_xml().contains("serverinfo"));
    // The server's caps hash covers the form, so a client that cached the
    // old answer asks again.
    let ver = crate::caps::ver_of(q).expect("ver");
    let node = format!("{}#{ver}", crate::caps::CHORUS_CAPS_NODE);
    a.on_element(parse(&format!(
        "<iq xmlns='jabber:client' type='get' id='n' to='{DOMAIN}'><query xmlns='{}' node='{node}'/></iq>",
        ns::DISCO_INFO
    )));
    assert_eq!(
        result_of(&drain(&mut a, &mut arx), "n").attr("type"),
        Some("result")
    );
}

#[test]
fn bookmarks_kept_in_pep_the_xep_0048_way_are_the_native_bookmarks() {
    let (ctx, _) = context(|_| {});
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    a.on_element(publish(
        ns::BOOKMARKS_LEGACY,
        "current",
        "<storage xmlns='storage:bookmarks'><conference jid='x@conference.chorus.test' autojoin='1' name='X'/></storage>",
        "",
    ));
    assert_eq!(
        result_of(&drain(&mut a, &mut arx), "pub").attr("type"),
        Some("result")
    );
    let native = ctx.store.pep_items("alice", ns::BOOKMARKS2).expect("items");
    assert_eq!(native.len(), 1);
    assert_eq!(native[0].0, "x@conference.chorus.test");
    a.on_element(parse(&format!(
        "<iq xmlns='jabber:client' type='get' id='g'><pubsub xmlns='{}'><items node='storage:bookmarks'/></pubsub></iq>",
        ns::PUBSUB
    )));
    let got = result_of(&drain(&mut a, &mut arx), "g").to_xml();
    assert!(
        got.contains("x@conference.chorus.test") && got.contains("autojoin"),
        "{got}"
    );
}

#[test]
fn a_new_subscriber_gets_the_last_items_at_once() {
    let (ctx, _) = context(|_| {});
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    a.on_element(parse("<presence xmlns='jabber:client'/>"));
    a.on_element(publish(ns::NICK, "current", NICK, ""));
    drain(&mut a, &mut arx);
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "pc");
    announce(&mut b, &mut brx, &["http://jabber.org/protocol/nick+notify"]);
    b.on_element(parse(&format!(
        "<presence xmlns='jabber:client' type='subscribe' to='alice@{DOMAIN}'/>"
    )));
    drain(&mut b, &mut brx);
    drain(&mut a, &mut arx);
    a.on_element(parse(&format!(
        "<presence xmlns='jabber:client' type='subscribed' to='bob@{DOMAIN}'/>"
    )));
    drain(&mut a, &mut arx);
    assert_eq!(
        events(&drain(&mut b, &mut brx), ns::NICK),
        1,
        "bob sees alice's nick at once"
    );
}
