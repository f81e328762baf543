"""One-time links from `chorus user import --links`, in a real browser: a
person given a link (instead of a password) sets their own password on the
console's welcome page and logs in with it over SCRAM; before that no
password opens the account; the link works once; a mistyped token, a
password typed differently twice or too short, and a form posted from
another origin are refused; a password an admin sets spends the link; an
existing account gets a new link with `user link`; and the node keeps only
the token's digest."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from browser import browser_for  # noqa: F401  (fixture)
from chorus_node import Node
from xmpp import insecure_ssl_context, try_login

SLOW = pytest.mark.timeout(120)


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path / "node")
    n.start()
    yield n
    assert n.stop() == 0, n.log_tail()


def post(node, path: str, data: bytes, origin: str) -> int:
    req = urllib.request.Request(node.http_base + path, data=data, method="POST",
                                 headers={"Origin": origin,
                                          "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, context=insecure_ssl_context(), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@SLOW
async def test_a_person_sets_their_password_through_a_one_time_link(node, browser_for, tmp_path):
    csv = tmp_path / "people.csv"
    csv.write_text("user,name,password\nnadia,Nadia Newhire,\nolaf,Olaf Old,olaf-secret-pw\n"
                   "pia,Pia Reset,\n")
    out = node.cli("user", "import", str(csv), "--links", "--link-base", node.http_base)
    assert out.returncode == 0, out.stderr
    links = re.findall(r"nadia: created, one-time link (\S+)", out.stdout)
    assert len(links) == 1 and "olaf: created\n" in out.stdout, out.stdout
    path = links[0][len(node.http_base):]
    token = path.rsplit("/", 1)[1]
    assert re.fullmatch(r"/console/welcome/nadia/[0-9a-f]{64}", path), path
    assert await try_login(node, "nadia", "", mech="PLAIN") is not None
    assert await try_login(node, "nadia", "anything-at-all") == "not-authorized"

    # A form posted from another site is refused before anything else.
    assert post(node, path, b"password=evil-password-1&confirm=evil-password-1",
                "https://evil.example") == 403

    b = browser_for(node)
    b.go(path[:-1] + ("0" if path[-1] != "0" else "1"))
    b.wait(".flash.error", "not valid")
    b.go(path)
    b.wait("form#setup")
    assert "nadia@" in b.text() and "works once" in b.text()
    b.fill("form#setup", password="long-enough-1", confirm="long-enough-2")
    b.submit("form#setup")
    b.wait(".flash.error", "differ")
    b.fill("form#setup", password="short", confirm="short")
    b.submit("form#setup")
    b.wait(".flash.error", "at least 10")
    # A password the key derivation would refuse (over 1,024 bytes) is
    # refused before the link is spent: the link still works after it.
    b.fill("form#setup", password="x" * 1100, confirm="x" * 1100)
    b.submit("form#setup")
    b.wait(".flash.error", "at most 1024 bytes")
    b.fill("form#setup", password="nadias-own-password", confirm="nadias-own-password")
    b.submit("form#setup")
    b.wait("h1", "Your password is set")

    assert await try_login(node, "nadia", "nadias-own-password", mech="SCRAM-SHA-256") is None
    assert await try_login(node, "olaf", "olaf-secret-pw") is None
    b.go(path)
    b.wait(".flash.error", "used already")

    # A password set another way (here an admin's reset) spends the link.
    pia = re.findall(r"pia: created, one-time link (\S+)", out.stdout)[0][len(node.http_base):]
    reset = node.cli("user", "passwd", "pia", "--password", "set-by-the-admin")
    assert reset.returncode == 0, reset.stderr
    b.go(pia)
    b.wait(".flash.error", "not valid")
    assert await try_login(node, "pia", "set-by-the-admin") is None

    # An existing account can get a new link (`user link`); the password it
    # had keeps working until the link is used.
    again = node.cli("user", "link", "olaf", "--link-base", node.http_base)
    assert again.returncode == 0, again.stderr
    olaf = re.findall(r"olaf: one-time link (\S+)", again.stdout)[0][len(node.http_base):]
    assert await try_login(node, "olaf", "olaf-secret-pw") is None
    b.go(olaf)
    b.fill("form#setup", password="olafs-new-password", confirm="olafs-new-password")
    b.submit("form#setup")
    b.wait("h1", "Your password is set")
    assert await try_login(node, "olaf", "olafs-new-password") is None
    assert await try_login(node, "olaf", "olaf-secret-pw") == "not-authorized"
    assert node.cli("user", "link", "nobody", "--link-base", node.http_base).returncode != 0

    # Links are bounded in time; the CLI refuses what it cannot honour.
    bad = node.cli("user", "import", str(csv), "--links", "--link-days", "0")
    assert bad.returncode != 0 and "link-days" in bad.stderr

    # Only the token's digest was ever written: search every file the node
    # wrote, once it has stopped (a running node's store and index create
    # and delete files as they go).
    assert node.stop() == 0, node.log_tail()
    stored = [f for f in node.data_dir.rglob("*") if f.is_file() and token.encode() in f.read_bytes()]
    assert stored == [], f"the token itself is stored in {stored}"
