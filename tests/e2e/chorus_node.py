"""The Chorus node under test: config file, data dir, CLI, process, logs.

Used by conftest.py's ``node`` fixture; tests may also build a Node directly
(e.g. to write a broken config without starting anything).
"""

from __future__ import annotations

import json
import os
import signal
import random
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

DOMAIN = "chorus.test"
READY_DEADLINE_S = 30.0
STOP_DEADLINE_S = 10.0
CLI_TIMEOUT_S = 60.0

# Nodes whose process may still be running (killed at session end if a test
# was interrupted, e.g. by pytest-timeout, before its teardown ran).
_LIVE: set["Node"] = set()

DEFAULT_USERS = {
    "alice": "alice-secret",
    "bob": "bob-secret",
    "carol": "carol-secret",
}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def chorus_bin() -> Path:
    """Path of the server binary: $CHORUS_BIN or <repo>/target/debug/chorus."""
    raw = os.environ.get("CHORUS_BIN")
    if not raw:
        return REPO / "target" / "debug" / "chorus"
    p = Path(raw)
    if p.is_absolute():
        return p
    # Relative paths are taken relative to the current directory first
    # (scripts/test runs from the repo root), then to the repo root.
    if (Path.cwd() / p).exists():
        return (Path.cwd() / p).resolve()
    return (REPO / p).resolve()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()


def free_ports(n: int) -> list[int]:
    """Pick n distinct free TCP ports on 127.0.0.1, below the kernel's
    ephemeral range: a port picked there and released can be taken by an
    outgoing connection (a node dialling its peers) before the node that
    was given it binds it."""
    low = _ephemeral_low()
    top = low - 1 if low > 12000 else 60999
    ports: list[int] = []
    rng = random.Random()
    attempts = 0
    while len(ports) < n:
        attempts += 1
        assert attempts < 10000, "no free ports found"
        port = rng.randint(10000, top)
        if port in _handed_out or port in ports:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        ports.append(port)
    _handed_out.update(ports)
    return ports


def insecure_ssl_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic strings
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(cfg: dict) -> str:
    """Minimal TOML writer for {section: {key: value | {subsection...} |
    [{table}, ...]}} (a list of dicts becomes an array of tables)."""
    out: list[str] = []

    def is_table_array(v) -> bool:
        return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, dict) for x in v)

    def emit(prefix: str, table: dict, header: str | None = None):
        scalars = {k: v for k, v in table.items()
                   if not isinstance(v, dict) and not is_table_array(v)}
        tables = {k: v for k, v in table.items() if isinstance(v, dict)}
        arrays = {k: v for k, v in table.items() if is_table_array(v)}
        if header is not None:
            out.append(header)
        elif prefix:
            out.append(f"[{prefix}]")
        for k, v in scalars.items():
            out.append(f"{k} = {_toml_value(v)}")
        if prefix:
            out.append("")
        for k, v in tables.items():
            emit(f"{prefix}.{k}" if prefix else k, v)
        for k, v in arrays.items():  # [[prefix.k]] tables, e.g. cluster peers
            name = f"{prefix}.{k}" if prefix else k
            for element in v:
                emit(name, element, header=f"[[{name}]]")

    emit("", cfg)
    return "\n".join(out) + "\n"


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------
# the node
# --------------------------------------------------------------------------


class Node:
    """One real ``chorus`` process plus its config file, data dir and log."""

    def __init__(self, workdir: Path, config: dict | None = None,
                 users: dict[str, str] | None = None,
                 ports: tuple[int, int, int] | None = None, host: str = "127.0.0.1"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = chorus_bin()
        self.domain = DOMAIN
        # The address the node listens on and the harness connects to
        # (the chaos suite's netns mode puts nodes on other addresses).
        self.host = host
        # Prepended to the ``serve`` command line (e.g. ``ip netns exec NS``;
        # the prefix must exec the server, so proc.pid stays the server's).
        self.argv_prefix: list[str] = []
        self.c2s_port, self.tls_port, self.http_port = ports or free_ports(3)
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "chorus.toml"
        self.log_path = self.workdir / "chorus.log"
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        self.proc: subprocess.Popen | None = None
        self._log_fh = None
        self.starts = 0
        # Added to the environment of the server and the CLI.
        self.extra_env: dict[str, str] = {}
        base = {
            "server": {"domain": self.domain, "data_dir": str(self.data_dir)},
            "c2s": {
                "starttls_listen": f"{host}:{self.c2s_port}",
                "direct_tls_listen": f"{host}:{self.tls_port}",
            },
            # Tests read /cluster/status and /archive/status right after
            # acting, so they read them uncached (the cache is tested in
            # chorus-admin's status.rs); the rate limit stays on.
            "http": {"listen": f"{host}:{self.http_port}", "tls": True, "status_cache_ms": 0},
            "log": {"level": "debug"},
        }
        self.config = deep_merge(base, config or {})
        self.config_path.write_text(to_toml(self.config))

    # -- identity helpers --------------------------------------------------
    def jid(self, user: str, resource: str | None = None) -> str:
        j = f"{user}@{self.domain}"
        return f"{j}/{resource}" if resource else j

    def password(self, user: str) -> str:
        return self.users[user]

    @property
    def http_base(self) -> str:
        scheme = "https" if self.config.get("http", {}).get("tls", True) else "http"
        return f"{scheme}://{self.host}:{self.http_port}"

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.config.get("http", {}).get("tls", True) else "ws"
        return f"{scheme}://{self.host}:{self.http_port}/xmpp-websocket"

    # -- CLI ---------------------------------------------------------------
    def cli(self, *args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
        """Run ``chorus --config FILE <args...>``; never raises on exit code."""
        return subprocess.run(
            [str(self.binary), "--config", str(self.config_path), *args],
            capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, env=self._env(),
        )

    def add_user(self, name: str, password: str) -> None:
        cp = self.cli("user", "add", name, "--password", password)
        assert cp.returncode == 0, (
            f"`chorus user add {name}` failed ({cp.returncode}):\n"
            f"stdout: {cp.stdout}\nstderr: {cp.stderr}")
        self.users[name] = password

    # -- process lifecycle -------------------------------------------------
    def _env(self) -> dict:
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.extra_env)
        return env

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait: bool = True) -> None:
        assert not self.running, "node already running"
        assert self.binary.exists(), (
            f"chorus binary not found at {self.binary} (set CHORUS_BIN or "
            f"run `cargo build -p chorus-server`)")
        self.starts += 1
        self._log_fh = open(self.log_path, "ab")
        self._log_fh.write(f"\n===== e2e: start #{self.starts} =====\n".encode())
        self._log_fh.flush()
        self.proc = subprocess.Popen(
            [*self.argv_prefix, str(self.binary), "--config", str(self.config_path), "serve"],
            stdout=self._log_fh, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=self._env(),
        )
        _LIVE.add(self)
        if wait:
            self.wait_ready()

    def wait_ready(self, deadline_s: float = READY_DEADLINE_S) -> None:
        deadline = time.monotonic() + deadline_s
        last_err = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"chorus exited with {self.proc.returncode} before it was "
                    f"ready\n--- log tail ---\n{self.log_tail()}")
            try:
                status, body = self.http_get("/readyz", timeout=2)
                if status == 200:
                    return
                last_err = f"HTTP {status}: {body[:200]!r}"
            except (OSError, urllib.error.URLError, ssl.SSLError) as e:
                last_err = repr(e)
            time.sleep(0.1)  # polling an external process, not synchronising clients
        raise AssertionError(
            f"chorus not ready after {deadline_s}s (last: {last_err})\n"
            f"--- log tail ---\n{self.log_tail()}")

    def _close_log(self):
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def stop(self, timeout: float = STOP_DEADLINE_S) -> int:
        """SIGTERM and wait; returns the exit code (kill -9 after timeout)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                self._close_log()
                self.proc = None
                _LIVE.discard(self)
                raise AssertionError(
                    f"chorus did not exit within {timeout}s of SIGTERM\n"
                    f"--- log tail ---\n{self.log_tail()}") from None
        code = self.proc.returncode
        self.proc = None
        _LIVE.discard(self)
        self._close_log()
        return code

    def kill9(self) -> None:
        assert self.proc is not None, "node not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None
        _LIVE.discard(self)
        self._close_log()

    def restart(self) -> None:
        """Graceful stop + start on the same data dir (asserts exit code 0)."""
        code = self.stop()
        assert code == 0, f"chorus exited with {code} on SIGTERM"
        self.start()

    # -- HTTP --------------------------------------------------------------
    def http_get(self, path: str, timeout: float = 5) -> tuple[int, str]:
        req = urllib.request.Request(self.http_base + path)
        try:
            with urllib.request.urlopen(req, timeout=timeout,
                                        context=insecure_ssl_context()) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")

    # -- logs --------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 150) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def kill_leftover_nodes() -> None:
    """SIGKILL every node process still running (end-of-session safety net)."""
    for n in list(_LIVE):
        if n.proc is not None and n.proc.poll() is None:
            n.proc.kill()
            try:
                n.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        n.proc = None
        n._close_log()
    _LIVE.clear()
