"""pytest fixtures for the Chorus end-to-end suite.

Every test that asks for the ``node`` fixture gets its own, freshly started
``chorus`` process (the real binary) on three free loopback ports, with its own
data directory, and users created through the real CLI before the start.

Tests are plain ``async def`` functions: the ``pytest_pyfunc_call`` hook below
runs them on a fresh asyncio event loop (no pytest-asyncio plugin needed), with
an overall deadline, and closes every XMPP client they left open.

Per-test node customisation is done with a marker::

    @pytest.mark.chorus(config={"registration": {"enabled": True}},
                        users={"alice": "pw"}, start=False)

``config`` is deep-merged into the default configuration (so it can add
sections or override single keys); ``users`` replaces the default accounts;
``start=False`` hands the test a node that is configured (and has its users)
but not running yet.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import xmpp as xmpp_helpers  # noqa: E402  (after sys.path tweak)
from chorus_node import Node, kill_leftover_nodes  # noqa: E402
from cluster import Cluster  # noqa: E402
from clock import FakeClock  # noqa: E402

# Inner deadline for one async test body; pytest-timeout (pytest.ini) is the
# outer safety net that also covers fixture setup/teardown.
ASYNC_TEST_DEADLINE_S = float(os.environ.get("CHORUS_E2E_TEST_DEADLINE", "90"))


# --------------------------------------------------------------------------
# fixtures and hooks
# --------------------------------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "chorus(config=None, users=None, start=True, clock=False): customise the node "
        "fixture (extra TOML config merged in, accounts, autostart)")
    config.addinivalue_line(
        "markers", "chorus_cluster(config=..., clock=False): extra config sections for every "
        "node of the cluster3 fixture")


def pytest_sessionfinish(session, exitstatus):
    kill_leftover_nodes()


@pytest.fixture
def node(request, tmp_path):
    marker = request.node.get_closest_marker("chorus")
    opts = dict(marker.kwargs) if marker else {}
    n = Node(tmp_path / "node", config=opts.get("config"), users=opts.get("users"))
    if opts.get("clock"):
        # The node runs on a clock the test moves forward (clock.py).
        n.clock = FakeClock(tmp_path / "clock")
        n.clock.attach(n)
    request.node._chorus_node = n
    try:
        for name, pw in list(n.users.items()):
            n.add_user(name, pw)
        if opts.get("start", True):
            n.start()
    except BaseException:
        if n.running:
            n.kill9()
        raise
    yield n
    if n.proc is not None:
        code = n.stop()
        assert code == 0, (f"chorus exited with code {code} on SIGTERM\n"
                           f"--- log tail ---\n{n.log_tail()}")


@pytest.fixture
def cluster3(request, tmp_path):
    """Three sites a, b, c (nodes a1, b1, c1), every inter-node connection
    through a fault-injecting proxy; accounts alice, bob, carol, dave
    (password ``<name>-pw``); started and ready (see cluster.py). A
    ``@pytest.mark.chorus_cluster(config={...})`` marker merges extra
    configuration sections into every node's config."""
    marker = request.node.get_closest_marker("chorus_cluster")
    extra = dict(marker.kwargs).get("config") if marker else None
    cl = Cluster(tmp_path / "cluster", extra=extra)
    if marker and marker.kwargs.get("clock"):
        # Every node runs on one clock the test moves forward (clock.py).
        cl.clock = FakeClock(tmp_path / "clock")
        cl.clock.attach(*cl.nodes.values())
    request.node._chorus_cluster = cl
    try:
        cl.start_all()
    except BaseException:
        cl.kill_all()
        raise
    yield cl
    codes = cl.stop_all()
    bad = {s: c for s, c in codes.items() if c != 0}
    assert not bad, (f"cluster nodes exited with {bad} on SIGTERM\n" + "\n".join(
        f"--- {title} ---\n{text}" for title, text in cl.log_sections(60)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        n = getattr(item, "_chorus_node", None)
        if n is not None:
            rep.sections.append(
                (f"chorus node log tail ({n.log_path})", n.log_tail()))
        cl = getattr(item, "_chorus_cluster", None)
        if cl is not None:
            rep.sections.extend(cl.log_sections())


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run ``async def`` tests on a fresh event loop with a deadline."""
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        return None
    argnames = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in argnames}

    async def runner():
        try:
            await asyncio.wait_for(fn(**kwargs), ASYNC_TEST_DEADLINE_S)
        finally:
            await xmpp_helpers.close_all_clients()

    asyncio.run(runner())
    return True
