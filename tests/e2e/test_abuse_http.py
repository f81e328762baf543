"""The abuse suite, HTTP part: slow and greedy clients of the HTTPS
listener (WebSocket, API, probes) and of the c2s listener, against a real
node. Each test prints what it measured (``-s``).

* Slowloris: request headers sent a byte at a time are cut at
  ``http.header_read_timeout_secs``; a stream header sent a byte at a time
  on c2s is cut at ``limits.handshake_timeout_secs``; a TLS handshake never
  finished is cut at the handshake timeout.
* A kept-alive connection with no next request is closed at
  ``http.idle_timeout_secs``.
* One address cannot hold more than ``http.connections_per_ip_max``
  connections; others still get in.
* Unauthenticated endpoints answer 429 past their rate.
* A plain-HTTP WebSocket login is refused unless a trusted proxy vouches
  for TLS.
"""

import socket
import ssl
import time

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from xmpp import insecure_ssl_context

HEADER_S = 2
IDLE_S = 3
HANDSHAKE_S = 3
PER_IP = 5
RATE = 5

HTTP_LIMITS = {
    "http": {
        "header_read_timeout_secs": HEADER_S,
        "idle_timeout_secs": IDLE_S,
        "connections_per_ip_max": PER_IP,
        "status_requests_per_sec": RATE,
    },
    "limits": {"handshake_timeout_secs": HANDSHAKE_S},
}


def tls_socket(node, source: str = "127.0.0.1") -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", node.http_port), timeout=10,
                                   source_address=(source, 0))
    return insecure_ssl_context().wrap_socket(raw, server_hostname=node.domain)


def closed_after(sock, trickle: bytes | None, within_s: float) -> float:
    """Sends `trickle` one byte a second (if given) until the peer closes;
    returns the seconds it took. Fails if the peer is still there after
    `within_s`."""
    start = time.monotonic()
    sock.settimeout(1.0)
    i = 0
    while time.monotonic() - start < within_s:
        if trickle is not None:
            try:
                sock.sendall(trickle[i % len(trickle):i % len(trickle) + 1])
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                return time.monotonic() - start
            i += 1
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - start
        except (socket.timeout, TimeoutError):
            continue
        except (ConnectionResetError, ssl.SSLError, OSError):
            return time.monotonic() - start
    raise AssertionError(f"still open after {within_s} s")


@pytest.mark.chorus(config=HTTP_LIMITS)
async def test_slowloris_headers_are_cut_at_the_header_timeout(node):
    s = tls_socket(node)
    took = closed_after(s, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100, HEADER_S + 5)
    print(f"slowloris request headers closed after {took:.1f} s (timeout {HEADER_S} s)")
    assert took >= HEADER_S - 0.5
    # The listener still serves everyone else.
    assert node.http_get("/healthz")[0] == 200


@pytest.mark.chorus(config=HTTP_LIMITS)
async def test_an_unfinished_tls_handshake_is_cut(node):
    raw = socket.create_connection(("127.0.0.1", node.http_port), timeout=10)
    took = closed_after(raw, b"\x16\x03\x01", HANDSHAKE_S + 5)
    print(f"unfinished HTTPS handshake closed after {took:.1f} s (timeout {HANDSHAKE_S} s)")
    assert took >= HANDSHAKE_S - 0.5


@pytest.mark.chorus(config=HTTP_LIMITS)
async def test_a_kept_alive_connection_with_no_next_request_is_closed(node):
    s = tls_socket(node)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(5)
    first = s.recv(4096)
    assert first.startswith(b"HTTP/1.1 200"), first
    took = closed_after(s, None, max(IDLE_S, HEADER_S) + 5)
    print(f"idle kept-alive connection closed after {took:.1f} s")
    assert took >= min(IDLE_S, HEADER_S) - 0.5


@pytest.mark.chorus(config=HTTP_LIMITS)
async def test_stream_header_slowloris_on_c2s_is_cut_at_the_handshake_timeout(node):
    raw = socket.create_connection(("127.0.0.1", node.c2s_port), timeout=10)
    header = (f"<?xml version='1.0'?><stream:stream to='{node.domain}' version='1.0' "
              "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
              + "x='" + "a" * 200).encode()
    took = closed_after(raw, header, HANDSHAKE_S + 5)
    print(f"c2s stream header at one byte a second closed after {took:.1f} s "
          f"(handshake timeout {HANDSHAKE_S} s)")
    assert took >= HANDSHAKE_S - 0.5


@pytest.mark.chorus(config=HTTP_LIMITS)
async def test_one_address_cannot_take_every_connection(node):
    held = [tls_socket(node, "127.0.2.1") for _ in range(PER_IP)]
    for s in held:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
    # One more from the same address is refused at once (no TLS at all).
    with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
        extra = tls_socket(node, "127.0.2.1")
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        if extra.recv(4096) == b"":
            raise ConnectionResetError("closed")
    # Another address is served.
    other = tls_socket(node, "127.0.2.2")
    other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    other.settimeout(5)
    assert other.recv(4096).startswith(b"HTTP/1.1 200")
    for s in held:
        s.close()
    print(f"address 127.0.2.1 held {PER_IP} connections; the next was refused")


@pytest.mark.chorus(config=HTTP_LIMITS)
async def test_status_endpoints_are_rate_limited_per_address(node):
    codes = [node.http_get("/archive/status")[0] for _ in range(RATE * 4)]
    passed = codes.count(200)
    print(f"{len(codes)} back-to-back /archive/status requests: {passed} answered, "
          f"{codes.count(429)} refused with 429")
    assert codes.count(429) > 0 and set(codes) <= {200, 429}
    assert RATE <= passed <= RATE * 2 + RATE, codes
    time.sleep(1.2)
    assert node.http_get("/healthz")[0] == 200, "the bucket refills"


@pytest.mark.chorus(config={"http": {"tls": False}})
async def test_plain_http_websocket_is_refused_without_a_trusted_proxy(node):
    url = f"ws://127.0.0.1:{node.http_port}/xmpp-websocket"
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(url, subprotocols=["xmpp"], proxy=None, open_timeout=10,
                              additional_headers={"X-Forwarded-Proto": "https"}):
            pass
    assert refused.value.response.status_code == 403
    assert b"TLS" in refused.value.response.body


@pytest.mark.chorus(config={"http": {"tls": False, "trusted_proxies": ["127.0.0.1"]}})
async def test_a_trusted_proxy_vouches_for_tls(node):
    url = f"ws://127.0.0.1:{node.http_port}/xmpp-websocket"
    with pytest.raises(InvalidStatus):
        async with ws_connect(url, subprotocols=["xmpp"], proxy=None, open_timeout=10):
            pass
    async with ws_connect(url, subprotocols=["xmpp"], proxy=None, open_timeout=10,
                          additional_headers={"X-Forwarded-Proto": "https"}) as ws:
        await ws.send(f"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='{node.domain}' "
                      "version='1.0'/>")
        opened = await ws.recv()
        assert "<open" in opened
