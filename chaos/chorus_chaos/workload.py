"""The workload: real XMPP clients (slixmpp through tests/e2e/xmpp.py), each
with stream management, sending uniquely numbered one-to-one and room
messages, changing presence, editing rosters and (the room owner) room
configuration, and recording everything in a ``History``.

A message is "acked" once the server's XEP-0198 <a h=.../> covers it (the
ack window is 1), "unknown" if the connection it was sent on died first.
Clients whose node went away reconnect with back-off to their home site's
node; each reconnection is a fresh stream (no resumption, so nothing is
resent behind the harness's back). Every received chat/groupchat body is
recorded per recipient, live or offline.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import chorus_chaos  # noqa: F401  (puts tests/e2e on sys.path)
from slixmpp import JID
from xmpp import NS_CLIENT, NS_DELAY, Client, localname  # type: ignore[import-not-found]

log = logging.getLogger("chaos.workload")

DOMAIN = "chorus.test"
MUC = f"conference.{DOMAIN}"
OBSERVER = "observer"
CONTACTS = 5
NS_MAM = "urn:xmpp:mam:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
PLUGINS = ("xep_0004", "xep_0045", "xep_0059", "xep_0297", "xep_0313")
CONNECT_S = 10.0
IQ_S = 8.0
SHOWS = (None, "away", "chat", "dnd", "xa")


def jid(user: str) -> str:
    return f"{user}@{DOMAIN}"


def contact_jid(k: int) -> str:
    return f"contact{k}@{DOMAIN}"


def user_names(users_per_site: int, sites=("a", "b", "c")) -> dict[str, str]:
    """user -> home site (u<site><i>)."""
    return {f"u{s}{i}": s for s in sites for i in range(users_per_site)}


@dataclass
class History:
    """Everything the workload did and saw (JSON-serialisable)."""
    run: str
    users: dict[str, str] = field(default_factory=dict)  # user -> home site
    rooms: list[str] = field(default_factory=list)
    room_owner: str = ""
    messages: list[dict] = field(default_factory=list)
    received: list[dict] = field(default_factory=list)  # {user, body, kind, delayed}
    disconnects: dict[str, list[float]] = field(default_factory=dict)
    # When each user's session was up (bound, initial presence sent).
    connects: dict[str, list[float]] = field(default_factory=dict)
    roster_edits: dict[str, list[dict]] = field(default_factory=dict)
    room_config: list[dict] = field(default_factory=list)
    presence_changes: int = 0
    online_at_end: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def now(t0: float) -> float:
    return round(time.monotonic() - t0, 3)


class Agent:
    """One user: a (re)connecting client and its share of the workload."""

    def __init__(self, wl: "Workload", user: str, site: str, rng: random.Random):
        self.wl = wl
        self.user = user
        self.site = site
        self.rng = rng
        self.client: Client | None = None
        self.gen = 0
        self.n = 0
        self.pending: dict[str, dict] = {}  # stanza id -> message record
        self.stay_online = True

    @property
    def node(self):
        return self.wl.cluster.nodes[self.site]

    @property
    def online(self) -> bool:
        return self.client is not None and self.client.connected

    # ------------------------------------------------------------ connection
    async def connect(self, join_rooms: bool = True) -> bool:
        self.gen += 1
        c = Client(self.node, self.user, self.wl.password, resource=f"w{self.gen}",
                   sm=True, plugins=PLUGINS)
        sm = c.xmpp.plugin["xep_0198"]
        sm.window = 1
        sm.window_counter = 1
        c.xmpp.auto_authorize = True  # accept the observer's subscription
        c.xmpp.add_event_handler("stanza_acked", self._on_acked)
        c.xmpp.add_event_handler("message", lambda m: self._on_message(m, "chat"))
        c.xmpp.add_event_handler("groupchat_message", lambda m: self._on_message(m, "room"))
        c.xmpp.add_event_handler("disconnected", lambda _r: self._on_disconnected(c))
        try:
            # A refused connection (the node is down) fails at once: the
            # back-off in run() retries, so the user is back within
            # moments of the node, not after CONNECT_S.
            await c.connect(timeout=CONNECT_S, presence=True, fail_fast=True)
        except Exception as e:  # noqa: BLE001  (node down: retried)
            log.debug("%s: connect failed: %r", self.user, e)
            c.xmpp.abort()
            await c.close(timeout=1)
            return False
        self.client = c
        self.wl.history.connects.setdefault(self.user, []).append(now(self.wl.t0))
        if join_rooms:
            for room in self.wl.history.rooms:
                await self.join(room)
        return True

    async def join(self, room: str) -> None:
        c = self.client
        if c is None:
            return
        try:
            await c.plugin["xep_0045"].join_muc_wait(JID(room), self.user, maxstanzas=0,
                                                    timeout=IQ_S)
        except Exception as e:  # noqa: BLE001
            log.debug("%s: join %s failed: %r", self.user, room, e)

    def _on_disconnected(self, c: Client) -> None:
        if c is self.client:
            self.wl.history.disconnects.setdefault(self.user, []).append(now(self.wl.t0))
            # Whatever was not acked on that stream may or may not have made it.
            for rec in self.pending.values():
                rec["status"] = "unknown"
            self.pending.clear()

    def _on_acked(self, stanza) -> None:
        rec = self.pending.pop(stanza["id"], None)
        if rec is not None:
            rec["status"] = "acked"
            rec["acked_at"] = now(self.wl.t0)

    def _on_message(self, msg, kind: str) -> None:
        if msg["type"] == "error" or (kind == "chat" and msg["type"] == "groupchat"):
            return
        body = msg["body"]
        if not body or not body.startswith(f"chaos:{self.wl.history.run}:"):
            return
        delayed = msg.xml.find(f"{{{NS_DELAY}}}delay") is not None
        if kind == "room" and delayed:
            kind = "room-history"  # a room's history replay, not a delivery
        self.wl.history.received.append({"user": self.user, "body": body, "kind": kind,
                                         "delayed": delayed, "t": now(self.wl.t0)})

    async def close(self) -> None:
        c, self.client = self.client, None
        if c is not None:  # a chosen disconnect (self.client is None): not a fault
            for rec in self.pending.values():
                rec["status"] = "unknown"
            self.pending.clear()
            await c.close()

    # ---------------------------------------------------------------- actions
    def _send(self, to: str, kind: str, mtype: str, room: str | None = None) -> None:
        c = self.client
        assert c is not None
        self.n += 1
        body = f"chaos:{self.wl.history.run}:{self.user}:{self.n}"
        mid = f"{self.wl.history.run}-{self.user}-{self.n}"
        rec = {"id": mid, "body": body, "sender": self.user, "kind": kind,
               "recipient": to.split("@")[0] if kind == "chat" else None, "room": room,
               "status": "pending", "sent_at": now(self.wl.t0), "gen": self.gen}
        self.wl.history.messages.append(rec)
        self.pending[mid] = rec
        c.send_message(to, body, mtype=mtype, id=mid)

    async def step(self) -> None:
        rng, h = self.rng, self.wl.history
        r = rng.random()
        c = self.client
        assert c is not None
        if r < 0.6:
            others = [u for u in h.users if u != self.user]
            to = rng.choice(others)
            self._send(jid(to), "chat", "chat")
        elif r < 0.75 and h.rooms:
            room = rng.choice(h.rooms)
            self._send(room, "room", "groupchat", room=room)
        elif r < 0.85:
            c.send_presence(show=rng.choice(SHOWS), status=f"chaos {self.n}")
            h.presence_changes += 1
        elif r < 0.95 or self.user != h.room_owner:
            await self.roster_edit()
        else:
            await self.room_config()

    async def roster_edit(self) -> None:
        k = self.rng.randrange(CONTACTS)
        op = self.rng.choice(["add", "rename", "remove"])
        self.n += 1
        name = None if op == "remove" else f"{op}-{self.user}-{self.n}"
        rec = {"contact": contact_jid(k), "op": op, "name": name, "status": "pending",
               "t": now(self.wl.t0)}
        self.wl.history.roster_edits.setdefault(self.user, []).append(rec)
        c = self.client
        assert c is not None
        try:
            await c.roster_set(contact_jid(k), name=name, remove=(op == "remove"))
            rec["status"] = "acked"
        except Exception as e:  # noqa: BLE001
            from slixmpp.exceptions import IqError
            rec["status"] = "rejected" if isinstance(e, IqError) else "unknown"
            rec["error"] = repr(e)[:200]

    async def room_config(self) -> None:
        room = self.rng.choice(self.wl.history.rooms)
        self.n += 1
        desc = f"desc-{self.n}"
        rec = {"room": room, "field": "muc#roomconfig_roomdesc", "value": desc,
               "status": "pending", "t": now(self.wl.t0)}
        self.wl.history.room_config.append(rec)
        c = self.client
        assert c is not None
        muc = c.plugin["xep_0045"]
        try:
            form = await muc.get_room_config(JID(room), timeout=IQ_S)
        except Exception as e:  # noqa: BLE001  (nothing was changed)
            rec["status"] = "rejected"
            rec["error"] = repr(e)[:200]
            return
        try:
            form.set_values({"muc#roomconfig_roomdesc": desc})
            await muc.set_room_config(JID(room), form, timeout=IQ_S)
            rec["status"] = "acked"
        except Exception as e:  # noqa: BLE001
            from slixmpp.exceptions import IqError
            rec["status"] = "rejected" if isinstance(e, IqError) else "unknown"
            rec["error"] = repr(e)[:200]

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.25
        while not stop.is_set():
            if not self.online:
                if await self.connect():
                    backoff = 0.25
                else:
                    await _wait(stop, backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
            try:
                await self.step()
            except Exception as e:  # noqa: BLE001  (a dying connection)
                log.debug("%s: step failed: %r", self.user, e)
            if self.client is not None:
                self.client.drop_inbox()
            await _wait(stop, self.rng.uniform(0.4, 1.0))


async def _wait(ev: asyncio.Event, s: float) -> None:
    try:
        await asyncio.wait_for(ev.wait(), s)
    except asyncio.TimeoutError:
        pass


class Workload:
    """All agents, the rooms, the observer subscriptions."""

    def __init__(self, cluster, run: str, seed: int, users: dict[str, str], password: str):
        self.cluster = cluster
        self.password = password
        self.t0 = time.monotonic()
        self.history = History(run=run, users=dict(users))
        self.seed = seed
        self.agents = {u: Agent(self, u, s, random.Random(f"workload:{seed}:{u}"))
                       for u, s in users.items()}
        self.history.room_owner = next(iter(users))
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # ----------------------------------------------------------------- set-up
    async def setup(self, rooms: int = 2) -> None:
        h = self.history
        for a in self.agents.values():
            if not await a.connect(join_rooms=False):
                raise RuntimeError(f"{a.user} cannot log in at site {a.site}")
        owner = self.agents[h.room_owner]
        assert owner.client is not None
        for i in range(rooms):
            room = f"chaos-{h.run}-r{i}@{MUC}".lower()
            await create_room(owner.client, room, owner.user)
            h.rooms.append(room)
        for a in self.agents.values():
            for room in h.rooms:
                if a.user != owner.user:
                    await a.join(room)
        await self.subscribe_observer()

    async def subscribe_observer(self) -> None:
        """observer@ subscribes to every user (they auto-accept)."""
        site = next(iter(self.cluster.nodes))
        obs = Client(self.cluster.nodes[site], OBSERVER, self.password, resource="setup")
        await obs.connect(timeout=CONNECT_S, presence=True)
        try:
            for u in self.agents:
                obs.send_presence(to=jid(u), ptype="subscribe")
            want = set(jid(u) for u in self.agents)
            deadline = time.monotonic() + 30
            got: set[str] = set()
            while want - got:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"observer subscriptions not accepted by {want - got}")
                p = await obs.next_presence(left, ptype="subscribed")
                got.add(str(p["from"].bare))
        finally:
            await obs.close()

    # ------------------------------------------------------------------- run
    def start(self) -> None:
        self._tasks = [asyncio.create_task(a.run(self._stop)) for a in self.agents.values()]

    async def stop(self) -> None:
        self._stop.set()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for a, r in zip(self.agents.values(), results, strict=True):
            if isinstance(r, BaseException):
                self.history.errors.append(f"{a.user}: {r!r}")

    async def reconnect_all(self, deadline_s: float = 60.0) -> list[str]:
        """Every agent connected (and in its rooms) again; returns who could not."""
        deadline = time.monotonic() + deadline_s
        missing = [a for a in self.agents.values() if not a.online]
        while missing and time.monotonic() < deadline:
            for a in missing:
                await a.connect()
            missing = [a for a in self.agents.values() if not a.online]
            if missing:
                await asyncio.sleep(0.5)
        return [a.user for a in missing]

    async def settle_acks(self, deadline_s: float = 15.0) -> None:
        """Wait for the acks of messages still pending on live streams."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            live = [a for a in self.agents.values() if a.pending and a.online]
            if not live:
                break
            for a in live:
                try:
                    a.client.xmpp.plugin["xep_0198"].request_ack()  # type: ignore[union-attr]
                except Exception:  # noqa: BLE001
                    pass
            await asyncio.sleep(0.2)
        for a in self.agents.values():
            for rec in a.pending.values():
                rec["status"] = "unknown"
            a.pending.clear()

    async def close(self) -> None:
        for a in self.agents.values():
            await a.close()


# ------------------------------------------------------------------ helpers
async def create_room(c: Client, room: str, nick: str) -> None:
    """Creates a persistent room with the owner's form."""
    muc = c.plugin["xep_0045"]
    await muc.join_muc_wait(JID(room), nick, maxstanzas=0, timeout=IQ_S)
    form = await muc.get_room_config(JID(room), timeout=IQ_S)
    vals = {"muc#roomconfig_persistentroom": True}
    fields = form.get_fields()
    if "muc#roomconfig_enablelogging" in fields:
        vals["muc#roomconfig_enablelogging"] = True
    form.set_values(vals)
    await muc.set_room_config(JID(room), form, timeout=IQ_S)


async def mam_bodies(c: Client, to: str | None = None, timeout: float = 15.0,
                     page: int = 100) -> list[dict]:
    """Every message of an archive (the user's own, or ``to``: a room's),
    paged with RSM; returns [{body, type, from, to, id}] in archive order."""
    out: list[dict] = []
    after: str | None = None
    for _ in range(1000):
        qid = "q" + c.xmpp.new_id()
        rsm = f"<set xmlns='{NS_RSM}'><max>{page}</max>" + \
            (f"<after>{after}</after>" if after else "") + "</set>"
        q = f"<query xmlns='{NS_MAM}' queryid='{qid}'>{rsm}</query>"

        def is_result(st, qid=qid):
            r = st.xml.find(f"{{{NS_MAM}}}result")
            return localname(st.xml.tag) == "message" and r is not None \
                and r.get("queryid") == qid
        try:
            res = await c.iq_set(q, to=to, timeout=timeout)
        finally:
            hits = [st for st in c._inbox if is_result(st)]
            c._inbox[:] = [st for st in c._inbox if not is_result(st)]
        for st in hits:
            r = st.xml.find(f"{{{NS_MAM}}}result")
            m = r.find(f"{{{NS_FORWARD}}}forwarded/{{{NS_CLIENT}}}message")
            if m is None:
                continue
            out.append({"body": m.findtext(f"{{{NS_CLIENT}}}body"), "type": m.get("type"),
                        "from": m.get("from"), "to": m.get("to"), "id": r.get("id")})
        fin = res.xml.find(f"{{{NS_MAM}}}fin")
        last = fin.findtext(f"{{{NS_RSM}}}set/{{{NS_RSM}}}last") if fin is not None else None
        if fin is None or fin.get("complete") == "true" or not hits or not last:
            return out
        after = last
    return out


def xml_of(st) -> str:
    return ET.tostring(st.xml, encoding="unicode")
