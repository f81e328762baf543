"""The ``chorus-chaos`` command line: run, list, plan, suite.

Exit codes: 0 no violations, 1 violations, 2 harness error (or a scenario
that cannot run here, e.g. clock-skew without libfaketime)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from chorus_chaos.faults import SCENARIOS, plan

SMOKE = [("site-cut", 1, 25), ("kill9", 1, 25), ("blips", 1, 20)]
FULL = [(name, seed, 60) for name in SCENARIOS for seed in (1, 2)]
NETS = ("proxy", "netns")
NET_HELP = ("how links are cut and slowed: proxy (TCP proxy on 127.0.0.1, default) or "
            "netns (one network namespace per site, iptables/tc; needs root)")


def _failpoints(v: str | None) -> list[str]:
    return [x.strip() for x in (v or "").split(",") if x.strip()]


def cmd_run(a) -> int:
    from chorus_chaos.runner import run
    out = Path(a.out or f"chaos-out/{a.scenario}-{a.seed}")
    code = run(a.scenario, a.seed, a.duration, out, a.users_per_site, _failpoints(a.failpoints),
               net=a.net, delivery_wait_s=a.delivery_wait)
    print((out / "summary.txt").read_text(), end="")
    print(f"report: {out / 'report.json'}")
    return code


def cmd_list(_a) -> int:
    for s in SCENARIOS.values():
        print(f"{s.name:<16} {s.description}")
    return 0


def cmd_plan(a) -> int:
    print(json.dumps([f.to_json() for f in plan(a.scenario, a.seed, a.duration)], indent=2))
    return 0


def cmd_suite(a) -> int:
    from chorus_chaos.runner import run
    runs = SMOKE if a.smoke else FULL
    if a.seeds is not None:
        runs = [(n, seed, d) for n, _, d in runs for seed in range(1, a.seeds + 1)]
        runs = list(dict.fromkeys(runs))
    if a.duration is not None:
        runs = [(n, seed, a.duration) for n, seed, _ in runs]
    base = Path(a.out or f"chaos-out/suite-{'smoke' if a.smoke else 'full'}-"
                f"{time.strftime('%Y%m%d-%H%M%S')}")
    rows: dict[str, dict] = {}
    worst = 0
    for name, seed, dur in runs:
        out = base / f"{name}-{seed}"
        code = run(name, seed, dur, out, a.users_per_site, net=a.net)
        rep = json.loads((out / "report.json").read_text())
        print(f"{name} seed {seed}: {rep['outcome']} ({rep['violations']} violations)",
              flush=True)
        r = rows.setdefault(name, {"scenario": name, "runs": 0, "faults": 0, "acked": 0,
                                   "unknown": 0, "violations": 0, "outcomes": []})
        r["runs"] += 1
        r["faults"] += rep["counts"]["faults_injected"]
        r["acked"] += rep["counts"]["acked"]
        r["unknown"] += rep["counts"]["unknown"]
        r["violations"] += rep["violations"]
        r["outcomes"].append(f"{rep['outcome']} (seed {seed})" if rep["outcome"] != "ok"
                             else "ok")
        worst = max(worst, code if code != 2 or "skipped" not in rep else 0)
    from chorus_chaos.report import suite_table
    for r in rows.values():
        r["outcome"] = ", ".join(sorted(set(r["outcomes"])))
    table = suite_table(list(rows.values()))
    (base / "summary.md").write_text(
        f"# chorus-chaos {'smoke' if a.smoke else 'full'} suite (network: {a.net})\n\n{table}")
    print(table)
    print(f"summary: {base / 'summary.md'}")
    return worst


def cmd_cleanup_netns(a) -> int:
    from chorus_chaos.network import cleanup, netns_unavailable
    why = netns_unavailable()
    if why:
        print(f"chorus-chaos: {why}", file=sys.stderr)
        return 2
    if not a.prefix.startswith("chaos"):
        print("chorus-chaos: --prefix must start with 'chaos'", file=sys.stderr)
        return 2
    removed = cleanup(a.prefix)
    for r in removed:
        print(f"removed {r}")
    print(f"{len(removed)} removed")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="chorus-chaos", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run one scenario against a fresh 3-site cluster")
    r.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    r.add_argument("--seed", type=int, required=True)
    r.add_argument("--duration", type=float, required=True, help="seconds of faults+workload")
    r.add_argument("--users-per-site", type=int, default=4)
    r.add_argument("--out", help="output directory (default chaos-out/<scenario>-<seed>)")
    r.add_argument("--failpoints", help="comma-separated CHORUS_FAILPOINTS for every node")
    r.add_argument("--net", choices=NETS, default="proxy", help=NET_HELP)
    r.add_argument("--delivery-wait", type=float,
                   help="seconds to wait after the heal for acked messages still missing "
                        "(default 60; a run expected to lose messages can wait less)")
    r.set_defaults(fn=cmd_run)
    sub.add_parser("list", help="list the scenarios").set_defaults(fn=cmd_list)
    pl = sub.add_parser("plan", help="print a scenario's fault schedule as JSON")
    pl.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    pl.add_argument("--seed", type=int, required=True)
    pl.add_argument("--duration", type=float, required=True)
    pl.set_defaults(fn=cmd_plan)
    s = sub.add_parser("suite", help="run the smoke or the full suite")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--smoke", action="store_true")
    g.add_argument("--full", action="store_true")
    s.add_argument("--out")
    s.add_argument("--users-per-site", type=int, default=4)
    s.add_argument("--seeds", type=int, help="seeds 1..N per scenario (default: smoke 1, full 2)")
    s.add_argument("--duration", type=float, help="seconds per run (default: smoke 20-25, full 60)")
    s.add_argument("--net", choices=NETS, default="proxy", help=NET_HELP)
    s.set_defaults(fn=cmd_suite)
    c = sub.add_parser("cleanup-netns", help="remove leftover chaos network namespaces and "
                       "interfaces (names starting with 'chaos'; kills processes in them)")
    c.add_argument("--prefix", default="chaos",
                   help="only names starting with this (e.g. chaos217 for one run)")
    c.set_defaults(fn=cmd_cleanup_netns)
    a = p.parse_args(argv)
    try:
        return a.fn(a)
    except KeyboardInterrupt:
        print("chorus-chaos: interrupted", file=sys.stderr)
        return 2
