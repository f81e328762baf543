"""Protocol edges over a raw socket (RFC 6120 §4, §5, §11)."""

import asyncio
import ssl

from raw import RawStream, StreamClosed, raw_login, stream_header
from xmpp import (NS_SASL, NS_STREAM, NS_STREAMS, NS_TLS, condition_of, connect, localname,
                  namespace)

TLS = "{%s}" % NS_TLS


async def test_features_before_starttls_require_tls(node):
    s = await RawStream.to_node(node)
    feats = await s.open_stream()
    # The server's stream header is a proper RFC 6120 header.
    hdr = s.headers[-1]
    assert hdr.tag == f"{{{NS_STREAM}}}stream"
    assert hdr.get("from") == node.domain
    assert hdr.get("id"), "stream header without id"
    assert hdr.get("version") == "1.0"
    # <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>
    starttls = feats.find(f"{TLS}starttls")
    assert starttls is not None, s.text()
    assert starttls.find(f"{TLS}required") is not None, s.text()
    # PLAIN is never offered on an unencrypted stream.
    mechs = {m.text for m in feats.iter(f"{{{NS_SASL}}}mechanism")}
    assert "PLAIN" not in mechs
    await s.starttls()
    feats = await s.open_stream()
    assert feats.find(f"{TLS}starttls") is None, "STARTTLS offered twice"
    await s.close()


async def test_stanza_before_tls_is_refused(node):
    bob = await connect(node, "bob", presence=True)
    s = await RawStream.to_node(node)
    await s.open_stream()
    await s.send(f"<message to='{node.jid('bob')}' type='chat'><body>sneaky</body></message>")
    cond = await s.stream_error()
    assert cond in ("not-authorized", "policy-violation"), cond
    await s.wait_closed()
    await bob.expect_no_message(0.5, body="sneaky")


async def test_iq_before_tls_is_refused(node):
    s = await RawStream.to_node(node)
    await s.open_stream()
    await s.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    try:
        el = await s.recv()
    except StreamClosed:
        el = None
    if el is not None and localname(el.tag) == "iq":
        assert el.get("type") == "error", "bind answered before TLS/auth"
    elif el is not None:
        assert el.tag == f"{{{NS_STREAM}}}error", el.tag
        assert condition_of(el, NS_STREAMS) in ("not-authorized", "policy-violation")
    else:
        assert await s.stream_error() in ("not-authorized", "policy-violation")
    await s.close()


async def test_auth_before_tls_is_refused(node):
    s = await RawStream.to_node(node)
    await s.open_stream()
    res = await s.auth_plain("alice", node.password("alice"))
    if namespace(res.tag) == NS_SASL:
        assert localname(res.tag) == "failure", "PLAIN succeeded without TLS"
    else:
        assert res.tag == f"{{{NS_STREAM}}}error"
    await s.close()


async def test_malformed_xml_closes_only_that_stream(node):
    bob = await connect(node, "bob", resource="witness", presence=True)
    s = await raw_login(node, "alice", "bad")
    await s.send("<message><unclosed></message>")
    assert await s.stream_error() == "not-well-formed"
    await s.wait_closed()
    # The already-connected client still works...
    await bob.ping()
    # ...and can still receive messages from a fresh session.
    alice = await connect(node, "alice", resource="good")
    alice.send_message(bob.jid, "still alive")
    msg = await bob.next_message(frm=node.jid("alice"))
    assert msg["body"] == "still alive"


async def test_doctype_and_entities_in_prolog_rejected(node):
    s = await RawStream.to_node(node)
    hdr = stream_header(node.domain)
    doctype = (
        "<!DOCTYPE stream:stream ["
        "<!ENTITY lol 'lol'>"
        "<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"
        "<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>"
        "]>")
    # Put the DOCTYPE between the XML declaration and the stream header.
    decl, rest = hdr.split("?>", 1)
    await s.send(decl + "?>" + doctype + rest)
    cond = await s.stream_error()
    assert cond in ("restricted-xml", "not-well-formed"), cond
    await s.wait_closed()
    # The node survived and still serves logins.
    c = await connect(node, "bob")
    await c.ping()


async def test_entity_reference_in_stanza_rejected(node):
    bob = await connect(node, "bob", resource="witness", presence=True)
    s = await raw_login(node, "alice", "ent")
    await s.send(f"<message to='{bob.jid}' type='chat'><body>&xxe;</body></message>")
    cond = await s.stream_error()
    assert cond in ("restricted-xml", "not-well-formed"), cond
    await s.wait_closed()
    await bob.ping()
    await bob.expect_no_message(0.5, frm=node.jid("alice"))


async def test_doctype_mid_stream_rejected(node):
    s = await raw_login(node, "alice", "dt")
    await s.send("<!DOCTYPE foo [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><message/>")
    cond = await s.stream_error()
    assert cond in ("restricted-xml", "not-well-formed"), cond
    await s.wait_closed()
    c = await connect(node, "carol")
    await c.ping()


async def test_huge_stanza_is_policy_violation(node):
    bob = await connect(node, "bob", resource="witness", presence=True)
    s = await raw_login(node, "alice", "huge")
    total = 10 * 1024 * 1024
    chunk = b"A" * 65536
    error_task = asyncio.create_task(s.stream_error(timeout=45))
    await s.send(f"<message to='{bob.jid}' type='chat'><body>")
    sent = 0
    try:
        while sent < total and not error_task.done():
            s.writer.write(chunk)
            await asyncio.wait_for(s.writer.drain(), 15)
            sent += len(chunk)
        if not error_task.done():
            await s.send("</body></message>")
    except (ConnectionError, OSError, ssl.SSLError):
        pass  # the server closed the socket mid-write: expected
    cond = await error_task
    assert cond == "policy-violation", cond
    # Others are still served and never saw the oversized message.
    await bob.ping()
    await bob.expect_no_message(0.5, frm=node.jid("alice"))
    alice = await connect(node, "alice", resource="small")
    alice.send_message(bob.jid, "small one")
    assert (await bob.next_message(frm=node.jid("alice")))["body"] == "small one"
