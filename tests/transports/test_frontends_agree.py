"""One model, every front-end: v2 infer, v2 generate, KServe v1 predict and TorchServe predictions give the
same numbers, over a real HTTP server and through the mock server alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import numpy as np
import orjson
import pytest

from tests.conftest import serve_in_thread
from tests.frontends.models import RowSum
from v2serve.mock import MockServer
from v2serve.server import ModelServer
from v2serve.settings import Settings

ROWS = [[1.0, 2.0, 3.5], [-4.0, 0.25, 6.0]]
EXPECTED = np.asarray(ROWS, dtype=np.float32).sum(axis=1).tolist()

Send = Callable[[str, bytes, str], tuple[int, bytes]]


def v2_infer(send: Send) -> list[float]:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": ROWS}]}
    status, answer = send("/v2/models/rowsum/infer", orjson.dumps(body), "application/json")
    assert status == 200, answer
    return orjson.loads(answer)["outputs"][0]["data"]


def v2_generate(send: Send) -> list[float]:
    status, answer = send("/v2/models/rowsum/generate", orjson.dumps({"x": ROWS}), "application/json")
    assert status == 200, answer
    return orjson.loads(answer)["total"]


def kserve_v1(send: Send) -> list[float]:
    status, answer = send("/v1/models/rowsum:predict", orjson.dumps({"instances": ROWS}), "application/json")
    assert status == 200, answer
    return orjson.loads(answer)["predictions"]


def torchserve(send: Send) -> list[float]:
    status, answer = send("/predictions/rowsum", orjson.dumps(ROWS), "application/json")
    assert status == 200, answer
    return orjson.loads(answer)


FRONT_ENDS = {"v2-infer": v2_infer, "v2-generate": v2_generate, "kserve-v1": kserve_v1, "torchserve": torchserve}


@pytest.fixture(scope="module", params=["http", "mock"])
def send(request) -> Iterator[Send]:
    if request.param == "http":
        with serve_in_thread(RowSum(name="rowsum")) as base, httpx.Client(base_url=base, timeout=10) as client:

            def over_http(path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
                response = client.post(path, content=body, headers={"content-type": content_type})
                return response.status_code, response.content

            yield over_http
    else:
        with MockServer(ModelServer([RowSum(name="rowsum")], Settings(models=[]))) as server:

            def in_process(path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
                reply = server.request(path, body, "POST", {"content-type": content_type}, content_type)
                return reply.status, reply.body

            yield in_process


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_every_front_end_gives_the_same_answer(send, front_end):
    assert FRONT_ENDS[front_end](send) == EXPECTED


def test_an_unknown_model_is_a_404_on_every_front_end(send):
    for path in ("/v2/models/nope/infer", "/v2/models/nope/generate", "/v1/models/nope:predict", "/predictions/nope"):
        status, _ = send(path, b"[[1, 2, 3]]", "application/json")
        assert status == 404, path
