"""Raw XMPP-over-TCP client for protocol-edge tests.

No XMPP library: asyncio streams + ``ssl`` + ``xml.etree`` pull parsing, so
tests control every byte (auth retries on one stream, malformed XML, huge
stanzas, XEP-0198 counters...). Every read has a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl
import struct
import uuid
import xml.etree.ElementTree as ET

from xmpp import (NS_BIND, NS_CLIENT, NS_SASL, NS_SM, NS_STREAM, NS_STREAMS, NS_TLS,
                  condition_of, insecure_ssl_context, localname, namespace)

DEFAULT_TIMEOUT = 5.0


class StreamClosed(Exception):
    """The server closed the TCP connection (or the stream ended)."""


def q(tag_ns: str, name: str) -> str:
    return f"{{{tag_ns}}}{name}"


def stream_header(domain: str) -> str:
    return (f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' "
            f"xml:lang='en' xmlns='jabber:client' "
            f"xmlns:stream='http://etherx.jabber.org/streams'>")


def plain_b64(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


class RawStream:
    """One client-to-server XML stream over TCP (optionally TLS)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 domain: str):
        self.reader = reader
        self.writer = writer
        self.domain = domain
        self.raw_in = bytearray()      # everything received, for diagnostics
        self.elements: list[ET.Element] = []
        self.headers: list[ET.Element] = []
        self.stream_ended = False      # saw </stream:stream>
        self.eof = False               # TCP connection closed by the peer
        self.parse_error: str | None = None
        self.tls = False
        self.jid: str | None = None
        # XEP-0198 state
        self.sm_enabled = False
        self.sm_handled = 0            # stanzas received since <enable/>
        self.sm_id: str | None = None
        self._new_parser()

    # ------------------------------------------------------------ plumbing
    @classmethod
    async def open(cls, host: str, port: int, domain: str, *, direct_tls: bool = False,
                   timeout: float = DEFAULT_TIMEOUT, source: str | None = None) -> "RawStream":
        kw = {}
        if direct_tls:
            kw = {"ssl": insecure_ssl_context(), "server_hostname": domain}
        if source:
            kw["local_addr"] = (source, 0)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=1 << 24, **kw), timeout)
        s = cls(reader, writer, domain)
        s.tls = direct_tls
        return s

    @classmethod
    async def to_node(cls, node, *, direct_tls: bool = False,
                      source: str | None = None) -> "RawStream":
        """A stream to the node, from the loopback address `source` if given."""
        port = node.tls_port if direct_tls else node.c2s_port
        return await cls.open(getattr(node, "host", "127.0.0.1"), port, node.domain,
                              direct_tls=direct_tls, source=source)

    def _new_parser(self):
        self.parser = ET.XMLPullParser(("start", "end"))
        self.depth = 0

    def _feed(self, data: bytes):
        self.raw_in += data
        if self.parse_error is not None:
            return
        try:
            self.parser.feed(data)
            for event, el in self.parser.read_events():
                if event == "start":
                    if self.depth == 0:
                        self.headers.append(el)
                    self.depth += 1
                else:
                    self.depth -= 1
                    if self.depth == 0:
                        self.stream_ended = True
                    elif self.depth == 1:
                        self.elements.append(el)
                        if self.headers:
                            # Drop children from the root to save memory; keep
                            # its attributes (from, id, version...).
                            root = self.headers[-1]
                            for child in list(root):
                                root.remove(child)
        except ET.ParseError as e:
            # e.g. a bare <stream:error> without a stream header: keep the raw
            # bytes for regex-based inspection (see stream_error()).
            self.parse_error = str(e)

    async def _read_some(self, timeout: float) -> None:
        if self.eof:
            raise StreamClosed("connection closed")
        try:
            data = await asyncio.wait_for(self.reader.read(1 << 16), timeout)
        except asyncio.TimeoutError:
            # TimeoutError is an OSError since Python 3.11: let recv() see it
            # as a timeout, not as the connection closing.
            raise
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.eof = True
            return
        self._feed(data)

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, timeout: float = DEFAULT_TIMEOUT) -> ET.Element:
        """Next top-level element. Raises StreamClosed / asyncio.TimeoutError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.elements:
                el = self.elements.pop(0)
                await self._sm_account(el)
                return el
            if self.eof or self.stream_ended or self.parse_error:
                raise StreamClosed(
                    f"stream closed (eof={self.eof}, ended={self.stream_ended}, "
                    f"parse_error={self.parse_error}); received: {self.text()[-500:]!r}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError(
                    f"no element within {timeout}s; received so far: {self.text()[-500:]!r}")
            try:
                await self._read_some(remaining)
            except asyncio.TimeoutError:
                pass

    async def _sm_account(self, el: ET.Element) -> None:
        if not self.sm_enabled:
            return
        if namespace(el.tag) == NS_CLIENT and localname(el.tag) in ("message", "presence", "iq"):
            self.sm_handled += 1
        elif el.tag == q(NS_SM, "r"):
            await self.send(f"<a xmlns='{NS_SM}' h='{self.sm_handled}'/>")

    async def expect(self, pred, timeout: float = DEFAULT_TIMEOUT, what: str = "element"
                     ) -> ET.Element:
        """Read until an element matching ``pred`` arrives (others are skipped).

        A stream error that is not what we wait for fails loudly.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        skipped = []
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"no {what} within {timeout}s; skipped {skipped}")
            el = await self.recv(remaining)
            if pred(el):
                return el
            if el.tag == q(NS_STREAM, "error"):
                raise AssertionError(f"stream error while waiting for {what}: "
                                     f"{ET.tostring(el, encoding='unicode')}")
            skipped.append(ET.tostring(el, encoding="unicode")[:200])

    async def expect_tag(self, tag: str, timeout: float = DEFAULT_TIMEOUT) -> ET.Element:
        return await self.expect(lambda e: e.tag == tag, timeout, tag)

    def text(self) -> str:
        return self.raw_in.decode("utf-8", "replace")

    # ------------------------------------------------------------ stream steps
    async def open_stream(self, timeout: float = DEFAULT_TIMEOUT) -> ET.Element:
        """Send a (new) stream header and return the server's <stream:features/>."""
        self._new_parser()
        self.elements.clear()
        self.stream_ended = False
        await self.send(stream_header(self.domain))
        feats = await self.expect_tag(q(NS_STREAM, "features"), timeout)
        return feats

    async def starttls(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        await self.send(f"<starttls xmlns='{NS_TLS}'/>")
        el = await self.recv(timeout)
        assert el.tag == q(NS_TLS, "proceed"), f"expected <proceed/>, got {ET.tostring(el)!r}"
        await asyncio.wait_for(
            self.writer.start_tls(insecure_ssl_context(), server_hostname=self.domain),
            timeout)
        self.tls = True

    async def auth_plain(self, user: str, password: str,
                         timeout: float = DEFAULT_TIMEOUT) -> ET.Element:
        """Send SASL PLAIN; returns the <success/> or <failure/> element."""
        await self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>"
                        f"{plain_b64(user, password)}</auth>")
        return await self.expect(
            lambda e: namespace(e.tag) == NS_SASL and localname(e.tag) in ("success", "failure")
            or e.tag == q(NS_STREAM, "error"),
            timeout, "SASL outcome")

    async def bind(self, resource: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> str:
        res = f"<resource>{resource}</resource>" if resource else ""
        await self.send(f"<iq type='set' id='bind1'><bind xmlns='{NS_BIND}'>{res}</bind></iq>")
        el = await self.expect(lambda e: e.get("id") == "bind1", timeout, "bind result")
        assert el.get("type") == "result", f"bind failed: {ET.tostring(el, encoding='unicode')}"
        self.jid = el.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid").text
        return self.jid

    async def tls_and_features(self) -> ET.Element:
        """Open stream, STARTTLS (unless direct TLS), reopen; returns features."""
        feats = await self.open_stream()
        if not self.tls:
            await self.starttls()
            feats = await self.open_stream()
        return feats

    async def authenticate(self, user: str, password: str) -> ET.Element:
        """TLS + PLAIN auth + stream restart; returns post-auth features."""
        await self.tls_and_features()
        res = await self.auth_plain(user, password)
        assert localname(res.tag) == "success", (
            f"auth failed: {ET.tostring(res, encoding='unicode')}")
        return await self.open_stream()

    async def login(self, user: str, password: str, resource: str | None = None,
                    presence: bool = False) -> str:
        await self.authenticate(user, password)
        jid = await self.bind(resource)
        if presence:
            await self.send("<presence/>")
        return jid

    async def iq(self, itype: str, payload: str, to: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> ET.Element:
        iq_id = uuid.uuid4().hex[:12]
        to_attr = f" to='{to}'" if to else ""
        await self.send(f"<iq type='{itype}' id='{iq_id}'{to_attr}>{payload}</iq>")
        return await self.expect(
            lambda e: localname(e.tag) == "iq" and e.get("id") == iq_id, timeout, "iq reply")

    async def ping(self, timeout: float = DEFAULT_TIMEOUT) -> ET.Element:
        res = await self.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=self.domain,
                            timeout=timeout)
        assert res.get("type") == "result", ET.tostring(res, encoding="unicode")
        return res

    async def message(self, to: str, body: str, mtype: str = "chat",
                      mid: str | None = None) -> str:
        mid = mid or uuid.uuid4().hex[:12]
        await self.send(f"<message to='{to}' type='{mtype}' id='{mid}'>"
                        f"<body>{body}</body></message>")
        return mid

    # ------------------------------------------------------------ endings
    async def stream_error(self, timeout: float = 10.0) -> str:
        """Read until a stream error; returns its condition.

        Falls back to a regex over the raw bytes when the XML could not be
        parsed (e.g. the server replied before sending a stream header).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for el in self.elements:
                if el.tag == q(NS_STREAM, "error"):
                    self.elements.remove(el)
                    cond = condition_of(el, NS_STREAMS)
                    assert cond, f"stream error without condition: {ET.tostring(el)!r}"
                    return cond
            cond = self._regex_stream_error()
            if cond and (self.parse_error or self.eof or self.stream_ended):
                return cond
            if self.eof or self.stream_ended:
                raise StreamClosed(f"closed without stream error; received: "
                                   f"{self.text()[-800:]!r}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError(
                    f"no stream error within {timeout}s; received: {self.text()[-800:]!r}")
            try:
                await self._read_some(remaining)
            except asyncio.TimeoutError:
                pass

    def _regex_stream_error(self) -> str | None:
        m = re.search(r"<(?:[\w-]+:)?error\b[^>]*>\s*<([\w-]+)[^>]*xmlns=['\"]"
                      + re.escape(NS_STREAMS), self.text())
        return m.group(1) if m else None

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Wait until the server closes the TCP connection."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.eof:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"connection still open after {timeout}s")
            try:
                await self._read_some(remaining)
            except asyncio.TimeoutError:
                pass

    async def close(self) -> None:
        """Clean close: </stream:stream>, then close the socket."""
        try:
            if not self.eof:
                await self.send("</stream:stream>")
        except (ConnectionError, OSError):
            pass
        self.abort(rst=False)

    def abort(self, rst: bool = True) -> None:
        """Drop the connection; with rst=True send a TCP RST (no TLS close_notify)."""
        transport = self.writer.transport
        sock = transport.get_extra_info("socket")
        if rst and sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        transport.abort()
        self.eof = True


async def raw_login(node, user: str, resource: str | None = None, *,
                    presence: bool = False, direct_tls: bool = False) -> RawStream:
    s = await RawStream.to_node(node, direct_tls=direct_tls)
    await s.login(user, node.password(user), resource, presence=presence)
    return s
