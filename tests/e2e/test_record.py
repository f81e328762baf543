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
                             archive_status, archived, deliver, digests_converge, search,
                             set_policy, users)
from test_muc import groupchat, instant_room, join, muc_client, room_jid

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
