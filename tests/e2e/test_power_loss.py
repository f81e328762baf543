"""Durable before acknowledged, under a power-loss simulation, with real
node processes.

Every node runs with the ``lose-unsynced-writes`` failpoint (debug builds):
writes the node does not sync skip RocksDB's write-ahead log, so ``kill -9``
loses them exactly as a power cut loses what the page cache held. Site a is
left without a quorum (b and c are down), so its messages stay in its
archive spool; alice sends messages to bob, who is offline, and a ping
proves the node handled (acknowledged) them all. Then a is killed. After
the restart nothing acknowledged may be missing: the spool still holds
every record, bob receives every offline message, the next message gets an
archive id that was never used before, and once b and c are back every site
holds every record exactly once.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from cluster import Cluster, ClusterNode
from xmpp import connect

SLOW = pytest.mark.timeout(240)
NS_SID = "urn:xmpp:sid:0"
MESSAGES = 25
CONVERGE_S = 40.0
POLL_S = 0.2


class PowerLossNode(ClusterNode):
    """A cluster node whose unsynced writes vanish on kill -9."""

    def _env(self) -> dict:
        env = super()._env()
        env["CHORUS_FAILPOINTS"] = "lose-unsynced-writes"
        return env


def archive_status(node) -> dict:
    code, body = node.http_get("/archive/status", timeout=3)
    assert code == 200, f"/archive/status -> HTTP {code}: {body[:300]}"
    return json.loads(body)


async def until(what: str, check, timeout: float = CONVERGE_S):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last is True:
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"{what}: not within {timeout}s; last: {last}")


def stanza_id(msg) -> str:
    sids = msg.xml.findall(f"{{{NS_SID}}}stanza-id")
    assert sids, f"no stanza-id on {msg}"
    return sids[0].get("id")


@pytest.fixture
def cluster(tmp_path):
    cl = Cluster(tmp_path / "cluster", node_class=PowerLossNode)
    try:
        cl.start_all()
        yield cl
    finally:
        cl.kill_all()


@SLOW
async def test_nothing_acknowledged_is_lost_or_reused_after_power_loss(cluster):
    cl = cluster
    # a alone: no archive quorum, so records wait in its spool.
    cl.kill9("b")
    cl.kill9("c")
    alice = await connect(cl["a"], "alice", resource="a", presence=True)
    bodies = [f"before the power cut {i}" for i in range(MESSAGES)]
    for b in bodies:
        alice.send_message(cl.jid("bob"), b)
    await alice.ping()  # handled in order: every message above is acknowledged
    cl.kill9("a")

    cl.start("a")
    await cl.aready()
    st = await asyncio.to_thread(archive_status, cl["a"])
    assert st["spooled"] == MESSAGES, f"acknowledged records lost from the spool: {st}"
    bob = await connect(cl["a"], "bob", resource="a", presence=True)
    got = [await bob.next_message(timeout=15) for _ in range(MESSAGES)]
    assert [m["body"] for m in got] == bodies, "offline messages lost or reordered"
    before = {stanza_id(m) for m in got}
    assert len(before) == MESSAGES
    # The next message gets an archive id never used before the crash.
    alice2 = await connect(cl["a"], "alice", resource="a2", presence=True)
    alice2.send_message(cl.jid("bob"), "after the power cut")
    after = await bob.next_message(timeout=15)
    assert after["body"] == "after the power cut"
    assert stanza_id(after) not in before, "an archive id was reused after the crash"

    # With the quorum back, every site holds every record exactly once.
    cl.start("b")
    cl.start("c")
    await cl.aready()

    def converged():
        sts = {s: archive_status(cl[s]) for s in ("a", "b", "c")}
        ok = all(v["records"] == MESSAGES + 1 and v["spooled"] == 0 for v in sts.values())
        return ok and len({v["digest"] for v in sts.values()}) == 1 or sts
    await until("every site holds every record once", converged)
    alice.kill()
    for c in (alice2, bob):
        await c.close()
