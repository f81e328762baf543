"""Room state converges: each room's configuration form and affiliation
lists, read at every site after the heal, are identical, and the room
description is the last acked change (or a later unacknowledged one)."""

from __future__ import annotations

from chorus_chaos.checkers import CheckResult


def check(history: dict, readback: dict) -> CheckResult:
    res = CheckResult("rooms")
    rooms = readback.get("rooms", {})
    if not rooms:
        res.skipped = "rooms not read"
        return res
    for room in history.get("rooms", []):
        views = rooms.get(room, {})
        good = {}
        for s, v in sorted(views.items()):
            if v.get("error"):
                res.add("unreadable", room=room, site=s, error=v["error"])
            else:
                good[s] = v
        if len({repr(sorted(v.items())) for v in good.values()}) > 1:
            res.add("diverged", room=room, views=good)
        changes = [c for c in history.get("room_config", []) if c["room"] == room]
        acked = [i for i, c in enumerate(changes) if c["status"] == "acked"]
        if not acked:
            continue
        ok = {changes[acked[-1]]["value"]} | {c["value"] for c in changes[acked[-1] + 1:]
                                               if c["status"] in ("unknown", "pending")}
        for s, v in good.items():
            have = v.get("config", {}).get("muc#roomconfig_roomdesc")
            if have not in ok:
                res.add("lost_config_change", room=room, site=s, have=have, want=sorted(ok))
    res.stats = {"rooms": len(history.get("rooms", [])),
                 "config_changes": len(history.get("room_config", []))}
    return res
