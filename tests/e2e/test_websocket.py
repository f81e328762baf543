"""XMPP over WebSocket (RFC 7395) on the HTTPS listener."""

import asyncio
import base64
import xml.etree.ElementTree as ET

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from xmpp import (NS_BIND, NS_CLIENT, NS_FRAMING, NS_SASL, NS_STREAM, NS_TLS, connect,
                  insecure_ssl_context)

FRAMING = "{%s}" % NS_FRAMING


def _open(domain: str) -> str:
    return f"<open xmlns='{NS_FRAMING}' to='{domain}' version='1.0'/>"


async def _recv(ws, timeout: float = 5.0) -> ET.Element:
    """Next non-blank frame, parsed (each frame is one complete element)."""
    while True:
        frame = await asyncio.wait_for(ws.recv(), timeout)
        if isinstance(frame, bytes):
            frame = frame.decode()
        if frame.strip():
            return ET.fromstring(frame)


async def _recv_until(ws, pred, timeout: float = 5.0) -> ET.Element:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        el = await _recv(ws, max(0.01, deadline - loop.time()))
        if pred(el):
            return el


async def test_websocket_session(node):
    bob = await connect(node, "bob", resource="tcp", presence=True)
    async with ws_connect(node.ws_url, subprotocols=["xmpp"], ssl=insecure_ssl_context(),
                          proxy=None, open_timeout=10, close_timeout=5) as ws:
        assert ws.subprotocol == "xmpp"

        await ws.send(_open(node.domain))
        opened = await _recv(ws)
        assert opened.tag == f"{FRAMING}open", opened.tag
        assert opened.get("from") == node.domain
        assert opened.get("version") == "1.0"
        assert opened.get("id")
        feats = await _recv(ws)
        assert feats.tag == f"{{{NS_STREAM}}}features", feats.tag
        assert feats.find(f"{{{NS_TLS}}}starttls") is None, "STARTTLS offered inside wss"
        mechs = {m.text for m in feats.iter(f"{{{NS_SASL}}}mechanism")}
        assert "PLAIN" in mechs, mechs

        token = base64.b64encode(f"\0alice\0{node.password('alice')}".encode()).decode()
        await ws.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        res = await _recv(ws)
        assert res.tag == f"{{{NS_SASL}}}success", ET.tostring(res)

        await ws.send(_open(node.domain))
        assert (await _recv(ws)).tag == f"{FRAMING}open"
        feats = await _recv(ws)
        assert feats.find(f"{{{NS_BIND}}}bind") is not None

        await ws.send(f"<iq xmlns='{NS_CLIENT}' type='set' id='bind1'>"
                      f"<bind xmlns='{NS_BIND}'><resource>ws</resource></bind></iq>")
        res = await _recv_until(ws, lambda e: e.get("id") == "bind1")
        assert res.get("type") == "result"
        assert res.findtext(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid") == node.jid("alice", "ws")

        await ws.send(f"<presence xmlns='{NS_CLIENT}'/>")

        # TCP client -> WebSocket client
        bob.send_message(node.jid("alice", "ws"), "hello websocket")
        msg = await _recv_until(ws, lambda e: e.tag == f"{{{NS_CLIENT}}}message")
        assert msg.get("from") == bob.jid
        assert msg.findtext(f"{{{NS_CLIENT}}}body") == "hello websocket"

        # WebSocket client -> TCP client
        await ws.send(f"<message xmlns='{NS_CLIENT}' to='{bob.jid}' type='chat' id='m1'>"
                      f"<body>hello tcp</body></message>")
        m = await bob.next_message(frm=node.jid("alice", "ws"))
        assert m["body"] == "hello tcp"

        # RFC 7395 §3.6: <close/> is answered with <close/>, then the
        # server closes the WebSocket.
        await ws.send(f"<close xmlns='{NS_FRAMING}'/>")
        try:
            el = await _recv_until(ws, lambda e: e.tag == f"{FRAMING}close")
            assert el.tag == f"{FRAMING}close"
        except ConnectionClosed:
            pass
        try:
            await asyncio.wait_for(ws.wait_closed(), 10)
        except asyncio.TimeoutError:
            raise AssertionError("server did not close the WebSocket after <close/>") from None



async def test_host_meta_leads_a_web_client_to_a_working_websocket(node):
    """XEP-0156: a web client that knows only the domain's HTTPS origin
    reads /.well-known/host-meta(.json), finds the WebSocket endpoint and
    opens a stream there."""
    import json
    status, body = await asyncio.to_thread(node.http_get, "/.well-known/host-meta.json")
    assert status == 200, body
    links = [l for l in json.loads(body)["links"]
             if l["rel"] == "urn:xmpp:alt-connections:websocket"]
    assert len(links) == 1, body
    href = links[0]["href"]
    assert href == node.ws_url, (href, node.ws_url)
    status, xrd = await asyncio.to_thread(node.http_get, "/.well-known/host-meta")
    assert status == 200
    link = ET.fromstring(xrd).find("{http://docs.oasis-open.org/ns/xri/xrd-1.0}Link")
    assert link is not None and link.get("href") == href, xrd
    async with ws_connect(href, subprotocols=["xmpp"], ssl=insecure_ssl_context(),
                          proxy=None, open_timeout=10, close_timeout=5) as ws:
        await ws.send(_open(node.domain))
        assert (await _recv(ws)).tag == f"{FRAMING}open"
