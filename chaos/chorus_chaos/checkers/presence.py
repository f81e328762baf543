"""No ghost presence: after the heal and a settle period, a fresh observer
on every site (subscribed to every user since the start) sees exactly the
users that are online (the harness knows which): nobody offline shown
online, nobody online missing."""

from __future__ import annotations

from chorus_chaos.checkers import CheckResult


def check(history: dict, readback: dict) -> CheckResult:
    res = CheckResult("presence")
    pres = readback.get("presence", {})
    if not pres:
        res.skipped = "presence not read"
        return res
    online = set(history.get("online_at_end", []))
    for site, v in sorted(pres.items()):
        if v.get("error"):
            res.add("unreadable", site=site, error=v["error"])
            continue
        seen = set(v.get("online", []))
        for u in sorted(seen - online):
            res.add("ghost", site=site, user=u)
        for u in sorted(online - seen):
            res.add("missing", site=site, user=u)
    res.stats = {"online": len(online), "offline": len(set(history.get("users", {})) - online)}
    return res
