#!/usr/bin/env python3
"""Functional check of an XMPP server for the Chorus benchmarks.

  check.py HOST PORT DOMAIN [--registrations N]

Over STARTTLS (certificate not verified: the servers use self-signed certs):
  1. registers two fresh accounts with XEP-0077 in-band registration,
  2. logs both in with SASL SCRAM-SHA-1,
  3. sends a message from the first to the second and waits for it,
  4. queries the sender's archive (XEP-0313) and looks for the message.
Exits 0 when all of that works, 1 with a message on the first failure.
Also prints the SASL mechanisms offered and the time of each registration
(TCP + STARTTLS + register IQ, and the register IQ round trip alone).
--registrations N times N extra registrations (sequential) for a rougher
average.
"""
import argparse
import asyncio
import logging
import ssl
import sys
import time
import uuid

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ET

TIMEOUT = 20


def insecure_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Fail(Exception):
    pass


async def register(host, port, domain, user, password):
    """Returns (total seconds incl. TCP+STARTTLS, register IQ round trip seconds)."""
    jid = f"{user}@{domain}"
    xmpp = slixmpp.ClientXMPP(jid, password)
    xmpp.ssl_context = insecure_context()
    xmpp.enable_direct_tls = False  # plain c2s port + STARTTLS only
    xmpp.enable_starttls = True
    xmpp.register_plugin("xep_0030")
    xmpp.register_plugin("xep_0004")
    xmpp.register_plugin("xep_0066")
    xmpp.register_plugin("xep_0077")
    xmpp.plugin["xep_0077"].force_registration = True
    done = asyncio.get_running_loop().create_future()
    t = {}

    async def on_register(form):
        iq = xmpp.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = user
        iq["register"]["password"] = password
        t["iq"] = time.perf_counter()
        try:
            await iq.send(timeout=TIMEOUT)
            t["iq_done"] = time.perf_counter()
            if not done.done():
                done.set_result(None)
        except IqError as e:
            if not done.done():
                done.set_exception(Fail(f"registration of {jid} refused: "
                                        f"{e.iq['error']['condition']} {e.iq['error']['text']}"))
        except IqTimeout:
            if not done.done():
                done.set_exception(Fail(f"registration of {jid}: no answer in {TIMEOUT}s"))
        xmpp.disconnect()

    def on_failed(*_):
        if not done.done():
            done.set_exception(Fail(f"connection to {host}:{port} failed"))

    xmpp.add_event_handler("register", on_register)
    xmpp.add_event_handler("connection_failed", on_failed)
    t0 = time.perf_counter()
    xmpp.connect(host, port)
    try:
        await asyncio.wait_for(done, TIMEOUT)
    except asyncio.TimeoutError:
        raise Fail(f"registration of {jid}: timed out (no register feature / stream?)")
    finally:
        xmpp.disconnect()
        await asyncio.sleep(0)
    return t["iq_done"] - t0, t["iq_done"] - t["iq"]


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password, sasl_mech="SCRAM-SHA-1")
        self.ssl_context = insecure_context()
        self.enable_direct_tls = False  # plain c2s port + STARTTLS only
        self.enable_starttls = True
        for p in ("xep_0030", "xep_0059", "xep_0198", "xep_0199", "xep_0313"):
            self.register_plugin(p)
        self.session = asyncio.get_running_loop().create_future()
        self.inbox = asyncio.Queue()
        self.add_event_handler("session_start", self._started)
        self.add_event_handler("failed_auth", self._failed)
        self.add_event_handler("connection_failed", self._failed)
        self.add_event_handler("message", self._message)

    def _started(self, _):
        if not self.session.done():
            self.session.set_result(None)

    def _failed(self, *_):
        if not self.session.done():
            self.session.set_exception(Fail(f"login of {self.boundjid.bare} failed"))

    def _message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.inbox.put_nowait(msg)

    async def login(self, host, port):
        self.connect(host, port)
        try:
            await asyncio.wait_for(self.session, TIMEOUT)
        except asyncio.TimeoutError:
            raise Fail(f"login of {self.boundjid.bare}: timed out")
        if not self.is_connected() or self.transport is None:
            raise Fail("not connected after login")
        sslobj = self.transport.get_extra_info("ssl_object")
        tls = f"{sslobj.version()} {sslobj.cipher()[0]}" if sslobj else None
        sasl = self.plugin["feature_mechanisms"]
        mech = sasl.mech.name if sasl.mech else None
        self.offered = sorted(sasl.mech_list)
        for _ in range(50):  # <enabled/> may arrive just after session start
            if self.plugin["xep_0198"].enabled_in:
                break
            await asyncio.sleep(0.05)
        if not self.plugin["xep_0198"].enabled_in:
            raise Fail(f"{self.boundjid.bare}: stream management (XEP-0198) not enabled")
        if not tls:
            raise Fail(f"{self.boundjid.bare}: session is not encrypted")
        if not (mech or "").startswith("SCRAM-"):
            raise Fail(f"{self.boundjid.bare}: authenticated with {mech}, not SCRAM")
        self.send_presence()
        return tls, mech


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("domain")
    ap.add_argument("--registrations", type=int, default=0,
                    help="extra sequential registrations to time")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.CRITICAL)

    tag = uuid.uuid4().hex[:8]
    a_user, b_user, pw = f"chk{tag}a", f"chk{tag}b", f"pw-{tag}"
    a_jid, b_jid = f"{a_user}@{args.domain}", f"{b_user}@{args.domain}"

    reg_times = []
    for u in (a_user, b_user):
        total, iq = await register(args.host, args.port, args.domain, u, pw)
        reg_times.append((total, iq))
        print(f"registered {u}@{args.domain}: {total * 1000:.1f} ms total "
              f"(TCP+STARTTLS+IQ), register IQ {iq * 1000:.1f} ms")
    for i in range(args.registrations):
        total, iq = await register(args.host, args.port, args.domain, f"chk{tag}r{i}", pw)
        reg_times.append((total, iq))
    if len(reg_times) > 2:
        n = len(reg_times)
        print(f"registrations: {n}, mean total {sum(t for t, _ in reg_times) / n * 1000:.1f} ms, "
              f"mean IQ {sum(i for _, i in reg_times) / n * 1000:.1f} ms")

    a, b = Client(a_jid, pw), Client(b_jid, pw)
    try:
        for c in (a, b):
            tls, mech = await c.login(args.host, args.port)
            print(f"logged in {c.boundjid.full} with {mech} over {tls}, XEP-0198 enabled")
        print(f"SASL mechanisms offered after STARTTLS: {' '.join(a.offered)}")

        # Configuration sanity: the modules the benchmark relies on.
        want = {
            args.domain: ["urn:xmpp:carbons:2", "urn:xmpp:ping", "vcard-temp",
                          "jabber:iq:register"],
            f"conference.{args.domain}": ["http://jabber.org/protocol/muc", "urn:xmpp:mam:2"],
        }
        acct = await a.plugin["xep_0030"].get_info(jid=a_jid, timeout=TIMEOUT)
        if "urn:xmpp:mam:2" not in acct["disco_info"]["features"]:
            raise Fail(f"{a_jid} does not advertise urn:xmpp:mam:2")
        for jid, feats in want.items():
            try:
                info = await a.plugin["xep_0030"].get_info(jid=jid, timeout=TIMEOUT)
            except (IqError, IqTimeout) as e:
                raise Fail(f"disco#info on {jid} failed: {e}")
            have = set(info["disco_info"]["features"])
            missing = [f for f in feats if f not in have]
            if missing:
                raise Fail(f"{jid} lacks features {missing}")
        print(f"disco: {args.domain} (carbons, ping, vcard-temp, register), account MAM, "
              f"conference.{args.domain} (muc, mam) present")

        body = f"hello from {a_user} {uuid.uuid4().hex}"
        a.send_message(mto=b_jid, mbody=body, mtype="chat")
        try:
            while True:
                msg = await asyncio.wait_for(b.inbox.get(), TIMEOUT)
                if msg["body"] == body:
                    break
        except asyncio.TimeoutError:
            raise Fail(f"{b_jid} did not receive the message within {TIMEOUT}s")
        print(f"{b_jid} received the message from {msg['from']}")

        found = False
        for attempt in range(10):  # archiving may be asynchronous
            try:
                async for m in a.plugin["xep_0313"].iterate(with_jid=slixmpp.JID(b_jid), rsm={"max": 50}):
                    fwd = m["mam_result"]["forwarded"]["stanza"]
                    if fwd["body"] == body:
                        found = True
                        break
            except IqError as e:
                raise Fail(f"MAM query refused: {e.iq['error']['condition']} {e.iq['error']['text']}")
            except IqTimeout:
                raise Fail(f"MAM query: no answer in {TIMEOUT}s")
            if found:
                break
            await asyncio.sleep(0.3)
        if not found:
            raise Fail(f"message not found in {a_jid}'s archive (MAM)")
        print(f"found the message in {a_jid}'s archive (MAM)")
    finally:
        for c in (a, b):
            c.disconnect()
        await asyncio.sleep(0.2)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Fail as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # anything unexpected is a failure too
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print("OK")
