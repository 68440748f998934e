"""Inference-request JSON whose numeric tensor data is read straight into numpy.

orjson builds a Python number for every element of a tensor's ``data``, which numpy then walks again and
which are freed one by one afterwards: for a 784-float row that is most of the decode, for a 150k-float image
about 10 ms. simdjson (pysimdjson) parses the document without building Python objects; the request's small
fields are then converted as usual, and each flat (or regular 2-D) numeric ``data`` array is copied in C into
a float64, int64 or uint64 buffer that numpy views. codec.decode_json_tensor then checks and casts it as it
does any array.

Anything else (nulls, booleans, strings, deeper nesting, integers outside 64 bits, a document simdjson
refuses) takes the orjson route, so what is accepted, and the errors for what is not, do not change.
One leniency is knowingly left: a number wrapped in its own brackets inside a numeric array (``[1, [2], 3]``)
reads as the bare number, since telling it apart would cost a Python step per element.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from v2serve.protocol.jsonio import loads

try:
    import simdjson
except ImportError:  # no wheel for this Python yet: every document takes the orjson route
    simdjson = None  # type: ignore[assignment]

_BUFFER_TYPES = {
    **dict.fromkeys(("FP16", "FP32", "FP64", "BF16"), "d"),
    **dict.fromkeys(("INT8", "INT16", "INT32", "INT64"), "i"),
    **dict.fromkeys(("UINT8", "UINT16", "UINT32", "UINT64"), "u"),
}
_BUFFER_DTYPES = {"d": np.dtype(np.float64), "i": np.dtype(np.int64), "u": np.dtype(np.uint64)}
_MIN_BYTES = 8192
"""Smaller documents take the orjson route: below about this size (a few hundred numbers), walking
simdjson's proxies costs more than the Python numbers it saves (measured on FP32 and INT32 rows)."""
_ROW_CHECK_LIMIT = 4096
"""Nested data with more rows than this takes the orjson route: checking its rows is a Python step each."""


def loads_inference_request(body: bytes | bytearray | memoryview | str) -> Any:
    """Decode an inference request's JSON; numeric ``inputs[*].data`` arrays come back as 1-D numpy arrays.

    Malformed JSON raises InvalidRequest, with orjson's message (it names the position).
    """
    if simdjson is None or len(body) < _MIN_BYTES:
        return loads(body)
    try:
        document = _parser(len(body)).parse(body)
    except (ValueError, RuntimeError):  # RuntimeError: nested deeper than simdjson's limit (or, see _parser)
        return loads(body)  # orjson decides: the same document, or its error with a position
    if type(document) is not simdjson.Object:
        return _plain(document)
    request = _fields(document, "inputs")
    if request is None:
        return loads(body)
    if type(request.get("inputs")) is simdjson.Array:
        request["inputs"] = [_tensor(item) for item in request["inputs"]]
    return request


_PARSERS = threading.local()
_REUSE_LIMIT = 16 * 1024 * 1024
"""A parser keeps the memory of the largest document it has parsed: a larger document gets one of its own."""


def _parser(size: int) -> Any:
    """This thread's parser, reused: a new one per document allocated (and the kernel zeroed) several times
    the document's size each time, which cost a 1.6 MB tensor three times what parsing it does. Every proxy
    into a document is gone before this module returns it; were one still alive, simdjson refuses to reuse
    the parser with a RuntimeError, and that document takes the orjson route."""
    if size > _REUSE_LIMIT:
        return simdjson.Parser()
    parser = getattr(_PARSERS, "parser", None)
    if parser is None:
        parser = _PARSERS.parser = simdjson.Parser()
    return parser


def _fields(obj: Any, kept: str) -> dict[str, Any] | None:
    """The object as a dict of Python values, except that an array under ``kept`` stays a proxy; None when a
    key repeats (orjson keeps the last value, a proxy lookup finds the first) or cannot be looked up (pysimdjson
    finds no key holding a NUL character)."""
    keys = list(obj.keys())
    if len(set(keys)) != len(keys):
        return None
    fields = {}
    for key in keys:
        try:
            value = obj[key]  # a proxy; items() would convert every value, data included
        except KeyError:
            return None
        fields[key] = value if key == kept and type(value) is simdjson.Array else _plain(value)
    return fields


def _plain(value: Any) -> Any:
    if type(value) is simdjson.Object:
        return value.as_dict()
    if type(value) is simdjson.Array:
        return value.as_list()
    return value


def _tensor(item: Any) -> Any:
    tensor = _fields(item, "data") if type(item) is simdjson.Object else None
    if tensor is None:
        return _plain(item)
    data = tensor.get("data")
    if type(data) is simdjson.Array:
        datatype = tensor.get("datatype")
        buffer_type = _BUFFER_TYPES.get(datatype) if type(datatype) is str else None
        tensor["data"] = data.as_list() if buffer_type is None else _numeric(data, buffer_type)
    return tensor


def _numeric(data: Any, buffer_type: str) -> Any:
    """The array's numbers in one buffer, or the array as a list when it is not a regular numeric array."""
    length = len(data)
    if length == 0:
        return []
    first = data[0]
    if type(first) is simdjson.Array:
        width = len(first)
        if length > _ROW_CHECK_LIMIT or not all(type(row) is simdjson.Array and len(row) == width for row in data):
            return data.as_list()  # ragged rows, or too many to check: numpy will say what is wrong
        expected = length * width
    else:
        expected = length
    try:
        values = np.frombuffer(data.as_buffer(of_type=buffer_type), _BUFFER_DTYPES[buffer_type])
    except (TypeError, ValueError):  # null, bool, string, or an integer outside 64 bits
        return data.as_list()
    if values.size != expected:  # arrays nested deeper than the rows
        return data.as_list()
    return values
