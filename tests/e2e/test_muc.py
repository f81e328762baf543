"""Multi-user chat (XEP-0045) end to end, driven by slixmpp's xep_0045 plugin.

The MUC service lives at ``conference.<domain>`` (conference.chorus.test in
these tests). Single-node tests cover discovery, room creation and the
locked state, joining (occupants, self-presence, history, subject),
groupchat reflection with XEP-0359 stanza ids, private messages, nick
conflicts, leaving, room configuration through the owner's data form,
members-only / password / moderated rooms, voice, kicks, bans, the limits
of a moderator's power, mediated and direct invitations, and MUC MAM on
the room's archive.

Cluster tests (cluster3: sites a, b, c) check that every node serves every
room: configuration and affiliations replicate between sites, groupchat
messages reach occupants on every site exactly once and in each sender's
order, and a room survives the kill -9 of the site that created it (its
occupants there leave with status 332 once the lease lapses).

Where the plugin cannot express something (e.g. noticing a join *error*,
which the server answers without echoing <x xmlns='…muc'/>, so
join_muc_wait would never return), the join presence is still built by
the plugin and the answer is read from the test client's inbox.
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET

import pytest
from slixmpp import JID

from xmpp import (NS_CLIENT, NS_DELAY, NS_FORWARD, Client, IqError, bare, connect,
                  localname, stanza_error_condition)

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = f"{NS_MUC}#user"
NS_SID = "urn:xmpp:sid:0"
NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_CONFERENCE = "jabber:x:conference"
NS_DATA = "jabber:x:data"

MUC_PLUGINS = ("xep_0045", "xep_0249", "xep_0313")
JOIN_TIMEOUT = 10.0
# Cluster: how long replicated room state may take to reach another site.
REPLICATE_S = 20.0
# A dead node's occupants leave once its lease (1.5 s) lapses.
UNAVAILABLE_WITHIN_S = 6.0
# How long to keep listening for duplicates once everything has arrived.
DUPLICATE_WINDOW_S = 1.5
POLL_S = 0.2
SLOW = pytest.mark.timeout(180)

USERS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret",
         "dave": "dave-secret"}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def service(node) -> str:
    return f"conference.{node.domain}"


def room_jid(node, name: str) -> str:
    return f"{name}@{service(node)}"


async def muc_client(node, user: str, resource: str = "muc") -> Client:
    return await connect(node, user, resource=resource, presence=True, plugins=MUC_PLUGINS)


def xml_text(st) -> str:
    el = st.xml if hasattr(st, "xml") else st
    return ET.tostring(el, encoding="unicode")


def muc_user_x(st) -> ET.Element | None:
    el = st.xml if hasattr(st, "xml") else st
    return el.find(f"{{{NS_MUC_USER}}}x")


def status_codes(st) -> set[int]:
    x = muc_user_x(st)
    if x is None:
        return set()
    return {int(s.get("code")) for s in x.findall(f"{{{NS_MUC_USER}}}status")}


def muc_item(st) -> ET.Element:
    x = muc_user_x(st)
    item = None if x is None else x.find(f"{{{NS_MUC_USER}}}item")
    assert item is not None, f"no muc#user <item/> in {xml_text(st)}"
    return item


def stanza_id(msg, by: str) -> str | None:
    for sid in msg.xml.findall(f"{{{NS_SID}}}stanza-id"):
        if sid.get("by") == by:
            return sid.get("id")
    return None


def delay_of(msg) -> ET.Element | None:
    return msg.xml.find(f"{{{NS_DELAY}}}delay")


async def attempt_join(c: Client, room: str, nick: str, timeout: float = JOIN_TIMEOUT, **kw):
    """Joins with slixmpp's join_muc_wait (occupants, self-presence,
    history, subject). Returns its (presence, subject, occupants, history)
    tuple, or the stanza error condition if the room answers the join
    with a presence error."""
    muc = c.plugin["xep_0045"]
    occupant = f"{room}/{nick}"
    joined = asyncio.ensure_future(muc.join_muc_wait(JID(room), nick, timeout=timeout, **kw))
    refused = asyncio.ensure_future(c.next_presence(timeout, frm=occupant, ptype="error"))
    await asyncio.wait({joined, refused}, return_when=asyncio.FIRST_COMPLETED)
    for f in (joined, refused):
        if not f.done():
            f.cancel()
    await asyncio.gather(joined, refused, return_exceptions=True)
    if joined.done() and not joined.cancelled() and joined.exception() is None:
        return joined.result()
    if refused.done() and not refused.cancelled() and refused.exception() is None:
        # The plugin registered the room before sending: forget it again.
        muc.rooms[None].pop(JID(room), None)
        muc.our_nicks[None].pop(JID(room), None)
        err = refused.result()
        return stanza_error_condition(err.xml) or f"error without condition: {xml_text(err)}"
    pending = [xml_text(s)[:300] for s in c._inbox]
    raise AssertionError(f"{c.name}: joining {occupant}: neither joined nor refused within "
                         f"{timeout}s; unconsumed inbox: {pending}")


async def join(c: Client, room: str, nick: str, **kw):
    """attempt_join that must succeed. The occupant list it returns leaves
    out the self-presence (which the plugin's got_online also reports)."""
    r = await attempt_join(c, room, nick, **kw)
    assert not isinstance(r, str), f"{c.name}: joining {room}/{nick} was refused: {r}"
    pres, subject, occupants, history = r
    return pres, subject, [p for p in occupants if 110 not in status_codes(p)], history


async def join_refused(c: Client, room: str, nick: str, **kw) -> str:
    """attempt_join that must be refused; returns the condition."""
    r = await attempt_join(c, room, nick, **kw)
    assert isinstance(r, str), (f"{c.name}: joining {room}/{nick} should have been refused, "
                                f"got self-presence {xml_text(r[0])}")
    return r


async def next_from(c: Client, jid: str, timeout: float = 5.0):
    """The next stanza of any kind whose from is ``jid`` (bare or full)."""
    def p(st):
        return str(st["from"]) == jid or ("/" not in jid and bare(st["from"]) == jid)
    return await c._next(p, timeout, f"stanza from {jid}")


async def groupchat(c: Client, frm: str, body: str, timeout: float = 5.0):
    """The reflected groupchat message ``body`` from occupant ``frm``."""
    return await c.next_message(timeout, frm=frm, body=body,
                                pred=lambda m: m["type"] == "groupchat")


async def instant_room(c: Client, room: str, nick: str):
    """Creates ``room`` (must not exist) and unlocks it with an empty
    configuration submit (an instant room); returns the self-presence."""
    pres, _, _, _ = await join(c, room, nick)
    assert 201 in status_codes(pres), f"room not created: {xml_text(pres)}"
    form = c.plugin["xep_0004"].make_form(ftype="submit")
    await c.plugin["xep_0045"].set_room_config(JID(room), form)
    return pres


async def configured_room(c: Client, room: str, nick: str, values: dict):
    """Creates ``room`` and submits the owner's form filled with ``values``."""
    pres, _, _, _ = await join(c, room, nick)
    assert 201 in status_codes(pres), f"room not created: {xml_text(pres)}"
    muc = c.plugin["xep_0045"]
    form = await muc.get_room_config(JID(room))
    form.set_values(values)
    await muc.set_room_config(JID(room), form)
    return pres


async def room_mam(c: Client, room: str, timeout: float = 10.0) -> tuple[list[ET.Element], ET.Element]:
    """A MAM query (slixmpp's xep_0313 stanza) addressed to the room;
    returns the <result/> elements (in arrival order) and the iq result."""
    iq = c.xmpp.make_iq_set(ito=room)
    queryid = "q" + c.xmpp.new_id()
    iq["mam"]["queryid"] = queryid
    iq["mam"]["rsm"]["max"] = "100"

    def is_result(st):
        r = st.xml.find(f"{{{NS_MAM}}}result")
        return localname(st.xml.tag) == "message" and r is not None and r.get("queryid") == queryid
    try:
        res = await iq.send(timeout=timeout)
    finally:
        hits = [st for st in c._inbox if is_result(st)]
        c._inbox[:] = [st for st in c._inbox if not is_result(st)]
    for st in hits:
        assert bare(st["from"]) == room, f"MAM result not from the room: {xml_text(st)}"
    return [st.xml.find(f"{{{NS_MAM}}}result") for st in hits], res.xml


def forwarded_message(result: ET.Element) -> ET.Element:
    fwd = result.find(f"{{{NS_FORWARD}}}forwarded")
    assert fwd is not None, ET.tostring(result, encoding="unicode")
    assert fwd.find(f"{{{NS_DELAY}}}delay") is not None, ET.tostring(result, encoding="unicode")
    m = fwd.find(f"{{{NS_CLIENT}}}message")
    assert m is not None, ET.tostring(result, encoding="unicode")
    return m


async def room_info(c: Client, room: str):
    """disco#info of a room (raises IqError, e.g. item-not-found)."""
    return await c.plugin["xep_0030"].get_info(jid=room, local=False, timeout=5)


def info_features(info) -> set[str]:
    return set(info["disco_info"]["features"])


def info_occupants(info) -> int | None:
    """muc#roominfo_occupants of a room's disco#info extended form."""
    for f in info.xml.iter(f"{{{NS_DATA}}}field"):
        if f.get("var") == "muc#roominfo_occupants":
            v = f.findtext(f"{{{NS_DATA}}}value")
            return int(v) if v else None
    return None


async def await_room_info(c: Client, room: str, pred, what: str,
                          deadline_s: float = REPLICATE_S):
    """Polls the room's disco#info at ``c``'s node until ``pred(info)``
    (replicated state has no event to wait for)."""
    deadline = time.monotonic() + deadline_s
    last = None
    while True:
        try:
            info = await room_info(c, room)
            if pred(info):
                return info
            last = xml_text(info)
        except IqError as e:
            last = f"iq error {e.iq['error']['condition']}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"{c.name}: {room} never showed {what} within {deadline_s}s; "
                                 f"last: {last}")
        await asyncio.sleep(POLL_S)


async def join_when_replicated(c: Client, room: str, nick: str, retry_on: str,
                               deadline_s: float = REPLICATE_S, **kw):
    """Joins, retrying while the room answers ``retry_on`` (the state that
    admits us has not replicated to this site yet)."""
    deadline = time.monotonic() + deadline_s
    while True:
        r = await attempt_join(c, room, nick, **kw)
        if not isinstance(r, str):
            pres, subject, occupants, history = r
            return pres, subject, [p for p in occupants if 110 not in status_codes(p)], history
        assert r == retry_on, f"{c.name}: joining {room}/{nick} refused with {r}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"{c.name}: {room}/{nick} still refused with {r} "
                                 f"after {deadline_s}s")
        await asyncio.sleep(POLL_S)


# --------------------------------------------------------------------------
# single node
# --------------------------------------------------------------------------


@pytest.mark.chorus(users=USERS)
async def test_room_lifecycle_join_history_subject_private_and_leave(node):
    room = room_jid(node, "lounge")
    alice = await muc_client(node, "alice")
    bob = await muc_client(node, "bob")
    carol = await muc_client(node, "carol")
    dave = await muc_client(node, "dave")

    # --- discovery: the server lists the service, which is a text conference.
    disco = alice.plugin["xep_0030"]
    items = await disco.get_items(jid=node.domain, local=False, timeout=5)
    listed = {str(i[0]) for i in items["disco_items"]["items"]}
    assert service(node) in listed, f"disco#items of {node.domain}: {listed}"
    info = await disco.get_info(jid=service(node), local=False, timeout=5)
    identities = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
    assert ("conference", "text") in identities, identities
    assert NS_MUC in info_features(info), info_features(info)

    # --- creation: alice becomes owner/moderator; 110, 100 (non-anonymous), 201.
    pres, subject, occupants, history = await join(alice, room, "Alice")
    assert str(pres["from"]) == f"{room}/Alice"
    assert {110, 100, 201} <= status_codes(pres), xml_text(pres)
    item = muc_item(pres)
    assert (item.get("affiliation"), item.get("role")) == ("owner", "moderator"), xml_text(pres)
    assert occupants == [] and history == []

    # Locked until configured: nobody else gets in, and it is not listed.
    assert await join_refused(bob, room, "Bob") == "item-not-found"
    items = await disco.get_items(jid=service(node), local=False, timeout=5)
    assert room not in {str(i[0]) for i in items["disco_items"]["items"]}

    # --- instant room: an empty submit unlocks it.
    form = alice.plugin["xep_0004"].make_form(ftype="submit")
    await alice.plugin["xep_0045"].set_room_config(JID(room), form)
    items = await disco.get_items(jid=service(node), local=False, timeout=5)
    assert room in {str(i[0]) for i in items["disco_items"]["items"]}, "unlocked public room listed"

    pres, _, occupants, history = await join(bob, room, "Bob")
    assert {110, 100} <= status_codes(pres) and 201 not in status_codes(pres), xml_text(pres)
    assert (muc_item(pres).get("affiliation"), muc_item(pres).get("role")) == ("none", "participant")
    assert [str(p["from"]) for p in occupants] == [f"{room}/Alice"]
    # Non-anonymous room: bob sees alice's real JID.
    assert muc_item(occupants[0]).get("jid") == alice.jid, xml_text(occupants[0])
    p = await alice.next_presence(frm=f"{room}/Bob", ptype="available")
    assert muc_item(p).get("jid") == bob.jid and 110 not in status_codes(p), xml_text(p)

    # --- groupchat: reflected to every occupant, sender included, with a stanza-id.
    sent = ["first of three", "second of three", "third of three"]
    sids = {}
    for body in sent:
        alice.send_message(room, body, mtype="groupchat")
        for c in (alice, bob):
            m = await groupchat(c, f"{room}/Alice", body)
            sid = stanza_id(m, room)
            assert sid, f"{c.name}: no stanza-id by {room}: {xml_text(m)}"
            assert sids.setdefault(body, sid) == sid, "every occupant sees the same stanza-id"
    assert len(set(sids.values())) == 3

    # --- subject: the moderator may set it; a plain participant may not.
    alice.plugin["xep_0045"].set_subject(JID(room), "Testing rooms")
    for c in (alice, bob):
        m = await c.next_message(frm=f"{room}/Alice", pred=lambda m: m["subject"] == "Testing rooms")
        assert m["type"] == "groupchat" and not m["body"], xml_text(m)
    bob.plugin["xep_0045"].set_subject(JID(room), "Bob's topic")
    err = await bob.next_error_message(frm=room)
    assert stanza_error_condition(err.xml) == "forbidden", xml_text(err)
    await alice.expect_no_message(0.5, frm=f"{room}/Bob")

    # --- a late joiner asks for 2 stanzas of history: occupants, own
    # presence, the last 2 messages (delayed), then the subject.
    bob.drop_inbox()
    alice.drop_inbox()
    _, subj, occupants, history = await join(carol, room, "Carol", maxstanzas=2)
    assert [m["body"] for m in history] == sent[1:], [xml_text(m) for m in history]
    for m in history:
        d = delay_of(m)
        assert d is not None and d.get("stamp") and d.get("from") == room, xml_text(m)
        assert str(m["from"]) == f"{room}/Alice" and m["type"] == "groupchat", xml_text(m)
    assert subj["subject"] == "Testing rooms" and str(subj["from"]) == f"{room}/Alice", xml_text(subj)
    assert sorted(str(p["from"]) for p in occupants) == [f"{room}/Alice", f"{room}/Bob"]
    order = []
    while carol._inbox and any(bare(s["from"]) == room for s in carol._inbox):
        st = await next_from(carol, room, 0)
        kind = localname(st.xml.tag)
        if kind == "presence":
            order.append("self" if 110 in status_codes(st) else "occupant")
        elif st.xml.find(f"{{{NS_CLIENT}}}subject") is not None:
            order.append("subject")
        else:
            order.append("history")
    assert order == ["occupant", "occupant", "self", "history", "history", "subject"], order
    for c in (alice, bob):
        await c.next_presence(frm=f"{room}/Carol", ptype="available")

    # --- private message through the room, both ways.
    bob.send_message(f"{room}/Carol", "psst carol")
    m = await carol.next_message(frm=f"{room}/Bob", body="psst carol")
    assert m["type"] == "chat", xml_text(m)
    carol.send_message(f"{room}/Bob", "psst bob")
    await bob.next_message(frm=f"{room}/Carol", body="psst bob")
    await alice.expect_no_message(0.5, body="psst carol")

    # --- nick conflict.
    assert await join_refused(dave, room, "Bob") == "conflict"
    await alice.expect_no_presence(0.5, frm=f"{room}/Bob")

    # --- leaving: unavailable with 110 to the leaver, without it to the others.
    carol.plugin["xep_0045"].leave_muc(JID(room), "Carol")
    p = await carol.next_presence(frm=f"{room}/Carol", ptype="unavailable")
    assert 110 in status_codes(p), xml_text(p)
    for c in (alice, bob):
        p = await c.next_presence(frm=f"{room}/Carol", ptype="unavailable")
        assert 110 not in status_codes(p), xml_text(p)
        assert muc_item(p).get("role") == "none", xml_text(p)
    # Gone means gone: a private message to the old nick is refused.
    bob.send_message(f"{room}/Carol", "still there?")
    err = await bob.next_error_message(frm=f"{room}/Carol")
    assert stanza_error_condition(err.xml) == "item-not-found", xml_text(err)


@pytest.mark.chorus(users=USERS)
async def test_members_only_password_moderated_room_and_moderation(node):
    room = room_jid(node, "council")
    alice = await muc_client(node, "alice")
    bob = await muc_client(node, "bob")
    carol = await muc_client(node, "carol")
    dave = await muc_client(node, "dave")
    muc = alice.plugin["xep_0045"]

    await configured_room(alice, room, "Alice", {
        "muc#roomconfig_roomname": "The Council",
        "muc#roomconfig_roomdesc": "members only, with a password",
        "muc#roomconfig_persistentroom": True,
        "muc#roomconfig_membersonly": True,
        "muc#roomconfig_moderatedroom": True,
        "muc#roomconfig_passwordprotectedroom": True,
        "muc#roomconfig_roomsecret": "s3cret",
        "muc#roomconfig_maxusers": "20",
    })
    # The values stuck (read back through the plugin).
    values = (await muc.get_room_config(JID(room))).get_values()
    want = {
        "muc#roomconfig_roomname": "The Council",
        "muc#roomconfig_roomdesc": "members only, with a password",
        "muc#roomconfig_persistentroom": True,
        "muc#roomconfig_membersonly": True,
        "muc#roomconfig_moderatedroom": True,
        "muc#roomconfig_passwordprotectedroom": True,
        "muc#roomconfig_roomsecret": "s3cret",
        "muc#roomconfig_maxusers": "20",
    }
    assert {k: values.get(k) for k in want} == want, values
    features = info_features(await room_info(bob, room))
    assert {"muc_persistent", "muc_membersonly", "muc_moderated",
            "muc_passwordprotected"} <= features, features
    # Only the owner may read the configuration.
    with pytest.raises(IqError) as e:
        await bob.plugin["xep_0045"].get_room_config(JID(room))
    assert e.value.iq["error"]["condition"] == "forbidden"

    # --- not a member: registration-required (even with the right password).
    assert await join_refused(bob, room, "Bob", password="s3cret") == "registration-required"
    await muc.set_affiliation(JID(room), "member", jid=bob.bare)
    assert bob.bare in {str(j) for j in await muc.get_affiliation_list(JID(room), "member")}

    # --- a member still needs the password.
    assert await join_refused(bob, room, "Bob", password="wrong") == "not-authorized"
    assert await join_refused(bob, room, "Bob") == "not-authorized"
    pres, _, _, _ = await join(bob, room, "Bob", password="s3cret")
    assert (muc_item(pres).get("affiliation"), muc_item(pres).get("role")) == ("member", "participant")
    await alice.next_presence(frm=f"{room}/Bob", ptype="available")

    # --- voice: a visitor cannot speak; with voice again, he can.
    await muc.set_role(JID(room), "Bob", "visitor")
    for c in (alice, bob):
        p = await c.next_presence(frm=f"{room}/Bob",
                                  pred=lambda p: muc_item(p).get("role") == "visitor")
        assert (110 in status_codes(p)) == (c is bob), xml_text(p)
    bob.send_message(room, "can anyone hear me?", mtype="groupchat")
    err = await bob.next_error_message(frm=room)
    assert stanza_error_condition(err.xml) == "forbidden", xml_text(err)
    await alice.expect_no_message(0.5, frm=f"{room}/Bob")
    await muc.set_role(JID(room), "Bob", "participant")
    for c in (alice, bob):
        await c.next_presence(frm=f"{room}/Bob",
                              pred=lambda p: muc_item(p).get("role") == "participant")
    bob.send_message(room, "now I have a voice", mtype="groupchat")
    for c in (alice, bob):
        await groupchat(c, f"{room}/Bob", "now I have a voice")

    # --- kick: role none -> 307 (and 110 for the kicked one); may come back.
    await muc.set_affiliation(JID(room), "member", jid=carol.bare)
    await join(carol, room, "Carol", password="s3cret")
    for c in (alice, bob):
        await c.next_presence(frm=f"{room}/Carol", ptype="available")
    await muc.set_role(JID(room), "Carol", "none", reason="cool down")
    p = await carol.next_presence(frm=f"{room}/Carol", ptype="unavailable")
    assert {307, 110} <= status_codes(p), xml_text(p)
    for c in (alice, bob):
        p = await c.next_presence(frm=f"{room}/Carol", ptype="unavailable")
        assert 307 in status_codes(p) and 110 not in status_codes(p), xml_text(p)
    bob.send_message(room, "after the kick", mtype="groupchat")
    await groupchat(alice, f"{room}/Bob", "after the kick")
    await carol.expect_no_message(0.5, body="after the kick")
    await join(carol, room, "Carol", password="s3cret")
    for c in (alice, bob):
        await c.next_presence(frm=f"{room}/Carol", ptype="available")

    # --- ban: outcast -> 301; a banned user cannot come back.
    await muc.set_affiliation(JID(room), "outcast", jid=carol.bare, reason="banned")
    p = await carol.next_presence(frm=f"{room}/Carol", ptype="unavailable")
    assert {301, 110} <= status_codes(p), xml_text(p)
    for c in (alice, bob):
        p = await c.next_presence(frm=f"{room}/Carol", ptype="unavailable")
        assert 301 in status_codes(p), xml_text(p)
    assert await join_refused(carol, room, "Carol", password="s3cret") == "forbidden"
    assert carol.bare in {str(j) for j in await muc.get_affiliation_list(JID(room), "outcast")}

    # --- an admin (a moderator, not an owner) can moderate participants but
    # cannot kick the owner.
    await muc.set_affiliation(JID(room), "admin", jid=dave.bare)
    pres, _, _, _ = await join(dave, room, "Dave", password="s3cret")
    assert (muc_item(pres).get("affiliation"), muc_item(pres).get("role")) == ("admin", "moderator")
    for c in (alice, bob):
        await c.next_presence(frm=f"{room}/Dave", ptype="available")
    dmuc = dave.plugin["xep_0045"]
    with pytest.raises(IqError) as e:
        await dmuc.set_role(JID(room), "Alice", "none")
    assert e.value.iq["error"]["condition"] == "not-allowed", xml_text(e.value.iq)
    await dmuc.set_role(JID(room), "Bob", "visitor")
    await bob.next_presence(frm=f"{room}/Bob", pred=lambda p: muc_item(p).get("role") == "visitor")
    await alice.sync()
    await alice.expect_no_presence(0.5, frm=f"{room}/Alice", ptype="unavailable")
    await bob.expect_no_presence(0.2, frm=f"{room}/Alice", ptype="unavailable")
    alice.send_message(room, "still here", mtype="groupchat")
    for c in (alice, bob, dave):
        await groupchat(c, f"{room}/Alice", "still here")


@pytest.mark.chorus(users=USERS)
async def test_invitations_and_room_mam(node):
    room = room_jid(node, "party")
    alice = await muc_client(node, "alice")
    bob = await muc_client(node, "bob")
    carol = await muc_client(node, "carol")
    await instant_room(alice, room, "Alice")

    # --- mediated invitation: the room tells bob that alice invites him.
    seen_by_plugin = []
    bob.xmpp.add_event_handler("groupchat_invite", seen_by_plugin.append)
    alice.plugin["xep_0045"].invite(JID(room), bob.bare, reason="come to the party")
    m = await bob.next_message(frm=room, pred=lambda m: muc_user_x(m) is not None)
    inv = muc_user_x(m).find(f"{{{NS_MUC_USER}}}invite")
    assert inv is not None, xml_text(m)
    assert bare(inv.get("from")) == alice.bare, xml_text(m)
    assert inv.findtext(f"{{{NS_MUC_USER}}}reason") == "come to the party", xml_text(m)
    assert str(m["from"]) == room, xml_text(m)
    assert seen_by_plugin and str(seen_by_plugin[0]["from"]) == room, "plugin saw the invitation"

    # --- direct invitation (XEP-0249): an ordinary message between users.
    alice.plugin["xep_0249"].send_invitation(JID(bob.bare), JID(room), reason="direct")
    m = await bob.next_message(frm=alice.jid, pred=lambda m: m.xml.find(f"{{{NS_CONFERENCE}}}x") is not None)
    x = m.xml.find(f"{{{NS_CONFERENCE}}}x")
    assert x.get("jid") == room and x.get("reason") == "direct", xml_text(m)

    # --- bob joins; a conversation; MUC MAM on the room returns it in order.
    await join(bob, room, "Bob")
    await alice.next_presence(frm=f"{room}/Bob", ptype="available")
    convo = [(alice, "Alice", "welcome bob"), (bob, "Bob", "thanks alice"),
             (alice, "Alice", "cake is on the table"), (bob, "Bob", "on my way"),
             (alice, "Alice", "bring plates")]
    sids = []
    for sender, nick, body in convo:
        sender.send_message(room, body, mtype="groupchat")
        m = await groupchat(sender, f"{room}/{nick}", body)
        other = bob if sender is alice else alice
        await groupchat(other, f"{room}/{nick}", body)
        sids.append(stanza_id(m, room))
    assert all(sids), sids
    for c in (alice, bob):
        results, res = await room_mam(c, room)
        got = [(forwarded_message(r).get("from"), forwarded_message(r).findtext(f"{{{NS_CLIENT}}}body"))
               for r in results]
        assert got == [(f"{room}/{nick}", body) for _, nick, body in convo], got
        assert [r.get("id") for r in results] == sids, "MAM ids are the reflected stanza-ids"
        for r in results:
            assert forwarded_message(r).get("type") == "groupchat", ET.tostring(r, encoding="unicode")
        fin = res.find(f"{{{NS_MAM}}}fin")
        assert fin is not None and fin.get("complete") in ("true", "1"), xml_text(res)

    # --- members-only: an owner's invitation makes the invitee a member.
    vip = room_jid(node, "vip")
    await configured_room(alice, vip, "Alice", {"muc#roomconfig_membersonly": True})
    assert await join_refused(carol, vip, "Carol") == "registration-required"
    alice.plugin["xep_0045"].invite(JID(vip), carol.bare, reason="you are on the list")
    m = await carol.next_message(frm=vip, pred=lambda m: muc_user_x(m) is not None)
    assert muc_user_x(m).find(f"{{{NS_MUC_USER}}}invite") is not None, xml_text(m)
    members = await alice.plugin["xep_0045"].get_affiliation_list(JID(vip), "member")
    assert carol.bare in {str(j) for j in members}, members
    pres, _, _, _ = await join(carol, vip, "Carol")
    assert muc_item(pres).get("affiliation") == "member", xml_text(pres)
    # Not invited, still out.
    assert await join_refused(bob, vip, "Bob") == "registration-required"


# --------------------------------------------------------------------------
# cluster
# --------------------------------------------------------------------------


async def collect_groupchat(c: Client, room: str, want: dict[str, list[str]],
                            timeout: float = 15.0) -> dict[str, list[str]]:
    """Waits for every body of ``want`` (nick -> bodies) from the room;
    returns nick -> bodies in arrival order, then listens for
    DUPLICATE_WINDOW_S more and fails on any further groupchat."""
    nicks = set(want)
    got: dict[str, list[str]] = {n: [] for n in nicks}
    total = sum(len(v) for v in want.values())
    deadline = time.monotonic() + timeout

    def p(m):
        return (m["type"] == "groupchat" and bare(m["from"]) == room
                and m["from"].resource in nicks and bool(m["body"]))
    while sum(len(v) for v in got.values()) < total:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{c.name}: after {timeout}s got {got}, want {want}")
        m = await c.next_message(remaining, pred=p)
        got[m["from"].resource].append(m["body"])
    try:
        extra = await c.next_message(DUPLICATE_WINDOW_S, pred=p)
    except AssertionError:
        return got
    raise AssertionError(f"{c.name}: unexpected extra groupchat {xml_text(extra)}; had {got}")


async def room_mam_bodies(c: Client, room: str) -> list[str]:
    results, _ = await room_mam(c, room)
    return [forwarded_message(r).findtext(f"{{{NS_CLIENT}}}body") for r in results]


async def await_mam(c: Client, room: str, bodies: list[str], deadline_s: float = REPLICATE_S) -> list[str]:
    """Polls the room's MAM at ``c``'s node until it holds ``bodies``
    (the archive commits asynchronously across sites)."""
    deadline = time.monotonic() + deadline_s
    while True:
        have = await room_mam_bodies(c, room)
        if set(bodies) <= set(have):
            return have
        if time.monotonic() >= deadline:
            raise AssertionError(f"{c.name}: room archive never held {bodies}; has {have}")
        await asyncio.sleep(POLL_S)


@SLOW
async def test_cluster_room_spans_sites_and_survives_kill9_of_creator_site(cluster3):
    cl = cluster3
    room = room_jid(cl["a"], "ops")
    alice = await muc_client(cl["a"], "alice", "a")
    bob = await muc_client(cl["b"], "bob", "b")
    carol = await muc_client(cl["c"], "carol", "c")
    await cl.asessions_synced()

    await configured_room(alice, room, "Alice", {"muc#roomconfig_persistentroom": True})
    # Wait until b and c have the configured room and alice's occupancy;
    # then join (retrying while the room still looks locked there).
    await await_room_info(bob, room, lambda i: "muc_persistent" in info_features(i)
                          and info_occupants(i) == 1, "the configured room with 1 occupant")
    pres, _, occupants, _ = await join_when_replicated(bob, room, "Bob", "item-not-found")
    assert 201 not in status_codes(pres), f"bob created a second room: {xml_text(pres)}"
    assert [str(p["from"]) for p in occupants] == [f"{room}/Alice"]
    await alice.next_presence(frm=f"{room}/Bob", ptype="available", timeout=10)
    await await_room_info(carol, room, lambda i: "muc_persistent" in info_features(i)
                          and info_occupants(i) == 2, "the configured room with 2 occupants")
    pres, _, occupants, _ = await join_when_replicated(carol, room, "Carol", "item-not-found")
    assert 201 not in status_codes(pres), xml_text(pres)
    assert sorted(str(p["from"]) for p in occupants) == [f"{room}/Alice", f"{room}/Bob"]
    for c in (alice, bob):
        await c.next_presence(frm=f"{room}/Carol", ptype="available", timeout=10)

    # --- everyone talks at once; everyone gets everything once, per-sender in order.
    members = {"Alice": alice, "Bob": bob, "Carol": carol}
    want = {nick: [f"{nick} says {i}" for i in range(8)] for nick in members}
    for i in range(8):
        for nick, c in members.items():
            c.send_message(room, want[nick][i], mtype="groupchat")
    for nick, c in members.items():
        got = await collect_groupchat(c, room, want)
        assert got == want, f"{nick} at its site: {got}"
    # Before the crash, let the archive commit what a accepted.
    everything = [b for v in want.values() for b in v]
    await await_mam(carol, room, everything)

    # --- kill -9 the site where the room was created.
    await asyncio.to_thread(cl.kill9, "a")
    # Both survivors hear that alice is gone (status 332) within the lease
    # bound; waited for together, so a failure says who missed it.
    gone = await asyncio.gather(*(
        c.next_presence(UNAVAILABLE_WITHIN_S, frm=f"{room}/Alice", ptype="unavailable")
        for c in (bob, carol)), return_exceptions=True)
    missed = [str(r) for r in gone if isinstance(r, BaseException)]
    assert not missed, "no unavailable presence for the dead site's occupant:\n" + "\n".join(missed)
    for p in gone:
        assert 332 in status_codes(p), xml_text(p)
        assert muc_item(p).get("role") == "none", xml_text(p)

    # b and c keep chatting in the room.
    survivors = {"Bob": bob, "Carol": carol}
    after = {nick: [f"{nick} after the crash {i}" for i in range(4)] for nick in survivors}
    for i in range(4):
        for nick, c in survivors.items():
            c.send_message(room, after[nick][i], mtype="groupchat")
    for nick, c in survivors.items():
        got = await collect_groupchat(c, room, after)
        assert got == after, f"{nick}: {got}"

    # --- a new user on c joins: the room's configuration survived on b and
    # c; dave gets the current occupants (not alice) and the history.
    dave = await muc_client(cl["c"], "dave", "c")
    after_all = [b for v in after.values() for b in v]
    archived = await await_mam(carol, room, after_all)
    pres, _, occupants, history = await join(dave, room, "Dave", maxstanzas=len(after_all))
    assert 201 not in status_codes(pres), f"the room was re-created: {xml_text(pres)}"
    assert sorted(str(p["from"]) for p in occupants) == [f"{room}/Bob", f"{room}/Carol"]
    assert [m["body"] for m in history] == archived[-len(after_all):], (
        [m["body"] for m in history], archived)
    assert sorted(m["body"] for m in history) == sorted(after_all)
    for m in history:
        assert delay_of(m) is not None, xml_text(m)
    for c in (bob, carol):
        await c.next_presence(frm=f"{room}/Dave", ptype="available", timeout=10)
    dave.send_message(room, "hello from dave", mtype="groupchat")
    for c in (bob, carol, dave):
        await groupchat(c, f"{room}/Dave", "hello from dave", timeout=10)


@SLOW
async def test_cluster_members_only_room_membership_replicates(cluster3):
    cl = cluster3
    room = room_jid(cl["a"], "private")
    alice = await muc_client(cl["a"], "alice", "a")
    carol = await muc_client(cl["c"], "carol", "c")
    await cl.asessions_synced()

    await configured_room(alice, room, "Alice", {"muc#roomconfig_membersonly": True,
                                                  "muc#roomconfig_persistentroom": True})
    await await_room_info(carol, room, lambda i: "muc_membersonly" in info_features(i),
                          "members-only")
    assert await join_refused(carol, room, "Carol") == "registration-required"

    await alice.plugin["xep_0045"].set_affiliation(JID(room), "member", jid=carol.bare)
    pres, _, occupants, _ = await join_when_replicated(carol, room, "Carol", "registration-required")
    assert muc_item(pres).get("affiliation") == "member", xml_text(pres)
    assert [str(p["from"]) for p in occupants] == [f"{room}/Alice"]
    await alice.next_presence(frm=f"{room}/Carol", ptype="available", timeout=10)
    carol.send_message(room, "made it in from c", mtype="groupchat")
    for c in (alice, carol):
        await groupchat(c, f"{room}/Carol", "made it in from c", timeout=10)
