"""OpenTelemetry traces, received by a real OTLP/gRPC collector endpoint
(grpcio serving opentelemetry-proto's TraceService): a message sent on one
site and delivered on another is one trace, with spans from both nodes,
through routing and archiving."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from chorus_node import free_ports
from xmpp import connect


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span it is sent: (node id, span name, trace id, span id, parent id)."""

    def __init__(self):
        self.spans: list[tuple[str, str, bytes, bytes, bytes]] = []
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 (gRPC's name)
        with self.lock:
            for rs in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                node = attrs.get("service.instance.id", "?")
                assert attrs.get("service.name") == "chorus"
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append((node, s.name, s.trace_id, s.span_id, s.parent_span_id))
        return trace_service_pb2.ExportTraceServiceResponse()

    def snapshot(self):
        with self.lock:
            return list(self.spans)


PORT = free_ports(1)[0]


@pytest.fixture
def collector():
    c = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(c, server)
    server.add_insecure_port(f"127.0.0.1:{PORT}")
    server.start()
    yield c
    server.stop(grace=None)


@pytest.mark.timeout(180)
@pytest.mark.chorus_cluster(config={"telemetry": {"otlp_endpoint": f"http://127.0.0.1:{PORT}"}})
async def test_a_cross_site_message_is_one_trace_through_routing_and_archiving(collector, cluster3):
    cl = cluster3
    alice = await connect(cl["a"], "alice", resource="a", presence=True)
    carol = await connect(cl["c"], "carol", resource="c", presence=True)
    await cl.asessions_synced()
    alice.send_message(cl.jid("carol", "c"), "traced hello")
    m = await carol.next_message(timeout=15, frm=cl.jid("alice", "a"))
    assert m["body"] == "traced hello"
    # Spans are exported in batches (every few seconds): poll the collector.
    deadline = time.monotonic() + 60
    while True:
        spans = collector.snapshot()
        by_trace: dict[bytes, list] = {}
        for s in spans:
            by_trace.setdefault(s[2], []).append(s)
        found = None
        for trace_id, ss in by_trace.items():
            names = {(node, name) for node, name, *_ in ss}
            if {("a1", "message"), ("a1", "archive.spool"), ("a1", "route.remote"),
                    ("c1", "deliver.from_peer")} <= names:
                found = ss
                break
        if found:
            break
        assert time.monotonic() < deadline, f"no complete cross-site trace among {len(spans)} spans: " \
            f"{sorted({(n, s) for n, s, *_ in spans})}"
        await asyncio.sleep(0.5)
    # The remote delivery continues the routing span: its parent is a span of
    # the sender's node in the same trace.
    ids_a1 = {span_id for node, _, _, span_id, _ in found if node == "a1"}
    deliver = [s for s in found if s[0] == "c1" and s[1] == "deliver.from_peer"]
    assert any(parent in ids_a1 for *_, parent in deliver), found
    # The archive's commit of the batch is traced too (its own trace).
    assert any(name == "archive.commit" for _, name, *_ in collector.snapshot())
