"""Decoding requests against a model's schema, without a server: the protocol package owns it."""

import numpy as np
import orjson
import pytest

from v2serve.errors import InvalidRequest
from v2serve.protocol.body import Body
from v2serve.protocol.decode import decode_dict_request, decode_request
from v2serve.protocol.outputs import requested_outputs, select_outputs
from v2serve.protocol.schema import ModelSchema
from v2serve.protocol.types import TensorSpec

SCHEMA = ModelSchema.of("sum", [TensorSpec("x", "FP32", [-1, 2])], [TensorSpec("y", "FP32", [-1])])
ROWS = ModelSchema.of("iris", [TensorSpec("rows", "FP64", [-1, 2])], [], feature_names=["a", "b"])


def decode(body: dict, headers=None):
    raw = orjson.dumps(body)
    headers = headers or {}
    return decode_request(SCHEMA, Body.of(raw, headers))


def test_a_request_that_fits_the_schema_decodes_into_numpy():
    decoded = decode({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    assert decoded.inputs["x"].dtype == np.float32 and decoded.inputs["x"].shape == (2, 2)


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        ({"name": "z", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}, "has no input 'z'"),
        ({"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}, "expects [-1, 2]"),
        ({"name": "x", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]}, "must be FP32"),
    ],
)
def test_what_does_not_fit_the_schema_is_refused_naming_it(tensor, fragment):
    with pytest.raises(InvalidRequest, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        decode({"inputs": [tensor]})


def test_a_binary_request_decodes_its_slice_in_place():
    header = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}
    )
    body = header + np.array([1.5, 2.5], dtype="<f4").tobytes()
    headers = {"inference-header-content-length": str(len(header))}
    decoded = decode_request(SCHEMA, Body.of(body, headers))
    assert decoded.inputs["x"].tolist() == [[1.5, 2.5]]


def test_dict_rows_are_ordered_by_feature_names():
    decoded = decode_dict_request(ROWS, {"inputs": [{"b": 2, "a": 1}, {"a": 3, "b": 4}]})
    assert decoded.inputs["rows"].tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_requested_outputs_select_and_pick_binary():
    decoded = decode(
        {
            "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    )
    wanted = requested_outputs(SCHEMA, decoded.request, decoded.all_binary_outputs)
    assert wanted == {"y": True}
    [output] = select_outputs(SCHEMA, {"y": np.ones(1, dtype=np.float32), "extra": np.zeros(1)}, wanted)
    assert (output.name, output.datatype, output.binary) == ("y", "FP32", True)
