"""Checkers: one invariant per module. Each exposes ``check(history,
readback) -> CheckResult``; ``history`` is the workload's History as a dict
(see workload.History.to_json) and ``readback`` what the harness read from
the healed cluster (see readback.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_EXAMPLES = 20


@dataclass
class CheckResult:
    name: str
    violations: list[dict] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return not self.violations

    def add(self, kind: str, **detail) -> None:
        self.violations.append({"kind": kind, **detail})

    def to_json(self) -> dict:
        kinds: dict[str, int] = {}
        for v in self.violations:
            kinds[v["kind"]] = kinds.get(v["kind"], 0) + 1
        return {"name": self.name, "ok": self.ok, "skipped": self.skipped,
                "violations": len(self.violations), "by_kind": kinds,
                "examples": self.violations[:MAX_EXAMPLES], "stats": self.stats}


def all_checkers():
    """name -> check function, in report order."""
    from chorus_chaos.checkers import archive, delivery, logs, presence, rooms, roster
    return {"delivery": delivery.check, "archive": archive.check, "roster": roster.check,
            "rooms": rooms.check, "presence": presence.check, "logs": logs.check}
