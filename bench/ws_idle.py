#!/usr/bin/env python3
"""Memory per idle XMPP-over-WebSocket session (RFC 7395, the way
Converse.js and other web clients connect), against a running server.

  ws_idle.py --url wss://127.0.0.1:PORT/xmpp-websocket --pid PID \
      --domain D --sessions 2000 [--prefix user --password P] [--out R]

Each session opens a TLS connection to the HTTP listener, upgrades to
WebSocket, authenticates (SASL PLAIN), binds, sends initial presence and
holds. The server's RSS is read (from /proc) before the first connection
and once every session is bound and a settling time has passed; KiB per
session is (plateau - baseline) / sessions. The accounts must exist
(`chorus-bench provision`). Everything goes to 127.0.0.1 and stops by
itself. Prints one JSON line (appended to --out when given).
"""

import argparse
import asyncio
import base64
import json
import ssl
import sys
import time

from websockets.asyncio.client import connect

from tsung import rss_kib  # bench/, beside this script

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"


async def expect(ws, needle, timeout=30):
    """Reads frames until one contains `needle`; a stream error fails."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await asyncio.wait_for(ws.recv(), max(0.01, deadline - loop.time()))
        frame = frame.decode() if isinstance(frame, bytes) else frame
        if "stream:error" in frame or "<failure" in frame:
            raise RuntimeError(frame)
        if needle in frame:
            return frame


async def session(args, i, ctx, ready, hold):
    user = f"{args.prefix}{i}"
    opening = f"<open xmlns='{FRAMING}' to='{args.domain}' version='1.0'/>"
    async with connect(args.url, subprotocols=["xmpp"], ssl=ctx, proxy=None,
                       open_timeout=60, close_timeout=5, ping_interval=None,
                       max_size=2**20) as ws:
        await ws.send(opening)
        await expect(ws, "PLAIN")
        token = base64.b64encode(f"\0{user}\0{args.password}".encode()).decode()
        await ws.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
        await expect(ws, "<success")
        await ws.send(opening)
        await expect(ws, "bind")
        await ws.send(f"<iq xmlns='jabber:client' type='set' id='b'>"
                      f"<bind xmlns='{BIND}'><resource>web</resource></bind></iq>")
        await expect(ws, "result")
        await ws.send("<presence xmlns='jabber:client'/>")
        ready.release()
        await hold.wait()
        await ws.send(f"<close xmlns='{FRAMING}'/>")


async def main(args):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    baseline = rss_kib(args.pid)
    ready, hold = asyncio.Semaphore(0), asyncio.Event()
    gate = asyncio.Semaphore(args.concurrency)

    async def one(i):
        async with gate:
            t = asyncio.create_task(session(args, i, ctx, ready, hold))
            await ready.acquire()
            return t

    started = time.monotonic()
    tasks = await asyncio.gather(*(one(i) for i in range(args.sessions)))
    login_secs = time.monotonic() - started
    await asyncio.sleep(args.settle)
    plateau = rss_kib(args.pid)
    failed = [t for t in tasks if t.done() and t.exception()]
    hold.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    held = args.sessions - len(failed)
    out = {
        "server": args.label, "scenario": f"ws_idle_{args.sessions}",
        "metrics": {
            "kib_per_session": round((plateau - baseline) / args.sessions, 2),
            "server_rss_baseline_mib": round(baseline / 1024, 1),
            "server_rss_mib": round(plateau / 1024, 1),
            "sessions_held": held,
            "login_secs": round(login_secs, 1),
        },
        "errors": len(failed),
        "notes": [f"{held} of {args.sessions} sessions held at the plateau"] if failed else [],
    }
    line = json.dumps(out)
    print(f"[{args.label}] {out['scenario']}: " + " ".join(f"{k}={v}" for k, v in out["metrics"].items())
          + f" errors={len(failed)}", flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")
    return 0 if not failed else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--domain", required=True)
    p.add_argument("--sessions", type=int, default=2000)
    p.add_argument("--prefix", default="bench")
    p.add_argument("--password", default="bench-password-1")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--settle", type=float, default=5.0)
    p.add_argument("--label", default="chorus")
    p.add_argument("--out")
    sys.exit(asyncio.run(main(p.parse_args())))
