//! Multi-user chat through the session state machine (one node, in-memory
//! seams): creation, joining, messages, moderation and room rules.

use super::tests_support::*;
use super::*;

const ROOM: &str = "team@conference.chorus.test";

fn presence_to(s: &mut Session, to: &str, extra: &str) {
    s.on_element(parse(&format!(
        "<presence xmlns='jabber:client' to='{to}'><x xmlns='{}'>{extra}</x></presence>",
        ns::MUC
    )));
}

fn iq(s: &mut Session, to: &str, typ: &str, payload: &str) {
    s.on_element(parse(&format!(
        "<iq xmlns='jabber:client' type='{typ}' id='i' to='{to}'>{payload}</iq>"
    )));
}

fn codes(p: &Element) -> Vec<String> {
    p.get_child("x", ns::MUC_USER)
        .map(|x| {
            x.children()
                .filter(|c| c.is("status", ns::MUC_USER))
                .filter_map(|c| c.attr("code").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn error_condition(e: &Element) -> Option<String> {
    e.get_child("error", ns::CLIENT).and_then(|err| {
        err.children()
            .find(|c| c.ns() == ns::STANZAS)
            .map(|c| c.name().to_owned())
    })
}

/// Alice creates and unlocks (instant room) `team`; returns her session.
fn create_room(ctx: &Arc<Context>) -> (Session, crate::queue::Receiver<Routed>) {
    let (mut a, mut arx) = login(ctx, "alice", "apw", "pc");
    presence_to(&mut a, &format!("{ROOM}/Alice"), "");
    let out = drain(&mut a, &mut arx);
    let own = out
        .iter()
        .find(|e| e.is("presence", ns::CLIENT))
        .expect("own presence");
    assert_eq!(codes(own), ["110", "100", "201"], "{own:?}");
    iq(
        &mut a,
        ROOM,
        "set",
        &format!(
            "<query xmlns='{}'><x xmlns='jabber:x:data' type='submit'/></query>",
            ns::MUC_OWNER
        ),
    );
    let out = drain(&mut a, &mut arx);
    assert_eq!(out[0].attr("type"), Some("result"), "{out:?}");
    (a, arx)
}

#[test]
fn a_room_is_created_joined_and_chatted_in() {
    let (ctx, archive) = context(|_| {});
    // Before the owner configures it, nobody else may enter.
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    presence_to(&mut a, &format!("{ROOM}/Alice"), "");
    drain(&mut a, &mut arx);
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "phone");
    presence_to(&mut b, &format!("{ROOM}/Bob"), "");
    let out = drain(&mut b, &mut brx);
    assert_eq!(error_condition(&out[0]).as_deref(), Some("item-not-found"));
    iq(
        &mut a,
        ROOM,
        "set",
        &format!(
            "<query xmlns='{}'><x xmlns='jabber:x:data' type='submit'/></query>",
            ns::MUC_OWNER
        ),
    );
    drain(&mut a, &mut arx);
    presence_to(&mut b, &format!("{ROOM}/Bob"), "");
    let out = drain(&mut b, &mut brx);
    let presences: Vec<&Element> = out.iter().filter(|e| e.is("presence", ns::CLIENT)).collect();
    assert_eq!(presences[0].attr("from"), Some(&*format!("{ROOM}/Alice")));
    let item = presences[0]
        .get_child("x", ns::MUC_USER)
        .and_then(|x| x.get_child("item", ns::MUC_USER))
        .expect("item");
    assert_eq!(item.attr("affiliation"), Some("owner"));
    assert_eq!(item.attr("role"), Some("moderator"));
    assert_eq!(codes(presences[1]), ["110", "100"]);
    assert!(
        out.iter().any(|e| e.has_child("subject", ns::CLIENT)),
        "the subject ends the join"
    );
    let seen = drain(&mut a, &mut arx);
    assert!(
        seen.iter()
            .any(|p| p.attr("from") == Some(&*format!("{ROOM}/Bob")))
    );
    // A nick taken by someone else is refused.
    let (mut c, mut crx) = login(&ctx, "bob", "bpw", "tablet");
    presence_to(&mut c, &format!("{ROOM}/Alice"), "");
    let out = drain(&mut c, &mut crx);
    assert_eq!(error_condition(&out[0]).as_deref(), Some("conflict"));
    // Groupchat reaches every occupant, archived once with the room's stanza-id.
    b.on_element(parse(&format!(
        "<message xmlns='jabber:client' to='{ROOM}' type='groupchat' id='g1'><body>hello room</body></message>"
    )));
    let to_bob = drain(&mut b, &mut brx);
    let to_alice = drain(&mut a, &mut arx);
    for got in [&to_bob, &to_alice] {
        let m = got
            .iter()
            .find(|e| e.is("message", ns::CLIENT))
            .expect("groupchat copy");
        assert_eq!(m.attr("from"), Some(&*format!("{ROOM}/Bob")));
        assert_eq!(m.attr("type"), Some("groupchat"));
        assert_eq!(
            m.get_child("stanza-id", ns::SID).and_then(|s| s.attr("by")),
            Some(ROOM)
        );
    }
    let records = archive.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].room.as_deref(), Some(ROOM));
    assert_eq!(records[0].from, "bob@chorus.test/phone");
    // Private message between occupants.
    a.on_element(parse(&format!(
        "<message xmlns='jabber:client' to='{ROOM}/Bob' type='chat'><body>psst</body></message>"
    )));
    drain(&mut a, &mut arx);
    let got = drain(&mut b, &mut brx);
    assert_eq!(got[0].attr("from"), Some(&*format!("{ROOM}/Alice")));
    assert_eq!(
        got[0].get_child("body", ns::CLIENT).map(|b| b.text()).as_deref(),
        Some("psst")
    );
    // A latecomer gets the history from the archive, with delays.
    let (mut d, mut drx) = login(&ctx, "alice", "apw", "laptop");
    presence_to(&mut d, &format!("{ROOM}/Alice"), "<history maxstanzas='5'/>");
    let out = drain(&mut d, &mut drx);
    let history: Vec<&Element> = out
        .iter()
        .filter(|e| e.is("message", ns::CLIENT) && e.has_child("body", ns::CLIENT))
        .collect();
    assert_eq!(history.len(), 1, "{out:?}");
    assert!(history[0].has_child("delay", ns::DELAY));
    // Leaving: unavailable with 110 to the leaver, unavailable to the rest.
    b.on_element(parse(&format!(
        "<presence xmlns='jabber:client' to='{ROOM}/Bob' type='unavailable'/>"
    )));
    let out = drain(&mut b, &mut brx);
    assert_eq!(out[0].attr("type"), Some("unavailable"));
    assert!(codes(&out[0]).contains(&"110".to_string()));
    let seen = drain(&mut a, &mut arx);
    assert!(seen.iter().any(|p| p.attr("type") == Some("unavailable")));
}

#[test]
fn moderation_members_only_password_and_bans() {
    let (ctx, _) = context(|_| {});
    let (mut a, mut arx) = create_room(&ctx);
    // Moderated, members-only, password-protected.
    iq(
        &mut a,
        ROOM,
        "set",
        &format!(
            "<query xmlns='{}'><x xmlns='jabber:x:data' type='submit'>\
             <field var='muc#roomconfig_moderatedroom'><value>1</value></field>\
             <field var='muc#roomconfig_membersonly'><value>1</value></field>\
             <field var='muc#roomconfig_passwordprotectedroom'><value>1</value></field>\
             <field var='muc#roomconfig_roomsecret'><value>s3cret</value></field>\
             <field var='muc#roomconfig_persistentroom'><value>1</value></field></x></query>",
            ns::MUC_OWNER
        ),
    );
    assert_eq!(drain(&mut a, &mut arx)[0].attr("type"), Some("result"));
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "phone");
    presence_to(&mut b, &format!("{ROOM}/Bob"), "<password>s3cret</password>");
    assert_eq!(
        error_condition(&drain(&mut b, &mut brx)[0]).as_deref(),
        Some("registration-required")
    );
    iq(
        &mut a,
        ROOM,
        "set",
        &format!(
            "<query xmlns='{}'><item affiliation='member' jid='bob@chorus.test'/></query>",
            ns::MUC_ADMIN
        ),
    );
    assert_eq!(drain(&mut a, &mut arx)[0].attr("type"), Some("result"));
    presence_to(&mut b, &format!("{ROOM}/Bob"), "<password>wrong</password>");
    assert_eq!(
        error_condition(&drain(&mut b, &mut brx)[0]).as_deref(),
        Some("not-authorized")
    );
    presence_to(&mut b, &format!("{ROOM}/Bob"), "<password>s3cret</password>");
    drain(&mut b, &mut brx);
    drain(&mut a, &mut arx);
    // Members are participants even in a moderated room; revoke voice.
    iq(
        &mut a,
        ROOM,
        "set",
        &format!(
            "<query xmlns='{}'><item nick='Bob' role='visitor'/></query>",
            ns::MUC_ADMIN
        ),
    );
    assert_eq!(
        drain(&mut a, &mut arx).last().and_then(|e| e.attr("type")),
        Some("result")
    );
    drain(&mut b, &mut brx);
    b.on_element(parse(&format!(
        "<message xmlns='jabber:client' to='{ROOM}' type='groupchat'><body>may I?</body></message>"
    )));
    assert_eq!(
        error_condition(&drain(&mut b, &mut brx)[0]).as_deref(),
        Some("forbidden")
    );
    // Bob cannot kick the owner.
    iq(
        &mut b,
        ROOM,
        "set",
        &format!(
            "<query xmlns='{}'><item nick='Alice' role='none'/></query>",
            ns::MUC_ADMIN
        ),
    );
    assert_eq!(
        error_condition(&drain(&mut b, &mut brx)[0]).as_deref(),
        Some("not-allowed")
    );
    // The owner bans Bob: he is removed with 301 and cannot return.
    iq(
        &mut a,
        ROOM,
        "set",
        &format!(
            "<query xmlns='{}'><item affiliation='outcast' jid='bob@chorus.test'><reason>spam</reason></item></query>",
            ns::MUC_ADMIN
        ),
    );
    drain(&mut a, &mut arx);
    let out = drain(&mut b, &mut brx);
    let gone = out
        .iter()
        .find(|e| e.attr("type") == Some("unavailable"))
        .expect("bob is told he is out");
    assert!(codes(gone).contains(&"301".to_string()), "{gone:?}");
    presence_to(&mut b, &format!("{ROOM}/Bob"), "<password>s3cret</password>");
    assert_eq!(
        error_condition(&drain(&mut b, &mut brx)[0]).as_deref(),
        Some("forbidden")
    );
    // The room is listed and described.
    iq(
        &mut a,
        ROOM,
        "get",
        &format!("<query xmlns='{}'/>", ns::DISCO_INFO),
    );
    let out = drain(&mut a, &mut arx);
    let features: Vec<&str> = out[0]
        .get_child("query", ns::DISCO_INFO)
        .expect("info")
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    for f in [
        "muc_membersonly",
        "muc_moderated",
        "muc_passwordprotected",
        "muc_persistent",
    ] {
        assert!(features.contains(&f), "{features:?}");
    }
    // The owner destroys it.
    iq(
        &mut a,
        ROOM,
        "set",
        &format!("<query xmlns='{}'><destroy/></query>", ns::MUC_OWNER),
    );
    drain(&mut a, &mut arx);
    assert!(ctx.store.room("team").expect("read").is_none());
}

#[test]
fn a_nick_change_is_announced_with_303_and_the_new_nick() {
    let (ctx, _) = context(|_| {});
    let (mut a, mut arx) = create_room(&ctx);
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "phone");
    presence_to(&mut b, &format!("{ROOM}/Bob"), "");
    drain(&mut b, &mut brx);
    drain(&mut a, &mut arx);
    // Taking Alice's nick is refused; a free one is announced to everyone.
    presence_to(&mut b, &format!("{ROOM}/Alice"), "");
    assert_eq!(
        error_condition(&drain(&mut b, &mut brx)[0]).as_deref(),
        Some("conflict")
    );
    presence_to(&mut b, &format!("{ROOM}/Robert"), "");
    let own = drain(&mut b, &mut brx);
    let seen = drain(&mut a, &mut arx);
    for (who, got) in [("bob", &own), ("alice", &seen)] {
        let gone = got
            .iter()
            .find(|p| p.attr("type") == Some("unavailable"))
            .unwrap_or_else(|| panic!("{who} sees the old nick leave: {got:?}"));
        assert_eq!(gone.attr("from"), Some(&*format!("{ROOM}/Bob")));
        assert!(codes(gone).contains(&"303".to_string()), "{gone:?}");
        let item = gone
            .get_child("x", ns::MUC_USER)
            .and_then(|x| x.get_child("item", ns::MUC_USER))
            .expect("item");
        assert_eq!(item.attr("nick"), Some("Robert"));
        assert!(
            got.iter()
                .any(|p| p.attr("type").is_none() && p.attr("from") == Some(&*format!("{ROOM}/Robert"))),
            "{who} sees the new nick arrive: {got:?}"
        );
    }
    // Messages now come from the new nick.
    b.on_element(parse(&format!(
        "<message xmlns='jabber:client' to='{ROOM}' type='groupchat'><body>renamed</body></message>"
    )));
    drain(&mut b, &mut brx);
    let got = drain(&mut a, &mut arx);
    assert_eq!(got[0].attr("from"), Some(&*format!("{ROOM}/Robert")));
}

#[test]
fn a_session_whose_task_panics_leaves_no_ghost_resource_or_occupant() {
    let (ctx, _) = context(|_| {});
    let (mut a, mut arx) = create_room(&ctx);
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "phone");
    presence_to(&mut b, &format!("{ROOM}/Bob"), "");
    drain(&mut b, &mut brx);
    drain(&mut a, &mut arx);
    assert_eq!(crate::muc::occupants(&ctx, "team").len(), 2);
    assert!(!ctx.router.resources("bob").is_empty());
    // Bob's task panics mid-stanza: the runtime drops his session unwinding.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _held = b;
        panic!("a bug in one session task");
    }));
    assert!(panicked.is_err());
    assert!(
        ctx.router.resources("bob").is_empty(),
        "bob's resource is still routable"
    );
    let left: Vec<String> = crate::muc::occupants(&ctx, "team")
        .into_iter()
        .map(|o| o.nick)
        .collect();
    assert_eq!(left, ["Alice"]);
    let seen = drain(&mut a, &mut arx);
    assert!(
        seen.iter().any(|p| p.is("presence", ns::CLIENT)
            && p.attr("type") == Some("unavailable")
            && p.attr("from") == Some(&format!("{ROOM}/Bob"))),
        "alice was not told bob left: {seen:?}"
    );
}

#[test]
fn self_ping_tells_an_occupant_it_is_joined_and_anyone_else_it_is_not() {
    let (ctx, _) = context(|_| {});
    let (mut a, mut arx) = create_room(&ctx);
    let ping = "<ping xmlns='urn:xmpp:ping'/>";
    let answer = |s: &mut Session, rx: &mut crate::queue::Receiver<Routed>, to: &str| {
        iq(s, to, "get", ping);
        let out = drain(s, rx);
        let reply = out
            .iter()
            .find(|e| e.attr("id") == Some("i"))
            .cloned()
            .expect("an answer");
        (reply.attr("type").map(str::to_owned), error_condition(&reply))
    };
    // XEP-0410: joined -> result (answered by the room itself).
    assert_eq!(
        answer(&mut a, &mut arx, &format!("{ROOM}/Alice")),
        (Some("result".into()), None)
    );
    // Not an occupant (never joined, or gone since): not-acceptable, the
    // one answer a client reads as "rejoin".
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "pc");
    assert_eq!(
        answer(&mut b, &mut brx, &format!("{ROOM}/Alice")),
        (Some("error".into()), Some("not-acceptable".into()))
    );
    a.on_element(parse(&format!(
        "<presence xmlns='jabber:client' type='unavailable' to='{ROOM}/Alice'/>"
    )));
    drain(&mut a, &mut arx);
    assert_eq!(
        answer(&mut a, &mut arx, &format!("{ROOM}/Alice")),
        (Some("error".into()), Some("not-acceptable".into()))
    );
}
