"""Resource binding (RFC 6120 §7)."""

from raw import raw_login
from xmpp import connect


async def test_client_chosen_resource(node):
    c = await connect(node, "alice", resource="laptop")
    assert c.jid == node.jid("alice", "laptop")


async def test_server_generated_resource(node):
    a = await connect(node, "alice")
    assert a.bare == node.jid("alice")
    assert a.resource, "server did not generate a resource"
    b = await connect(node, "alice")
    assert b.resource and b.resource != a.resource, "generated resources collide"
    # Both sessions are live and distinct.
    await a.ping()
    await b.ping()


async def test_raw_bind_without_resource(node):
    s = await raw_login(node, "bob")
    assert s.jid.startswith(node.jid("bob") + "/") and len(s.jid) > len(node.jid("bob")) + 1
    await s.ping()
    await s.close()


async def test_resource_conflict_terminates_old_session(node):
    """RFC 6120 §7.7.2.2: the old session gets <conflict/> and is closed;
    the new session binds the requested resource."""
    old = await connect(node, "alice", resource="phone", presence=True)
    new = await connect(node, "alice", resource="phone")
    assert new.jid == node.jid("alice", "phone")
    assert await old.wait_stream_error() == "conflict"
    await old.wait_disconnected()
    await new.ping()
    # Stanzas to the full JID now reach the new session.
    bob = await connect(node, "bob")
    bob.send_message(node.jid("alice", "phone"), "to the new one")
    msg = await new.next_message(frm=node.jid("bob"))
    assert msg["body"] == "to the new one"
