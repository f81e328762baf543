"""Node health: no node log contains a panic (``panicked at``), and no node
exited on its own (an exit the nemesis did not cause)."""

from __future__ import annotations

import re

from chorus_chaos.checkers import CheckResult

PANIC = re.compile(r"panicked at")


def check(history: dict, readback: dict) -> CheckResult:
    res = CheckResult("logs")
    logs = readback.get("logs", {})
    for node, text in sorted(logs.items()):
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if PANIC.search(line):
                res.add("panic", node=node, line=i + 1,
                        excerpt="\n".join(lines[max(0, i - 2):i + 8])[:2000])
    for node, code in sorted(readback.get("unexpected_exits", {}).items()):
        res.add("crash", node=node, exit_code=code)
    res.stats = {"nodes": len(logs)}
    return res
