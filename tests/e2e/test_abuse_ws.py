"""The abuse suite, WebSocket part: a hostile client on RFC 7395 meets the
same limits as on TCP, because both run on one session driver. Numbers are
printed (``-s``).

* A client that never acknowledges (XEP-0198) is closed once
  ``unacked_stanzas_max`` is passed, instead of the server holding every
  unacknowledged stanza forever.
* A client that never reads is dropped at ``write_timeout_secs``.
"""

import base64
import time
import xml.etree.ElementTree as ET

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from xmpp import NS_CLIENT, NS_FRAMING, NS_SASL, NS_SM, NS_STREAM, NS_STREAMS, connect, \
    insecure_ssl_context
from test_abuse import metric, until
from test_websocket import _recv, _recv_until

UNACKED_MAX = 50
WRITE_TIMEOUT_S = 2


async def ws_login(ws, node, user: str, resource: str) -> None:
    opening = f"<open xmlns='{NS_FRAMING}' to='{node.domain}' version='1.0'/>"
    await ws.send(opening)
    await _recv_until(ws, lambda e: e.tag == f"{{{NS_STREAM}}}features")
    token = base64.b64encode(f"\0{user}\0{node.password(user)}".encode()).decode()
    await ws.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
    res = await _recv(ws)
    assert res.tag == f"{{{NS_SASL}}}success", ET.tostring(res)
    await ws.send(opening)
    await _recv_until(ws, lambda e: e.tag == f"{{{NS_STREAM}}}features")
    await ws.send(f"<iq xmlns='{NS_CLIENT}' type='set' id='b'><bind "
                  f"xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource>"
                  f"</bind></iq>")
    res = await _recv_until(ws, lambda e: e.get("id") == "b")
    assert res.get("type") == "result"


def ws(node):
    return ws_connect(node.ws_url, subprotocols=["xmpp"], ssl=insecure_ssl_context(),
                      proxy=None, open_timeout=10, close_timeout=5, max_queue=None)


@pytest.mark.chorus(config={"stream_management": {"unacked_stanzas_max": UNACKED_MAX}})
async def test_a_websocket_client_that_never_acks_is_closed_at_the_limit(node):
    bob = await connect(node, "bob", presence=True)
    async with ws(node) as alice:
        await ws_login(alice, node, "alice", "ws")
        await alice.send(f"<enable xmlns='{NS_SM}'/>")
        await _recv_until(alice, lambda e: e.tag == f"{{{NS_SM}}}enabled")
        for i in range(UNACKED_MAX * 2):
            bob.send_message(node.jid("alice", "ws"), f"unacked {i}")
        got, cond = 0, None
        try:
            while True:
                el = await _recv(alice, 10)
                if el.tag == f"{{{NS_CLIENT}}}message":
                    got += 1
                elif el.tag == f"{{{NS_STREAM}}}error":
                    cond = next(iter(el)).tag.split("}")[1]
                    assert next(iter(el)).tag.startswith(f"{{{NS_STREAMS}}}")
                    break
        except ConnectionClosed:
            pass
        print(f"\nnever acks: {got} messages delivered, then <{cond}/> "
              f"(unacked_stanzas_max {UNACKED_MAX})")
        assert cond == "policy-violation"
        assert UNACKED_MAX <= got <= UNACKED_MAX * 2
    await bob.close()


@pytest.mark.chorus(config={"limits": {"write_timeout_secs": WRITE_TIMEOUT_S,
                                       "user_stanzas_per_sec": 100000,
                                       "user_stanzas_burst": 100000}})
async def test_a_websocket_client_that_never_reads_is_dropped_at_the_write_timeout(node):
    bob = await connect(node, "bob", presence=True)
    async with ws(node) as alice:
        await ws_login(alice, node, "alice", "ws")
        await until("two sessions", lambda: metric(node, "chorus_sessions") == 2, 10)
        # Alice stops reading; bob sends her far more than socket buffers hold.
        alice.transport.pause_reading()
        t0 = time.monotonic()
        body = "x" * 8000
        sent = 0
        while metric(node, "chorus_sessions") == 2 and time.monotonic() - t0 < 60:
            for _ in range(200):
                bob.send_message(node.jid("alice", "ws"), body)
            sent += 200
            await bob.sync()
        took = time.monotonic() - t0
        print(f"\nnever reads: dropped after {sent} messages of 8 kB ({took:.1f} s, "
              f"write timeout {WRITE_TIMEOUT_S} s)")
        assert metric(node, "chorus_sessions") == 1, "the stalled WebSocket session is still there"
    await bob.close()
