"""Data points without names, datatypes or shapes fill the model's declared inputs, checked as v2 tensors are."""

import numpy as np
import pytest

from v2serve.errors import InvalidRequest
from v2serve.protocol.datapoints import decode_datapoints, decode_fields, decode_named_values
from v2serve.protocol.schema import ModelSchema
from v2serve.protocol.types import TensorSpec

TABLE = ModelSchema.of("table", [TensorSpec("x", "INT32", [-1, 3])], [])
TEXT = ModelSchema.of("text", [TensorSpec("text", "BYTES", [-1])], [])
UNDECLARED = ModelSchema.of("free", [], [])
TWO = ModelSchema.of("two", [TensorSpec("a", "FP32", [-1]), TensorSpec("b", "BYTES", [-1])], [])


def test_a_list_of_points_is_a_batch_and_a_lone_point_a_batch_of_one():
    batch = decode_datapoints(TABLE, [[1, 2, 3], [4, 5, 6]])
    assert batch.inputs["x"].dtype == np.int32 and batch.inputs["x"].shape == (2, 3) and not batch.lone
    one = decode_datapoints(TABLE, [1, 2, 3.0])
    assert one.inputs["x"].tolist() == [[1, 2, 3]] and one.lone


def test_instances_are_a_batch_whatever_their_shape():
    with pytest.raises(InvalidRequest, match="shape"):
        decode_datapoints(TABLE, [1, 2, 3], batch=True)


def test_values_are_checked_against_the_datatype():
    with pytest.raises(InvalidRequest, match="non-integer"):
        decode_datapoints(TABLE, [1, 2, 3.5])
    with pytest.raises(InvalidRequest, match="ragged"):
        decode_datapoints(TABLE, [[1, 2, 3], [4, 5]])


def test_strings_fill_a_bytes_input():
    decoded = decode_datapoints(TEXT, ["a", "b"])
    assert decoded.inputs["text"].tolist() == [b"a", b"b"]


def test_a_model_that_declares_nothing_gets_input0_typed_by_its_values():
    assert decode_datapoints(UNDECLARED, [1.5, 2]).inputs["input0"].dtype == np.float64
    assert decode_datapoints(UNDECLARED, [1, 2]).inputs["input0"].dtype == np.int64
    with pytest.raises(InvalidRequest, match="declares no datatype"):
        decode_datapoints(UNDECLARED, [{"a": 1}])


def test_several_inputs_need_names():
    with pytest.raises(InvalidRequest, match="has 2"):
        decode_datapoints(TWO, [1.0])
    decoded = decode_named_values(TWO, {"a": 1.5, "b": ["x", "y"]})
    assert decoded.inputs["a"].tolist() == [1.5] and decoded.inputs["b"].tolist() == [b"x", b"y"]


def test_raw_fields_go_as_bytes_or_as_json_points_by_the_inputs_datatype():
    decoded = decode_fields(TWO, {"a": [b"1.5", b"2"], "b": [b"\xff\x00", b""]})
    assert decoded.inputs["a"].tolist() == [1.5, 2.0] and decoded.inputs["b"].tolist() == [b"\xff\x00", b""]
    with pytest.raises(InvalidRequest, match=r"needs input\(s\) \['b'\]"):
        decode_fields(TWO, {"a": [b"1"]})
