"""SCRAM-SHA-*-PLUS with channel binding (RFC 5802 §6, RFC 5929, RFC 9266,
XEP-0440), written by hand over a real TLS 1.3 connection made with OpenSSL
(pyOpenSSL), so the binding data is computed by a TLS stack other than ours:
tls-exporter from OpenSSL's keying-material exporter, tls-server-end-point
from the certificate the server presented.

A man in the middle who terminates TLS with its own certificate sees other
binding data than the server; the tests with wrong binding data are exactly
what the server sees then, and must fail."""

import base64
import hashlib
import hmac
import os
import re
import select
import socket
import time

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_SASL_CB = "urn:xmpp:sasl-cb:0"
HASHES = {"SCRAM-SHA-256-PLUS": hashlib.sha256, "SCRAM-SHA-1-PLUS": hashlib.sha1}


class TlsStream:
    """A blocking direct-TLS (XEP-0368) stream; reads until a pattern shows."""

    def __init__(self, node):
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        ctx.set_verify(SSL.VERIFY_NONE, lambda *a: True)
        self.sock = socket.create_connection(("127.0.0.1", node.tls_port), timeout=10)
        # Non-blocking under OpenSSL; every call waits through _io.
        self.sock.setblocking(False)
        self.conn = SSL.Connection(ctx, self.sock)
        self.conn.set_tlsext_host_name(node.domain.encode())
        self.conn.set_connect_state()
        self.domain = node.domain
        self.buf = b""
        try:
            self._io(self.conn.do_handshake)
        except BaseException:
            self.sock.close()
            raise

    def _io(self, call, *args, timeout: float = 10.0):
        """Runs one OpenSSL call on the non-blocking socket, waiting (at
        most `timeout` seconds in all) while it wants to read or write."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return call(*args)
            except SSL.WantReadError:
                wait = ([self.sock], [])
            except SSL.WantWriteError:
                wait = ([], [self.sock])
            left = deadline - time.monotonic()
            assert left > 0, f"TLS stalled in {call.__name__}"
            select.select(*wait, [], left)

    def send(self, data: str) -> None:
        self._io(self.conn.sendall, data.encode())

    def read_until(self, pattern: bytes) -> re.Match:
        while True:
            m = re.search(pattern, self.buf, re.S)
            if m:
                self.buf = self.buf[m.end():]
                return m
            try:
                chunk = self._io(self.conn.recv, 65536)
            except SSL.ZeroReturnError:
                chunk = b""
            assert chunk, f"connection closed waiting for {pattern!r}; got {self.buf!r}"
            self.buf += chunk

    def features(self) -> bytes:
        self.send(f"<?xml version='1.0'?><stream:stream to='{self.domain}' version='1.0' "
                  "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
        return self.read_until(rb"<(?:stream:)?features.*?</(?:stream:)?features>").group(0)

    def exporter(self) -> bytes:
        return self.conn.export_keying_material(b"EXPORTER-Channel-Binding", 32)

    def end_point(self) -> bytes:
        # The server's certificate is signed with SHA-256 (ECDSA P-256), so
        # RFC 5929 §4.1 hashes it with SHA-256.
        der = self.conn.get_peer_certificate().to_cryptography().public_bytes(Encoding.DER)
        return hashlib.sha256(der).digest()

    def close(self) -> None:
        try:
            self.conn.shutdown()
        except SSL.Error:
            pass
        self.sock.close()


def scram(stream: TlsStream, mech: str, user: str, password: str, gs2: str,
          cb_data: bytes) -> bytes:
    """Runs one SCRAM exchange; returns the final <success/> or <failure/>."""
    h = HASHES.get(mech, hashlib.sha256)
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n={user},r={nonce}"
    stream.send(f"<auth xmlns='{NS_SASL}' mechanism='{mech}'>"
                f"{base64.b64encode((gs2 + first_bare).encode()).decode()}</auth>")
    m = stream.read_until(rb"<(challenge|failure)[^>]*>(.*?)</\1>|<failure[^>]*/>")
    if m.group(1) != b"challenge":
        return m.group(0)
    server_first = base64.b64decode(m.group(2)).decode()
    fields = dict(kv.split("=", 1) for kv in server_first.split(","))
    assert fields["r"].startswith(nonce)
    salted = hashlib.pbkdf2_hmac(h().name, password.encode(), base64.b64decode(fields["s"]),
                                 int(fields["i"]))
    client_key = hmac.new(salted, b"Client Key", h).digest()
    stored = h(client_key).digest()
    cbind = base64.b64encode(gs2.encode() + cb_data).decode()
    final_bare = f"c={cbind},r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{final_bare}".encode()
    signature = hmac.new(stored, auth_message, h).digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
    final = f"{final_bare},p={proof}"
    stream.send(f"<response xmlns='{NS_SASL}'>"
                f"{base64.b64encode(final.encode()).decode()}</response>")
    m = stream.read_until(rb"<success[^>]*>.*?</success>|<success[^>]*/>|"
                          rb"<failure[^>]*>.*?</failure>|<failure[^>]*/>")
    return m.group(0)


def test_plus_mechanisms_and_binding_types_are_advertised(node):
    s = TlsStream(node)
    try:
        feats = s.features().decode()
        mechs = re.findall(r"<mechanism>([^<]+)</mechanism>", feats)
        assert mechs[:2] == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"], mechs
        assert NS_SASL_CB in feats, feats
        types = set(re.findall(r"<channel-binding type='([^']+)'", feats))
        assert types == {"tls-exporter", "tls-server-end-point"}, feats
    finally:
        s.close()


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"])
@pytest.mark.parametrize("cb_type", ["tls-exporter", "tls-server-end-point"])
def test_plus_login_with_the_right_binding(node, mech, cb_type):
    s = TlsStream(node)
    try:
        s.features()
        data = s.exporter() if cb_type == "tls-exporter" else s.end_point()
        outcome = scram(s, mech, "alice", node.password("alice"), f"p={cb_type},,", data)
        assert outcome.startswith(b"<success"), outcome
    finally:
        s.close()


@pytest.mark.parametrize("cb_type", ["tls-exporter", "tls-server-end-point"])
def test_plus_login_with_another_connections_binding_fails(node, cb_type):
    """What a man in the middle presents: a correct password proof over the
    binding data of its own TLS connection, not ours."""
    other = TlsStream(node)
    s = TlsStream(node)
    try:
        other.features()
        s.features()
        if cb_type == "tls-exporter":
            data = other.exporter()
            assert data != s.exporter()
        else:
            data = hashlib.sha256(b"a certificate the server never presented").digest()
        outcome = scram(s, "SCRAM-SHA-256-PLUS", "alice", node.password("alice"),
                        f"p={cb_type},,", data)
        assert outcome.startswith(b"<failure"), outcome
        assert b"not-authorized" in outcome, outcome
    finally:
        s.close()
        other.close()


def test_client_claiming_no_server_support_is_refused_when_plus_is_offered(node):
    """gs2 flag 'y' says "I support binding but think the server does not":
    the server does offer it, so this is a downgrade and must fail (RFC 5802 §6)."""
    s = TlsStream(node)
    try:
        s.features()
        outcome = scram(s, "SCRAM-SHA-256", "alice", node.password("alice"), "y,,", b"")
        assert outcome.startswith(b"<failure"), outcome
    finally:
        s.close()


def test_unknown_binding_type_is_refused(node):
    s = TlsStream(node)
    try:
        s.features()
        outcome = scram(s, "SCRAM-SHA-256-PLUS", "alice", node.password("alice"),
                        "p=tls-unique,,", b"\0" * 12)
        assert outcome.startswith(b"<failure"), outcome
    finally:
        s.close()
