"""A thin, test-friendly wrapper around slixmpp.

Usage inside an ``async def`` test::

    alice = await connect(node, "alice", resource="phone", presence=True)
    bob = await connect(node, "bob")
    alice.send_message(node.jid("bob"), "hi")
    msg = await bob.next_message(timeout=5)
    assert msg["body"] == "hi"

Every wait has a timeout. Nothing sleeps to synchronise: waits are for
stanzas/events; ``sync()`` is an IQ round trip to the server, which (since a
server handles one client stream in order) guarantees that everything the
client sent before has been processed by the server.

All received top-level stanzas (messages, presences, iq get/set pushes) are
kept in an inbox; the ``next_*`` helpers remove and return the first stanza
matching a predicate, so unrelated stanzas arriving in between are never lost.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
import xml.etree.ElementTree as ET
from typing import Callable, Iterable

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout  # noqa: F401  (re-exported)

from stanzas import (  # noqa: F401  (re-exported)
    NS_CLIENT,
    NS_STREAM,
    NS_STREAMS,
    NS_STANZAS,
    NS_SASL,
    NS_TLS,
    NS_BIND,
    NS_ROSTER,
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_PING,
    NS_VERSION,
    NS_TIME,
    NS_VCARD,
    NS_BLOCKING,
    NS_CARBONS,
    NS_FORWARD,
    NS_DELAY,
    NS_SM,
    NS_CSI,
    NS_REGISTER,
    NS_FRAMING,
    bare,
    condition_of,
    jid_matches,
    localname,
    namespace,
    parse_roster,
    stanza_error_condition,
)

log = logging.getLogger("e2e.xmpp")

DEFAULT_TIMEOUT = 5.0
CONNECT_TIMEOUT = 20.0

DEFAULT_PLUGINS = (
    "xep_0030",  # service discovery
    "xep_0054",  # vcard-temp
    "xep_0092",  # software version
    "xep_0191",  # blocking command
    "xep_0199",  # ping
    "xep_0202",  # entity time
    "xep_0203",  # delayed delivery
    "xep_0280",  # carbons
    "xep_0297",  # forwarding (carbons dependency)
    "xep_0352",  # client state indication
)

_ALL_CLIENTS: list["Client"] = []


class AuthFailed(Exception):
    def __init__(self, conditions: list[str]):
        self.conditions = conditions
        self.condition = conditions[-1] if conditions else None
        super().__init__(f"SASL authentication failed: {conditions}")


class ConnectFailed(Exception):
    pass


def insecure_ssl_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def close_all_clients() -> None:
    """Close every client created in this event loop (called after each test)."""
    clients = list(_ALL_CLIENTS)
    _ALL_CLIENTS.clear()
    results = await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    for c, r in zip(clients, results, strict=True):
        if isinstance(r, BaseException):  # best effort cleanup
            log.debug("error closing %s: %r", c.name, r)


class Client:
    """One slixmpp ClientXMPP session plus an inbox of received stanzas."""

    def __init__(self, node, user: str, password: str | None = None, *,
                 resource: str | None = None, mech: str | None = None,
                 direct_tls: bool = False, sm: bool = False,
                 plugins: Iterable[str] = ()):
        self.node = node
        self.user = user
        self.requested_resource = resource
        self.direct_tls = direct_tls
        self.name = f"{user}/{resource or '?'}"
        pw = node.password(user) if password is None else password
        self.xmpp = x = slixmpp.ClientXMPP(node.jid(user, resource), pw, sasl_mech=mech)
        x.ssl_context = insecure_ssl_context()
        x.enable_direct_tls = direct_tls
        x.enable_starttls = not direct_tls
        x.enable_plaintext = False
        x.use_ipv6 = False
        x.whitespace_keepalive = False
        # Subscriptions are handled explicitly by the tests.
        x.auto_authorize = None
        x.auto_subscribe = False
        for p in (*DEFAULT_PLUGINS, *plugins):
            x.register_plugin(p)
        if sm:
            x.register_plugin("xep_0198")

        self._inbox: list = []
        self._changed = asyncio.Event()
        self._done: asyncio.Future | None = None
        self.disconnected = asyncio.Event()
        self.stream_errors: list[str] = []
        self.stream_error_event = asyncio.Event()
        self.auth_failures: list[str] = []
        self.sm_enabled: ET.Element | None = None
        self.sm_enabled_event = asyncio.Event()
        self.features_seen: list[ET.Element] = []

        x.add_filter("in", self._on_in)
        x.add_event_handler("stream_negotiated", self._on_negotiated)
        x.add_event_handler("session_resumed", self._on_resumed)
        x.add_event_handler("failed_auth", self._on_failed_auth)
        x.add_event_handler("failed_all_auth", self._on_failed_all_auth)
        x.add_event_handler("disconnected", self._on_disconnected)
        x.add_event_handler("stream_error", self._on_stream_error)
        x.add_event_handler("sm_enabled", self._on_sm_enabled)
        _ALL_CLIENTS.append(self)

    # ---------------------------------------------------------- event plumbing
    def _on_in(self, stanza):
        xml = stanza.xml
        tag = xml.tag
        if tag == f"{{{NS_STREAM}}}features":
            self.features_seen.append(xml)
        elif namespace(tag) == NS_CLIENT:
            name = localname(tag)
            if name in ("message", "presence") or (
                    name == "iq" and xml.get("type") in ("get", "set")):
                self._inbox.append(stanza)
                self._changed.set()
        return stanza

    def _finish(self, value=None, exc: BaseException | None = None):
        if self._done is not None and not self._done.done():
            if exc is not None:
                self._done.set_exception(exc)
            else:
                self._done.set_result(value)

    def _on_negotiated(self, _event):
        if self.xmpp.sessionstarted:
            self._finish("session")
        else:
            self._finish(exc=ConnectFailed(f"{self.name}: stream negotiated without a session"))

    def _on_resumed(self, _event):
        self._finish("resumed")

    def _on_failed_auth(self, stanza):
        cond = condition_of(stanza.xml, NS_SASL) or str(stanza["condition"])
        self.auth_failures.append(cond)

    def _on_failed_all_auth(self, _event):
        self._finish(exc=AuthFailed(list(self.auth_failures)))

    def _on_connection_failed(self, error):
        self._finish(exc=ConnectFailed(f"{self.name}: cannot connect ({error})"))

    def _on_disconnected(self, reason):
        self.disconnected.set()
        self._changed.set()
        self._finish(exc=ConnectFailed(
            f"{self.name}: disconnected during connect ({reason}); "
            f"stream errors={self.stream_errors} auth failures={self.auth_failures}"))

    def _on_stream_error(self, error):
        cond = condition_of(error.xml, NS_STREAMS) or str(error["condition"])
        self.stream_errors.append(cond)
        self.stream_error_event.set()

    def _on_sm_enabled(self, stanza):
        self.sm_enabled = stanza.xml
        self.sm_enabled_event.set()

    # ------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int:
        return self.node.tls_port if self.direct_tls else self.node.c2s_port

    async def connect(self, timeout: float = CONNECT_TIMEOUT, presence: bool = False,
                      fail_fast: bool = False):
        """Connect, authenticate, bind; wait until stream negotiation finished.

        Raises AuthFailed (with the SASL condition) or ConnectFailed.
        Returns "session" (or "resumed" for a resumed XEP-0198 stream).
        slixmpp retries a refused TCP connection by itself until `timeout`;
        with `fail_fast` a refused connection raises ConnectFailed at once
        (a caller with its own back-off, like the chaos workload, retries
        as soon as the node is back instead of waiting out the timeout).
        """
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self.disconnected.clear()
        if fail_fast:
            self.xmpp.add_event_handler("connection_failed", self._on_connection_failed,
                                        disposable=True)
        self.xmpp.connect(host=getattr(self.node, "host", "127.0.0.1"), port=self.port)
        try:
            result = await asyncio.wait_for(asyncio.shield(self._done), timeout)
        except asyncio.TimeoutError:
            self.xmpp.cancel_connection_attempt()
            self.xmpp.abort()
            raise ConnectFailed(
                f"{self.name}: no session within {timeout}s (stream errors="
                f"{self.stream_errors}, auth failures={self.auth_failures})") from None
        except BaseException:
            self.xmpp.cancel_connection_attempt()
            self.xmpp.abort()
            raise
        self.name = str(self.xmpp.boundjid) or self.name
        if presence:
            self.send_presence()
            await self.sync()
        return result

    async def close(self, timeout: float = 5.0) -> None:
        """Clean disconnect (</stream:stream>); aborts if that takes too long."""
        if self in _ALL_CLIENTS:
            _ALL_CLIENTS.remove(self)
        self.xmpp.cancel_connection_attempt()
        if self.xmpp.transport is None:
            return
        try:
            await asyncio.wait_for(self.xmpp.disconnect(wait=2.0), timeout)
        except (asyncio.TimeoutError, Exception):
            self.xmpp.abort()

    disconnect = close

    def kill(self) -> None:
        """Abrupt disconnect: TCP RST, no </stream:stream>, no TLS close_notify."""
        t = self.xmpp.transport
        if t is None:
            return
        sock = t.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        t.abort()

    async def wait_disconnected(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self.disconnected.wait(), timeout)

    async def wait_stream_error(self, timeout: float = 10.0) -> str:
        """Wait for a <stream:error/>; returns its condition name."""
        await asyncio.wait_for(self.stream_error_event.wait(), timeout)
        return self.stream_errors[-1]

    async def wait_sm_enabled(self, timeout: float = DEFAULT_TIMEOUT) -> ET.Element:
        await asyncio.wait_for(self.sm_enabled_event.wait(), timeout)
        return self.sm_enabled

    @property
    def connected(self) -> bool:
        return self.xmpp.transport is not None

    @property
    def jid(self) -> str:
        return str(self.xmpp.boundjid.full)

    @property
    def bare(self) -> str:
        return str(self.xmpp.boundjid.bare)

    @property
    def resource(self) -> str:
        return str(self.xmpp.boundjid.resource)

    @property
    def plugin(self):
        return self.xmpp.plugin

    # -------------------------------------------------------------- sending
    def send_message(self, to: str, body: str | None, mtype: str | None = "chat",
                     id: str | None = None, extra: Iterable[str] = ()) -> str:
        msg = self.xmpp.make_message(mto=to, mbody=body, mtype=mtype)
        msg["id"] = id or self.xmpp.new_id()
        for x in extra:
            msg.append(ET.fromstring(x))
        msg.send()
        return msg["id"]

    def send_presence(self, show: str | None = None, status: str | None = None,
                      priority: int | None = None, to: str | None = None,
                      ptype: str | None = None) -> None:
        p = self.xmpp.Presence()
        if to:
            p["to"] = to
        if ptype:
            p["type"] = ptype
        if show:
            p["show"] = show
        if status is not None:
            p["status"] = status
        if priority is not None:
            p["priority"] = priority
        p.send()

    async def iq(self, itype: str, payload: str | ET.Element | None,
                 to: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        """Send an IQ with a raw XML payload; returns the result Iq.

        Raises slixmpp.exceptions.IqError on type='error' and IqTimeout.
        """
        iq = self.xmpp.Iq()
        iq["type"] = itype
        if to:
            iq["to"] = to
        if payload is not None:
            iq.append(ET.fromstring(payload) if isinstance(payload, str) else payload)
        return await iq.send(timeout=timeout)

    async def iq_get(self, payload, to: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        return await self.iq("get", payload, to=to, timeout=timeout)

    async def iq_set(self, payload, to: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        return await self.iq("set", payload, to=to, timeout=timeout)

    async def ping(self, to: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        """XEP-0199 ping (raises on error, unlike slixmpp's ping())."""
        return await self.xmpp.plugin["xep_0199"].send_ping(
            to or self.node.domain, timeout=timeout)

    async def sync(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Round trip to the server: everything sent before has been processed."""
        await self.ping(timeout=timeout)

    # ------------------------------------------------------------ receiving
    async def _next(self, pred: Callable, timeout: float, what: str):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, st in enumerate(self._inbox):
                if pred(st):
                    del self._inbox[i]
                    return st
            remaining = deadline - loop.time()
            if remaining <= 0:
                pending = [ET.tostring(s.xml, encoding="unicode")[:300] for s in self._inbox]
                raise AssertionError(
                    f"{self.name}: no {what} within {timeout}s; unconsumed inbox: {pending}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    @staticmethod
    def _is_carbon(st) -> bool:
        return (st.xml.find(f"{{{NS_CARBONS}}}received") is not None
                or st.xml.find(f"{{{NS_CARBONS}}}sent") is not None)

    def _message_pred(self, frm=None, body=None, pred=None, errors=False, carbons=False):
        def p(st):
            if localname(st.xml.tag) != "message":
                return False
            is_err = st.xml.get("type") == "error"
            if is_err != errors:
                return False
            if not carbons and self._is_carbon(st):
                return False
            if not jid_matches(st["from"], frm):
                return False
            if body is not None and st["body"] != body:
                return False
            return pred(st) if pred else True
        return p

    async def next_message(self, timeout: float = DEFAULT_TIMEOUT, *, frm: str | None = None,
                           body: str | None = None, pred: Callable | None = None):
        """Next non-error, non-carbon <message/>."""
        return await self._next(self._message_pred(frm, body, pred), timeout,
                                f"message (from={frm}, body={body!r})")

    async def next_error_message(self, timeout: float = DEFAULT_TIMEOUT, *,
                                 frm: str | None = None):
        return await self._next(self._message_pred(frm, errors=True), timeout,
                                f"error message (from={frm})")

    async def next_carbon(self, kind: str, timeout: float = DEFAULT_TIMEOUT) -> ET.Element:
        """Next XEP-0280 carbon of ``kind`` ('received' or 'sent').

        Returns the forwarded inner <message/> element.
        """
        path = f"{{{NS_CARBONS}}}{kind}/{{{NS_FORWARD}}}forwarded/{{{NS_CLIENT}}}message"

        def p(st):
            return localname(st.xml.tag) == "message" and st.xml.find(path) is not None
        st = await self._next(p, timeout, f"{kind} carbon")
        assert bare(st["from"]) == self.bare, "carbon not from own bare JID"
        return st.xml.find(path)

    async def expect_no_carbon(self, kind: str, within: float = 1.0) -> None:
        try:
            inner = await self.next_carbon(kind, within)
        except AssertionError:
            return
        raise AssertionError(f"{self.name}: unexpected {kind} carbon: "
                             f"{ET.tostring(inner, encoding='unicode')}")

    async def expect_no_message(self, within: float = 1.0, *, frm: str | None = None,
                                body: str | None = None, errors: bool = False) -> None:
        """Assert no matching message arrives within ``within`` seconds."""
        p = self._message_pred(frm, body, errors=errors)
        try:
            st = await self._next(p, within, "message")
        except AssertionError:
            return
        raise AssertionError(f"{self.name}: unexpected message: "
                             f"{ET.tostring(st.xml, encoding='unicode')}")

    async def next_presence(self, timeout: float = DEFAULT_TIMEOUT, *, frm: str | None = None,
                            ptype: str | None = None, pred: Callable | None = None):
        """Next <presence/>; ptype 'available' matches presence without type."""
        def p(st):
            if localname(st.xml.tag) != "presence":
                return False
            t = st.xml.get("type") or "available"
            if ptype is not None and t != ptype:
                return False
            if not jid_matches(st["from"], frm):
                return False
            return pred(st) if pred else True
        return await self._next(p, timeout, f"presence (from={frm}, type={ptype})")

    async def expect_no_presence(self, within: float = 1.0, *, frm: str | None = None,
                                 ptype: str | None = None) -> None:
        try:
            st = await self.next_presence(within, frm=frm, ptype=ptype)
        except AssertionError:
            return
        raise AssertionError(f"{self.name}: unexpected presence: "
                             f"{ET.tostring(st.xml, encoding='unicode')}")

    async def next_iq(self, timeout: float = DEFAULT_TIMEOUT, *, child_ns: str | None = None):
        """Next incoming iq get/set (e.g. roster or blocking pushes)."""
        def p(st):
            if localname(st.xml.tag) != "iq":
                return False
            if child_ns is None:
                return True
            return any(namespace(c.tag) == child_ns for c in st.xml)
        return await self._next(p, timeout, f"iq push ({child_ns})")

    async def next_roster_push(self, timeout: float = DEFAULT_TIMEOUT, *,
                               jid: str | None = None,
                               subscription: str | None = None) -> dict[str, dict]:
        """Next roster push (optionally: one that carries ``jid`` with
        ``subscription``); returns its items like parse_roster()."""
        def p(st):
            x = st.xml
            if localname(x.tag) != "iq" or x.get("type") != "set":
                return False
            if x.find(f"{{{NS_ROSTER}}}query") is None:
                return False
            items = parse_roster(x)
            if jid is not None and jid not in items:
                return False
            if subscription is not None and items.get(jid, {}).get("subscription") != subscription:
                return False
            return True
        iq = await self._next(p, timeout, f"roster push ({jid}, {subscription})")
        frm = iq.xml.get("from")
        assert frm in (None, "", self.bare), f"roster push from {frm!r}"
        return parse_roster(iq.xml)

    def drop_inbox(self) -> None:
        self._inbox.clear()

    # ------------------------------------------------------------- roster
    async def roster_get(self, ver: str | None = None):
        """Returns (items, ver, raw iq xml); items: {jid: {subscription,...}}."""
        q = f"<query xmlns='{NS_ROSTER}'/>"
        if ver is not None:
            q = f"<query xmlns='{NS_ROSTER}' ver='{ver}'/>"
        res = await self.iq_get(q)
        query = res.xml.find(f"{{{NS_ROSTER}}}query")
        return parse_roster(res.xml), (query.get("ver") if query is not None else None), res.xml

    async def roster_set(self, jid: str, name: str | None = None,
                         groups: Iterable[str] = (), remove: bool = False):
        item = ET.Element(f"{{{NS_ROSTER}}}item", {"jid": jid})
        if remove:
            item.set("subscription", "remove")
        if name is not None:
            item.set("name", name)
        for g in groups:
            ET.SubElement(item, f"{{{NS_ROSTER}}}group").text = g
        q = ET.Element(f"{{{NS_ROSTER}}}query")
        q.append(item)
        return await self.iq_set(q)


async def connect(node, user: str, password: str | None = None, *,
                  presence: bool = False, timeout: float = CONNECT_TIMEOUT, **kw) -> Client:
    """Create a Client and connect it (see Client for keyword arguments)."""
    c = Client(node, user, password, **kw)
    await c.connect(timeout=timeout, presence=presence)
    return c


async def try_login(node, user: str, password: str | None = None, **kw) -> str | None:
    """Attempt a login; returns None on success or the SASL failure condition.

    The client is disconnected afterwards either way.
    """
    c = Client(node, user, password, **kw)
    try:
        await c.connect()
    except AuthFailed as e:
        return e.condition or "unknown"
    finally:
        await c.close()
    return None


async def make_friends(a: Client, b: Client, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Full RFC 6121 subscription handshake both ways (a<->b become 'both').

    Both clients must be connected and have sent initial presence.
    """
    for x, y in ((a, b), (b, a)):
        x.send_presence(to=y.bare, ptype="subscribe")
        await y.next_presence(timeout, frm=x.bare, ptype="subscribe")
        y.send_presence(to=x.bare, ptype="subscribed")
        await x.next_presence(timeout, frm=y.bare, ptype="subscribed")
    # Make sure both servers-side states settled before the caller goes on.
    await a.sync()
    await b.sync()
