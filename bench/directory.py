"""Directory benchmark (issue 17): a real OpenLDAP server (Debian's slapd)
seeded with N people (env DIRECTORY_BENCH_PEOPLE, default 100,000), a real
`chorus serve` (target/release/chorus unless CHORUS_BIN says otherwise)
pointed at it. Prints the first synchronization's time (read, accounts
created, index built), the node's resident memory before and after, and
the latency of XEP-0055 people-finder searches asked by a real client
(p50, p99, max). Everything runs on 127.0.0.1 in a temporary directory.

    .venv/bin/python bench/directory.py   (after bash scripts/test made the venv)
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
os.environ.setdefault("CHORUS_BIN", str(HERE.parent / "target" / "release" / "chorus"))

from chorus_node import Node  # noqa: E402
from ldap_server import Slapd, person  # noqa: E402
from test_directory import people_search  # noqa: E402
from xmpp import connect  # noqa: E402

N = int(os.environ.get("DIRECTORY_BENCH_PEOPLE", "100000"))
SEARCHES = int(os.environ.get("DIRECTORY_BENCH_SEARCHES", "300"))
DEPARTMENTS = [f"Dept {i}" for i in range(200)]
SKILLS = [f"skill{i}" for i in range(2000)]
OFFICES = ["London", "New York", "Tokyo", "Singapore", "Frankfurt"]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentiles(v: list[float]) -> tuple[float, float, float]:
    v = sorted(v)
    at = lambda p: v[round((len(v) - 1) * p)]  # noqa: E731
    return at(0.5), at(0.99), v[-1]


async def main() -> None:
    rng = random.Random(7)
    work = Path(tempfile.mkdtemp(prefix="chorus-directory-bench-"))
    entries = [person(f"p{i}", f"Person {i} Example", f"pw-{i}", title=rng.choice(["Engineer", "Analyst", "Manager"]),
                      department=rng.choice(DEPARTMENTS), office=rng.choice(OFFICES),
                      skills=tuple(rng.sample(SKILLS, 3)), manager=f"p{rng.randrange(max(i, 1))}" if i else None)
               for i in range(N)]
    t = time.monotonic()
    slapd = Slapd(work / "ldap", entries)
    print(f"directory benchmark: {N} people; slapadd {time.monotonic() - t:.1f} s")
    slapd.start()
    config = slapd.config(sync_secs=3600)
    config["directory"]["entries_max"] = max(N * 2, 1000)
    node = Node(work / "node", config=config, users={"bench": "bench-secret"})
    node.add_user("bench", "bench-secret")
    try:
        node.start()
        rss0 = rss_kib(node.proc.pid)
        deadline = time.monotonic() + 1800
        secs = None
        while secs is None:
            m = re.search(r"directory synchronized.*?secs=([0-9.]+)", node.log_path.read_text())
            if m:
                secs = float(m.group(1))
                break
            assert time.monotonic() < deadline, node.log_tail()
            await asyncio.sleep(0.5)
        rss1 = rss_kib(node.proc.pid)
        print(f"  first sync (read, {N} accounts created, index)  {secs:.1f} s  ({N / secs:.0f} people/s)")
        print(f"  node RSS                      {rss0 / 1024:.0f} MiB before, {rss1 / 1024:.0f} MiB after "
              f"(+{(rss1 - rss0) / N:.2f} KiB a person)")
        c = await connect(node, "bench", "bench-secret")
        kinds = {
            "skill": lambda: {"skill": rng.choice(SKILLS)},
            "department + office": lambda: {"department": rng.choice(DEPARTMENTS),
                                            "office": rng.choice(OFFICES)},
            "name": lambda: {"name": f"Person {rng.randrange(N)} "},
        }
        for name, fields in kinds.items():
            times = []
            for _ in range(SEARCHES):
                t = time.monotonic()
                await people_search(c, **fields())
                times.append((time.monotonic() - t) * 1000)
            p50, p99, mx = percentiles(times)
            print(f"  search: {name:<22} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  max {mx:6.2f} ms")
        await c.close()
    finally:
        node.stop()
        slapd.stop()


if __name__ == "__main__":
    asyncio.run(main())
