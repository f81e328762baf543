"""Archive failover, measured from outside: which node leads the archive's
Raft group (every node's ``/archive/status``), and, after that node is
killed, how long until a survivor names a new leader and how long until a
record is committed again (a survivor's applied record count passes the
highest count any site had when the leader was killed). The ``kill-leader``
scenario (faults.py) records both for every kill, and the report prints
them. ``delivery_during`` adds, from the workload's history, what
happened meanwhile to chat messages between users of the surviving sites
(the promise: delivery never pauses while the archive fails over)."""

from __future__ import annotations

import json
import time

# How long a kill is watched for a new leader and a commit before the
# measurement gives up (and says so with None).
WATCH_S = 20.0
POLL_S = 0.02


def archive_status(node) -> dict | None:
    """A running node's /archive/status, or None if it does not answer."""
    if not getattr(node, "running", False):
        return None
    try:
        code, body = node.http_get("/archive/status", timeout=1)
    except Exception:  # noqa: BLE001  (a dying or starting node: no answer)
        return None
    if code != 200:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def archive_leader(cluster, wait_s: float = 30.0) -> tuple[str, int, int]:
    """(site, raft id, records): the site whose node every running node
    names as the archive's leader, and the most records any site has
    applied. Waits for agreement (after a restart the group may still be
    electing)."""
    deadline = time.monotonic() + wait_s
    last: dict = {}
    while True:
        last = {s: archive_status(n) for s, n in cluster.nodes.items()}
        up = {s: st for s, st in last.items() if st}
        by_id = {st["raft_id"]: s for s, st in up.items()}
        leaders = {st["leader"] for st in up.values()}
        if len(up) == len(cluster.nodes) and len(leaders) == 1:
            leader = next(iter(leaders))
            if leader in by_id:
                return by_id[leader], leader, max(st["records"] for st in up.values())
        if time.monotonic() > deadline:
            raise RuntimeError(f"no agreed archive leader within {wait_s:g} s: {last}")
        time.sleep(0.1)


def watch_failover(cluster, killed_site: str, killed_id: int, records: int,
                   t0: float, watch_s: float = WATCH_S) -> dict:
    """Seconds from ``t0`` (the kill) until a survivor names a leader other
    than ``killed_id``, and until a survivor has applied more than
    ``records`` records after that; None for what did not happen within
    ``watch_s``."""
    survivors = [n for s, n in cluster.nodes.items() if s != killed_site]
    leader_s = commit_s = None
    new_leader = None
    while time.monotonic() - t0 < watch_s and commit_s is None:
        for n in survivors:
            st = archive_status(n)
            if not st:
                continue
            now = time.monotonic() - t0
            if leader_s is None and st["leader"] not in (None, killed_id):
                leader_s, new_leader = now, st["leader"]
            if leader_s is not None and st["records"] > records:
                commit_s = now
                break
        time.sleep(POLL_S)
    return {"killed": killed_site, "new_leader": new_leader,
            "new_leader_s": None if leader_s is None else round(leader_s, 3),
            "first_commit_s": None if commit_s is None else round(commit_s, 3)}


def _quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


# Delivery is also watched this long after the first commit.
AFTER_COMMIT_S = 2.0


def online_at(history: dict, user: str, t: float) -> bool:
    """Whether ``user``'s session was up at ``t``: its last connection
    before ``t`` came after its last disconnection before ``t``. A history
    without connection times (an older one) counts everyone as online."""
    if "connects" not in history:
        return True
    up = max((c for c in history["connects"].get(user, []) if c <= t), default=None)
    down = max((d for d in history.get("disconnects", {}).get(user, []) if d <= t), default=None)
    return up is not None and (down is None or up > down)


def delivery_during(history: dict, fo: dict) -> dict:
    """Chat messages between users of the surviving sites, sent from the
    kill until AFTER_COMMIT_S after the first commit that followed it (the
    whole watch if there was none) and acknowledged by the sender's node
    (XEP-0198; an unacknowledged one may be lost): how many went to a
    recipient online at the time, how many of those the recipient
    received, and their delivery latency (send to receipt, seconds).
    Message delivery does not go through the archive's Raft group, so it
    must not pause while the group elects. A message to a recipient who
    was offline then (still reconnecting after an earlier fault) is kept
    for their next login, so its latency says nothing about the failover:
    those are counted apart, as ``to_offline``."""
    start = fo.get("killed_at_s")
    if start is None or not history:
        return {}
    commit = fo.get("first_commit_s")
    end = start + (WATCH_S if commit is None else commit + AFTER_COMMIT_S)
    homes = history.get("users", {})
    killed = fo["killed"]
    received: dict[tuple[str, str], float] = {}
    for r in history.get("received", []):
        if r["kind"] == "chat":
            received.setdefault((r["user"], r["body"]), r["t"])
    window = [m for m in history.get("messages", [])
              if m["kind"] == "chat" and m["status"] == "acked" and start <= m["sent_at"] <= end
              and homes.get(m["sender"]) not in (None, killed)
              and homes.get(m["recipient"]) not in (None, killed)]
    sent = [m for m in window if online_at(history, m["recipient"], m["sent_at"])]
    lat = sorted(received[(m["recipient"], m["body"])] - m["sent_at"]
                 for m in sent if (m["recipient"], m["body"]) in received)
    out = {"window_s": round(end - start, 3), "sent": len(sent), "delivered": len(lat),
           "to_offline": len(window) - len(sent)}
    if lat:
        out.update(latency_p50_s=round(_quantile(lat, 0.5), 3),
                   latency_max_s=round(lat[-1], 3))
    return out
