"""A fault-injecting TCP proxy for the cluster tests (127.0.0.1 only).

The proxy runs its own asyncio event loop in a daemon thread, so the test's
event loop (whatever it is) never has to drive it, and a test can cut or
heal links from synchronous fixture code as well as from ``async def`` test
bodies.

    p = Proxy()
    port = p.add("a1->b1", 0, b1_cluster_port, tags={"a", "b"})  # 0: pick a port
    ... point a1's peer address for b1 at 127.0.0.1:<port> ...
    p.cut("b")     # every route tagged "b": live connections closed (RST),
                   # new connections accepted and closed at once
    p.heal("b")    # new connections are forwarded again
    p.stop()

A route is cut while any of its tags is cut, so ``cut("a"); cut("b");
heal("a")`` leaves the routes tagged "b" cut. Every route also carries its
own name as a tag: ``cut("a1->c1")`` breaks just that one direction.

WAN emulation (used by the chaos suite): ``p.set_wan("c", delay_ms=80,
jitter_ms=20, loss=0.02)`` makes every route tagged "c" hold each chunk for
delay +- jitter ms and, with probability ``loss`` per chunk, stall it a
further ``stall_ms`` (200 ms: a TCP retransmission, since a TCP stream never
loses bytes, only delivers them late). Bytes always leave in the order they
arrived. ``p.clear_wan("c")`` forwards at full speed again. Routes without
WAN settings take the original direct path.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import threading
from dataclasses import dataclass, field

log = logging.getLogger("e2e.proxy")

HOST = "127.0.0.1"
CALL_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
CHUNK = 64 * 1024
STALL_MS = 200.0


@dataclass
class Wan:
    """Per-route WAN knobs: one-way delay, uniform jitter, per-chunk loss
    modelled as a retransmission stall of ``stall_ms``."""
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    stall_ms: float = STALL_MS
    rng: random.Random = field(default_factory=random.Random)

    def hold_s(self) -> float:
        ms = self.delay_ms
        if self.jitter_ms:
            ms += self.rng.uniform(-self.jitter_ms, self.jitter_ms)
        if self.loss and self.rng.random() < self.loss:
            ms += self.stall_ms
        return max(0.0, ms) / 1000.0


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Close a connection abruptly (RST), like a dropped network path."""
    if writer is None:
        return
    t = writer.transport
    sock = t.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    t.abort()


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list = field(default_factory=list)

    def abort(self) -> None:
        for t in self.tasks:
            t.cancel()
        _rst(self.client)
        _rst(self.upstream)


@dataclass(eq=False)
class Route:
    name: str
    listen_port: int
    target_port: int
    tags: frozenset
    server: asyncio.base_events.Server | None = None
    conns: set = field(default_factory=set)
    accepted: int = 0   # connections forwarded
    refused: int = 0    # connections accepted and closed because the route was cut
    wan: Wan | None = None  # WAN emulation (None: forward at once)


class Proxy:
    def __init__(self):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="e2e-proxy", daemon=True)
        self._routes: dict[str, Route] = {}
        self._cut_tags: set[str] = set()
        self._stopped = False
        self._thread.start()

    # ---------------------------------------------------------------- plumbing
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro, timeout: float = CALL_TIMEOUT_S):
        """Run a coroutine on the proxy loop and wait for its result."""
        assert not self._stopped, "proxy stopped"
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    def _is_cut(self, route: Route) -> bool:
        return bool(route.tags & self._cut_tags)

    async def _handle(self, route: Route, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        if self._is_cut(route):
            route.refused += 1
            _rst(writer)
            return
        conn = _Conn(client=writer)
        route.conns.add(conn)
        try:
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(HOST, route.target_port), CONNECT_TIMEOUT_S)
            except (OSError, asyncio.TimeoutError):
                _rst(writer)
                return
            conn.upstream = up_writer
            if self._is_cut(route) or conn not in route.conns:
                # Cut while we were connecting.
                conn.abort()
                return
            route.accepted += 1
            a = asyncio.ensure_future(self._pipe(reader, up_writer, route))
            b = asyncio.ensure_future(self._pipe(up_reader, writer, route))
            conn.tasks = [a, b]
            await asyncio.gather(a, b, return_exceptions=True)
        finally:
            route.conns.discard(conn)
            for w in (conn.client, conn.upstream):
                if w is not None and not w.transport.is_closing():
                    w.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    route: Route | None = None) -> None:
        # Chunks held back by WAN emulation: (due loop time, bytes), in order.
        queue: asyncio.Queue = asyncio.Queue()
        sender: asyncio.Future | None = None
        loop = asyncio.get_running_loop()

        async def send_due() -> None:
            while True:
                due, chunk = await queue.get()
                if chunk is None:
                    return
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()

        last_due = 0.0
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                wan = route.wan if route is not None else None
                if wan is None and sender is None:
                    writer.write(data)
                    await writer.drain()
                    continue
                if sender is None:
                    sender = asyncio.ensure_future(send_due())
                hold = wan.hold_s() if wan is not None else 0.0
                # Never overtake an earlier chunk: byte order is kept.
                last_due = max(last_due, loop.time() + hold)
                queue.put_nowait((last_due, data))
            if sender is not None:
                queue.put_nowait((0.0, None))
                await sender
        except (OSError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
            # Half-close so the other direction can finish, as TCP would.
            try:
                if writer.can_write_eof() and not writer.transport.is_closing():
                    writer.write_eof()
            except (OSError, RuntimeError):
                pass

    # ----------------------------------------------------------------- public
    def add(self, name: str, listen_port: int, target_port: int,
            tags=frozenset()) -> int:
        """Listen on 127.0.0.1:listen_port (0: any free port) and forward to
        127.0.0.1:target_port. Returns the port actually listened on."""
        assert name not in self._routes, f"route {name} exists"
        # The route's own name is a tag too, so one route can be cut alone.
        route = Route(name, listen_port, target_port, frozenset(tags) | {name})

        async def start():
            route.server = await asyncio.start_server(
                lambda r, w: self._handle(route, r, w), HOST, listen_port,
                reuse_address=True)
            return route.server.sockets[0].getsockname()[1]

        route.listen_port = self._call(start())
        self._routes[name] = route
        log.info("proxy route %s: %d -> %d tags=%s", name, route.listen_port,
                 target_port, sorted(route.tags))
        return route.listen_port

    def port(self, name: str) -> int:
        return self._routes[name].listen_port

    def routes(self, tag: str | None = None) -> list[Route]:
        return [r for r in self._routes.values() if tag is None or tag in r.tags]

    def cut(self, tag: str) -> int:
        """Cut every route carrying ``tag``; returns how many live
        connections were closed."""
        async def do():
            self._cut_tags.add(tag)
            n = 0
            for r in self._routes.values():
                if tag in r.tags:
                    for c in list(r.conns):
                        r.conns.discard(c)
                        c.abort()
                        n += 1
            return n

        n = self._call(do())
        log.info("proxy: cut %r (%d connections closed)", tag, n)
        return n

    def heal(self, tag: str) -> None:
        async def do():
            self._cut_tags.discard(tag)

        self._call(do())
        log.info("proxy: healed %r", tag)

    def set_wan(self, tag: str, delay_ms: float = 0.0, jitter_ms: float = 0.0,
                loss: float = 0.0, stall_ms: float = STALL_MS,
                seed: int | None = None) -> int:
        """WAN emulation on every route carrying ``tag`` (see the module
        docstring); applies to live and new connections. Returns how many
        routes it changed."""
        rng = random.Random(seed)

        async def do():
            n = 0
            for r in self._routes.values():
                if tag in r.tags:
                    r.wan = Wan(delay_ms, jitter_ms, loss, stall_ms,
                                random.Random(rng.random()))
                    n += 1
            return n

        n = self._call(do())
        log.info("proxy: wan %r delay=%sms jitter=%sms loss=%s (%d routes)",
                 tag, delay_ms, jitter_ms, loss, n)
        return n

    def clear_wan(self, tag: str | None = None) -> None:
        """Back to direct forwarding on the routes carrying ``tag`` (all: None)."""
        async def do():
            for r in self.routes(tag):
                r.wan = None

        self._call(do())

    def is_cut(self, tag: str) -> bool:
        return tag in self._cut_tags

    def live_connections(self, tag: str | None = None) -> int:
        async def do():
            return sum(len(r.conns) for r in self.routes(tag))

        return self._call(do())

    def stop(self) -> None:
        if self._stopped:
            return

        async def do():
            for r in self._routes.values():
                if r.server is not None:
                    r.server.close()
                for c in list(r.conns):
                    c.abort()
                r.conns.clear()
            for r in self._routes.values():
                if r.server is not None:
                    try:
                        await asyncio.wait_for(r.server.wait_closed(), 2)
                    except asyncio.TimeoutError:
                        pass
            # Let aborted transports and cancelled tasks finish.
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        try:
            self._call(do())
        finally:
            self._stopped = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()
