"""The chaos cluster: the end-to-end ``Cluster`` (sites a, b, c, one node
per site, every inter-node link through the fault-injecting proxy, or, with
``net="netns"``, every node in its own network namespace: network.py) plus
what the nemeses need on top: extra environment per node (failpoints,
libfaketime for clock skew), SIGSTOP/SIGCONT, a compliance API token, and
a cleanup that never leaves a process behind (or stopped).

A site is one node here: the e2e Cluster names nodes ``<site>1`` and wires
one per site, so "kill a node" and "kill a site" differ only in how long the
node stays down (see faults.py).
"""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import chorus_chaos  # noqa: F401  (puts tests/e2e on sys.path)
from chorus_chaos.network import NetnsNetwork, ProxyNetwork
from cluster import Cluster, ClusterNode  # type: ignore[import-not-found]

OFFICER_TOKEN = "chaos-officer-token"
FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
API_TOKENS = {
    "tokens": [
        {"name": "chaos-officer", "role": "compliance",
         "sha256": hashlib.sha256(OFFICER_TOKEN.encode()).hexdigest()},
    ]
}


class ChaosNode(ClusterNode):
    """A ClusterNode whose process environment can be extended (the
    e2e ``Node._env`` is the single place the environment is built)."""

    def __init__(self, *args, **kwargs):
        self.extra_env: dict[str, str] = {}
        super().__init__(*args, **kwargs)

    def _env(self) -> dict:
        env = super()._env()
        env.update(self.extra_env)
        return env

    def pause(self) -> None:
        """SIGSTOP the process (it keeps its sockets, answers nothing)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)


class ChaosCluster(Cluster):
    """Three sites, one ChaosNode each, with the compliance API enabled."""

    def __init__(self, workdir: Path, users: dict[str, str],
                 failpoints: list[str] | None = None, net: str = "proxy"):
        netns = NetnsNetwork() if net == "netns" else None
        try:
            super().__init__(workdir, users=users, extra={"api": API_TOKENS},
                             node_class=ChaosNode,
                             hosts=netns.hosts() if netns is not None else None)
        except BaseException:
            if netns is not None:
                netns.close()
            raise
        # How cuts and latency are applied (network.py): the proxy, or
        # iptables/tc inside the sites' network namespaces.
        self.net = netns if netns is not None else ProxyNetwork(self)
        if netns is not None:
            for s, n in self.nodes.items():
                n.argv_prefix = netns.exec_prefix(s)
        self.failpoints = list(failpoints or [])
        self.nodes_by_id = {}
        for n in self.nodes.values():
            assert isinstance(n, ChaosNode)
            if self.failpoints:
                n.extra_env["CHORUS_FAILPOINTS"] = ",".join(self.failpoints)
            self.nodes_by_id[n.node_id] = n

    def node(self, site: str) -> ChaosNode:
        return self.nodes[site]  # type: ignore[return-value]

    def set_skew(self, site: str, skew: str | None) -> None:
        """Run ``site``'s node under libfaketime (``"+90s"``) from its next
        start on; None removes the skew."""
        env = self.node(site).extra_env
        for k in ("LD_PRELOAD", "FAKETIME", "FAKETIME_DONT_FAKE_MONOTONIC",
                  "FAKETIME_DONT_RESET"):
            env.pop(k, None)
        if skew:
            env.update({"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME": skew,
                        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                        "FAKETIME_DONT_RESET": "1"})

    def cleanup(self) -> None:
        """Best effort: resume stopped processes, kill everything, stop the
        proxy, remove the network namespaces. Safe to call twice and from an
        exception handler."""
        for n in self.nodes.values():
            try:
                n.resume()  # type: ignore[attr-defined]
            except (OSError, AttributeError):
                pass
        try:
            self.kill_all()
        except Exception:  # noqa: BLE001  (cleanup must go on)
            for n in self.nodes.values():
                if n.proc is not None and n.proc.poll() is None:
                    n.proc.kill()
            self.proxy.stop()
        if isinstance(self.net, NetnsNetwork):
            self.net.close()
