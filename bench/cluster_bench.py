"""Cluster benchmark: the latency one cross-node hop adds, and the rate at
which presence fans out to subscribers on the same node and across nodes.

Starts a local three-site cluster (`chorus dev`) on 127.0.0.1, drives it with
raw XMPP-over-TLS clients (tests/e2e/raw.py), prints a table, and stops the
cluster. Usage:

    .venv/bin/python bench/cluster_bench.py [--bin target/release/chorus]
        [--round-trips 1000] [--contacts 50] [--updates 20]
"""

import argparse
import asyncio
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from raw import RawStream  # noqa: E402

NS = "jabber:client"
BASE = 16400
SITES = {"london": 0, "newyork": 1, "tokyo": 2}


def port(site: str, kind: int) -> int:
    return BASE + 10 * SITES[site] + kind


def status(site: str) -> dict:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    url = f"https://127.0.0.1:{port(site, 2)}/cluster/status"
    with urllib.request.urlopen(url, context=ctx, timeout=2) as r:
        return json.loads(r.read())


def wait_ready(deadline: float) -> None:
    while time.time() < deadline:
        try:
            if all(all(p["link_up"] and p["alive"] for p in status(s)["peers"]) for s in SITES):
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("cluster did not become ready")


async def login(site: str, user: str, resource: str) -> RawStream:
    s = await RawStream.open("127.0.0.1", port(site, 0), "localhost")
    await s.login(user, f"{user}-pass" if not user.startswith("fan") else "fan-pass", resource)
    return s


async def echo(s: RawStream) -> None:
    """Answers every chat message with the same body."""
    while True:
        el = await s.recv(timeout=600)
        if el.tag == f"{{{NS}}}message" and el.get("type") == "chat":
            body = el.findtext(f"{{{NS}}}body")
            await s.send(f"<message to='{el.get('from')}' type='chat'><body>{body}</body></message>")


async def round_trips(sender: RawStream, to: str, n: int) -> list[float]:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        await sender.send(f"<message to='{to}' type='chat'><body>rt{i}</body></message>")
        while True:
            el = await sender.recv(timeout=10)
            if el.tag == f"{{{NS}}}message" and el.findtext(f"{{{NS}}}body") == f"rt{i}":
                break
        times.append((time.perf_counter() - t0) * 1000)
    return times


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def fanout(site: str, contacts: int, updates: int, cli: list[str]) -> float:
    """Presence deliveries per second from alice@london to contacts on `site`."""
    alice = await login("london", "alice", f"fan-{site}")
    await alice.send("<presence/>")
    fans = []
    for i in range(contacts):
        f = await login(site, f"fan{site}{i}", "r")
        await f.send("<presence/>")
        await f.send("<presence to='alice@localhost' type='subscribe'/>")
        fans.append(f)
    approved: set[str] = set()
    while len(approved) < contacts:
        el = await alice.recv(timeout=20)
        # A request may arrive twice (directly and by replication).
        if el.tag == f"{{{NS}}}presence" and el.get("type") == "subscribe" and el.get("from") not in approved:
            await alice.send(f"<presence to='{el.get('from')}' type='subscribed'/>")
            approved.add(el.get("from"))

    async def drain(f: RawStream, want: int) -> None:
        got = 0
        while got < want:
            el = await f.recv(timeout=30)
            if el.tag == f"{{{NS}}}presence" and (el.findtext(f"{{{NS}}}status") or "").startswith("bench-"):
                got += 1

    t0 = time.perf_counter()
    waiters = [asyncio.create_task(drain(f, updates)) for f in fans]
    for u in range(updates):
        await alice.send(f"<presence><status>bench-{u}</status></presence>")
    await asyncio.gather(*waiters)
    elapsed = time.perf_counter() - t0
    for f in fans + [alice]:
        await f.close()
    return contacts * updates / elapsed


async def run(args) -> None:
    alice = await login("london", "alice", "rt")
    bob = await login("london", "bob", "echo")
    carol = await login("tokyo", "carol", "echo")
    tasks = [asyncio.create_task(echo(bob)), asyncio.create_task(echo(carol))]
    await round_trips(alice, "bob@localhost/echo", 50)  # warm-up
    await round_trips(alice, "carol@localhost/echo", 50)
    local = await round_trips(alice, "bob@localhost/echo", args.round_trips)
    remote = await round_trips(alice, "carol@localhost/echo", args.round_trips)
    for t in tasks:
        t.cancel()
    rows = [("same node round trip", local), ("cross-node round trip", remote)]
    print(f"\n{'measurement':<28}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for name, xs in rows:
        print(f"{name:<28}{pct(xs, 50):>10.3f}{pct(xs, 99):>10.3f}{statistics.mean(xs):>10.3f}")
    hop = (pct(remote, 50) - pct(local, 50)) / 2
    print(f"{'extra latency per hop (p50)':<28}{hop:>10.3f}")
    for site in ("london", "tokyo"):
        for i in range(args.contacts):
            subprocess.run(args.cli + ["user", "add", f"fan{site}{i}", "--password", "fan-pass"], check=True,
                           stdout=subprocess.DEVNULL)
    await asyncio.sleep(1.0)  # accounts replicate to the other sites
    same = await fanout("london", args.contacts, args.updates, args.cli)
    cross = await fanout("tokyo", args.contacts, args.updates, args.cli)
    print(f"\npresence fan-out, {args.contacts} subscribers x {args.updates} updates")
    print(f"{'subscribers on the same node':<34}{same:>10.0f} presences/s")
    print(f"{'subscribers on another node':<34}{cross:>10.0f} presences/s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/chorus")
    ap.add_argument("--round-trips", type=int, default=1000)
    ap.add_argument("--contacts", type=int, default=50)
    ap.add_argument("--updates", type=int, default=20)
    ap.add_argument("--data-dir", help="keep the cluster's data and logs here")
    ap.add_argument("--no-archive", action="store_true",
                    help="turn the Raft compliance archive off, to see what it costs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = args.data_dir or tmp
        # The benchmark measures latency, not the per-user rate limit (200
        # stanzas/s by default), so the limit is raised for this run.
        env = dict(os.environ, CHORUS_LIMITS__USER_STANZAS_PER_SEC="1000000",
                   CHORUS_LIMITS__USER_STANZAS_BURST="1000000")
        if args.no_archive:
            env["CHORUS_ARCHIVE__ENABLED"] = "false"
        proc = subprocess.Popen([args.bin, "dev", "--data-dir", d, "--base-port", str(BASE)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            wait_ready(time.time() + 60)
            args.cli = [args.bin, "--config", os.path.join(d, "london", "chorus.toml")]
            asyncio.run(run(args))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
