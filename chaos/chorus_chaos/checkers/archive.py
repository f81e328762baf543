"""Compliance archive: every acked message is in the archive exactly once
on every site; unknown messages may be absent but never duplicated; and
the order of the records common to the sites is the same everywhere (the
sites' archive digests, which hash the records in archive order, agree,
and the id sequences read through the search API agree up to records with
equal timestamps, whose relative order the search does not define)."""

from __future__ import annotations

from collections import Counter

from chorus_chaos.checkers import CheckResult


def _order_key_groups(records: list[dict], common: set[str]) -> list[list[str]]:
    """Ids of common records, grouped by stamp (groups in order)."""
    groups: list[list[str]] = []
    last = None
    for r in records:
        if r["body"] not in common:
            continue
        if r.get("stamp_ms") != last or not groups:
            groups.append([])
            last = r.get("stamp_ms")
        groups[-1].append(r["body"])
    return [sorted(g) for g in groups]


def check(history: dict, readback: dict) -> CheckResult:
    res = CheckResult("archive")
    arch = readback.get("archive", {})
    if not arch:
        res.skipped = "archive not read"
        return res
    run = history.get("run", "")
    per_site: dict[str, Counter] = {}
    for site, a in sorted(arch.items()):
        if a.get("error"):
            res.add("unreadable", site=site, error=a["error"])
            continue
        per_site[site] = Counter(r["body"] for r in a["records"]
                                 if (r.get("body") or "").startswith(f"chaos:{run}:"))
    stats = Counter()
    for m in history.get("messages", []):
        for site, counts in per_site.items():
            n = counts[m["body"]]
            if n > 1:
                res.add("duplicate", site=site, id=m["id"], count=n, status=m["status"])
            elif n == 0 and m["status"] == "acked":
                res.add("missing", site=site, id=m["id"], msg_kind=m["kind"],
                        sender=m["sender"], sent_at=m["sent_at"])
            elif n == 1:
                stats[f"present_{site}"] += 1
    if len(per_site) > 1:
        common = set.intersection(*(set(c) for c in per_site.values()))
        seqs = {s: _order_key_groups(arch[s]["records"], common) for s in per_site}
        ref_site = sorted(seqs)[0]
        for s, seq in seqs.items():
            if seq != seqs[ref_site]:
                first = next((i for i, (x, y) in enumerate(zip(seq, seqs[ref_site]))
                              if x != y), min(len(seq), len(seqs[ref_site])))
                res.add("order_differs", site=s, versus=ref_site, at=first,
                        here=seq[first:first + 3], there=seqs[ref_site][first:first + 3])
        digests = {s: arch[s].get("status", {}).get("digest") for s in per_site}
        if len(set(digests.values())) > 1:
            res.add("digest_differs", digests=digests,
                    statuses={s: arch[s].get("status") for s in per_site})
        stats["common_records"] = len(common)
    res.stats = dict(stats)
    return res
