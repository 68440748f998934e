"""Every bad request gets a clear {"error"} with the status PROTOCOL.md section 5 decides, and the next good
request succeeds."""

import gzip

import orjson
import pytest

from tests.conftest import serve_in_process
from tests.fixtures import ErrorModel, FailingLoadModel, SumModel

GOOD = {"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}


def body(**tensor):
    return orjson.dumps({"inputs": [GOOD["inputs"][0] | tensor]})


BAD_CASES = [
    # (id, method, path, content, headers, status, message fragment)
    ("malformed-json", "POST", "/v2/models/sum/infer", b'{"inputs": [', {}, 400, "malformed JSON"),
    ("non-utf8", "POST", "/v2/models/sum/infer", b'{"inputs": "\xff\xfe"}', {}, 400, "malformed JSON"),
    ("empty-body", "POST", "/v2/models/sum/infer", b"", {}, 400, "malformed JSON"),
    ("missing-inputs", "POST", "/v2/models/sum/infer", b'{"id": "1"}', {}, 400, "missing 'inputs'"),
    ("unknown-input", "POST", "/v2/models/sum/infer", body(name="nope"), {}, 400, "has no input 'nope'"),
    ("wrong-datatype", "POST", "/v2/models/sum/infer", body(datatype="INT32"), {}, 400, "must be FP32"),
    ("bad-datatype", "POST", "/v2/models/sum/infer", body(datatype="FP128"), {}, 400, "unsupported datatype"),
    ("values-vs-datatype", "POST", "/v2/models/sum/infer", body(data=["a", "b", "c"]), {}, 400, "not FP32"),
    ("shape-data-mismatch", "POST", "/v2/models/sum/infer", body(shape=[1, 4]), {}, 400, "needs 4"),
    ("shape-vs-model", "POST", "/v2/models/sum/infer", body(shape=[3], data=[1, 2, 3]), {}, 400, "expects [-1, -1]"),
    (
        "unknown-output",
        "POST",
        "/v2/models/sum/infer",
        orjson.dumps(GOOD | {"outputs": [{"name": "nope"}]}),
        {},
        400,
        "has no output 'nope'",
    ),
    (
        "binary-overrun",
        "POST",
        "/v2/models/sum/infer",
        b"{}",
        {"inference-header-content-length": "99"},
        400,
        "but the body has 2 bytes",
    ),
    ("bad-gzip", "POST", "/v2/models/sum/infer", b"not gzip", {"content-encoding": "gzip"}, 400, "not valid gzip"),
    ("unknown-model", "POST", "/v2/models/nope/infer", orjson.dumps(GOOD), {}, 404, "available models: "),
    ("unknown-version", "POST", "/v2/models/sum/versions/9/infer", orjson.dumps(GOOD), {}, 404, "no version '9'"),
    ("unknown-op", "POST", "/v2/models/sum/frobnicate", b"{}", {}, 404, "no operation 'frobnicate'"),
    ("unknown-path", "GET", "/v3/whatever", None, {}, 404, "no route for GET /v3/whatever"),
    ("wrong-method", "GET", "/v2/models/sum/infer", None, {}, 405, "use POST"),
    ("explain-missing", "POST", "/v2/models/sum/explain", orjson.dumps(GOOD), {}, 501, "does not implement explain"),
    ("model-raises", "POST", "/v2/models/broken/infer", orjson.dumps(GOOD), {}, 500, "boom: the model is broken"),
    (
        "model-not-ready",
        "POST",
        "/v2/models/failing/infer",
        orjson.dumps(GOOD),
        {},
        503,
        "failed to load: RuntimeError: weights file is corrupt",
    ),
    ("too-large", "POST", "/v2/models/sum/infer", b"x" * 2048, {}, 413, "exceeds the limit of 1024 bytes"),
    (
        "gzip-bomb",
        "POST",
        "/v2/models/sum/infer",
        gzip.compress(b" " * 100_000),
        {"content-encoding": "gzip"},
        413,
        "decompressed body exceeds",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "content", "headers", "status", "fragment"),
    [case[1:] for case in BAD_CASES],
    ids=[case[0] for case in BAD_CASES],
)
async def test_bad_request_gets_clear_error_then_server_still_serves(method, path, content, headers, status, fragment):
    models = (SumModel(name="sum"), ErrorModel(name="broken"), FailingLoadModel(name="failing"))
    async with serve_in_process(*models, http={"max_body_bytes": 1024}) as client:
        response = await client.request(method, path, content=content, headers=headers)
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert fragment in error
        assert "Traceback" not in error
        if status == 503:
            assert int(response.headers["retry-after"]) > 0
        if status == 405:
            assert "POST" in response.headers["allow"]

        after = await client.post("/v2/models/sum/infer", content=orjson.dumps(GOOD))
        assert after.status_code == 200
        assert after.json()["outputs"][0]["data"] == [6.0]


@pytest.mark.anyio
async def test_oversized_body_without_content_length_is_refused_while_streaming():
    sent = []

    async def chunks():
        for _ in range(100):
            sent.append(1)
            yield b"x" * 512

    async with serve_in_process(SumModel(name="sum"), http={"max_body_bytes": 1024}) as client:
        response = await client.post("/v2/models/sum/infer", content=chunks())
        assert response.status_code == 413
        assert len(sent) < 100, "the whole body was read before refusing it"


@pytest.mark.anyio
async def test_debug_mode_adds_the_traceback():
    async with serve_in_process(ErrorModel(name="broken"), debug=True) as client:
        response = await client.post("/v2/models/broken/infer", content=orjson.dumps(GOOD))
        assert response.status_code == 500
        assert "Traceback" in response.json()["error"]
