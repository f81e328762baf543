"""chorus-bench against a real node: every scenario runs end to end at a
tiny size and reports what it measured; bad credentials and a dead server
give clear errors. (The numbers themselves are the benchmark's business:
bench/run.sh and BENCHMARKS.md.)"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from chorus_node import chorus_bin, free_ports

BENCH_CONFIG = {
    "registration": {"enabled": True},
    "limits": {
        "connections_per_ip_max": 2000,
        "unauthenticated_per_ip_max": 2000,
        "user_stanzas_per_sec": 100000,
        "user_stanzas_burst": 100000,
        "auth_failures_per_address_max": 100000,
    },
}


def bench_bin() -> Path:
    raw = os.environ.get("CHORUS_BENCH_BIN")
    return Path(raw) if raw else chorus_bin().with_name("chorus-bench")


def run_bench(node, out: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [str(bench_bin()), *args[:1], "--addr", f"127.0.0.1:{node.c2s_port}",
           "--domain", node.domain, "--pid", str(node.proc.pid), "--label", "chorus",
           "--out", str(out), *args[1:]]
    env = dict(os.environ, RUST_BACKTRACE="0")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def outcomes(out: Path) -> dict[str, dict]:
    return {o["scenario"]: o for o in map(json.loads, out.read_text().splitlines())}


@pytest.mark.chorus(config=BENCH_CONFIG, users={})
def test_every_scenario_runs_and_reports(node, tmp_path):
    out = tmp_path / "results.jsonl"
    steps = [
        ("provision", "--users", "40"),
        ("login", "--users", "30"),
        ("idle", "--sessions", "30", "--settle-secs", "0"),
        ("one2one", "--pairs", "5", "--rates", "20,40", "--step-secs", "1"),
        ("presence", "--users", "10", "--contacts", "4", "--updates", "2", "--interval-ms", "100"),
        ("room", "--rooms", "2", "--occupants", "4", "--messages", "2", "--interval-ms", "100"),
        ("mam", "--messages", "120", "--queries", "5", "--page", "50"),
    ]
    for step in steps:
        r = run_bench(node, out, *step)
        assert r.returncode == 0, f"{step}: {r.stdout}\n{r.stderr}"
    got = outcomes(out)
    for name in ("provision", "login", "idle", "one2one", "presence_4", "room_4", "mam"):
        assert got[name]["errors"] == 0, got[name]
        assert got[name]["server"] == "chorus"
    assert got["provision"]["metrics"]["accounts"] == 40
    assert got["login"]["metrics"]["logins_per_sec"] > 0
    assert got["login"]["metrics"]["login_p99_ms"] >= got["login"]["metrics"]["login_p50_ms"] > 0
    assert got["idle"]["metrics"]["sessions_alive"] == 30
    assert got["idle"]["metrics"]["server_rss_mib"] > 0
    # Both rates held, so the maximum is the second one (up to pacing).
    o2o = got["one2one"]["metrics"]
    assert o2o["sustained_msgs_per_sec"] >= 0.9 * 40, got["one2one"]
    assert o2o["latency_p50_ms"] > 0
    assert got["presence_4"]["metrics"]["delivered_fraction"] == 1.0
    assert got["room_4"]["metrics"]["delivered_fraction"] == 1.0
    mam = got["mam"]["metrics"]
    assert mam["last_page_p99_ms"] >= mam["last_page_p50_ms"] > 0
    assert mam["with_page_p50_ms"] > 0
    # Node's memory and CPU were sampled through its pid.
    assert got["one2one"]["metrics"]["server_rss_peak_mib"] > 0

    table = subprocess.run([str(bench_bin()), "table", "--ours", "chorus", str(out)],
                           capture_output=True, text=True, timeout=30)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].startswith("| scenario | metric | chorus |")
    assert any(line.startswith("| one2one | sustained_msgs_per_sec |")
               for line in table.stdout.splitlines())


@pytest.mark.chorus(config=BENCH_CONFIG, users={"bench0": "right-password"})
def test_wrong_password_is_a_clear_error(node, tmp_path):
    r = run_bench(node, tmp_path / "r.jsonl", "login", "--users", "1", "--password", "wrong")
    assert r.returncode != 0
    assert "authentication failed for bench0" in r.stderr, r.stderr


def test_unreachable_server_is_a_clear_error(tmp_path):
    (port,) = free_ports(1)
    r = subprocess.run([str(bench_bin()), "provision", "--addr", f"127.0.0.1:{port}",
                        "--users", "1", "--out", str(tmp_path / "r.jsonl")],
                       capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, RUST_BACKTRACE="0"))
    # Provisioning reports failures per account rather than stopping.
    assert r.returncode == 0
    o = json.loads((tmp_path / "r.jsonl").read_text())
    assert o["errors"] == 1
    assert f"connecting to 127.0.0.1:{port}" in o["notes"][0]


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(1200)
def test_side_by_side_run_against_prosody_and_ejabberd(tmp_path):
    """bench/run.sh end to end at smoke size: installs Prosody and ejabberd
    from Debian, runs every scenario against all three servers and the
    cross-site cluster, and prints the comparison table. (Debug binaries:
    this checks the harness, not the numbers.)"""
    if os.geteuid() != 0:
        pytest.fail("bench/run.sh installs Debian packages and needs root")
    out = tmp_path / "run"
    env = dict(os.environ, BENCH_SCALE="smoke", BENCH_PROFILE="dev", BENCH_OUT=str(out))
    r = subprocess.run(["bash", str(REPO / "bench" / "run.sh")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=1100)
    assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by = {(o["server"], o["scenario"]): o for o in results}
    scenarios = ["provision", "login", "idle", "one2one", "presence_4", "presence_10",
                 "room_5", "mam"]
    for server in ("chorus", "prosody", "ejabberd"):
        for scenario in scenarios:
            o = by.get((server, scenario))
            assert o is not None, f"no {scenario} result for {server}: {r.stdout[-3000:]}"
            assert o["errors"] == 0, o
        assert by[(server, "one2one")]["metrics"]["sustained_msgs_per_sec"] > 0
        assert by[(server, "idle")]["metrics"]["sessions_alive"] == 60
    assert by[("chorus", "cross_site_40ms")]["errors"] == 0
    # The fresh-server memory phase, witnessed by chorus-bench and by tsung,
    # and tsung's timed one-to-one chat.
    for scenario in ("idle_fresh_100", "tsung_idle_100", "tsung_one2one_40"):
        o = by.get(("chorus", scenario))
        assert o is not None and o["errors"] == 0, (scenario, o, r.stdout[-3000:])
    assert by[("chorus", "tsung_idle_100")]["metrics"]["sessions_held"] == 100
    assert by[("chorus", "tsung_idle_100")]["metrics"]["logins_completed"] == 100
    assert by[("chorus", "tsung_one2one_40")]["metrics"]["messages_timed"] > 0
    # Web clients: idle XMPP-over-WebSocket sessions (bench/ws_idle.py).
    ws = by.get(("chorus", "ws_idle_100"))
    assert ws is not None and ws["errors"] == 0, (ws, r.stdout[-3000:])
    assert ws["metrics"]["sessions_held"] == 100
    # 40 ms each way through the WAN proxies: no faster than the wire.
    assert by[("chorus", "cross_site_40ms")]["metrics"]["latency_p50_ms"] >= 40
    table = (out / "table.md").read_text().splitlines()
    assert table[0].startswith("| scenario | metric | chorus | prosody | ejabberd |")
    assert "chorus vs prosody" in table[0] and "chorus vs ejabberd" in table[0]
