"""The compliance archive through Raft, with real node processes: every
accepted message is spooled, committed once and applied in the same order
on every site, also when the Raft leader is killed mid-load."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from xmpp import connect

NS_SID = "urn:xmpp:sid:0"
SLOW = pytest.mark.timeout(180)
CONVERGE_S = 30.0


def archive_status(node) -> dict:
    code, body = node.http_get("/archive/status", timeout=3)
    assert code == 200, f"{node}: /archive/status -> HTTP {code}: {body[:300]}"
    return json.loads(body)


async def archives_converge(cl, sites: list[str], records: int) -> dict[str, dict]:
    """Polls until every site holds `records` records with one digest and an
    empty spool; returns the statuses (polling replicated state: no event)."""
    deadline = time.monotonic() + CONVERGE_S
    while True:
        sts = {}
        for s in sites:
            try:
                sts[s] = await asyncio.to_thread(archive_status, cl[s])
            except (OSError, AssertionError) as e:
                sts[s] = {"error": str(e)}
        digests = {st.get("digest") for st in sts.values()}
        if all(st.get("records") == records and st.get("spooled") == 0 for st in sts.values()) \
                and len(digests) == 1:
            return sts
        if time.monotonic() >= deadline:
            raise AssertionError(f"archives did not converge on {records} records: {sts}")
        await asyncio.sleep(0.2)


def stanza_id(msg) -> str | None:
    sid = msg.xml.find(f"{{{NS_SID}}}stanza-id")
    return None if sid is None else sid.get("id")


@SLOW
async def test_messages_archived_once_with_identical_digests(cluster3):
    cl = cluster3
    alice = await connect(cl["a"], "alice", resource="a", presence=True)
    carol = await connect(cl["c"], "carol", resource="c", presence=True)
    await cl.asessions_synced()
    for i in range(10):
        alice.send_message(cl.jid("carol", "c"), f"a->c {i}")
        carol.send_message(cl.jid("alice", "a"), f"c->a {i}")
    ids = set()
    for who, frm in ((carol, cl.jid("alice")), (alice, cl.jid("carol"))):
        for _ in range(10):
            m = await who.next_message(15, frm=frm)
            sid = stanza_id(m)
            assert sid, f"no XEP-0359 stanza-id on {m}"
            ids.add(sid)
    assert len(ids) == 20, "every message has its own archive id"
    assert {i.split("-")[0] for i in ids} == {"a1", "c1"}, "ids name the accepting node"
    sts = await archives_converge(cl, ["a", "b", "c"], 20)
    leaders = {st["leader"] for st in sts.values()}
    assert len(leaders) == 1 and None not in leaders, sts


@SLOW
async def test_kill9_raft_leader_during_load_loses_nothing(cluster3):
    cl = cluster3
    deadline = time.monotonic() + CONVERGE_S
    leader = None
    while leader is None:
        sts = {s: await asyncio.to_thread(archive_status, cl[s]) for s in ("a", "b", "c")}
        leader = next((s for s, st in sts.items() if st["state"] == "Leader"), None)
        if leader is None:
            assert time.monotonic() < deadline, f"no archive leader elected: {sts}"
            await asyncio.sleep(0.2)  # polling raft state: there is no event for it
    others = [s for s in ("a", "b", "c") if s != leader]
    sender = await connect(cl[others[0]], "alice", resource="load", presence=True)
    receiver = await connect(cl[others[1]], "bob", resource="load", presence=True)
    await cl.asessions_synced()
    total = 60
    for i in range(total):
        if i == 20:
            await asyncio.to_thread(cl.kill9, leader)
        sender.send_message(cl.jid("bob", "load"), f"load {i}")
        await asyncio.sleep(0.02)
    got = []
    while len(got) < total:
        m = await receiver.next_message(20, frm=cl.jid("alice"))
        got.append(m["body"])
    assert got == [f"load {i}" for i in range(total)], "every message arrived once, in order"
    await receiver.expect_no_message(1.0, frm=cl.jid("alice"))
    # The survivors elect a new leader and commit everything; the old leader
    # comes back and catches up to the same archive.
    await archives_converge(cl, others, total)
    await cl.astart(leader)
    await cl.aready()
    await archives_converge(cl, ["a", "b", "c"], total)
