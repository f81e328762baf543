"""Authentication and transport security (RFC 6120 §5, §6; XEP-0368)."""

import pytest

from raw import RawStream
from xmpp import NS_SASL, AuthFailed, condition_of, connect, localname, try_login


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
async def test_login_with_each_mechanism(node, mech):
    c = await connect(node, "alice", mech=mech, resource="mech")
    assert c.jid == node.jid("alice", "mech")
    # The stream is usable after authenticating with this mechanism.
    await c.ping()


async def test_sasl_mechanisms_advertised_after_tls(node):
    s = await RawStream.to_node(node)
    feats = await s.tls_and_features()
    mechs = {m.text for m in feats.iter(f"{{{NS_SASL}}}mechanism")}
    assert {"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"} <= mechs, mechs
    await s.close()


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
async def test_wrong_password_is_not_authorized(node, mech):
    cond = await try_login(node, "alice", "not-the-password", mech=mech)
    assert cond == "not-authorized"


async def test_unknown_user_is_not_authorized(node):
    cond = await try_login(node, "nosuchuser", "whatever", mech="PLAIN")
    assert cond == "not-authorized"


async def test_starttls_connection(node):
    c = await connect(node, "alice", resource="starttls")
    # slixmpp negotiated STARTTLS on the plain port: the socket is now TLS.
    assert c.xmpp.transport.get_extra_info("ssl_object") is not None
    assert "starttls" in c.xmpp.features
    await c.ping()


async def test_direct_tls_connection(node):
    """XEP-0368: TLS from the first byte on the direct-TLS port."""
    c = await connect(node, "alice", resource="dtls", direct_tls=True)
    assert c.xmpp.transport.get_extra_info("ssl_object") is not None
    assert "starttls" not in c.xmpp.features
    await c.ping()


async def test_direct_tls_raw_features_have_no_starttls(node):
    s = await RawStream.to_node(node, direct_tls=True)
    feats = await s.open_stream()
    assert feats.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is None
    assert feats.find(f"{{{NS_SASL}}}mechanisms") is not None
    await s.close()


async def test_plain_retry_on_same_stream(node):
    """RFC 6120 §6.4.5: a failed attempt may be retried on the same stream."""
    s = await RawStream.to_node(node)
    await s.tls_and_features()
    res = await s.auth_plain("alice", "wrong-password")
    assert localname(res.tag) == "failure", res
    assert condition_of(res, NS_SASL) == "not-authorized"
    res = await s.auth_plain("alice", node.password("alice"))
    assert localname(res.tag) == "success", res
    await s.open_stream()
    jid = await s.bind("retry")
    assert jid == node.jid("alice", "retry")
    await s.ping()
    await s.close()


@pytest.mark.chorus(config={"limits": {"auth_failures_per_account_max": 3}})
async def test_brute_force_lockout(node):
    """After 3 failures for one account, even the right password is refused
    with temporary-auth-failure; other accounts are unaffected."""
    for i in range(3):
        s = await RawStream.to_node(node)
        await s.tls_and_features()
        res = await s.auth_plain("alice", f"guess-{i}")
        assert localname(res.tag) == "failure"
        assert condition_of(res, NS_SASL) == "not-authorized", f"attempt {i}"
        await s.close()

    s = await RawStream.to_node(node)
    await s.tls_and_features()
    res = await s.auth_plain("alice", node.password("alice"))
    assert localname(res.tag) == "failure", "locked account accepted the right password"
    assert condition_of(res, NS_SASL) == "temporary-auth-failure"
    await s.close()

    # SCRAM goes through the same throttle.
    with pytest.raises(AuthFailed) as ei:
        await connect(node, "alice", mech="SCRAM-SHA-256")
    assert ei.value.condition == "temporary-auth-failure"

    # Throttling is per account: bob (same source address) still logs in.
    bob = await connect(node, "bob")
    await bob.ping()

