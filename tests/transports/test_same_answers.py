"""One suite, three transports: the mock server, a real HTTP server and the Nuclio handler give identical
statuses, content types and bodies for the same requests, good and bad."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import nuclio_sdk
import nuclio_sdk.test
import numpy as np
import orjson
import pytest

import v2serve.nuclio
from tests.conftest import serve_in_thread
from v2serve.mock import MockServer
from v2serve.protocol.binary import HEADER_LENGTH
from v2serve.server import ModelServer
from v2serve.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

ROUTER_GRAPH = f"""
topology: router
steps:
  - {{name: add_sub, version: "1", kind: model, class_name: {EXAMPLES}/add_sub/model.py:AddSub}}
  - {{name: iris, kind: model, class_name: {EXAMPLES}/iris/model.py:IrisClassifier}}
  - {{name: broken, kind: model, class_name: "tests.fixtures:ErrorModel"}}
  - name: vote
    kind: ensemble
    routes:
      - {{name: low, kind: model, class_name: "tests.graph.steps:Label", class_args: {{threshold: 1}}}}
      - {{name: high, kind: model, class_name: "tests.graph.steps:Label", class_args: {{threshold: 5}}}}
      - {{name: mid, kind: model, class_name: "tests.graph.steps:Label", class_args: {{threshold: 3}}}}
"""

FLOW_GRAPH = """
topology: flow
steps:
  - {name: pre, handler: "tests.graph.steps:to_request"}
  - {name: model, kind: model, class_name: "tests.graph.steps:Affine", class_args: {a: 2}, after: [pre]}
  - {name: post, handler: "tests.graph.steps:first_output", after: [model], responder: true}
"""

Request = tuple[str, str, bytes, dict[str, str]]


def json_request(path: str, body: object, method: str = "POST") -> Request:
    return (method, path, orjson.dumps(body), {"content-type": "application/json"})


def add_sub_body(request_id: str) -> dict:
    return {
        "id": request_id,
        "inputs": [
            {"name": f"INPUT{i}", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))} for i in (0, 1)
        ],
    }


def binary_add_sub() -> Request:
    data = np.arange(16, dtype=np.int32).tobytes()
    header = orjson.dumps(
        {
            "id": "bin",
            "inputs": [
                {"name": f"INPUT{i}", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}}
                for i in (0, 1)
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    return (
        "POST",
        "/v2/models/add_sub/infer",
        header + data + data,
        {HEADER_LENGTH: str(len(header)), "content-type": "application/octet-stream"},
    )


ROUTER_CASES: dict[str, Request] = {
    "server-metadata": ("GET", "/v2", b"", {}),
    "ready": ("GET", "/v2/health/ready", b"", {}),
    "list": ("GET", "/v2/models", b"", {}),
    "metadata": ("GET", "/v2/models/add_sub", b"", {}),
    "model-ready": ("GET", "/v2/models/iris/ready", b"", {}),
    "infer": json_request("/v2/models/add_sub/infer", add_sub_body("a")),
    "infer-version": json_request("/v2/models/add_sub/versions/1/infer", add_sub_body("b")),
    "infer-binary": binary_add_sub(),
    "infer-dict": json_request(
        "/v2/models/iris/infer_dict",
        {"id": "d", "inputs": [{"petal_width": 1.3, "petal_length": 4.3, "sepal_width": 2.8, "sepal_length": 5.9}]},
    ),
    "ensemble": json_request(
        "/v2/models/vote/infer",
        {"id": "v", "inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [0, 4, 9]}]},
    ),
    "body-routed": json_request("/", add_sub_body("r") | {"model": "add_sub", "operation": "infer"}),
    "malformed-json": ("POST", "/v2/models/add_sub/infer", b'{"inputs": [', {"content-type": "application/json"}),
    "wrong-datatype": json_request(
        "/v2/models/add_sub/infer",
        {"id": "w", "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]},
    ),
    "unknown-model": json_request("/v2/models/nope/infer", add_sub_body("u")),
    "unknown-version": json_request("/v2/models/add_sub/versions/7/infer", add_sub_body("u")),
    "unknown-op": json_request("/v2/models/add_sub/nope", {}),
    "explain": json_request("/v2/models/add_sub/explain", add_sub_body("e")),
    "model-raises": json_request(
        "/v2/models/broken/infer", {"id": "x", "inputs": [{"name": "a", "datatype": "INT8", "shape": [1], "data": [1]}]}
    ),
    "wrong-method": ("GET", "/v2/models/add_sub/infer", b"", {}),
    "no-model-named": json_request("/", {"inputs": []}),
}

FLOW_CASES: dict[str, Request] = {
    "flow": json_request("/", {"id": "f", "values": [1, 2]}),
    "flow-bad-input": json_request("/", {"values": "oops"}),
    "flow-malformed": ("POST", "/", b"{", {"content-type": "application/json"}),
    "flow-live": ("GET", "/v2/health/live", b"", {}),
}

Answer = tuple[int, str, bytes]
Transport = Callable[[Request], Answer]


@pytest.fixture(scope="module", params=["router", "flow"])
def graph_file(request, tmp_path_factory) -> tuple[str, Path]:
    path = tmp_path_factory.mktemp("graphs") / f"{request.param}.yaml"
    path.write_text(ROUTER_GRAPH if request.param == "router" else FLOW_GRAPH)
    return request.param, path


def settings_for(path: Path) -> Settings:
    return Settings(models=[str(path)])


@contextmanager
def mock_transport(path: Path) -> Iterator[Transport]:
    with MockServer(ModelServer.from_settings(settings_for(path))) as server:

        def send(request: Request) -> Answer:
            method, url, body, headers = request
            reply = server.request(url, body, method, headers)
            return reply.status, reply.content_type, reply.body

        yield send


@contextmanager
def http_transport(path: Path) -> Iterator[Transport]:
    with (
        serve_in_thread(server=ModelServer.from_settings(settings_for(path))) as url,
        httpx.Client(base_url=url) as client,
    ):

        def send(request: Request) -> Answer:
            method, target, body, headers = request
            response = client.request(method, target, content=body, headers=headers)
            return response.status_code, response.headers["content-type"], response.content

        yield send


@contextmanager
def nuclio_transport(path: Path) -> Iterator[Transport]:
    previous = os.environ.get("V2SERVE_MODELS")
    os.environ["V2SERVE_MODELS"] = orjson.dumps([str(path)]).decode()
    platform = nuclio_sdk.test.Platform()
    try:

        def send(request: Request) -> Answer:
            method, target, body, headers = request
            content_type = headers.get("content-type")
            event = nuclio_sdk.Event(
                body=nuclio_body(body, content_type),
                path=target,
                method=method,
                headers=headers,
                content_type=content_type,
            )
            response = platform.call_handler(v2serve.nuclio.handler, event)
            return response.status_code, response.content_type, response.body

        yield send
    finally:
        for context in platform._handler_contexts.values():
            context.user_data.v2serve.close()
        if previous is None:
            del os.environ["V2SERVE_MODELS"]
        else:
            os.environ["V2SERVE_MODELS"] = previous


def nuclio_body(body: bytes, content_type: str | None) -> object:
    """What a Nuclio trigger hands the handler: JSON bodies arrive decoded when they parse."""
    if content_type == "application/json":
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
    return body


TRANSPORTS = {"mock": mock_transport, "http": http_transport, "nuclio": nuclio_transport}


@pytest.fixture(scope="module")
def answers(graph_file) -> tuple[str, dict[str, dict[str, Answer]]]:
    kind, path = graph_file
    cases = ROUTER_CASES if kind == "router" else FLOW_CASES
    collected: dict[str, dict[str, Answer]] = {}
    for name, transport in TRANSPORTS.items():
        with transport(path) as send:
            collected[name] = {case: send(request) for case, request in cases.items()}
    return kind, collected


def test_every_transport_gives_the_same_answer(answers):
    _, collected = answers
    reference = collected["mock"]
    for transport in ("http", "nuclio"):
        for case, answer in reference.items():
            assert collected[transport][case] == answer, f"{transport} differs from mock on {case!r}"


EXPECTED_STATUS = {
    "router": {
        "server-metadata": 200,
        "ready": 200,
        "infer": 200,
        "infer-binary": 200,
        "infer-dict": 200,
        "ensemble": 200,
        "body-routed": 200,
        "malformed-json": 400,
        "wrong-datatype": 400,
        "unknown-model": 404,
        "unknown-version": 404,
        "unknown-op": 404,
        "explain": 501,
        "model-raises": 500,
        "wrong-method": 405,
        "no-model-named": 400,
    },
    "flow": {"flow": 200, "flow-bad-input": 400, "flow-malformed": 400, "flow-live": 200},
}


def test_the_shared_answers_are_the_right_ones(answers):
    kind, collected = answers
    statuses = {case: answer[0] for case, answer in collected["mock"].items()}
    assert {case: statuses[case] for case in EXPECTED_STATUS[kind]} == EXPECTED_STATUS[kind]
    for case, (status, content_type, body) in collected["mock"].items():
        if content_type == "application/json" and status >= 400:
            assert set(orjson.loads(body)) >= {"error"}, case
    if kind == "router":
        infer = orjson.loads(collected["mock"]["infer"][2])
        assert infer["outputs"][0]["data"] == [2 * i for i in range(16)]
        # x=4: thresholds 1 and 3 say big, 5 says small; the majority wins.
        assert orjson.loads(collected["mock"]["ensemble"][2])["outputs"][0]["data"] == ["small", "big", "big"]
        assert orjson.loads(collected["mock"]["body-routed"][2])["id"] == "r"
    else:
        assert orjson.loads(collected["mock"]["flow"][2]) == {"id": "f", "y": [2.0, 4.0]}
