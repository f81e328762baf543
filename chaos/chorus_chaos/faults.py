"""Nemeses: every fault is a scenario, plus ``mixed``.

A schedule is generated up front from ``random.Random(seed)`` (same seed,
same schedule) as a list of ``Fault`` events that never overlap; the
``Nemesis`` then plays it against a ``ChaosCluster`` in real time, each
fault undone at the end of its hold. Cuts and latency go through
``cluster.net`` (network.py: the proxy, or iptables/tc in network
namespaces); everything else is process signals. With one node per site, ``kill9``
(down 2-5 s, shorter than a few leases) and ``site-restart`` (down 8-15 s,
the site's sessions and leases expire) differ in downtime only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from chorus_chaos.cluster import FAKETIME_LIB, ChaosCluster
from chorus_chaos.failover import archive_leader, watch_failover

log = logging.getLogger("chaos.faults")
SITES = ("a", "b", "c")
RECOVER_S = 60.0


@dataclass
class Fault:
    """One fault: starts ``at`` seconds into the run, undone after ``hold``."""
    at: float
    kind: str
    target: str | None = None
    hold: float = 0.0
    params: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["at"] = round(self.at, 3)
        d["hold"] = round(self.hold, 3)
        return d


@dataclass
class Scenario:
    name: str
    description: str
    gen: Callable[[random.Random, float], Fault]  # (rng, start) -> fault
    gap: tuple[float, float] = (2.0, 4.0)  # quiet time between faults
    needs: str | None = None  # "faketime": needs libfaketime


def _site(rng: random.Random) -> str:
    return rng.choice(SITES)


def _kill9(rng, at):
    return Fault(at, "kill9", _site(rng), rng.uniform(2.0, 5.0))


def _kill_leader(rng, at):
    # The target is whichever node leads the archive when the fault starts.
    return Fault(at, "kill-leader", None, rng.uniform(3.0, 5.0))


def _site_restart(rng, at):
    return Fault(at, "site-restart", _site(rng), rng.uniform(8.0, 15.0))


def _pause(rng, at):
    return Fault(at, "pause", _site(rng), rng.uniform(2.0, 6.0))


def _site_cut(rng, at):
    return Fault(at, "site-cut", _site(rng), rng.uniform(5.0, 12.0))


def _bridge_cut(rng, at):
    x, y = sorted(rng.sample(SITES, 2))
    return Fault(at, "bridge-cut", f"{x}-{y}", rng.uniform(5.0, 12.0))


def _blip(rng, at):
    return Fault(at, "blip", _site(rng), rng.uniform(0.002, 0.050))


def _wan(rng, at):
    return Fault(at, "wan", _site(rng), rng.uniform(6.0, 15.0),
                 {"delay_ms": round(rng.uniform(20, 150)), "jitter_ms": round(rng.uniform(0, 40)),
                  "loss": round(rng.uniform(0.0, 0.05), 3), "seed": rng.randrange(2**31)})


def _rolling(rng, at):
    order = list(SITES)
    rng.shuffle(order)
    return Fault(at, "rolling-restart", ",".join(order), 0.0)


def _skew(rng, at):
    sign = rng.choice(["+", "-"])
    return Fault(at, "clock-skew", _site(rng), rng.uniform(10.0, 20.0),
                 {"skew": f"{sign}{rng.randint(30, 120)}s"})


MIXED_KINDS = (_kill9, _site_restart, _pause, _site_cut, _bridge_cut, _blip, _wan)


def _mixed(rng, at):
    return rng.choice(MIXED_KINDS)(rng, at)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("kill9", "kill -9 one node, restart it after 2-5 s", _kill9),
    Scenario("kill-leader", "kill -9 the archive's Raft leader, restart it after 3-5 s; "
             "measures time to a new leader and to the first commit", _kill_leader,
             gap=(4.0, 6.0)),
    Scenario("site-restart", "kill a whole site, bring it back after 8-15 s", _site_restart),
    Scenario("pause", "SIGSTOP a node for 2-6 s, then SIGCONT", _pause),
    Scenario("site-cut", "cut one site off from the others for 5-12 s, heal", _site_cut),
    Scenario("bridge-cut", "two sites cannot talk to each other (both still reach the third)",
             _bridge_cut),
    Scenario("blips", "repeated 2-50 ms cuts of a site's links", _blip, gap=(0.2, 1.5)),
    Scenario("wan", "WAN latency, jitter and loss (retransmission stalls) on a site's links",
             _wan, gap=(1.0, 3.0)),
    Scenario("rolling-restart", "graceful restart of every node one after another", _rolling,
             gap=(3.0, 6.0)),
    Scenario("clock-skew", "restart one node with its wall clock skewed (libfaketime)", _skew,
             needs="faketime"),
    Scenario("mixed", "a random mix of kill9, site-restart, pause, cuts, blips and WAN", _mixed,
             gap=(1.0, 3.0)),
)}


def plan(scenario: str, seed: int, duration: float) -> list[Fault]:
    """The fault schedule: deterministic in (scenario, seed, duration)."""
    sc = SCENARIOS[scenario]
    rng = random.Random(f"faults:{scenario}:{seed}")
    faults: list[Fault] = []
    t = rng.uniform(2.0, 4.0)
    end = duration - 1.0
    while t < end:
        f = sc.gen(rng, t)
        if f.kind != "rolling-restart" and f.at + f.hold > end:
            f.hold = max(0.0, end - f.at)
            if f.hold < 0.5 and f.kind != "blip":
                break
        faults.append(f)
        if f.kind == "rolling-restart":
            break  # one round per run; its length depends on restart times
        t = f.at + f.hold + rng.uniform(*sc.gap)
    return faults


# ------------------------------------------------------------ libfaketime
def faketime_available(install: bool = True) -> tuple[bool, str]:
    """libfaketime present (installing it with apt-get when root)?"""
    if FAKETIME_LIB.exists():
        return True, "libfaketime present"
    if not install:
        return False, f"{FAKETIME_LIB} missing"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False, (f"{FAKETIME_LIB} missing and not root/apt-get: install the Debian "
                       "package libfaketime to run clock-skew")
    try:
        cp = subprocess.run(["apt-get", "install", "-y", "-q", "libfaketime"],
                            capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"apt-get install libfaketime failed: {e}"
    if FAKETIME_LIB.exists():
        return True, "libfaketime installed with apt-get"
    return False, f"apt-get install libfaketime failed: {cp.stderr[-300:]}"


# ---------------------------------------------------------------- nemesis
class Nemesis:
    """Plays a schedule against a cluster; records what happened when."""

    def __init__(self, cluster: ChaosCluster, faults: list[Fault], t0: float):
        self.cl = cluster
        self.faults = faults
        self.t0 = t0
        self.events: list[dict] = []  # what was done, with wall offsets
        self.injected = 0
        self.errors: list[str] = []
        # One entry per kill-leader fault (failover.watch_failover).
        self.failovers: list[dict] = []
        self._stop = asyncio.Event()

    def _note(self, what: str, **kw) -> None:
        e = {"t": round(time.monotonic() - self.t0, 3), "what": what, **kw}
        self.events.append(e)
        log.info("nemesis: %s", e)

    async def _sleep_until(self, t: float) -> None:
        delay = self.t0 + t - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except asyncio.TimeoutError:
                pass

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        for f in self.faults:
            await self._sleep_until(f.at)
            if self._stop.is_set():
                break
            try:
                await self._apply(f)
                self.injected += 1
            except Exception as e:  # noqa: BLE001  (recorded; final heal decides)
                msg = f"{f.kind} {f.target} at {f.at:.1f}s: {type(e).__name__}: {str(e)[:500]}"
                self.errors.append(msg)
                self._note("error", fault=f.kind, target=f.target, error=str(e)[:500])

    async def _hold(self, f: Fault) -> None:
        await asyncio.sleep(f.hold)

    async def _restart(self, site: str) -> None:
        await asyncio.to_thread(self.cl.start, site)
        self._note("started", target=site)

    async def _kill_leader(self, f: Fault) -> None:
        """kill -9 the archive leader's node, watch the survivors elect a
        new leader and commit again, restart the node after the hold."""
        site, raft_id, records = await asyncio.to_thread(archive_leader, self.cl)
        t = time.monotonic()
        await asyncio.to_thread(self.cl.kill9, site)
        m = await asyncio.to_thread(watch_failover, self.cl, site, raft_id, records, t)
        m["killed_at_s"] = round(t - self.t0, 3)
        self.failovers.append(m)
        self._note("failover", **m)
        rest = f.hold - (time.monotonic() - t)
        if rest > 0:
            await asyncio.sleep(rest)
        await self._restart(site)

    async def _apply(self, f: Fault) -> None:
        cl = self.cl
        k, s = f.kind, f.target
        self._note("begin", fault=k, target=s, hold=round(f.hold, 3), **f.params)
        if k == "kill-leader":
            await self._kill_leader(f)
        elif k in ("kill9", "site-restart"):
            await asyncio.to_thread(cl.kill9, s)
            await self._hold(f)
            await self._restart(s)
        elif k == "pause":
            cl.node(s).pause()
            try:
                await self._hold(f)
            finally:
                cl.node(s).resume()
        elif k in ("site-cut", "blip"):
            await asyncio.to_thread(cl.net.cut_site, s)
            try:
                if k == "blip":
                    time.sleep(f.hold)  # 2-50 ms: below the event loop's resolution needs
                else:
                    await self._hold(f)
            finally:
                await asyncio.to_thread(cl.net.heal_site, s)
        elif k == "bridge-cut":
            x, y = s.split("-")
            await asyncio.to_thread(cl.net.cut_pair, x, y)
            try:
                await self._hold(f)
            finally:
                await asyncio.to_thread(cl.net.heal_pair, x, y)
        elif k == "wan":
            p = f.params
            await asyncio.to_thread(cl.net.set_wan, s, p["delay_ms"], p["jitter_ms"],
                                    p["loss"], p["seed"])
            try:
                await self._hold(f)
            finally:
                await asyncio.to_thread(cl.net.clear_wan, s)
        elif k == "rolling-restart":
            for site in s.split(","):
                code = await asyncio.to_thread(cl.stop, site)
                self._note("stopped", target=site, exit_code=code)
                if code != 0:
                    self.errors.append(f"{site}: exit code {code} on SIGTERM")
                await self._restart(site)
                await asyncio.to_thread(cl.wait_ready, RECOVER_S)
        elif k == "clock-skew":
            await asyncio.to_thread(cl.stop, s)
            cl.set_skew(s, f.params["skew"])
            await self._restart(s)
            try:
                await self._hold(f)
            finally:
                await asyncio.to_thread(cl.stop, s)
                cl.set_skew(s, None)
                await self._restart(s)
        else:
            raise ValueError(f"unknown fault kind {k}")
        self._note("end", fault=k, target=s)

    def heal_all(self) -> None:
        """After the run: every link healed, every node running and resumed."""
        self.cl.net.heal_all()
        for site, n in self.cl.nodes.items():
            n.resume()  # type: ignore[attr-defined]
            if not n.running:
                self.cl.start(site)
