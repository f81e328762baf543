"""The compliance and operations console (/console/) in a real headless
Chromium against real nodes: an officer signs in, searches, opens the
conversation around a hit, places a hold, exports it and downloads the
package (which `chorus archive verify-export` accepts), releases the hold;
an admin manages accounts and rooms and sees a cut site on the health
page; viewers without the role are refused; cookies carry Secure,
HttpOnly and SameSite, and forms without the session's CSRF token or from
another origin are refused. Every view lands in the audit trail."""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import urllib.parse

import pytest

from browser import browser_for  # noqa: F401  (fixture)
from test_compliance import OFFICER, ROOT, TOKENS, api, archived, call, deliver
from test_muc import NS_MUC_USER, instant_room, muc_client, muc_user_x, room_jid
from test_record import verify_export
from xmpp import connect, try_login

USERS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret",
         "dave": "dave-secret"}
CONSOLE = {**TOKENS, "console": {"compliance": ["carol"], "admin": ["dave"]}}
NODE = pytest.mark.chorus(config=CONSOLE, users=USERS)
SLOW = pytest.mark.timeout(240)


async def audit_actions(node) -> list[tuple[str, str]]:
    entries = (await api(node, "GET", "/api/v1/archive/audit", OFFICER,
                         {"limit": "1000"}))["entries"]
    return [(e["actor"], e["action"]) for e in entries]


async def eventually_audited(node, actor: str, action: str, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        acts = await audit_actions(node)
        if (actor, action) in acts:
            return
        assert loop.time() < deadline, f"no {action} by {actor} in {acts[-20:]}"
        await asyncio.sleep(0.2)


@SLOW
@NODE
async def test_officer_signs_in_searches_and_reads_the_conversation(node, browser_for):
    alice = await connect(node, "alice")
    bob = await connect(node, "bob")
    script = [(alice, bob, "morning, shall we talk?"),
              (bob, alice, "sure, about what"),
              (alice, bob, "the Merger with Initech closes Friday"),
              (bob, alice, "keep the merger quiet please"),
              (alice, bob, "understood, lunch at noon")]
    for s, r, text in script:
        await deliver(s, r, text)
    await archived(node, len(script))

    b = browser_for(node)
    b.go("/console/search")
    b.wait("form[action='/console/login']")
    assert b.path.startswith("/console/login?next=")
    b.shot("login")
    b.sign_in("carol", USERS["carol"])
    assert b.path == "/console/search", "back where the officer was going"

    cookie = b.session_cookie()
    assert cookie, b.d.get_cookies()
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    assert cookie["path"] == "/", cookie

    b.fill("form[role=search]", q="merger")
    # The one site of this node (the site filter is the index's; a
    # three-site search by site is in chorus-archive's tests).
    from selenium.webdriver.support.select import Select
    Select(b.d.find_element("css selector", "select[name=site]")).select_by_visible_text("default")
    b.submit("form[role=search]")
    rows = b.wait("#results tbody")
    marks = [m.text.lower() for m in rows.find_elements("css selector", "mark")]
    assert marks == ["merger", "merger"], marks
    assert "2 records match" in b.text()
    # Times are shown in the viewer's zone (the browser runs in Tokyo), UTC on hover.
    t = rows.find_element("css selector", "time")
    assert t.get_attribute("title").endswith(" UTC") and "Asia/Tokyo" in t.text, t.text
    b.shot("search")
    b.d.set_window_size(820, 1180)  # a tablet, upright
    b.shot("search-tablet")
    b.d.set_window_size(1280, 900)

    rows.find_elements("css selector", "a")[0].click()
    thread = b.wait(".thread")
    msgs = [m.text for m in thread.find_elements("css selector", ".msg")]
    assert len(msgs) == len(script), msgs
    hit = thread.find_element("css selector", ".msg.hit").text
    assert "the Merger with Initech" in hit, hit
    assert "morning, shall we talk?" in msgs[0] and "lunch at noon" in msgs[-1], msgs
    b.shot("conversation")

    carol = f"carol@{node.domain}"
    acts = await audit_actions(node)
    assert (carol, "search") in acts and (carol, "conversation") in acts, acts[-10:]
    await eventually_audited(node, carol, "console.login")


@SLOW
@NODE
async def test_officer_places_exports_and_releases_a_hold(node, browser_for, tmp_path):
    alice = await connect(node, "alice")
    bob = await connect(node, "bob")
    for text in ("draft contract attached", "signed copy tomorrow"):
        await deliver(alice, bob, text)
    await archived(node, 2)

    b = browser_for(node)
    b.sign_in("carol", USERS["carol"])
    b.go("/console/holds")
    b.wait(".empty", "No holds yet")
    b.fill("form[action='/console/holds']", id="case-114", reason="Initech litigation",
           users="alice")
    b.submit("form[action='/console/holds']")
    row = b.wait("#holds tbody tr", "case-114")
    assert "active" in row.text and f"alice@{node.domain}" in row.text, row.text
    b.shot("holds")

    row.find_element("css selector", "form[action='/console/exports'] button").click()
    card = b.wait(".export", "ready")
    assert "2 records" in card.text and "verified" in card.text, card.text
    manifest_sha = card.find_element("css selector", "p.muted code").text
    b.shot("exports")
    card.find_element("css selector", "a.download").click()
    package = b.downloaded(".tar")
    code, report, err = verify_export(node, package)
    assert code == 0 and report["ok"], (report, err)
    assert report["records"] == 2 and report["manifest_sha256"] == manifest_sha, report
    # Another officer (the officer token) cannot download carol's export.
    href = card.find_element("css selector", "a.download").get_attribute("href")
    other = browser_for(node, "other")
    other.sign_in(token=OFFICER)
    other.d.get(href)
    other.wait("h1", "Not Found")
    assert other.downloads.exists() and list(other.downloads.iterdir()) == []

    b.go("/console/holds")
    form = b.wait("#holds form[action*='/release']")
    form.find_element("css selector", "input[name=reason]").send_keys("matter settled")
    form.find_element("css selector", "button").click()
    b.accept_confirm()
    b.wait(".flash.ok", "released")
    assert "released" in b.wait("#holds tbody tr", "case-114").text

    holds = (await api(node, "GET", "/api/v1/archive/holds"))["holds"]
    assert [h["released"] is not None for h in holds] == [True], holds
    entries = (await api(node, "GET", "/api/v1/archive/audit", OFFICER,
                         {"limit": "1000"}))["entries"]
    carol = f"carol@{node.domain}"
    mine = {e["action"]: e for e in entries if e["actor"] == carol}
    assert {"hold.create", "export", "hold.release", "hold.list"} <= set(mine), mine.keys()
    assert mine["hold.release"]["detail"]["reason"] == "matter settled", mine["hold.release"]
    assert mine["export"]["detail"]["manifest_sha256"] == manifest_sha
    assert mine["export"]["addr"].endswith("(console)"), mine["export"]
    assert "export.download" in mine, "committed before the bytes were sent"
    await eventually_audited(node, carol, "console.exports")


def _post(node, path: str, fields: dict, cookie: str | None = None,
          origin: str | None = None) -> tuple[int, str, str]:
    """A raw form POST (no browser): returns (status, Location, body)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(node.host, node.http_port, context=ctx, timeout=10)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie:
        headers["Cookie"] = cookie
    if origin:
        headers["Origin"] = origin
    conn.request("POST", path, urllib.parse.urlencode(fields), headers)
    r = conn.getresponse()
    out = (r.status, r.getheader("Location") or "", r.read().decode(errors="replace"))
    conn.close()
    return out


@SLOW
@NODE
async def test_roles_csrf_and_origin_are_enforced(node, browser_for):
    b = browser_for(node)
    # An account without a console role, and a wrong password, are refused alike.
    for user, pw in (("alice", USERS["alice"]), ("carol", "wrong")):
        b.sign_in(user, pw, expect_ok=False)
        b.wait(".flash.error", "Wrong account, password or token")
        assert b.session_cookie() is None
    # The admin may not read the archive through the console.
    b.sign_in("dave", USERS["dave"])
    b.go("/console/search?q=x")
    b.wait("h1", "Forbidden")
    assert "needs the compliance role" in b.text()
    cookie = b.session_cookie()
    session = f"{cookie['name']}={cookie['value']}"
    b.go("/console/users")
    csrf = b.d.find_element("css selector", "input[name=csrf]").get_attribute("value")

    make = {"user": "mallory", "password": "mallory-secret"}
    status, _, body = _post(node, "/console/users", {**make, "csrf": "forged"}, session)
    assert status == 403 and "security token" in body, (status, body[:300])
    status, _, body = _post(node, "/console/users", {**make, "csrf": csrf}, session,
                            origin="https://evil.example")
    assert status == 403, (status, body[:300])
    status, location, _ = _post(node, "/console/users", {**make, "csrf": csrf})
    assert status in (303, 307) and location.startswith("/console/login"), (status, location)
    assert await try_login(node, "mallory", "mallory-secret") is not None
    # The sign-in form itself needs its double-submit cookie.
    status, _, body = _post(node, "/console/login", {"user": "dave", "password": USERS["dave"],
                                                     "nonce": "guess"})
    assert status == 403 and "expired" in body, (status, body[:300])
    # An admin may not set an officer's password (nor re-enable one): it
    # would be a way into the archive, or past dual control.
    status, _, body = _post(node, "/console/users/carol",
                            {"action": "password", "password": "taken-over-1", "csrf": csrf},
                            session, origin=node.http_base)
    assert status == 403 and "holds a console role" in body, (status, body[:300])
    assert await try_login(node, "carol", USERS["carol"]) is None
    # An officer disabled by an admin loses the console at the next page.
    officer = browser_for(node, "officer")
    officer.sign_in("carol", USERS["carol"])
    status, location, _ = _post(node, "/console/users/carol",
                                {"action": "disable", "csrf": csrf}, session, origin=node.http_base)
    assert status == 303, (status, location)
    officer.go("/console/holds")
    officer.wait("form[action='/console/login']")
    # With the token and the same origin, it works.
    status, location, _ = _post(node, "/console/users", {**make, "csrf": csrf}, session,
                                origin=node.http_base)
    assert status == 303 and location == "/console/users", (status, location)
    assert await try_login(node, "mallory", "mallory-secret") is None

    # A token signs in with its own role: the officer token reads, the
    # admin pages refuse it.
    b2 = browser_for(node, "token")
    b2.sign_in(token=OFFICER)
    b2.go("/console/health")
    b2.wait("h1", "Forbidden")
    # Signing out ends the session on the server, not just in the browser.
    b.d.find_element("css selector", "form[action='/console/logout'] button").click()
    b.wait("form[action='/console/login']")
    status, location, _ = _post(node, "/console/users", {**make, "csrf": csrf}, session,
                                origin=node.http_base)
    assert status == 303 and location.startswith("/console/login"), (status, location)


# (slixmpp tries each mechanism in turn, so one refused login counts as
# several failures: the throttle would refuse the right password next.)
@SLOW
@pytest.mark.chorus(config={**CONSOLE, "limits": {"auth_failures_per_account_max": 50}},
                    users=USERS)
async def test_admin_manages_accounts_and_rooms(node, browser_for):
    alice = await connect(node, "alice", presence=True)
    b = browser_for(node)
    b.sign_in("dave", USERS["dave"])
    assert b.path == "/console/health"
    b.go("/console/users?q=ali")
    row = b.wait("#users tr[data-user=alice]")
    assert "active" in row.text and "on this node" in row.text, row.text
    b.shot("users")

    row.find_element("css selector", "input[name=action][value=disable]").find_element(
        "xpath", "..").find_element("css selector", "button").click()
    b.accept_confirm()
    b.wait(".flash.ok", "alice is disabled")
    await alice.wait_disconnected(15)
    assert await try_login(node, "alice", USERS["alice"]) == "not-authorized"

    b.go("/console/users?q=alice")
    row = b.wait("#users tr[data-user=alice]")
    assert "disabled" in row.text
    row.find_element("css selector", "input[name=action][value=enable]").find_element(
        "xpath", "..").find_element("css selector", "button").click()
    b.accept_confirm()
    b.wait(".flash.ok", "can sign in again")
    row = b.wait("#users tr[data-user=alice]")
    form = row.find_element("css selector", "input[name=action][value=password]").find_element(
        "xpath", "..")
    form.find_element("css selector", "input[name=password]").send_keys("a-new-secret")
    form.find_element("css selector", "button").click()
    b.wait(".flash.ok", "Password of alice reset")
    # (A second failure in a row may be throttled instead: either refuses.)
    assert await try_login(node, "alice", USERS["alice"]) is not None
    assert await try_login(node, "alice", "a-new-secret") is None

    # A link cannot put words in the console's mouth.
    b.go("/console/rooms?done=Your+password+expired,+call+extension+6666")
    b.wait(".empty", "No rooms yet")
    assert b.d.find_elements("css selector", ".flash") == [] and "6666" not in b.text()
    bob = await muc_client(node, "bob")
    deals = room_jid(node, "deals")
    await instant_room(bob, deals, "bob")
    b.go("/console/rooms")
    row = b.wait("#rooms tr[data-room=deals]")
    assert f"bob@{node.domain}" in row.text and row.find_elements("css selector", "td")[2].text == "1"
    b.shot("rooms")
    form = row.find_element("css selector", "input[name=action][value=owners]").find_element("xpath", "..")
    owners = form.find_element("css selector", "input[name=owners]")
    owners.clear()
    owners.send_keys("carol")
    form.find_element("css selector", "button").click()
    b.wait(".flash.ok", "Owners of deals")
    row = b.wait("#rooms tr[data-room=deals]")
    assert f"carol@{node.domain}" in row.text and f"bob@{node.domain}" not in row.text, row.text
    form = row.find_element("css selector", "input[name=action][value=destroy]").find_element("xpath", "..")
    form.find_element("css selector", "input[name=reason]").send_keys("project over")
    form.find_element("css selector", "button").click()
    b.accept_confirm()
    b.wait(".flash.ok", "Room deals destroyed; 1 occupants told")
    gone = await bob.next_presence(10, frm=f"{deals}/bob", ptype="unavailable")
    destroy = muc_user_x(gone).find(f"{{{NS_MUC_USER}}}destroy")
    assert destroy is not None and destroy.findtext(f"{{{NS_MUC_USER}}}reason") == "project over"
    b.wait(".empty", "No rooms yet")
    b.go("/console/tokens")
    table = b.wait("#tokens")
    assert "officer" in table.text and "compliance" in table.text
    assert json.dumps(CONSOLE["api"]["tokens"][0]["sha256"]) not in b.d.page_source

    dave = f"dave@{node.domain}"
    for action in ("console.health", "console.users", "user.disable", "user.enable",
                   "user.password", "console.rooms", "room.owners", "room.destroy",
                   "console.tokens"):
        await eventually_audited(node, dave, action)


def element_text(b, css: str) -> str:
    found = b.d.find_elements("css selector", css)
    return found[0].text if found else ""


def banner_text(b) -> str:
    return element_text(b, ".banner")


def reload_until(b, what: str, check, timeout: float = 30.0) -> None:
    """Reloads the page until ``check()`` holds (the page is the only view
    the viewer has: there is no event to wait for)."""
    import time
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: never seen on {b.d.current_url}:\n{b.text()[:1500]}"
        time.sleep(0.3)
        b.d.refresh()


@SLOW
@pytest.mark.chorus_cluster(config=CONSOLE)
async def test_health_page_reports_a_cut_site_and_the_cut_site_says_so(cluster3, browser_for):
    cl = cluster3
    a = browser_for(cl["a"], "a")
    a.sign_in("dave", "dave-pw")
    a.go("/console/health")
    peers = a.wait("#peers")
    assert {r.get_attribute("data-site") for r in peers.find_elements("css selector", "tr.peer")} \
        == {"b", "c"}
    # (Links and the archive's election settle on their own after the
    # nodes report ready.)
    reload_until(a, "every link up and an archive leader",
                 lambda: "unreachable" not in a.wait("#peers").text and banner_text(a) == "")
    assert "Leader" in a.wait("#archive").text or "Follower" in a.wait("#archive").text
    assert a.wait("#leader").text in {"a1", "b1", "c1"}, "the leader is named by its node id"

    # An account disabled at site a loses its session at site b.
    alice = await connect(cl["b"], "alice", "alice-pw", presence=True)
    a.go("/console/users?q=alice")
    row = a.wait("#users tr[data-user=alice]")
    assert "on b1" in row.text, row.text
    row.find_element("css selector", "input[name=action][value=disable]").find_element(
        "xpath", "..").find_element("css selector", "button").click()
    a.accept_confirm()
    a.wait(".flash.ok", "1 on other nodes end within seconds")
    await alice.wait_disconnected(20)

    c = browser_for(cl["c"], "c")
    c.sign_in("dave", "dave-pw")
    cl.cut("c")

    def c_unreachable_from_a() -> bool:
        rows = a.d.find_elements("css selector", "tr.peer[data-site=c]")
        return bool(rows) and "unreachable" in rows[0].text
    a.go("/console/health")
    reload_until(a, "site c unreachable on a's health page", c_unreachable_from_a)
    assert "No link to site c" in a.wait(".banner").text
    assert a.wait("#unreachable").text == "1"
    # The node's own warning about it is among the last errors.
    reload_until(a, "the lease expiry among the last warnings",
                 lambda: "lease expired" in element_text(a, "#errors"))

    # The cut site's own console still opens, says it is cut off and that
    # the archive has no quorum from there.
    c.go("/console/health")
    reload_until(c, "the cut site's banner", lambda: "no quorum" in banner_text(c))
    banner = c.wait(".banner").text
    assert "This site is cut off" in banner and "No link to site a, b" in banner, banner
    c.shot("health-cut-site")
    # The charts fill from the node's own metrics, a point every 10 s.
    reload_until(a, "the charts drawn", lambda: len(a.d.find_elements("css selector", "svg.chart")) == 5)
    a.d.set_window_size(1280, 1500)  # the whole page, charts included
    a.shot("health")

    # The view at the cut site was queued for the audit trail and is
    # committed once the site is back.
    cl.heal("c")
    dave = "dave@" + cl["a"].domain
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    entries: list[dict] = []
    while True:
        # The healed site may call an election (its term went up while it
        # was cut off): for a moment there is no leader to audit the read.
        status, _, raw = await call(cl["a"], "GET", "/api/v1/archive/audit", OFFICER,
                                    {"limit": "1000"})
        assert status in (200, 503), (status, raw[:300])
        entries = json.loads(raw)["entries"] if status == 200 else entries
        if any(e["actor"] == dave and e["action"] == "console.health" and e["node"] == "c1"
               for e in entries):
            break
        assert loop.time() < deadline, [(e["actor"], e["action"], e["node"]) for e in entries]
        await asyncio.sleep(0.5)


@SLOW
@pytest.mark.chorus(config={**CONSOLE, "console": {"compliance": ["carol"], "admin": ["dave", "bob"]}},
                    users=USERS)
async def test_retention_shortening_needs_a_second_admin(node, browser_for):
    dave = browser_for(node, "dave")
    dave.sign_in("dave", USERS["dave"])
    dave.go("/console/retention")
    dave.wait("table.policy", "forever")
    dave.fill("form[action='/console/retention']", default_days="3650")
    dave.submit("form[action='/console/retention']")
    dave.wait(".flash.ok", "waits for a second admin")
    card = dave.wait(".pending")
    assert "3650 days" in card.text and f"dave@{node.domain}" in card.text, card.text
    dave.shot("retention")
    # The proposer cannot approve their own shortening.
    card.find_element("css selector", "input[value=approve]").find_element("xpath", "..").find_element(
        "css selector", "button").click()
    dave.accept_confirm()
    dave.wait("h1", "Conflict")

    # One credential is one identity, whether it calls the API or signs in
    # to the console: the root token's own proposal cannot be approved by
    # the root token in the console.
    pending = await api(node, "PUT", "/api/v1/archive/retention", ROOT,
                        body={"default_days": 3000, "users": {}, "rooms": {}}, expect=202)
    root = browser_for(node, "root")
    root.sign_in(token=ROOT)
    root.go("/console/retention")
    card = root.wait(f".pending[data-id='{pending['pending']['id']}']")
    card.find_element("css selector", "input[value=approve]").find_element("xpath", "..").find_element(
        "css selector", "button").click()
    root.accept_confirm()
    root.wait("h1", "Conflict")
    root.go("/console/retention")
    card = root.wait(f".pending[data-id='{pending['pending']['id']}']")
    card.find_element("css selector", "input[value=cancel]").find_element("xpath", "..").find_element(
        "css selector", "button").click()
    root.wait(".flash.ok", "cancelled")

    bob = browser_for(node, "bob")
    bob.sign_in("bob", USERS["bob"])
    bob.go("/console/retention")
    bob.wait(".pending").find_element("css selector", "input[value=approve]").find_element(
        "xpath", "..").find_element("css selector", "button").click()
    bob.accept_confirm()
    bob.wait(".flash.ok", "approved")
    assert "3650 days" in bob.wait("table.policy").text
    assert bob.d.find_elements("css selector", ".pending") == []

    # An officer reads the policy but has no form to change it.
    carol = browser_for(node, "carol")
    carol.sign_in("carol", USERS["carol"])
    carol.go("/console/retention")
    assert "3650 days" in carol.wait("table.policy").text
    assert carol.d.find_elements("css selector", "form[action='/console/retention']") == []
    policy = (await api(node, "GET", "/api/v1/archive/retention"))["retention"]
    assert policy["default_days"] == 3650, policy


@pytest.mark.chorus(config={**CONSOLE, "http": {"tls": False}}, users=USERS)
async def test_the_console_refuses_a_plain_http_channel(node):
    """Without TLS (and no trusted proxy vouching for it) the console does
    not take passwords or tokens."""
    conn = http.client.HTTPConnection(node.host, node.http_port, timeout=10)
    conn.request("GET", "/console/login")
    r = conn.getresponse()
    body = r.read().decode()
    assert r.status == 403 and "only over HTTPS" in body, (r.status, body[:300])
    conn.close()
    status, _, body = await asyncio.to_thread(
        _post_plain, node, "/console/login", {"user": "carol", "password": USERS["carol"]})
    assert status == 403 and "only over HTTPS" in body, (status, body[:300])


def _post_plain(node, path: str, fields: dict) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection(node.host, node.http_port, timeout=10)
    conn.request("POST", path, urllib.parse.urlencode(fields),
                 {"Content-Type": "application/x-www-form-urlencoded"})
    r = conn.getresponse()
    out = (r.status, r.getheader("Location") or "", r.read().decode(errors="replace"))
    conn.close()
    return out
