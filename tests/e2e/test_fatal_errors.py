"""A fatal storage error on a running node, with a real node process: once
synced writes fail (the ``fail-synced-writes-when-triggered`` failpoint of
debug builds makes every synced write fail as if fsync returned EIO, from
the moment its trigger file exists), the node stops reporting ready, says
why on ``/readyz``, sets ``chorus_fatal_error{component="storage"}`` and
logs the reason once; it keeps answering (no crash, no hang). The archive's
Raft log writes fail too (the next scheduled retention run appends to the
log), so the Raft core stops: that is reported as a fatal ``archive`` error
of its own.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from chorus_node import Node
from xmpp import connect

POLL_S = 0.2
DEADLINE_S = 15.0


class FailingDiskNode(Node):
    """A node whose synced writes fail once ``trigger`` exists."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.trigger = self.workdir / "break-the-disk"

    def _env(self) -> dict:
        env = super()._env()
        env["CHORUS_FAILPOINTS"] = "fail-synced-writes-when-triggered"
        env["CHORUS_FAILPOINT_TRIGGER"] = str(self.trigger)
        return env


def fatal_gauge(node, component: str = "storage") -> float | None:
    code, body = node.http_get("/metrics")
    assert code == 200
    for line in body.splitlines():
        if line.startswith(f'chorus_fatal_error{{component="{component}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return None


async def until(what: str, check) -> None:
    deadline = time.monotonic() + DEADLINE_S
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last is True:
            return
        await asyncio.sleep(POLL_S)  # gauges refresh every second: no event to wait for
    raise AssertionError(f"{what}: not within {DEADLINE_S}s; last: {last}")


@pytest.mark.timeout(120)
async def test_a_failed_synced_write_makes_the_node_unready_with_the_reason(tmp_path):
    # A retention run every second: a Raft log append soon after the break.
    n = FailingDiskNode(tmp_path / "node", config={"archive": {"retention_interval_secs": 1}})
    try:
        n.add_user("alice", "alice-pw")
        n.add_user("bob", "bob-pw")
        n.start()
        assert n.http_get("/readyz") == (200, "ready")
        await until("fatal gauges exported as 0",
                    lambda: fatal_gauge(n) == 0.0 and fatal_gauge(n, "archive") == 0.0)
        alice = await connect(n, "alice", "alice-pw")
        # Healthy: a message to offline bob is archived.
        alice.send_message(n.jid("bob"), "before the disk broke")
        await alice.sync(timeout=10)
        n.trigger.touch()
        alice.send_message(n.jid("bob"), "after the disk broke")
        await until("/readyz fails with the reason",
                    lambda: n.http_get("/readyz")[0] == 503 or n.http_get("/readyz"))
        # The first cause is named: the message's spool write, or (if the
        # retention tick came first) the Raft log write.
        code, body = n.http_get("/readyz")
        assert body.startswith(("fatal storage error: a synced write to ",
                                "fatal archive error: the archive's Raft core stopped")), body
        first = body
        await until("chorus_fatal_error{component=storage} is 1", lambda: fatal_gauge(n) == 1.0)
        await until("chorus_fatal_error{component=archive} is 1",
                    lambda: fatal_gauge(n, "archive") == 1.0)
        log = n.log_text()
        assert log.count("fatal storage error: this node stops reporting ready") == 1, \
            [line for line in log.splitlines() if "fatal" in line]
        assert log.count("fatal archive error: this node stops reporting ready") == 1, \
            [line for line in log.splitlines() if "fatal" in line]
        assert "the archive's Raft core stopped" in log
        assert "Input/output error" in log
        # /readyz keeps naming the first cause.
        assert n.http_get("/readyz") == (503, first)
        # The node keeps answering (no crash, no hang) and stays unready.
        assert n.running
        assert n.http_get("/archive/status")[0] == 200
        assert n.http_get("/readyz")[0] == 503
        await alice.close()
    finally:
        n.stop()
