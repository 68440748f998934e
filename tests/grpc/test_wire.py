"""Raw input contents taken from a ModelInferRequest's wire bytes: the same message upb parses, no copies."""

from __future__ import annotations

import random

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from v2serve.grpc.generated import inference_pb2 as pb
from v2serve.grpc.wire import MAX_FIELDS, RAW_INPUT_CONTENTS, split_raw_contents


def request_with_everything() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", model_version="2", id="req-1")
    request.parameters["priority"].int64_param = 3
    request.parameters["tag"].string_param = "é"
    for name, shape in (("a", [1, 3]), ("b", [2, 2])):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=shape)
        tensor.parameters["binary"].bool_param = True
    request.outputs.add(name="y").parameters["classification"].int64_param = 2
    request.raw_input_contents.extend([np.arange(3, dtype=np.float32).tobytes(), b"\x00" * 70_000])
    return request


def test_the_rest_parses_to_the_message_without_its_raw_contents_and_the_views_hold_them():
    request = request_with_everything()
    wire = request.SerializeToString()
    split = split_raw_contents(wire)
    assert split is not None
    rest, raw = split
    without = pb.ModelInferRequest()
    without.CopyFrom(request)
    del without.raw_input_contents[:]
    assert pb.ModelInferRequest.FromString(rest) == without
    assert [bytes(view) for view in raw] == list(request.raw_input_contents)
    assert all(view.obj is wire for view in raw)  # views into the bytes grpcio gave: nothing copied


def field(number: int, payload: bytes) -> bytes:
    """One length-delimited field (numbers and lengths below 128 here)."""
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_raw_contents_between_other_fields_keep_their_order_and_the_last_scalar_wins():
    raw_one, raw_two = field(RAW_INPUT_CONTENTS, b"one"), field(RAW_INPUT_CONTENTS, b"two")
    wire = field(1, b"first") + raw_one + field(1, b"last") + raw_two
    rest, raw = split_raw_contents(wire)
    assert [bytes(view) for view in raw] == [b"one", b"two"]
    assert pb.ModelInferRequest.FromString(wire).model_name == "last"
    assert pb.ModelInferRequest.FromString(rest).model_name == "last"


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(pb.ModelInferRequest(model_name="m").SerializeToString(), id="no raw contents"),
        pytest.param(field(RAW_INPUT_CONTENTS, b"abc")[:-1], id="cut inside a field"),
        pytest.param(bytes([RAW_INPUT_CONTENTS << 3 | 2]), id="cut before a length"),
        pytest.param(bytes([1 << 3 | 3]) + field(RAW_INPUT_CONTENTS, b"x"), id="a group"),
        pytest.param(bytes([1 << 3 | 6]) + field(RAW_INPUT_CONTENTS, b"x"), id="wire type 6"),
        pytest.param(b"\x80" * 11 + field(RAW_INPUT_CONTENTS, b"x"), id="a varint over ten bytes"),
        pytest.param(field(RAW_INPUT_CONTENTS, b"x") + bytes([2 << 3 | 1, 0, 0]), id="cut fixed64"),
    ],
)
def test_what_is_not_a_sequence_of_whole_fields_is_left_to_upb(wire):
    assert split_raw_contents(wire) is None


def test_a_message_of_more_fields_than_the_walk_takes_is_left_to_upb():
    # 2-byte varint fields (id field 3 as a varint is a wrong wire type: upb keeps it as an unknown field)
    many = bytes([3 << 3 | 0, 1]) * MAX_FIELDS + field(RAW_INPUT_CONTENTS, b"x" * 100)
    assert split_raw_contents(many) is None
    few = bytes([3 << 3 | 0, 1]) * (MAX_FIELDS - 1) + field(RAW_INPUT_CONTENTS, b"x" * 100)
    assert split_raw_contents(few) is not None


def test_on_damaged_messages_a_split_agrees_with_upb_parsing_the_whole():
    rng = random.Random(7)
    request = request_with_everything()
    del request.raw_input_contents[:]
    base = field(RAW_INPUT_CONTENTS, b"abcd") + request.SerializeToString() + field(RAW_INPUT_CONTENTS, b"efgh")
    splits = 0
    for _ in range(2000):
        wire = bytearray(base if rng.random() < 0.5 else base[: rng.randrange(len(base) + 1)])
        for _ in range(rng.randrange(4)):
            if wire:
                wire[rng.randrange(len(wire))] = rng.randrange(256)
        split = split_raw_contents(bytes(wire))
        if split is None:
            continue
        splits += 1
        rest, raw = split
        try:
            whole = pb.ModelInferRequest.FromString(bytes(wire))
        except DecodeError:
            with pytest.raises(DecodeError):
                pb.ModelInferRequest.FromString(rest)
            continue
        assert [bytes(view) for view in raw] == list(whole.raw_input_contents)
        del whole.raw_input_contents[:]
        assert pb.ModelInferRequest.FromString(rest) == whole
    assert splits > 100  # the damage left many messages whole enough to split
