"""The compliance API (HTTPS, bearer tokens, JSON under /api/v1/) with real
node processes: token roles, full-text search with paging, the
conversation view, legal holds and retention runs (on one node and
replicated through Raft on three sites; the nodes run on a clock the tests
move forward, so records really age), and the helpers the other
compliance tests share. test_compliance_tools.py: exports, the audit
trail, the CLI; test_record.py: the chain, WORM retention, dual control,
verifiable exports."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone

import pytest

from chorus_node import insecure_ssl_context
from xmpp import Client, connect

OFFICER = "officer-token"
ROOT = "root-token"
# A second admin: shortening retention needs two.
ROOT2 = "second-admin-token"
TOKENS = {
    "api": {
        "tokens": [
            {"name": "officer", "role": "compliance",
             "sha256": hashlib.sha256(OFFICER.encode()).hexdigest()},
            {"name": "root", "role": "admin",
             "sha256": hashlib.sha256(ROOT.encode()).hexdigest()},
            {"name": "root2", "role": "admin",
             "sha256": hashlib.sha256(ROOT2.encode()).hexdigest()},
        ]
    }
}
API = pytest.mark.chorus(config=TOKENS)
CLOCKED = pytest.mark.chorus(config=TOKENS, clock=True)
# Reads an officer or admin makes: audited, but not changes.
READS = {"search", "conversation", "export", "hold.list", "audit.read", "retention.view",
         "members.view", "archive.verify"}
SLOW = pytest.mark.timeout(180)
DAY_MS = 86_400_000
CONVERGE_S = 30.0
# How soon a node without a quorum must refuse an audited request.
QUORUM_REFUSAL_S = 20.0
POLL_S = 0.1
RECORD_KEYS = {"id", "time", "stamp_ms", "kind", "from", "to", "site", "room",
               "thread", "body", "stanza", "files", "msg_id", "edit"}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _request(node, method: str, path: str, token: str | None, params: dict | None,
             body, timeout: float = 15) -> tuple[int, dict, bytes]:
    url = node.http_base + path
    if params:
        url += "?" + urllib.parse.urlencode(params)
    data = None
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=insecure_ssl_context()) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


async def call(node, method: str, path: str, token: str | None = OFFICER,
               params: dict | None = None, body=None,
               timeout: float = 15) -> tuple[int, dict, bytes]:
    """One API request (in a worker thread); returns (status, headers with
    lower-case names, raw body)."""
    return await asyncio.to_thread(_request, node, method, path, token, params, body, timeout)


async def api(node, method: str, path: str, token: str | None = OFFICER,
              params: dict | None = None, body=None, expect: int = 200):
    """One API request that must answer ``expect`` with JSON; returns the JSON."""
    status, headers, raw = await call(node, method, path, token, params, body)
    desc = f"{method} {path} {params or ''} {body or ''}"
    assert status == expect, f"{desc} -> HTTP {status}: {raw[:500]!r}"
    assert headers.get("content-type", "").startswith("application/json"), (
        f"{desc}: content type {headers.get('content-type')!r}")
    return json.loads(raw)


async def api_error(node, method: str, path: str, token: str | None, expect: int,
                    params: dict | None = None, body=None) -> str:
    """A request that must fail with ``expect`` and a JSON {"error": ...}."""
    v = await api(node, method, path, token, params, body, expect=expect)
    assert isinstance(v.get("error"), str) and v["error"], f"{method} {path}: {v}"
    return v["error"]


async def search(node, token: str = OFFICER, **params) -> dict:
    return await api(node, "GET", "/api/v1/archive/search", token,
                     {k: v for k, v in params.items() if v is not None})


def bodies(records: list[dict]) -> list[str]:
    return [r["body"] for r in records]


def bare(jid: str) -> str:
    return jid.split("/", 1)[0]


def archive_status(node) -> dict:
    code, body = node.http_get("/archive/status", timeout=3)
    assert code == 200, f"/archive/status -> HTTP {code}: {body[:300]}"
    return json.loads(body)


async def archived(node, records: int) -> dict:
    """Polls until ``node`` holds ``records`` committed records and nothing
    spooled (replicated state: there is no event to wait for)."""
    deadline = time.monotonic() + CONVERGE_S
    while True:
        st = await asyncio.to_thread(archive_status, node)
        if st["records"] == records and st["spooled"] == 0:
            return st
        if time.monotonic() >= deadline:
            raise AssertionError(f"archive never held exactly {records} records: {st}")
        await asyncio.sleep(POLL_S)


async def deliver(sender: Client, receiver: Client, body: str) -> None:
    """``sender`` sends ``body`` to ``receiver`` (full JID) and it arrives."""
    sender.send_message(receiver.jid, body)
    await receiver.next_message(15, frm=sender.bare, body=body)
    # The server stamped the record (wall clock, ms) before it delivered it:
    # once the clock has moved to the next millisecond, whatever is sent
    # next gets a strictly later stamp, so "oldest first" has no ties.
    received_ms = time.time_ns() // 1_000_000
    while time.time_ns() // 1_000_000 <= received_ms:
        await asyncio.sleep(0.0005)


def changes(entries: list[dict]) -> list[dict]:
    """The audit entries of changes (reads left out)."""
    return [e for e in entries if e["action"] not in READS]


async def set_policy(node, policy: dict, approver=None) -> dict:
    """Puts a retention policy in force the way a firm must when it
    shortens a period: root proposes it, root2 approves (at ``approver``,
    default the same node); returns the policy in force."""
    got = await api(node, "PUT", "/api/v1/archive/retention", ROOT, body=policy, expect=202)
    change = got["pending"]["id"]
    done = await api(approver or node, "POST",
                     f"/api/v1/archive/retention/changes/{change}/approve", ROOT2)
    return done["retention"]


def future(days: float) -> int:
    return int(time.time() * 1000 + days * DAY_MS)


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def check_record(r: dict) -> None:
    assert set(r) == RECORD_KEYS, f"record fields {sorted(r)}"
    assert r["kind"] == "message", r
    assert r["body"] and r["body"] in r["stanza"], r
    assert datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp() * 1000 \
        == pytest.approx(r["stamp_ms"], abs=1), r


async def users(node, *names: str) -> dict[str, Client]:
    out = {}
    for n in names:
        out[n] = await connect(node, n, resource="e2e", presence=True)
    return out


# --------------------------------------------------------------------------
# 1. tokens and roles
# --------------------------------------------------------------------------


@API
async def test_tokens_and_roles(node):
    s = "/api/v1/archive/search"
    # No token, a wrong scheme, an unknown token: 401.
    await api_error(node, "GET", "/api/v1/whoami", None, 401)
    await api_error(node, "GET", s, None, 401)
    status, _, raw = await call(node, "GET", s, None, {"q": "x"})
    assert status == 401, raw
    await api_error(node, "GET", s, "not-a-token", 401)
    await api_error(node, "GET", "/api/v1/whoami", "officer", 401)
    status, raw = await asyncio.to_thread(_basic_auth, node, "/api/v1/whoami")
    assert status == 401, f"Basic auth with the officer token -> {status} {raw!r}"
    # Wrong role: 403.
    await api_error(node, "GET", s, ROOT, 403)
    await api_error(node, "GET", "/api/v1/archive/holds", ROOT, 403)
    await api_error(node, "GET", "/api/v1/archive/export", ROOT, 403)
    await api_error(node, "GET", "/api/v1/archive/audit", ROOT, 403)
    await api_error(node, "GET", "/api/v1/archive/members", OFFICER, 403)
    await api_error(node, "PUT", "/api/v1/archive/retention", OFFICER, 403,
                    body={"default_days": 1})
    await api_error(node, "POST", "/api/v1/archive/retention/run", OFFICER, 403)
    # Unknown endpoints: 404 with a JSON error.
    await api_error(node, "GET", "/api/v1/archive/nope", OFFICER, 404)
    # whoami names the token and its role.
    assert await api(node, "GET", "/api/v1/whoami", OFFICER) == {
        "name": "officer", "role": "compliance"}
    assert await api(node, "GET", "/api/v1/whoami", ROOT) == {"name": "root", "role": "admin"}
    # Both roles read the digest and the retention policy.
    for t in (OFFICER, ROOT):
        d = await api(node, "GET", "/api/v1/archive/digest", t)
        assert d["node"] and d["records"] == 0 and d["digest"], d
        r = await api(node, "GET", "/api/v1/archive/retention", t)
        assert "retention" in r, r
    m = await api(node, "GET", "/api/v1/archive/members", ROOT)
    assert m["voters"] == [m["leader"]] and m["learners"] == [], m
    # Refused calls are not in the audit trail; the reads that show more
    # than counts and hashes are, with the caller's address.
    trail = (await api(node, "GET", "/api/v1/archive/audit"))["entries"]
    assert [(e["action"], e["actor"]) for e in trail] == [
        ("retention.view", "officer"), ("retention.view", "root"), ("members.view", "root")]
    assert all(e["addr"].startswith("127.0.0.1:") for e in trail), trail


def _basic_auth(node, path: str) -> tuple[int, bytes]:
    import base64
    req = urllib.request.Request(node.http_base + path, headers={
        "Authorization": "Basic " + base64.b64encode(f"x:{OFFICER}".encode()).decode()})
    try:
        with urllib.request.urlopen(req, timeout=10, context=insecure_ssl_context()) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# --------------------------------------------------------------------------
# 2. search
# --------------------------------------------------------------------------


@API
async def test_search_words_participants_dates_paging(node):
    c = await users(node, "alice", "bob", "carol")
    a, b, k = (node.jid(u) for u in ("alice", "bob", "carol"))
    batch1 = [("alice", "bob", "zebra alpha one"), ("bob", "alice", "zebra alpha two"),
              ("alice", "carol", "zebra gamma three"), ("carol", "bob", "yak delta four")]
    batch2 = [("bob", "carol", "zebra omega five"), ("alice", "bob", "quokka alpha six")]
    for s, r, text in batch1:
        await deliver(c[s], c[r], text)
    await archived(node, 4)
    for s, r, text in batch2:
        await deliver(c[s], c[r], text)
    await archived(node, 6)

    everything = await search(node)
    assert everything["total"] == 6
    assert bodies(everything["records"]) == [t for _, _, t in batch1 + batch2]
    for rec, (s, r, _) in zip(everything["records"], batch1 + batch2, strict=True):
        check_record(rec)
        assert bare(rec["from"]) == node.jid(s) and bare(rec["to"]) == node.jid(r), rec
    assert len({r["id"] for r in everything["records"]}) == 6
    stamps = [r["stamp_ms"] for r in everything["records"]]
    assert stamps == sorted(stamps), "oldest first"

    # Words: every word must occur.
    got = await search(node, q="zebra")
    assert (got["total"], bodies(got["records"])) == (
        4, ["zebra alpha one", "zebra alpha two", "zebra gamma three", "zebra omega five"])
    got = await search(node, q="zebra alpha")
    assert (got["total"], bodies(got["records"])) == (2, ["zebra alpha one", "zebra alpha two"])
    got = await search(node, q="OMEGA")
    assert bodies(got["records"]) == ["zebra omega five"], "words match case-insensitively"
    got = await search(node, q="nothingmatchesthis")
    assert (got["total"], got["records"]) == (0, [])

    # Participants: all listed ones took part.
    got = await search(node, participants=f"{a},{b}")
    assert (got["total"], bodies(got["records"])) == (
        3, ["zebra alpha one", "zebra alpha two", "quokka alpha six"])
    got = await search(node, participants=f"{b},{k}")
    assert bodies(got["records"]) == ["yak delta four", "zebra omega five"]
    got = await search(node, participants=f"{a},{k}")
    assert bodies(got["records"]) == ["zebra gamma three"]
    got = await search(node, participants=k)
    assert bodies(got["records"]) == ["zebra gamma three", "yak delta four", "zebra omega five"]
    got = await search(node, participants=f"{a},{b},{k}")
    assert got["total"] == 0 and got["records"] == [], "nobody wrote to two people at once"
    got = await search(node, participants=f"{a},{b}", q="alpha -quokka")
    assert bodies(got["records"]) == ["zebra alpha one", "zebra alpha two"]

    # Date window: RFC 3339 or epoch milliseconds, both ends inclusive.
    first1, last1 = everything["records"][0], everything["records"][3]
    first2, last2 = everything["records"][4], everything["records"][5]
    assert last1["stamp_ms"] < first2["stamp_ms"], "batch 2 was sent after batch 1 committed"
    got = await search(node, start=first2["time"])
    assert bodies(got["records"]) == ["zebra omega five", "quokka alpha six"]
    got = await search(node, start=str(first2["stamp_ms"]))
    assert bodies(got["records"]) == ["zebra omega five", "quokka alpha six"]
    got = await search(node, end=str(last1["stamp_ms"]))
    assert got["total"] == 4 and bodies(got["records"]) == [t for _, _, t in batch1]
    got = await search(node, start=first1["time"], end=last1["time"], q="zebra")
    assert bodies(got["records"]) == ["zebra alpha one", "zebra alpha two", "zebra gamma three"]
    got = await search(node, start=str(first2["stamp_ms"]), end=str(last2["stamp_ms"]),
                       participants=f"{a},{b}")
    assert bodies(got["records"]) == ["quokka alpha six"]
    got = await search(node, start=rfc3339(future(1)))
    assert got["total"] == 0 and got["records"] == []

    # Paging: offset/limit over the same total.
    pages = []
    for offset in (0, 2, 4):
        got = await search(node, q="zebra", offset=offset, limit=2)
        assert got["total"] == 4, got
        pages.append(bodies(got["records"]))
    assert pages == [["zebra alpha one", "zebra alpha two"],
                     ["zebra gamma three", "zebra omega five"], []]
    got = await search(node, offset=5, limit=10)
    assert got["total"] == 6 and bodies(got["records"]) == ["quokka alpha six"]

    # Bad input: 400 with a JSON error.
    await api_error(node, "GET", "/api/v1/archive/search", OFFICER, 400, {"q": "(zebra"})
    await api_error(node, "GET", "/api/v1/archive/search", OFFICER, 400,
                    {"start": "yesterday"})


@API
async def test_malformed_parameters_get_json_errors(node):
    """Parameters that do not parse (a non-numeric limit, a misspelt name)
    are refused with 400 and the API's JSON error body, like every other
    API error."""
    bad = []
    for path, params in (("/api/v1/archive/search", {"limit": "many"}),
                         ("/api/v1/archive/search", {"participant": "alice@chorus.test"}),
                         ("/api/v1/archive/audit", {"from": "start"}),
                         ("/api/v1/archive/conversation",
                          {"user": "alice@chorus.test", "with": "bob@chorus.test",
                           "limit": "-1"})):
        status, headers, raw = await call(node, "GET", path, OFFICER, params)
        try:
            error = json.loads(raw).get("error")
        except ValueError:
            error = None
        if status != 400 or not headers.get("content-type", "").startswith(
                "application/json") or not error:
            bad.append(f"GET {path} {params} -> {status} {headers.get('content-type')} {raw!r}")
    assert not bad, "\n".join(bad)


# --------------------------------------------------------------------------
# 3. conversation view
# --------------------------------------------------------------------------


@API
async def test_conversation_view(node):
    c = await users(node, "alice", "bob", "carol")
    a, b = node.jid("alice"), node.jid("bob")
    script = [("alice", "bob", "hi bob"), ("carol", "alice", "noise from carol"),
              ("bob", "alice", "hi alice"), ("alice", "carol", "noise to carol"),
              ("alice", "bob", "lunch at noon?"), ("carol", "bob", "more noise"),
              ("bob", "alice", "yes, noon")]
    for s, r, text in script:
        await deliver(c[s], c[r], text)
    await archived(node, len(script))
    want = [t for s, r, t in script if {s, r} == {"alice", "bob"}]

    conv = await api(node, "GET", "/api/v1/archive/conversation",
                     params={"user": a, "with": b})
    assert bodies(conv["records"]) == want
    assert conv["complete"] is True
    for rec in conv["records"]:
        check_record(rec)
        assert {bare(rec["from"]), bare(rec["to"])} == {a, b}, rec
    # The same conversation seen from bob's side.
    other = await api(node, "GET", "/api/v1/archive/conversation",
                      params={"user": b, "with": a})
    assert [r["id"] for r in other["records"]] == [r["id"] for r in conv["records"]]

    # Paging with after=<id>.
    page1 = await api(node, "GET", "/api/v1/archive/conversation",
                      params={"user": a, "with": b, "limit": 2})
    assert bodies(page1["records"]) == want[:2] and page1["complete"] is False
    page2 = await api(node, "GET", "/api/v1/archive/conversation",
                      params={"user": a, "with": b, "limit": 10,
                              "after": page1["records"][-1]["id"]})
    assert bodies(page2["records"]) == want[2:] and page2["complete"] is True

    await api_error(node, "GET", "/api/v1/archive/conversation", OFFICER, 400, {"user": a})
    await api_error(node, "GET", "/api/v1/archive/conversation", ROOT, 403,
                    {"user": a, "with": b})


# --------------------------------------------------------------------------
# 4. holds and retention on one node
# --------------------------------------------------------------------------


@CLOCKED
async def test_holds_protect_records_from_retention(node):
    c = await users(node, "alice", "bob", "carol")
    a, b, k = (node.jid(u) for u in ("alice", "bob", "carol"))
    script = [("alice", "bob", "m1 alice to bob"), ("carol", "alice", "m2 carol to alice"),
              ("bob", "carol", "m3 bob to carol"), ("alice", "carol", "m4 alice to carol")]
    for s, r, text in script:
        await deliver(c[s], c[r], text)
    await archived(node, 4)

    # Retention policy: two admins set it, everyone reads, nonsense refused.
    policy = {"default_days": 30, "users": {}, "rooms": {}}
    assert await set_policy(node, policy) == policy
    shown = {"retention": policy, "pending": [], "min_days": 1}
    assert await api(node, "GET", "/api/v1/archive/retention", OFFICER) == shown
    await api_error(node, "PUT", "/api/v1/archive/retention", ROOT, 400,
                    body={"default_days": 0})
    await api_error(node, "PUT", "/api/v1/archive/retention", ROOT, 400, body=b"{nope")
    assert await api(node, "GET", "/api/v1/archive/retention", ROOT) == shown

    # Holds placed after the messages were sent: bob for all time; carol
    # only until 1970 (so it covers none of her records); alice for exactly
    # the millisecond of m4 (bounds are inclusive).
    created = await api(node, "POST", "/api/v1/archive/holds",
                        body={"reason": "case 17: bob", "users": [b]}, expect=201)
    hold = created["hold"]
    assert hold["id"] and hold["reason"] == "case 17: bob" and hold["users"] == [b]
    assert hold["created_by"] == "officer" and hold["released"] is None, hold
    assert hold["created_ms"] == pytest.approx(time.time() * 1000, abs=60_000)
    old = await api(node, "POST", "/api/v1/archive/holds",
                    body={"id": "carol-1970", "reason": "old case", "users": [k],
                          "start_ms": 0, "end_ms": 1000}, expect=201)
    assert old["hold"]["id"] == "carol-1970"
    m4 = (await search(node, q="m4"))["records"][0]
    assert m4["body"] == "m4 alice to carol"
    win = await api(node, "POST", "/api/v1/archive/holds",
                    body={"id": "alice-m4", "reason": "one message", "users": [a],
                          "start_ms": m4["stamp_ms"], "end_ms": m4["stamp_ms"]}, expect=201)
    assert (win["hold"]["start_ms"], win["hold"]["end_ms"]) == (m4["stamp_ms"],) * 2
    # An id in use: refused by the archive itself (409), not a racy check.
    await api_error(node, "POST", "/api/v1/archive/holds", OFFICER, 409,
                    body={"id": "carol-1970", "reason": "again", "users": [k]})
    await api_error(node, "POST", "/api/v1/archive/holds", OFFICER, 400,
                    body={"reason": "nobody"})
    await api_error(node, "POST", "/api/v1/archive/holds", OFFICER, 400, body=b"not json")
    listed = (await api(node, "GET", "/api/v1/archive/holds"))["holds"]
    assert {h["id"]: h["released"] for h in listed} == {
        hold["id"]: None, "carol-1970": None, "alice-m4": None}

    run = "/api/v1/archive/retention/run"
    # Nothing is old enough yet: not now, not in 29 days.
    assert await api(node, "POST", run, ROOT) == {"purged": 0}
    await node.clock.advance_to(29, node)
    assert await api(node, "POST", run, ROOT) == {"purged": 0}
    await archived(node, 4)
    # In 31 days everything no hold covers goes: only m2.
    await node.clock.advance_to(31, node)
    assert await api(node, "POST", run, ROOT) == {"purged": 1}
    await archived(node, 3)
    got = await search(node)
    assert got["total"] == 3 and bodies(got["records"]) == [
        "m1 alice to bob", "m3 bob to carol", "m4 alice to carol"]
    assert (await search(node, q="m2"))["total"] == 0
    assert (await api(node, "GET", "/api/v1/archive/digest", ROOT))["records"] == 3
    # Running again purges nothing more.
    assert await api(node, "POST", run, ROOT) == {"purged": 0}

    # Releasing: unknown ids are 404; the released hold is listed as such.
    await api_error(node, "POST", "/api/v1/archive/holds/no-such-hold/release", OFFICER, 404)
    rel = await api(node, "POST", f"/api/v1/archive/holds/{hold['id']}/release")
    assert rel == {"released": hold["id"]}
    listed = {h["id"]: h for h in (await api(node, "GET", "/api/v1/archive/holds"))["holds"]}
    by, at = listed[hold["id"]]["released"]
    assert by == "officer" and at == pytest.approx(node.clock.now_ms(), abs=60_000)
    assert listed["carol-1970"]["released"] is None
    # Now bob's records go too; then, released, m4.
    assert await api(node, "POST", run, ROOT) == {"purged": 2}
    await archived(node, 1)
    assert bodies((await search(node))["records"]) == ["m4 alice to carol"]
    await api(node, "POST", "/api/v1/archive/holds/alice-m4/release")
    assert await api(node, "POST", run, ROOT) == {"purged": 1}
    await archived(node, 0)
    got = await search(node)
    assert got == {"total": 0, "records": []}
    assert (await api(node, "GET", "/api/v1/archive/digest", OFFICER))["records"] == 0


@CLOCKED
async def test_per_user_retention_longer_than_default(node):
    c = await users(node, "alice", "bob", "carol")
    script = [("alice", "bob", "short lived"), ("alice", "carol", "carol keeps this"),
              ("carol", "bob", "carol keeps this too"), ("bob", "alice", "also short")]
    for s, r, text in script:
        await deliver(c[s], c[r], text)
    await archived(node, 4)
    # Carol's rule, given in another case, names the same account.
    policy = {"default_days": 30, "users": {node.jid("Carol"): 90}, "rooms": {}}
    assert await set_policy(node, policy) == {**policy, "users": {node.jid("carol"): 90}}
    run = "/api/v1/archive/retention/run"
    await node.clock.advance_to(31, node)
    assert await api(node, "POST", run, ROOT) == {"purged": 2}
    await archived(node, 2)
    got = await search(node)
    assert bodies(got["records"]) == ["carol keeps this", "carol keeps this too"]
    await node.clock.advance_to(89, node)
    assert await api(node, "POST", run, ROOT) == {"purged": 0}
    await node.clock.advance_to(91, node)
    assert await api(node, "POST", run, ROOT) == {"purged": 2}
    await archived(node, 0)
    assert (await search(node))["total"] == 0
