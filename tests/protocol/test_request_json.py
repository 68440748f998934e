import numpy as np
import orjson
import pytest

from v2serve.errors import InvalidRequest
from v2serve.protocol import request_json
from v2serve.protocol.codec import decode_json_tensor
from v2serve.protocol.request_json import loads_inference_request
from v2serve.protocol.types import parse_inference_request

pytestmark = pytest.mark.skipif(request_json.simdjson is None, reason="pysimdjson has no wheel for this Python")


@pytest.fixture(autouse=True)
def _every_document_takes_the_simdjson_route(monkeypatch, request):
    if "threshold" not in request.node.name:
        monkeypatch.setattr(request_json, "_MIN_BYTES", 0)


def _request(datatype: str, shape: list[int], data: object, **extra: object) -> bytes:
    tensor = {"name": "x", "datatype": datatype, "shape": shape, "data": data, **extra}
    return orjson.dumps({"id": "r1", "parameters": {"p": [1, {"q": None}]}, "inputs": [tensor]})


def _decoded(document: object) -> np.ndarray | str:
    """The tensor v2serve decodes from a parsed document, or the error it answers with."""
    try:
        request = parse_inference_request(document)
        return decode_json_tensor(request.inputs[0])
    except InvalidRequest as exc:
        return f"InvalidRequest: {exc}"


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "dtype"),
    [
        ("FP32", [1, 4], [0.1, -2.5, 3, 1e-7], np.float64),
        ("FP64", [2, 2], [[0.1, 2.0], [3.0, 4.5]], np.float64),
        ("INT32", [4], [1, -2, 2**31 - 1, -(2**31)], np.int64),
        ("UINT64", [2], [0, 2**64 - 1], np.uint64),
        ("INT8", [2, 3], [[1, 2, 3], [4, 5, 6]], np.int64),
    ],
)
def test_numeric_data_arrives_as_an_array_that_decodes_like_the_orjson_route(datatype, shape, data, dtype):
    body = _request(datatype, shape, data)
    document = loads_inference_request(body)
    assert isinstance(document["inputs"][0]["data"], np.ndarray)
    assert document["inputs"][0]["data"].dtype == dtype
    fast, plain = _decoded(document), _decoded(orjson.loads(body))
    assert fast.dtype == plain.dtype and fast.shape == plain.shape == tuple(shape)
    np.testing.assert_array_equal(fast, plain)
    assert {k: v for k, v in document.items() if k != "inputs"} == {"id": "r1", "parameters": {"p": [1, {"q": None}]}}


@pytest.mark.parametrize(
    ("datatype", "shape", "data"),
    [
        ("FP32", [3], [1.0, None, 2.0]),  # null is NaN
        ("FP32", [2], [True, 2]),
        ("FP32", [2], ["a", "b"]),
        ("FP32", [2, 2], [[1.0, 2.0], [3.0]]),  # ragged rows
        ("FP32", [3], [1.0, [2.0, 3.0]]),  # nested inside a flat array
        ("FP32", [2, 2, 1], [[[1.0], [2.0]], [[3.0], [4.0]]]),  # 3-D
        ("FP32", [0], []),
        ("FP32", [1], 5.0),  # a scalar, not an array
        ("INT32", [2], [1.5, 2]),  # a float where integers belong
        ("INT32", [2], [1, 2**40]),  # out of range for INT32
        ("INT64", [1], [2**63]),  # beyond int64
        ("UINT8", [2], [-1, 2]),
        ("BOOL", [2], [True, False]),
        ("BYTES", [2], ["a", "b"]),
        ("fp32", [2], [1.0, 2.0]),  # an alias takes the orjson route
        ("FP32", [3], [1.0, 2.0]),  # count differs from the shape
    ],
)
def test_everything_else_decodes_or_fails_exactly_as_through_orjson(datatype, shape, data):
    body = _request(datatype, shape, data)
    fast, plain = _decoded(loads_inference_request(body)), _decoded(orjson.loads(body))
    if isinstance(plain, str):
        assert fast == plain
    else:
        assert fast.dtype == plain.dtype
        np.testing.assert_array_equal(fast, plain)


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": "none"}',
        b'{"inputs": [1, {"name": "x"}]}',
        b"[1, 2, 3]",
        b'"text"',
        b'{"id": "a", "id": "b", "inputs": []}',
        b'{"inputs": [{"name": "x", "data": [1], "data": [2], "datatype": "FP32", "shape": [1]}]}',
        b'{"a": {"b": [1, {"c": "\\u00e9"}]}, "inputs": []}',
        # pysimdjson cannot look up a key holding a NUL (found by the OpenAPI fuzzer: it was a 500).
        b'{"\\u0000p": 1, "inputs": []}',
        b'{"inputs": [{"\\u0000": {}, "name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}',
    ],
)
def test_documents_that_are_not_tensor_requests_parse_as_orjson_parses_them(body):
    assert loads_inference_request(body) == orjson.loads(body)


def test_malformed_json_is_an_invalid_request_naming_the_position():
    with pytest.raises(InvalidRequest, match=r"malformed JSON: .*line 1 column 13"):
        loads_inference_request(b'{"inputs": [}')
    with pytest.raises(InvalidRequest, match="malformed JSON"):
        loads_inference_request(b'{"x": "\xff"}')


def test_without_simdjson_every_document_takes_the_orjson_route(monkeypatch):
    monkeypatch.setattr(request_json, "simdjson", None)
    body = _request("FP32", [2], [1.0, 2.0])
    assert loads_inference_request(body) == orjson.loads(body)


def test_threshold_small_documents_take_the_orjson_route_and_large_ones_the_array_route():
    small = _request("FP32", [4], [1.0, 2.0, 3.0, 4.0])
    large = _request("FP32", [4096], np.linspace(0, 1, 4096, dtype=np.float32).tolist())
    assert len(small) < request_json._MIN_BYTES <= len(large)
    assert isinstance(loads_inference_request(small)["inputs"][0]["data"], list)
    assert isinstance(loads_inference_request(large)["inputs"][0]["data"], np.ndarray)


def test_a_reused_parser_leaves_each_documents_arrays_intact():
    first = loads_inference_request(_request("FP64", [3], [1.0, 2.0, 3.0]))
    second = loads_inference_request(_request("FP64", [5], [9.0] * 5))
    assert first["inputs"][0]["data"].tolist() == [1.0, 2.0, 3.0]  # not overwritten by the second parse
    assert second["inputs"][0]["data"].tolist() == [9.0] * 5
    assert request_json._parser(10) is request_json._parser(10)  # one parser per thread, kept


def test_a_parser_still_referenced_sends_the_document_the_orjson_way():
    held = request_json._parser(10).parse(b'{"keep": [1]}')["keep"]  # a proxy into the parser's document
    body = _request("FP32", [2], [1.0, 2.0])
    assert loads_inference_request(body) == orjson.loads(body)
    del held


def test_threads_parse_with_parsers_of_their_own_and_large_documents_with_a_new_one(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    bodies = [_request("INT64", [64], list(range(i, i + 64))) for i in range(32)]
    with ThreadPoolExecutor(4) as pool:
        decoded = list(pool.map(lambda body: loads_inference_request(body)["inputs"][0]["data"].tolist(), bodies * 8))
    assert decoded == [list(range(i, i + 64)) for i in range(32)] * 8
    monkeypatch.setattr(request_json, "_REUSE_LIMIT", 100)
    assert request_json._parser(101) is not request_json._parser(101)
