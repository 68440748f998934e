"""Requests an attacker would send: each gets a 4xx with an {"error"} body, costs no more memory than its own
size, adds no metric series, and leaves the server serving. Numbers refer to the hardening issue's list."""

import gzip
import tracemalloc
import zlib

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import serve_in_process
from tests.fixtures import EchoModel, SumModel

pytestmark = pytest.mark.anyio

GOOD = {"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}


def binary_request(header: dict, data: bytes) -> tuple[bytes, dict[str, str]]:
    json_header = orjson.dumps(header)
    return json_header + data, {"inference-header-content-length": str(len(json_header))}


async def peak_bytes_of(call) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = await call
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def still_serves(client) -> None:
    after = await client.post("/v2/models/sum/infer", content=orjson.dumps(GOOD))
    assert after.status_code == 200 and after.json()["outputs"][0]["data"] == [6.0]


# ---- 1. element counts are checked against the bytes present before anything is allocated


@pytest.mark.parametrize(
    ("datatype", "shape"),
    [("BYTES", [200_000_000]), ("BYTES", [10**12]), ("FP32", [10**12]), ("INT8", [200_000_000]), ("BOOL", [10**9])],
)
async def test_a_binary_shape_that_lies_about_its_size_allocates_nothing(datatype, shape):
    tensor = {"name": "x", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": 4}}
    content, headers = binary_request({"inputs": [tensor]}, b"\0\0\0\0")
    async with serve_in_process(EchoModel(name="echo"), SumModel(name="sum")) as client:
        response, peak = await peak_bytes_of(client.post("/v2/models/echo/infer", content=content, headers=headers))
        assert response.status_code == 400, response.text
        assert "bytes" in response.json()["error"]
        assert peak < 2_000_000, f"a {len(content)}-byte request made the server allocate {peak} bytes"
        await still_serves(client)


@pytest.mark.parametrize("shape", [[10**12], [0, 10**30], [2**62, 2**62], [1] * 100])
async def test_a_json_shape_numpy_cannot_hold_is_a_400(shape):
    tensor = {"name": "x", "datatype": "FP32", "shape": shape, "data": []}
    async with serve_in_process(EchoModel(name="echo"), SumModel(name="sum")) as client:
        response = await client.post("/v2/models/echo/infer", json={"inputs": [tensor]})
        assert response.status_code == 400, response.text
        await still_serves(client)


# ---- 3. metric label values come from a bounded set


async def metric_series(client) -> int:
    text = (await client.get("/metrics")).text
    return sum(len(family.samples) for family in text_string_to_metric_families(text))


async def test_unknown_operations_and_models_add_no_metric_series():
    async with serve_in_process(SumModel(name="sum")) as client:
        for i in range(3):  # every label value that the bounded set has is created once
            await client.post(f"/v2/models/sum/op{i}", json={})
            await client.post(f"/v2/models/nope{i}/infer", json=GOOD)
            await client.post("/v2/models/sum/infer", content=b"{")
        before = await metric_series(client)
        for i in range(3, 200):
            assert (await client.post(f"/v2/models/sum/op{i}", json={})).status_code == 404
            assert (await client.post(f"/v2/models/nope{i}/infer", json=GOOD)).status_code == 404
            assert (await client.post(f"/v2/models/sum/versions/{i}/infer", json=GOOD)).status_code == 404
        assert await metric_series(client) == before
        text = (await client.get("/metrics")).text
        assert "op199" not in text and "nope199" not in text


async def test_requests_that_fail_before_a_model_is_resolved_are_counted():
    async with serve_in_process(SumModel(name="sum"), http={"max_body_bytes": 1024}) as client:
        await client.post("/v2/models/nope/infer", json=GOOD)  # 404
        await client.post("/v2/models/sum/infer", content=b"x" * 2048)  # 413
        await client.post("/", content=b"{")  # 400: malformed body, so no model named
        await client.post("/v2/models/sum/frob", json={})  # 404 under the served model
        text = (await client.get("/metrics")).text
    samples = {
        (s.labels.get("model"), s.labels.get("operation"), s.labels.get("status")): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "v2serve_requests"
        for s in family.samples
    }
    assert samples[("", "unknown", "404")] == 1
    assert samples[("", "unknown", "413")] == 1
    assert samples[("", "unknown", "400")] == 1
    assert samples[("sum", "unknown", "404")] == 1


# ---- 8. errors that were 500 are 400, and lenient parsing is strict


async def test_json_nested_past_the_parser_limit_is_a_400():
    deep = b"[" * 1100 + b"]" * 1100
    padding = b'"' + b"p" * 9000 + b'"'  # over 8 KB: the simdjson route
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": ' + deep + b'}], "id": ' + padding
    async with serve_in_process(EchoModel(name="echo"), SumModel(name="sum")) as client:
        response = await client.post("/v2/models/echo/infer", content=body + b"}")
        assert response.status_code == 400 and "malformed JSON" in response.json()["error"]
        await still_serves(client)


@pytest.mark.parametrize("depth", [975, 1000, 1020])
async def test_bytes_nested_close_to_the_depth_limit_is_a_400_not_a_recursion_error(depth):
    data = "[" * depth + '"a"' + "]" * depth
    body = '{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [2], "data": ' + data + "}]}"
    async with serve_in_process(EchoModel(name="echo"), SumModel(name="sum")) as client:
        response = await client.post("/v2/models/echo/infer", content=body.encode())
        assert response.status_code == 400, response.text
        assert "nested deeper than its shape [2] has dimensions" in response.json()["error"]
        await still_serves(client)


def truncated_gzip() -> bytes:
    return gzip.compress(orjson.dumps(GOOD))[:-6]


@pytest.mark.parametrize(
    ("encoding", "content", "fragment"),
    [
        ("gzip", truncated_gzip(), "truncated"),
        ("gzip", gzip.compress(orjson.dumps(GOOD)) + b"garbage", "after the end"),
        ("deflate", zlib.compress(orjson.dumps(GOOD)) + b"x", "after the end"),
        ("deflate", zlib.compress(orjson.dumps(GOOD))[:-3], "truncated"),
    ],
    ids=["truncated-gzip", "gzip-trailing-garbage", "deflate-trailing-garbage", "truncated-deflate"],
)
async def test_compressed_bodies_must_be_whole_and_alone(encoding, content, fragment):
    async with serve_in_process(SumModel(name="sum")) as client:
        response = await client.post("/v2/models/sum/infer", content=content, headers={"content-encoding": encoding})
        assert response.status_code == 400 and fragment in response.json()["error"]
        await still_serves(client)


async def test_concatenated_gzip_members_are_one_body():
    half = len(orjson.dumps(GOOD)) // 2
    raw = orjson.dumps(GOOD)
    content = gzip.compress(raw[:half]) + gzip.compress(raw[half:])
    async with serve_in_process(SumModel(name="sum")) as client:
        response = await client.post("/v2/models/sum/infer", content=content, headers={"content-encoding": "gzip"})
        assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [6.0]


@pytest.mark.parametrize("length", ["21_0", "+210", " 210", "210 ", "٢١٠", "0x10"])
async def test_binary_header_length_takes_ascii_digits_only(length):
    async with serve_in_process(SumModel(name="sum")) as client:
        body = b"x" * 300
        response = await client.post(
            "/v2/models/sum/infer", content=body, headers={"inference-header-content-length": length.encode()}
        )
        assert response.status_code == 400, response.text
        assert "decimal digits only" in response.json()["error"]


@pytest.mark.parametrize(
    ("datatype", "data"),
    [("FP16", [65520.0]), ("FP16", [1e6] * 3000), ("FP32", [1e300]), ("FP32", [10**400]), ("FP64", [10**400])],
    ids=["fp16", "fp16-simdjson-route", "fp32", "fp32-huge-int", "fp64-huge-int"],
)
async def test_floats_beyond_the_datatypes_range_are_a_400_not_an_infinity(datatype, data):
    import json

    body = json.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": [len(data)], "data": data}]})
    async with serve_in_process(EchoModel(name="echo"), SumModel(name="sum")) as client:
        response = await client.post("/v2/models/echo/infer", content=body.encode())
        assert response.status_code == 400, response.text
        # orjson refuses numbers past a double's range as malformed JSON; the others are out of the datatype's.
        assert any(reason in response.json()["error"] for reason in ("outside the range", "malformed JSON"))
        await still_serves(client)
