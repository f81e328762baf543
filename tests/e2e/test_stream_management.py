"""XEP-0198 Stream Management: acks and resumption."""

import xml.etree.ElementTree as ET

from raw import RawStream, q
from xmpp import NS_CLIENT, NS_SM, Client, connect, localname

SM = "{%s}" % NS_SM


async def _collect_until_ping(s: RawStream) -> list[ET.Element]:
    """Ping the server and return every element received before the reply."""
    await s.send(f"<iq type='get' id='barrier' to='{s.domain}'><ping xmlns='urn:xmpp:ping'/></iq>")
    seen = []
    while True:
        el = await s.recv()
        if localname(el.tag) == "iq" and el.get("id") == "barrier":
            assert el.get("type") == "result"
            return seen
        seen.append(el)


def _bodies(els):
    return [e.findtext(f"{{{NS_CLIENT}}}body") for e in els
            if e.tag == f"{{{NS_CLIENT}}}message"]


async def test_sm_ack_counters_and_resume_after_abrupt_disconnect(node):
    bob = await connect(node, "bob", resource="b", presence=True)
    pw = node.password("alice")

    a = await RawStream.to_node(node)
    feats = await a.authenticate("alice", pw)
    assert feats.find(f"{SM}sm") is not None, "urn:xmpp:sm:3 not advertised after auth"
    full = await a.bind("sm")
    await a.send("<presence/>")
    await a.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
    enabled = await a.expect_tag(q(NS_SM, "enabled"))
    assert enabled.get("resume") in ("true", "1"), ET.tostring(enabled)
    smid = enabled.get("id")
    assert smid, "resumable <enabled/> without id"
    a.sm_enabled, a.sm_handled = True, 0

    # Server-side inbound counter: nothing received from us yet.
    await a.send(f"<r xmlns='{NS_SM}'/>")
    ack = await a.expect_tag(q(NS_SM, "a"))
    assert ack.get("h") == "0", ET.tostring(ack)
    await a.ping()
    await a.send(f"<r xmlns='{NS_SM}'/>")
    ack = await a.expect_tag(q(NS_SM, "a"))
    assert ack.get("h") == "1", ET.tostring(ack)

    bob.send_message(full, "before drop")
    m = await a.expect(lambda e: e.tag == f"{{{NS_CLIENT}}}message", what="message")
    assert m.findtext(f"{{{NS_CLIENT}}}body") == "before drop"
    acked = a.sm_handled
    await a.send(f"<a xmlns='{NS_SM}' h='{acked}'/>")
    await a.ping()  # make sure the server has seen our ack
    acked = a.sm_handled  # the ping result counts too; it is not acked

    a.abort()  # TCP RST; no </stream:stream>

    bob.send_message(full, "while away 1")
    bob.send_message(full, "while away 2")
    await bob.sync()

    b = await RawStream.to_node(node)
    feats = await b.authenticate("alice", pw)
    assert feats.find(f"{SM}sm") is not None
    await b.send(f"<resume xmlns='{NS_SM}' previd='{smid}' h='{acked}'/>")
    res = await b.expect(lambda e: e.tag in (q(NS_SM, "resumed"), q(NS_SM, "failed")),
                         what="resumed/failed")
    assert res.tag == q(NS_SM, "resumed"), ET.tostring(res)
    assert res.get("previd") == smid
    assert res.get("h") == "2", f"server handled count: {ET.tostring(res)}"  # 2 pings
    b.sm_enabled, b.sm_handled = True, acked

    seen = await _collect_until_ping(b)
    bodies = _bodies(seen)
    assert bodies[:2] == ["while away 1", "while away 2"], bodies
    assert "before drop" not in bodies, "acked stanza was resent"

    # The resumed session is the live one for that full JID.
    bob.send_message(full, "after resume")
    m = await b.expect(lambda e: e.tag == f"{{{NS_CLIENT}}}message", what="message")
    assert m.findtext(f"{{{NS_CLIENT}}}body") == "after resume"
    await b.close()


async def test_sm_resume_with_slixmpp(node):
    alice = Client(node, "alice", resource="smx", sm=True)
    await alice.connect(presence=True)
    enabled = await alice.wait_sm_enabled()
    assert enabled.get("resume") in ("true", "1")
    bob = await connect(node, "bob", resource="b", presence=True)

    bob.send_message(alice.jid, "one")
    assert (await alice.next_message(frm=bob.jid))["body"] == "one"

    alice.kill()
    await alice.wait_disconnected()
    bob.send_message(node.jid("alice", "smx"), "two")
    bob.send_message(node.jid("alice", "smx"), "three")
    await bob.sync()

    outcome = await alice.connect()
    assert outcome == "resumed"
    assert (await alice.next_message(frm=bob.jid))["body"] == "two"
    assert (await alice.next_message(frm=bob.jid))["body"] == "three"
    await alice.ping()


async def test_sm_resume_with_unknown_id_fails(node):
    s = await RawStream.to_node(node)
    await s.authenticate("alice", node.password("alice"))
    await s.send(f"<resume xmlns='{NS_SM}' previd='no-such-session' h='0'/>")
    res = await s.expect(lambda e: e.tag in (q(NS_SM, "resumed"), q(NS_SM, "failed")),
                         what="resumed/failed")
    assert res.tag == q(NS_SM, "failed")
    # The stream is still usable: bind normally.
    assert await s.bind("fresh") == node.jid("alice", "fresh")
    await s.close()
