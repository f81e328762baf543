"""`chorus dev`, the three-site cluster a newcomer runs first: every site
serves one certificate for the domain, signed by a CA whose path the
command prints, so a client trusts it once and is not asked again at the
next office (Profanity and Poezio once saw a new self-signed certificate,
all named "rcgen self signed cert", at every site)."""

import os
import random
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

from chorus_node import chorus_bin

SITES = 3


def free_block(width: int) -> int:
    """A base port whose next `width` ports are free (below the ephemeral range)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 30000, 10)
        socks = []
        try:
            for p in range(base, base + width):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free block of ports")


def read_banner(proc: subprocess.Popen, deadline_s: float) -> list[str]:
    """The lines `chorus dev` prints up to its "Status:" line."""
    lines: list[str] = []
    done = threading.Event()

    def reader():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Status:"):
                break
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    assert done.wait(deadline_s), f"no banner within {deadline_s} s: {lines}"
    return lines


def verified_certificate(port: int, ca: str, deadline_s: float) -> bytes:
    """The certificate a site presents on direct TLS, verified against
    `ca` for the name localhost (retried while the node starts)."""
    ctx = ssl.create_default_context(cafile=ca)
    end = time.monotonic() + deadline_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    return tls.getpeercert(binary_form=True)
        except (ConnectionRefusedError, ConnectionResetError):
            assert time.monotonic() < end, f"port {port} never accepted"
            time.sleep(0.2)  # the node is still starting; nothing to wait on


def console_sign_in(url: str, user: str, password: str, ca: str, deadline_s: float) -> bool:
    """Signs in to the console at ``url`` (verifying the certificate for
    localhost); true when the sign-in lands on a console page."""
    import http.cookiejar
    import urllib.parse
    import urllib.request
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False  # the URL names 127.0.0.1; the certificate localhost
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx),
                                         urllib.request.HTTPCookieProcessor(jar))
    end = time.monotonic() + deadline_s
    while True:
        try:
            page = opener.open(url + "login", timeout=5).read().decode()
            break
        except (ConnectionRefusedError, urllib.error.URLError):
            assert time.monotonic() < end, f"{url} never answered"
            time.sleep(0.2)  # the node is still starting; nothing to wait on
    nonce = re.search(r'name="nonce" value="([0-9a-f]+)"', page).group(1)
    form = urllib.parse.urlencode({"nonce": nonce, "user": user, "password": password}).encode()
    r = opener.open(url + "login", data=form, timeout=10)
    return "/console/" in r.geturl() and "Sign out" in r.read().decode()


def test_every_dev_site_serves_one_certificate_from_the_printed_ca(tmp_path):
    base = free_block(10 * SITES + 10)
    proc = subprocess.Popen(
        [str(chorus_bin()), "dev", "--data-dir", str(tmp_path / "dev"), "--base-port", str(base)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        banner = read_banner(proc, 60)
        cert_line = next((l for l in banner if l.startswith("Certificate:")), None)
        assert cert_line, banner
        ca = cert_line.rsplit(" ", 1)[1]
        assert os.path.exists(ca), ca
        rows = [l.split() for l in banner if re.match(r"^\S+\s+\S+\s+\d+\s+\d+\s+\d+\s+\d+$", l)]
        assert len(rows) == SITES, banner
        certs = {row[0]: verified_certificate(int(row[3]), ca, 60) for row in rows}
        assert len(set(certs.values())) == 1, "each site has its own certificate"
        # The cluster's CA does not vouch for it: nodes and clients stay apart.
        cluster_ca = os.path.join(os.path.dirname(os.path.dirname(ca)), "ca.pem")
        assert os.path.exists(cluster_ca) and open(cluster_ca).read() != open(ca).read()
        # The console the banner names answers with its sign-in page, and
        # its officer account signs in.
        console = next((l for l in banner if l.startswith("Console:")), "").split()
        assert len(console) > 1 and console[1].endswith("/console/"), banner
        assert console_sign_in(console[1], "officer", "officer-pass", ca, 60)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
