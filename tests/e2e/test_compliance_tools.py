"""The compliance tools on one node, with real processes: JSON Lines,
.eml and Actiance exports (each a tar with its chain links and manifest),
the audit trail every officer and admin action leaves behind, and the
`chorus archive` CLI. Helpers and fixtures: test_compliance.py."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import email.utils
import hashlib
import io
import json
import tarfile
from datetime import datetime

from test_compliance import (API, OFFICER, ROOT, ROOT2, api, api_error, archived, bare,
                             bodies, call, check_record, deliver, search, set_policy, users)


# --------------------------------------------------------------------------
# 6. exports
# --------------------------------------------------------------------------


def _conv_key(r: dict) -> tuple[str, ...]:
    return tuple(sorted({bare(r["from"]), bare(r["to"])}))


def export_members(raw: bytes) -> dict[str, bytes]:
    """An export's tar members by name (in order); names are unique."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for m in tar.getmembers():
            assert m.isfile() and m.name not in out, m.name
            out[m.name] = tar.extractfile(m).read()
    assert list(out)[-1] == "manifest.json", list(out)
    return out


def export_records(raw: bytes) -> list[dict]:
    return [json.loads(x) for x in export_members(raw)["records.jsonl"].decode().splitlines()]


@API
async def test_exports_jsonl_eml_and_hold(node):
    c = await users(node, "alice", "bob", "carol")
    a, b, k = (node.jid(u) for u in ("alice", "bob", "carol"))
    script = [("alice", "bob", "export apple one"), ("bob", "alice", "export apple two ✓"),
              ("alice", "carol", "export banana three"), ("carol", "bob", "unrelated kiwi"),
              ("bob", "alice", "export cherry four")]
    for s, r, text in script:
        await deliver(c[s], c[r], text)
    await archived(node, len(script))
    found = await search(node, q="export")
    assert found["total"] == 4

    # JSONL: a tar whose records.jsonl holds exactly what the search finds,
    # with chain.jsonl and the manifest (test_record.py verifies them).
    status, headers, raw = await call(node, "GET", "/api/v1/archive/export",
                                      params={"format": "jsonl", "q": "export"})
    assert status == 200, raw[:300]
    assert headers.get("content-type", "").startswith("application/x-tar"), headers
    assert "attachment" in headers.get("content-disposition", ""), headers
    assert len(headers["x-chorus-manifest-sha256"]) == 64, headers
    files = export_members(raw)
    assert list(files) == ["records.jsonl", "chain.jsonl", "manifest.json"], list(files)
    assert files["records.jsonl"].decode().endswith("\n")
    lines = export_records(raw)
    assert lines == found["records"]
    for r in lines:
        check_record(r)
    manifest = json.loads(files["manifest.json"])
    assert manifest["records"] == 4 and manifest["request"]["by"] == "officer", manifest
    assert hashlib.sha256(files["manifest.json"]).hexdigest() == headers["x-chorus-manifest-sha256"]
    status, _, raw = await call(node, "GET", "/api/v1/archive/export",
                                params={"format": "jsonl", "participants": f"{a},{b}"})
    assert status == 200
    assert bodies(export_records(raw)) == [
        "export apple one", "export apple two ✓", "export cherry four"]

    # EML: a tar with one RFC 5322 message per conversation and UTC day.
    status, headers, raw = await call(node, "GET", "/api/v1/archive/export",
                                      params={"format": "eml", "q": "export"})
    assert status == 200, raw[:300]
    assert headers.get("content-type", "").startswith("application/x-tar"), headers
    groups: dict[tuple, list[dict]] = {}
    for r in found["records"]:
        groups.setdefault((_conv_key(r), r["time"][:10]), []).append(r)
    files = export_members(raw)
    conversations = json.loads(files["manifest.json"])["conversations"]
    emls = {n: b for n, b in files.items() if n.startswith("eml/")}
    assert len(emls) == len(groups) == len(conversations), list(files)
    seen = set()
    for name, data in emls.items():
        assert name.endswith(".eml"), name
        mail = email.parser.BytesParser(policy=email.policy.default).parsebytes(data)
        for h in ("From", "To", "Date", "Subject", "Message-ID"):
            assert mail[h], f"{name}: no {h} header"
        assert not mail.defects, f"{name}: {mail.defects}"
        to = {addr.addr_spec for addr in mail["To"].addresses}
        frm = [addr.addr_spec for addr in mail["From"].addresses]
        day = name.split("/")[1]
        key = (tuple(sorted(to)), day)
        assert key in groups, f"{name}: unexpected conversation {key}"
        assert conversations[name] == [sorted(to), day], conversations[name]
        seen.add(key)
        recs = groups[key]
        assert frm == [bare(recs[0]["from"])], (name, frm)
        date = email.utils.parsedate_to_datetime(mail["Date"])
        assert date.tzinfo is not None
        assert int(date.timestamp()) == recs[0]["stamp_ms"] // 1000, (mail["Date"], recs[0])
        assert date.strftime("%Y-%m-%d") == day
        assert day in mail["Subject"] and all(p in mail["Subject"] for p in to)
        assert mail.get_content_type() == "text/plain"
        assert mail["Content-Transfer-Encoding"].lower() == "base64"
        body = mail.get_content()
        positions = [body.find(r["body"]) for r in recs]
        assert all(p >= 0 for p in positions), f"{name}: {body!r}"
        assert positions == sorted(positions), f"{name}: transcript out of order"
        for r in recs:
            assert r["id"] in body
        others = [r["body"] for g, rs in groups.items() if g != key for r in rs]
        assert not any(o in body for o in others), f"{name} mixes conversations"
        assert "unrelated kiwi" not in body
        assert int(mail["X-Chorus-Records"]) == len(recs)
    assert seen == set(groups)

    # Export of a hold: everything the hold covers.
    await api(node, "POST", "/api/v1/archive/holds",
              body={"id": "h-carol", "reason": "carol's case", "users": [k]}, expect=201)
    status, headers, raw = await call(node, "GET", "/api/v1/archive/export",
                                      params={"format": "jsonl", "hold": "h-carol"})
    assert status == 200, raw[:300]
    held = export_records(raw)
    assert bodies(held) == ["export banana three", "unrelated kiwi"]
    status, headers, raw = await call(node, "GET", "/api/v1/archive/export",
                                      params={"format": "eml", "hold": "h-carol"})
    assert status == 200, raw[:300]
    convs = json.loads(export_members(raw)["manifest.json"])["conversations"]
    assert len(convs) == len({(_conv_key(r), r["time"][:10]) for r in held}), convs
    assert all(k in parties for parties, _ in convs.values()), convs

    await api_error(node, "GET", "/api/v1/archive/export", OFFICER, 404,
                    {"format": "jsonl", "hold": "no-such-hold"})
    await api_error(node, "GET", "/api/v1/archive/export", OFFICER, 400, {"format": "pdf"})
    # Actiance XML, as archiving vendors import it: well-formed, every message.
    import xml.etree.ElementTree as ET
    status, _, raw = await call(node, "GET", "/api/v1/archive/export",
                                params={"format": "actiance", "q": "export"})
    assert status == 200, raw[:300]
    dump = ET.fromstring(export_members(raw)["actiance.xml"])
    assert dump.tag == "FileDump"
    msgs = dump.findall("./Conversation/Message")
    assert sorted(m.findtext("Content") for m in msgs) == sorted(bodies(found["records"]))
    assert {m.findtext("MessageID") for m in msgs} == {r["id"] for r in found["records"]}
    await api_error(node, "GET", "/api/v1/archive/export", OFFICER, 400,
                    {"format": "jsonl", "q": "(export"})


# --------------------------------------------------------------------------
# 7. the audit trail
# --------------------------------------------------------------------------


@API
async def test_audit_trail_records_officer_actions_in_order(node):
    c = await users(node, "alice", "bob")
    await deliver(c["alice"], c["bob"], "audited words")
    await archived(node, 1)
    before = (await api(node, "GET", "/api/v1/archive/audit"))["entries"]
    assert before == []
    # (That read is itself in the trail, from here on.)

    await search(node, q="audited")
    status, _, _ = await call(node, "GET", "/api/v1/archive/export",
                              params={"format": "jsonl", "q": "audited"})
    assert status == 200
    await api(node, "GET", "/api/v1/archive/conversation",
              params={"user": node.jid("alice"), "with": node.jid("bob")})
    await api(node, "POST", "/api/v1/archive/holds",
              body={"id": "audit-hold", "reason": "audit test", "users": [node.jid("bob")]},
              expect=201)
    await api(node, "POST", "/api/v1/archive/holds/audit-hold/release")
    await set_policy(node, {"default_days": 365})
    await api(node, "POST", "/api/v1/archive/retention/run", ROOT)
    # Refused calls and the counts-only digest leave no trace; every other
    # read does.
    await api_error(node, "GET", "/api/v1/archive/search", "bad-token", 401)
    await api_error(node, "GET", "/api/v1/archive/search", ROOT, 403)
    await api(node, "GET", "/api/v1/archive/holds")
    await api(node, "GET", "/api/v1/archive/digest")
    await api(node, "GET", "/api/v1/archive/retention")

    entries = (await api(node, "GET", "/api/v1/archive/audit"))["entries"][1:]
    got = [(e["action"], e["actor"], e["role"]) for e in entries]
    assert got == [("search", "officer", "compliance"), ("export", "officer", "compliance"),
                   ("conversation", "officer", "compliance"),
                   ("hold.create", "officer", "compliance"),
                   ("hold.release", "officer", "compliance"),
                   ("retention.propose", "root", "admin"), ("retention.approve", "root2", "admin"),
                   ("retention.run", "root", "admin"), ("hold.list", "officer", "compliance"),
                   ("retention.view", "officer", "compliance")], got
    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    times = [datetime.fromisoformat(e["time"].replace("Z", "+00:00")) for e in entries]
    assert times == sorted(times)
    assert all(e["node"] == entries[0]["node"] and e["node"] for e in entries)
    assert entries[0]["detail"]["words"] == "audited", entries[0]
    assert entries[0]["detail"]["results"] == 1 and entries[2]["detail"]["results"] == 1
    assert entries[1]["detail"]["format"] == "jsonl" and entries[1]["detail"]["results"] == 1
    assert len(entries[1]["detail"]["manifest_sha256"]) == 64
    assert all(e["addr"].startswith("127.0.0.1:") for e in entries), entries
    assert entries[3]["detail"]["id"] == "audit-hold"
    assert entries[4]["detail"] == {"id": "audit-hold"}
    # from/limit page through the trail.
    page = (await api(node, "GET", "/api/v1/archive/audit",
                      params={"from": seqs[2], "limit": 2}))["entries"]
    assert [e["seq"] for e in page] == seqs[2:4]


# --------------------------------------------------------------------------
# 8. the CLI
# --------------------------------------------------------------------------


async def cli(node, token: str, *args: str):
    return await asyncio.to_thread(node.cli, "archive", "--token", token, *args)


async def cli_json(node, token: str, *args: str):
    cp = await cli(node, token, *args)
    assert cp.returncode == 0, (f"chorus archive {' '.join(args)} -> {cp.returncode}\n"
                                f"stdout: {cp.stdout}\nstderr: {cp.stderr}")
    return json.loads(cp.stdout)


@API
async def test_cli_search_holds_export_and_errors(node, tmp_path):
    c = await users(node, "alice", "bob", "carol")
    script = [("alice", "bob", "cli walrus one"), ("bob", "carol", "cli walrus two"),
              ("carol", "alice", "cli narwhal three")]
    for s, r, text in script:
        await deliver(c[s], c[r], text)
    await archived(node, 3)

    out = await cli_json(node, OFFICER, "search", "-q", "walrus")
    assert out == await search(node, q="walrus")
    assert out["total"] == 2 and bodies(out["records"]) == ["cli walrus one", "cli walrus two"]
    out = await cli_json(node, OFFICER, "search", "--participants",
                         f"{node.jid('alice')},{node.jid('carol')}")
    assert bodies(out["records"]) == ["cli narwhal three"]
    out = await cli_json(node, OFFICER, "search", "--limit", "1", "--offset", "1")
    assert out["total"] == 3 and bodies(out["records"]) == ["cli walrus two"]
    out = await cli_json(node, OFFICER, "conversation", "--user", node.jid("alice"),
                         "--with", node.jid("bob"))
    assert bodies(out["records"]) == ["cli walrus one"] and out["complete"] is True

    created = await cli_json(node, OFFICER, "hold", "create", "--reason", "cli case",
                             "--user", node.jid("bob"), "--id", "cli-hold")
    assert created["hold"]["id"] == "cli-hold" and created["hold"]["users"] == [node.jid("bob")]
    listed = await cli_json(node, OFFICER, "hold", "list")
    assert [(h["id"], h["reason"], h["created_by"], h["released"]) for h in listed["holds"]] == [
        ("cli-hold", "cli case", "officer", None)]
    assert listed == await api(node, "GET", "/api/v1/archive/holds")

    out_file = tmp_path / "walrus.tar"
    cp = await cli(node, OFFICER, "export", "-q", "walrus", "--format", "jsonl",
                   "--out", str(out_file))
    assert cp.returncode == 0, cp.stderr
    assert bodies(export_records(out_file.read_bytes())) == ["cli walrus one", "cli walrus two"]
    tar_file = tmp_path / "hold.tar"
    cp = await cli(node, OFFICER, "export", "--hold", "cli-hold", "--format", "eml",
                   "--out", str(tar_file))
    assert cp.returncode == 0, cp.stderr
    with tarfile.open(tar_file) as tar:
        assert len([n for n in tar.getnames() if n.startswith("eml/")]) >= 2, tar.getnames()

    dated = await cli_json(node, OFFICER, "hold", "create", "--reason", "2020 only",
                           "--user", node.jid("carol"), "--start", "2020-01-01T00:00:00Z",
                           "--end", "2020-12-31T23:59:59.999Z")
    assert (dated["hold"]["start_ms"], dated["hold"]["end_ms"]) == (
        1_577_836_800_000, 1_609_459_199_999), dated
    assert dated["hold"]["id"], dated
    released = await cli_json(node, OFFICER, "hold", "release", "cli-hold")
    assert released == {"released": "cli-hold"}

    # Admin: retention policy and a purge; digest for anyone.
    want = {"default_days": 30, "users": {node.jid("carol"): 60}, "rooms": {}}
    proposed = await cli_json(node, ROOT, "retention", "--set", "--default-days", "30",
                              "--user", f"{node.jid('carol')}=60")
    assert proposed["pending"]["policy"] == want, proposed
    cp = await cli(node, ROOT, "retention", "--approve", proposed["pending"]["id"])
    assert cp.returncode != 0 and "409" in cp.stderr, (cp.returncode, cp.stdout, cp.stderr)
    pol = await cli_json(node, ROOT2, "retention", "--approve", proposed["pending"]["id"])
    assert pol["retention"] == want
    assert (await cli_json(node, OFFICER, "retention"))["retention"] == want
    assert await cli_json(node, ROOT, "purge") == {"purged": 0}
    d = await cli_json(node, OFFICER, "digest")
    assert d["records"] == 3 and d == await api(node, "GET", "/api/v1/archive/digest")
    m = await cli_json(node, ROOT, "members")
    assert m["leader"] in m["voters"]
    audit = await cli_json(node, OFFICER, "audit")
    assert "hold.create" in [e["action"] for e in audit["entries"]]

    # Errors: non-zero exit with the status in the message.
    cp = await cli(node, "wrong-token", "search", "-q", "walrus")
    assert cp.returncode != 0 and "401" in cp.stderr, (cp.returncode, cp.stdout, cp.stderr)
    cp = await cli(node, ROOT, "search", "-q", "walrus")
    assert cp.returncode != 0 and "403" in cp.stderr, (cp.returncode, cp.stdout, cp.stderr)
    cp = await cli(node, OFFICER, "hold", "release", "no-such-hold")
    assert cp.returncode != 0 and "404" in cp.stderr, (cp.returncode, cp.stdout, cp.stderr)
    cp = await cli(node, OFFICER, "search", "-q", "(walrus")
    assert cp.returncode != 0 and "400" in cp.stderr, (cp.returncode, cp.stdout, cp.stderr)


@API
async def test_waiting_retention_changes_are_bounded(node):
    """An admin cannot pile up proposals for the second admin: past 16
    waiting shortenings the next is refused (409) until one is approved or
    cancelled; the refusal changes nothing."""
    waiting = []
    for days in range(100, 116):
        got = await api(node, "PUT", "/api/v1/archive/retention", ROOT,
                        body={"default_days": days}, expect=202)
        waiting.append(got["pending"]["id"])
    err = await api_error(node, "PUT", "/api/v1/archive/retention", ROOT, 409,
                          body={"default_days": 99})
    assert "await a second admin" in err, err
    shown = await api(node, "GET", "/api/v1/archive/retention", ROOT)
    assert sorted(p["id"] for p in shown["pending"]) == sorted(waiting)
    await api(node, "POST", f"/api/v1/archive/retention/changes/{waiting[0]}/cancel", ROOT)
    await api(node, "PUT", "/api/v1/archive/retention", ROOT,
              body={"default_days": 99}, expect=202)
