"""XEP-0280 Message Carbons and XEP-0191 Blocking Command."""

from slixmpp import JID

from xmpp import NS_CLIENT, connect, stanza_error_condition


async def test_carbons_received_and_sent(node):
    res1 = await connect(node, "alice", resource="res1", presence=True)
    res2 = await connect(node, "alice", resource="res2", presence=True)
    await res1.plugin["xep_0280"].enable(timeout=5)
    await res2.plugin["xep_0280"].enable(timeout=5)
    bob = await connect(node, "bob", resource="b", presence=True)

    # bob -> alice/res1: res1 gets it, res2 gets a <received/> carbon.
    bob.send_message(res1.jid, "hello res1")
    m = await res1.next_message(frm=bob.jid)
    assert m["body"] == "hello res1"
    inner = await res2.next_carbon("received")
    assert inner.get("from") == bob.jid
    assert inner.get("to") == res1.jid
    assert inner.findtext(f"{{{NS_CLIENT}}}body") == "hello res1"
    # res1 itself gets no carbon of a message addressed to it.
    await res1.expect_no_carbon("received", 0.5)

    # alice/res1 -> bob: res2 gets a <sent/> carbon.
    res1.send_message(bob.jid, "reply from res1")
    m = await bob.next_message(frm=res1.jid)
    assert m["body"] == "reply from res1"
    inner = await res2.next_carbon("sent")
    assert inner.get("to") == bob.jid
    assert inner.findtext(f"{{{NS_CLIENT}}}body") == "reply from res1"


async def test_carbons_not_sent_when_disabled(node):
    res1 = await connect(node, "alice", resource="res1", presence=True)
    res2 = await connect(node, "alice", resource="res2", presence=True)
    await res2.plugin["xep_0280"].enable(timeout=5)
    await res2.plugin["xep_0280"].disable(timeout=5)
    bob = await connect(node, "bob", resource="b", presence=True)
    bob.send_message(res1.jid, "no carbon please")
    await res1.next_message(frm=bob.jid)
    await res2.sync()
    await res2.expect_no_carbon("received", 1.0)


async def test_blocking(node):
    alice = await connect(node, "alice", resource="a", presence=True)
    bob = await connect(node, "bob", resource="b", presence=True)
    blocking = bob.plugin["xep_0191"]
    A = node.jid("alice")

    await blocking.block(JID(A), timeout=5)
    blocked = await blocking.get_blocked_jids(timeout=5)
    assert JID(A) in blocked, blocked

    alice.send_message(node.jid("bob"), "blocked to bare")
    alice.send_message(bob.jid, "blocked to full")
    await alice.sync()
    # XEP-0191 §3.4: not delivered; if the server answers with an error it
    # is <service-unavailable/>.
    await bob.expect_no_message(1.0, frm=A)
    for _ in range(2):
        try:
            err = await alice.next_error_message(0.5, frm=node.jid("bob"))
        except AssertionError:
            break
        assert stanza_error_condition(err.xml) == "service-unavailable"

    # bob cannot message the blocked contact either (XEP-0191 §3.5).
    bob.send_message(alice.jid, "to someone I blocked")
    await bob.sync()
    await alice.expect_no_message(1.0, frm=node.jid("bob"))

    await blocking.unblock(JID(A), timeout=5)
    blocked = await blocking.get_blocked_jids(timeout=5)
    assert JID(A) not in blocked
    alice.send_message(bob.jid, "after unblock")
    m = await bob.next_message(frm=A)
    assert m["body"] == "after unblock"
