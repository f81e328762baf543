//! XEP-0115 verification strings against the XEP's own examples, and the
//! cache's bound.

use super::*;

fn parse(s: &str) -> Element {
    s.parse().expect("test XML parses")
}

/// XEP-0115 section 5.2, the simple example.
#[test]
fn simple_example_of_the_xep() {
    let q = parse(
        "<query xmlns='http://jabber.org/protocol/disco#info'>\
         <identity category='client' name='Exodus 0.9.1' type='pc'/>\
         <feature var='http://jabber.org/protocol/caps'/>\
         <feature var='http://jabber.org/protocol/disco#items'/>\
         <feature var='http://jabber.org/protocol/disco#info'/>\
         <feature var='http://jabber.org/protocol/muc'/></query>",
    );
    assert_eq!(ver_of(&q).as_deref(), Some("QgayPKawpkPSDYmwT/WM94uAlu0="));
}

/// XEP-0115 section 5.3, the complex example (languages, a form).
#[test]
fn complex_example_of_the_xep() {
    let q = parse(
        "<query xmlns='http://jabber.org/protocol/disco#info'>\
         <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
         <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>\
         <feature var='http://jabber.org/protocol/caps'/>\
         <feature var='http://jabber.org/protocol/disco#info'/>\
         <feature var='http://jabber.org/protocol/disco#items'/>\
         <feature var='http://jabber.org/protocol/muc'/>\
         <x xmlns='jabber:x:data' type='result'>\
           <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
           <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>\
           <field var='os'><value>Mac</value></field>\
           <field var='os_version'><value>10.5.1</value></field>\
           <field var='software'><value>Psi</value></field>\
           <field var='software_version'><value>0.11</value></field>\
         </x></query>",
    );
    assert_eq!(ver_of(&q).as_deref(), Some("q07IKJEyjvHSyhy//CH0CxmKi8w="));
}

#[test]
fn duplicate_features_are_rejected() {
    let q = parse(
        "<query xmlns='http://jabber.org/protocol/disco#info'>\
         <feature var='urn:a'/><feature var='urn:a'/></query>",
    );
    assert_eq!(ver_of(&q), None);
}

#[test]
fn notify_interest_names_exactly_the_node() {
    let q = parse(
        "<query xmlns='http://jabber.org/protocol/disco#info'>\
         <feature var='urn:xmpp:avatar:metadata+notify'/>\
         <feature var='urn:xmpp:bookmarks:1'/></query>",
    );
    let info = CapsInfo::from_query(&q);
    assert!(info.wants("urn:xmpp:avatar:metadata"));
    assert!(!info.wants("urn:xmpp:bookmarks:1"));
    assert!(!info.wants("urn:xmpp:avatar"));
}

#[test]
fn the_cache_stays_bounded() {
    let cache = CapsCache::default();
    for i in 0..CAPS_CACHE_ENTRIES_MAX + 10 {
        cache.put(&format!("ver{i}"), Arc::new(CapsInfo::default()));
        assert!(cache.len() <= CAPS_CACHE_ENTRIES_MAX);
    }
    assert!(cache.get(&format!("ver{}", CAPS_CACHE_ENTRIES_MAX + 9)).is_some());
}
