"""XEP-0077 In-Band Registration."""

import pytest

from raw import RawStream, StreamClosed
from xmpp import NS_REGISTER, NS_STANZAS, NS_STREAM, condition_of, connect, localname

FEATURE = "{http://jabber.org/features/iq-register}register"
REG = "{%s}" % NS_REGISTER


async def test_registration_disabled_by_default(node):
    s = await RawStream.to_node(node)
    feats = await s.tls_and_features()
    assert feats.find(FEATURE) is None, "registration advertised although disabled"
    await s.send(f"<iq type='get' id='reg1'><query xmlns='{NS_REGISTER}'/></iq>")
    try:
        el = await s.recv()
    except StreamClosed:
        return  # closing the stream is a refusal too
    if el.tag == f"{{{NS_STREAM}}}error":
        return
    assert localname(el.tag) == "iq" and el.get("id") == "reg1", el.tag
    assert el.get("type") == "error", "registration form served although disabled"
    await s.send(f"<iq type='set' id='reg2'><query xmlns='{NS_REGISTER}'>"
                 f"<username>mallory</username><password>pw</password></query></iq>")
    try:
        el = await s.recv()
        if localname(el.tag) == "iq":
            assert el.get("type") == "error", "account created although disabled"
    except StreamClosed:
        pass
    await s.close()
    assert node.cli("user", "list").stdout.find("mallory") == -1


@pytest.mark.chorus(config={"registration": {"enabled": True}})
async def test_in_band_registration_when_enabled(node):
    s = await RawStream.to_node(node)
    feats = await s.tls_and_features()
    assert feats.find(FEATURE) is not None, "registration not advertised"

    form = await s.iq("get", f"<query xmlns='{NS_REGISTER}'/>")
    assert form.get("type") == "result"
    q = form.find(f"{REG}query")
    assert q is not None and q.find(f"{REG}username") is not None
    assert q.find(f"{REG}password") is not None

    res = await s.iq("set", f"<query xmlns='{NS_REGISTER}'>"
                            f"<username>newbie</username><password>newbie-pw</password></query>")
    assert res.get("type") == "result", res

    # Registering an existing name is a conflict.
    res = await s.iq("set", f"<query xmlns='{NS_REGISTER}'>"
                            f"<username>alice</username><password>hijack</password></query>")
    assert res.get("type") == "error"
    assert condition_of(res.find("{jabber:client}error"), NS_STANZAS) == "conflict"
    await s.close()

    # The new account logs in with a regular client; alice's password is intact.
    node.users["newbie"] = "newbie-pw"
    c = await connect(node, "newbie")
    await c.ping()
    a = await connect(node, "alice")
    await a.ping()


async def test_a_logged_in_user_changes_their_password_with_registration_off(node):
    """XEP-0077 3.3 works for every logged-in user (Profanity's
    /changepassword once got service-unavailable): the old password stops
    working, the new one logs in; the change names no other account; and
    removing one's account stays the administrators' business."""
    s = await RawStream.to_node(node)
    await s.login("alice", node.password("alice"))
    res = await s.iq("set", f"<query xmlns='{NS_REGISTER}'>"
                            f"<username>bob</username><password>taken-over</password></query>")
    assert res.get("type") == "error", "changed another account's password"
    res = await s.iq("set", f"<query xmlns='{NS_REGISTER}'>"
                            f"<username>Alice</username><password>n3w-secret</password></query>")
    assert res.get("type") == "result", res
    res = await s.iq("set", f"<query xmlns='{NS_REGISTER}'><remove/></query>")
    assert res.get("type") == "error"
    assert condition_of(res.find("{jabber:client}error"), NS_STANZAS) == "not-allowed"
    await s.close()

    old = await RawStream.to_node(node)
    await old.tls_and_features()
    assert localname((await old.auth_plain("alice", node.password("alice"))).tag) == "failure"
    await old.close()
    node.users["alice"] = "n3w-secret"
    c = await connect(node, "alice", mech="SCRAM-SHA-256")
    await c.ping()
    await c.close()
    bob = await connect(node, "bob")
    await bob.ping()
    await bob.close()


async def test_disco_info_on_an_account_is_the_account(node):
    """XEP-0030: an account's bare JID is account/registered, not the
    server; the user's own names the archive kept there."""
    s = await RawStream.to_node(node)
    jid = await s.login("alice", node.password("alice"))
    own = jid.split("/")[0]
    disco = "http://jabber.org/protocol/disco#info"
    for to, archive in ((own, True), (node.jid("bob"), False)):
        res = await s.iq("get", f"<query xmlns='{disco}'/>", to=to)
        assert res.get("type") == "result", res
        ident = res.find(f"{{{disco}}}query/{{{disco}}}identity")
        assert (ident.get("category"), ident.get("type")) == ("account", "registered"), to
        feats = {f.get("var") for f in res.iter(f"{{{disco}}}feature")}
        assert ("urn:xmpp:mam:2" in feats) == archive, (to, feats)
    server = await s.iq("get", f"<query xmlns='{disco}'/>", to=node.domain)
    ident = server.find(f"{{{disco}}}query/{{{disco}}}identity")
    assert ident.get("category") == "server"
    await s.close()
