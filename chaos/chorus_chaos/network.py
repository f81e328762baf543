"""How the nemeses cut links and add latency: one small interface, two
implementations.

* ``ProxyNetwork`` (``--net proxy``, the default): every inter-node link
  goes through the e2e harness's TCP proxy on 127.0.0.1; a cut resets the
  connections and refuses new ones, WAN stalls chunks in the proxy.
* ``NetnsNetwork`` (``--net netns``, root only): every site runs in its own
  network namespace on a bridge; a cut is an iptables DROP rule inside the
  affected site namespaces (silent: connections stay half-open until the
  kernel gives up or the rule goes), WAN is a ``tc netem`` qdisc on the
  site's veth.

Topology of a netns run (``P`` = ``chaos<X>``, X in 200..250, unique per
run; every name starts with ``chaos``; interface names are at most 10
characters)::

    root ns:  P-h 10.X.0.1/24 ──veth── P-hb ┐   (P-hb, Pab.. in ns P-wan,
    ns P-wan: bridge P-br  ──────────────────┤    enslaved to bridge P-br)
    ns P-a:   Pa 10.X.0.11/24 ──veth── Pab ──┤
    ns P-b:   Pb 10.X.0.12/24 ──veth── Pbb ──┤
    ns P-c:   Pc 10.X.0.13/24 ──veth── Pcb ──┘

Nothing is added to the root namespace except the one veth ``P-h`` and
its connected route to 10.X.0.0/24; firewall rules live only inside the
site namespaces (a chain ``CHAOS`` hooked into INPUT and OUTPUT).
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import re
import shutil
import subprocess

log = logging.getLogger("chaos.net")
BASE_PREFIX = "chaos"
SUBNETS = range(200, 251)
SITE_OCTET = {"a": 11, "b": 12, "c": 13}
CMD_TIMEOUT_S = 20.0
IP = shutil.which("ip") or "/usr/sbin/ip"


class NetError(RuntimeError):
    pass


def _run(args: list[str], input: str | None = None, check: bool = True) -> str:
    try:
        cp = subprocess.run(args, input=input, capture_output=True, text=True,
                            timeout=CMD_TIMEOUT_S,
                            stdin=None if input is not None else subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetError(f"{' '.join(args)}: {e}") from e
    if check and cp.returncode != 0:
        raise NetError(f"{' '.join(args)} failed ({cp.returncode}): {cp.stderr.strip()[:500]}")
    return cp.stdout


# ------------------------------------------------------------------ proxy
class ProxyNetwork:
    """Cuts and WAN through the e2e proxy (routes are tagged with both sites)."""

    mode = "proxy"

    def __init__(self, cluster):
        self.cl = cluster

    def cut_site(self, site: str) -> None:
        self.cl.proxy.cut(site)

    def heal_site(self, site: str) -> None:
        self.cl.proxy.heal(site)

    def cut_pair(self, x: str, y: str) -> None:
        for t in (f"{x}1->{y}1", f"{y}1->{x}1"):
            self.cl.proxy.cut(t)

    def heal_pair(self, x: str, y: str) -> None:
        for t in (f"{x}1->{y}1", f"{y}1->{x}1"):
            self.cl.proxy.heal(t)

    def set_wan(self, site: str, delay_ms: float, jitter_ms: float, loss: float,
                seed: int) -> None:
        self.cl.proxy.set_wan(site, delay_ms, jitter_ms, loss, 200.0, seed)

    def clear_wan(self, site: str | None = None) -> None:
        self.cl.proxy.clear_wan(site)

    def heal_all(self) -> None:
        for t in list(self.cl.proxy._cut_tags):
            self.cl.proxy.heal(t)
        self.cl.proxy.clear_wan(None)

    def close(self) -> None:
        self.cl.proxy.stop()


# ------------------------------------------------------------------ netns
def netns_unavailable() -> str | None:
    """Why netns mode cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "--net netns needs root (network namespaces, iptables, tc)"
    missing = [t for t in ("ip", "iptables", "iptables-restore", "tc") if shutil.which(t) is None]
    if missing:
        return f"--net netns needs {', '.join(missing)} (iproute2, iptables)"
    # Root in a container may still lack the capability: try it.
    probe = f"{BASE_PREFIX}probe{os.getpid()}"
    try:
        _run(["ip", "netns", "add", probe])
        _run(["ip", "netns", "exec", probe, "iptables", "-L", "-n"])
    except NetError as e:
        return f"--net netns cannot create a namespace with a firewall here: {e}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return None


def _netns_list() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _root_links() -> list[str]:
    out = _run(["ip", "-o", "link", "show"], check=False)
    names = []
    for line in out.splitlines():
        m = re.match(r"\d+:\s+([^:@\s]+)", line)
        if m:
            names.append(m.group(1))
    return names


def leftovers(prefix: str = BASE_PREFIX) -> list[str]:
    """Namespaces and root-namespace interfaces whose name starts with prefix."""
    return ([f"netns {n}" for n in _netns_list() if n.startswith(prefix)]
            + [f"link {n}" for n in _root_links() if n.startswith(prefix)])


def cleanup(prefix: str = BASE_PREFIX) -> list[str]:
    """Removes every namespace (killing the processes still in it) and root
    interface whose name starts with ``prefix``; returns what it removed."""
    removed = []
    for ns in _netns_list():
        if not ns.startswith(prefix):
            continue
        pids = _run(["ip", "netns", "pids", ns], check=False).split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except (OSError, ValueError):
                pass
        _run(["ip", "netns", "del", ns], check=False)
        removed.append(f"netns {ns}" + (f" (killed pids {' '.join(pids)})" if pids else ""))
    for link in _root_links():
        if link.startswith(prefix):
            _run(["ip", "link", "del", link], check=False)
            removed.append(f"link {link}")
    return removed


class NetnsNetwork:
    """The namespaces, bridge and veths of one run, and the faults on them."""

    mode = "netns"

    def __init__(self, sites=("a", "b", "c")):
        self.sites = tuple(sites)
        self.x = self._claim_subnet()  # creates the wan namespace
        self.prefix = f"{BASE_PREFIX}{self.x}"
        self.blocked: set[frozenset[str]] = set()
        self.wan: dict[str, tuple] = {}
        self.netem = True
        self.notes: list[str] = []
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # -- names -------------------------------------------------------------
    @property
    def wan_ns(self) -> str:
        return f"{self.prefix}-wan"

    def ns(self, site: str) -> str:
        return f"{self.prefix}-{site}"

    def dev(self, site: str) -> str:
        return f"{self.prefix}{site}"

    @property
    def host_addr(self) -> str:
        return f"10.{self.x}.0.1"

    def addr(self, site: str) -> str:
        return f"10.{self.x}.0.{SITE_OCTET[site]}"

    def hosts(self) -> dict[str, str]:
        return {s: self.addr(s) for s in self.sites}

    def exec_prefix(self, site: str) -> list[str]:
        """``ip netns exec`` execs the command (no fork): the Popen pid is the
        server's, so signals reach it; the environment is kept."""
        return [IP, "netns", "exec", self.ns(site)]

    # -- set-up ------------------------------------------------------------
    def _claim_subnet(self) -> int:
        used_text = _run(["ip", "-4", "-o", "addr", "show"], check=False) + \
            _run(["ip", "-4", "route", "show", "table", "all"], check=False)
        existing = set(_netns_list()) | set(_root_links())
        candidates = list(SUBNETS)
        random.Random().shuffle(candidates)
        for x in candidates:
            p = f"{BASE_PREFIX}{x}"
            if f"10.{x}.0." in used_text or any(n.startswith(p) for n in existing):
                continue
            # `ip netns add` fails if the name exists: the claim is atomic
            # between parallel runs.
            cp = subprocess.run(["ip", "netns", "add", f"{p}-wan"], capture_output=True,
                                text=True, timeout=CMD_TIMEOUT_S, stdin=subprocess.DEVNULL)
            if cp.returncode == 0:
                return x
        raise NetError("no free 10.X.0.0/24 (X in 200..250) for the chaos namespaces")

    def _ip(self, *args: str, ns: str | None = None) -> None:
        _run(["ip", *(["-n", ns] if ns else []), *args])

    def _build(self) -> None:
        p, w = self.prefix, self.wan_ns
        self._ip("link", "set", "lo", "up", ns=w)
        self._ip("link", "add", f"{p}-br", "type", "bridge", ns=w)
        self._ip("link", "set", f"{p}-br", "up", ns=w)
        # root <-> bridge
        self._ip("link", "add", f"{p}-h", "type", "veth", "peer", "name", f"{p}-hb")
        self._ip("link", "set", f"{p}-hb", "netns", w)
        self._ip("link", "set", f"{p}-hb", "master", f"{p}-br", "up", ns=w)
        self._ip("addr", "add", f"{self.host_addr}/24", "dev", f"{p}-h")
        self._ip("link", "set", f"{p}-h", "up")
        for s in self.sites:
            ns, dev = self.ns(s), self.dev(s)
            _run(["ip", "netns", "add", ns])
            self._ip("link", "set", "lo", "up", ns=ns)
            self._ip("link", "add", dev, "type", "veth", "peer", "name", f"{dev}b")
            self._ip("link", "set", dev, "netns", ns)
            self._ip("link", "set", f"{dev}b", "netns", w)
            self._ip("link", "set", f"{dev}b", "master", f"{p}-br", "up", ns=w)
            self._ip("addr", "add", f"{self.addr(s)}/24", "dev", dev, ns=ns)
            self._ip("link", "set", dev, "up", ns=ns)
            ipt = ["ip", "netns", "exec", ns, "iptables"]
            _run([*ipt, "-N", "CHAOS"])
            _run([*ipt, "-A", "INPUT", "-j", "CHAOS"])
            _run([*ipt, "-A", "OUTPUT", "-j", "CHAOS"])
        # Does this kernel have netem? (Some VM kernels are built without it.)
        cp = subprocess.run(["ip", "netns", "exec", self.ns(self.sites[0]), "tc", "qdisc",
                             "add", "dev", self.dev(self.sites[0]), "root", "netem",
                             "delay", "1ms"], capture_output=True, text=True,
                            timeout=CMD_TIMEOUT_S, stdin=subprocess.DEVNULL)
        if cp.returncode == 0:
            self._tc_clear(self.sites[0])
        else:
            self.netem = False
            self.notes.append("tc netem unavailable (kernel without sch_netem): WAN faults "
                              "are packet loss only (iptables statistic), no delay")
        log.info("netns topology %s: %s", self.prefix, self.hosts())

    # -- faults ------------------------------------------------------------
    def _apply_rules(self, site: str) -> None:
        """Rewrites ``site``'s CHAOS chain (atomically) from the blocked
        pairs and WAN loss."""
        lines = ["*filter", "-F CHAOS"]
        for pair in self.blocked:
            if site in pair:
                (other,) = pair - {site}
                lines += [f"-A CHAOS -s {self.addr(other)} -j DROP",
                          f"-A CHAOS -d {self.addr(other)} -j DROP"]
        if site in self.wan and not self.netem:
            loss = self.wan[site][2]
            if loss > 0:
                for other in self.sites:
                    if other != site:
                        lines.append(f"-A CHAOS -d {self.addr(other)} -m statistic "
                                     f"--mode random --probability {loss:.4f} -j DROP")
        lines.append("COMMIT")
        _run(["ip", "netns", "exec", self.ns(site), "iptables-restore", "--noflush"],
             input="\n".join(lines) + "\n")

    def cut_pair(self, x: str, y: str) -> None:
        self.blocked.add(frozenset((x, y)))
        self._apply_rules(x)
        self._apply_rules(y)

    def heal_pair(self, x: str, y: str) -> None:
        self.blocked.discard(frozenset((x, y)))
        self._apply_rules(x)
        self._apply_rules(y)

    def cut_site(self, site: str) -> None:
        for o in self.sites:
            if o != site:
                self.blocked.add(frozenset((site, o)))
        for s in self.sites:
            self._apply_rules(s)

    def heal_site(self, site: str) -> None:
        for o in self.sites:
            if o != site:
                self.blocked.discard(frozenset((site, o)))
        for s in self.sites:
            self._apply_rules(s)

    def set_wan(self, site: str, delay_ms: float, jitter_ms: float, loss: float,
                seed: int) -> None:
        self.wan[site] = (delay_ms, jitter_ms, loss)
        if not self.netem:
            self._apply_rules(site)
            return
        args = ["delay", f"{delay_ms:g}ms"]
        if jitter_ms > 0:
            args += [f"{jitter_ms:g}ms"]
        if loss > 0:
            args += ["loss", f"{loss * 100:.3f}%"]
        _run(["ip", "netns", "exec", self.ns(site), "tc", "qdisc", "replace", "dev",
              self.dev(site), "root", "netem", *args])

    def _tc_clear(self, site: str) -> None:
        _run(["ip", "netns", "exec", self.ns(site), "tc", "qdisc", "del", "dev",
              self.dev(site), "root"], check=False)

    def clear_wan(self, site: str | None = None) -> None:
        for s in ([site] if site else list(self.wan)):
            self.wan.pop(s, None)
            if self.netem:
                self._tc_clear(s)
            else:
                self._apply_rules(s)

    def heal_all(self) -> None:
        self.blocked.clear()
        self.wan.clear()
        for s in self.sites:
            if self.netem:
                self._tc_clear(s)
            self._apply_rules(s)

    def close(self) -> None:
        """Removes the run's namespaces and interfaces (killing processes
        still inside). Safe to call twice."""
        try:
            cleanup(self.prefix)
        except Exception as e:  # noqa: BLE001  (cleanup must not raise)
            log.warning("netns cleanup of %s: %r", self.prefix, e)
