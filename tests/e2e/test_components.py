"""XEP-0114 external components and XEP-0357 push notifications with real
node processes: a slixmpp ComponentXMPP bot that users talk to, a wrong
secret refused, the TLS component listener, and a push app server (also a
component) woken when a message arrives for a user with no session."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import ssl
import tempfile
import time
from pathlib import Path

import pytest
import slixmpp
from slixmpp.xmlstream import ET

from chorus_node import free_ports
from test_compliance import archived
from xmpp import Client, connect, insecure_ssl_context

SECRET = "component-secret-0123456789abcdef"
_SECRETS = Path(tempfile.mkdtemp(prefix="chorus-components-"))
SECRET_FILE = _SECRETS / "bots.secret"
SECRET_FILE.write_text(SECRET + "\n")
BOTS = "bots.chorus.test"
PLAIN_PORT, TLS_PORT = free_ports(2)


def components(port: int, tls: bool) -> dict:
    return {"components": {"listen": f"127.0.0.1:{port}", "tls": tls,
                           "services": [{"domain": BOTS, "secret_file": str(SECRET_FILE)}]}}


class Bot:
    """A component that answers every chat message and records IQs."""

    def __init__(self, secret: str = SECRET):
        self.x = x = slixmpp.ComponentXMPP(BOTS, secret, "127.0.0.1", PLAIN_PORT)
        x.register_plugin("xep_0030")
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.iqs: asyncio.Queue = asyncio.Queue()
        self.started = asyncio.Event()
        x.add_event_handler("session_start", lambda _: self.started.set())
        x.add_event_handler("message", self._on_message)
        x.register_handler(slixmpp.xmlstream.handler.Callback(
            "push", slixmpp.xmlstream.matcher.MatchXPath("{jabber:component:accept}iq"), self._on_iq))

    def _on_message(self, msg):
        self.inbox.put_nowait(msg)
        if msg["type"] in ("chat", "normal") and msg["body"]:
            reply = self.x.make_message(mto=msg["from"], mfrom=msg["to"],
                                        mbody=f"echo: {msg['body']}", mtype="chat")
            reply.send()

    def _on_iq(self, iq):
        self.iqs.put_nowait(iq)
        if iq["type"] == "set":
            iq.reply().send()

    async def start(self):
        self.x.connect()
        await asyncio.wait_for(self.started.wait(), 10)

    def stop(self):
        self.x.disconnect()


@pytest.mark.chorus(config=components(PLAIN_PORT, False))
async def test_users_talk_with_a_bot_component(node):
    bot = Bot()
    await bot.start()
    try:
        alice = await connect(node, "alice", resource="pc", presence=True)
        alice.send_message(f"echo@{BOTS}", "hello bot")
        got = await asyncio.wait_for(bot.inbox.get(), 5)
        assert str(got["from"]) == alice.jid and got["body"] == "hello bot"
        reply = await alice.next_message(frm=f"echo@{BOTS}")
        assert reply["body"] == "echo: hello bot"
        # A bot may write to a user who is offline: the message waits.
        await alice.close()
        bot.x.make_message(mto=f"alice@{node.domain}", mfrom=f"news@{BOTS}",
                           mbody="build is green", mtype="chat").send()
        await asyncio.sleep(0)  # let slixmpp flush; the server answers nothing
        again = await connect(node, "alice", resource="pc2", presence=True)
        msg = await again.next_message(frm=f"news@{BOTS}")
        assert msg["body"] == "build is green"
        # A bot cannot pretend to be someone else.
        bot.x.make_message(mto=f"alice@{node.domain}", mfrom=f"bob@{node.domain}",
                           mbody="forged").send()
        await again.expect_no_message(1.0, frm=f"bob@{node.domain}")
    finally:
        bot.stop()


@pytest.mark.chorus(config=components(PLAIN_PORT, False))
async def test_a_wrong_component_secret_is_refused(node):
    answer = await asyncio.to_thread(raw_handshake, PLAIN_PORT, "not-the-secret", False)
    assert "<not-authorized" in answer and "<handshake" not in answer.split("</stream:error>")[0][-40:]


@pytest.mark.chorus(config=components(TLS_PORT, True))
async def test_the_component_listener_speaks_tls(node):
    answer = await asyncio.to_thread(raw_handshake, TLS_PORT, SECRET, True)
    assert re.search(r"<handshake[^>]*/>", answer), answer


def raw_handshake(port: int, secret: str, tls: bool) -> str:
    """Opens a component stream by hand and returns what the server said."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if tls:
        sock = insecure_ssl_context().wrap_socket(sock, server_hostname="chorus.test")
    with sock:
        sock.sendall(f"<stream:stream xmlns='jabber:component:accept' "
                     f"xmlns:stream='http://etherx.jabber.org/streams' to='{BOTS}'>".encode())
        data = b""
        while b"id=" not in data or b">" not in data.split(b"id=", 1)[1]:
            data += sock.recv(4096)
        sid = re.search(rb"id='([^']+)'", data).group(1).decode()
        digest = hashlib.sha1((sid + secret).encode()).hexdigest()
        sock.sendall(f"<handshake>{digest}</handshake>".encode())
        try:
            while b"handshake" not in data and b"</stream:stream>" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (TimeoutError, ssl.SSLError, ConnectionError):
            pass
        return data.decode("utf-8", "replace")


@pytest.mark.chorus(config=components(PLAIN_PORT, False))
async def test_push_wakes_the_phone_of_a_user_with_no_session(node):
    push = Bot()
    await push.start()
    try:
        alice = await connect(node, "alice", resource="phone", presence=True)
        await alice.iq_set(
            f"<enable xmlns='urn:xmpp:push:0' jid='{BOTS}' node='device-1'>"
            "<x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
            "<field var='secret'><value>app-secret</value></field></x></enable>")
        # The phone app sleeps: its connection is gone.
        await alice.close()
        bob = await connect(node, "bob", resource="pc", presence=True)
        bob.send_message(f"alice@{node.domain}", "are you coming?")
        iq = await asyncio.wait_for(push.iqs.get(), 5)
        xml = str(iq)
        assert str(iq["from"]) == f"alice@{node.domain}" and str(iq["to"]) == BOTS
        assert "node=\"device-1\"" in xml or "node='device-1'" in xml
        assert "urn:xmpp:push:summary" in xml and "app-secret" in xml
        assert bob.bare in xml, "the sender is named (push.include_sender)"
        assert "are you coming?" not in xml, "the text stays in the firm (push.include_body = false)"
        # A push service that is no component is refused (no federation).
        carol = await connect(node, "carol", resource="pc")
        with pytest.raises(slixmpp.exceptions.IqError) as e:
            await carol.iq_set("<enable xmlns='urn:xmpp:push:0' jid='push.example.org' node='n'/>")
        assert e.value.iq["error"]["condition"] == "not-acceptable"
    finally:
        push.stop()


@pytest.mark.chorus(config=components(PLAIN_PORT, False))
async def test_push_wakes_a_phone_whose_suspended_session_waits_for_resumption(node):
    """iOS suspends the app and its socket dies; the server keeps the
    session for XEP-0198 resumption and queues messages to it. Those
    messages must wake the phone too, not only offline ones."""
    push = Bot()
    await push.start()
    try:
        phone = Client(node, "alice", resource="iphone", sm=True)
        await phone.connect(presence=True)
        await phone.wait_sm_enabled()
        await phone.iq_set(f"<enable xmlns='urn:xmpp:push:0' jid='{BOTS}' node='iphone-1'/>")
        phone.kill()
        await parked(node, 1)
        bob = await connect(node, "bob", resource="pc", presence=True)
        bob.send_message(phone.jid, "lunch?")
        iq = await asyncio.wait_for(push.iqs.get(), 5)
        assert "iphone-1" in str(iq) and "urn:xmpp:push:summary" in str(iq)
    finally:
        push.stop()


async def parked(node, n: int, timeout: float = 10.0) -> None:
    """Waits until the node reports ``n`` sessions parked for resumption
    (its own gauge: the disconnect is seen by the server, not the test)."""
    deadline = time.monotonic() + timeout
    while True:
        _, text = await asyncio.to_thread(node.http_get, "/metrics")
        m = re.search(r"^chorus_parked_sessions(?:\{[^}]*\})? (\S+)$", text, re.M)
        if m and float(m.group(1)) == n:
            return
        assert time.monotonic() < deadline, f"never {n} parked sessions: {m and m.group(0)}"
        await asyncio.sleep(0.1)  # the gauge has no event to wait for


@pytest.mark.chorus(config=components(PLAIN_PORT, False))
async def test_bot_conversations_are_archived_and_blocks_and_policy_hold(node):
    """A conversation with a bot is part of the compliance record both
    ways; a user who blocks the bot hears no more from it; a bot cannot
    deliver what the firm's end-to-end policy refuses."""
    bot = Bot()
    await bot.start()
    try:
        alice = await connect(node, "alice", resource="pc", presence=True)
        alice.send_message(f"echo@{BOTS}", "archive me")
        reply = await alice.next_message(frm=f"echo@{BOTS}")
        assert reply["body"] == "echo: archive me"
        assert reply.xml.find("{urn:xmpp:sid:0}stanza-id") is not None, "archived with an id"
        await archived(node, 2)
        await alice.iq_set(f"<block xmlns='urn:xmpp:blocking'><item jid='{BOTS}'/></block>")
        bot.x.make_message(mto=f"alice@{node.domain}/pc", mfrom=f"news@{BOTS}",
                           mbody="you blocked me", mtype="chat").send()
        await alice.expect_no_message(1.5, frm=f"news@{BOTS}")
    finally:
        bot.stop()


@pytest.mark.chorus(config=components(PLAIN_PORT, False))
async def test_a_bot_cannot_deliver_an_encrypted_payload_under_deny(node):
    bot = Bot()
    await bot.start()
    try:
        alice = await connect(node, "alice", resource="pc", presence=True)
        msg = bot.x.make_message(mto=f"alice@{node.domain}/pc", mfrom=f"spy@{BOTS}", mtype="chat")
        msg.append(ET.fromstring(
            "<encrypted xmlns='eu.siacs.conversations.axolotl'><payload>eA==</payload></encrypted>"))
        msg.send()
        bot.x.make_message(mto=f"alice@{node.domain}/pc", mfrom=f"spy@{BOTS}",
                           mbody="plain", mtype="chat").send()
        got = await alice.next_message(frm=f"spy@{BOTS}")
        assert got["body"] == "plain", "the encrypted one never arrived, the plain one did"
    finally:
        bot.stop()
