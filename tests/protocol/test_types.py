import pytest

from v2serve.errors import InvalidRequest
from v2serve.protocol.binary import parse_header_length, slice_binary_inputs
from v2serve.protocol.types import parse_inference_request


def tensor(**overrides):
    return {"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]} | overrides


def test_parses_a_full_request():
    request = parse_inference_request(
        {
            "id": "7",
            "parameters": {"a": 1},
            "inputs": [tensor(parameters={"p": True})],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    )
    assert request.id == "7" and request.parameters == {"a": 1}
    assert request.inputs[0].parameters == {"p": True}
    assert request.outputs[0].name == "y" and request.outputs[0].parameters == {"binary_data": True}


def test_string_is_an_alias_of_bytes_and_datatypes_are_case_insensitive():
    request = parse_inference_request({"inputs": [tensor(datatype="STRING"), tensor(name="z", datatype="fp32")]})
    assert [t.datatype for t in request.inputs] == ["BYTES", "FP32"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "the request body must be an object"),
        ({}, "missing 'inputs'"),
        ({"inputs": {}}, "'inputs' must be an array"),
        ({"inputs": [tensor(), tensor()]}, "unique"),
        ({"inputs": [{"shape": [1], "datatype": "FP32"}]}, "missing 'name'"),
        ({"inputs": [tensor(shape=[-1])]}, "non-negative integers"),
        ({"inputs": [tensor(shape="1")]}, "shape must be an array"),
        ({"inputs": [tensor(datatype="FP128")]}, "unsupported datatype 'FP128'"),
        ({"inputs": [tensor(datatype=["FP32"])]}, r"unsupported datatype \['FP32'\]"),  # not a TypeError
        ({"inputs": [tensor(shape=[1, True])]}, "non-negative integers"),
        ({"inputs": [tensor()], "id": 5}, "'id' must be a string"),
        ({"inputs": [tensor()], "parameters": []}, "parameters must be an object"),
        ({"inputs": [tensor()], "outputs": [{}]}, r"outputs\[0\].name must be a string"),
    ],
)
def test_structural_errors_name_the_field(body, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_inference_request(body)


def test_binary_slices_follow_input_order_and_must_cover_the_data():
    request = parse_inference_request(
        {
            "inputs": [
                tensor(name="a", data=None, parameters={"binary_data_size": 2}),
                tensor(name="b"),
                tensor(name="c", data=None, parameters={"binary_data_size": 3}),
            ]
        }
    )
    slices = slice_binary_inputs(request, memoryview(b"AABBB"))
    assert bytes(slices["a"]) == b"AA" and bytes(slices["c"]) == b"BBB" and "b" not in slices
    with pytest.raises(InvalidRequest, match="no input's binary_data_size claims"):
        slice_binary_inputs(request, memoryview(b"AABBBX"))
    with pytest.raises(InvalidRequest, match="only 2 remain"):
        slice_binary_inputs(request, memoryview(b"AABB"))


def test_header_length_is_checked_against_the_body():
    assert parse_header_length("10", 12) == 10
    with pytest.raises(InvalidRequest, match="must be an integer"):
        parse_header_length("ten", 12)
    with pytest.raises(InvalidRequest, match="but the body has 12 bytes"):
        parse_header_length("13", 12)
