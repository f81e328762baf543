"""One chaos run: build the cluster, start the workload, play the fault
schedule, heal, read everything back, run the checkers, write the report.
The cluster is always torn down (also on errors and Ctrl-C)."""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import signal
import time
import traceback
from pathlib import Path

from chorus_chaos import readback
from chorus_chaos.checkers import all_checkers
from chorus_chaos.cluster import ChaosCluster
from chorus_chaos.faults import SCENARIOS, Nemesis, faketime_available, plan
from chorus_chaos.network import NetnsNetwork, netns_unavailable
from chorus_chaos.report import write_report
from chorus_chaos.workload import OBSERVER, Workload, user_names

log = logging.getLogger("chaos.run")
PASSWORD = "chaos-pw"
RUN_DEADLINE_EXTRA_S = 600.0


class Skipped(Exception):
    """The scenario cannot run here (e.g. no libfaketime)."""


def reproduce_cmd(scenario: str, seed: int, duration: float, users: int,
                  failpoints: list[str], net: str = "proxy") -> str:
    cmd = (f"chaos/chorus-chaos run --scenario {scenario} --seed {seed} "
           f"--duration {duration:g} --users-per-site {users}")
    if failpoints:
        cmd += f" --failpoints {','.join(failpoints)}"
    if net != "proxy":
        cmd += f" --net {net}"
    return cmd


async def _monitor(cl: ChaosCluster, nemesis: Nemesis, exits: dict[str, int],
                   stop: asyncio.Event) -> None:
    """Notices a node that exited although nobody killed or stopped it."""
    while not stop.is_set():
        for n in cl.nodes.values():
            p = n.proc
            if p is not None and p.poll() is not None and n.proc is p:
                await asyncio.sleep(0.3)  # the nemesis may be reaping it right now
                if n.proc is p:
                    exits[n.node_id] = p.returncode
                    nemesis.errors.append(f"{n.node_id} exited with {p.returncode}")
                    n.proc = None
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass


async def _run(cl: ChaosCluster, scenario: str, seed: int, duration: float,
               users: dict[str, str], out: Path, info: dict) -> tuple[dict, dict, Nemesis]:
    await asyncio.to_thread(cl.start_all)
    run_id = f"{scenario.replace('-', '')}{seed}"
    wl = Workload(cl, run_id, seed, users, PASSWORD)
    await wl.setup()
    await asyncio.to_thread(cl.wait_sessions_synced, 30.0)
    faults = plan(scenario, seed, duration)
    t0 = time.monotonic()
    wl.t0 = t0
    nemesis = Nemesis(cl, faults, t0)
    exits: dict[str, int] = {}
    mon_stop = asyncio.Event()
    monitor = asyncio.create_task(_monitor(cl, nemesis, exits, mon_stop))
    wl.start()
    nem_task = asyncio.create_task(nemesis.run())
    await asyncio.sleep(duration)
    nemesis.stop()
    try:
        await asyncio.wait_for(nem_task, 120)
    except asyncio.TimeoutError:
        nemesis.errors.append("nemesis did not finish its last fault within 120 s")
    await wl.stop()
    info["phases"] = {"workload_end": round(time.monotonic() - t0, 2)}
    # ---- heal and recover
    await asyncio.to_thread(nemesis.heal_all)
    recovery: list[str] = []
    try:
        await asyncio.to_thread(cl.wait_ready, readback.CONVERGE_S)
    except AssertionError as e:
        recovery.append(f"cluster not ready after the heal: {str(e)[:1000]}")
    missing = await wl.reconnect_all()
    if missing:
        recovery.append(f"could not log in again: {missing}")
    await wl.settle_acks()
    info["undelivered_after_wait"] = await readback.wait_delivered(
        wl, info.get("delivery_wait_s", readback.CONVERGE_S))
    info["phases"]["delivered"] = round(time.monotonic() - t0, 2)
    rb: dict = {"recovery": recovery}
    # The archive first: a recipient's MAM at another site than the
    # sender's only shows a message once the archive committed it there.
    rb["archive"] = await readback.read_archive(cl)
    rb["mam"] = await readback.read_mam(wl)
    rb["room_mam"] = await readback.read_room_mam(wl)
    # Some users log off for good: observers must see them go.
    rng = random.Random(f"offline:{seed}")
    by_site: dict[str, list[str]] = {}
    for u, s in users.items():
        by_site.setdefault(s, []).append(u)
    leaving = [rng.choice(sorted(us)) for us in by_site.values()]
    for u in leaving:
        await wl.agents[u].close()
    online = {u for u, a in wl.agents.items() if a.online}
    wl.history.online_at_end = sorted(online)
    rb["presence"] = await readback.read_presence(wl, online)
    rb["rosters"] = await readback.read_rosters(wl)
    rb["rooms"] = await readback.read_rooms(wl)
    info["phases"]["read_back"] = round(time.monotonic() - t0, 2)
    await wl.close()
    mon_stop.set()
    await monitor
    codes = await asyncio.to_thread(_stop_all, cl)
    for nid, code in codes.items():
        if code not in (0, None):
            exits.setdefault(nid, code)
        elif code is None:
            exits.setdefault(nid, "did not exit on SIGTERM")
    rb["unexpected_exits"] = exits
    rb["logs"] = {n.node_id: n.log_text() for n in cl.nodes.values()}
    return wl.history.to_json(), rb, nemesis


def _stop_all(cl: ChaosCluster) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for s, n in cl.nodes.items():
        try:
            codes[n.node_id] = n.stop() if n.proc is not None else 0
        except AssertionError:
            codes[n.node_id] = None
    cl.proxy.stop()
    return codes


def run(scenario: str, seed: int, duration: float, out: Path, users_per_site: int = 4,
        failpoints: list[str] | None = None, net: str = "proxy",
        delivery_wait_s: float | None = None) -> int:
    """Runs one scenario; returns 0 (no violations), 1 (violations) or 2
    (harness error / skipped scenario: see the report). ``net``: "proxy"
    (links through the TCP proxy) or "netns" (network namespaces, root).
    ``delivery_wait_s``: how long acked messages still missing after the
    heal are waited for (default readback.CONVERGE_S)."""
    failpoints = list(failpoints or [])
    out = Path(out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    logging.basicConfig(filename=str(out / "harness.log"), level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    users = user_names(users_per_site)
    faults = plan(scenario, seed, duration)
    cmd = reproduce_cmd(scenario, seed, duration, users_per_site, failpoints, net)
    info: dict = {"scenario": scenario, "seed": seed, "duration": duration,
                  "users_per_site": users_per_site, "failpoints": failpoints, "net": net,
                  "reproduce": cmd, "schedule": [f.to_json() for f in faults]}
    if delivery_wait_s is not None:
        info["delivery_wait_s"] = delivery_wait_s
    started = time.monotonic()
    if net == "netns":
        why = netns_unavailable()
        if why:
            info["skipped"] = why
            write_report(out, info, {}, {}, None, [], started)
            return 2
    if SCENARIOS[scenario].needs == "faketime":
        ok, why = faketime_available()
        if not ok:
            info["skipped"] = why
            write_report(out, info, {}, {}, None, [], started)
            return 2
    cl = None
    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(_sig, _frm):
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, on_term)
    try:
        cl = ChaosCluster(out / "cluster", users={**{u: PASSWORD for u in users},
                                                  OBSERVER: PASSWORD},
                          failpoints=failpoints, net=net)
        if isinstance(cl.net, NetnsNetwork):
            info["netns"] = {"prefix": cl.net.prefix, "subnet": f"10.{cl.net.x}.0.0/24",
                             "hosts": cl.net.hosts(), "netem": cl.net.netem}
            if cl.net.notes:
                info["net_notes"] = list(cl.net.notes)
            if scenario == "wan" and not cl.net.netem:
                info["skipped"] = ("wan with --net netns needs tc netem (sch_netem), "
                                   "which this kernel lacks")
                cl.cleanup()
                write_report(out, info, {}, {}, None, [], started)
                return 2
        history, rb, nemesis = asyncio.run(asyncio.wait_for(
            _run(cl, scenario, seed, duration, users, out, info),
            duration + RUN_DEADLINE_EXTRA_S))
    except BaseException as e:  # noqa: BLE001  (reported, exit 2)
        info["error"] = f"{type(e).__name__}: {e}"
        info["traceback"] = traceback.format_exc()
        if cl is not None:
            cl.cleanup()
        write_report(out, info, {}, {}, None, [], started)
        if isinstance(e, KeyboardInterrupt):
            raise
        return 2
    finally:
        if cl is not None:
            cl.cleanup()
        signal.signal(signal.SIGTERM, old_term)
    results = []
    for name, fn in all_checkers().items():
        try:
            results.append(fn(history, rb))
        except Exception as e:  # noqa: BLE001
            info.setdefault("checker_errors", []).append(f"{name}: {e!r}")
    if rb.get("recovery"):
        from chorus_chaos.checkers import CheckResult
        r = CheckResult("recovery")
        for p in rb["recovery"]:
            r.add("not_recovered", detail=p)
        results.append(r)
    write_report(out, info, history, rb, nemesis, results, started)
    if info.get("checker_errors"):
        return 2
    return 1 if any(not r.ok for r in results) else 0
