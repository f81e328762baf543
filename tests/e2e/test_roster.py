"""Roster management (RFC 6121 §2)."""

from xmpp import connect


async def test_roster_get_empty(node):
    c = await connect(node, "alice")
    items, _ver, raw = await c.roster_get()
    assert raw.get("type") == "result"
    assert items == {}


async def test_roster_set_pushes_to_all_interested_resources_and_remove(node):
    r1 = await connect(node, "alice", resource="r1")
    r2 = await connect(node, "alice", resource="r2")
    # Roster pushes go to "interested" resources: those that fetched the roster.
    await r1.roster_get()
    await r2.roster_get()

    dave = node.jid("dave")
    await r1.roster_set(dave, name="Dave", groups=["Friends", "Work"])
    for r in (r1, r2):
        push = await r.next_roster_push()
        assert dave in push, push
        assert push[dave]["name"] == "Dave"
        assert push[dave]["groups"] == ["Friends", "Work"]
        assert push[dave]["subscription"] == "none"

    items, _, _ = await r2.roster_get()
    assert items[dave]["name"] == "Dave"
    assert items[dave]["groups"] == ["Friends", "Work"]

    # Update the item: name change is pushed too.
    await r2.roster_set(dave, name="David", groups=["Friends"])
    for r in (r1, r2):
        push = await r.next_roster_push()
        assert push[dave]["name"] == "David"
        assert push[dave]["groups"] == ["Friends"]

    # Remove.
    await r1.roster_set(dave, remove=True)
    for r in (r1, r2):
        push = await r.next_roster_push()
        assert push[dave]["subscription"] == "remove"
    items, _, _ = await r1.roster_get()
    assert dave not in items


async def test_roster_versioning(node):
    c = await connect(node, "alice")
    # RFC 6121 §2.6: the stream feature is advertised...
    assert "rosterver" in c.xmpp.features
    # ...and a request with ver='' yields a result carrying a version.
    items, ver, raw = await c.roster_get(ver="")
    assert ver is not None, "roster result has no ver attribute"

    await c.roster_set(node.jid("erin"), name="Erin")
    push = await c.next_roster_push()
    assert node.jid("erin") in push
    _, ver2, _ = await c.roster_get(ver="")
    assert ver2 is not None and ver2 != ver, "roster version did not change"

    # Asking with the current version: either an empty result (no <query/>)
    # or a roster that carries that same version.
    res_items, ver3, raw = await c.roster_get(ver=ver2)
    assert raw.get("type") == "result"
    if ver3 is not None:
        assert ver3 == ver2
