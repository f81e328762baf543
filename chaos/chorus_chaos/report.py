"""Reports: ``<out>/report.json`` (machine-readable) and ``<out>/summary.txt``
(for people), plus the markdown table of a suite."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from chorus_chaos.failover import delivery_during


def counts(history: dict, nemesis) -> dict:
    msgs = history.get("messages", []) if history else []
    c = Counter((m["kind"], m["status"]) for m in msgs)
    edits = [e for es in (history or {}).get("roster_edits", {}).values() for e in es]
    return {
        "faults_scheduled": None if nemesis is None else len(nemesis.faults),
        "faults_injected": 0 if nemesis is None else nemesis.injected,
        "messages_sent": len(msgs),
        "chat_acked": c[("chat", "acked")], "chat_unknown": c[("chat", "unknown")],
        "room_acked": c[("room", "acked")], "room_unknown": c[("room", "unknown")],
        "acked": c[("chat", "acked")] + c[("room", "acked")],
        "unknown": c[("chat", "unknown")] + c[("room", "unknown")],
        "received": len((history or {}).get("received", [])),
        "roster_edits": len(edits),
        "room_config_changes": len((history or {}).get("room_config", [])),
        "presence_changes": (history or {}).get("presence_changes", 0),
        "client_disconnects": sum(len(v) for v in (history or {}).get("disconnects", {})
                                  .values()),
    }


def write_report(out: Path, info: dict, history: dict, readback: dict, nemesis,
                 results: list, started: float) -> dict:
    rep = dict(info)
    rep["elapsed_s"] = round(time.monotonic() - started, 1)
    rep["counts"] = counts(history, nemesis)
    if nemesis is not None:
        rep["nemesis_events"] = nemesis.events
        rep["nemesis_errors"] = nemesis.errors
        rep["failovers"] = [dict(fo, delivery=delivery_during(history, fo))
                            for fo in nemesis.failovers]
    rep["checkers"] = [r.to_json() for r in results]
    rep["violations"] = sum(len(r.violations) for r in results)
    if "error" in info or info.get("checker_errors"):
        rep["outcome"] = "harness-error"
    elif "skipped" in info:
        rep["outcome"] = "skipped"
    else:
        rep["outcome"] = "violations" if rep["violations"] else "ok"
    rep["logs"] = sorted(str(p.relative_to(out)) for p in out.rglob("chorus.log"))
    (out / "report.json").write_text(json.dumps(rep, indent=2, default=str))
    if history:
        (out / "history.json").write_text(json.dumps(history, indent=1, default=str))
    if readback:
        slim = {k: v for k, v in readback.items() if k != "logs"}
        (out / "readback.json").write_text(json.dumps(slim, indent=1, default=str))
    (out / "summary.txt").write_text(summary(rep))
    return rep


def summary(rep: dict) -> str:
    c = rep["counts"]
    lines = [
        f"chorus-chaos: scenario {rep['scenario']}  seed {rep['seed']}  "
        f"duration {rep['duration']:g}s  -> {rep['outcome'].upper()}",
        f"reproduce: {rep['reproduce']}",
        f"elapsed {rep['elapsed_s']}s; failpoints: {','.join(rep['failpoints']) or 'none'}; "
        f"network: {rep.get('net', 'proxy')}"
        + (f" ({rep['netns']['prefix']}, {rep['netns']['subnet']})" if rep.get("netns") else ""),
    ]
    for n in rep.get("net_notes", []):
        lines.append(f"note: {n}")
    if rep.get("skipped"):
        lines.append(f"SKIPPED: {rep['skipped']}")
    if rep.get("error"):
        lines += [f"HARNESS ERROR: {rep['error']}", rep.get("traceback", "")]
    lines += [
        f"faults: {c['faults_injected']} injected of {c['faults_scheduled']} scheduled",
        f"messages: {c['messages_sent']} sent, {c['acked']} acked, {c['unknown']} unknown "
        f"(chat {c['chat_acked']}/{c['chat_unknown']}, room {c['room_acked']}/"
        f"{c['room_unknown']}); {c['received']} receptions",
        f"roster edits {c['roster_edits']}, room config changes {c['room_config_changes']}, "
        f"presence changes {c['presence_changes']}, client disconnects "
        f"{c['client_disconnects']}",
        "",
        "schedule:",
    ]
    for f in rep.get("schedule", []):
        extra = " ".join(f"{k}={v}" for k, v in f.get("params", {}).items())
        lines.append(f"  t={f['at']:7.2f}s  {f['kind']:<15} {f['target'] or '':<8} "
                     f"hold={f['hold']:.3f}s {extra}")
    for e in rep.get("nemesis_errors", []):
        lines.append(f"  nemesis error: {e}")
    for fo in rep.get("failovers", []):
        lines.append(f"  archive failover: leader on {fo['killed']} killed; new leader after "
                     f"{fo['new_leader_s']} s, first commit after {fo['first_commit_s']} s")
        d = fo.get("delivery") or {}
        if d:
            lines.append(f"    chat between surviving sites meanwhile ({d['window_s']} s): "
                         f"{d['delivered']} of {d['sent']} to online recipients delivered"
                         + (f", latency p50 {d['latency_p50_s']} s, max {d['latency_max_s']} s"
                            if d["delivered"] else "")
                         + (f"; {d['to_offline']} to recipients still reconnecting (kept for "
                            "their login)" if d.get("to_offline") else ""))
    lines += ["", "checkers:"]
    for r in rep.get("checkers", []):
        state = "skipped" if r["skipped"] else ("ok" if r["ok"] else "VIOLATED")
        lines.append(f"  {r['name']:<10} {state:<9} violations={r['violations']} "
                     f"{r['by_kind'] or ''} {r['stats']}")
        for ex in r["examples"][:5]:
            lines.append(f"      e.g. {json.dumps(ex, default=str)[:400]}")
    lines.append(f"\ntotal violations: {rep['violations']}")
    return "\n".join(lines) + "\n"


def suite_table(rows: list[dict]) -> str:
    out = ["| scenario | runs | faults injected | messages acked / unknown | violations | outcome |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['scenario']} | {r['runs']} | {r['faults']} | "
                   f"{r['acked']} / {r['unknown']} | {r['violations']} | {r['outcome']} |")
    return "\n".join(out) + "\n"
