"""A handler's JSON, read and written as TorchServe's worker reads and writes it (json.loads, json.dumps with
indent=2), byte for byte, though v2serve uses orjson where the two agree."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import random
import struct
import uuid

import numpy as np
import pytest

from v2serve.models.torchserve.handler import _json_as_torchserve_reads_it, _json_as_torchserve_writes_it


class _Text(str):
    pass


@dataclasses.dataclass
class _Point:
    x: int


@pytest.mark.parametrize(
    "value",
    [
        [0.1, 0.2, 1.0],
        {"a": [1, 2.5, {"b": None, "c": True}], "d": "x"},
        [],
        {},
        [[], {}, [{"k": []}]],
        [1e-05, 1.5e-07, 1e16],  # orjson writes 0.00001; exponents
        ["é", "\u2028"],  # json escapes non-ASCII (ensure_ascii), orjson writes UTF-8
        ["\x7f", "\x00\x1f"],  # json escapes DEL too
        {"n": float("nan")},  # json writes NaN, orjson null
        [float("inf")],
        {1: 2},  # json turns the key into a string, orjson refuses it
        [2**70],  # beyond orjson's 64 bits
        [-(2**63), 2**64 - 1],
        ("t", 1),
        [_Text("sub")],
        ["e-5 and 0.00001 as text"],  # marks inside strings are innocent: only slower
    ],
)
def test_json_answers_are_the_bytes_torchserves_worker_writes(value):
    assert _json_as_torchserve_writes_it(value) == json.dumps(value, indent=2).encode("utf-8")


def _random_float(rng: random.Random) -> float:
    kind = rng.random()
    if kind < 0.3:
        return rng.uniform(-1, 1) * 10 ** rng.randint(-30, 30)
    if kind < 0.5:
        return float(struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0])  # any double, NaN included
    if kind < 0.8:
        return float(np.float32(rng.gauss(0, 10 ** rng.randint(-8, 8))))  # a model's float32 output
    return rng.randint(-(10**18), 10**18) / 10 ** rng.randint(0, 20)


def _random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.random()
    if depth > 3 or kind < 0.5:
        leaf = rng.random()
        if leaf < 0.6:
            return _random_float(rng)
        if leaf < 0.7:
            return rng.randint(-(2**70), 2**70) if rng.random() < 0.1 else rng.randint(-1000, 1000)
        if leaf < 0.8:
            return "".join(chr(rng.choice([rng.randint(0, 127), rng.randint(0, 0x3000)])) for _ in range(4))
        return rng.choice([None, True, False])
    if kind < 0.8:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {"".join(rng.choice("ae0.1+-") for _ in range(3)): _random_value(rng, depth + 1) for _ in range(3)}


def test_random_answers_are_written_as_json_writes_them():
    rng = random.Random(7)
    for _ in range(5000):
        value = _random_value(rng)
        assert _json_as_torchserve_writes_it(value) == json.dumps(value, indent=2).encode("utf-8"), value


def test_json_answers_that_cannot_be_json_raise_as_json_does():
    with pytest.raises(TypeError):
        _json_as_torchserve_writes_it({"x": object()})
    with pytest.raises(TypeError):
        _json_as_torchserve_writes_it([_Point(1)])  # orjson would write it; TorchServe's worker cannot
    with pytest.raises(TypeError):
        _json_as_torchserve_writes_it([datetime.date(2026, 1, 1)])
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        _json_as_torchserve_writes_it(loop)


def test_an_enum_or_a_uuid_is_written_as_its_value_where_torchserves_worker_fails():
    class Colour(enum.Enum):
        RED = "red"

    assert json.loads(_json_as_torchserve_writes_it([Colour.RED, uuid.UUID(int=1)])) == [
        "red",
        "00000000-0000-0000-0000-000000000001",
    ]
    with pytest.raises(TypeError):
        json.dumps([Colour.RED])


@pytest.mark.parametrize(
    "text",
    [
        b"[0.5, -1.0, 2.0]",
        b'{"data": [1, 2], "name": "x"}',
        b"[12345678901234567890123]",  # beyond 64 bits: orjson reads a float, json the exact integer
        b"-98765432109876543210",
        b'{"id": 99999999999999999999, "x": 1}',
        b"[-9223372036854775809]",
        b"[9223372036854775807, 18446744073709551615]",
        b"[1.2345678901234567890123, 0.000022688579047706028, 1e-1234567890123456789]",
        b"[NaN, Infinity, -Infinity]",  # json only
        b"[1e400]",
        b'"\\ud800"',  # a lone surrogate: json only
        '{"a": "\u00e9"}'.encode("utf-16"),  # json detects UTF-16
        b'{"a": 1, "a": 2}',
    ],
)
def test_json_bodies_are_read_as_json_loads_reads_them(text):
    read, expected = _json_as_torchserve_reads_it(text), json.loads(text)
    assert repr(read) == repr(expected)  # repr: NaN != NaN, and 1 == 1.0 would hide a float read for an int


def test_what_json_refuses_is_refused():
    for text in (b"[1,", b"", b"\xff", b"{'a': 1}"):
        with pytest.raises(ValueError):
            _json_as_torchserve_reads_it(text)
