"""Reading the healed cluster back for the checkers: users' and rooms' MAM,
the compliance archive of every site (HTTP API), rosters and room state as
seen at every site, and what fresh observers see of presence. Every wait
polls with a deadline and then returns what it last saw."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse

import chorus_chaos  # noqa: F401  (puts tests/e2e on sys.path)
from chorus_chaos.cluster import OFFICER_TOKEN, ChaosCluster
from chorus_chaos.workload import (CONNECT_S, IQ_S, OBSERVER, PLUGINS, Workload, jid,
                                   mam_bodies)
from slixmpp import JID
from xmpp import Client  # type: ignore[import-not-found]

log = logging.getLogger("chaos.readback")
CONVERGE_S = 60.0
POLL_S = 0.5


async def login(cl: ChaosCluster, site: str, user: str, password: str, resource: str,
                 presence: bool = False) -> Client:
    c = Client(cl.nodes[site], user, password, resource=resource, plugins=PLUGINS)
    try:
        await c.connect(timeout=CONNECT_S, presence=presence)
    except BaseException:
        await c.close(timeout=1)
        raise
    return c


async def wait_delivered(wl: Workload, deadline_s: float = CONVERGE_S) -> int:
    """Until every acked chat message was received by its recipient (or the
    deadline); returns how many are still missing."""
    deadline = time.monotonic() + deadline_s
    while True:
        got = {(r["user"], r["body"]) for r in wl.history.received if r["kind"] == "chat"}
        missing = [m for m in wl.history.messages if m["kind"] == "chat"
                   and m["status"] == "acked" and (m["recipient"], m["body"]) not in got]
        if not missing or time.monotonic() >= deadline:
            return len(missing)
        await asyncio.sleep(POLL_S)


async def read_mam(wl: Workload) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for a in wl.agents.values():
        c = a.client
        temp = None
        try:
            if c is None or not c.connected:
                c = temp = await login(wl.cluster, a.site, a.user, wl.password, "mam")
            out[a.user] = await mam_bodies(c)
        except Exception as e:  # noqa: BLE001  (the checker counts unread MAMs)
            log.warning("MAM of %s unreadable: %r", a.user, e)
        finally:
            if temp is not None:
                await temp.close()
    return out


async def read_room_mam(wl: Workload) -> dict[str, list[dict]]:
    owner = wl.agents[wl.history.room_owner]
    out: dict[str, list[dict]] = {}
    c = await login(wl.cluster, owner.site, owner.user, wl.password, "room-mam")
    try:
        for room in wl.history.rooms:
            try:
                out[room] = [m for m in await mam_bodies(c, to=room)
                             if (m["body"] or "").startswith("chaos:")]
            except Exception as e:  # noqa: BLE001
                log.warning("room MAM of %s unreadable: %r", room, e)
    finally:
        await c.close()
    return out


def _archive_status(cl: ChaosCluster, site: str) -> dict:
    code, body = cl.nodes[site].http_get("/archive/status", timeout=5)
    if code != 200:
        return {"error": f"HTTP {code}: {body[:200]}"}
    return json.loads(body)


def _search_page(cl: ChaosCluster, site: str, offset: int, limit: int) -> dict:
    from chorus_node import insecure_ssl_context  # type: ignore[import-not-found]
    import urllib.request
    q = urllib.parse.urlencode({"offset": offset, "limit": limit})
    req = urllib.request.Request(f"{cl.nodes[site].http_base}/api/v1/archive/search?{q}",
                                 headers={"Authorization": f"Bearer {OFFICER_TOKEN}"})
    with urllib.request.urlopen(req, timeout=30, context=insecure_ssl_context()) as r:
        return json.loads(r.read())


async def read_archive(cl: ChaosCluster, deadline_s: float = CONVERGE_S) -> dict:
    """Waits until every site's archive has an empty spool and one digest,
    then reads every record of every site (search API, paged)."""
    deadline = time.monotonic() + deadline_s
    sts: dict[str, dict] = {}
    while True:
        sts = {s: await asyncio.to_thread(_archive_status, cl, s) for s in cl.nodes}
        ok = all("error" not in st and st.get("spooled") == 0 for st in sts.values())
        if ok and len({(st.get("records"), st.get("digest")) for st in sts.values()}) == 1:
            break
        if time.monotonic() >= deadline:
            log.warning("archives did not converge: %s", sts)
            break
        await asyncio.sleep(POLL_S)
    out: dict[str, dict] = {}
    for s in cl.nodes:
        recs: list[dict] = []
        try:
            offset, limit = 0, 500
            while True:
                page = await asyncio.to_thread(_search_page, cl, s, offset, limit)
                recs.extend({"id": r.get("id"), "body": r.get("body"),
                             "stamp_ms": r.get("stamp_ms"), "kind": r.get("kind")}
                            for r in page["records"])
                offset += len(page["records"])
                if not page["records"] or offset >= page.get("total", 0):
                    break
            out[s] = {"records": recs, "status": sts.get(s, {})}
        except Exception as e:  # noqa: BLE001
            out[s] = {"error": repr(e)[:300], "status": sts.get(s, {})}
    return out


async def read_presence(wl: Workload, online: set[str],
                        deadline_s: float = 30.0) -> dict[str, dict]:
    """A fresh observer per site; polls its view until it shows exactly
    ``online`` (or the deadline)."""
    out: dict[str, dict] = {}
    for site in wl.cluster.nodes:
        try:
            c = await login(wl.cluster, site, OBSERVER, wl.password, f"check-{site}",
                            presence=True)
        except Exception as e:  # noqa: BLE001
            out[site] = {"error": repr(e)[:300]}
            continue
        resources: dict[str, set[str]] = {}
        deadline = time.monotonic() + deadline_s
        try:
            while True:
                for st in list(c._inbox):
                    if st.xml.tag.endswith("presence"):
                        frm = st["from"]
                        b, r = str(frm.bare), str(frm.resource)
                        t = st.xml.get("type") or "available"
                        if t == "available":
                            resources.setdefault(b, set()).add(r)
                        elif t == "unavailable":
                            resources.get(b, set()).discard(r)
                c.drop_inbox()
                seen = {b.split("@")[0] for b, rs in resources.items()
                        if rs and b.split("@")[0] in wl.agents}
                if seen == online or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(POLL_S)
            out[site] = {"online": sorted(seen), "resources": {b: sorted(rs)
                                                               for b, rs in resources.items()}}
        finally:
            await c.close()
    return out


async def _roster_views(wl: Workload, user: str) -> dict[str, dict]:
    async def one(site):
        try:
            c = await login(wl.cluster, site, user, wl.password, f"roster-{site}")
        except Exception as e:  # noqa: BLE001
            return site, {"error": repr(e)[:300]}
        try:
            items, _ver, _ = await c.roster_get()
            return site, {"items": items}
        except Exception as e:  # noqa: BLE001
            return site, {"error": repr(e)[:300]}
        finally:
            await c.close()
    return dict(await asyncio.gather(*(one(s) for s in wl.cluster.nodes)))


def _same(views: dict[str, dict]) -> bool:
    return (all("items" in v for v in views.values())
            and len({json.dumps(v["items"], sort_keys=True) for v in views.values()}) == 1)


async def read_rosters(wl: Workload, deadline_s: float = CONVERGE_S) -> dict:
    """Every user's roster at every site, re-read until identical (or deadline)."""
    deadline = time.monotonic() + deadline_s
    out = {u: await _roster_views(wl, u) for u in wl.agents}
    while time.monotonic() < deadline:
        bad = [u for u, v in out.items() if not _same(v)]
        if not bad:
            break
        await asyncio.sleep(POLL_S)
        for u in bad:
            out[u] = await _roster_views(wl, u)
    return out


async def _room_views(wl: Workload, c_by_site: dict[str, Client], room: str) -> dict:
    views = {}
    for site, c in c_by_site.items():
        muc = c.plugin["xep_0045"]
        try:
            form = await muc.get_room_config(JID(room), timeout=IQ_S)
            cfg = {k: v for k, v in form.get_values().items() if k != "FORM_TYPE"}
            affs = {}
            for aff in ("owner", "admin", "member", "outcast"):
                affs[aff] = sorted(str(j) for j in await muc.get_affiliation_list(
                    JID(room), aff, timeout=IQ_S))
            views[site] = {"config": json.loads(json.dumps(cfg, default=str)),
                           "affiliations": affs}
        except Exception as e:  # noqa: BLE001
            views[site] = {"error": repr(e)[:300]}
    return views


async def read_rooms(wl: Workload, deadline_s: float = CONVERGE_S) -> dict:
    owner = wl.agents[wl.history.room_owner]
    clients: dict[str, Client] = {}
    try:
        for site in wl.cluster.nodes:
            clients[site] = await login(wl.cluster, site, owner.user, wl.password,
                                        f"rooms-{site}")
        deadline = time.monotonic() + deadline_s
        out = {}
        for room in wl.history.rooms:
            while True:
                v = await _room_views(wl, clients, room)
                same = all("error" not in x for x in v.values()) and \
                    len({json.dumps(x, sort_keys=True) for x in v.values()}) == 1
                if same or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(POLL_S)
            out[room] = v
        return out
    finally:
        for c in clients.values():
            await c.close()


__all__ = ["read_archive", "read_mam", "read_presence", "read_room_mam", "read_rooms",
           "read_rosters", "wait_delivered", "jid"]
