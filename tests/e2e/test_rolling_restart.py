"""The documented rolling upgrade, with real node processes: the nodes of a
three-site cluster are restarted one at a time (SIGTERM, start on the same
data dir) while clients on every site keep chatting. Nothing the server
acknowledged is lost, the compliance archive ends up identical everywhere,
and a node that leads the archive's Raft group hands leadership over before
it exits, so the archive never waits for an election timeout.

Acknowledgement: every client enables XEP-0198 stream management and asks
for an ack after each stanza (slixmpp's xep_0198 ``window = 1``). A message
counts as acknowledged when slixmpp raised ``stanza_acked`` for it, i.e. the
server answered an ``<r/>`` with an ``<a h=.../>`` covering it. Messages
sent but never acked (in flight while their sender's node shut down) carry
no promise: they may or may not arrive, and the test only requires that the
ones that do arrive do so like the others (archived once, no foreign copy).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from dataclasses import dataclass

import pytest

import xmpp as xmpp_helpers
from xmpp import (NS_CLIENT, NS_DELAY, AuthFailed, Client, ConnectFailed, IqError, IqTimeout,
                  bare, connect, localname, stanza_error_condition)

SITES = ("a", "b", "c")
CHATTERS = {"a": "alice", "b": "bob", "c": "carol"}
SEND_INTERVAL_S = 0.1
# Traffic before the first restart and after each one.
CHAT_S = 3.0
# A client whose node restarts gets this long to be back online (the node
# has been restarted and is ready by then: this is the XMPP login only).
RECONNECT_S = 30.0
# After the senders stopped: every acknowledged message has arrived.
DELIVERY_S = 60.0
# How long to keep listening for duplicates once everything has arrived.
DUPLICATE_WINDOW_S = 2.0
CONVERGE_S = 60.0
# The survivors agree on a new archive leader this soon after the old
# leader's process exited (SIGTERM handover, not an election timeout).
HANDOVER_S = 2.0
POLL_S = 0.1
# The rolling restart takes longer than conftest's per-test deadline for
# async tests, so that test runs its own event loop (see run_async).
ROLLING_DEADLINE_S = 270.0


def run_async(coro, deadline_s: float) -> None:
    """Run ``coro`` on a fresh event loop with a deadline, closing every XMPP
    client afterwards (what conftest does for ``async def`` tests, with a
    longer deadline)."""
    async def runner():
        try:
            await asyncio.wait_for(coro, deadline_s)
        finally:
            await xmpp_helpers.close_all_clients()
    asyncio.run(runner())


def archive_status(node) -> dict:
    code, body = node.http_get("/archive/status", timeout=3)
    assert code == 200, f"{node}: /archive/status -> HTTP {code}: {body[:300]}"
    return json.loads(body)


async def archive_statuses(cl, sites) -> dict[str, dict]:
    out = {}
    for s in sites:
        try:
            out[s] = await asyncio.to_thread(archive_status, cl[s])
        except (OSError, AssertionError, ValueError) as e:
            out[s] = {"error": repr(e)}
    return out


def status_line(sts: dict[str, dict]) -> str:
    keys = ("raft_id", "state", "term", "leader", "records", "digest", "spooled", "error")
    return "; ".join(f"{s}: " + ", ".join(f"{k}={st[k]}" for k in keys if k in st)
                     for s, st in sts.items())


METRICS_RE = re.compile(r"^(\S+) .*report_metrics: Metrics\{id:(\d+), (\w+), term:(\d+), "
                        r"vote:([^,]*),.*? leader:(\w+)")


def log_excerpt(text: str, limit: int = 60) -> str:
    """The interesting part of a node's debug log: chorus' own INFO/WARN/ERROR
    lines and every change of its Raft state (state, term, leader)."""
    out, last = [], None
    for line in text.splitlines():
        if line.startswith("====="):
            out.append(line)
            continue
        m = METRICS_RE.match(line)
        if m:
            ts, _id, state, term, vote, leader = m.groups()
            if (state, term, leader) != last:
                last = (state, term, leader)
                out.append(f"{ts} raft: {state} term={term} vote={vote} leader={leader}")
            continue
        if re.match(r"^\S+\s+(INFO|WARN|ERROR) chorus(_cluster)?(::\w+)*: ", line) \
                and "listener up" not in line and "self-signed" not in line:
            out.append(line[:300])
    return "\n".join(out[-limit:])


def handover_outcome(node) -> str:
    """What the last run of ``node`` logged about handing the archive's
    leadership over when it shut down (reported, not asserted: the SIGTERM
    test below asserts it)."""
    run = node.log_text().rsplit("===== e2e: start #", 1)[-1]
    if "archive leadership handed over" in run:
        return "handed over"
    if "leadership handover failed" in run:
        return "handover failed (see its log)"
    if "handing archive leadership over before shutdown" in run:
        return "handover started but not completed within its timeout"
    return "no handover logged"


# ---------------------------------------------------------------------------
# the chatting clients


@dataclass
class Received:
    id: str
    frm: str
    body: str
    delayed: bool
    session: int


class Chatter:
    """One user at one site who sends a numbered message to each of
    ``peers`` every SEND_INTERVAL_S and logs in again (new session, same
    resource) whenever its node goes away."""

    def __init__(self, cl, site: str, user: str, peers: list[str],
                 up: dict[str, asyncio.Event]):
        self.cl = cl
        self.site = site
        self.user = user
        self.jid = cl.jid(user)
        self.peers = peers
        self.up = up
        self.resource = f"rolling-{site}"
        self.client: Client | None = None
        self.session = 0
        self.seq = 0
        self.sent: dict[str, str] = {}           # id -> recipient (bare JID)
        self.acked: set[str] = set()
        self.errors: dict[str, str | None] = {}  # id -> condition of an error reply
        self.received: list[Received] = []
        self.disconnects: list[dict] = []
        self.failed_logins: list[str] = []
        self.online = asyncio.Event()

    # -- slixmpp hooks (one set per session) --------------------------------
    def _hooks(self, c: Client, session: int):
        def on_in(stanza):
            xml = stanza.xml
            if localname(xml.tag) != "message":
                return stanza
            if xml.get("type") == "error":
                self.errors[xml.get("id") or "?"] = stanza_error_condition(xml)
                return stanza
            body = xml.findtext(f"{{{NS_CLIENT}}}body")
            if body is not None:
                self.received.append(Received(
                    id=xml.get("id") or "", frm=bare(xml.get("from") or ""), body=body,
                    delayed=xml.find(f"{{{NS_DELAY}}}delay") is not None, session=session))
            return stanza

        def on_acked(stanza):
            if localname(stanza.xml.tag) == "message":
                self.acked.add(stanza.xml.get("id"))

        def on_disconnected(_reason):
            if self.client is c:
                self.online.clear()
                self.disconnects.append({
                    "session": session,
                    "stream_errors": list(c.stream_errors),
                    "while_node_down": not self.up[self.site].is_set(),
                })
        return on_in, on_acked, on_disconnected

    async def login(self) -> None:
        """Log in (once the node is up), enable SM, send initial presence
        (which also brings the offline messages)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECONNECT_S
        while True:
            await asyncio.wait_for(self.up[self.site].wait(), max(0.1, deadline - loop.time()))
            self.session += 1
            c = Client(self.cl[self.site], self.user, resource=self.resource, sm=True)
            sm = c.plugin["xep_0198"]
            sm.window = sm.window_counter = 1  # <r/> after every stanza
            on_in, on_acked, on_disconnected = self._hooks(c, self.session)
            c.xmpp.add_filter("in", on_in)
            c.xmpp.add_event_handler("stanza_acked", on_acked)
            c.xmpp.add_event_handler("disconnected", on_disconnected)
            self.client = c
            try:
                await c.connect(timeout=10)
                await c.wait_sm_enabled()
                c.send_presence()
                await c.sync()
            except (ConnectFailed, AuthFailed, AssertionError, asyncio.TimeoutError,
                    IqError, IqTimeout) as e:
                self.failed_logins.append(f"session {self.session}: {e!r}")
                self.client = None
                await c.close()
                if loop.time() >= deadline:
                    raise AssertionError(
                        f"{self.user} could not log in at {self.site} within {RECONNECT_S}s: "
                        f"{self.failed_logins}") from None
                await asyncio.sleep(0.3)  # retry like a client would
                continue
            self.online.set()
            return

    def is_online(self) -> bool:
        c = self.client
        return c is not None and c.connected and not c.disconnected.is_set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self.is_online():
                await self.login()
                continue
            self.seq += 1
            for to in self.peers:
                mid = f"{self.user}-{self.seq}-{to.split('@')[0]}"
                self.sent[mid] = to
                self.client.send_message(to, f"rolling {mid}", id=mid)
            try:
                await asyncio.wait_for(stop.wait(), SEND_INTERVAL_S)
            except asyncio.TimeoutError:
                pass

    def received_ids(self) -> set[str]:
        return {r.id for r in self.received}

    def stats(self) -> str:
        return (f"{self.user}@{self.site}: sent {len(self.sent)}, acked {len(self.acked)}, "
                f"error replies {len(self.errors)}, received {len(self.received)} "
                f"({len(self.received_ids())} distinct, "
                f"{sum(r.delayed for r in self.received)} with a delay), "
                f"sessions {self.session}, disconnects {self.disconnects}, "
                f"failed logins {self.failed_logins}")


async def wait_event(ev: asyncio.Event, timeout: float, what: str, tasks) -> None:
    """Wait for ``ev``; fail early (with its exception) if a chatter died."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not ev.is_set():
        for t in tasks:
            if t.done():
                t.result()  # raises the chatter's exception
                raise AssertionError(f"a chatter stopped early while waiting for {what}")
        if loop.time() >= deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        try:
            await asyncio.wait_for(ev.wait(), min(0.5, deadline - loop.time()))
        except asyncio.TimeoutError:
            pass


# ---------------------------------------------------------------------------


async def _rolling_restart(cl) -> None:
    up = {s: asyncio.Event() for s in SITES}
    for e in up.values():
        e.set()
    chatters = {
        s: Chatter(cl, s, u, [cl.jid(o) for t, o in CHATTERS.items() if t != s], up)
        for s, u in CHATTERS.items()
    }
    by_jid = {ch.jid: ch for ch in chatters.values()}
    for ch in chatters.values():
        await ch.login()
    await cl.asessions_synced()

    stop = asyncio.Event()
    tasks = [asyncio.create_task(ch.run(stop)) for ch in chatters.values()]
    timeline = []
    try:
        await asyncio.sleep(CHAT_S)  # traffic before the first restart
        for site in SITES:
            ch = chatters[site]
            led = (await archive_statuses(cl, [site]))[site].get("state") == "Leader"
            up[site].clear()
            t0 = time.monotonic()
            code = await asyncio.to_thread(cl.stop, site)
            t_stop = time.monotonic() - t0
            assert code == 0, f"{cl[site].node_id} exited with {code} on SIGTERM"
            if led:
                timeline.append(f"{site} led the archive: {handover_outcome(cl[site])}")
            await cl.astart(site)
            await cl.aready()
            up[site].set()
            await wait_event(ch.online, RECONNECT_S, f"{ch.user} back online at {site}", tasks)
            timeline.append(f"{site}: stop {t_stop:.1f}s, back after "
                            f"{time.monotonic() - t0:.1f}s")
            await asyncio.sleep(CHAT_S)  # chat across the restarted node
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r

    # Everyone is (still or again) online with initial presence sent, so
    # messages kept offline have been or are being delivered.
    for ch in chatters.values():
        if not ch.is_online():
            await ch.login()

    acked = {mid: (ch, ch.sent[mid]) for ch in chatters.values() for mid in ch.acked}

    def missing() -> list[str]:
        got = {j: ch.received_ids() for j, ch in by_jid.items()}
        return sorted(mid for mid, (_, to) in acked.items() if mid not in got[to])

    def report() -> str:
        return "\n".join(["rolling restart: " + "; ".join(timeline),
                          *(ch.stats() for ch in chatters.values())])

    deadline = time.monotonic() + DELIVERY_S
    while (lost := missing()):
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{len(lost)} of {len(acked)} acknowledged messages never arrived "
                f"(first: {lost[:20]})\n{report()}")
        await asyncio.sleep(0.2)  # delivery from outboxes/offline storage: no single event
    await asyncio.sleep(DUPLICATE_WINDOW_S)  # late duplicates, if any
    for ch in chatters.values():
        await ch.client.sync()

    # Every copy that arrived is a message its sender sent to that recipient,
    # unchanged; a duplicate is a redelivery (same id) in a later session.
    all_sent = {mid: (ch, to) for ch in chatters.values() for mid, to in ch.sent.items()}
    duplicates = {}
    for ch in chatters.values():
        for r in ch.received:
            assert r.id in all_sent, f"{ch.user} got a message with an unknown id: {r}"
            sender, to = all_sent[r.id]
            assert (r.frm, to, r.body) == (sender.jid, ch.jid, f"rolling {r.id}"), \
                f"{ch.user} got a mangled or misrouted copy of {r.id}: {r}"
        counts = Counter(r.id for r in ch.received)
        for mid, n in counts.items():
            if n > 1:
                sessions = [r.session for r in ch.received if r.id == mid]
                duplicates[mid] = sessions
                assert len(set(sessions)) == len(sessions), (
                    f"{ch.user} got {mid} {n} times in one session (sessions {sessions}): "
                    f"not an SM redelivery\n{report()}")
    print(report())
    print(f"duplicates (id -> sessions it arrived in): {duplicates or 'none'}")

    errors = {mid: cond for ch in chatters.values() for mid, cond in ch.errors.items()}
    assert not errors, f"error replies to sent messages: {errors}\n{report()}"
    for ch in chatters.values():
        for d in ch.disconnects:
            assert d["stream_errors"] == ["system-shutdown"] and d["while_node_down"], (
                f"{ch.user} was disconnected other than by its node's restart: {d}\n"
                f"{report()}")
        assert len(ch.disconnects) == 1, f"{ch.user}: {ch.disconnects}"
        assert ch.acked, f"{ch.user}: nothing acknowledged\n{report()}"

    # The archive holds each message that was accepted once (all have a
    # body): the acknowledged ones plus those accepted just before a
    # shutdown whose ack never reached the sender, which were delivered
    # like the others. Polls until late deliveries are in.
    deadline = time.monotonic() + CONVERGE_S
    while True:
        delivered = set().union(*(ch.received_ids() for ch in chatters.values()))
        sts = await archive_statuses(cl, SITES)
        digests = {st.get("digest") for st in sts.values()}
        if len(digests) == 1 and all(st.get("records") == len(delivered)
                                     and st.get("spooled") == 0 for st in sts.values()):
            break
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"archives did not converge on the {len(delivered)} delivered messages "
                f"({len(acked)} acknowledged): {status_line(sts)}\n{report()}")
        await asyncio.sleep(0.2)  # polling replicated state: there is no event for it
    assert set(acked) <= delivered
    print(f"archive: {len(delivered)} records on every site ({len(acked)} acknowledged, "
          f"{len(delivered) - len(acked)} accepted without an ack reaching the sender), "
          f"{status_line(sts)}")


@pytest.mark.timeout(300)
def test_rolling_restart_loses_no_message(cluster3):
    """alice at a, bob at b and carol at c each send a numbered message to
    the other two every 100 ms while a, b and c are restarted one after the
    other; every acknowledged message reaches its recipient (offline ones
    after the recipient's new login), duplicates only as SM redeliveries in
    a later session, and the three archives converge on one digest."""
    run_async(_rolling_restart(cluster3), ROLLING_DEADLINE_S)


# ---------------------------------------------------------------------------


async def agreed_leader(cl, sites, deadline_s: float, exclude: int | None = None):
    """Poll ``sites`` until they all name the same leader, which is one of
    them in state Leader (and is not ``exclude``); returns (site, statuses)."""
    deadline = time.monotonic() + deadline_s
    while True:
        sts = await archive_statuses(cl, sites)
        leaders = {st.get("leader") for st in sts.values()}
        by_id = {st.get("raft_id"): s for s, st in sts.items()}
        if len(leaders) == 1:
            (lid,) = leaders
            if lid is not None and lid != exclude and lid in by_id \
                    and sts[by_id[lid]].get("state") == "Leader":
                return by_id[lid], sts
        if time.monotonic() >= deadline:
            raise AssertionError(f"{sites} do not agree on a leader within {deadline_s}s: "
                                 f"{status_line(sts)}")
        await asyncio.sleep(POLL_S)  # polling raft state: there is no event for it


@pytest.mark.timeout(180)
async def test_sigterm_of_the_archive_leader_hands_leadership_over(cluster3):
    """SIGTERM to the archive's Raft leader: before exiting it asks the most
    up-to-date voter to take over and waits for it (its log says so), so the
    other two agree on a new leader before it exits (within a second of the
    exit, by polling); the old leader comes back as a follower and
    catches up with a message archived while it was away."""
    cl = cluster3
    leader, sts = await agreed_leader(cl, SITES, CONVERGE_S)
    old_id, old_term = sts[leader]["raft_id"], sts[leader]["term"]
    others = [s for s in SITES if s != leader]

    t_sigterm = time.monotonic()
    code = await asyncio.to_thread(cl.stop, leader)
    t_stopped = time.monotonic()
    assert code == 0, f"the leader {cl[leader].node_id} exited with {code} on SIGTERM"
    new, sts = await agreed_leader(cl, others, HANDOVER_S, exclude=old_id)
    took = time.monotonic() - t_stopped
    assert new in others and took <= HANDOVER_S, (new, took)

    log = cl[leader].log_text()
    excerpt = "\n".join(f"--- {cl[s].node_id} (site {s}) ---\n{log_excerpt(cl[s].log_text())}"
                        for s in SITES)
    why = (f"{cl[leader].node_id} (raft id {old_id}) led the archive; SIGTERM to exit took "
           f"{t_stopped - t_sigterm:.1f}s; {cl[new].node_id} leads {took:.1f}s after that\n"
           f"{excerpt}")
    for text, wanted in (("handing archive leadership over before shutdown", True),
                         ("archive leadership handed over", True),
                         ("leadership handover failed", False)):
        assert (text in log) == wanted, (
            f"{cl[leader].node_id}'s log {'lacks' if wanted else 'has'} {text!r}\n{why}")
    # Handed over means the others already agreed on a new leader before the
    # old one exited: no election timeout is waited out after the exit.
    assert sts[new]["term"] > old_term, (
        f"the new leader's term {sts[new]['term']} is not past {old_term}\n{why}")
    assert took <= 1.0, f"a leader was agreed only {took:.1f}s after the old one exited\n{why}"

    # The two remaining voters commit without the old leader.
    alice = await connect(cl[others[0]], "alice", resource="h", presence=True)
    bob = await connect(cl[others[1]], "bob", resource="h", presence=True)
    await cl.asessions_synced()
    alice.send_message(bob.jid, "while the old leader is down")
    m = await bob.next_message(10, frm=alice.jid)
    assert m["body"] == "while the old leader is down"

    # The old leader comes back as a follower and catches up.
    await cl.astart(leader)
    await cl.aready()
    deadline = time.monotonic() + CONVERGE_S
    while True:
        sts = await archive_statuses(cl, SITES)
        leaders = {st.get("leader") for st in sts.values()}
        by_id = {st.get("raft_id"): st for st in sts.values()}
        if (sts[leader].get("state") == "Follower"
                and len(leaders) == 1 and (lid := next(iter(leaders))) in by_id
                and by_id[lid].get("state") == "Leader"
                and all(st.get("records") == 1 and st.get("spooled") == 0
                        for st in sts.values())
                and len({st.get("digest") for st in sts.values()}) == 1):
            break
        assert time.monotonic() < deadline, (
            f"{cl[leader].node_id} did not rejoin as a follower with the archive caught "
            f"up: {status_line(sts)}")
        await asyncio.sleep(POLL_S)  # polling raft state: there is no event for it
