"""XEP-0030 discovery and every server feature it advertises; XEP-0352 CSI."""

import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError, IqTimeout

from xmpp import (NS_BLOCKING, NS_CARBONS, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_ROSTER,
                  NS_TIME, NS_VCARD, NS_VERSION, Client, connect)

NS_PRIVATE = "jabber:iq:private"
NS_LAST = "jabber:iq:last"
NS_MAM = "urn:xmpp:mam:2"
NS_REGISTER = "jabber:iq:register"


async def _server_info(c: Client):
    res = await c.plugin["xep_0030"].get_info(jid=c.node.domain, timeout=5)
    q = res.xml.find(f"{{{NS_DISCO_INFO}}}query")
    assert q is not None
    identities = {(i.get("category"), i.get("type")) for i in q.findall(f"{{{NS_DISCO_INFO}}}identity")}
    features = {f.get("var") for f in q.findall(f"{{{NS_DISCO_INFO}}}feature")}
    return identities, features


async def test_disco_info_on_server(node):
    c = await connect(node, "alice")
    identities, features = await _server_info(c)
    assert ("server", "im") in identities, identities
    for f in (NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION, NS_TIME, NS_VCARD,
              NS_BLOCKING, NS_CARBONS):
        assert f in features, f"{f} not advertised; got {sorted(features)}"


async def test_disco_items_answers(node):
    c = await connect(node, "alice")
    res = await c.plugin["xep_0030"].get_items(jid=node.domain, timeout=5)
    assert res["type"] == "result"
    assert res.xml.find(f"{{{NS_DISCO_ITEMS}}}query") is not None


async def test_ping(node):
    c = await connect(node, "alice")
    res = await c.ping()
    assert res["type"] == "result"
    assert str(res["from"]) in ("", node.domain)


async def test_software_version(node):
    c = await connect(node, "alice")
    res = await c.plugin["xep_0092"].get_version(node.domain, timeout=5)
    assert res["software_version"]["name"], ET.tostring(res.xml)
    assert res["software_version"]["version"], ET.tostring(res.xml)


async def test_entity_time(node):
    c = await connect(node, "alice")
    res = await c.plugin["xep_0202"].get_entity_time(node.domain, timeout=5)
    t = res.xml.find(f"{{{NS_TIME}}}time")
    assert t is not None
    assert t.findtext(f"{{{NS_TIME}}}utc", "").endswith("Z")
    tzo = t.findtext(f"{{{NS_TIME}}}tzo", "")
    assert tzo == "Z" or (len(tzo) == 6 and tzo[0] in "+-"), tzo


async def test_vcard_roundtrip(node):
    alice = await connect(node, "alice")
    vc = alice.plugin["xep_0054"]
    card = vc.make_vcard()
    card["FN"] = "Alice Liddell"
    card["NICKNAME"] = "alice"
    await vc.publish_vcard(card, timeout=5)

    # Own vCard (iq without 'to').
    res = await alice.iq_get(f"<vCard xmlns='{NS_VCARD}'/>")
    assert res.xml.findtext(f"{{{NS_VCARD}}}vCard/{{{NS_VCARD}}}FN") == "Alice Liddell"

    # Someone else's view of it (iq to alice's bare JID).
    bob = await connect(node, "bob")
    res = await bob.iq_get(f"<vCard xmlns='{NS_VCARD}'/>", to=node.jid("alice"))
    assert res.xml.findtext(f"{{{NS_VCARD}}}vCard/{{{NS_VCARD}}}FN") == "Alice Liddell"
    assert res.xml.findtext(f"{{{NS_VCARD}}}vCard/{{{NS_VCARD}}}NICKNAME") == "alice"


# -- every advertised feature gets exercised ---------------------------------

async def _check_ping(c):
    await c.ping()


async def _check_version(c):
    res = await c.plugin["xep_0092"].get_version(c.node.domain, timeout=5)
    assert res["software_version"]["name"]


async def _check_time(c):
    res = await c.plugin["xep_0202"].get_entity_time(c.node.domain, timeout=5)
    assert res.xml.find(f"{{{NS_TIME}}}time") is not None


async def _check_vcard(c):
    await c.iq_set(f"<vCard xmlns='{NS_VCARD}'><FN>Feature Check</FN></vCard>")
    res = await c.iq_get(f"<vCard xmlns='{NS_VCARD}'/>")
    assert res.xml.findtext(f"{{{NS_VCARD}}}vCard/{{{NS_VCARD}}}FN") == "Feature Check"


async def _check_blocking(c):
    res = await c.iq_get(f"<blocklist xmlns='{NS_BLOCKING}'/>")
    assert res.xml.find(f"{{{NS_BLOCKING}}}blocklist") is not None


async def _check_carbons(c):
    await c.iq_set(f"<enable xmlns='{NS_CARBONS}'/>")
    await c.iq_set(f"<disable xmlns='{NS_CARBONS}'/>")


async def _check_disco_info(c):
    await c.iq_get(f"<query xmlns='{NS_DISCO_INFO}'/>", to=c.node.domain)


async def _check_disco_items(c):
    await c.iq_get(f"<query xmlns='{NS_DISCO_ITEMS}'/>", to=c.node.domain)


async def _check_roster(c):
    await c.roster_get()


async def _check_private(c):
    await c.iq_set(f"<query xmlns='{NS_PRIVATE}'><x xmlns='e2e:test'>v</x></query>")
    res = await c.iq_get(f"<query xmlns='{NS_PRIVATE}'><x xmlns='e2e:test'/></query>")
    assert res.xml.findtext(f"{{{NS_PRIVATE}}}query/{{e2e:test}}x") == "v"


async def _check_last(c):
    await c.iq_get(f"<query xmlns='{NS_LAST}'/>", to=c.node.domain)


async def _check_mam(c):
    await c.iq_set(f"<query xmlns='{NS_MAM}' queryid='e2e'/>", timeout=10)


async def _check_register(c):
    # After auth, jabber:iq:register get returns the registration form/state.
    res = await c.iq_get(f"<query xmlns='{NS_REGISTER}'/>")
    assert res.xml.find(f"{{{NS_REGISTER}}}query") is not None


FEATURE_CHECKS = {
    NS_PING: _check_ping,
    NS_VERSION: _check_version,
    NS_TIME: _check_time,
    NS_VCARD: _check_vcard,
    NS_BLOCKING: _check_blocking,
    NS_CARBONS: _check_carbons,
    NS_DISCO_INFO: _check_disco_info,
    NS_DISCO_ITEMS: _check_disco_items,
    NS_ROSTER: _check_roster,
    NS_PRIVATE: _check_private,
    NS_LAST: _check_last,
    NS_MAM: _check_mam,
    NS_REGISTER: _check_register,
}

# Features that are not IQ namespaces; each is exercised by the named test.
COVERED_ELSEWHERE = {
    "msgoffline": "test_messages.py::test_offline_messages_delivered_once_in_order_with_delay",
    "urn:xmpp:carbons:rules:0": "test_carbons_blocking.py::test_carbons_received_and_sent",
    "urn:xmpp:sm:3": "test_stream_management.py",
    "urn:xmpp:csi:0": "test_disco_and_services.py::test_csi_inactive_active",
    "urn:xmpp:delay": "test_messages.py (offline delay stamps)",
    "iq": "every IQ test",
    "presence": "test_presence.py",
}


async def test_every_advertised_server_feature_answers(node):
    c = await connect(node, "alice", resource="features", presence=True)
    _, features = await _server_info(c)
    failures = []
    unanswered = []
    for f in sorted(features):
        check = FEATURE_CHECKS.get(f)
        try:
            if check is not None:
                await check(c)
            elif f in COVERED_ELSEWHERE:
                continue
            else:
                # Unknown namespace: at least something must answer an IQ in
                # it (result or error), and the stream must survive.
                try:
                    await c.iq_get(f"<query xmlns='{f}'/>", to=node.domain)
                except IqError:
                    pass
        except IqTimeout:
            unanswered.append(f)
        except (IqError, AssertionError) as e:
            failures.append(f"{f}: {e!r}")
    assert not unanswered, f"advertised features that got no answer: {unanswered}"
    assert not failures, "advertised features that do not work:\n" + "\n".join(failures)
    await c.ping()  # stream still up


async def test_csi_inactive_active(node):
    alice = await connect(node, "alice", resource="mobile", presence=True)
    csi = alice.plugin["xep_0352"]
    assert csi.enabled, "urn:xmpp:csi:0 not advertised in stream features"
    bob = await connect(node, "bob", resource="b", presence=True)

    csi.send_inactive()
    # IQs are never held back by CSI; the stream stays up.
    await alice.sync()
    bob.send_message(alice.jid, "while inactive")
    await bob.sync()
    await alice.ping()
    assert not alice.stream_errors

    csi.send_active()
    await alice.sync()
    bob.send_message(alice.jid, "after active")
    # Whatever was held while inactive is flushed now, in order.
    m = await alice.next_message(frm=bob.jid)
    assert m["body"] == "while inactive"
    m = await alice.next_message(frm=bob.jid)
    assert m["body"] == "after active"
    assert alice.connected


async def test_external_services_give_time_limited_turn_credentials(tmp_path):
    """XEP-0215 with a real node: STUN and TURN servers from the config,
    TURN with credentials that coturn's use-auth-secret accepts (checked
    here with the secret, independently of the server's code); a missing
    secret file stops the node with its name."""
    import base64
    import hashlib
    import hmac
    import subprocess
    import time as _time

    from chorus_node import Node
    from raw import RawStream

    secret = tmp_path / "turn-secret"
    secret.write_text("north-wind\n")
    services = [
        {"type": "stun", "host": "stun.chorus.test", "port": 3478, "transport": "udp"},
        {"type": "turn", "host": "turn.chorus.test", "port": 3478, "transport": "udp",
         "secret_file": str(secret), "credentials_ttl_secs": 3600},
    ]
    n = Node(tmp_path / "node", config={"extdisco": {"services": services}})
    try:
        n.add_user("alice", "alice-pw")
        n.start()
        s = await RawStream.to_node(n)
        await s.login("alice", n.password("alice"))
        info = await s.iq("get", f"<query xmlns='{NS_DISCO_INFO}'/>", to=n.domain)
        feats = {f.get("var") for f in info.iter(f"{{{NS_DISCO_INFO}}}feature")}
        assert "urn:xmpp:extdisco:2" in feats
        res = await s.iq("get", "<services xmlns='urn:xmpp:extdisco:2'/>", to=n.domain)
        got = list(res.iter("{urn:xmpp:extdisco:2}service"))
        assert [(g.get("type"), g.get("host")) for g in got] == [
            ("stun", "stun.chorus.test"), ("turn", "turn.chorus.test")]
        turn = got[1]
        user = turn.get("username")
        expiry = int(user.split(":")[0])
        assert abs(expiry - (_time.time() + 3600)) < 30, user
        want = base64.b64encode(hmac.new(b"north-wind", user.encode(), hashlib.sha1).digest())
        assert turn.get("password") == want.decode()
        await s.close()
    finally:
        n.stop()
    secret.unlink()
    cp = subprocess.run([str(n.binary), "--config", str(n.config_path), "serve"],
                        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert cp.returncode != 0 and str(secret) in cp.stderr, cp.stderr
