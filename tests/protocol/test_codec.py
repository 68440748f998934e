import numpy as np
import orjson
import pytest

from v2serve.errors import InferenceError, InvalidRequest
from v2serve.protocol.codec import (
    bf16_to_float32,
    binary_data,
    decode_binary_tensor,
    decode_json_tensor,
    float32_to_bf16,
    json_data,
)
from v2serve.protocol.datatypes import DATATYPE_TO_NUMPY, datatype_of
from v2serve.protocol.jsonio import dumps
from v2serve.protocol.types import RequestInput

NUMERIC = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"]


def sample(datatype: str) -> np.ndarray:
    dtype = DATATYPE_TO_NUMPY[datatype]
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([[info.min, 0, 1], [2, info.max - 1, info.max]], dtype=dtype)
    return np.array([[-1.5, 0.0, 0.25], [3.0, 1e-3, 65000.0]], dtype=dtype)


@pytest.mark.parametrize("datatype", NUMERIC)
def test_json_round_trip_every_numeric_datatype(datatype):
    expected = sample(datatype)
    wire = orjson.loads(dumps({"data": json_data("t", expected, datatype)}))["data"]
    decoded = decode_json_tensor(RequestInput("t", [2, 3], datatype, wire))
    assert decoded.dtype == DATATYPE_TO_NUMPY[datatype]
    np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize("datatype", NUMERIC)
def test_binary_round_trip_every_numeric_datatype(datatype):
    expected = sample(datatype)
    raw = binary_data(expected, datatype)
    assert len(raw) == expected.size * expected.dtype.itemsize
    decoded = decode_binary_tensor(RequestInput("t", [2, 3], datatype), memoryview(raw))
    np.testing.assert_array_equal(decoded, expected)


def test_bytes_round_trip_json_and_binary_keeps_non_ascii():
    values = np.array(["héllo", "世界", "", "emoji 🎉"], dtype=object)
    wire = json_data("t", values, "BYTES")
    decoded = decode_json_tensor(RequestInput("t", [2, 2], "BYTES", [wire[:2], wire[2:]]))
    assert decoded.tolist() == [[s.encode() for s in values[:2]], [s.encode() for s in values[2:]]]
    raw = binary_data(decoded, "BYTES")
    again = decode_binary_tensor(RequestInput("t", [4], "BYTES"), memoryview(raw))
    assert [b.decode() for b in again] == list(values)


def test_bf16_binary_is_two_bytes_per_element_and_exact_for_representable_values():
    values = np.array([1.0, -2.5, 0.15625, 3.0e38], dtype=np.float32)
    raw = binary_data(values, "BF16")
    assert len(raw) == 8
    decoded = decode_binary_tensor(RequestInput("t", [4], "BF16"), memoryview(raw))
    np.testing.assert_array_equal(decoded[:3], values[:3])
    assert decoded[3] == pytest.approx(3.0e38, rel=1e-2)


def test_bf16_rounds_to_nearest():
    assert bf16_to_float32(float32_to_bf16(np.array([1.00390625], dtype=np.float32)))[0] == 1.0
    assert bf16_to_float32(float32_to_bf16(np.array([1.01171875], dtype=np.float32)))[0] == 1.015625


@pytest.mark.parametrize("datatype", ["INT32", "FP32", "FP16"])
def test_nested_and_flat_data_decode_the_same(datatype):
    flat = decode_json_tensor(RequestInput("t", [2, 2], datatype, [1, 2, 3, 4]))
    nested = decode_json_tensor(RequestInput("t", [2, 2], datatype, [[1, 2], [3, 4]]))
    np.testing.assert_array_equal(flat, nested)
    assert flat.shape == (2, 2) and flat.dtype == nested.dtype == DATATYPE_TO_NUMPY[datatype]


def test_null_decodes_as_nan_and_nan_encodes_as_null():
    decoded = decode_json_tensor(RequestInput("t", [3], "FP32", [1.0, None, 2.0]))
    assert np.isnan(decoded[1]) and decoded[2] == 2.0
    body = dumps({"data": json_data("t", np.array([np.nan, np.inf, -np.inf, 1.0], dtype=np.float32), "FP32")})
    assert orjson.loads(body) == {"data": [None, None, None, 1.0]}


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "message"),
    [
        ("INT32", [3], [1, 2], r"has 2 values but shape \[3\] needs 3"),
        ("INT32", [2], [1.5, 2], "non-integer"),
        ("INT8", [2], [1, 300], "outside the range of INT8"),
        ("UINT8", [1], [-1], "outside the range of UINT8"),
        ("INT16", [5000], [*range(4999), 40000], "outside the range of INT16"),  # beyond the small-tensor path
        ("UINT64", [1], [2**64], "not integers in the range of UINT64"),
        ("UINT64", [2], [-1, 2**63], "not integers in the range of UINT64"),
        ("FP32", [2], ["a", "b"], "holds values that are not FP32"),
        ("FP32", [2], [{"a": 1}, 2], "holds values that are not FP32"),
        ("BOOL", [2], [1, 0], "non-boolean"),
        ("INT32", [2, 2], [[1, 2], [3]], "ragged"),
        ("FP32", [2, 2], [[1.0, 2.0], [3.0]], "ragged"),
        ("FP32", [3], [1.0, [2.0], 3.0], "ragged"),
        ("BYTES", [2], ["a", 1], "holds a int"),
        ("FP32", [1], None, "neither 'data' nor 'binary_data_size'"),
    ],
)
def test_json_decoding_rejects_mismatches(datatype, shape, data, message):
    with pytest.raises(InvalidRequest, match=message):
        decode_json_tensor(RequestInput("t", shape, datatype, data))


def test_binary_size_must_match_shape():
    with pytest.raises(InvalidRequest, match="has 8 bytes of data but shape"):
        decode_binary_tensor(RequestInput("t", [3], "INT32"), memoryview(b"\0" * 8))


def test_binary_bytes_rejects_truncated_and_trailing_data():
    good = binary_data(np.array([b"ab", b"c"], dtype=object), "BYTES")
    with pytest.raises(InvalidRequest, match="longer than its data"):
        decode_binary_tensor(RequestInput("t", [2], "BYTES"), memoryview(good[:-1]))
    with pytest.raises(InvalidRequest, match="more BYTES data"):
        decode_binary_tensor(RequestInput("t", [1], "BYTES"), memoryview(good))


def test_json_output_of_non_utf8_bytes_is_a_clear_error():
    with pytest.raises(InferenceError, match="not UTF-8"):
        json_data("out", np.array([b"\xff\xfe"], dtype=object), "BYTES")


def test_datatype_of_maps_strings_to_bytes():
    assert datatype_of(np.array(["a", "b"])) == "BYTES"
    assert datatype_of(np.array([b"a"])) == "BYTES"
    assert datatype_of(np.zeros(2, dtype=np.float16)) == "FP16"
    with pytest.raises(TypeError):
        datatype_of(np.zeros(2, dtype=np.complex64))


@pytest.mark.parametrize(
    ("datatype", "data", "expected"),
    [
        ("INT32", [1.0, 2.0, -3.0], [1, 2, -3]),
        ("INT64", [1, 2.0, 2.0**62], [1, 2, 2**62]),
        ("UINT8", [255.0, 0.0], [255, 0]),
    ],
)
def test_integer_tensors_accept_integral_floats(datatype, data, expected):
    decoded = decode_json_tensor(RequestInput("t", [len(data)], datatype, data))
    assert decoded.dtype.kind in "iu" and decoded.tolist() == expected


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("INT32", [1.0, 1.5], "non-integer"),
        ("INT32", [float("nan")], "non-integer"),
        ("INT32", [2147483648.0], "outside the range of INT32"),
        ("INT64", [2.0**63], "outside the range of INT64"),
        ("UINT8", [-1.0], "outside the range of UINT8"),
    ],
)
def test_integral_floats_out_of_range_or_fractional_are_refused(datatype, data, message):
    with pytest.raises(InvalidRequest, match=message):
        decode_json_tensor(RequestInput("t", [len(data)], datatype, data))


def test_bytes_data_nested_deeper_than_the_shape_is_refused():
    nested: list = ["x"]
    for _ in range(980):
        nested = [nested]
    for shape, data in (([1], [["a"]]), ([1], nested), ([1, 1], [[["a"]]])):
        with pytest.raises(InvalidRequest, match="nested deeper than its shape"):
            decode_json_tensor(RequestInput("s", shape, "BYTES", data))
    assert decode_json_tensor(RequestInput("s", [1, 2], "BYTES", [["a", "b"]])).tolist() == [[b"a", b"b"]]
    assert decode_json_tensor(RequestInput("s", [1, 2], "BYTES", ["a", "b"])).tolist() == [[b"a", b"b"]]
    assert decode_json_tensor(RequestInput("s", [1], "BYTES", "a")).tolist() == [b"a"]
