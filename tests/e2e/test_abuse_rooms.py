"""The abuse suite, rooms part: a room's archive (MUC MAM) is readable only
by those who may enter the room now, with real clients (slixmpp's MUC and
MAM plugins) against a real node.

* Not a member of a members-only room, no password for a protected room,
  banned: refused, each with its own condition.
* Kicked or de-membered: the open session loses the archive at once.
* In a semi-anonymous room, filtering by a real JID (which would unmask a
  nick) is for moderators only.
"""

from __future__ import annotations

import pytest
from slixmpp import JID

from test_muc import configured_room, join, muc_client, room_jid, room_mam
from xmpp import IqError


async def refused(c, room: str, with_jid: str | None = None) -> str:
    """The condition a room MAM query is refused with."""
    iq = c.xmpp.make_iq_set(ito=room)
    iq["mam"]["rsm"]["max"] = "10"
    if with_jid:
        iq["mam"]["with"] = JID(with_jid)
    with pytest.raises(IqError) as e:
        await iq.send(timeout=10)
    return e.value.iq["error"]["condition"]


async def test_room_archives_follow_the_rules_of_entry(node):
    alice = await muc_client(node, "alice")
    bob = await muc_client(node, "bob")
    carol = await muc_client(node, "carol")
    muc = alice.plugin["xep_0045"]

    # --- members only: bob is a member and reads; carol is not.
    board = room_jid(node, "board")
    await configured_room(alice, board, "Alice", {"muc#roomconfig_membersonly": True})
    await muc.set_affiliation(JID(board), "member", jid=bob.bare)
    await join(bob, board, "Bob")
    alice.xmpp.send_message(mto=JID(board), mbody="minutes", mtype="groupchat")
    await bob.next_message(frm=f"{board}/Alice", body="minutes")
    results, _ = await room_mam(bob, board)
    assert len(results) == 1
    assert await refused(carol, board) == "registration-required"
    # --- bob loses his membership: his open session loses the archive.
    await muc.set_affiliation(JID(board), "none", jid=bob.bare)
    assert await refused(bob, board) == "registration-required"
    # --- banned.
    await muc.set_affiliation(JID(board), "outcast", jid=carol.bare)
    assert await refused(carol, board) == "forbidden"

    # --- a password: occupants (who gave it) read; others do not; kicked, out.
    vault = room_jid(node, "vault")
    await configured_room(alice, vault, "Alice", {
        "muc#roomconfig_passwordprotectedroom": True,
        "muc#roomconfig_roomsecret": "s3cret",
    })
    assert await refused(bob, vault) == "not-authorized"
    await join(bob, vault, "Bob", password="s3cret")
    results, _ = await room_mam(bob, vault)
    await muc.set_role(JID(vault), "Bob", "none", reason="out")
    assert await refused(bob, vault) == "not-authorized"

    # --- semi-anonymous: reading is fine, unmasking by real JID is not.
    masked = room_jid(node, "masked")
    await configured_room(alice, masked, "Alice", {"muc#roomconfig_whois": "moderators"})
    await join(bob, masked, "Bob")
    alice.xmpp.send_message(mto=JID(masked), mbody="who said this?", mtype="groupchat")
    await bob.next_message(frm=f"{masked}/Alice", body="who said this?")
    results, _ = await room_mam(bob, masked)
    assert len(results) == 1
    assert await refused(bob, masked, with_jid=alice.bare) == "forbidden"
    print("room MAM refused: not a member, de-membered, banned, no password, kicked, "
          "and a real-JID filter in a semi-anonymous room")
