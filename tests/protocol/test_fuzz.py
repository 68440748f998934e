"""Fuzzing the request parser and tensor codec through the whole core (the mock server answers as HTTP does).

Whatever a request holds (every datatype, JSON and binary bodies, random shapes, sizes that lie, structures
that are not requests at all), the answer is a 2xx, or a 4xx with an {"error"} body: never a 5xx, and never
an allocation of more than a small multiple of the body. The budget is fixed (``EXAMPLES`` per property), so
the run takes the same time in CI every time; a failure prints the example to reproduce it. Run with a larger
``EXAMPLES`` now and then: 2,500 per property passed when this was written.
"""

from __future__ import annotations

import json
import os
import tracemalloc

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures import SumModel
from v2serve import Model
from v2serve.mock import MockServer
from v2serve.protocol.datatypes import DATATYPE_TO_NUMPY
from v2serve.server import ModelServer

EXAMPLES = 250
ALLOWED_GROWTH = 64
"""The most a request may allocate, as a multiple of its body, plus a fixed ``ALLOWED_BASE``."""
ALLOWED_BASE = 2_000_000

DATATYPES = [*DATATYPE_TO_NUMPY, "STRING", "FP128", "", "int32"]
# In CI the examples are the same every run, so that whether a submission lands never rests on luck; run
# locally (or raise EXAMPLES) to explore new ground.
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    derandomize=os.environ.get("CI") == "true",
)


class Sizes(Model):
    """Declares no tensors, so every input is decoded; answers each input's element count."""

    def predict(self, inputs):
        return {"sizes": np.array([array.size for array in inputs.values()], dtype=np.int64)}


@pytest.fixture(scope="module")
def server():
    with MockServer(ModelServer([Sizes(name="sizes"), SumModel(name="sum")])) as mock:
        yield mock


def send(server, path: str, body: bytes, headers: dict[str, str] | None = None):
    tracemalloc.start()
    try:
        reply = server.request(path, body, "POST", headers)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert reply.status < 500, f"{reply.status}: {reply.body[:500]!r}"
    if reply.status >= 400:
        assert isinstance(orjson.loads(reply.body)["error"], str)
    assert peak <= ALLOWED_GROWTH * len(body) + ALLOWED_BASE, f"{peak} bytes allocated for {len(body)}"
    return reply


def dumps(value) -> bytes:
    """JSON as a client may write it: integers of any size included (orjson stops at 64 bits)."""
    return json.dumps(value).encode()


dimensions = st.one_of(
    st.integers(0, 6), st.integers(-3, 10**4), st.sampled_from([2**31, 2**62, 2**63, 10**12, 10**30])
)
shapes = st.one_of(st.lists(dimensions, max_size=5), st.lists(st.just(1), min_size=30, max_size=80), st.none())
scalars = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=5),
    st.none(),
)
data = st.recursive(
    st.lists(scalars, max_size=40),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=120,
)
numeric_rows = st.integers(0, 3000).map(lambda n: list(range(n)))  # large enough for the simdjson route


@st.composite
def json_tensors(draw):
    tensor = {
        "name": draw(st.sampled_from(["INPUT0", "x", "y"])),
        "datatype": draw(st.sampled_from(DATATYPES)),
        "shape": draw(shapes),
        "data": draw(st.one_of(data, numeric_rows, scalars)),
    }
    if draw(st.booleans()):
        tensor["parameters"] = draw(st.dictionaries(st.text(max_size=8), scalars, max_size=2))
    for key in draw(st.sets(st.sampled_from(["name", "datatype", "shape", "data"]), max_size=1)):
        del tensor[key]
    return tensor


@st.composite
def json_requests(draw):
    request = {"inputs": draw(st.lists(json_tensors(), max_size=3))}
    if draw(st.booleans()):
        request["id"] = draw(st.one_of(st.text(max_size=5), st.integers()))
    if draw(st.booleans()):
        request["parameters"] = draw(
            # Not "timeout": a deadline the client sets too short is honestly a 504.
            st.dictionaries(st.sampled_from(["binary_data_output", "k"]), scalars, max_size=2)
        )
    if draw(st.booleans()):
        request["outputs"] = draw(st.lists(st.fixed_dictionaries({"name": st.text(max_size=6)}), max_size=2))
    return request


any_json = st.recursive(scalars, lambda inner: st.lists(inner) | st.dictionaries(st.text(max_size=6), inner))


@FUZZ_SETTINGS
@given(request=json_requests(), path=st.sampled_from(["/v2/models/sizes/infer", "/v2/models/sum/infer"]))
def test_any_json_request_is_answered_2xx_or_4xx(server, request, path):
    send(server, path, dumps(request))


@FUZZ_SETTINGS
@given(document=any_json, path=st.sampled_from(["/v2/models/sizes/infer", "/v2/models/sum/infer_dict", "/"]))
def test_any_json_document_is_answered_2xx_or_4xx(server, document, path):
    send(server, path, dumps(document))


@FUZZ_SETTINGS
@given(raw=st.binary(max_size=300), path=st.sampled_from(["/v2/models/sizes/infer", "/v2/models/sum/infer"]))
def test_any_bytes_are_answered_2xx_or_4xx(server, raw, path):
    send(server, path, raw)


@st.composite
def binary_requests(draw):
    tensors = []
    for _ in range(draw(st.integers(1, 3))):
        datatype = draw(st.sampled_from(DATATYPES))
        shape = draw(shapes)
        tensors.append(
            {
                "name": draw(st.sampled_from(["a", "b", "c", "a"])),
                "datatype": datatype,
                "shape": shape,
                "parameters": {"binary_data_size": draw(st.one_of(st.integers(-2, 64), st.just(2**40), scalars))},
            }
        )
    header = dumps({"inputs": tensors})
    payload = draw(st.binary(max_size=256))
    declared = draw(
        st.one_of(
            st.just(str(len(header))),
            st.integers(-5, len(header) + len(payload) + 5).map(str),
            st.sampled_from(["", "+1", "1_0", " 3", "x"]),
        )
    )
    return header + payload, {"inference-header-content-length": declared}


@FUZZ_SETTINGS
@given(request=binary_requests(), path=st.sampled_from(["/v2/models/sizes/infer", "/v2/models/sum/infer"]))
def test_any_binary_request_is_answered_2xx_or_4xx(server, request, path):
    body, headers = request
    send(server, path, body, headers)


@st.composite
def well_formed_binary(draw):
    """Binary requests whose framing is right, so the fuzzing reaches the element decoding itself."""
    datatype = draw(st.sampled_from(list(DATATYPE_TO_NUMPY)))
    shape = draw(st.lists(st.one_of(st.integers(0, 5), st.sampled_from([10**12, 2**40])), max_size=3))
    raw = draw(st.binary(max_size=200))
    tensor = {"name": "x", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": len(raw)}}
    header = orjson.dumps({"inputs": [tensor]})
    return header + raw, {"inference-header-content-length": str(len(header))}


@FUZZ_SETTINGS
@given(request=well_formed_binary())
def test_framed_binary_data_of_any_content_is_answered_2xx_or_4xx(server, request):
    body, headers = request
    send(server, "/v2/models/sizes/infer", body, headers)
