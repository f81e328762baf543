"""Files only the node can read, with a real node process started under
umask 000: the data directory is 0700, private keys (the generated TLS key,
``chorus cert`` keys) and the control socket are 0600, and the control
socket serves only callers running as the node's own user (SO_PEERCRED).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from chorus_node import CLI_TIMEOUT_S, Node

UMASK_OPEN = 0o000
NOBODY = 65534
# The other user cannot run the venv's interpreter (it lives under /root).
SYSTEM_PYTHON = "/usr/bin/python3"


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.fixture
def open_umask():
    old = os.umask(UMASK_OPEN)
    try:
        yield
    finally:
        os.umask(old)


def test_a_fresh_data_directory_and_keys_are_private_whatever_the_umask(tmp_path, open_umask):
    n = Node(tmp_path / "node")
    n.argv_prefix = ["sh", "-c", f'umask {UMASK_OPEN:03o}; exec "$0" "$@"']
    try:
        n.add_user("alice", "alice-pw")
        n.start()
        assert mode(n.data_dir) == 0o700
        assert mode(n.data_dir / "tls" / "key.pem") == 0o600
        sock = n.data_dir / "control.sock"
        assert stat.S_ISSOCK(os.lstat(sock).st_mode)
        assert mode(sock) == 0o600
        # The cluster CA's and a node's keys, made by the CLI.
        certs = tmp_path / "certs"
        for args in (["cert", "ca", "--out", str(certs)],
                     ["cert", "node", "--ca", str(certs), "--id", "n1", "--out", str(certs)]):
            cp = subprocess.run([str(n.binary), *args], capture_output=True, text=True,
                                timeout=CLI_TIMEOUT_S)
            assert cp.returncode == 0, cp.stderr
        assert mode(certs / "ca.key") == 0o600
        assert mode(certs / "n1.key") == 0o600
        assert mode(certs / "n1.pem") == 0o644
    finally:
        if n.running:
            assert n.stop() == 0


CONTROL_CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile()
try:
    s.sendall(b'{"op": "list_users"}\n')
except BrokenPipeError:
    pass  # refused callers are answered at once, before they speak
print(f.readline())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_the_control_socket_refuses_other_users_even_when_its_mode_lets_them_in(tmp_path):
    n = Node(tmp_path / "node")
    saved: list[tuple[Path, int]] = []
    try:
        n.add_user("alice", "alice-pw")
        n.start()
        sock = n.data_dir / "control.sock"
        # An operator's mistake opens the directory and the socket to all
        # (and the test opens the way there: pytest's base directory is 0700).
        for d in [n.data_dir, *n.data_dir.parents]:
            if d == Path("/"):
                break
            saved.append((d, mode(d)))
            os.chmod(d, mode(d) | 0o005)
        os.chmod(sock, 0o666)

        def as_nobody():
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        cp = subprocess.run([SYSTEM_PYTHON, "-c", CONTROL_CLIENT, str(sock)],
                            capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                            preexec_fn=as_nobody, cwd="/")
        assert cp.returncode == 0, cp.stderr
        resp = json.loads(cp.stdout)
        assert resp["users"] == [] and "may not manage" in (resp["error"] or ""), resp
        # The node's own user (root here) is still served.
        cp = subprocess.run([sys.executable, "-c", CONTROL_CLIENT, str(sock)],
                            capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
        assert json.loads(cp.stdout)["error"] is None
        assert "refused a control-socket caller" in n.log_path.read_text(errors="replace")
    finally:
        for d, m in reversed(saved):
            os.chmod(d, m)
        if n.running:
            assert n.stop() == 0
