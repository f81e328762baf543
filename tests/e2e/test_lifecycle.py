"""Crash durability (kill -9), graceful shutdown and structured logs."""

import json

import pytest
from slixmpp import JID

from raw import raw_login
from xmpp import NS_SM, NS_VCARD, connect


async def test_data_survives_kill9(node):
    alice = await connect(node, "alice", resource="a")
    dave, mallory = node.jid("dave"), node.jid("mallory")
    await alice.roster_set(dave, name="Dave", groups=["Friends"])
    await alice.iq_set(f"<vCard xmlns='{NS_VCARD}'><FN>Alice Liddell</FN></vCard>")
    await alice.plugin["xep_0191"].block(JID(mallory), timeout=5)
    await alice.close()

    # bob leaves an offline message for alice and gets it acked (XEP-0198):
    # once acked, it must survive a crash.
    bob = await raw_login(node, "bob", "b")
    await bob.send(f"<enable xmlns='{NS_SM}'/>")
    await bob.expect_tag(f"{{{NS_SM}}}enabled")
    await bob.message(node.jid("alice"), "survive the crash")
    await bob.send(f"<r xmlns='{NS_SM}'/>")
    ack = await bob.expect_tag(f"{{{NS_SM}}}a")
    assert ack.get("h") == "1"
    bob.abort()

    node.kill9()
    node.start()

    alice = await connect(node, "alice", resource="a2")
    items, _, _ = await alice.roster_get()
    assert dave in items, items
    assert items[dave]["name"] == "Dave"
    assert items[dave]["groups"] == ["Friends"]
    res = await alice.iq_get(f"<vCard xmlns='{NS_VCARD}'/>")
    assert res.xml.findtext(f"{{{NS_VCARD}}}vCard/{{{NS_VCARD}}}FN") == "Alice Liddell"
    blocked = await alice.plugin["xep_0191"].get_blocked_jids(timeout=5)
    assert JID(mallory) in blocked
    alice.send_presence()
    m = await alice.next_message(frm=node.jid("bob"))
    assert m["body"] == "survive the crash"


async def test_data_survives_graceful_restart(node):
    alice = await connect(node, "alice", resource="a")
    await alice.roster_set(node.jid("dave"), name="Dave")
    await alice.close()
    node.restart()
    alice = await connect(node, "alice", resource="a")
    items, _, _ = await alice.roster_get()
    assert items[node.jid("dave")]["name"] == "Dave"


async def test_sigterm_sends_system_shutdown_and_exits_zero(node):
    alice = await connect(node, "alice", resource="a", presence=True)
    bob = await connect(node, "bob", resource="b", direct_tls=True)
    await alice.sync()
    node.proc.send_signal(15)  # SIGTERM; don't block the event loop waiting
    assert await alice.wait_stream_error(10) == "system-shutdown"
    assert await bob.wait_stream_error(10) == "system-shutdown"
    await alice.wait_disconnected(10)
    await bob.wait_disconnected(10)
    code = node.stop()
    assert code == 0, f"exit code {code}"


@pytest.mark.chorus(config={"log": {"format": "json", "level": "info"}})
async def test_json_logs_are_structured(node):
    alice = await connect(node, "alice", resource="a")
    await alice.close()
    records = []
    for line in node.log_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            records.append(json.loads(line))
    assert records, "no JSON log lines"
    assert all("level" in r and "timestamp" in r and "fields" in r for r in records)
    messages = [r["fields"].get("message") for r in records]
    assert "chorus node ready" in messages
    assert any(r["fields"].get("message") == "authenticated" and r["fields"].get("user") == "alice"
               for r in records), messages


async def test_graceful_shutdown_collects_acks_so_nothing_arrives_twice(node):
    # bob uses stream management and has not acknowledged three messages
    # when the node shuts down: the node asks for an ack first, so after the
    # restart none of them comes back as an offline redelivery.
    bob = await raw_login(node, "bob", "b")
    await bob.send(f"<enable xmlns='{NS_SM}'/>")
    await bob.expect_tag(f"{{{NS_SM}}}enabled")
    bob.sm_enabled, bob.sm_handled = True, 0
    await bob.send("<presence/>")
    await bob.ping()
    alice = await connect(node, "alice", resource="a")
    bodies = [f"before the shutdown {i}" for i in range(3)]
    for b in bodies:
        alice.send_message(node.jid("bob"), b)
    for b in bodies:
        await bob.expect(lambda el, b=b: el.findtext("{jabber:client}body") == b, what=b)
    node.proc.send_signal(15)  # SIGTERM
    await bob.expect_tag(f"{{{NS_SM}}}r", timeout=10)  # answered by the raw client
    assert await bob.stream_error() == "system-shutdown"
    assert node.stop() == 0
    node.start()
    bob2 = await connect(node, "bob", resource="b2")
    bob2.send_presence()
    await bob2.sync()
    redelivered = [m["body"] for m in bob2._inbox if m.xml.tag == "{jabber:client}message"]
    assert not redelivered, redelivered
