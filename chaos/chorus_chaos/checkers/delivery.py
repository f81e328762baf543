"""Delivery: every acked one-to-one message reaches its recipient exactly
once (live or offline at most once, and exactly once in the recipient's
MAM); an unknown message (connection died before the ack) arrives 0 or 1
times, never 2. Acked room messages reach each occupant at most once and
are in the room's MAM exactly once.

An acked message that was never received is "lost", unless the
recipient's own connection died after it was sent (it may have been
written into the dying stream) and it is in the recipient's MAM, from
which every client catches up: that is counted as ``recovered_via_mam``.
"""

from __future__ import annotations

from collections import Counter

from chorus_chaos.checkers import CheckResult


def check(history: dict, readback: dict) -> CheckResult:
    res = CheckResult("delivery")
    live: Counter = Counter()
    room_live: Counter = Counter()
    for r in history.get("received", []):
        if r["kind"] == "chat":
            live[(r["user"], r["body"])] += 1
        elif r["kind"] == "room":
            room_live[(r["user"], r["body"])] += 1
    mam = readback.get("mam", {})
    mam_count: dict[str, Counter] = {u: Counter(m["body"] for m in items
                                                if m.get("type") != "groupchat")
                                     for u, items in mam.items()}
    room_mam = readback.get("room_mam", {})
    room_mam_count = {room: Counter(m["body"] for m in items) for room, items in room_mam.items()}
    disconnects = history.get("disconnects", {})
    stats = Counter()
    for m in history.get("messages", []):
        status = m["status"]
        stats[f"{m['kind']}_{status}"] += 1
        if m["kind"] == "chat":
            rcpt, body = m["recipient"], m["body"]
            n_live = live[(rcpt, body)]
            in_mam = mam_count.get(rcpt)
            n_mam = in_mam[body] if in_mam is not None else None
            ex = {"id": m["id"], "sender": m["sender"], "recipient": rcpt, "status": status,
                  "sent_at": m["sent_at"], "received": n_live, "in_mam": n_mam}
            if n_live > 1:
                res.add("duplicate_delivery", **ex)
            if n_mam is not None and n_mam > 1:
                res.add("mam_duplicate", **ex)
            if status != "acked":
                continue
            if n_live == 0:
                excused = any(t >= m["sent_at"] for t in disconnects.get(rcpt, []))
                if excused and n_mam:
                    stats["recovered_via_mam"] += 1
                else:
                    res.add("lost", **ex)
                    continue
            if n_mam == 0:
                res.add("mam_missing", **ex)
            elif n_mam is None:
                stats["mam_not_read"] += 1
        elif m["kind"] == "room":
            body = m["body"]
            for user in history.get("users", {}):
                if room_live[(user, body)] > 1:
                    res.add("duplicate_room_delivery", id=m["id"], user=user,
                            received=room_live[(user, body)], status=status)
            counts = room_mam_count.get(m["room"])
            if counts is None:
                stats["room_mam_not_read"] += 1
                continue
            n = counts[body]
            if n > 1:
                res.add("room_mam_duplicate", id=m["id"], room=m["room"], in_mam=n,
                        status=status)
            elif n == 0 and status == "acked":
                res.add("room_mam_missing", id=m["id"], room=m["room"], sender=m["sender"],
                        sent_at=m["sent_at"])
    res.stats = dict(stats)
    return res
