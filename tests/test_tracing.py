"""OpenTelemetry tracing (the otel extra): a span per request continuing the caller's traceparent (HTTP
headers, Kafka headers, gRPC metadata), decode/queue/predict/encode and flow steps as its children, the trace
sent on with data_url fetches, spans exported over OTLP/HTTP; and nothing of OpenTelemetry imported when off."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import free_port, serve_in_process, serve_in_thread
from tests.data.conftest import FileServer
from tests.fixtures import EchoModel, SumModel
from v2serve.server import ModelServer
from v2serve.settings import Settings, TracingSettings
from v2serve.streams.messages import event_from_message

pytestmark = pytest.mark.anyio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
SUM_REQUEST = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}]}


@pytest.fixture(scope="module")
def spans():
    """The process's tracer provider, with an in-memory exporter (a provider is set once per process)."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


@pytest.fixture
def traced(spans):
    spans.clear()
    return {"tracing": TracingSettings(enabled=True, exporter="global")}


def by_name(spans, name):
    return [span for span in spans.get_finished_spans() if span.name == name]


async def test_an_http_request_continues_the_callers_trace_with_the_models_steps_as_children(spans, traced):
    async with serve_in_process(SumModel(name="sum"), **traced) as client:
        reply = await client.post("/v2/models/sum/infer", json=SUM_REQUEST, headers={"traceparent": TRACEPARENT})
    assert reply.status_code == 200
    (request,) = by_name(spans, "POST /v2/models/sum/infer")
    assert format(request.context.trace_id, "032x") == TRACE_ID
    assert format(request.parent.span_id, "016x") == PARENT_ID
    assert request.kind == trace.SpanKind.SERVER
    assert request.attributes["http.response.status_code"] == 200
    children = {span.name: span for span in spans.get_finished_spans() if span.parent == request.context}
    assert {"decode", "predict", "encode"} <= set(children)
    assert children["predict"].attributes["v2serve.model"] == "sum"
    for child in children.values():
        assert request.start_time <= child.start_time <= child.end_time <= request.end_time


async def test_a_failed_request_is_an_error_span_and_an_unknown_model_a_plain_one(spans, traced):
    async with serve_in_process(SumModel(name="sum"), **traced) as client:
        assert (await client.post("/v2/models/nope/infer", json=SUM_REQUEST)).status_code == 404
    (request,) = by_name(spans, "POST /v2/models/nope/infer")
    assert request.attributes["http.response.status_code"] == 404
    assert request.status.status_code == trace.StatusCode.UNSET
    assert by_name(spans, "decode") == []  # nothing reached a model


def add_one(body):
    return {"value": body["value"] + 1}


def test_flow_steps_are_children_of_the_request():
    from v2serve import Graph

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    flow = Graph("flow")
    flow.to(add_one, name="first").to(add_one, name="second").respond()
    server = flow.build_server(Settings(models=[], tracing=TracingSettings(enabled=True, exporter="global")))
    server.tracing.tracer = provider.get_tracer("test")  # this test's own provider, not the process's
    from v2serve.mock import MockServer

    with MockServer(server) as mock:
        assert mock.test("/", body={"value": 1}, headers={"traceparent": TRACEPARENT}) == {"value": 3}
    finished = {span.name: span for span in exporter.get_finished_spans()}
    request = finished["POST /"]
    assert finished["step first"].parent == request.context and finished["step second"].parent == request.context
    assert format(request.context.trace_id, "032x") == TRACE_ID


async def test_a_kafka_message_continues_the_trace_its_headers_carry(spans, traced):
    server = ModelServer([SumModel(name="sum")], Settings(models=[], **traced))
    await server.start()
    try:
        import orjson

        body = orjson.dumps({"model": "sum", **SUM_REQUEST})
        event = event_from_message(body, b"key-1", [("traceparent", TRACEPARENT.encode())], "kafka")
        reply = await server.handle(event)
    finally:
        await server.stop()
    assert reply.status == 200
    (request,) = by_name(spans, "POST /")
    assert request.attributes["v2serve.trigger"] == "kafka"
    assert format(request.context.trace_id, "032x") == TRACE_ID


def test_a_grpc_call_continues_the_trace_its_metadata_carries(spans, traced):
    grpc = pytest.importorskip("grpc")
    from v2serve.grpc.generated import inference_pb2 as pb
    from v2serve.grpc.server import GrpcServer

    port = free_port()
    with (
        serve_in_thread(SumModel(name="sum"), services=[GrpcServer], grpc={"port": port}, **traced),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        ready = channel.unary_unary("/inference.GRPCInferenceService/ModelReady")
        request = pb.ModelReadyRequest(name="sum").SerializeToString()
        answer = ready(request, metadata=[("traceparent", TRACEPARENT)], timeout=10)
    assert pb.ModelReadyResponse.FromString(answer).ready
    (span,) = by_name(spans, "inference.GRPCInferenceService/ModelReady")
    assert format(span.context.trace_id, "032x") == TRACE_ID and span.attributes["rpc.system"] == "grpc"


async def test_a_data_url_fetch_sends_the_trace_on(spans, traced):
    files = FileServer()
    files.files["/x.npy"] = _npy(np.arange(3, dtype=np.float32))
    try:
        settings = {**traced, "data": {"protocols": ["http"], "allow_private_addresses": True}}
        async with serve_in_process(EchoModel(name="echo"), **settings) as client:
            reply = await client.post(
                "/v2/models/echo/infer", json={"data_url": f"{files.url}/x.npy"}, headers={"traceparent": TRACEPARENT}
            )
    finally:
        files.close()
    assert reply.status_code == 200, reply.text
    sent = files.headers[-1]["traceparent"]
    assert sent.split("-")[1] == TRACE_ID and sent.split("-")[2] != PARENT_ID  # the same trace, our span


def test_spans_reach_an_otlp_http_receiver():
    """OTLP over HTTP, decoded with the protocol's own messages (no OTLP collector installs from PyPI)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[ExportTraceServiceRequest] = []
    arrived = threading.Event()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append(ExportTraceServiceRequest.FromString(body))
            arrived.set()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces"
        tracing = TracingSettings(enabled=True, exporter="otlp", endpoint=endpoint, service_name="otlp-test")
        server = ModelServer([SumModel(name="sum")], Settings(models=[], tracing=tracing))
        from v2serve.mock import MockServer

        with MockServer(server) as mock:
            mock.test("/v2/models/sum/infer", body=SUM_REQUEST)
        server.tracing.provider.force_flush()
        assert arrived.wait(10)
    finally:
        receiver.shutdown()
        receiver.server_close()
        server.tracing.provider.shutdown()
    resource_spans = received[0].resource_spans[0]
    service = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}["service.name"]
    names = {span.name for scope in resource_spans.scope_spans for span in scope.spans}
    assert service == "otlp-test" and {"POST /v2/models/sum/infer", "predict"} <= names


def test_when_off_nothing_of_opentelemetry_is_imported():
    code = (
        "import sys, asyncio\n"
        "from v2serve.server import ModelServer\n"
        "from v2serve.settings import Settings\n"
        "server = ModelServer([], Settings(models=[]))\n"
        "assert server.tracing is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
