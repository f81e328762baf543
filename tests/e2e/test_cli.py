"""The accounts CLI (`chorus --config F user ...`) and config validation."""

import subprocess
import time

import pytest

from chorus_node import Node, chorus_bin
from xmpp import connect, try_login


def _names(stdout: str) -> list[str]:
    """`user list` prints one account per line (localpart or bare JID)."""
    out = []
    for line in stdout.splitlines():
        line = line.strip()
        if line:
            out.append(line.split("@", 1)[0])
    return out


@pytest.mark.chorus(start=False)
async def test_user_add_on_stopped_node(node):
    node.add_user("dave", "dave-pw")
    node.start()
    c = await connect(node, "dave")
    assert c.jid.startswith(node.jid("dave") + "/")


async def test_user_add_on_running_node(node):
    assert node.running
    node.add_user("erin", "erin-pw")
    c = await connect(node, "erin")
    await c.ping()


async def test_user_add_duplicate_fails(node):
    cp = node.cli("user", "add", "alice", "--password", "other")
    assert cp.returncode != 0, "adding an existing user succeeded"
    assert await try_login(node, "alice") is None, "original password no longer works"


async def test_user_passwd(node):
    cp = node.cli("user", "passwd", "alice", "--password", "new-alice-pw")
    assert cp.returncode == 0, cp.stderr
    assert await try_login(node, "alice", node.password("alice")) == "not-authorized"
    assert await try_login(node, "alice", "new-alice-pw") is None
    assert await try_login(node, "alice", "new-alice-pw", mech="SCRAM-SHA-1") is None


async def test_user_remove(node):
    cp = node.cli("user", "remove", "bob")
    assert cp.returncode == 0, cp.stderr
    assert await try_login(node, "bob") == "not-authorized"
    assert "bob" not in _names(node.cli("user", "list").stdout)


async def test_user_list(node):
    cp = node.cli("user", "list")
    assert cp.returncode == 0, cp.stderr
    assert sorted(_names(cp.stdout)) == ["alice", "bob", "carol"], cp.stdout


@pytest.mark.chorus(start=False)
async def test_user_list_on_stopped_node(node):
    cp = node.cli("user", "list")
    assert cp.returncode == 0, cp.stderr
    assert sorted(_names(cp.stdout)) == ["alice", "bob", "carol"], cp.stdout


def test_broken_config_is_rejected_with_file_and_key(tmp_path):
    n = Node(tmp_path / "broken")  # just for ports/paths; never started
    cfg = n.config_path.read_text() + "\n[limits]\nstanza_bytez = 1\n"
    n.config_path.write_text(cfg)
    started = time.monotonic()
    cp = subprocess.run([str(chorus_bin()), "--config", str(n.config_path), "serve"],
                        capture_output=True, text=True, timeout=30,
                        stdin=subprocess.DEVNULL)
    assert cp.returncode != 0
    assert time.monotonic() - started < 15, "broken config took too long to reject"
    assert str(n.config_path) in cp.stderr or n.config_path.name in cp.stderr, cp.stderr
    assert "limits.stanza_bytez" in cp.stderr, cp.stderr


def test_missing_config_file_is_an_error(tmp_path):
    missing = tmp_path / "nope.toml"
    cp = subprocess.run([str(chorus_bin()), "--config", str(missing), "serve"],
                        capture_output=True, text=True, timeout=30,
                        stdin=subprocess.DEVNULL)
    assert cp.returncode != 0
    assert "nope.toml" in cp.stderr, cp.stderr


async def test_user_import_on_running_node_creates_accounts_with_names(node, tmp_path):
    csv = tmp_path / "people.csv"
    csv.write_text('user,name,password\n'
                   'erin,"Erin Example, Legal",erin-pw\n'
                   'frank,Frank Field,\n'
                   'alice,Alice Again,other-pw\n')
    cp = node.cli("user", "import", str(csv))
    assert cp.returncode == 0, cp.stderr
    lines = dict(line.split(": ", 1) for line in cp.stdout.splitlines())
    assert lines["erin"] == "created" and lines["alice"] == "exists", cp.stdout
    assert lines["frank"].startswith("created, password "), cp.stdout
    frank_pw = lines["frank"].split("password ", 1)[1]
    assert len(frank_pw) == 20, frank_pw
    assert "2 accounts created, 1 existed" in cp.stderr, cp.stderr
    assert await try_login(node, "erin", "erin-pw") is None
    assert await try_login(node, "frank", frank_pw) is None
    assert await try_login(node, "alice", node.password("alice")) is None, "left as it was"
    bob = await connect(node, "bob")
    card = await bob.plugin["xep_0054"].get_vcard(f"erin@{node.domain}")
    assert card["vcard_temp"]["FN"] == "Erin Example, Legal", card


@pytest.mark.chorus(start=False)
async def test_user_seed_on_stopped_node_is_idempotent(node):
    cp = node.cli("user", "seed", "gina=gina-pw", "hank=hank-pw")
    assert cp.returncode == 0, cp.stderr
    assert sorted(cp.stdout.split()) == sorted(["gina:", "created", "hank:", "created"]), cp.stdout
    cp = node.cli("user", "seed", "gina=other", "ivy=ivy-pw")
    assert cp.returncode == 0, cp.stderr
    assert "gina: exists" in cp.stdout and "ivy: created" in cp.stdout, cp.stdout
    node.start()
    assert await try_login(node, "gina", "gina-pw") is None
    assert await try_login(node, "ivy", "ivy-pw") is None
    bad = node.cli("user", "seed", "nopassword")
    assert bad.returncode != 0 and "NAME=PASSWORD" in bad.stderr
