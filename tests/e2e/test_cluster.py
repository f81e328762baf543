"""The multi-site cluster, with real node processes (see cluster.py).

Three sites a, b, c with one node each (a1, b1, c1); every link between
nodes runs through a fault-injecting proxy, so a test can kill a node, cut a
site off and heal it. Lease 1.5 s, heartbeat 250 ms.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from cluster import peer
from xmpp import NS_BLOCKING, NS_DELAY, NS_VCARD, Client, connect, make_friends, try_login

SLOW = pytest.mark.timeout(180)

# A peer that falls silent is dropped after the lease (1.5 s, checked every
# heartbeat); subscribers must hear about it within this bound.
UNAVAILABLE_WITHIN_S = 6.0
# After a heal: links reconnect (backoff <= 2 s), then the outbox drains and
# anti-entropy repairs the stores.
HEAL_DELIVERY_S = 20.0
# How long to keep listening for duplicates once everything has arrived.
DUPLICATE_WINDOW_S = 2.0
CONVERGE_S = 20.0
POLL_S = 0.2


async def login(cl, site: str, user: str, resource: str | None = None,
                presence: bool = True, **kw) -> Client:
    return await connect(cl[site], user, resource=resource or site, presence=presence, **kw)


async def roster_eventually(c: Client, pred, what: str, timeout: float = CONVERGE_S) -> dict:
    """Re-fetch ``c``'s roster until ``pred(items)``; returns the items."""
    deadline = time.monotonic() + timeout
    while True:
        items, _, _ = await c.roster_get()
        if pred(items):
            return items
        if time.monotonic() >= deadline:
            raise AssertionError(f"{c.name}: roster never showed {what}; last: {items}")
        await asyncio.sleep(POLL_S)  # polling replicated state: there is no event for it


async def collect_messages(c: Client, frm: str, bodies: list[str],
                           timeout: float = HEAL_DELIVERY_S) -> list:
    """Wait until one message with each of ``bodies`` arrived from ``frm``
    (bare JID); returns every message from ``frm`` in arrival order, then
    keeps listening for DUPLICATE_WINDOW_S and fails on anything more."""
    got = []
    deadline = time.monotonic() + timeout
    while not all(any(m["body"] == b for m in got) for b in bodies):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"{c.name}: after {timeout}s got {[m['body'] for m in got]}, want {bodies}")
        got.append(await c.next_message(remaining, frm=frm))
    await c.expect_no_message(DUPLICATE_WINDOW_S, frm=frm)
    await c.sync()
    await c.expect_no_message(0.2, frm=frm)
    return got


def roster_view(items: dict) -> dict:
    """Roster items without the transient 'ask' flag."""
    return {j: (i["subscription"], i["name"], tuple(i["groups"])) for j, i in items.items()}


# ---------------------------------------------------------------------------


async def test_cluster_status_ready_and_consistent(cluster3):
    """Every node lists the other two with their sites; HTTP and CLI agree."""
    cl = cluster3
    for s in ("a", "b", "c"):
        st = await cl.astatus(s)
        assert st["node_id"] == f"{s}1" and st["site"] == s
        assert st["incarnation"] >= 1
        assert {(p["node_id"], p["site"]) for p in st["peers"]} == {
            (f"{o}1", o) for o in "abc" if o != s}
        for p in st["peers"]:
            assert p["link_up"] and p["alive"], p
            assert p["last_heard_ms_ago"] is not None and p["last_heard_ms_ago"] < cl.lease_ms
        cli = await cl.acli_status(s)
        assert cli["node_id"] == st["node_id"] and cli["incarnation"] == st["incarnation"]
        assert {p["node_id"] for p in cli["peers"]} == {p["node_id"] for p in st["peers"]}
        # Each node knows its peers' incarnations.
        for p in st["peers"]:
            other = await cl.astatus(p["site"])
            assert p["incarnation"] == other["incarnation"], (s, p)


async def test_presence_and_chat_across_sites(cluster3):
    cl = cluster3
    alice = await login(cl, "a", "alice")
    carol = await login(cl, "c", "carol")
    await cl.asessions_synced()
    await make_friends(alice, carol)
    items, _, _ = await alice.roster_get()
    assert items[cl.jid("carol")]["subscription"] == "both", items
    items, _, _ = await carol.roster_get()
    assert items[cl.jid("alice")]["subscription"] == "both", items
    alice.drop_inbox()
    carol.drop_inbox()

    # Presence with show/status text, both ways.
    carol.send_presence(show="away", status="at the c office")
    p = await alice.next_presence(frm=carol.jid, pred=lambda s: s["show"] == "away")
    assert str(p["from"]) == carol.jid
    assert p["status"] == "at the c office"
    alice.send_presence(show="dnd", status="busy at a")
    p = await carol.next_presence(frm=alice.jid, pred=lambda s: s["show"] == "dnd")
    assert p["status"] == "busy at a"

    # Chat both ways: to the bare JID, and back to the full JID.
    alice.send_message(cl.jid("carol"), "hello carol, this is a")
    m = await carol.next_message(frm=alice.jid)
    assert m["body"] == "hello carol, this is a"
    assert str(m["from"]) == alice.jid
    assert m.xml.find(f"{{{NS_DELAY}}}delay") is None, "live message carries a delay"
    carol.send_message(str(m["from"]), "hi alice, c here")
    m = await alice.next_message(frm=carol.jid)
    assert m["body"] == "hi alice, c here"
    assert str(m["from"]) == carol.jid
    for i in range(5):
        alice.send_message(carol.jid, f"burst {i}")
    for i in range(5):
        m = await carol.next_message(frm=alice.jid)
        assert m["body"] == f"burst {i}", "cross-site messages out of order"

    # Going offline at c is seen at a.
    await carol.close()
    await alice.next_presence(10, frm=carol.jid, ptype="unavailable")


async def test_roster_change_at_one_site_pushed_and_replicated(cluster3):
    cl = cluster3
    C = cl.jid("carol")
    alice_a = await login(cl, "a", "alice")
    await alice_a.roster_get()  # interested in roster pushes
    await alice_a.roster_set(C, name="Carol", groups=["Friends"])
    push = await alice_a.next_roster_push(jid=C)
    assert push[C]["name"] == "Carol"

    # A second resource at b: the item replicated there.
    alice_b = await login(cl, "b", "alice")
    await roster_eventually(alice_b, lambda it: it.get(C, {}).get("name") == "Carol",
                            "carol as 'Carol'")
    await cl.asessions_synced()

    # Rename and regroup at b: pushed to the resource at a as well.
    await alice_b.roster_set(C, name="Carol from C", groups=["Work", "Site C"])
    for r in (alice_b, alice_a):
        push = await r.next_roster_push(jid=C)
        assert push[C]["name"] == "Carol from C", (r.name, push)
        assert push[C]["groups"] == ["Site C", "Work"], (r.name, push)
        assert push[C]["subscription"] == "none"
    items, _, _ = await alice_a.roster_get()
    assert items[C]["name"] == "Carol from C" and items[C]["groups"] == ["Site C", "Work"]

    # A fresh login at c sees the new name and groups.
    alice_c = await login(cl, "c", "alice", presence=False)
    items = await roster_eventually(
        alice_c, lambda it: it.get(C, {}).get("name") == "Carol from C", "the new name")
    assert items[C]["groups"] == ["Site C", "Work"]
    assert set(items) == {C}

    # A removal at c reaches the other two resources.
    await alice_c.roster_set(C, remove=True)
    for r in (alice_a, alice_b):
        push = await r.next_roster_push(jid=C)
        assert push[C]["subscription"] == "remove", (r.name, push)


@SLOW
async def test_kill9_site_then_restart(cluster3):
    cl = cluster3
    A, C = cl.jid("alice"), cl.jid("carol")
    alice = await login(cl, "a", "alice")
    carol = await login(cl, "c", "carol")
    await cl.asessions_synced()
    await make_friends(alice, carol)
    await alice.roster_get()
    alice.drop_inbox()

    cl.kill9("c")
    t0 = time.monotonic()
    await alice.next_presence(UNAVAILABLE_WITHIN_S, frm=carol.jid, ptype="unavailable")
    took = time.monotonic() - t0
    assert took < UNAVAILABLE_WITHIN_S

    # a and b still work: fresh logins at both, and a chat between them.
    bob = await login(cl, "b", "bob")
    alice2 = await login(cl, "a", "alice", resource="a2")
    await cl.asessions_synced()
    alice2.send_message(bob.jid, "c is down, are you there?")
    m = await bob.next_message(frm=alice2.jid)
    assert m["body"] == "c is down, are you there?"
    bob.send_message(alice2.jid, "yes, b is fine")
    m = await alice2.next_message(frm=bob.jid)
    assert m["body"] == "yes, b is fine"
    await alice2.close()

    # Roster changes while c is down: alice renames carol (her own roster)
    # and cancels carol's subscription to her (changes carol's roster).
    await alice.roster_set(C, name="Carol (renamed while c was down)", groups=["Down"])
    await alice.next_roster_push(jid=C)
    alice.send_presence(to=C, ptype="unsubscribed")
    push = await alice.next_roster_push(jid=C)
    assert push[C]["subscription"] == "to", push
    assert push[C]["name"] == "Carol (renamed while c was down)", push

    # c comes back on its data dir (new incarnation).
    inc_before = peer(await cl.astatus("a"), "c")["incarnation"]
    await cl.astart("c")
    await cl.aready()
    assert peer(await cl.astatus("a"), "c")["incarnation"] > inc_before

    carol2 = await login(cl, "c", "carol", resource="back")
    p = await alice.next_presence(10, frm=carol2.jid, ptype="available")
    assert str(p["from"]) == carol2.jid

    # The roster change made while c was down reaches carol at c...
    items = await roster_eventually(
        carol2, lambda it: it.get(A, {}).get("subscription") == "from",
        "alice with subscription 'from'")
    assert items[A]["subscription"] == "from", items
    # ...and alice's rename is there for alice too.
    alice_c = await login(cl, "c", "alice", presence=False)
    items = await roster_eventually(
        alice_c, lambda it: it.get(C, {}).get("name") == "Carol (renamed while c was down)",
        "the rename made while c was down")
    assert items[C]["subscription"] == "to" and items[C]["groups"] == ["Down"], items

    # Still chatting across the restarted site.
    alice.send_message(carol2.jid, "welcome back")
    m = await carol2.next_message(frm=alice.jid)
    assert m["body"] == "welcome back"


@SLOW
async def test_cut_site_queues_messages_and_converges_rosters(cluster3):
    cl = cluster3
    A, B, C, D = (cl.jid(u) for u in ("alice", "bob", "carol", "dave"))
    alice = await login(cl, "a", "alice")
    carol = await login(cl, "c", "carol")
    dave = await login(cl, "c", "dave")
    await cl.asessions_synced()
    await make_friends(alice, carol)
    await make_friends(carol, dave)
    for c in (alice, carol, dave):
        await c.roster_get()
        c.drop_inbox()
    # Items the cut will edit, created while the cluster is whole.
    bob_b = await login(cl, "b", "bob", presence=False)
    await bob_b.roster_set(D, name="Dave", groups=["Before"])
    await cl.asessions_synced()

    cl.cut("c")

    # Sent at once: c's lease has not expired yet, so these go to the
    # durable outbox for the peer holding the resource.
    alice.send_message(C, "a->c 1")
    carol.send_message(A, "c->a 1")
    await alice.sync()
    await carol.sync()
    # Then the leases expire on both sides of the cut...
    t0 = time.monotonic()
    await alice.next_presence(UNAVAILABLE_WITHIN_S, frm=carol.jid, ptype="unavailable")
    await carol.next_presence(UNAVAILABLE_WITHIN_S, frm=alice.jid, ptype="unavailable")
    assert time.monotonic() - t0 < UNAVAILABLE_WITHIN_S
    # ...and the rest go to offline storage, which replicates after the heal.
    for i in (2, 3):
        alice.send_message(C, f"a->c {i}")
        carol.send_message(A, f"c->a {i}")
    await alice.sync()
    await carol.sync()

    # Inside site c, life goes on.
    for i in range(3):
        carol.send_message(D, f"carol->dave {i}")
        m = await dave.next_message(frm=carol.jid)
        assert m["body"] == f"carol->dave {i}"
        dave.send_message(carol.jid, f"dave->carol {i}")
        m = await carol.next_message(frm=dave.jid)
        assert m["body"] == f"dave->carol {i}"
    # Nothing crosses the cut.
    await alice.expect_no_message(0.5, frm=C)
    await carol.expect_no_message(0.2, frm=A)

    # Roster edits on both sides of the cut.
    await alice.roster_set(C, name="Carol (renamed at a)", groups=["A side"])
    await alice.roster_set(B, name="Bob (added at a)")
    await carol.roster_set(A, name="Alice (renamed at c)", groups=["C side"])
    await carol.roster_set(D, name="Dave (renamed at c)")
    # bob edits different items of his roster on each side, and the same
    # item on both sides (the later write must win everywhere).
    await bob_b.roster_set(A, name="Alice (bob at b)")
    await bob_b.roster_set(D, name="Dave (bob at b, earlier)")
    bob_c = await login(cl, "c", "bob", presence=False)
    await bob_c.roster_set(C, name="Carol (bob at c)")
    await bob_c.roster_set(D, name="Dave (bob at c, later)")
    await bob_c.close()
    await bob_b.close()

    cl.heal("c")
    await cl.aready()

    got_c = await collect_messages(carol, A, ["a->c 1", "a->c 2", "a->c 3"])
    got_a = await collect_messages(alice, C, ["c->a 1", "c->a 2", "c->a 3"])
    assert [m["body"] for m in got_c] == ["a->c 1", "a->c 2", "a->c 3"], \
        "carol did not get alice's messages exactly once, in order"
    assert [m["body"] for m in got_a] == ["c->a 1", "c->a 2", "c->a 3"], \
        "alice did not get carol's messages exactly once, in order"
    for m in got_c[1:] + got_a[1:]:
        # Kept offline (the lease had expired): delivered with a delay stamp.
        assert m.xml.find(f"{{{NS_DELAY}}}delay") is not None, m
    # Presence is restored after the heal (these were queued in the inbox
    # while the messages were collected).
    await alice.next_presence(10, frm=carol.jid, ptype="available")
    await carol.next_presence(10, frm=alice.jid, ptype="available")
    await dave.expect_no_message(0.2, frm=A)

    expected = {
        "alice": {
            C: ("both", "Carol (renamed at a)", ("A side",)),
            B: ("none", "Bob (added at a)", ()),
        },
        "carol": {
            A: ("both", "Alice (renamed at c)", ("C side",)),
            D: ("both", "Dave (renamed at c)", ()),
        },
        "bob": {
            A: ("none", "Alice (bob at b)", ()),
            C: ("none", "Carol (bob at c)", ()),
            D: ("none", "Dave (bob at c, later)", ()),
        },
    }
    # Converged everywhere: poll one fresh session per site...
    for user, want in expected.items():
        sessions = [await login(cl, s, user, resource=f"check-{s}", presence=False)
                    for s in ("a", "b", "c")]
        for s in sessions:
            await roster_eventually(s, lambda it, w=want: roster_view(it) == w,
                                    f"{user}'s converged roster {want}")
        for s in sessions:
            await s.close()
    # ...then a fresh login anywhere shows exactly that roster.
    for user, want in expected.items():
        for site in ("a", "b", "c"):
            c = await login(cl, site, user, resource=f"fresh-{site}", presence=False)
            items, _, _ = await c.roster_get()
            assert roster_view(items) == want, (user, site, items)
            await c.close()


@SLOW
async def test_cluster_status_cli_during_cut(cluster3):
    cl = cluster3
    alice = await login(cl, "a", "alice")
    cl.cut("c")
    t0 = time.monotonic()
    lease = cl.lease_ms

    def c_down(st):
        p = peer(st, "c")
        return (not p["link_up"] and p["last_heard_ms_ago"] is not None
                and p["last_heard_ms_ago"] > lease)

    for s in ("a", "b"):
        st = await cl.await_status(s, c_down, "c1 link down and silent past the lease",
                                   deadline_s=6, cli=True)
        # a and b still see each other.
        o = peer(st, "b" if s == "a" else "a")
        assert o["link_up"] and o["last_heard_ms_ago"] < lease, st
    assert time.monotonic() - t0 < 8

    def others_down(st):
        return all(not p["link_up"] and (p["last_heard_ms_ago"] or 0) > lease
                   for p in st["peers"])
    await cl.await_status("c", others_down, "a1 and b1 down and silent", deadline_s=6, cli=True)

    # A write during the cut: a's link to c has it queued or not at all
    # (anti-entropy repairs it after the heal).
    res = await alice.roster_set(cl.jid("dave"), name="Dave")
    assert res["type"] == "result"

    cl.heal("c")
    t1 = time.monotonic()

    def all_up(st):
        return all(p["link_up"] and p["alive"] and p["last_heard_ms_ago"] is not None
                   and p["last_heard_ms_ago"] < lease for p in st["peers"])
    for s in ("a", "b", "c"):
        await cl.await_status(s, all_up, "every peer up again", deadline_s=15, cli=True)
    assert time.monotonic() - t1 < 15
    alice_c = await login(cl, "c", "alice", presence=False)
    await roster_eventually(alice_c, lambda it: it.get(cl.jid("dave"), {}).get("name") == "Dave",
                            "the item written during the cut")


@SLOW
async def test_cluster_status_alive_false_after_lease(cluster3):
    cl = cluster3
    cl.cut("c")

    def c_not_alive(st):
        return not peer(st, "c")["alive"]
    for s in ("a", "b"):
        await cl.await_status(s, c_not_alive, "c1 not alive", deadline_s=6, cli=True)
    cl.heal("c")
    await cl.aready()


async def test_account_vcard_and_block_list_replicate(cluster3):
    cl = cluster3
    A, B = cl.jid("alice"), cl.jid("bob")
    # An account created with the CLI on the running node at a can log in
    # at c once it has replicated; a password change at b reaches c too.
    cp = await asyncio.to_thread(cl["a"].cli, "user", "add", "erin", "--password", "erin-1")
    assert cp.returncode == 0, cp.stderr
    cl["c"].users["erin"] = "erin-1"
    deadline = time.monotonic() + CONVERGE_S
    while (cond := await try_login(cl["c"], "erin", "erin-1")) is not None:
        assert time.monotonic() < deadline, f"erin cannot log in at c: {cond}"
        await asyncio.sleep(POLL_S)  # polling replicated state
    cp = await asyncio.to_thread(cl["b"].cli, "user", "passwd", "erin", "--password", "erin-2")
    assert cp.returncode == 0, cp.stderr
    deadline = time.monotonic() + CONVERGE_S
    while await try_login(cl["c"], "erin", "erin-2") is not None:
        assert time.monotonic() < deadline, "the new password never worked at c"
        await asyncio.sleep(POLL_S)
    assert await try_login(cl["c"], "erin", "erin-1") == "not-authorized"
    assert await try_login(cl["a"], "erin", "erin-1") == "not-authorized"

    # vCard published at a, read at c (own and by another user).
    alice = await login(cl, "a", "alice")
    await alice.iq_set(f"<vCard xmlns='{NS_VCARD}'><FN>Alice at A</FN></vCard>")
    alice_c = await login(cl, "c", "alice", presence=False)
    bob_c = await login(cl, "c", "bob", presence=False)
    deadline = time.monotonic() + CONVERGE_S
    fn_path = f"{{{NS_VCARD}}}vCard/{{{NS_VCARD}}}FN"
    while True:
        own = (await alice_c.iq_get(f"<vCard xmlns='{NS_VCARD}'/>")).xml.findtext(fn_path)
        theirs = (await bob_c.iq_get(f"<vCard xmlns='{NS_VCARD}'/>", to=A)).xml.findtext(fn_path)
        if own == theirs == "Alice at A":
            break
        assert time.monotonic() < deadline, f"vCard not replicated: {own!r} {theirs!r}"
        await asyncio.sleep(POLL_S)

    # bob blocks alice at b; once that reached a, alice's messages from a
    # are not delivered to bob anywhere.
    bob_b = await login(cl, "b", "bob")
    await bob_b.iq_set(f"<block xmlns='{NS_BLOCKING}'><item jid='{A}'/></block>")
    bob_a = await login(cl, "a", "bob", presence=False)
    deadline = time.monotonic() + CONVERGE_S
    while True:
        res = await bob_a.iq_get(f"<blocklist xmlns='{NS_BLOCKING}'/>")
        items = res.xml.findall(f"{{{NS_BLOCKING}}}blocklist/{{{NS_BLOCKING}}}item")
        if [i.get("jid") for i in items] == [A]:
            break
        assert time.monotonic() < deadline, "block list not replicated to a"
        await asyncio.sleep(POLL_S)
    await cl.asessions_synced()
    alice.send_message(B, "blocked, to the bare JID")
    alice.send_message(bob_b.jid, "blocked, to the full JID")
    await alice.sync()
    await bob_b.expect_no_message(1.5, frm=A)
    await bob_a.expect_no_message(0.2, frm=A)


@SLOW
async def test_outbox_is_durable_across_a_sender_crash(cluster3):
    """Stanzas queued for an unreachable peer survive kill -9 of the node
    that queued them and are delivered once after the heal."""
    cl = cluster3
    A = cl.jid("alice")
    alice = await login(cl, "a", "alice")
    carol = await login(cl, "c", "carol")
    await cl.asessions_synced()
    cl.cut("c")
    bodies = [f"queued {i}" for i in range(3)]
    for b in bodies:
        alice.send_message(carol.jid, b)  # within the lease: into a's outbox
    await alice.sync()
    st = await cl.astatus("a")
    assert peer(st, "c")["outbox_stanzas"] == 3, st
    assert peer(st, "b")["outbox_stanzas"] == 0, st

    cl.kill9("a")
    await cl.astart("a")
    st = await cl.astatus("a")
    assert peer(st, "c")["outbox_stanzas"] == 3, f"outbox lost in the crash: {st}"

    cl.heal("c")
    await cl.aready()
    got = await collect_messages(carol, A, bodies)
    assert [m["body"] for m in got] == bodies
    await cl.await_status("a", lambda s: peer(s, "c")["outbox_stanzas"] == 0,
                          "outbox for c1 drained")


@SLOW
@pytest.mark.parametrize("priorities,winner", [((0, 0), "b"), ((1, 5), "c")],
                         ids=["tie-smallest-node-id", "higher-priority"])
async def test_replicated_offline_messages_delivered_by_one_node(cluster3, priorities, winner):
    """Messages kept offline at a cut-off site reach a user online at two
    other sites exactly once, at the best resource (ties: smallest node id)."""
    cl = cluster3
    A = cl.jid("alice")
    carol = {}
    for site, prio in zip(("b", "c"), priorities, strict=True):
        carol[site] = await login(cl, site, "carol", presence=False)
        carol[site].send_presence(priority=prio)
        await carol[site].sync()
    alice = await login(cl, "a", "alice")
    await cl.asessions_synced()
    await make_friends(alice, carol["b"])
    for c in (alice, *carol.values()):
        c.drop_inbox()

    cl.cut("a")
    for c in carol.values():
        await alice.next_presence(UNAVAILABLE_WITHIN_S, frm=c.jid, ptype="unavailable")
    bodies = [f"kept offline {i}" for i in range(3)]
    for b in bodies:
        alice.send_message(cl.jid("carol"), b)
    await alice.sync()
    cl.heal("a")
    await cl.aready()

    loser = "c" if winner == "b" else "b"
    got = await collect_messages(carol[winner], A, bodies)
    assert [m["body"] for m in got] == bodies
    for m in got:
        assert m.xml.find(f"{{{NS_DELAY}}}delay") is not None
    await carol[loser].expect_no_message(0.5, frm=A)


@SLOW
async def test_order_kept_when_one_direction_heals_first(cluster3):
    cl = cluster3
    A, C = cl.jid("alice"), cl.jid("carol")
    alice = await login(cl, "a", "alice")
    carol = await login(cl, "c", "carol")
    await cl.asessions_synced()
    await make_friends(alice, carol)
    alice.drop_inbox()
    cl.cut("c")
    alice.send_message(C, "a->c 1")          # lease still valid: a's outbox
    await alice.sync()
    await alice.next_presence(UNAVAILABLE_WITHIN_S, frm=carol.jid, ptype="unavailable")
    for i in (2, 3):
        alice.send_message(C, f"a->c {i}")   # lease expired: offline storage
    await alice.sync()
    # The heal reaches c's link to a first; a's link to c follows 2 s later
    # (as when a's reconnect backoff is longer).
    cl.proxy.cut("a1->c1")
    cl.heal("c")
    await cl.await_status("c", lambda s: peer(s, "a")["link_up"], "c1's link to a1 up")
    await asyncio.sleep(2)  # the asymmetry itself, not a synchronisation
    cl.proxy.heal("a1->c1")
    await cl.aready()
    got = await collect_messages(carol, A, ["a->c 1", "a->c 2", "a->c 3"])
    assert [m["body"] for m in got] == ["a->c 1", "a->c 2", "a->c 3"]


async def test_resource_conflict_across_sites(cluster3):
    """RFC 6120 7.7.2.2 across nodes: binding a full JID that is bound at
    another site ends the old session with <conflict/>."""
    cl = cluster3
    old = await login(cl, "a", "alice", resource="phone")
    await cl.asessions_synced()
    new = await login(cl, "c", "alice", resource="phone")
    assert new.jid == cl.jid("alice", "phone")
    try:
        cond = await old.wait_stream_error(5)
    except asyncio.TimeoutError:
        raise AssertionError("the old session at a got no stream error in 5 s") from None
    assert cond == "conflict"
    await old.wait_disconnected()
    # Stanzas to the full JID reach the new session, from every site.
    for site in ("a", "b"):
        bob = await login(cl, site, "bob", resource=f"bob-{site}")
        await cl.asessions_synced()
        bob.send_message(cl.jid("alice", "phone"), f"from {site}")
        m = await new.next_message(frm=bob.jid)
        assert m["body"] == f"from {site}"
