"""Presence and subscriptions (RFC 6121 §3, §4)."""

import pytest

from xmpp import connect, make_friends


async def test_subscription_handshake_both_ways(node):
    alice = await connect(node, "alice", resource="a", presence=True)
    bob = await connect(node, "bob", resource="b", presence=True)
    await alice.roster_get()  # become "interested" in roster pushes
    await bob.roster_get()
    A, B = node.jid("alice"), node.jid("bob")

    # alice -> bob
    alice.send_presence(to=B, ptype="subscribe")
    push = await alice.next_roster_push(jid=B)
    assert push[B]["subscription"] == "none" and push[B]["ask"] == "subscribe", push
    sub = await bob.next_presence(frm=A, ptype="subscribe")
    assert str(sub["from"]) == A, "subscription request must come from the bare JID"
    bob.send_presence(to=A, ptype="subscribed")
    await bob.next_roster_push(jid=A, subscription="from")
    await alice.next_presence(frm=B, ptype="subscribed")
    await alice.next_roster_push(jid=B, subscription="to")
    # Once approved, alice gets bob's current presence.
    await alice.next_presence(frm=bob.jid, ptype="available")

    # bob -> alice
    bob.send_presence(to=A, ptype="subscribe")
    await alice.next_presence(frm=B, ptype="subscribe")
    alice.send_presence(to=B, ptype="subscribed")
    await bob.next_presence(frm=A, ptype="subscribed")
    await bob.next_presence(frm=alice.jid, ptype="available")

    items, _, _ = await alice.roster_get()
    assert items[B]["subscription"] == "both", items
    items, _, _ = await bob.roster_get()
    assert items[A]["subscription"] == "both", items


@pytest.mark.parametrize("show", ["away", "dnd", "xa", "chat"])
async def test_presence_show_status_priority_visible_to_contact(node, show):
    alice = await connect(node, "alice", resource="a", presence=True)
    bob = await connect(node, "bob", resource="b", presence=True)
    await make_friends(alice, bob)
    bob.drop_inbox()

    alice.send_presence(show=show, status=f"status is {show}", priority=7)
    p = await bob.next_presence(frm=alice.jid, pred=lambda s: s["show"] == show)
    assert p["status"] == f"status is {show}"
    assert int(p["priority"]) == 7


async def test_unavailable_on_clean_disconnect(node):
    alice = await connect(node, "alice", resource="a", presence=True)
    bob = await connect(node, "bob", resource="b", presence=True)
    await make_friends(alice, bob)
    await alice.close()
    await bob.next_presence(10, frm=node.jid("alice", "a"), ptype="unavailable")


async def test_unavailable_on_abrupt_disconnect(node):
    alice = await connect(node, "alice", resource="a", presence=True)
    bob = await connect(node, "bob", resource="b", presence=True)
    await make_friends(alice, bob)
    alice.kill()  # TCP RST: no </stream:stream>, no unavailable presence
    await bob.next_presence(15, frm=node.jid("alice", "a"), ptype="unavailable")


async def test_presence_probe_on_login(node):
    alice = await connect(node, "alice", resource="a", presence=True)
    bob = await connect(node, "bob", resource="b", presence=True)
    await make_friends(alice, bob)
    alice.send_presence(show="dnd", status="busy")
    await alice.sync()
    await bob.close()

    # bob logs in later: the server probes alice for him.
    bob2 = await connect(node, "bob", resource="later", presence=True)
    p = await bob2.next_presence(frm=node.jid("alice", "a"), ptype="available")
    assert p["show"] == "dnd"
    assert p["status"] == "busy"


async def test_directed_presence_to_non_contact(node):
    alice = await connect(node, "alice", resource="a", presence=True)
    carol = await connect(node, "carol", resource="c", presence=True)
    items, _, _ = await alice.roster_get()
    assert node.jid("carol") not in items

    alice.send_presence(to=carol.jid, status="hello carol")
    p = await carol.next_presence(frm=alice.jid, ptype="available")
    assert p["status"] == "hello carol"

    # RFC 6121 §4.6.3: going offline sends unavailable to directed-presence
    # recipients too.
    await alice.close()
    await carol.next_presence(10, frm=node.jid("alice", "a"), ptype="unavailable")


async def test_no_presence_leak_to_non_contact(node):
    alice = await connect(node, "alice", resource="a", presence=True)
    carol = await connect(node, "carol", resource="c", presence=True)
    alice.send_presence(show="away", status="secret")
    await alice.sync()
    await carol.expect_no_presence(1.0, frm=node.jid("alice"))
