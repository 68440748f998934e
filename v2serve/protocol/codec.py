"""Tensors between the wire and numpy.

Numeric tensors are converted in one pass by numpy (JSON lists) or viewed in place (binary buffers); only
BYTES tensors, whose elements are variable-length strings, are walked element by element.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from v2serve.errors import InferenceError, InvalidRequest
from v2serve.protocol.datatypes import DATATYPE_TO_NUMPY, WIRE_ITEMSIZE
from v2serve.protocol.types import RequestInput

_INTEGER_KINDS = "iu"
_NUMBER_KINDS = "iuf"
_LENGTH = struct.Struct("<I")
_INTEGER_RANGES = {
    name: (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    for name, dtype in DATATYPE_TO_NUMPY.items()
    if dtype.kind in _INTEGER_KINDS
}


def element_count(shape: list[int]) -> int:
    return math.prod(shape)


# ---------------------------------------------------------------- decoding


def decode_json_tensor(tensor: RequestInput) -> np.ndarray:
    """Decode a tensor whose values came in JSON ``data``, flat or nested, row-major."""
    data = tensor.data
    if type(data) is not list or tensor.datatype == "BYTES":  # a numeric list, the common case, goes on below
        if data is None:
            raise InvalidRequest(f"input {tensor.name!r} has neither 'data' nor 'binary_data_size'")
        if isinstance(data, np.ndarray):  # already decoded elsewhere (large JSON arrays, a data_url file)
            _check_count(tensor, data.size)
            values = data if tensor.datatype == "BYTES" else _cast_checked(tensor, data)
            return values.reshape(tensor.shape)
        if tensor.datatype == "BYTES":
            return _decode_json_bytes(tensor)
    values = _as_number_array(tensor)
    if values.size != math.prod(tensor.shape):
        _check_count(tensor, values.size)
    return _cast_checked(tensor, values).reshape(tensor.shape)


_FLOAT_DATATYPES = frozenset({"FP16", "FP32", "FP64", "BF16"})


def _as_number_array(tensor: RequestInput) -> np.ndarray:
    data = tensor.data if isinstance(tensor.data, list) else [tensor.data]
    try:
        if tensor.datatype in _FLOAT_DATATYPES:
            # One pass straight into the target dtype. JSON null becomes NaN (orjson writes NaN and Inf as
            # null; MLServer reads null as NaN); strings and ragged data raise here.
            dtype = DATATYPE_TO_NUMPY[tensor.datatype]
            # A value beyond the datatype's range (70000 as FP16) is the client's error, not an infinity.
            with np.errstate(over="raise"):
                try:
                    # A flat list reads a quarter faster through fromiter, which knows the length and skips
                    # asarray's shape discovery; nested lists fail on their first row and take asarray.
                    return np.fromiter(data, dtype, len(data))
                except (ValueError, TypeError):
                    return np.asarray(data, dtype=dtype)
        # Integers and booleans go through numpy's own inference first, so that the range and kind of the
        # values can be checked before they are narrowed.
        return np.asarray(data)
    except (ValueError, TypeError):
        raise InvalidRequest(
            f"input {tensor.name!r} data is ragged or holds values that are not {tensor.datatype}"
        ) from None
    except (OverflowError, FloatingPointError):
        raise InvalidRequest(f"input {tensor.name!r} holds values outside the range of {tensor.datatype}") from None


_RECONVERT_LIMIT = 4096
_SAME_VALUE_CAST = np.lib.NumpyVersion(np.__version__) >= "2.4.0"
"""numpy 2.4's ``casting="same_value"`` narrows integers and raises when one does not fit."""


def _cast_checked(tensor: RequestInput, values: np.ndarray) -> np.ndarray:
    datatype = tensor.datatype
    target = DATATYPE_TO_NUMPY[datatype]
    if values.dtype is target:
        return values  # read straight into the datatype's own dtype (numpy's are singletons): nothing to check
    kind = values.dtype.kind
    if _SAME_VALUE_CAST and kind in _INTEGER_KINDS and target.kind in _INTEGER_KINDS:
        # Integers into another integer dtype (most integer tensors: JSON ints are read as int64): numpy 2.4's
        # checked cast raises when one does not fit, in one C pass.
        try:
            return values.astype(target, casting="same_value")
        except (OverflowError, ValueError):
            raise InvalidRequest(f"input {tensor.name!r} holds values outside the range of {datatype}") from None
    if values.size == 0:
        return values.astype(target)
    if datatype == "BOOL":
        if kind != "b":
            raise InvalidRequest(f"input {tensor.name!r} is BOOL but holds non-boolean values")
        return values
    if target.kind in _INTEGER_KINDS:
        if datatype == "UINT64" and kind in "fO":
            return _as_uint64(tensor, values)
        if kind == "f":
            return _integral_floats(tensor, values, target)
        if kind not in _INTEGER_KINDS:
            raise InvalidRequest(f"input {tensor.name!r} is {datatype} but holds non-integer values")
        if values.dtype == target:
            return values
        if values.size <= _RECONVERT_LIMIT and isinstance(tensor.data, list):
            # Small tensors (most requests), before numpy 2.4: converting the JSON ints again straight into the
            # target dtype is several times cheaper than a min and a max over the array.
            try:
                return np.asarray(tensor.data, dtype=target)
            except (OverflowError, ValueError):
                raise InvalidRequest(f"input {tensor.name!r} holds values outside the range of {datatype}") from None
        low, high = _INTEGER_RANGES[datatype]
        if values.min() < low or values.max() > high:
            raise InvalidRequest(f"input {tensor.name!r} holds values outside the range of {datatype}")
        return values.astype(target, copy=False)
    if kind not in _NUMBER_KINDS:
        raise InvalidRequest(f"input {tensor.name!r} is {datatype} but holds non-numeric values")
    if values.dtype == target:
        return values
    try:
        with np.errstate(over="raise"):
            return values.astype(target)
    except FloatingPointError:
        raise InvalidRequest(f"input {tensor.name!r} holds values outside the range of {datatype}") from None


def _integral_floats(tensor: RequestInput, values: np.ndarray, target: np.dtype) -> np.ndarray:
    """Integer tensors written as integral floats (``[1.0, 2.0]``, as the Open Inference Protocol's own
    client sends them, and as every peer accepts); ``1.5`` stays an error."""
    datatype = tensor.datatype
    if not (np.isfinite(values).all() and np.array_equal(values, np.trunc(values))):
        raise InvalidRequest(f"input {tensor.name!r} is {datatype} but holds non-integer values")
    low, high = _INTEGER_RANGES[datatype]
    # As floats, 2**63 - 1 rounds up to 2**63, itself out of range: compare with the first value past the top.
    if values.min() < float(low) or values.max() >= float(high) + 1:
        raise InvalidRequest(f"input {tensor.name!r} holds values outside the range of {datatype}")
    return values.astype(target)


def _as_uint64(tensor: RequestInput, values: np.ndarray) -> np.ndarray:
    # numpy widens a mix of int64 and values past 2**63 to float64 (or object past 2**64): convert again,
    # exactly, from the Python ints.
    message = f"input {tensor.name!r} holds values that are not integers in the range of UINT64"
    if values.dtype.kind == "f" and not np.array_equal(values, np.floor(values)):
        raise InvalidRequest(message)
    data = tensor.data if isinstance(tensor.data, list) else [tensor.data]
    try:
        return np.asarray(data, dtype=np.uint64)
    except (OverflowError, TypeError, ValueError):
        raise InvalidRequest(message) from None


def _decode_json_bytes(tensor: RequestInput) -> np.ndarray:
    flat = _flatten_strings(tensor, tensor.data if isinstance(tensor.data, list) else [tensor.data])
    _check_count(tensor, len(flat))
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(tensor.shape)


def _flatten_strings(tensor: RequestInput, data: list[Any]) -> list[bytes]:
    # An explicit stack rather than recursion: JSON nested close to the parser's depth limit must not reach
    # Python's recursion limit.
    # Flat data fits any shape; nested data may go as deep as the shape has dimensions, and no deeper.
    depth = max(1, len(tensor.shape))
    out: list[bytes] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, str):
                out.append(item.encode())
            elif isinstance(item, list):
                if len(stack) >= depth:
                    raise InvalidRequest(
                        f"input {tensor.name!r} has data nested deeper than its shape {tensor.shape} has dimensions"
                    )
                stack.append(iter(item))
                break
            else:
                raise InvalidRequest(f"input {tensor.name!r} is BYTES but holds a {type(item).__name__}")
        else:
            stack.pop()
    return out


def decode_binary_tensor(tensor: RequestInput, buffer: bytes | memoryview) -> np.ndarray:
    """Decode a tensor from its slice of the binary extension's data (little-endian, row-major)."""
    count = element_count(tensor.shape)
    if tensor.datatype == "BYTES":
        return _decode_binary_bytes(tensor, buffer, count)
    expected = count * WIRE_ITEMSIZE[tensor.datatype]
    if len(buffer) != expected:
        raise InvalidRequest(
            f"input {tensor.name!r} has {len(buffer)} bytes of data but shape {tensor.shape} "
            f"of {tensor.datatype} needs {expected}"
        )
    if tensor.datatype == "BF16":
        return bf16_to_float32(np.frombuffer(buffer, dtype="<u2")).reshape(tensor.shape)
    return np.frombuffer(buffer, dtype=DATATYPE_TO_NUMPY[tensor.datatype]).reshape(tensor.shape)


def _decode_binary_bytes(tensor: RequestInput, buffer: bytes | memoryview, count: int) -> np.ndarray:
    # Every element takes at least its 4-byte length: a shape claiming more elements than that is refused
    # before an object array of that many elements is allocated.
    if count * _LENGTH.size > len(buffer):
        raise InvalidRequest(
            f"input {tensor.name!r} has shape {tensor.shape}, {count} BYTES elements, but only "
            f"{len(buffer)} bytes of data: each element needs at least {_LENGTH.size}"
        )
    out = np.empty(count, dtype=object)
    offset, end = 0, len(buffer)
    for i in range(count):
        if offset + 4 > end:
            raise InvalidRequest(f"input {tensor.name!r} has fewer BYTES elements than its shape needs")
        (length,) = _LENGTH.unpack_from(buffer, offset)
        offset += 4
        if offset + length > end:
            raise InvalidRequest(f"input {tensor.name!r} has a BYTES element longer than its data")
        out[i] = bytes(buffer[offset : offset + length])
        offset += length
    if offset != end:
        raise InvalidRequest(f"input {tensor.name!r} has more BYTES data than its shape needs")
    return out.reshape(tensor.shape)


def _check_count(tensor: RequestInput, actual: int) -> None:
    expected = element_count(tensor.shape)
    if actual != expected:
        raise InvalidRequest(f"input {tensor.name!r} has {actual} values but shape {tensor.shape} needs {expected}")


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) to float32, exactly."""
    return (raw.astype("<u4") << 16).view("<f4")


def float32_to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 to bfloat16 bit patterns (uint16), rounding to nearest even."""
    bits = np.ascontiguousarray(values, dtype="<f4").view("<u4")
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16
    return rounded.astype("<u2")


# ---------------------------------------------------------------- encoding


def to_wire_array(array: np.ndarray, datatype: str) -> np.ndarray:
    """The array in the dtype and byte order its datatype travels in."""
    if datatype == "BYTES":
        return array
    dtype, held = DATATYPE_TO_NUMPY[datatype], array.dtype
    return array if held is dtype or held == dtype else array.astype(dtype)  # ``is``: numpy's dtypes are singletons


def json_data(name: str, array: np.ndarray, datatype: str) -> Any:
    """The flat JSON ``data`` of an output: an array orjson serialises natively, or a list of str."""
    if datatype != "BYTES":
        return array.ravel()  # C-contiguous (orjson serialises only those natively): a view, or a copy if need be
    if array.dtype.kind == "U":
        return array.reshape(-1).tolist()
    values = []
    for item in array.reshape(-1).tolist():
        if isinstance(item, bytes):
            try:
                item = item.decode()
            except UnicodeDecodeError:
                raise InferenceError(
                    f"output {name!r} holds bytes that are not UTF-8 and cannot travel as JSON; "
                    "request it with the binary data extension (parameters.binary_data=true)"
                ) from None
        elif not isinstance(item, str):
            item = str(item)
        values.append(item)
    return values


def binary_data(array: np.ndarray, datatype: str) -> bytes:
    """The raw bytes of an output for the binary extension."""
    if datatype == "BYTES":
        parts = []
        for item in array.reshape(-1).tolist():
            raw = item if isinstance(item, bytes) else str(item).encode()
            parts.append(_LENGTH.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)
    if datatype == "BF16":
        return float32_to_bf16(array).tobytes()
    return np.ascontiguousarray(array).tobytes()
