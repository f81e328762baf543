"""The enterprise directory against a real OpenLDAP server (Debian's
slapd, started and seeded by the test): its people become accounts and log
in with their directory password over PLAIN (never stored), a disabled
person is refused, a person disabled while online loses the session within
the sync interval, vCards come from the entries, the people finder
(XEP-0055) searches by skill and department with presence, local accounts
keep working beside it, and with the directory unreachable a person who
logged in recently still can while a newcomer cannot."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET

import pytest

from browser import browser_for  # noqa: F401  (fixture)
from chorus_node import Node
from ldap_server import PEOPLE, person, serving, synced
from xmpp import connect, try_login

NS_SEARCH = "jabber:iq:search"
PHOTO = b"\xff\xd8\xff\xe0 a small JPEG from the directory \xff\xd9"
NS_DATA = "jabber:x:data"
SLOW = pytest.mark.timeout(120)

ENTRIES = [
    person("ada", "Ada Lovelace", "ada-ldap-pw", title="Chief Scientist", department="Research",
           office="London", skills=("rust", "analytical engines")),
    person("grace", "Grace Hopper", "grace-ldap-pw", title="Engineer", department="Research",
           office="New York", skills=("compilers", "cobol"), manager="ada", photo=PHOTO),
    person("linus", "Linus Example", "linus-ldap-pw", title="Engineer", department="Platform",
           office="Tokyo", skills=("kernels", "rust")),
    person("eve", "Eve Gone", "eve-ldap-pw", department="Sales", disabled=True),
]


@pytest.fixture
def slapd(tmp_path):
    yield from serving(tmp_path / "ldap", ENTRIES)


@pytest.fixture
def dnode(slapd, tmp_path):
    """A node whose [directory] is the test's slapd, with one local account."""
    config = {**slapd.config(), "console": {"compliance": ["local"], "admin": ["local"]}}
    n = Node(tmp_path / "node", config=config, users={"local": "local-secret"})
    n.add_user("local", "local-secret")
    n.start()
    yield n
    assert n.stop() == 0, n.log_tail()


def form_values(x: ET.Element) -> list[dict[str, str]]:
    out = []
    for item in x.findall(f"{{{NS_DATA}}}item"):
        out.append({f.get("var"): (f.findtext(f"{{{NS_DATA}}}value") or "")
                    for f in item.findall(f"{{{NS_DATA}}}field")})
    return out


async def people_search(client, **fields) -> list[dict[str, str]]:
    x = ET.Element(f"{{{NS_DATA}}}x", {"type": "submit"})
    for var, value in {"FORM_TYPE": NS_SEARCH, **fields}.items():
        f = ET.SubElement(x, f"{{{NS_DATA}}}field", {"var": var})
        ET.SubElement(f, f"{{{NS_DATA}}}value").text = value
    q = ET.Element(f"{{{NS_SEARCH}}}query")
    q.append(x)
    r = await client.iq_set(q, to=client.node.domain)
    result = r.xml.find(f"{{{NS_SEARCH}}}query/{{{NS_DATA}}}x")
    assert result is not None and result.get("type") == "result", ET.tostring(r.xml)
    return form_values(result)


@SLOW
async def test_directory_people_log_in_and_are_found(dnode, slapd):
    await synced(dnode, "ada", "grace", "linus")
    assert await try_login(dnode, "ada", "ada-ldap-pw", mech="PLAIN") is None
    assert await try_login(dnode, "ada", "wrong", mech="PLAIN") == "not-authorized"
    # SCRAM cannot log a directory person in: the server holds no keys for
    # the password.
    assert await try_login(dnode, "grace", "grace-ldap-pw", mech="SCRAM-SHA-256") == "not-authorized"
    # A person the directory disables never becomes a usable account.
    assert await try_login(dnode, "eve", "eve-ldap-pw", mech="PLAIN") is not None
    # Local accounts live beside the directory's.
    assert await try_login(dnode, "local", "local-secret") is None

    ada = await connect(dnode, "ada", "ada-ldap-pw", mech="PLAIN", presence=True)
    local = await connect(dnode, "local", "local-secret")
    card = await local.plugin["xep_0054"].get_vcard(f"grace@{dnode.domain}")
    assert card["vcard_temp"]["FN"] == "Grace Hopper"
    assert card["vcard_temp"]["TITLE"] == "Engineer", card
    assert card["vcard_temp"]["PHOTO"]["BINVAL"] == PHOTO, "the avatar comes from jpegPhoto"
    assert card["vcard_temp"]["PHOTO"]["TYPE"] == "image/jpeg"
    # The fields the directory owns are marked read-only; grace cannot
    # retitle herself, but her own fields are hers.
    marker = card.xml.find(".//{urn:chorus:directory:0}read-only")
    assert marker is not None and "TITLE" in [f.text for f in marker]
    grace = await connect(dnode, "grace", "grace-ldap-pw", mech="PLAIN")
    mine = ET.fromstring("<vCard xmlns='vcard-temp'><FN>Grace</FN><TITLE>Admiral</TITLE>"
                         "<NICKNAME>Amazing Grace</NICKNAME></vCard>")
    await grace.iq_set(mine)
    card = await local.plugin["xep_0054"].get_vcard(f"grace@{dnode.domain}", cached=False)
    assert (card["vcard_temp"]["TITLE"], card["vcard_temp"]["NICKNAME"]) == ("Engineer", ["Amazing Grace"])

    form = await local.iq_get(ET.Element(f"{{{NS_SEARCH}}}query"), to=dnode.domain)
    fields = {f.get("var") for f in form.xml.iter(f"{{{NS_DATA}}}field")}
    assert {"name", "department", "title", "office", "skill", "manager"} <= fields, fields
    found = await people_search(local, skill="rust")
    assert [p["name"] for p in found] == ["Ada Lovelace", "Linus Example"], found
    assert found[0]["presence"] == "available" and found[1]["presence"] == "offline", found
    found = await people_search(local, department="research", manager="ada")
    assert [(p["jid"], p["manager"]) for p in found] == [(f"grace@{dnode.domain}", "Ada Lovelace")]
    assert await people_search(local, department="sales") == [], "the disabled are not found"


@SLOW
async def test_a_person_disabled_in_the_directory_loses_the_session(dnode, slapd):
    await synced(dnode, "linus")
    linus = await connect(dnode, "linus", "linus-ldap-pw", mech="PLAIN", presence=True)
    slapd.modify(f"dn: uid=linus,{PEOPLE}\nchangetype: modify\nadd: employeeType\n"
                 "employeeType: disabled\n")
    # Within the sync interval (1 s) and a sweep (5 s).
    await linus.wait_disconnected(20)
    assert await try_login(dnode, "linus", "linus-ldap-pw", mech="PLAIN") == "not-authorized"


@SLOW
async def test_with_the_directory_down_recent_people_still_log_in(dnode, slapd):
    await synced(dnode, "ada", "grace")
    assert await try_login(dnode, "ada", "ada-ldap-pw", mech="PLAIN") is None
    slapd.stop()
    assert await try_login(dnode, "ada", "ada-ldap-pw", mech="PLAIN") is None, "within the grace"
    assert await try_login(dnode, "ada", "not-her-password", mech="PLAIN") == "not-authorized"
    assert await try_login(dnode, "grace", "grace-ldap-pw", mech="PLAIN") == "not-authorized", \
        "never seen: nothing to check against"
    # The node says so in its health status.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        code, body = dnode.http_get("/directory/status")
        assert code == 200, body
        status = json.loads(body)
        if not status["reachable"]:
            break
        assert loop.time() < deadline, f"the directory never reported unreachable: {status}"
        await asyncio.sleep(0.2)  # the next sync attempt (1 s) finds it gone
    assert status["last_error"] and status["people"] == 4, status
    assert status["recent_logins"] == 1 and status["grace_hours"] == 24, status


@SLOW
async def test_the_console_finds_people_and_shows_the_directory(dnode, slapd, browser_for):
    from test_console import element_text, reload_until
    await synced(dnode, "ada", "linus")
    b = browser_for(dnode)
    b.sign_in("local", "local-secret")
    b.go("/console/people?skill=RUST")
    rows = b.wait("#people").find_elements("css selector", "tbody tr")
    assert [r.get_attribute("data-uid") for r in rows] == ["ada", "linus"]
    assert "Chief Scientist" in rows[0].text and "Records" in rows[0].text
    b.shot("people")
    b.go("/console/people?department=sales")
    b.wait(".empty", "Nobody matches")
    b.go("/console/health")
    assert "4 people" in b.wait("#directory").text
    slapd.stop()
    reload_until(b, "the directory reported unreachable",
                 lambda: "unreachable" in element_text(b, "#directory"))
