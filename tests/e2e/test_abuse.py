"""The abuse suite, part one: what a script with no account can do to the
c2s listener of a real node, and what it costs the node. Each test prints
its numbers (run with ``-s`` to see them).

* 10,000 unauthenticated connections from 40 addresses: a real user still
  logs in at once; the node holds at most its unauthenticated pool, closes
  the rest at once and the pool's own after the handshake timeout.
* An endless stream header: cut at the header bound, memory flat.
* HTTP, TLS or SSH bytes sent to the XMPP port: ``<not-well-formed/>`` at
  once, not after a timeout.
"""

import asyncio
import resource
import socket
import time

from raw import RawStream
from xmpp import connect

import pytest

FLOOD = 10_000
ADDRESSES = 40
UNAUTH_POOL = 600
UNAUTH_PER_IP = 16
# Long enough that the flood is still held when the user logs in.
HANDSHAKE_S = 120
# Connections opened at once: well inside the listen backlog.
BATCH = 100


def rss_kib(node) -> int:
    with open(f"/proc/{node.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def metric(node, name: str) -> float:
    """The sum of a metric's samples on the node's /metrics."""
    total = 0.0
    for line in node.http_get("/metrics")[1].splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def until(what: str, check, within_s: float):
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        await asyncio.sleep(0.05)


async def open_flood(node, n: int, addresses: int) -> list[socket.socket]:
    """n TCP connections to the node's c2s port from 127.0.1.1 ..
    127.0.1.<addresses>, in batches, each batch connected and decided by
    the node (admitted or refused, as its counters show) before the next,
    so none waits in the kernel's accept queue."""
    loop = asyncio.get_running_loop()
    base = metric(node, "chorus_connections_admitted_total") + metric(
        node, "chorus_connections_refused_total")
    socks: list[socket.socket] = []

    async def one(i):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((f"127.0.1.{1 + i % addresses}", 0))
        s.setblocking(False)
        socks.append(s)
        await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", node.c2s_port)), 30)

    for start in range(0, n, BATCH):
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + BATCH))))
        done = len(socks)
        decided = metric(node, "chorus_connections_admitted_total") + metric(
            node, "chorus_connections_refused_total") - base
        await until(f"the node decided every connection ({decided} of {done})", lambda: metric(
            node, "chorus_connections_admitted_total") + metric(
            node, "chorus_connections_refused_total") - base >= done, 30)
    return socks


@pytest.mark.chorus(config={"limits": {
    "unauthenticated_connections_max": UNAUTH_POOL,
    "unauthenticated_per_ip_max": UNAUTH_PER_IP,
    "handshake_timeout_secs": HANDSHAKE_S,
}})
async def test_ten_thousand_unauthenticated_connections_while_a_real_user_logs_in(node):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, FLOOD + 1000)), hard))
    rss_before = rss_kib(node)
    t0 = time.monotonic()
    socks = await open_flood(node, FLOOD, ADDRESSES)
    opened_s = time.monotonic() - t0
    try:
        held = metric(node, "chorus_connections_unauthenticated")
        refused = metric(node, "chorus_connections_refused_total")
        assert held <= UNAUTH_POOL, f"{held} unauthenticated connections held"
        # A real user logs in meanwhile, from her own address, through the
        # full pool: the address holding the most of it makes room.
        t1 = time.monotonic()
        alice = await connect(node, "alice", presence=True)
        login_s = time.monotonic() - t1
        rss_flood = rss_kib(node)
        evicted = metric(node, "chorus_connections_evicted_total")
        assert held == UNAUTH_POOL and evicted > 0, "the flood did not fill the pool"
        await alice.ping()
        for s in socks:
            s.close()
        await until("the pool is empty", lambda: metric(
            node, "chorus_connections_unauthenticated") == 0, 30)
        await alice.ping()
        await alice.close()
        print(f"\nflood: {FLOOD} connections from {ADDRESSES} addresses in {opened_s:.1f} s; "
              f"held by the node at most {held:.0f} (pool {UNAUTH_POOL}), refused at once "
              f"{refused:.0f}, evicted {evicted:.0f}; "
              f"alice logged in in {login_s * 1000:.0f} ms; RSS {rss_before} -> {rss_flood} KiB")
        assert refused + metric(node, "chorus_connections_admitted_total") >= FLOOD
    finally:
        for s in socks:
            s.close()


async def test_an_endless_stream_header_is_cut_and_memory_stays_flat(node):
    s = await RawStream.to_node(node)
    rss_before = rss_kib(node)
    await s.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                 "xmlns:stream='http://etherx.jabber.org/streams' to='" + node.domain + "'")
    sent = 0
    chunk = " ".join(f"a{i}='{'x' * 200}'" for i in range(5)).encode()
    # An attacker's endless header, a kilobyte at a time, until the node
    # answers (or 16 MiB have gone, which would be a failure).
    while sent < 16 * 1024 * 1024 and not s.raw_in and not s.eof:
        await s.send(b" " + chunk)
        sent += len(chunk) + 1
        try:
            await s._read_some(0.02)
        except asyncio.TimeoutError:
            pass
    cond = await s.stream_error()
    rss_after = rss_kib(node)
    print(f"\nendless header: cut after at most {sent} bytes sent with "
          f"<{cond}/>; RSS {rss_before} -> {rss_after} KiB")
    assert cond == "policy-violation"
    assert rss_after - rss_before < 32 * 1024, "the node's memory grew with the header"


@pytest.mark.parametrize("junk", [
    b"GET /xmpp-websocket HTTP/1.1\r\nHost: chorus\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    b"SSH-2.0-OpenSSH_9.2\r\n",
])
async def test_bytes_that_are_not_xml_end_the_stream_at_once(node, junk):
    s = await RawStream.to_node(node)
    t0 = time.monotonic()
    await s.send(junk)
    cond = await s.stream_error(timeout=5)
    took = time.monotonic() - t0
    assert cond == "not-well-formed"
    await s.wait_closed(timeout=5)
    print(f"\n{junk[:12]!r}: <not-well-formed/> after {took * 1000:.0f} ms")



@pytest.mark.chorus(config={"limits": {"handshake_timeout_secs": 2}})
async def test_a_connection_that_never_authenticates_is_closed_at_the_handshake_timeout(node):
    s = await RawStream.to_node(node)
    t0 = time.monotonic()
    await s.open_stream()
    cond = await s.stream_error(timeout=10)
    took = time.monotonic() - t0
    print(f"\nsilent connection: <{cond}/> after {took:.1f} s (timeout 2 s)")
    assert cond == "connection-timeout"
    assert 1.5 < took < 8
