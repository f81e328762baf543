"""Admin HTTP listener: health endpoints and Prometheus metrics."""

import asyncio
import re

from xmpp import connect, try_login

METRICS = (
    "chorus_connections",
    "chorus_logins_total",
    "chorus_login_failures_total",
    "chorus_stanzas_in_total",
    "chorus_stanzas_out_total",
)

SAMPLE_RE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[^}]*\})?\s+(?P<value>\S+)(\s+\d+)?$")


def parse_metrics(text: str) -> dict[str, float]:
    """Sum of all samples per metric name (labels summed over)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"not Prometheus text format: {line!r}"
        out[m["name"]] = out.get(m["name"], 0.0) + float(m["value"])
    return out


async def _metrics(node) -> tuple[dict[str, float], str]:
    status, body = await asyncio.to_thread(node.http_get, "/metrics")
    assert status == 200, (status, body[:500])
    return parse_metrics(body), body


async def test_health_endpoints(node):
    status, body = await asyncio.to_thread(node.http_get, "/readyz")
    assert status == 200 and "ready" in body
    status, _ = await asyncio.to_thread(node.http_get, "/healthz")
    assert status == 200


async def test_metrics_prometheus_text(node):
    bob = await connect(node, "bob", resource="b", presence=True)
    alice = await connect(node, "alice", resource="a", presence=True)
    assert await try_login(node, "carol", "wrong-password") == "not-authorized"
    alice.send_message(bob.jid, "count me")
    await bob.next_message(frm=alice.jid)

    values, text = await _metrics(node)
    for name in METRICS:
        assert name in values, f"metric {name} missing from /metrics:\n{text[:2000]}"
    # Every metric shown says what it is (a dashboard's tooltip, promtool).
    helped = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}
    typed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    shown = {line.split("{")[0].split()[0] for line in text.splitlines()
             if line and not line.startswith("#")}
    bare = {n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for n in shown}
    assert bare <= helped, sorted(bare - helped)
    assert {n for n in bare if n.startswith("chorus_")} <= typed, sorted(bare - typed)
    assert values["chorus_connections"] >= 2, values
    assert values["chorus_logins_total"] >= 2, values
    assert values["chorus_login_failures_total"] >= 1, values
    assert values["chorus_stanzas_in_total"] >= 1, values
    assert values["chorus_stanzas_out_total"] >= 1, values

    # Counters only go up; the connection gauge follows disconnects.
    await alice.close()
    await bob.close()
    await try_login(node, "carol")  # one more successful login (then closed)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        after, _ = await _metrics(node)
        if after["chorus_connections"] <= values["chorus_connections"] - 2 or loop.time() > deadline:
            break
        await asyncio.sleep(0.2)  # polling an HTTP gauge, nothing to wait on
    assert after["chorus_logins_total"] >= values["chorus_logins_total"] + 1
    assert after["chorus_connections"] <= values["chorus_connections"] - 2, (values, after)
