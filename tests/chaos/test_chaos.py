"""Tests of the chaos suite (chaos/): each checker on small synthetic
histories (it catches a planted violation and passes a clean history),
schedule determinism, and short real runs through the CLI against the
debug binary, including the ``skip-outbox-when-down`` failpoint that the
delivery checker must catch."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHAOS = REPO / "chaos"
sys.path.insert(0, str(CHAOS))

from chorus_chaos.checkers import archive, delivery, logs, presence, rooms, roster  # noqa: E402
from chorus_chaos.failover import delivery_during  # noqa: E402
from chorus_chaos.faults import SCENARIOS, faketime_available, plan  # noqa: E402
from chorus_chaos.network import netns_unavailable  # noqa: E402

RUN = "t1"


def body(u: str, n: int) -> str:
    return f"chaos:{RUN}:{u}:{n}"


def msg(u: str, n: int, to: str | None, status: str = "acked", kind: str = "chat",
        room: str | None = None) -> dict:
    return {"id": f"{RUN}-{u}-{n}", "body": body(u, n), "sender": u, "recipient": to,
            "kind": kind, "room": room, "status": status, "sent_at": float(n)}


ROOM = "r0@conference.chorus.test"


def clean() -> tuple[dict, dict]:
    """A small consistent history and read-back."""
    h = {"run": RUN, "users": {"ua0": "a", "ub0": "b"}, "rooms": [ROOM], "room_owner": "ua0",
         "messages": [msg("ua0", 1, "ub0"), msg("ub0", 2, "ua0"),
                      msg("ua0", 3, "ub0", status="unknown"),
                      msg("ua0", 4, None, kind="room", room=ROOM)],
         "received": [{"user": "ub0", "body": body("ua0", 1), "kind": "chat"},
                      {"user": "ua0", "body": body("ub0", 2), "kind": "chat"},
                      {"user": "ub0", "body": body("ua0", 4), "kind": "room"}],
         "disconnects": {},
         "roster_edits": {"ua0": [
             {"contact": "contact0@chorus.test", "op": "add", "name": "x", "status": "acked"},
             {"contact": "contact0@chorus.test", "op": "rename", "name": "y",
              "status": "acked"},
             {"contact": "contact1@chorus.test", "op": "add", "name": "z", "status": "acked"},
             {"contact": "contact1@chorus.test", "op": "remove", "name": None,
              "status": "unknown"}]},
         "room_config": [{"room": ROOM, "value": "d1", "status": "acked"}],
         "online_at_end": ["ua0"]}
    recs = [{"id": f"a1-{i}", "body": m["body"], "stamp_ms": i}
            for i, m in enumerate(h["messages"]) if m["status"] == "acked"]
    item = {"name": "y", "groups": [], "subscription": "none", "ask": None}
    rb = {"mam": {"ub0": [{"body": body("ua0", 1), "type": "chat"}],
                  "ua0": [{"body": body("ub0", 2), "type": "chat"}]},
          "room_mam": {ROOM: [{"body": body("ua0", 4)}]},
          "archive": {s: {"records": list(recs), "status": {"digest": "d"}} for s in "abc"},
          "rosters": {"ua0": {s: {"items": {"contact0@chorus.test": dict(item)}}
                              for s in "abc"},
                      "ub0": {s: {"items": {}} for s in "abc"}},
          "rooms": {ROOM: {s: {"config": {"muc#roomconfig_roomdesc": "d1"},
                               "affiliations": {"owner": ["ua0@chorus.test"]}}
                           for s in "abc"}},
          "presence": {s: {"online": ["ua0"]} for s in "abc"},
          "logs": {"a1": "INFO fine\n", "b1": "", "c1": ""},
          "unexpected_exits": {}}
    return h, rb


ALL = (delivery, archive, roster, rooms, presence, logs)


@pytest.mark.parametrize("mod", ALL, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_checker_passes_clean_history(mod):
    h, rb = clean()
    r = mod.check(h, rb)
    assert r.ok, r.to_json()


def kinds(r) -> set[str]:
    return {v["kind"] for v in r.violations}


def test_delivery_catches_lost_duplicate_and_mam_problems():
    h, rb = clean()
    h["received"] = [x for x in h["received"] if x["body"] != body("ua0", 1)]
    rb["mam"]["ub0"] = []
    assert "lost" in kinds(delivery.check(h, rb))
    h, rb = clean()
    h["received"].append(dict(h["received"][0]))
    assert "duplicate_delivery" in kinds(delivery.check(h, rb))
    h, rb = clean()
    rb["mam"]["ua0"] = []
    assert "mam_missing" in kinds(delivery.check(h, rb))
    h, rb = clean()
    rb["room_mam"][ROOM] *= 2
    assert "room_mam_duplicate" in kinds(delivery.check(h, rb))
    # acked, never received although the recipient stayed connected: lost
    # even when the archive has it
    h, rb = clean()
    h["received"] = [x for x in h["received"] if x["body"] != body("ua0", 1)]
    assert "lost" in kinds(delivery.check(h, rb))
    # ... but excused when the recipient's stream died after it was sent
    h["disconnects"] = {"ub0": [5.0]}
    assert delivery.check(h, rb).ok


def test_unknown_write_is_never_lost_but_never_twice():
    h, rb = clean()  # msg 3 is unknown, absent everywhere
    assert delivery.check(h, rb).ok and archive.check(h, rb).ok
    h["received"] += [{"user": "ub0", "body": body("ua0", 3), "kind": "chat"}] * 2
    assert kinds(delivery.check(h, rb)) == {"duplicate_delivery"}
    h, rb = clean()
    for a in rb["archive"].values():
        a["records"] = a["records"] + [{"id": "x", "body": body("ua0", 3), "stamp_ms": 9}] * 2
    assert kinds(archive.check(h, rb)) == {"duplicate"}


def test_archive_catches_missing_duplicate_and_order():
    h, rb = clean()
    rb["archive"]["b"]["records"] = rb["archive"]["b"]["records"][1:]
    assert "missing" in kinds(archive.check(h, rb))
    h, rb = clean()
    rb["archive"]["c"]["records"] = rb["archive"]["c"]["records"] * 2
    assert "duplicate" in kinds(archive.check(h, rb))
    h, rb = clean()
    rb["archive"]["a"]["records"] = list(reversed(rb["archive"]["a"]["records"]))
    assert "order_differs" in kinds(archive.check(h, rb))
    h, rb = clean()
    rb["archive"]["a"]["status"] = {"digest": "other"}
    assert "digest_differs" in kinds(archive.check(h, rb))


def test_roster_catches_divergence_and_lost_edit():
    h, rb = clean()
    rb["rosters"]["ua0"]["b"]["items"]["contact0@chorus.test"]["name"] = "x"
    assert {"diverged", "wrong_item"} <= kinds(roster.check(h, rb))
    h, rb = clean()
    for v in rb["rosters"]["ua0"].values():
        v["items"] = {}
    assert "wrong_item" in kinds(roster.check(h, rb))
    # the unknown remove of contact1 may or may not have happened
    h, rb = clean()
    for v in rb["rosters"]["ua0"].values():
        v["items"]["contact1@chorus.test"] = {"name": "z", "groups": [],
                                              "subscription": "none"}
    assert roster.check(h, rb).ok


def test_rooms_presence_logs_catch_planted_violations():
    h, rb = clean()
    rb["rooms"][ROOM]["c"] = copy.deepcopy(rb["rooms"][ROOM]["c"])
    rb["rooms"][ROOM]["c"]["affiliations"]["owner"] = []
    assert "diverged" in kinds(rooms.check(h, rb))
    h, rb = clean()
    rb["presence"]["b"]["online"] = ["ua0", "ub0"]
    assert kinds(presence.check(h, rb)) == {"ghost"}
    h, rb = clean()
    rb["logs"]["b1"] = "x\nthread 'tokio' panicked at src/x.rs:1:1:\nboom\n"
    assert "panic" in kinds(logs.check(h, rb))
    h, rb = clean()
    rb["unexpected_exits"] = {"c1": 101}
    assert "crash" in kinds(logs.check(h, rb))


def test_delivery_during_a_failover_counts_only_survivors_inside_the_window():
    h = {"users": {"ua0": "a", "ub0": "b", "uc0": "c"},
         "messages": [msg("ub0", 10, "uc0"),           # survivors, in the window
                      msg("uc0", 11, "ub0"),           # survivors, never received
                      msg("ub0", 12, "ua0"),           # to the killed site
                      msg("ub0", 20, "uc0"),           # after the window
                      msg("uc0", 12, "ub0", status="unknown"),  # never acked: may be lost
                      msg("ub0", 10, None, kind="room", room=ROOM)],
         "received": [{"user": "uc0", "body": body("ub0", 10), "kind": "chat", "t": 10.25},
                      {"user": "ua0", "body": body("ub0", 12), "kind": "chat", "t": 12.1},
                      {"user": "uc0", "body": body("ub0", 20), "kind": "chat", "t": 20.1}]}
    fo = {"killed": "a", "killed_at_s": 9.5, "first_commit_s": 1.0}  # window 9.5-12.5 s
    d = delivery_during(h, fo)
    assert d == {"window_s": 3.0, "sent": 2, "delivered": 1, "to_offline": 0,
                 "latency_p50_s": 0.25, "latency_max_s": 0.25}, d
    assert delivery_during(h, {"killed": "a"}) == {}, "no kill time: nothing to say"


def test_delivery_during_a_failover_sets_apart_recipients_still_reconnecting():
    """uc0's node died in an earlier fault and uc0 logs in again only at
    11.5 s: what was sent to it before waited for that login, which says
    nothing about the failover. ub0 was online all along."""
    h = {"users": {"ua0": "a", "ub0": "b", "uc0": "c"},
         "connects": {"ub0": [0.5], "uc0": [0.5, 11.5]},
         "disconnects": {"uc0": [4.0]},
         "messages": [msg("ub0", 10, "uc0"),           # uc0 offline: kept for its login
                      msg("uc0", 12, "ub0")],          # online both: must flow
         "received": [{"user": "uc0", "body": body("ub0", 10), "kind": "chat", "t": 11.6},
                      {"user": "ub0", "body": body("uc0", 12), "kind": "chat", "t": 12.01}]}
    fo = {"killed": "a", "killed_at_s": 9.5, "first_commit_s": 1.0}
    d = delivery_during(h, fo)
    assert d["sent"] == 1 and d["delivered"] == 1 and d["to_offline"] == 1, d
    assert d["latency_max_s"] == 0.01, d
    # Without connection times (an older history) everyone counts as online.
    del h["connects"]
    d = delivery_during(h, fo)
    assert d["sent"] == 2 and d["to_offline"] == 0 and d["latency_max_s"] == 1.6, d


def test_plan_is_deterministic():
    for name in SCENARIOS:
        a = [f.to_json() for f in plan(name, 7, 60)]
        assert a == [f.to_json() for f in plan(name, 7, 60)], name
        assert a, name
    assert [f.to_json() for f in plan("mixed", 1, 60)] != \
        [f.to_json() for f in plan("mixed", 2, 60)]


# ------------------------------------------------------------- real runs
def chorus_bin() -> Path:
    raw = os.environ.get("CHORUS_BIN")
    p = Path(raw) if raw else REPO / "target" / "debug" / "chorus"
    return p if p.is_absolute() else (Path.cwd() / p).resolve()


needs_binary = pytest.mark.skipif(not chorus_bin().exists(),
                                  reason="chorus binary not built")


def chaos_run(tmp_path: Path, *args: str, timeout: float = 240) -> tuple[int, dict]:
    out = tmp_path / "out"
    env = dict(os.environ, CHORUS_BIN=str(chorus_bin()))
    cp = subprocess.run([str(CHAOS / "chorus-chaos"), "run", *args, "--users-per-site", "2",
                         "--out", str(out)], capture_output=True, text=True, env=env,
                        timeout=timeout, stdin=subprocess.DEVNULL)
    rep_path = out / "report.json"
    assert rep_path.exists(), f"no report; stdout:\n{cp.stdout}\nstderr:\n{cp.stderr}"
    return cp.returncode, json.loads(rep_path.read_text())


def describe(rep: dict) -> str:
    return json.dumps({k: rep.get(k) for k in ("outcome", "error", "counts", "checkers",
                                               "nemesis_errors", "reproduce")},
                      indent=1, default=str)[:6000]


@needs_binary
@pytest.mark.timeout(300)
@pytest.mark.parametrize("scenario,duration", [("site-cut", 20), ("kill9", 20), ("blips", 15)])
def test_real_run_has_no_violations(tmp_path, scenario, duration):
    code, rep = chaos_run(tmp_path, "--scenario", scenario, "--seed", "1",
                          "--duration", str(duration))
    assert code == 0 and rep["violations"] == 0, describe(rep)
    assert rep["counts"]["faults_injected"] >= 1, describe(rep)
    assert rep["counts"]["acked"] > 0, describe(rep)


@needs_binary
@pytest.mark.timeout(300)
def test_kill_leader_measures_the_archive_failover(tmp_path):
    """The leader's node is killed; the survivors elect and commit again,
    and the report says after how long. (The times are BENCHMARKS.md's,
    from a release build; here only that they were measured.)"""
    code, rep = chaos_run(tmp_path, "--scenario", "kill-leader", "--seed", "1",
                          "--duration", "20")
    assert code == 0 and rep["violations"] == 0, describe(rep)
    assert rep["failovers"], describe(rep)
    for fo in rep["failovers"]:
        assert fo["new_leader"] is not None and fo["first_commit_s"] is not None, fo
        assert fo["new_leader_s"] <= fo["first_commit_s"], fo
        # Delivery between the surviving sites does not wait for the archive.
        d = fo["delivery"]
        assert d["delivered"] == d["sent"], fo
    assert "archive failover: leader on" in (tmp_path / "out" / "summary.txt").read_text()


@needs_binary
@pytest.mark.timeout(300)
def test_failpoint_skip_outbox_is_caught_as_lost_messages(tmp_path):
    # The lost messages never come: waiting 60 s for them proves nothing more.
    code, rep = chaos_run(tmp_path, "--scenario", "site-cut", "--seed", "1",
                          "--duration", "20", "--failpoints", "skip-outbox-when-down",
                          "--delivery-wait", "10")
    assert code == 1, describe(rep)
    d = next(c for c in rep["checkers"] if c["name"] == "delivery")
    assert d["by_kind"].get("lost", 0) > 0, describe(rep)


@needs_binary
@pytest.mark.timeout(300)
def test_clock_skew_run(tmp_path):
    ok, why = faketime_available()
    if not ok:
        pytest.skip(why)
    code, rep = chaos_run(tmp_path, "--scenario", "clock-skew", "--seed", "1",
                          "--duration", "20")
    assert code == 0 and rep["violations"] == 0, describe(rep)


_NETNS_WHY = netns_unavailable()
needs_netns = pytest.mark.skipif(_NETNS_WHY is not None, reason=_NETNS_WHY or "")


def netns_leftovers(prefix: str) -> list[str]:
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return ([line for line in ns.splitlines() if line.startswith(prefix)]
            + [line for line in links.splitlines() if f": {prefix}" in line])


@needs_binary
@needs_netns
@pytest.mark.timeout(300)
def test_site_cut_in_network_namespaces(tmp_path):
    """Kernel-level silent cuts (iptables DROP inside the site namespaces):
    no violations, and the run removes every namespace and interface it made."""
    code, rep = chaos_run(tmp_path, "--scenario", "site-cut", "--seed", "1",
                          "--duration", "20", "--net", "netns")
    assert rep["net"] == "netns" and "--net netns" in rep["reproduce"], describe(rep)
    prefix = (rep.get("netns") or {}).get("prefix")
    assert prefix and prefix.startswith("chaos"), describe(rep)
    try:
        assert code == 0 and rep["violations"] == 0, describe(rep)
        assert rep["counts"]["faults_injected"] >= 1, describe(rep)
        assert rep["counts"]["acked"] > 0, describe(rep)
    finally:
        left = netns_leftovers(prefix)
        assert not left, f"left behind: {left}"
