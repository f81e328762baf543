"""The defensible record, with real processes: the hash chain (its head in
/archive/status and the API, equal on every site), `chorus archive verify`
naming one byte changed in one site's stored record (with RocksDB's own
`ldb`, as an intruder with disk access would) on that site only; WORM
retention (no caller-chosen purge time, the floor, dual control with one
admin refused); holds that cover what a user received in a room, JIDs
normalized and validated; and every read audited."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import pytest

from test_compliance import (CLOCKED, OFFICER, ROOT, ROOT2, SLOW, TOKENS, api, api_error,
                             archive_status, archived, call, deliver, search, set_policy, users)
from test_compliance_cluster import digests_converge
from test_muc import groupchat, instant_room, join, muc_client, room_jid

API_NODE = pytest.mark.chorus(config=TOKENS)
LDB = shutil.which("ldb")
NEEDS_LDB = pytest.mark.skipif(LDB is None, reason="rocksdb-tools (ldb) missing: bash scripts/deps")


# --------------------------------------------------------------------------
# WORM retention and dual control
# --------------------------------------------------------------------------


@CLOCKED
async def test_retention_is_worm_and_shortening_needs_two_admins(node):
    c = await users(node, "alice", "bob")
    await deliver(c["alice"], c["bob"], "keep me a while")
    await archived(node, 1)
    run = "/api/v1/archive/retention/run"
    # No caller picks the time a purge is judged at.
    err = await api_error(node, "POST", run, ROOT, 400, {"at": "2099-01-01T00:00:00Z"})
    assert "committed time" in err, err
    # Below the configured floor: refused whoever asks.
    err = await api_error(node, "PUT", "/api/v1/archive/retention", ROOT, 400,
                          body={"default_days": 0})
    assert "retention_min_days" in err, err
    # Forever -> 30 days shortens: one admin only proposes it...
    got = await api(node, "PUT", "/api/v1/archive/retention", ROOT,
                    body={"default_days": 30}, expect=202)
    change = got["pending"]
    assert change["proposed_by"] == "root" and change["policy"]["default_days"] == 30
    shown = await api(node, "GET", "/api/v1/archive/retention", ROOT)
    assert shown["retention"]["default_days"] is None and shown["pending"] == [change]
    # ... and cannot approve it herself (the state machine decides).
    approve = f"/api/v1/archive/retention/changes/{change['id']}/approve"
    err = await api_error(node, "POST", approve, ROOT, 409)
    assert "different admin" in err, err
    await api_error(node, "POST", approve, OFFICER, 403)
    assert (await api(node, "POST", approve, ROOT2))["retention"]["default_days"] == 30
    await api_error(node, "POST", approve, ROOT2, 404)
    # Lengthening is one admin's action.
    assert await api(node, "PUT", "/api/v1/archive/retention", ROOT,
                     body={"default_days": 60}) == {
        "retention": {"default_days": 60, "users": {}, "rooms": {}}}
    # The record goes only once 60 days have really passed (the node's clock).
    await node.clock.advance_to(59, node)
    assert await api(node, "POST", run, ROOT) == {"purged": 0}
    await node.clock.advance_to(61, node)
    assert await api(node, "POST", run, ROOT) == {"purged": 1}
    trail = (await api(node, "GET", "/api/v1/archive/audit"))["entries"]
    acts = [(e["action"], e["actor"]) for e in trail if e["action"].startswith("retention.")
            and e["action"] != "retention.view"]
    assert acts == [("retention.propose", "root"), ("retention.approve", "root"),
                    ("retention.approve", "root2"), ("retention.approve", "root2"),
                    ("retention.set", "root"), ("retention.run", "root"),
                    ("retention.run", "root")], acts
    refused = [e for e in trail if e["action"] == "retention.approve"][0]
    assert "different admin" in refused["detail"]["outcome"]["refused"], refused
    last = trail[-1] if trail[-1]["action"] == "retention.run" else \
        [e for e in trail if e["action"] == "retention.run"][-1]
    assert last["detail"]["outcome"]["purged"] == 1, last


# --------------------------------------------------------------------------
# holds
# --------------------------------------------------------------------------


@CLOCKED
async def test_holds_normalize_jids_and_cover_room_messages_received(node):
    alice = await muc_client(node, "alice")
    bob = await muc_client(node, "bob")
    carol = await muc_client(node, "carol")
    room = room_jid(node, "deals")
    await instant_room(alice, room, "alice")
    await join(bob, room, "bob")
    alice.send_message(room, "room note for everyone", mtype="groupchat")
    await groupchat(bob, f"{room}/alice", "room note for everyone")
    await deliver(alice, carol, "direct to carol")
    await archived(node, 2)

    holds = "/api/v1/archive/holds"
    for bad in ("not a jid@", "@chorus.test", "a@b@c"):
        err = await api_error(node, "POST", holds, OFFICER, 400,
                              body={"reason": "x", "users": [bad]})
        assert "JID" in err, err
    # Mixed case and a resource name bob's account.
    h = await api(node, "POST", holds, body={"id": "bob-case", "reason": "case 9",
                                             "users": ["Bob@CHORUS.test/phone"]}, expect=201)
    assert h["hold"]["users"] == [node.jid("bob")]
    # Searching for bob finds the room message he received (occupant).
    got = await search(node, participants=node.jid("BOB"))
    assert [r["body"] for r in got["records"]] == ["room note for everyone"]

    await set_policy(node, {"default_days": 30})
    await node.clock.advance_to(31, node)
    # The direct message goes; the room message bob received stays.
    assert await api(node, "POST", "/api/v1/archive/retention/run", ROOT) == {"purged": 1}
    left = await search(node)
    assert [r["body"] for r in left["records"]] == ["room note for everyone"]


# --------------------------------------------------------------------------
# corrections and retractions are kept
# --------------------------------------------------------------------------


@API_NODE
async def test_corrections_and_retractions_keep_the_original(node, tmp_path):
    c = await users(node, "alice", "bob")
    c["alice"].send_message(c["bob"].jid, "the price is 100", id="m1")
    await c["bob"].next_message(15, body="the price is 100")
    c["alice"].send_message(c["bob"].jid, "the price is 110", id="m2",
                            extra=["<replace xmlns='urn:xmpp:message-correct:0' id='m1'/>"])
    fixed = await c["bob"].next_message(15, body="the price is 110")
    assert fixed.xml.find("{urn:xmpp:message-correct:0}replace") is not None
    c["alice"].send_message(c["bob"].jid, None, id="m3",
                            extra=["<retract xmlns='urn:xmpp:message-retract:1' id='m1'/>"])
    gone = await c["bob"].next_message(
        15, pred=lambda m: m.xml.find("{urn:xmpp:message-retract:1}retract") is not None)
    assert gone["body"] == ""
    await archived(node, 3)
    got = (await search(node))["records"]
    assert [r["body"] for r in got] == ["the price is 100", "the price is 110", None], got
    original, correction, retraction = got
    assert original["edit"] is None and original["msg_id"] == "m1"
    assert correction["edit"] == {"kind": "correction", "of": "m1", "record": original["id"]}
    assert retraction["edit"] == {"kind": "retraction", "of": "m1", "record": original["id"]}
    # The export shows all three, linked.
    out = tmp_path / "edits.tar"
    cp = await asyncio.to_thread(node.cli, "archive", "--token", OFFICER, "export",
                                 "--out", str(out))
    assert cp.returncode == 0, cp.stderr
    from test_compliance_tools import export_records
    lines = export_records(out.read_bytes())
    assert [(r["body"], (r["edit"] or {}).get("record")) for r in lines] == [
        ("the price is 100", None), ("the price is 110", original["id"]),
        (None, original["id"])], lines


# --------------------------------------------------------------------------
# verifiable exports
# --------------------------------------------------------------------------


def verify_export(node, path) -> tuple[int, dict, str]:
    """`chorus archive verify-export FILE`, as opposing counsel runs it:
    no token, no node."""
    cp = subprocess.run([str(node.binary), "archive", "verify-export", str(path)],
                        capture_output=True, text=True, timeout=60)
    return cp.returncode, json.loads(cp.stdout) if cp.stdout.strip() else {}, cp.stderr


@pytest.mark.chorus(config=TOKENS)
async def test_exports_verify_offline_and_tampering_is_found(node, tmp_path):
    c = await users(node, "alice", "bob")
    for text in ("offer 1", "offer 2 ✓", "counter-offer"):
        await deliver(c["alice"], c["bob"], text)
    await archived(node, 3)
    for fmt in ("jsonl", "eml", "actiance"):
        out = tmp_path / f"export-{fmt}.tar"
        cp = await asyncio.to_thread(node.cli, "archive", "--token", OFFICER, "export",
                                     "-q", "offer", "--format", fmt, "--out", str(out))
        assert cp.returncode == 0, cp.stderr
        code, report, err = await asyncio.to_thread(verify_export, node, out)
        assert code == 0 and report["ok"] is True, (fmt, report, err)
        assert report["records"] == 3 and report["request"]["by"] == "officer", report
        # The audit trail names exactly this export's manifest.
        trail = (await api(node, "GET", "/api/v1/archive/audit"))["entries"]
        exported = [e for e in trail if e["action"] == "export"][-1]
        assert exported["detail"]["manifest_sha256"] == report["manifest_sha256"], exported
    # One byte changed in a downloaded export is found, and named.
    raw = bytearray((tmp_path / "export-jsonl.tar").read_bytes())
    at = raw.find("offer 2".encode())
    assert at > 0
    raw[at] ^= 0x01
    bad = tmp_path / "tampered.tar"
    bad.write_bytes(bytes(raw))
    code, report, err = await asyncio.to_thread(verify_export, node, bad)
    assert code != 0 and report["ok"] is False, report
    assert any(p.startswith("records.jsonl was changed") for p in report["problems"]), report
    assert "does not verify" in err


# --------------------------------------------------------------------------
# the chain
# --------------------------------------------------------------------------


def _ldb(node, *args: str) -> str:
    cp = subprocess.run([LDB, f"--db={node.data_dir / 'archive'}", "--column_family=records",
                         *args], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, f"ldb {args}: {cp.stdout}\n{cp.stderr}"
    return cp.stdout.strip()


def flip_one_byte(node, pos: int, needle: str) -> None:
    """Rewrites the stored record at archive position ``pos`` with one byte
    of ``needle`` (in its body) changed, straight into RocksDB."""
    key = "0x" + pos.to_bytes(8, "big").hex().upper()
    value = bytes.fromhex(_ldb(node, "get", key, "--hex").removeprefix("0x"))
    at = value.find(needle.encode())
    assert at >= 0, f"{needle!r} not in the stored record"
    tampered = value[:at] + bytes([value[at] ^ 0x01]) + value[at + 1:]
    _ldb(node, "put", key, "0x" + tampered.hex().upper(), "--hex")


async def verify(node) -> dict:
    return await api(node, "GET", "/api/v1/archive/verify", OFFICER)


@SLOW
@NEEDS_LDB
@pytest.mark.chorus_cluster(config=TOKENS)
async def test_verify_names_a_changed_byte_on_that_site_only(cluster3):
    cl = cluster3
    where = {"alice": "a", "bob": "b", "carol": "c"}
    c = {u: await connect_at(cl, u, s) for u, s in where.items()}
    await cl.asessions_synced()
    script = [("alice", "bob", "wire 100 to acct 7"), ("bob", "carol", "approved"),
              ("carol", "alice", "done")]
    for s, r, text in script:
        await deliver(c[s], c[r], text)
    await digests_converge(cl, 3)
    # Every site reports the same chain head, cheaply, without a token.
    heads = {s: archive_status(cl[s])["chain"] for s in "abc"}
    assert len({h["hash"] for h in heads.values()}) == 1 and heads["a"]["length"] >= 3, heads
    for s in "abc":
        v = await verify(cl[s])
        assert v["ok"] is True and v["problems"] == [], (s, v)
        assert all(site["agrees"] is True for site in v["sites"]), (s, v["sites"])

    # An intruder on site b changes one byte of the first record on disk.
    first = (await search(cl["b"], q="wire"))["records"][0]
    cl.stop("b")
    flip_one_byte(cl["b"], 0, "wire 100")
    cl.start("b")
    await cl.aready()
    v = await verify(cl["b"])
    assert v["ok"] is False, v
    assert [(p["kind"], p["at"], p["id"]) for p in v["problems"]] == [
        ("record", 0, first["id"])], v["problems"]
    assert "changed" in v["problems"][0]["problem"]
    # The chains still agree (the intruder did not touch them), and the
    # other sites verify clean: the change is on b only.
    for s in "ac":
        other = await verify(cl[s])
        assert other["ok"] is True, (s, other)
    # The CLI verifies several sites at once (trusting each site's HTTPS
    # certificate) and fails.
    bundle = cl.workdir / "sites.pem"
    bundle.write_text("".join((cl[s].data_dir / "tls" / "cert.pem").read_text() for s in "abc"))
    cp = await asyncio.to_thread(
        cl["a"].cli, "archive", "--token", OFFICER, "--ca", str(bundle), "verify",
        "--site", f"https://localhost:{cl['b'].http_port}",
        "--site", f"https://localhost:{cl['c'].http_port}")
    assert cp.returncode != 0, cp.stdout
    out = json.loads(cp.stdout)
    assert [n["ok"] for n in out["nodes"]] == [True, False, True], out
    assert "did not verify" in cp.stderr
    # Verifications are audited like any read.
    trail = (await api(cl["a"], "GET", "/api/v1/archive/audit"))["entries"]
    assert sum(e["action"] == "archive.verify" for e in trail) >= 4, trail


async def connect_at(cl, user: str, site: str):
    from xmpp import connect
    return await connect(cl[site], user, resource=site, presence=True)


# --------------------------------------------------------------------------
# the audit trail covers every action
# --------------------------------------------------------------------------


@API_NODE
async def test_every_api_action_is_in_the_audit_trail(node, tmp_path):
    c = await users(node, "alice", "bob")
    await deliver(c["alice"], c["bob"], "audit everything")
    await archived(node, 1)
    a, b = node.jid("alice"), node.jid("bob")
    calls = [
        (OFFICER, "GET", "/api/v1/archive/search", {"q": "audit"}, None, 200, "search"),
        (OFFICER, "GET", "/api/v1/archive/conversation", {"user": a, "with": b}, None, 200,
         "conversation"),
        (OFFICER, "GET", "/api/v1/archive/export", {"q": "audit"}, None, 200, "export"),
        (OFFICER, "GET", "/api/v1/archive/holds", None, None, 200, "hold.list"),
        (OFFICER, "POST", "/api/v1/archive/holds", None,
         {"id": "h1", "reason": "r", "users": [a]}, 201, "hold.create"),
        (OFFICER, "POST", "/api/v1/archive/holds/h1/release", None, None, 200, "hold.release"),
        (ROOT, "GET", "/api/v1/archive/retention", None, None, 200, "retention.view"),
        (ROOT, "PUT", "/api/v1/archive/retention", None, {"default_days": 400}, 202,
         "retention.propose"),
        (ROOT, "POST", "/api/v1/archive/retention/run", None, None, 200, "retention.run"),
        (OFFICER, "GET", "/api/v1/archive/verify", None, None, 200, "archive.verify"),
        (ROOT, "GET", "/api/v1/archive/members", None, None, 200, "members.view"),
        (OFFICER, "GET", "/api/v1/archive/audit", None, None, 200, "audit.read"),
    ]
    for token, method, path, params, body, status, _ in calls:
        st, _, raw = await call(node, method, path, token, params, body)
        assert st == status, (method, path, st, raw[:300])
    pending = (await api(node, "GET", "/api/v1/archive/retention", ROOT))["pending"][0]["id"]
    await api(node, "POST", f"/api/v1/archive/retention/changes/{pending}/cancel", ROOT)
    trail = (await api(node, "GET", "/api/v1/archive/audit"))["entries"]
    want = [action for *_, action in calls] + ["retention.view", "retention.cancel"]
    assert [e["action"] for e in trail] == want, [e["action"] for e in trail]
    for e in trail:
        assert e["actor"] in ("officer", "root") and e["addr"].startswith("127.0.0.1:"), e
    reads = [e for e in trail if e["action"] in ("search", "conversation", "export", "hold.list",
                                                   "audit.read")]
    assert all(isinstance(e["detail"]["results"], int) for e in reads), reads
