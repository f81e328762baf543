"""Message routing and offline storage (RFC 6121 §8, XEP-0160, XEP-0203)."""

import re

from xmpp import NS_DELAY, connect, stanza_error_condition

# XEP-0082 DateTime: CCYY-MM-DDThh:mm:ss[.sss]TZD
STAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


async def _bob_two_resources(node):
    high = await connect(node, "bob", resource="high")
    high.send_presence(priority=10)
    await high.sync()
    low = await connect(node, "bob", resource="low")
    low.send_presence(priority=1)
    await low.sync()
    return high, low


async def test_bare_jid_message_goes_to_highest_priority(node):
    high, low = await _bob_two_resources(node)
    alice = await connect(node, "alice", resource="a", presence=True)
    alice.send_message(node.jid("bob"), "to the bare jid")
    msg = await high.next_message(frm=alice.jid)
    assert msg["body"] == "to the bare jid"
    assert str(msg["to"]) in (node.jid("bob"), high.jid)
    await low.expect_no_message(1.0, frm=alice.jid)


async def test_full_jid_message_goes_to_exactly_that_resource(node):
    high, low = await _bob_two_resources(node)
    alice = await connect(node, "alice", resource="a", presence=True)
    alice.send_message(low.jid, "only for low")
    msg = await low.next_message(frm=alice.jid)
    assert msg["body"] == "only for low"
    # The sender's full JID is stamped by the server.
    assert str(msg["from"]) == alice.jid
    await high.expect_no_message(1.0, frm=alice.jid)


async def test_message_to_unknown_user_bounces(node):
    alice = await connect(node, "alice", resource="a", presence=True)
    alice.send_message(node.jid("nosuchuser"), "anyone?")
    err = await alice.next_error_message(frm=node.jid("nosuchuser"))
    assert stanza_error_condition(err.xml) == "service-unavailable"


async def test_offline_messages_delivered_once_in_order_with_delay(node):
    alice = await connect(node, "alice", resource="a", presence=True)
    bodies = [f"offline message {i}" for i in range(3)]
    for b in bodies:
        alice.send_message(node.jid("bob"), b)
    await alice.sync()

    bob = await connect(node, "bob", resource="b", presence=True)
    for b in bodies:
        m = await bob.next_message(frm=node.jid("alice"))
        assert m["body"] == b, "offline messages out of order"
        delay = m.xml.find(f"{{{NS_DELAY}}}delay")
        assert delay is not None, "offline message without XEP-0203 <delay/>"
        assert delay.get("from") == node.domain
        assert STAMP_RE.match(delay.get("stamp") or ""), delay.get("stamp")
    await bob.expect_no_message(1.0, frm=node.jid("alice"))
    await bob.close()

    # A second login gets nothing again.
    bob2 = await connect(node, "bob", resource="b2", presence=True)
    await bob2.expect_no_message(1.5, frm=node.jid("alice"))


async def test_online_message_has_no_delay(node):
    bob = await connect(node, "bob", resource="b", presence=True)
    alice = await connect(node, "alice", resource="a", presence=True)
    alice.send_message(bob.jid, "live")
    m = await bob.next_message(frm=alice.jid)
    assert m.xml.find(f"{{{NS_DELAY}}}delay") is None
