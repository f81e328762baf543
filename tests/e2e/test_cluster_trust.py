"""Node identity on the cluster API, with real node processes: a caller is
the node its verified certificate names, never the id a request claims.

``chorus cluster probe`` plays the attacker: it calls every cluster RPC of a
node (Status, Digests, FetchItems, PushItems, PullStanzas, AckStanzas,
FetchFile, Raft, Link) with a given certificate and prints the gRPC code of each answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest

from chorus_node import CLI_TIMEOUT_S

SLOW = pytest.mark.timeout(180)
RPCS = {"status", "digests", "fetch_items", "push_items", "pull_stanzas",
        "ack_stanzas", "fetch_file", "raft", "raft_members", "link"}
ROOT = "root-token"
TOKENS = {"api": {"tokens": [{"name": "root", "role": "admin",
                              "sha256": hashlib.sha256(ROOT.encode()).hexdigest()}]}}


def probe(cl, target: str, cert: Path, key: Path, claim: str,
          ca: Path | None = None, elect: bool = False) -> subprocess.CompletedProcess:
    node = cl[target]
    return subprocess.run(
        [str(cl.binary), "cluster", "probe", "--addr", f"127.0.0.1:{node.cluster_port}",
         "--server-id", node.node_id, "--ca", str(ca or cl.certs / "ca.pem"),
         "--cert", str(cert), "--key", str(key), "--as", claim, *(["--elect"] if elect else [])],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL)


def codes(cp: subprocess.CompletedProcess) -> dict[str, str]:
    assert cp.returncode == 0, f"probe failed ({cp.returncode}): {cp.stderr}"
    out = {}
    for line in cp.stdout.splitlines():
        r = json.loads(line)
        out[r["rpc"]] = r["code"]
    assert set(out) - {"raft_elect"} == RPCS, out
    return out


def make_cert(cl, node_id: str, ca_dir: Path | None = None) -> tuple[Path, Path]:
    out = cl.workdir / "attacker"
    cp = subprocess.run([str(cl.binary), "cert", "node", "--ca", str(ca_dir or cl.certs),
                         "--id", node_id, "--out", str(out)],
                        capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert cp.returncode == 0, cp.stderr
    return out / f"{node_id}.pem", out / f"{node_id}.key"


def refused_total(node) -> float:
    code, body = node.http_get("/metrics")
    assert code == 200
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith("chorus_cluster_rpc_refused_total"))


def archive_leader(node):
    code, body = node.http_get("/archive/status", timeout=3)
    assert code == 200, body
    return json.loads(body).get("leader")


def raft_id(node):
    code, body = node.http_get("/archive/status", timeout=3)
    assert code == 200, body
    return json.loads(body).get("raft_id")


async def wait_archive_leader(cl) -> None:
    """Polls until every site's archive Raft names the same leader."""
    deadline = time.monotonic() + 30
    while True:
        leaders = {archive_leader(cl[s]) for s in ("a", "b", "c")}
        if len(leaders) == 1 and None not in leaders:
            return
        assert time.monotonic() < deadline, f"no common archive leader: {leaders}"
        await asyncio.sleep(0.2)  # polling raft state: there is no event for it


def own(cl, site: str) -> tuple[Path, Path]:
    nid = cl[site].node_id
    return cl.certs / f"{nid}.pem", cl.certs / f"{nid}.key"


@SLOW
async def test_a_member_may_not_act_for_another_and_strangers_get_nothing(cluster3):
    cl = cluster3
    before = refused_total(cl["b"])
    # The control: a1's own certificate, speaking for a1, is let in (the
    # empty Raft write is malformed, not refused).
    mine = codes(await asyncio.to_thread(probe, cl, "b", *own(cl, "a"), "a1"))
    assert mine["status"] == mine["digests"] == mine["pull_stanzas"] == "Ok", mine
    assert mine["raft"] == "InvalidArgument", mine
    # A member may forward membership changes, but only for configured
    # nodes (and at the addresses b's own configuration gives them).
    assert mine["raft_members"] == "PermissionDenied", mine
    # Only the leader may ask a node to stand for election: a member that
    # does not lead is refused (asked of a node that follows the leader).
    await wait_archive_leader(cl)
    leader = archive_leader(cl["b"])
    follower = next(s for s in ("a", "b", "c") if raft_id(cl[s]) != leader)
    target = next(s for s in ("a", "b", "c") if s != follower)
    elect = codes(await asyncio.to_thread(probe, cl, target, *own(cl, follower),
                                          cl[follower].node_id, elect=True))
    assert elect["raft_elect"] == "PermissionDenied", (leader, follower, target, elect)
    # a1's certificate claiming to be c1: every claim is refused.
    forged = codes(await asyncio.to_thread(probe, cl, "b", *own(cl, "a"), "c1"))
    for rpc in ("pull_stanzas", "ack_stanzas", "link"):
        assert forged[rpc] == "PermissionDenied", (rpc, forged)
    # A certificate the cluster CA signed for a name that is not a member:
    # every RPC, Status included, is refused.
    stranger = codes(await asyncio.to_thread(probe, cl, "b", *make_cert(cl, "mallory"), "mallory"))
    assert set(stranger.values()) == {"PermissionDenied"}, stranger
    # Claiming a member's id does not help a stranger either.
    posing = codes(await asyncio.to_thread(probe, cl, "b", *make_cert(cl, "eve"), "a1"))
    assert set(posing.values()) == {"PermissionDenied"}, posing
    assert refused_total(cl["b"]) >= before + 3 + 9 + 9
    # The refusal is logged once per caller, not once per request.
    log = Path(cl["b"].log_path).read_text(errors="replace")
    assert log.count('caller="mallory"') + log.count("caller=mallory") == 1, \
        [line for line in log.splitlines() if "mallory" in line]
    # The cluster still works for its members.
    await cl.aready()


@SLOW
async def test_a_certificate_from_another_ca_cannot_even_connect(cluster3, tmp_path):
    cl = cluster3
    other_ca = tmp_path / "other-ca"
    cp = subprocess.run([str(cl.binary), "cert", "ca", "--out", str(other_ca)],
                        capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert cp.returncode == 0, cp.stderr
    # A node certificate named like a real member, signed by another CA.
    cert, key = make_cert(cl, "a1", ca_dir=other_ca)
    cp = await asyncio.to_thread(probe, cl, "b", cert, key, "a1")
    if cp.returncode == 0:
        # The handshake may complete lazily; then every call must fail.
        assert "Ok" not in {json.loads(l)["code"] for l in cp.stdout.splitlines()}, cp.stdout
    else:
        assert "connect" in cp.stderr.lower() or "tls" in cp.stderr.lower(), cp.stderr


@SLOW
@pytest.mark.chorus_cluster(config=TOKENS)
async def test_a_removed_member_is_refused_at_once(cluster3):
    cl = cluster3
    assert codes(await asyncio.to_thread(probe, cl, "b", *own(cl, "c"), "c1"))["status"] == "Ok"
    import ssl
    import urllib.error
    import urllib.request
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(
        f"https://127.0.0.1:{cl['a'].http_port}/api/v1/archive/members/c1", method="DELETE",
        headers={"Authorization": f"Bearer {ROOT}"})
    # The removal is audited through Raft first: it needs an archive leader
    # (503 means none right now, e.g. while the group still elects one).
    await wait_archive_leader(cl)
    try:
        resp = await asyncio.to_thread(urllib.request.urlopen, req, context=ctx, timeout=30)
    except urllib.error.HTTPError as e:
        raise AssertionError(f"removing c1: HTTP {e.code}: {e.read()[:500]!r}") from e
    assert resp.status == 200, resp.read()
    # Once the removal is applied on b, c1's certificate is worth nothing there.

    def refused() -> bool:
        got = codes(probe(cl, "b", *own(cl, "c"), "c1"))
        return set(got.values()) == {"PermissionDenied"}
    await asyncio.to_thread(cl.wait_until, "c1 refused on b", lambda: refused(), 20.0)
