//! Who may read a room's archive: the rules of entry, checked against the
//! room's shared state at query time (so a kick or a lost membership takes
//! effect at once), and `with` kept for moderators in semi-anonymous rooms.

use super::tests_support::*;
use super::*;

const ROOM: &str = "vault@conference.chorus.test";

fn send(s: &mut Session, xml: &str) {
    s.on_element(parse(xml));
}

/// Alice's room, configured with `fields` (`var=value` pairs).
fn room_with(ctx: &Arc<Context>, fields: &[(&str, &str)]) -> (Session, crate::queue::Receiver<Routed>) {
    let (mut a, mut arx) = login(ctx, "alice", "apw", "pc");
    send(
        &mut a,
        &format!(
            "<presence xmlns='jabber:client' to='{ROOM}/Alice'><x xmlns='{}'/></presence>",
            ns::MUC
        ),
    );
    drain(&mut a, &mut arx);
    let form: String = fields
        .iter()
        .map(|(var, v)| format!("<field var='{var}'><value>{v}</value></field>"))
        .collect();
    owner_set(&mut a, &mut arx, &form);
    (a, arx)
}

fn owner_set(a: &mut Session, arx: &mut crate::queue::Receiver<Routed>, fields: &str) {
    send(
        a,
        &format!(
            "<iq xmlns='jabber:client' type='set' id='cfg' to='{ROOM}'><query xmlns='{}'>\
             <x xmlns='jabber:x:data' type='submit'>{fields}</x></query></iq>",
            ns::MUC_OWNER
        ),
    );
    let out = drain(a, arx);
    let answer = out.iter().find(|e| e.attr("id") == Some("cfg"));
    assert_eq!(answer.and_then(|e| e.attr("type")), Some("result"), "{out:?}");
}

fn set_affiliation(a: &mut Session, arx: &mut crate::queue::Receiver<Routed>, jid: &str, aff: &str) {
    send(
        a,
        &format!(
            "<iq xmlns='jabber:client' type='set' id='aff' to='{ROOM}'><query xmlns='{}'>\
             <item jid='{jid}' affiliation='{aff}'/></query></iq>",
            ns::MUC_ADMIN
        ),
    );
    let out = drain(a, arx);
    assert!(
        out.iter()
            .any(|e| e.attr("id") == Some("aff") && e.attr("type") == Some("result")),
        "{out:?}"
    );
}

fn join(s: &mut Session, rx: &mut crate::queue::Receiver<Routed>, nick: &str, extra: &str) -> Vec<Element> {
    send(
        s,
        &format!(
            "<presence xmlns='jabber:client' to='{ROOM}/{nick}'><x xmlns='{}'>{extra}</x></presence>",
            ns::MUC
        ),
    );
    drain(s, rx)
}

/// The answer to a MAM query on the room: `Ok(results)` or `Err(condition)`.
fn room_mam(
    s: &mut Session,
    rx: &mut crate::queue::Receiver<Routed>,
    with: Option<&str>,
) -> Result<usize, String> {
    let form = with.map_or(String::new(), |w| {
        format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>{}</value></field>\
             <field var='with'><value>{w}</value></field></x>",
            ns::MAM
        )
    });
    send(
        s,
        &format!(
            "<iq xmlns='jabber:client' type='set' id='mam' to='{ROOM}'><query xmlns='{}'>{form}</query></iq>",
            ns::MAM
        ),
    );
    let out = drain(s, rx);
    let answer = out
        .iter()
        .find(|e| e.is("iq", ns::CLIENT) && e.attr("id") == Some("mam"))
        .expect("an answer");
    if answer.attr("type") == Some("result") {
        return Ok(out.iter().filter(|e| e.has_child("result", ns::MAM)).count());
    }
    let cond = answer
        .get_child("error", ns::CLIENT)
        .and_then(|e| e.children().find(|c| c.ns() == ns::STANZAS))
        .map(|c| c.name().to_owned());
    Err(cond.unwrap_or_default())
}

fn say(s: &mut Session, rx: &mut crate::queue::Receiver<Routed>, body: &str) {
    send(
        s,
        &format!("<message xmlns='jabber:client' to='{ROOM}' type='groupchat'><body>{body}</body></message>"),
    );
    drain(s, rx);
}

#[test]
fn a_de_membered_user_loses_a_members_only_archive_at_once() {
    let (ctx, _archive) = context(|_| {});
    let (mut a, mut arx) = room_with(&ctx, &[("muc#roomconfig_membersonly", "1")]);
    set_affiliation(&mut a, &mut arx, "bob@chorus.test", "member");
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "phone");
    join(&mut b, &mut brx, "Bob", "");
    say(&mut a, &mut arx, "board minutes");
    assert_eq!(room_mam(&mut b, &mut brx, None), Ok(1));
    // Alice takes Bob's membership away: he is removed from the room, and
    // his session (which still remembers joining) can no longer read.
    set_affiliation(&mut a, &mut arx, "bob@chorus.test", "none");
    drain(&mut b, &mut brx);
    assert_eq!(
        room_mam(&mut b, &mut brx, None),
        Err("registration-required".into())
    );
}

#[test]
fn a_password_room_archive_is_for_its_occupants() {
    let (ctx, _archive) = context(|_| {});
    let (mut a, mut arx) = room_with(
        &ctx,
        &[
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "s3cret"),
        ],
    );
    say(&mut a, &mut arx, "the plan");
    assert_eq!(room_mam(&mut a, &mut arx, None), Ok(1), "the owner reads");
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "phone");
    assert_eq!(room_mam(&mut b, &mut brx, None), Err("not-authorized".into()));
    join(&mut b, &mut brx, "Bob", "<password>s3cret</password>");
    assert_eq!(room_mam(&mut b, &mut brx, None), Ok(1));
    // Kicked: out of the occupant list, so out of the archive.
    send(
        &mut a,
        &format!(
            "<iq xmlns='jabber:client' type='set' id='kick' to='{ROOM}'><query xmlns='{}'>\
             <item nick='Bob' role='none'/></query></iq>",
            ns::MUC_ADMIN
        ),
    );
    drain(&mut a, &mut arx);
    drain(&mut b, &mut brx);
    assert_eq!(room_mam(&mut b, &mut brx, None), Err("not-authorized".into()));
}

#[test]
fn locked_and_banned_are_refused() {
    let (ctx, _archive) = context(|_| {});
    let (mut a, mut arx) = login(&ctx, "alice", "apw", "pc");
    join(&mut a, &mut arx, "Alice", "");
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "phone");
    // Created, not yet configured: nobody but the owner sees it.
    assert_eq!(room_mam(&mut b, &mut brx, None), Err("item-not-found".into()));
    owner_set(&mut a, &mut arx, "");
    assert_eq!(room_mam(&mut b, &mut brx, None), Ok(0));
    set_affiliation(&mut a, &mut arx, "bob@chorus.test", "outcast");
    assert_eq!(room_mam(&mut b, &mut brx, None), Err("forbidden".into()));
}

#[test]
fn with_cannot_unmask_a_nick_in_a_semi_anonymous_room() {
    let (ctx, _archive) = context(|_| {});
    let (mut a, mut arx) = room_with(&ctx, &[("muc#roomconfig_whois", "moderators")]);
    let (mut b, mut brx) = login(&ctx, "bob", "bpw", "phone");
    join(&mut b, &mut brx, "Bob", "");
    say(&mut a, &mut arx, "anonymous tip");
    // Bob may read the room, but not ask which messages alice@ sent.
    assert_eq!(room_mam(&mut b, &mut brx, None), Ok(1));
    assert_eq!(
        room_mam(&mut b, &mut brx, Some("alice@chorus.test")),
        Err("forbidden".into())
    );
    // The owner (a moderator, who sees real JIDs anyway) may.
    assert_eq!(room_mam(&mut a, &mut arx, Some("alice@chorus.test")), Ok(1));
    // In a non-anonymous room everyone sees real JIDs, so everyone may.
    owner_set(
        &mut a,
        &mut arx,
        "<field var='muc#roomconfig_whois'><value>anyone</value></field>",
    );
    drain(&mut b, &mut brx);
    assert_eq!(room_mam(&mut b, &mut brx, Some("alice@chorus.test")), Ok(1));
}

#[test]
fn room_metadata_is_the_rooms_not_the_users() {
    let (ctx, _archive) = context(|_| {});
    let (mut a, mut arx) = room_with(&ctx, &[]);
    say(&mut a, &mut arx, "first");
    send(
        &mut a,
        &format!(
            "<iq xmlns='jabber:client' type='get' id='md' to='{ROOM}'><metadata xmlns='{}'/></iq>",
            ns::MAM
        ),
    );
    let out = drain(&mut a, &mut arx);
    let md = out
        .iter()
        .find_map(|e| e.get_child("metadata", ns::MAM))
        .expect("metadata");
    assert!(md.has_child("start", ns::MAM), "{md:?}");
    // Preferences belong to a user's archive, not to a room's.
    send(
        &mut a,
        &format!(
            "<iq xmlns='jabber:client' type='set' id='p' to='{ROOM}'><prefs xmlns='{}' default='never'/></iq>",
            ns::MAM
        ),
    );
    let out = drain(&mut a, &mut arx);
    assert_eq!(out[0].attr("type"), Some("error"), "{out:?}");
}
