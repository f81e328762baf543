"""XEP-0313 message archive management (urn:xmpp:mam:2) against the real
server, driven by slixmpp's own xep_0313 / xep_0059 / xep_0004 plugins where
they can express the query, and by hand-built IQs where they cannot (the
XEP-0431 full-text field, after-id together with before-id, flip-page,
archiving preferences).

Covered: disco features and the query form; XEP-0359 stanza-ids on delivered
copies equal to the archive ids; RSM paging both ways with 'complete'; the
with / start / end / ids / after-id / before-id / full-text filters; page
size limits; privacy between users; archiving preferences; and, on a real
three-site cluster, a site cut off from the others answering from its spool
and converging after the heal, and strict mode refusing messages while the
archive has no quorum.
"""

from __future__ import annotations

import asyncio
import json
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from xml.sax.saxutils import escape

import pytest
from slixmpp.exceptions import IqError

from xmpp import NS_CLIENT, NS_DELAY, NS_FORWARD, NS_STANZAS, connect, localname

NS_MAM = "urn:xmpp:mam:2"
NS_MAM_EXT = "urn:xmpp:mam:2#extended"
NS_SID = "urn:xmpp:sid:0"
NS_FULLTEXT = "urn:xmpp:fulltext:0"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_DATA = "jabber:x:data"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
FULLTEXT_VAR = "{urn:xmpp:fulltext:0}fulltext"

MAM_PLUGINS = ("xep_0004", "xep_0059", "xep_0297", "xep_0313")
SLOW = pytest.mark.timeout(180)
CONVERGE_S = 30.0


# --------------------------------------------------------------- helpers


async def mam_client(node, user: str, resource: str, presence: bool = True):
    return await connect(node, user, resource=resource, presence=presence,
                         plugins=MAM_PLUGINS)


def now_ms() -> int:
    return int(time.time() * 1000)


def xep82(ms: int, offset_min: int = 0) -> str:
    """An XEP-0082 DateTime with milliseconds, in UTC or at an offset."""
    tz = timezone(timedelta(minutes=offset_min))
    s = datetime.fromtimestamp(ms / 1000, tz=tz).isoformat(timespec="milliseconds")
    return s.replace("+00:00", "Z")


def parse_stamp(s: str) -> int:
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000 + 0.5)


async def clock_past(c, ms: int) -> None:
    """Round trips to the server until the wall clock (shared with the
    server: same machine) is past ``ms``, so later server stamps are > ms."""
    while now_ms() <= ms:
        await c.sync()


def sid_of(msg, owner: str) -> str:
    """The XEP-0359 stanza-id the archive of ``owner`` put on a delivered
    message (exactly one must be there)."""
    sids = msg.xml.findall(f"{{{NS_SID}}}stanza-id")
    mine = [s for s in sids if s.get("by") == owner]
    assert len(mine) == 1, (f"want one stanza-id by {owner}, got "
                            f"{ET.tostring(msg.xml, encoding='unicode')}")
    assert mine[0].get("id"), ET.tostring(msg.xml, encoding="unicode")
    return mine[0].get("id")


async def exchange(sender, receiver, to: str, body: str) -> str:
    """sender -> to; waits until ``receiver`` has it; returns its stanza-id."""
    sender.send_message(to, body)
    m = await receiver.next_message(10, frm=sender.jid, body=body)
    return sid_of(m, receiver.bare)


def take_inbox(c, pred) -> list:
    """Removes and returns the stanzas of c's inbox matching pred (MAM
    results also land in the test client's inbox; this keeps it clean)."""
    hit = [st for st in c._inbox if pred(st)]
    c._inbox[:] = [st for st in c._inbox if not pred(st)]
    return hit


def results_of(c, queryid: str) -> list[ET.Element]:
    def is_result(st):
        r = st.xml.find(f"{{{NS_MAM}}}result")
        return (localname(st.xml.tag) == "message" and r is not None
                and r.get("queryid") == queryid)
    return [st.xml for st in take_inbox(c, is_result)]


def iq_error(e: IqError) -> tuple[str, str]:
    return e.iq["error"]["type"], e.iq["error"]["condition"]


@dataclass
class Hit:
    id: str
    stamp_ms: int
    msg: ET.Element

    @property
    def body(self) -> str | None:
        return self.msg.findtext(f"{{{NS_CLIENT}}}body")

    @property
    def frm(self) -> str:
        return self.msg.get("from", "")

    @property
    def to(self) -> str:
        return self.msg.get("to", "")


@dataclass
class Page:
    hits: list[Hit]
    complete: bool
    first: str | None
    last: str | None
    fin: ET.Element

    @property
    def ids(self) -> list[str]:
        return [h.id for h in self.hits]

    @property
    def bodies(self) -> list[str | None]:
        return [h.body for h in self.hits]


def make_page(c, queryid: str, results: list[ET.Element], iq_xml: ET.Element) -> Page:
    """Checks the shape of the result messages and of <fin/>."""
    hits = []
    for m in results:
        text = ET.tostring(m, encoding="unicode")
        assert m.get("from") in (None, "", c.bare), f"result not from own archive: {text}"
        assert m.get("to") in (None, "", c.jid), f"result not to the querying resource: {text}"
        r = m.find(f"{{{NS_MAM}}}result")
        assert r is not None and r.get("queryid") == queryid and r.get("id"), text
        fwd = r.find(f"{{{NS_FORWARD}}}forwarded")
        assert fwd is not None, f"no <forwarded/>: {text}"
        delay = fwd.find(f"{{{NS_DELAY}}}delay")
        assert delay is not None and delay.get("stamp"), f"no <delay stamp/>: {text}"
        inner = fwd.find(f"{{{NS_CLIENT}}}message")
        assert inner is not None, f"no forwarded <message/>: {text}"
        hits.append(Hit(r.get("id"), parse_stamp(delay.get("stamp")), inner))
    fin = iq_xml.find(f"{{{NS_MAM}}}fin")
    assert fin is not None, f"no <fin/>: {ET.tostring(iq_xml, encoding='unicode')}"
    rsm = fin.find(f"{{{NS_RSM}}}set")
    assert rsm is not None, f"no RSM <set/> in <fin/>: {ET.tostring(fin, encoding='unicode')}"
    first, last = rsm.findtext(f"{{{NS_RSM}}}first"), rsm.findtext(f"{{{NS_RSM}}}last")
    complete = fin.get("complete") in ("true", "1")
    return Page(hits, complete, first, last, fin)


async def mam_query(c, *, to: str | None = None, with_jid: str | None = None,
                    start: str | None = None, end: str | None = None,
                    ids: list[str] | None = None, after_id: str | None = None,
                    before_id: str | None = None, fulltext: str | None = None,
                    fields: dict[str, str] | None = None, max: int | None = None,
                    after: str | None = None, before: str | bool | None = None,
                    timeout: float = 10) -> Page:
    """One MAM query built with slixmpp's xep_0313 stanza interfaces (form
    fields through xep_0004, RSM through xep_0059); raises IqError."""
    x = c.xmpp
    iq = x.make_iq_set(ito=to)
    queryid = "q" + x.new_id()
    q = iq["mam"]
    q["queryid"] = queryid
    if with_jid is not None:
        q["with"] = with_jid
    if start is not None:
        q["start"] = start
    if end is not None:
        q["end"] = end
    if ids is not None:
        q["ids"] = list(ids)
    if after_id is not None:
        q["after_id"] = after_id
    if before_id is not None:
        q["before_id"] = before_id
    if fulltext is not None:
        q.set_custom_field(FULLTEXT_VAR, fulltext)
    for var, value in (fields or {}).items():
        q.set_custom_field(var, value)
    if max is not None:
        q["rsm"]["max"] = str(max)
    if after is not None:
        q["rsm"]["after"] = after
    if before is not None:
        q["rsm"]["before"] = before  # True: an empty <before/> (last page)
    try:
        res = await iq.send(timeout=timeout)
    finally:
        results = results_of(c, queryid)
    return make_page(c, queryid, results, res.xml)


async def raw_mam_query(c, fields: list[tuple[str, list[str]]], rsm: str = "",
                        extra: str = "", to: str | None = None,
                        timeout: float = 10) -> Page:
    """A MAM query written by hand: a jabber:x:data submit form with the
    given (var, values) fields, an optional RSM <set/> body and extra
    children of <query/>."""
    queryid = "raw" + c.xmpp.new_id()
    f = "".join(
        f"<field var='{escape(var)}'>" + "".join(f"<value>{escape(v)}</value>" for v in values)
        + "</field>" for var, values in fields)
    form = (f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{NS_MAM}</value></field>{f}</x>")
    rsm_el = f"<set xmlns='{NS_RSM}'>{rsm}</set>" if rsm else ""
    payload = f"<query xmlns='{NS_MAM}' queryid='{queryid}'>{form}{rsm_el}{extra}</query>"
    try:
        res = await c.iq_set(payload, to=to, timeout=timeout)
    finally:
        results = results_of(c, queryid)
    return make_page(c, queryid, results, res.xml)


async def plugin_retrieve(c, **kw) -> Page:
    """slixmpp's xep_0313 retrieve() (results gathered by its collector)."""
    res = await c.plugin["xep_0313"].retrieve(**kw)
    queryid = res["id"]  # retrieve() uses the IQ id as queryid
    results_of(c, queryid)
    return make_page(c, queryid, [m.xml for m in res["mam"]["results"]], res.xml)


async def plugin_pages(c, **kw) -> list[Page]:
    """Every page of slixmpp's RSM iterator over a MAM query (retrieve with
    iterator=True: after=<last> forward, before=<first> with reverse)."""
    pages = []
    async for res in c.plugin["xep_0313"].retrieve(iterator=True, **kw):
        queryid = res["id"]
        results_of(c, queryid)
        pages.append(make_page(c, queryid, [m.xml for m in res["mam"]["results"]], res.xml))
        assert len(pages) < 20, "paging does not end"
    return pages


async def expect_iq_error(coro, etype: str | None, condition: str) -> None:
    try:
        page = await coro
    except IqError as e:
        got = iq_error(e)
        assert got[1] == condition, (f"want error {condition}, got {got}: "
                                     f"{ET.tostring(e.iq.xml, encoding='unicode')}")
        if etype is not None:
            assert got[0] == etype, f"want error type {etype}, got {got}"
        return
    raise AssertionError(f"want error {condition}, got a result with ids {page.ids}")


async def prefs_get(c) -> ET.Element:
    res = await c.iq_get(f"<prefs xmlns='{NS_MAM}'/>")
    p = res.xml.find(f"{{{NS_MAM}}}prefs")
    assert p is not None, ET.tostring(res.xml, encoding="unicode")
    return p


async def prefs_set(c, default: str, always=(), never=()) -> ET.Element:
    def jids(name, js):
        return f"<{name}>" + "".join(f"<jid>{escape(j)}</jid>" for j in js) + f"</{name}>"
    res = await c.iq_set(f"<prefs xmlns='{NS_MAM}' default='{default}'>"
                         f"{jids('always', always)}{jids('never', never)}</prefs>")
    p = res.xml.find(f"{{{NS_MAM}}}prefs")
    assert p is not None, ET.tostring(res.xml, encoding="unicode")
    return p


def prefs_lists(p: ET.Element) -> tuple[str, list[str], list[str]]:
    def jids(name):
        el = p.find(f"{{{NS_MAM}}}{name}")
        assert el is not None, f"no <{name}/> in {ET.tostring(p, encoding='unicode')}"
        return [j.text for j in el.findall(f"{{{NS_MAM}}}jid")]
    return p.get("default"), jids("always"), jids("never")


def archive_status(node) -> dict:
    code, body = node.http_get("/archive/status", timeout=3)
    assert code == 200, f"{node}: /archive/status -> HTTP {code}: {body[:300]}"
    return json.loads(body)


async def archives_converge(nodes: dict, records: int | None = None,
                            deadline_s: float = CONVERGE_S) -> dict[str, dict]:
    """Polls /archive/status until every node holds the same records (the
    given count, if any) with one digest and an empty spool."""
    deadline = time.monotonic() + deadline_s
    while True:
        sts = {}
        for name, n in nodes.items():
            try:
                sts[name] = await asyncio.to_thread(archive_status, n)
            except (OSError, AssertionError) as e:
                sts[name] = {"error": str(e)}
        counts = {st.get("records") for st in sts.values()}
        digests = {st.get("digest") for st in sts.values()}
        if (all(st.get("spooled") == 0 for st in sts.values()) and len(digests) == 1
                and len(counts) == 1 and (records is None or counts == {records})):
            return sts
        if time.monotonic() >= deadline:
            raise AssertionError(f"archives did not converge (want {records} records): {sts}")
        await asyncio.sleep(0.2)  # polling replicated state: there is no event for it


async def poll_mam(what: str, query, done, deadline_s: float = CONVERGE_S) -> Page:
    """Repeats ``query()`` until ``done(page)`` (replication has no event)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            page = await query()
        except IqError as e:
            # An id this site has not received yet is unknown here
            # (item-not-found) until replication brings it.
            if "item-not-found" not in str(e) or time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.2)
            continue
        if done(page):
            return page
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached within {deadline_s}s; last page: "
                                 f"ids={page.ids} bodies={page.bodies}")
        await asyncio.sleep(0.2)  # polling replicated state


async def mam_all(c, **kw) -> list[Hit]:
    """Every result of a query, paging forward 100 at a time."""
    hits: list[Hit] = []
    after = None
    while True:
        p = await mam_query(c, max=100, after=after, **kw)
        hits.extend(p.hits)
        if p.complete:
            return hits
        assert p.hits, "an empty page that is not complete"
        after = p.last


# ------------------------------------------------------ discovery and form


async def test_disco_advertises_mam_and_the_form_lists_every_field(node):
    alice = await mam_client(node, "alice", "disco")
    for target in (node.domain, alice.bare):
        info = await alice.plugin["xep_0030"].get_info(jid=target, local=False, timeout=5)
        features = set(info["disco_info"]["features"])
        for f in (NS_MAM, NS_MAM_EXT, NS_SID, NS_FULLTEXT):
            assert f in features, f"{f} not advertised by {target}; got {sorted(features)}"

    form = await alice.plugin["xep_0313"].get_fields(timeout=5)
    fields = form.get_fields()
    want = {"FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids", FULLTEXT_VAR}
    assert want <= set(fields), f"form fields {sorted(fields)}, want at least {sorted(want)}"
    assert fields["FORM_TYPE"]["type"] == "hidden"
    form_type = form.xml.find(f"{{{NS_DATA}}}field[@var='FORM_TYPE']/{{{NS_DATA}}}value")
    assert form_type is not None and form_type.text == NS_MAM, fields["FORM_TYPE"]
    # XEP-0313 4.1.5: with/start/end MUST have these types.
    assert fields["with"]["type"] == "jid-single", fields["with"]
    assert fields["start"]["type"] == "text-single", fields["start"]
    assert fields["end"]["type"] == "text-single", fields["end"]
    # "Servers MUST NOT mark any fields in the form as being required."
    required = [v for v, f in fields.items() if f["required"]]
    assert not required, f"fields marked required: {required}"

    # The same form answers on the own bare JID.
    res = await alice.iq_get(f"<query xmlns='{NS_MAM}'/>", to=alice.bare)
    x = res.xml.find(f"{{{NS_MAM}}}query/{{{NS_DATA}}}x")
    assert x is not None, ET.tostring(res.xml, encoding="unicode")
    assert want <= {f.get("var") for f in x.findall(f"{{{NS_DATA}}}field")}


async def test_ids_field_is_an_open_list_multi(node):
    """XEP-0313 4.1.5: 'ids' is list-multi and MUST carry an XEP-0122
    <validate/> with <open/> (the list of ids is not enumerated)."""
    alice = await mam_client(node, "alice", "form")
    res = await alice.iq_get(f"<query xmlns='{NS_MAM}'/>")
    field = res.xml.find(f"{{{NS_MAM}}}query/{{{NS_DATA}}}x/{{{NS_DATA}}}field[@var='ids']")
    assert field is not None, ET.tostring(res.xml, encoding="unicode")
    text = ET.tostring(field, encoding="unicode")
    assert field.get("type") == "list-multi", f"ids field: {text}"
    validate = field.find("{http://jabber.org/protocol/xdata-validate}validate")
    assert validate is not None and validate.find(
        "{http://jabber.org/protocol/xdata-validate}open") is not None, f"ids field: {text}"
    assert field.find(f"{{{NS_DATA}}}option") is None, f"ids field lists options: {text}"


# ------------------------------------------------------------------ paging


async def test_paging_forward_and_backward(node):
    alice = await mam_client(node, "alice", "pc")
    bob = await mam_client(node, "bob", "pc")
    ids = []
    for i in range(25):
        if i % 2 == 0:
            ids.append(await exchange(alice, bob, bob.jid, f"page msg {i}"))
        else:
            ids.append(await exchange(bob, alice, alice.jid, f"page msg {i}"))
    assert len(set(ids)) == 25, f"stanza-ids not unique: {ids}"
    bodies = [f"page msg {i}" for i in range(25)]

    # Forward, with slixmpp's RSM iterator (after=<last of previous page>).
    pages = await plugin_pages(alice, with_jid=bob.bare, rsm={"max": 10})
    assert [p.ids for p in pages] == [ids[0:10], ids[10:20], ids[20:25]], \
        [p.ids for p in pages]
    assert [p.bodies for p in pages] == [bodies[0:10], bodies[10:20], bodies[20:25]]
    assert [p.complete for p in pages] == [False, False, True], \
        [ET.tostring(p.fin, encoding="unicode") for p in pages]
    for p in pages:
        assert (p.first, p.last) == (p.ids[0], p.ids[-1]), ET.tostring(p.fin, encoding="unicode")
    stamps = [h.stamp_ms for p in pages for h in p.hits]
    assert stamps == sorted(stamps), f"results not in chronological order: {stamps}"

    # Backward, from the last page (empty <before/>) to the first.
    pages = await plugin_pages(alice, with_jid=bob.bare, rsm={"max": 10}, reverse=True)
    assert [p.ids for p in pages] == [ids[15:25], ids[5:15], ids[0:5]], [p.ids for p in pages]
    assert [p.complete for p in pages] == [False, False, True], \
        [ET.tostring(p.fin, encoding="unicode") for p in pages]
    for p in pages:
        assert (p.first, p.last) == (p.ids[0], p.ids[-1]), ET.tostring(p.fin, encoding="unicode")

    # Explicit RSM ids, and the same results through retrieve().
    p = await plugin_retrieve(alice, with_jid=bob.bare, rsm={"max": 10, "after": ids[9]})
    assert p.ids == ids[10:20] and not p.complete
    p = await mam_query(alice, max=10, before=ids[20])
    assert p.ids == ids[10:20] and not p.complete, "earlier results remain"
    p = await mam_query(alice, max=10, before=ids[10])
    assert p.ids == ids[0:10] and p.complete, "backward page reaching the oldest result"
    p = await mam_query(alice, max=10, after=ids[24])
    assert p.ids == [] and p.complete and p.first is None and p.last is None
    p = await mam_query(alice, max=5, before=True)
    assert p.ids == ids[20:25] and not p.complete
    p = await mam_query(alice, max=0)
    assert p.ids == [] and not p.complete, "max=0 with results: page limited, not complete"
    # bob sees the same conversation with the same ids.
    p = await mam_query(bob, with_jid=alice.bare, max=100)
    assert p.ids == ids and p.complete

    # An id the archive does not hold cannot be paged from.
    await expect_iq_error(mam_query(alice, max=10, after="no-such-id"), "cancel", "item-not-found")
    await expect_iq_error(mam_query(alice, max=10, before="no-such-id"), "cancel",
                          "item-not-found")
    # RSM <index/> is not supported.
    await expect_iq_error(raw_mam_query(alice, [], rsm="<max>5</max><index>3</index>"),
                          None, "feature-not-implemented")


async def test_page_size_default_50_and_capped_at_100(node):
    alice = await mam_client(node, "alice", "bulk")
    bob = await mam_client(node, "bob", "bulk")
    total = 105
    for i in range(total):
        alice.send_message(bob.jid, f"bulk {i}")
    ids = []
    for i in range(total):
        ids.append(sid_of(await bob.next_message(10, frm=alice.jid, body=f"bulk {i}"), bob.bare))

    # Page sizes on the committed archive (the order of records still in the
    # spool is test_spooled_results_keep_the_order_messages_were_accepted's).
    await archives_converge({"node": node}, total)

    def diff(got, want):
        return (f"{len(got)} results; missing {[i for i in want if i not in got]}, "
                f"unexpected {[i for i in got if i not in want]}, got {got}")

    p = await mam_query(alice)
    assert p.ids == ids[:50] and not p.complete, f"default page: {diff(p.ids, ids[:50])}"
    p = await mam_query(alice, before=True)
    assert p.ids == ids[55:] and not p.complete, f"default last page: {diff(p.ids, ids[55:])}"
    p = await mam_query(alice, max=500)
    assert p.ids == ids[:100] and not p.complete, f"max=500: {diff(p.ids, ids[:100])}"
    p = await mam_query(alice, max=500, after=p.last)
    assert p.ids == ids[100:] and p.complete, f"after the 100th: {diff(p.ids, ids[100:])}"


@pytest.mark.chorus(config={"archive": {"mam_page_max": 7}})
async def test_page_size_limited_by_mam_page_max(node):
    alice = await mam_client(node, "alice", "small")
    bob = await mam_client(node, "bob", "small")
    ids = [await exchange(alice, bob, bob.jid, f"small {i}") for i in range(10)]
    p = await mam_query(alice)
    assert p.ids == ids[:7] and not p.complete
    p = await mam_query(alice, max=20)
    assert p.ids == ids[:7] and not p.complete
    p = await mam_query(alice, max=20, after=p.last)
    assert p.ids == ids[7:] and p.complete


# ----------------------------------------------------------------- filters


async def test_filters_with_time_ids_and_fulltext(node):
    alice = await mam_client(node, "alice", "desk")
    phone = await mam_client(node, "bob", "phone")
    laptop = await mam_client(node, "bob", "laptop")
    carol = await mam_client(node, "carol", "home")
    bob = node.jid("bob")
    sid = {}

    async def send(label, sender, receiver, to, body):
        sid[label] = await exchange(sender, receiver, to, body)

    await send("A1", alice, phone, bob, "A1 the quick brown fox")
    await send("A2", phone, alice, alice.jid, "A2 lazy dog")
    t1 = now_ms()
    await clock_past(alice, t1)
    await send("B1", laptop, alice, alice.jid, "B1 Quick dog runs")
    await send("B2", alice, phone, phone.jid, "B2 hello phone")
    await send("B3", carol, alice, alice.jid, "B3 quick carol note")
    t2 = now_ms()
    await clock_past(alice, t2)
    await send("C1", alice, carol, carol.jid, "C1 FOX and hound")
    await send("C2", laptop, alice, alice.jid, "C2 goodbye")
    t3 = now_ms()
    order = ["A1", "A2", "B1", "B2", "B3", "C1", "C2"]

    def want(*labels):
        return [sid[x] for x in labels]

    everything = await mam_query(alice)
    assert everything.ids == want(*order) and everything.complete
    assert everything.bodies == [f"{x} " + b for x, b in zip(order, [
        "the quick brown fox", "lazy dog", "Quick dog runs", "hello phone",
        "quick carol note", "FOX and hound", "goodbye"], strict=True)]
    # The forwarded copies are the messages as sent, with sender and recipient.
    by_label = dict(zip(order, everything.hits, strict=True))
    assert by_label["A2"].frm == phone.jid and by_label["B2"].to == phone.jid
    assert by_label["B3"].frm == carol.jid and by_label["C1"].to == carol.jid
    # <delay stamp/> is when the server received the message.
    stamps = {x: h.stamp_ms for x, h in by_label.items()}
    assert all(stamps[x] <= t1 for x in ("A1", "A2")), (stamps, t1)
    assert all(t1 < stamps[x] <= t2 for x in ("B1", "B2", "B3")), (stamps, t1, t2)
    assert all(t2 < stamps[x] <= t3 for x in ("C1", "C2")), (stamps, t2, t3)

    # with: a bare JID matches every resource, a full JID only that one.
    p = await plugin_retrieve(alice, with_jid=bob)
    assert p.ids == want("A1", "A2", "B1", "B2", "C2"), p.bodies
    p = await mam_query(alice, with_jid=phone.jid)
    assert p.ids == want("A2", "B2"), p.bodies
    p = await mam_query(alice, with_jid=laptop.jid)
    assert p.ids == want("B1", "C2"), p.bodies
    p = await mam_query(alice, with_jid=node.jid("carol"))
    assert p.ids == want("B3", "C1"), p.bodies
    p = await mam_query(alice, with_jid=node.jid("carol", "elsewhere"))
    assert p.ids == [] and p.complete, p.bodies

    # start / end (inclusive), also written with a UTC offset.
    start, end = xep82(t1 + 1), xep82(t2)
    p = await plugin_retrieve(alice, start=datetime.fromtimestamp((t1 + 1) / 1000, timezone.utc),
                              end=datetime.fromtimestamp(t2 / 1000, timezone.utc))
    assert p.ids == want("B1", "B2", "B3"), p.bodies
    p = await mam_query(alice, start=xep82(t1 + 1, offset_min=120), end=xep82(t2, offset_min=-330))
    assert p.ids == want("B1", "B2", "B3"), p.bodies
    p = await mam_query(alice, start=start)
    assert p.ids == want("B1", "B2", "B3", "C1", "C2"), p.bodies
    p = await mam_query(alice, end=end)
    assert p.ids == want("A1", "A2", "B1", "B2", "B3"), p.bodies
    p = await mam_query(alice, start=xep82(stamps["B2"]), end=xep82(stamps["B2"]))
    assert sid["B2"] in p.ids, "start and end are inclusive"
    p = await mam_query(alice, with_jid=bob, start=start, end=end)
    assert p.ids == want("B1", "B2"), p.bodies
    p = await mam_query(alice, start=xep82(t3 + 60_000))
    assert p.ids == [] and p.complete

    # ids: exactly those messages, in archive order whatever the given order.
    p = await mam_query(alice, ids=[sid["C1"], sid["A2"]])
    assert p.ids == want("A2", "C1"), p.bodies
    p = await mam_query(alice, ids=[sid["B3"]], with_jid=bob)
    assert p.ids == [], "ids combine with the other filters"

    # after-id / before-id (filters, XEP-0313 #extended).
    p = await mam_query(alice, after_id=sid["A2"])
    assert p.ids == want("B1", "B2", "B3", "C1", "C2"), p.bodies
    p = await mam_query(alice, before_id=sid["B3"])
    assert p.ids == want("A1", "A2", "B1", "B2"), p.bodies
    p = await mam_query(alice, after_id=sid["A2"], max=2)
    assert p.ids == want("B1", "B2") and not p.complete

    # XEP-0431 full text, in a hand-built form: every word, any case.
    async def text(words, *extra):
        return await raw_mam_query(alice, [(FULLTEXT_VAR, [words]), *extra])

    assert (await text("fox")).ids == want("A1", "C1")
    assert (await text("QUICK")).ids == want("A1", "B1", "B3")
    assert (await text("quick dog")).ids == want("B1")
    assert (await text("Dog")).ids == want("A2", "B1")
    p = await text("cat")
    assert p.ids == [] and p.complete
    assert (await text("quick elephant")).ids == [], "every word must appear"
    assert (await text("quick", ("with", [bob]))).ids == want("A1", "B1")
    assert (await text("quick", ("with", [node.jid("carol")]))).ids == want("B3")
    assert (await text("fox", ("start", [start]))).ids == want("C1")
    # The same field through slixmpp's form interface.
    p = await mam_query(alice, fulltext="hello", with_jid=phone.jid)
    assert p.ids == want("B2"), p.bodies


async def test_after_id_and_before_id_together_select_a_range(node):
    """XEP-0313 4.1.1.3, 'Querying the archive for all messages between two
    known messages': after-id and before-id in one form."""
    alice = await mam_client(node, "alice", "range")
    bob = await mam_client(node, "bob", "range")
    ids = [await exchange(alice, bob, bob.jid, f"range {i}") for i in range(6)]
    p = await raw_mam_query(alice, [("after-id", [ids[1]]), ("before-id", [ids[4]])])
    assert p.ids == ids[2:4] and p.complete, p.bodies


async def test_after_id_filter_combines_with_rsm_paging(node):
    """after-id / before-id are filters, RSM <after>/<before> page inside
    what they select (XEP-0313 4.1.1.3 and 7): the last page of the
    messages after a known id, and the first page before one."""
    alice = await mam_client(node, "alice", "mix")
    bob = await mam_client(node, "bob", "mix")
    ids = [await exchange(alice, bob, bob.jid, f"mix {i}") for i in range(8)]
    p = await mam_query(alice, after_id=ids[2], max=2, before=True)
    assert p.ids == ids[6:8] and not p.complete, f"last page after {ids[2]}: {p.bodies}"
    p = await mam_query(alice, after_id=ids[2], max=2, before=ids[6])
    assert p.ids == ids[4:6] and not p.complete, p.bodies
    p = await mam_query(alice, before_id=ids[5], max=2, after=ids[0])
    assert p.ids == ids[1:3] and not p.complete, p.bodies


async def test_unknown_ids_in_filters_are_item_not_found(node):
    """XEP-0313 4.1.1.3: an id in before-id, after-id or ids that the archive
    does not hold -> item-not-found."""
    alice = await mam_client(node, "alice", "nf")
    bob = await mam_client(node, "bob", "nf")
    known = await exchange(alice, bob, bob.jid, "known")
    await expect_iq_error(mam_query(alice, after_id="no-such-id"), "cancel", "item-not-found")
    await expect_iq_error(mam_query(alice, before_id="no-such-id"), "cancel", "item-not-found")
    await expect_iq_error(mam_query(alice, ids=[known, "no-such-id"]), "cancel",
                          "item-not-found")


async def test_flip_page_reverses_the_order_within_a_page(node):
    """The server advertises urn:xmpp:mam:2#extended, which includes
    <flip-page/> (XEP-0313 4.3.5): same results, newest first."""
    alice = await mam_client(node, "alice", "flip")
    bob = await mam_client(node, "bob", "flip")
    ids = [await exchange(alice, bob, bob.jid, f"flip {i}") for i in range(5)]
    p = await raw_mam_query(alice, [], rsm="<max>3</max>", extra=f"<flip-page xmlns='{NS_MAM}'/>")
    assert p.ids == list(reversed(ids[:3])), p.bodies


async def test_archive_metadata(node):
    """#extended also promises the archive metadata query (XEP-0313 5)."""
    alice = await mam_client(node, "alice", "meta")
    bob = await mam_client(node, "bob", "meta")
    ids = [await exchange(alice, bob, bob.jid, f"meta {i}") for i in range(3)]
    res = await alice.plugin["xep_0313"].get_archive_metadata(timeout=5)
    md = res.xml.find(f"{{{NS_MAM}}}metadata")
    assert md is not None, ET.tostring(res.xml, encoding="unicode")
    start, end = md.find(f"{{{NS_MAM}}}start"), md.find(f"{{{NS_MAM}}}end")
    assert start is not None and end is not None, ET.tostring(md, encoding="unicode")
    assert (start.get("id"), end.get("id")) == (ids[0], ids[-1])
    assert start.get("timestamp") and end.get("timestamp")


async def test_malformed_queries_are_refused(node):
    alice = await mam_client(node, "alice", "bad")
    await expect_iq_error(mam_query(alice, fields={"x-unknown-field": "1"}), None,
                          "feature-not-implemented")
    await expect_iq_error(mam_query(alice, start="yesterday"), "modify", "bad-request")
    await expect_iq_error(raw_mam_query(alice, [("end", ["2026-13-45T99:00:00Z"])]), "modify",
                          "bad-request")
    await expect_iq_error(raw_mam_query(alice, [], rsm="<max>ten</max>"), "modify",
                          "bad-request")
    wrong_type = (f"<query xmlns='{NS_MAM}'><x xmlns='{NS_DATA}' type='submit'>"
                  f"<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:1</value></field>"
                  f"</x></query>")
    try:
        await alice.iq_set(wrong_type)
        raise AssertionError("a form of another FORM_TYPE was accepted")
    except IqError as e:
        assert iq_error(e)[1] == "bad-request", iq_error(e)
    await alice.ping()  # the stream survived


# ----------------------------------------------------------------- privacy


async def test_a_user_reads_only_their_own_archive(node):
    alice = await mam_client(node, "alice", "p")
    bob = await mam_client(node, "bob", "p")
    carol = await mam_client(node, "carol", "p")
    secret = [await exchange(bob, carol, carol.jid, "secret zebra one"),
              await exchange(carol, bob, bob.jid, "secret zebra two")]
    mine = await exchange(alice, bob, bob.jid, "hello bob")

    for victim in (bob, carol):
        await expect_iq_error(mam_query(alice, to=victim.bare), "auth", "forbidden")
        await expect_iq_error(mam_query(alice, to=victim.bare, with_jid=alice.bare),
                              "auth", "forbidden")
        try:
            await alice.iq_get(f"<prefs xmlns='{NS_MAM}'/>", to=victim.bare)
            raise AssertionError(f"alice read {victim.bare}'s archiving preferences")
        except IqError as e:
            assert iq_error(e) == ("auth", "forbidden"), iq_error(e)
        try:
            await alice.iq_set(f"<prefs xmlns='{NS_MAM}' default='never'><always/><never/>"
                               f"</prefs>", to=victim.bare)
            raise AssertionError(f"alice changed {victim.bare}'s archiving preferences")
        except IqError as e:
            assert iq_error(e) == ("auth", "forbidden"), iq_error(e)

    # Alice's own archive: her conversation only, however she asks.
    for to in (None, alice.bare):
        p = await mam_query(alice, to=to)
        assert p.ids == [mine] and p.complete, p.bodies
    assert (await mam_query(alice, with_jid=carol.bare)).ids == []
    assert (await mam_query(alice, with_jid=carol.jid)).ids == []
    assert (await mam_query(alice, fulltext="zebra")).ids == []
    try:
        p = await mam_query(alice, ids=secret)
        assert p.ids == [], f"alice got bob<->carol messages by id: {p.bodies}"
    except IqError as e:
        assert iq_error(e)[1] == "item-not-found", iq_error(e)
    # ... while bob and carol both have it.
    assert (await mam_query(bob, with_jid=carol.bare)).ids == secret
    assert (await mam_query(carol, with_jid=bob.bare)).ids == secret


async def test_another_users_archive_id_is_not_a_paging_cursor(node):
    """RSM <after>/<before> with an id from someone else's archive is an id
    the querying user's archive does not hold: item-not-found (XEP-0313
    4.3.2), not a page positioned by another user's message."""
    alice = await mam_client(node, "alice", "cur")
    bob = await mam_client(node, "bob", "cur")
    carol = await mam_client(node, "carol", "cur")
    await exchange(alice, bob, bob.jid, "alice 1")
    foreign = await exchange(bob, carol, carol.jid, "bob to carol")
    await exchange(alice, bob, bob.jid, "alice 2")
    await expect_iq_error(mam_query(alice, after=foreign), "cancel", "item-not-found")
    await expect_iq_error(mam_query(alice, before=foreign), "cancel", "item-not-found")


# ------------------------------------------- stanza-ids and what is stored


async def test_just_sent_message_is_in_mam_with_the_delivered_stanza_id(node):
    alice = await mam_client(node, "alice", "now")
    bob = await mam_client(node, "bob", "now")
    alice.send_message(bob.jid, "instant")
    # Same stream, processed in order: the query sees the message at once.
    p = await mam_query(alice, with_jid=bob.bare)
    assert p.bodies == ["instant"], p.bodies
    m = await bob.next_message(frm=alice.jid, body="instant")
    assert p.ids == [sid_of(m, bob.bare)], "MAM id == the delivered copy's stanza-id"
    assert p.hits[0].frm == alice.jid and p.hits[0].to == bob.jid
    assert (await mam_query(bob, with_jid=alice.bare)).ids == p.ids, "one record, both archives"


async def test_chat_states_are_not_archived_and_copies_are_stored_once(node):
    alice = await mam_client(node, "alice", "cs")
    bob1 = await mam_client(node, "bob", "one")
    bob2 = await mam_client(node, "bob", "two")
    active = f"<active xmlns='{NS_CHATSTATES}'/>"
    alice.send_message(bob1.bare, None, extra=[f"<composing xmlns='{NS_CHATSTATES}'/>"])
    for b in (bob1, bob2):
        m = await b.next_message(frm=alice.jid,
                                 pred=lambda st: st.xml.find(f"{{{NS_CHATSTATES}}}composing")
                                 is not None)
        assert m.xml.find(f"{{{NS_SID}}}stanza-id") is None, "bodyless message got a stanza-id"
    # A message with a body (and a chat state) to the bare JID reaches both
    # resources, with one archive id, and is archived once.
    alice.send_message(bob1.bare, "to both", extra=[active])
    sids = {sid_of(await b.next_message(frm=alice.jid, body="to both"), bob1.bare)
            for b in (bob1, bob2)}
    assert len(sids) == 1, f"the copies carry different stanza-ids: {sids}"
    for c, other in ((alice, bob1.bare), (bob1, alice.bare), (bob2, alice.bare)):
        p = await mam_query(c, with_jid=other)
        assert p.ids == list(sids) and p.bodies == ["to both"], p.bodies
    assert (await mam_query(alice)).ids == list(sids), "the chat state was archived"


async def test_forged_stanza_ids_are_stripped(node):
    """XEP-0359: the server removes stanza-id elements a client put on a
    message with the archiving entity's 'by', however many there are."""
    alice = await mam_client(node, "alice", "forge")
    bob = await mam_client(node, "bob", "forge")
    forged = [f"<stanza-id xmlns='{NS_SID}' id='forged-{i}' by='{bob.bare}'/>" for i in (1, 2)]
    alice.send_message(bob.jid, "forged ids", extra=forged)
    m = await bob.next_message(frm=alice.jid, body="forged ids")
    ids = [s.get("id") for s in m.xml.findall(f"{{{NS_SID}}}stanza-id")]
    assert len(ids) == 1 and not ids[0].startswith("forged"), \
        f"delivered copy: {ET.tostring(m.xml, encoding='unicode')}"
    p = await mam_query(bob, with_jid=alice.bare)
    assert p.ids == ids
    inner = [s.get("id") for s in p.hits[0].msg.findall(f"{{{NS_SID}}}stanza-id")]
    assert not any(i.startswith("forged") for i in inner), \
        f"archived copy: {ET.tostring(p.hits[0].msg, encoding='unicode')}"


# ------------------------------------------------------------- preferences


async def test_archiving_preferences(node):
    alice = await mam_client(node, "alice", "prefs")
    bob = await mam_client(node, "bob", "prefs")
    carol = await mam_client(node, "carol", "prefs")
    base = (await asyncio.to_thread(archive_status, node))["records"]

    assert prefs_lists(await prefs_get(alice)) == ("always", [], [])

    to_bob = await exchange(alice, bob, bob.jid, "to bob")
    to_carol = await exchange(alice, carol, carol.jid, "to carol")

    p = await prefs_set(alice, "always", never=[carol.bare])
    assert prefs_lists(p) == ("always", [], [carol.bare]), ET.tostring(p, encoding="unicode")
    assert prefs_lists(await prefs_get(alice)) == ("always", [], [carol.bare])
    from_carol = await exchange(carol, alice, alice.jid, "from carol, after prefs")
    from_bob = await exchange(bob, alice, alice.jid, "from bob, after prefs")
    p = await mam_query(alice)
    assert p.ids == [to_bob, from_bob], p.bodies
    assert (await mam_query(alice, with_jid=carol.bare)).ids == []
    assert (await mam_query(alice, fulltext="carol")).ids == []
    # Carol's archive and the compliance archive keep everything.
    assert (await mam_query(carol, with_jid=alice.bare)).ids == [to_carol, from_carol]
    await archives_converge({"node": node}, base + 4)

    p = await prefs_set(alice, "never", always=[bob.bare])
    assert prefs_lists(p) == ("never", [bob.bare], [])
    assert (await mam_query(alice)).ids == [to_bob, from_bob]

    # default='roster': contacts on the roster (plus 'always').
    await alice.roster_set(carol.bare, name="Carol")
    p = await prefs_set(alice, "roster")
    assert prefs_lists(p) == ("roster", [], [])
    assert (await mam_query(alice)).ids == [to_carol, from_carol]

    p = await prefs_set(alice, "always")
    assert prefs_lists(p) == ("always", [], [])
    assert (await mam_query(alice)).ids == [to_bob, to_carol, from_carol, from_bob]

    # Refused changes leave the preferences as they were.
    for bad, condition in (
            (f"<prefs xmlns='{NS_MAM}' default='always'><always/><never><jid>@{node.domain}"
             f"</jid></never></prefs>", "jid-malformed"),
            (f"<prefs xmlns='{NS_MAM}' default='sometimes'><always/><never/></prefs>",
             "bad-request")):
        try:
            await alice.iq_set(bad)
            raise AssertionError(f"accepted: {bad}")
        except IqError as e:
            assert iq_error(e) == ("modify", condition), iq_error(e)
    assert prefs_lists(await prefs_get(alice)) == ("always", [], [])
    assert prefs_lists(await prefs_get(bob)) == ("always", [], []), "prefs are per user"


# ----------------------------------------------------------------- cluster


@SLOW
async def test_cut_site_answers_from_its_spool_and_converges_after_heal(cluster3):
    cl = cluster3
    carol = await mam_client(cl["c"], "carol", "c")
    dave = await mam_client(cl["c"], "dave", "c")
    carol_a = await mam_client(cl["a"], "carol", "a", presence=False)
    carol_b = await mam_client(cl["b"], "carol", "b", presence=False)
    alice = await mam_client(cl["a"], "alice", "a")
    await cl.asessions_synced()
    base = (await archives_converge(cl.nodes))["a"]["records"]

    cl.cut("c")
    ten = []
    for i in range(10):
        if i % 2 == 0:
            ten.append(await exchange(carol, dave, dave.jid, f"while cut {i}"))
        else:
            ten.append(await exchange(dave, carol, carol.jid, f"while cut {i}"))
    bodies = [f"while cut {i}" for i in range(10)]
    assert len(set(ten)) == 10, ten
    # Site c answers at once from its replica merged with its spool.
    st = await asyncio.to_thread(archive_status, cl["c"])
    assert st["spooled"] == 10 and st["records"] == base, f"site c while cut: {st}"
    p = await mam_query(carol, with_jid=dave.bare)
    assert p.ids == ten and p.bodies == bodies and p.complete, p.bodies
    assert (await mam_query(dave, with_jid=carol.bare)).ids == ten
    # Site a cannot have them while c is cut off.
    p = await mam_query(carol_a)
    assert not set(p.ids) & set(ten), f"site a has records of a cut site: {p.bodies}"

    cl.heal("c")
    for name, c in (("a", carol_a), ("b", carol_b), ("c", carol)):
        await poll_mam(f"carol's archive on site {name} has the 10 messages",
                       lambda c=c: mam_query(c, with_jid=dave.bare),
                       lambda page: page.ids == ten)
    await archives_converge(cl.nodes, base + 10)
    # Once committed everywhere, every site answers the same, once each.
    for name, c in (("a", carol_a), ("b", carol_b), ("c", carol)):
        p = await mam_query(c)
        assert p.ids == ten and p.bodies == bodies and p.complete, (name, p.bodies)
    assert (await mam_query(dave, with_jid=carol.bare)).ids == ten
    p = await mam_query(alice)
    assert not set(p.ids) & set(ten), f"alice sees carol<->dave messages: {p.bodies}"


@SLOW
async def test_spooled_results_keep_the_order_messages_were_accepted(cluster3):
    """While site c is cut off every record it accepts stays in its spool;
    MAM must still list them in the order they were accepted, also when
    several share a millisecond (and their ids cross from c1-9 to c1-10 and
    from c1-99 to c1-100)."""
    cl = cluster3
    carol = await mam_client(cl["c"], "carol", "c")
    dave = await mam_client(cl["c"], "dave", "c")
    carol_a = await mam_client(cl["a"], "carol", "a", presence=False)
    await cl.asessions_synced()
    base = (await archives_converge(cl.nodes))["a"]["records"]

    cl.cut("c")
    total = 120
    for i in range(total):
        carol.send_message(dave.jid, f"burst {i}")
    sids = [sid_of(await dave.next_message(10, frm=carol.jid, body=f"burst {i}"), dave.bare)
            for i in range(total)]
    bodies = [f"burst {i}" for i in range(total)]
    st = await asyncio.to_thread(archive_status, cl["c"])
    assert st["spooled"] == total, f"site c while cut: {st}"
    hits = await mam_all(carol, with_jid=dave.bare)
    got = [(h.id, h.body) for h in hits]
    assert got == list(zip(sids, bodies, strict=True)), f"spooled results out of order: {got}"
    p = await mam_query(carol, with_jid=dave.bare, max=10, after=sids[4])
    assert p.ids == sids[5:15], f"page after {sids[4]}: {p.ids}"

    cl.heal("c")
    await archives_converge(cl.nodes, base + total)
    for name, c in (("a", carol_a), ("c", carol)):
        got = [(h.id, h.body) for h in await mam_all(c, with_jid=dave.bare)]
        assert got == list(zip(sids, bodies, strict=True)), f"site {name}, committed: {got}"


async def wait_archive_leader(cl) -> None:
    """Polls until every site's archive Raft agrees on a leader."""
    deadline = time.monotonic() + CONVERGE_S
    while True:
        sts = {s: await asyncio.to_thread(archive_status, cl[s]) for s in cl.nodes}
        leaders = {st.get("leader") for st in sts.values()}
        if len(leaders) == 1 and None not in leaders:
            return
        assert time.monotonic() < deadline, f"no common archive leader: {sts}"
        await asyncio.sleep(0.2)  # polling raft state: there is no event for it


async def strict_send(carol, dave, body: str) -> tuple[str, object]:
    """carol -> dave; returns ("delivered", message at dave) or ("refused",
    the error message carol got back)."""
    mid = carol.send_message(dave.jid, body)
    # The session answers the ping only once the message was handled (it
    # waits for the commit, at most strict_timeout_ms).
    await carol.sync(timeout=15)
    errs = take_inbox(carol, lambda st: localname(st.xml.tag) == "message"
                      and st.xml.get("type") == "error" and st["id"] == mid)
    if errs:
        return "refused", errs[0]
    return "delivered", await dave.next_message(10, frm=carol.jid, body=body)


def assert_wait_service_unavailable(err) -> None:
    text = ET.tostring(err.xml, encoding="unicode")
    e = err.xml.find(f"{{{NS_CLIENT}}}error")
    assert e is not None and e.get("type") == "wait", text
    assert e.find(f"{{{NS_STANZAS}}}service-unavailable") is not None, text


@SLOW
@pytest.mark.chorus_cluster(config={"archive": {"mode": "strict", "strict_timeout_ms": 2000}})
async def test_strict_mode_refuses_messages_without_quorum(cluster3):
    cl = cluster3
    carol = await mam_client(cl["c"], "carol", "c")
    dave = await mam_client(cl["c"], "dave", "c")
    carol_a = await mam_client(cl["a"], "carol", "a", presence=False)
    carol_b = await mam_client(cl["b"], "carol", "b", presence=False)
    await cl.asessions_synced()
    await wait_archive_leader(cl)

    delivered: list[str] = []
    refused: list[str] = []
    outcome, m = await strict_send(carol, dave, "strict up")
    assert outcome == "delivered", ET.tostring(m.xml, encoding="unicode")
    sid_of(m, dave.bare)
    delivered.append("strict up")

    cl.cut("c")
    deadline = time.monotonic() + 20
    i = 0
    while True:
        body = f"strict probe {i}"
        outcome, m = await strict_send(carol, dave, body)
        if outcome == "refused":
            assert_wait_service_unavailable(m)
            refused.append(body)
            break
        delivered.append(body)
        assert time.monotonic() < deadline, "site c still accepts messages 20 s after the cut"
        i += 1
        await asyncio.sleep(0.2)  # polling the node's view of the cluster: no event for it
    outcome, m = await strict_send(carol, dave, "strict refused")
    assert outcome == "refused", "a message was delivered without archive quorum"
    assert_wait_service_unavailable(m)
    refused.append("strict refused")
    await dave.expect_no_message(1.0, frm=carol.jid)

    cl.heal("c")
    deadline = time.monotonic() + CONVERGE_S
    i = 0
    while True:
        body = f"strict healed {i}"
        outcome, m = await strict_send(carol, dave, body)
        if outcome == "delivered":
            delivered.append(body)
            break
        assert_wait_service_unavailable(m)
        refused.append(body)
        assert time.monotonic() < deadline, "site c still refuses messages after the heal"
        i += 1
        await asyncio.sleep(0.2)  # polling the node's view of the cluster: no event for it
    healed_sid = sid_of(m, dave.bare)
    for name, c in (("a", carol_a), ("b", carol_b), ("c", carol)):
        await poll_mam(f"the message after the heal is in the archive on site {name}",
                       lambda c=c: mam_query(c, ids=[healed_sid]),
                       lambda page: page.bodies == [body])

    # Refused messages were never delivered (not even late, once committed),
    # so they are in nobody's MAM.
    await archives_converge(cl.nodes)
    await dave.expect_no_message(1.0, frm=carol.jid)
    for name, c in (("a", carol_a), ("b", carol_b), ("c", carol)):
        p = await mam_query(c, with_jid=dave.bare)
        assert p.bodies == delivered, (f"site {name}: carol's archive {p.bodies}; delivered "
                                       f"{delivered}, refused {refused}")
    p = await mam_query(dave, with_jid=carol.bare)
    assert p.bodies == delivered, f"dave's archive {p.bodies}; refused {refused}"
