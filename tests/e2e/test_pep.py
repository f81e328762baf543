"""PEP (XEP-0163) across three real sites, driven by slixmpp's own plugins:
avatars (XEP-0084, with the XEP-0398 vCard bridge), bookmarks (XEP-0402 and
the XEP-0048/0049 compatibility), nicknames (XEP-0172), last activity
(XEP-0012), and the end-to-end encryption policy (XEP-0384 keys refused
under ``policy.e2e = "deny"``)."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004 import stanza as forms
from slixmpp.plugins.xep_0402.stanza import Conference
from slixmpp.xmlstream import ET

from test_cluster import CONVERGE_S
from xmpp import Client, connect, make_friends

NS_AVATAR_META = "urn:xmpp:avatar:metadata"
NS_AVATAR_DATA = "urn:xmpp:avatar:data"
NS_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_BOOKMARKS2 = "urn:xmpp:bookmarks:1"
PEP_PLUGINS = ("xep_0004", "xep_0060", "xep_0115", "xep_0163", "xep_0084", "xep_0153",
               "xep_0172", "xep_0402", "xep_0048", "xep_0049", "xep_0012")
POLL_S = 0.2


async def pep_login(node, user: str, resource: str) -> Client:
    """Log in with the PEP plugins; initial presence goes out with caps
    naming the client's +notify interests."""
    c = await connect(node, user, resource=resource, plugins=PEP_PLUGINS)
    await c.plugin["xep_0115"].update_caps(broadcast=False)
    c.send_presence()
    await c.sync()
    return c


def event_items(st, node: str) -> list:
    """The <item/> elements of a PEP event for ``node`` in a stanza."""
    ev = st.xml.find(f"{{{NS_EVENT}}}event")
    if ev is None:
        return []
    items = ev.find(f"{{{NS_EVENT}}}items")
    if items is None or items.get("node") != node:
        return []
    return items.findall(f"{{{NS_EVENT}}}item")


async def eventually(fn, what: str, timeout: float = CONVERGE_S):
    """Call async ``fn`` until it returns something truthy (replicated
    state has no event of its own to wait for)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = await fn()
            if last:
                return last
        except IqError as e:
            last = e.iq["error"]["condition"]
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"never saw {what}; last: {last!r}")


async def test_an_avatar_published_in_one_office_is_seen_in_another(cluster3):
    cl = cluster3
    alice = await pep_login(cl["a"], "alice", "laptop")
    bob = await pep_login(cl["c"], "bob", "phone")
    await make_friends(alice, bob)
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    digest = hashlib.sha1(png).hexdigest()
    await alice.plugin["xep_0084"].publish_avatar(png)
    await alice.plugin["xep_0084"].publish_avatar_metadata(
        [{"id": digest, "type": "image/png", "bytes": len(png)}])
    # bob, at another site, hears of it (his client asked for +notify).
    ev = await bob.next_message(CONVERGE_S, frm=alice.bare,
                                pred=lambda st: event_items(st, NS_AVATAR_META))
    assert event_items(ev, NS_AVATAR_META)[0].get("id") == digest
    # ... and fetches the picture from his own site once it has replicated.
    async def fetch():
        r = await bob.plugin["xep_0084"].retrieve_avatar(alice.bare, digest)
        return r["pubsub"]["items"]["item"]["avatar_data"]["value"]
    assert await eventually(fetch, "alice's avatar data at site c") == png
    # An older client sees the same picture as a vCard photo hash (XEP-0398).
    pres = await bob.next_presence(CONVERGE_S, frm=alice.jid,
                                   pred=lambda st: digest in ET.tostring(st.xml, encoding="unicode"))
    assert pres is not None
    vcard = await bob.plugin["xep_0054"].get_vcard(alice.bare)
    assert vcard["vcard_temp"]["PHOTO"]["BINVAL"] == png


async def test_bookmarks_follow_the_user_to_another_office(cluster3):
    cl = cluster3
    alice = await pep_login(cl["a"], "alice", "laptop")
    room = f"standup@conference.{cl['a'].domain}"
    conf = Conference()
    conf["name"] = "Stand-up"
    conf["autojoin"] = True
    conf["nick"] = "alice"
    opts = forms.Form()
    opts["type"] = "submit"
    opts.add_field("FORM_TYPE", value="http://jabber.org/protocol/pubsub#publish-options",
                   ftype="hidden")
    opts.add_field("pubsub#persist_items", value=True)
    opts.add_field("pubsub#max_items", value="max")
    opts.add_field("pubsub#send_last_published_item", value="never")
    opts.add_field("pubsub#access_model", value="whitelist")
    await alice.plugin["xep_0060"].publish(alice.bare, NS_BOOKMARKS2, id=room, payload=conf,
                                           options=opts)
    await alice.close()
    # The same person logs in at the Tokyo office.
    later = await pep_login(cl["c"], "alice", "tablet")

    async def native():
        r = await later.plugin["xep_0060"].get_items(later.bare, NS_BOOKMARKS2)
        return [i["id"] for i in r["pubsub"]["items"]]
    assert await eventually(native, "the bookmark at site c") == [room]
    # An older client asks the XEP-0048 way through private storage.
    old = await later.plugin["xep_0048"].get_bookmarks(method="xep_0049")
    confs = old["private"]["bookmarks"]["conferences"]
    assert [(str(c["jid"]), c["name"], c["autojoin"]) for c in confs] == [(room, "Stand-up", True)]
    # Nobody else can read them (whitelist).
    bob = await pep_login(cl["b"], "bob", "pc")
    with pytest.raises(IqError) as e:
        await bob.plugin["xep_0060"].get_items(later.bare, NS_BOOKMARKS2)
    assert e.value.iq["error"]["condition"] == "not-allowed"


async def test_nickname_and_last_activity_across_sites(cluster3):
    cl = cluster3
    alice = await pep_login(cl["a"], "alice", "laptop")
    bob = await pep_login(cl["b"], "bob", "pc")
    await make_friends(alice, bob)
    await alice.plugin["xep_0172"].publish_nick("Ali")
    ev = await bob.next_message(CONVERGE_S, frm=alice.bare,
                                pred=lambda st: event_items(st, "http://jabber.org/protocol/nick"))
    assert "Ali" in ET.tostring(ev.xml, encoding="unicode")
    alice.send_presence(ptype="unavailable", status="gone to lunch")
    await alice.sync()

    async def last():
        r = await bob.plugin["xep_0012"].get_last_activity(alice.bare)
        return r["last_activity"]["status"] == "gone to lunch" and r
    r = await eventually(last, "alice's last activity at site b")
    assert int(r["last_activity"]["seconds"]) < 60
    # carol is no contact of alice: she is not told.
    carol = await pep_login(cl["c"], "carol", "pc")
    with pytest.raises(IqError) as e:
        await carol.plugin["xep_0012"].get_last_activity(alice.bare)
    assert e.value.iq["error"]["condition"] == "forbidden"


OMEMO_DEVICES = ("<list xmlns='eu.siacs.conversations.axolotl'><device id='4223'/></list>")


async def test_end_to_end_encryption_is_refused_with_a_reason_by_default(node):
    alice = await pep_login(node, "alice", "pc")
    bob = await pep_login(node, "bob", "pc")
    payload = ET.fromstring(OMEMO_DEVICES)
    with pytest.raises(IqError) as e:
        await alice.plugin["xep_0060"].publish(
            alice.bare, "eu.siacs.conversations.axolotl.devicelist", id="current", payload=payload)
    assert e.value.iq["error"]["condition"] == "not-allowed"
    assert "policy.e2e" in e.value.iq["error"]["text"]
    alice.send_message(bob.bare, None, extra=[
        "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/>"
        "<payload>c2VjcmV0</payload></encrypted>"])
    err = await alice.next_error_message(frm=bob.bare)
    assert err["error"]["condition"] == "not-acceptable"
    assert "compliance policy" in err["error"]["text"]
    await bob.expect_no_message(1.0, frm=alice.bare)


@pytest.mark.chorus(config={"policy": {"e2e": "allow"}})
async def test_end_to_end_encryption_works_when_the_firm_allows_it(node):
    alice = await pep_login(node, "alice", "pc")
    bob = await pep_login(node, "bob", "pc")
    await make_friends(alice, bob)
    payload = ET.fromstring(OMEMO_DEVICES)
    await alice.plugin["xep_0060"].publish(
        alice.bare, "eu.siacs.conversations.axolotl.devicelist", id="current", payload=payload)
    r = await bob.plugin["xep_0060"].get_items(alice.bare, "eu.siacs.conversations.axolotl.devicelist")
    assert "4223" in ET.tostring(r.xml, encoding="unicode")
    alice.send_message(bob.bare, None, extra=[
        "<encrypted xmlns='eu.siacs.conversations.axolotl'><payload>c2VjcmV0</payload></encrypted>"])
    msg = await bob.next_message(frm=alice.bare)
    assert msg.xml.find("{eu.siacs.conversations.axolotl}encrypted") is not None
