"""Directory groups as shared roster groups, against a real OpenLDAP
server (Debian's slapd): members see each other in their rosters with
presence and no subscription request, a nested group's people are members
of the outer group, a group of over 1,500 members is read whole, and a
membership change in the directory reaches online members as roster
pushes and presence within the sync interval."""

from __future__ import annotations

import asyncio

import pytest

from chorus_node import Node
from ldap_server import GROUPS, group, member_dn, person, serving, synced
from xmpp import connect

SLOW = pytest.mark.timeout(180)
CROWD = 1600  # over Active Directory's 1,500-value page

ENTRIES = [
    person("ada", "Ada Lovelace", "ada-pw", department="Research"),
    person("grace", "Grace Hopper", "grace-pw", department="Research"),
    person("linus", "Linus Example", "linus-pw", department="Platform"),
    person("dave", "Dave Newcomer", "dave-pw", department="Research"),
    *(person(f"p{i:04}", f"Person {i:04}", "crowd-pw") for i in range(CROWD)),
    group("research", ["ada", "grace", "cn=platform-leads"]),
    group("platform-leads", ["linus"]),
    group("everyone", ["ada", *(f"p{i:04}" for i in range(CROWD))]),
]


@pytest.fixture
def slapd(tmp_path):
    yield from serving(tmp_path / "ldap", ENTRIES)


@pytest.fixture
def gnode(slapd, tmp_path):
    n = Node(tmp_path / "node", config=slapd.config())
    n.start()
    yield n
    assert n.stop() == 0, n.log_tail()


async def roster_when(client, pred, what: str, timeout: float = 30):
    """The roster once ``pred`` holds: groups arrive with the first sync,
    which runs in the background after the node starts."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        items, _, _ = await client.roster_get()
        if pred(items):
            return items
        assert loop.time() < deadline, f"{what}: {sorted(items)[:10]}"
        await asyncio.sleep(0.3)


@SLOW
async def test_group_members_see_each_other_nested_and_large_groups_included(gnode, slapd):
    d = gnode.domain
    await synced(gnode, "ada", "grace", "linus", "dave", timeout=60)
    ada = await connect(gnode, "ada", "ada-pw", mech="PLAIN")
    items = await roster_when(ada, lambda i: f"grace@{d}" in i and f"p{CROWD - 1:04}@{d}" in i,
                              "ada's roster never showed the groups")
    assert items[f"grace@{d}"]["subscription"] == "both"
    assert items[f"grace@{d}"]["groups"] == ["research"]
    assert items[f"grace@{d}"]["name"] == "Grace Hopper"
    assert items[f"linus@{d}"]["groups"] == ["research"], "nested group's people are members"
    crowd = [j for j, i in items.items() if i["groups"] == ["everyone"]]
    assert len(crowd) == CROWD, "a group over 1,500 members is read whole"
    assert f"dave@{d}" not in items

    # Presence flows without any subscription request.
    ada.send_presence()
    grace = await connect(gnode, "grace", "grace-pw", mech="PLAIN")
    await grace.roster_get()
    grace.send_presence(status="in the lab")
    p = await ada.next_presence(frm=f"grace@{d}", ptype="available")
    assert p["status"] == "in the lab"
    await grace.next_presence(frm=f"ada@{d}", ptype="available")
    linus_roster = await (await connect(gnode, "linus", "linus-pw", mech="PLAIN")).roster_get()
    assert f"p0001@{d}" not in linus_roster[0], "linus is not in everyone"


@SLOW
async def test_a_membership_change_in_the_directory_is_pushed_to_online_members(gnode, slapd):
    d = gnode.domain
    await synced(gnode, "ada", "grace", "linus", "dave", timeout=60)
    ada = await connect(gnode, "ada", "ada-pw", mech="PLAIN")
    await roster_when(ada, lambda i: f"grace@{d}" in i, "groups never arrived")
    ada.send_presence()
    grace = await connect(gnode, "grace", "grace-pw", mech="PLAIN", presence=True)
    await ada.next_presence(frm=f"grace@{d}", ptype="available")
    dave = await connect(gnode, "dave", "dave-pw", mech="PLAIN")
    await dave.roster_get()
    dave.send_presence(status="new here")

    slapd.modify(f"dn: cn=research,{GROUPS}\nchangetype: modify\nadd: member\n"
                 f"member: {member_dn('dave')}\n-\ndelete: member\nmember: {member_dn('grace')}\n")
    # Within the sync interval (1 s), pushed at once.
    pushed = await ada.next_roster_push(timeout=20, jid=f"dave@{d}", subscription="both")
    assert pushed[f"dave@{d}"]["groups"] == ["research"]
    await ada.next_presence(frm=f"dave@{d}", ptype="available")
    await ada.next_roster_push(timeout=20, jid=f"grace@{d}", subscription="remove")
    await ada.next_presence(frm=f"grace@{d}", ptype="unavailable")
    got = await dave.next_roster_push(timeout=20, jid=f"ada@{d}", subscription="both")
    assert got[f"ada@{d}"]["name"] == "Ada Lovelace"
    items, _, _ = await ada.roster_get()
    assert f"grace@{d}" not in items and f"dave@{d}" in items
    await grace.close()
