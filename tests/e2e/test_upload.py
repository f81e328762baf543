"""XEP-0363 HTTP File Upload with real node processes: slots from slixmpp's
own plugin, bytes over HTTPS, a file shared in one office downloaded in
another while the first is down, and the limits and headers that keep
uploads bounded and downloads harmless."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import urllib.error
import urllib.request
from email.message import Message
from urllib.parse import urlsplit

import pytest
from slixmpp.exceptions import IqError

from test_cluster import CONVERGE_S
from test_compliance import OFFICER, TOKENS, archived, search
from test_compliance_tools import export_members
from test_record import verify_export
from xmpp import connect, insecure_ssl_context

UPLOAD_PLUGINS = ("xep_0363",)
NS_UPLOAD = "urn:xmpp:http:upload:0"


def http(method: str, url: str, body: bytes | None = None,
         headers: dict | None = None, timeout: float = 30) -> tuple[int, Message, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=insecure_ssl_context()) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def at(node, url: str) -> str:
    """The same path at another node's HTTPS listener (as a load balancer
    in front of every site would send it)."""
    return node.http_base + urlsplit(url).path


async def slot(client, filename: str, size: int, ctype: str = "application/pdf"):
    service = f"upload.{client.node.domain}"
    iq = await client.plugin["xep_0363"].request_slot(service, filename, size, ctype)
    s = iq["http_upload_slot"]
    return s["put"]["url"], s["get"]["url"]


def put(node, url: str, data: bytes, ctype: str = "application/pdf") -> int:
    return http("PUT", at(node, url), data, {"Content-Type": ctype})[0]


async def test_a_file_shared_in_london_downloads_in_tokyo_with_london_down(cluster3):
    cl = cluster3
    alice = await connect(cl["a"], "alice", resource="a", plugins=UPLOAD_PLUGINS)
    info = await alice.plugin["xep_0363"].find_upload_service()
    assert info is not None, "the server lists its upload service"
    data = os.urandom(700_000) + b"quarterly figures"
    put_url, get_url = await slot(alice, "Q3 figures.pdf", len(data))
    assert put_url == get_url and "/upload/alice/" in put_url
    assert await asyncio.to_thread(put, cl["a"], put_url, data) == 201
    # Every site copies the bytes; wait until Tokyo holds them (it may be
    # asked before: then it fetches them from a peer itself).
    deadline = time.monotonic() + CONVERGE_S
    while True:
        code, _, got = await asyncio.to_thread(http, "GET", at(cl["c"], get_url))
        if code == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)  # replication has no event to wait for
    assert code == 200 and got == data
    cl.kill9("a")
    code, headers, got = await asyncio.to_thread(http, "GET", at(cl["c"], get_url))
    assert code == 200 and hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    # New York never served it before: it fetches it from Tokyo now.
    code, _, got = await asyncio.to_thread(http, "GET", at(cl["b"], get_url))
    assert code == 200 and got == data
    cl.start("a")
    cl.wait_ready()


@pytest.mark.chorus(config={"upload": {"file_bytes_max": 1000, "quota_bytes_per_user": 2500}})
async def test_uploads_are_bounded_and_downloads_cannot_run_in_a_browser(node):
    alice = await connect(node, "alice", resource="pc", plugins=UPLOAD_PLUGINS)
    with pytest.raises(IqError) as e:
        await slot(alice, "big.bin", 1001)
    assert e.value.iq["error"]["condition"] == "not-acceptable"
    assert e.value.iq.xml.find(f".//{{{NS_UPLOAD}}}max-file-size").text == "1000"
    for bad in ("../etc/passwd", ""):
        with pytest.raises(IqError) as e:
            await slot(alice, bad, 10)
        assert e.value.iq["error"]["condition"] == "bad-request"
    page = b"<html><script>alert(1)</script></html>"
    url, _ = await slot(alice, "page.html", len(page), "text/html")
    # The announced size and type are enforced.
    assert put(node, url, page + b"x", "text/html") == 413
    assert put(node, url, page, "image/png") == 400
    assert put(node, url, page, "text/html") == 201
    assert put(node, url, page, "text/html") == 409, "a slot takes one upload"
    code, headers, got = http("GET", at(node, url))
    assert code == 200 and got == page
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"].startswith("attachment")
    assert "sandbox" in headers["Content-Security-Policy"]
    # However the type is spelled, a picture that can run script is not
    # shown inline.
    svg = b"<svg xmlns='http://www.w3.org/2000/svg'><script>1</script></svg>"
    url2, _ = await slot(alice, "logo.svg", len(svg), "image/SVG+xml")
    assert put(node, url2, svg, "image/SVG+xml") == 201
    code, headers, _ = http("GET", at(node, url2))
    assert code == 200 and headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"].startswith("attachment")
    # A guessed token finds nothing.
    code, _, _ = http("GET", at(node, url).replace("/alice/", "/bob/"))
    assert code == 404
    # The quota: 2500 bytes in all.
    await slot(alice, "a.bin", 1000)
    await slot(alice, "b.bin", 1000)
    with pytest.raises(IqError) as e:
        await slot(alice, "c.bin", 1000)
    assert e.value.iq["error"]["condition"] == "resource-constraint"


@pytest.mark.chorus(config=TOKENS)
async def test_a_shared_file_is_part_of_the_record_and_of_exports(node, tmp_path):
    """The message that shares a file is archived with the file's SHA-256,
    and an export carries the bytes, checked offline like the records."""
    alice = await connect(node, "alice", resource="pc", presence=True, plugins=UPLOAD_PLUGINS)
    bob = await connect(node, "bob", resource="pc", presence=True)
    data = b"%PDF-1.7 contract draft " + os.urandom(5000)
    url, get_url = await slot(alice, "contract.pdf", len(data))
    assert await asyncio.to_thread(put, node, url, data) == 201
    # A client cannot plant its own file reference in the record.
    forged = f"<file xmlns='urn:xmpp:chorus:file:0' sha256='{'0' * 64}' size='1'/>"
    alice.send_message(bob.jid, f"contract attached {get_url}", extra=[
        f"<x xmlns='jabber:x:oob'><url>{get_url}</url></x>", forged])
    await bob.next_message(15, frm=alice.bare)
    await archived(node, 1)
    found = await search(node, q="contract")
    [rec] = found["records"]
    sha = hashlib.sha256(data).hexdigest()
    assert rec["files"] == [sha], rec
    assert "0" * 64 not in rec["stanza"]
    out = tmp_path / "export.tar"
    cp = await asyncio.to_thread(node.cli, "archive", "--token", OFFICER, "export",
                                 "-q", "contract", "--format", "jsonl", "--out", str(out))
    assert cp.returncode == 0, cp.stderr
    members = export_members(out.read_bytes())
    assert members[f"files/{sha}"] == data
    code, report, err = await asyncio.to_thread(verify_export, node, out)
    assert code == 0 and report["ok"] is True, (report, err)
