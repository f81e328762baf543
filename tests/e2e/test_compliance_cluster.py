"""Retention and the audit trail on a three-site cluster, with real node
processes on a clock the test moves forward: every site purges the same
records, a cut site refuses unaudited access and catches up, and a cut
leader refuses too. Helpers: test_compliance.py."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from test_compliance import (CONVERGE_S, OFFICER, QUORUM_REFUSAL_S, ROOT, SLOW, TOKENS, _request,
                             api, bare, bodies, call, changes, deliver, search, set_policy)
from xmpp import connect


# --------------------------------------------------------------------------
# 5. retention on the cluster (+ the audit trail on every site)
# --------------------------------------------------------------------------


async def digests_converge(cl, records: int) -> dict[str, dict]:
    """Polls every site's /api/v1/archive/digest until all report
    ``records`` records with one digest; returns them."""
    deadline = time.monotonic() + CONVERGE_S
    while True:
        got = {}
        for s in ("a", "b", "c"):
            status, _, raw = await call(cl[s], "GET", "/api/v1/archive/digest", ROOT)
            got[s] = json.loads(raw) if status == 200 else {"status": status, "raw": raw[:200]}
        if all(d.get("records") == records for d in got.values()) \
                and len({d.get("digest") for d in got.values()}) == 1:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"digests did not converge on {records} records: {got}")
        await asyncio.sleep(0.2)


@SLOW
@pytest.mark.chorus_cluster(config=TOKENS, clock=True)
async def test_cluster_retention_purges_same_records_everywhere(cluster3):
    cl = cluster3
    where = {"alice": "a", "bob": "b", "carol": "c", "dave": "a"}
    c = {u: await connect(cl[s], u, resource=s, presence=True) for u, s in where.items()}
    await cl.asessions_synced()
    script = [("alice", "bob", "a2b quarterly numbers"), ("bob", "carol", "b2c draft"),
              ("carol", "dave", "c2d lunch"), ("dave", "alice", "d2a status"),
              ("alice", "carol", "a2c contract"), ("bob", "dave", "b2d hello")]
    for s, r, text in script:
        await deliver(c[s], c[r], text)
    carol_j = cl.jid("carol")
    await digests_converge(cl, len(script))
    kept = [t for s, r, t in script if "carol" in (s, r)]

    # The policy is proposed at site c and approved at site a, the hold
    # placed at site a, the run asked of site b a month later.
    policy = {"default_days": 30, "users": {}, "rooms": {}}
    await set_policy(cl["c"], policy, approver=cl["a"])
    hold = (await api(cl["a"], "POST", "/api/v1/archive/holds",
                      body={"id": "case-carol", "reason": "litigation", "users": [carol_j]},
                      expect=201))["hold"]
    for s in ("a", "b", "c"):
        await _eventually(lambda s=s: _holds_and_policy(cl[s], policy), f"site {s} policy+hold")
    await cl.clock.advance_to(31, *(cl[s] for s in ("a", "b", "c")))
    purged = await api(cl["b"], "POST", "/api/v1/archive/retention/run", ROOT)
    assert purged == {"purged": len(script) - len(kept)}

    sts = await digests_converge(cl, len(kept))
    assert {d["node"] for d in sts.values()} == {"a1", "b1", "c1"}
    assert all(isinstance(d["last_applied"], int) for d in sts.values()), sts
    # The audit trail is part of the replicated state, identical everywhere.
    # (Each read of it adds its own entry, so compare what a's read saw.)
    trails = {}
    for s in ("a", "b", "c"):
        trails[s] = (await api(cl[s], "GET", "/api/v1/archive/audit"))["entries"]
    n = len(trails["a"])
    assert trails["a"] == trails["b"][:n] == trails["c"][:n], trails
    acts = [(e["action"], e["actor"], e["role"], e["node"]) for e in changes(trails["a"])]
    assert acts == [("retention.propose", "root", "admin", "c1"),
                    ("retention.approve", "root2", "admin", "a1"),
                    ("hold.create", "officer", "compliance", "a1"),
                    ("retention.run", "root", "admin", "b1")], acts
    run = changes(trails["a"])[3]["detail"]["outcome"]
    assert run["purged"] == len(script) - len(kept) and run["policy"] == policy, run
    assert changes(trails["a"])[2]["detail"]["id"] == hold["id"]
    assert [e["seq"] for e in trails["a"]] == sorted({e["seq"] for e in trails["a"]})

    # The held records survive on every site (each site searches its own replica).
    for s in ("a", "b", "c"):
        got = await search(cl[s])
        assert got["total"] == len(kept) and bodies(got["records"]) == kept, (s, got)
        assert all(carol_j in (bare(r["from"]), bare(r["to"])) for r in got["records"])
    # Those searches were audited at the site that served them, and the
    # trails converge again.
    await digests_converge(cl, len(kept))
    trail = (await api(cl["c"], "GET", "/api/v1/archive/audit"))["entries"]
    assert [(e["action"], e["node"]) for e in trail if e["action"] == "search"] == [
        ("search", "a1"), ("search", "b1"), ("search", "c1")]
    assert all(e["detail"]["results"] == len(kept) for e in trail if e["action"] == "search")


async def refused_without_quorum(node, what: str) -> None:
    """A search at ``node``, cut off from the majority, must be refused
    (503, JSON error) within a bounded time: its audit entry cannot commit."""
    t0 = time.monotonic()
    try:
        status, headers, raw = await call(node, "GET", "/api/v1/archive/search", OFFICER,
                                          {"q": "quorum"}, timeout=QUORUM_REFUSAL_S)
    except (TimeoutError, OSError) as e:
        raise AssertionError(
            f"{what}: GET /api/v1/archive/search?q=quorum at isolated {node.node_id} "
            f"did not answer within {QUORUM_REFUSAL_S}s ({e!r})") from None
    took = time.monotonic() - t0
    assert status == 503, (f"{what}: search at isolated {node.node_id} -> HTTP {status} "
                           f"after {took:.1f}s: {raw[:300]!r}")
    assert headers.get("content-type", "").startswith("application/json")
    assert json.loads(raw)["error"], raw


async def quorum_cluster(cl) -> tuple[dict, str, str, str]:
    """alice@a, bob@b, carol@c exchange three messages, archived everywhere;
    returns (clients, leader site, a follower site, the other follower)."""
    where = {"alice": "a", "bob": "b", "carol": "c"}
    c = {u: await connect(cl[s], u, resource=s, presence=True) for u, s in where.items()}
    await cl.asessions_synced()
    script = [("alice", "bob", "quorum one"), ("bob", "carol", "quorum two"),
              ("carol", "alice", "quorum three")]
    for s, r, text in script:
        await deliver(c[s], c[r], text)
    await digests_converge(cl, 3)
    leader = (await api(cl["a"], "GET", "/api/v1/archive/members", ROOT))["leader"]
    assert leader in ("a1", "b1", "c1"), leader
    leader_site = leader[0]
    follower = next(s for s in ("a", "b", "c") if s != leader_site)
    third = next(s for s in ("a", "b", "c") if s not in (leader_site, follower))
    return c, leader_site, follower, third


@SLOW
@pytest.mark.chorus_cluster(config=TOKENS, clock=True)
async def test_cluster_cut_follower_refuses_unaudited_access_and_catches_up(cluster3):
    cl = cluster3
    _, leader_site, follower, third = await quorum_cluster(cl)
    # A follower cut off refuses audited reads; the majority purges
    # without it (a hold keeps alice's records).
    await set_policy(cl[leader_site], {"default_days": 30})
    await api(cl[third], "POST", "/api/v1/archive/holds",
              body={"id": "keep-alice", "reason": "r", "users": [cl.jid("alice")]},
              expect=201)
    await asyncio.to_thread(cl.cut, follower)
    await refused_without_quorum(cl[follower], "isolated follower")
    await cl.clock.advance_to(31, *(cl[s] for s in ("a", "b", "c")))
    got = await api(cl[third], "POST", "/api/v1/archive/retention/run", ROOT)
    assert got == {"purged": 1}, "only bob->carol is neither held nor recent"
    stale = await api(cl[follower], "GET", "/api/v1/archive/digest", ROOT)
    assert stale["records"] == 3, f"the cut site cannot have seen the purge: {stale}"
    # Healed, it catches up to the same records and audit trail; the
    # refused search left no trace.
    await asyncio.to_thread(cl.heal, follower)
    await digests_converge(cl, 2)
    trail = (await api(cl[follower], "GET", "/api/v1/archive/audit"))["entries"]
    assert [(e["action"], e["node"]) for e in changes(trail)] == [
        ("retention.propose", f"{leader_site}1"), ("retention.approve", f"{leader_site}1"),
        ("hold.create", f"{third}1"), ("retention.run", f"{third}1")], trail
    assert "search" not in [e["action"] for e in trail], "the refused search left no trace"
    got = await search(cl[follower], q="quorum")
    assert bodies(got["records"]) == ["quorum one", "quorum three"]


@SLOW
@pytest.mark.chorus_cluster(config=TOKENS)
async def test_cluster_cut_leader_refuses_unaudited_access(cluster3):
    cl = cluster3
    _, leader_site, follower, _ = await quorum_cluster(cl)
    await asyncio.to_thread(cl.cut, leader_site)
    # The majority elects a new leader and answers again.
    deadline = time.monotonic() + CONVERGE_S
    while True:
        status, _, raw = await call(cl[follower], "GET", "/api/v1/archive/search", OFFICER,
                                    {"q": "quorum"}, timeout=QUORUM_REFUSAL_S)
        if status == 200:
            break
        assert status == 503, raw
        assert time.monotonic() < deadline, f"the majority never answered again: {raw!r}"
        await asyncio.sleep(0.5)  # waiting for a new Raft leader: no event for it
    assert bodies(json.loads(raw)["records"]) == ["quorum one", "quorum two", "quorum three"]
    # The old leader, alone, must not serve (nor hang): it cannot audit.
    await refused_without_quorum(cl[leader_site], "isolated leader")
    await asyncio.to_thread(cl.heal, leader_site)
    await cl.aready()
    await digests_converge(cl, 3)
    trail = (await api(cl[leader_site], "GET", "/api/v1/archive/audit"))["entries"]
    assert [(e["action"], e["node"]) for e in trail if e["action"] == "search"] == [
        ("search", f"{follower}1")], (
        "exactly one search was answered; the refused one left no trace", trail)


def _holds_and_policy(node, policy) -> bool:
    status, _, raw = _request(node, "GET", "/api/v1/archive/holds", OFFICER, None, None)
    if status != 200 or not json.loads(raw)["holds"]:
        return False
    status, _, raw = _request(node, "GET", "/api/v1/archive/retention", ROOT, None, None)
    return status == 200 and json.loads(raw)["retention"] == policy


async def _eventually(check, what: str, deadline_s: float = CONVERGE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not await asyncio.to_thread(check):
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached within {deadline_s}s")
        await asyncio.sleep(0.2)  # polling replicated state: there is no event for it
