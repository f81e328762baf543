"""A clock the test can move forward: nodes run under libfaketime, reading
their offset from a file (re-read every second), so a test can age the
archive by weeks (records are stamped by the node's clock, and retention
is judged by it) without any test-only switch in the server. Monotonic
time is left alone: timers, leases and Raft elections are unaffected."""

from __future__ import annotations

import asyncio
import email.utils
import time
import urllib.request
from pathlib import Path

from chorus_node import insecure_ssl_context

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
DAY_S = 86_400
# How long a node may take to see a new offset (libfaketime re-reads the
# file once a second).
SEE_S = 15.0


class FakeClock:
    def __init__(self, path: Path):
        assert FAKETIME_LIB.exists(), (
            f"{FAKETIME_LIB} missing: `bash scripts/deps` installs libfaketime")
        self.path = Path(path)
        self.days = 0.0
        self.path.write_text("+0d\n")

    def env(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": str(FAKETIME_LIB),
            "FAKETIME_TIMESTAMP_FILE": str(self.path),
            "FAKETIME_CACHE_DURATION": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_DONT_RESET": "1",
        }

    def attach(self, *nodes) -> None:
        """From their next start on, ``nodes`` run on this clock."""
        for n in nodes:
            n.extra_env.update(self.env())

    def now_ms(self) -> int:
        return int((time.time() + self.days * DAY_S) * 1000)

    async def advance_to(self, days: float, *nodes) -> None:
        """Sets the offset to ``days`` after real time and waits until every
        node's clock (its HTTP Date header) shows it."""
        assert days >= self.days, "this clock only moves forward"
        self.days = days
        self.path.write_text(f"+{int(days * DAY_S)}\n")
        for n in nodes:
            await _sees(n, time.time() + days * DAY_S)


def _date_of(node) -> float:
    req = urllib.request.Request(node.http_base + "/healthz")
    with urllib.request.urlopen(req, timeout=5, context=insecure_ssl_context()) as r:
        return email.utils.parsedate_to_datetime(r.headers["date"]).timestamp()


async def _sees(node, target_s: float) -> None:
    deadline = time.monotonic() + SEE_S
    while True:
        seen = await asyncio.to_thread(_date_of, node)
        if seen >= target_s - 5:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"{node!r} never saw the clock move: it says "
                                 f"{seen:.0f}, wanted {target_s:.0f}")
        await asyncio.sleep(0.2)
