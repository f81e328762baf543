"""The container image and the three-site compose deployment, for real:
build the image (no base image: FROM scratch with the binary and its
libraries), bring up deploy/compose with docker, chat across sites through
it, stop one site's container and check the other two go on.

Needs a Docker engine with docker-compose; without one the tests are
skipped with a message saying so (CI machines of this project have one)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from xmpp import close_all_clients, connect  # noqa: E402

COMPOSE = ROOT / "deploy" / "compose" / "docker-compose.yml"
PROJECT = f"chorusci{os.getpid()}"
IMAGE = "chorus:ci"
SITES = ("london", "newyork", "tokyo")
READY_S = 120


def docker_ok() -> str | None:
    if not shutil.which("docker") or not shutil.which("docker-compose"):
        return "docker or docker-compose is not installed"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker engine is reachable"
    return None


pytestmark = [
    pytest.mark.skipif(docker_ok() is not None, reason=f"compose tests skipped: {docker_ok()}"),
    pytest.mark.timeout(600),
]


def free_base() -> int:
    """A port base B such that 127.0.0.1:B00..B22 are all free."""
    for base in range(200, 320):
        ports = [base * 100 + 10 * i + j for i in range(3) for j in range(3)]
        try:
            socks = []
            for p in ports:
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError("no free port block")


@dataclass
class Site:
    """What the xmpp.Client helper needs to reach one site."""
    name: str
    c2s_port: int
    tls_port: int
    http_port: int
    domain: str = "localhost"

    def jid(self, user: str, resource: str | None = None) -> str:
        return f"{user}@{self.domain}" + (f"/{resource}" if resource else "")

    def password(self, user: str) -> str:
        return f"{user}-pass"


class Compose:
    def __init__(self, base: int):
        self.env = dict(os.environ, CHORUS_IMAGE=IMAGE, CHORUS_PORT_BASE=str(base))
        self.sites = {s: Site(s, base * 100 + 10 * i, base * 100 + 10 * i + 1, base * 100 + 10 * i + 2)
                      for i, s in enumerate(SITES)}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cp = subprocess.run(["docker-compose", "-p", PROJECT, "-f", str(COMPOSE), *args],
                            env=self.env, capture_output=True, text=True, timeout=300)
        if check and cp.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed:\n{cp.stdout}\n{cp.stderr}")
        return cp

    def health(self, site: str) -> str:
        cp = subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}",
                             f"{PROJECT}_chorus-{site}_1"], capture_output=True, text=True)
        return cp.stdout.strip()

    def wait_healthy(self, sites) -> None:
        deadline = time.monotonic() + READY_S
        while True:
            states = {s: self.health(s) for s in sites}
            if all(v == "healthy" for v in states.values()):
                return
            if time.monotonic() > deadline:
                logs = self.run("logs", "--tail", "40", check=False).stdout
                raise AssertionError(f"containers not healthy: {states}\n{logs}")
            time.sleep(1)

    def cluster_status(self, site: str) -> str:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        url = f"https://127.0.0.1:{self.sites[site].http_port}/cluster/status"
        with urllib.request.urlopen(url, context=ctx, timeout=3) as r:
            return r.read().decode()


@pytest.fixture(scope="module")
def compose():
    binary = Path(os.environ.get("CHORUS_BIN", ROOT / "target" / "debug" / "chorus"))
    assert binary.exists(), f"build the binary first ({binary})"
    build = subprocess.run(["bash", str(ROOT / "deploy" / "docker" / "build-image.sh"), str(binary), IMAGE],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, f"image build failed:\n{build.stdout}\n{build.stderr}"
    c = Compose(free_base())
    try:
        c.run("up", "-d")
        c.wait_healthy(SITES)
        yield c
    finally:
        c.run("down", "-v", "--remove-orphans", check=False)


def test_image_is_built_from_scratch_and_runs_as_non_root(compose):
    cfg = subprocess.run(["docker", "image", "inspect", "-f", "{{.Config.User}} {{json .Config.Healthcheck.Test}}", IMAGE],
                         capture_output=True, text=True, check=True).stdout
    assert cfg.startswith("10001:10001 "), cfg
    assert "health" in cfg, cfg
    history = subprocess.run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", IMAGE],
                             capture_output=True, text=True, check=True).stdout
    assert "FROM" not in history.upper().replace("COPY", ""), history
    uid = subprocess.run(["docker", "inspect", "-f", "{{.Config.User}}", f"{PROJECT}_chorus-london_1"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert uid == "10001:10001"


def test_clients_chat_across_sites_and_survive_a_stopped_site(compose):
    asyncio.run(chat_across_sites(compose))


async def chat_across_sites(compose):
    s = compose.sites
    try:
        # Wait until every site sees the other two.
        deadline = time.monotonic() + 60
        while True:
            sts = [compose.cluster_status(x) for x in SITES]
            if all(st.count('"link_up":true') == 2 for st in sts):
                break
            assert time.monotonic() < deadline, f"links not up: {sts}"
            await asyncio.sleep(0.5)
        alice = await connect(s["london"], "alice", resource="l", presence=True)
        bob = await connect(s["tokyo"], "bob", resource="t", presence=True)
        carol = await connect(s["newyork"], "carol", resource="n", presence=True)
        # Sessions are announced between sites within a heartbeat or two.
        for attempt in range(60):
            alice.send_message("bob@localhost/t", f"ping {attempt}")
            try:
                m = await bob.next_message(timeout=1, frm="alice@localhost/l")
                assert m["body"].startswith("ping")
                break
            except asyncio.TimeoutError:
                continue
        else:
            raise AssertionError("london never reached tokyo")
        carol.send_message("bob@localhost/t", "from newyork")
        m = await bob.next_message(timeout=10, frm="carol@localhost/n")
        assert m["body"] == "from newyork"
        # Stop london's container: tokyo and newyork go on.
        compose.run("stop", "chorus-london")
        carol.send_message("bob@localhost/t", "london is down")
        m = await bob.next_message(timeout=15, frm="carol@localhost/n")
        assert m["body"] == "london is down"
        bob.send_message("carol@localhost/n", "still here")
        m = await carol.next_message(timeout=15, frm="bob@localhost/t")
        assert m["body"] == "still here"
        # And london comes back healthy.
        compose.run("start", "chorus-london")
        compose.wait_healthy(["london"])
    finally:
        await close_all_clients()
