"""Rosters converge: after the heal every user's roster, read by logging in
at every site, is identical on all sites, and its ``contact*`` items equal
what the workload's edits imply (per contact the last acked edit wins; an
edit whose answer never came may or may not have been applied, so any
state after the last acked edit is accepted)."""

from __future__ import annotations

from chorus_chaos.checkers import CheckResult

ABSENT = "<absent>"


def expected_states(edits: list[dict]) -> dict[str, set]:
    """contact -> the set of acceptable names (ABSENT: not in the roster)."""
    out: dict[str, set] = {}
    by_contact: dict[str, list[dict]] = {}
    for e in edits:
        by_contact.setdefault(e["contact"], []).append(e)
    for contact, es in by_contact.items():
        acked_idx = [i for i, e in enumerate(es) if e["status"] == "acked"]
        start = acked_idx[-1] if acked_idx else -1
        ok: set = set()
        ok.add(_state(es[start]) if start >= 0 else ABSENT)
        for e in es[start + 1:]:
            if e["status"] in ("unknown", "pending"):
                ok.add(_state(e))
        out[contact] = ok
    return out


def _state(e: dict) -> str:
    return ABSENT if e["op"] == "remove" else e["name"]


def check(history: dict, readback: dict) -> CheckResult:
    res = CheckResult("roster")
    rosters = readback.get("rosters", {})
    if not rosters:
        res.skipped = "rosters not read"
        return res
    checked = 0
    for user in history.get("users", {}):
        views = rosters.get(user)
        if not views:
            res.add("unreadable", user=user)
            continue
        errors = {s: v["error"] for s, v in views.items() if v.get("error")}
        for s, e in errors.items():
            res.add("unreadable", user=user, site=s, error=e)
        items = {s: v["items"] for s, v in views.items() if not v.get("error")}
        canon = {s: {j: (it.get("name"), tuple(it.get("groups") or ()),
                         it.get("subscription"))
                     for j, it in sorted(v.items())} for s, v in items.items()}
        if len({repr(c) for c in canon.values()}) > 1:
            res.add("diverged", user=user, rosters={s: {j: list(t) for j, t in c.items()}
                                                    for s, c in canon.items()})
        want = expected_states(history.get("roster_edits", {}).get(user, []))
        for s, v in items.items():
            for contact, ok in want.items():
                have = v[contact].get("name") if contact in v else ABSENT
                if have not in ok:
                    res.add("wrong_item", user=user, site=s, contact=contact, have=have,
                            want=sorted(ok))
        checked += 1
    res.stats = {"users_checked": checked}
    return res
